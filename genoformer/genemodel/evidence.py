"""A network's evidence in the gene model's scores: the weights, their file, and fitting them.

The tagger's per-base probabilities enter the learned gene model's path scores as extra per-base terms
(see :mod:`genoformer.genemodel.decode`): on each strand, every coding base adds
``cds * clip(log P(CDS) - log P(outside), ±cap)`` and every intron base adds
``intron * clip(log P(intron) - log P(outside), ±cap)``, the log-odds the network alone is decoded
with (:func:`genoformer.decode.eukaryote.network_log_odds`). The cap bounds what one confident base can
say: neighbouring bases' probabilities are not independent evidence. The gene model's splice-site
network (:mod:`genoformer.genemodel.site_network`), where it has one, adds ``sites * (logit +
site_offset)`` to each donor and acceptor a path uses: its log-odds that the candidate is a real site;
the offset moves the level at which a site pays for itself (the network's logits carry the training
share of real sites among candidates, ~1 in 150). With all weights 0 the combination is the gene model
alone, exactly.

The weights are fitted on validation regions (:func:`fit_evidence_weights`: a coordinate search over
a small grid maximising the mean of nucleotide CDS F1, CDS exon F1 and gene F1 of the project's
evaluator) and stored as JSON beside the gene model (``evidence_weights.json``), never pickle.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genoformer.decode.eukaryote import network_log_odds
from genoformer.decode.prokaryote import check_inputs
from genoformer.decode.segments import StrandSums, encode_bases, reverse_complement_codes
from genoformer.errors import ConfigError, ModelFileError
from genoformer.files import atomic_write
from genoformer.genemodel.decode import NO_PROBABILITIES, ScoringTables, StrandEvidence
from genoformer.genemodel.fitting import OBJECTIVE, coordinate_search, score_calls
from genoformer.genemodel.model import GeneModel
from genoformer.genemodel.site_network import SITE_KINDS
from genoformer.genome.intervals import Interval
from genoformer.model.site_model import SiteModel

WEIGHTS_FILE = "evidence_weights.json"
WEIGHTS_FORMAT = "genoformer evidence weights"
WEIGHTS_VERSION = 2  # 2: site network weights (a version 1 file reads with them 0)
SITE_FIELDS = ("sites", "site_offset")
# The coordinate search's values per weight (tried in turn, each with the others held at their best).
# Small weights first: a weakly trained network's evidence (3-4 nats a base at most) outweighs the gene
# model's own per-base terms (tenths of a nat) already at 0.1.
SEARCH_GRID = {"cds": (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5), "intron": (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
               "cap": (0.5, 1.0, 2.0, 4.0), "sites": (0.0, 0.25, 0.5, 0.75, 1.0),
               "site_offset": (0.0, 1.0, 2.0, 3.0, 4.0)}


@dataclass(frozen=True)
class EvidenceWeights:
    """How much the tagger's per-base log-odds and the site network's site logits count in the gene model's
    scores (0: not at all)."""

    cds: float = 0.0  # times the capped log-odds of CDS against outside, on each coding base
    intron: float = 0.0  # times the capped log-odds of intron against outside, on each intron base
    cap: float = 4.0  # per-base log-odds are clipped to [-cap, cap] first (nats)
    sites: float = 0.0  # times the site network's logit (+ site_offset) at each donor and acceptor used
    site_offset: float = 0.0  # nats added to the site network's logits before weighing

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"evidence weight {name!r} must be a finite number, got {value!r}")
        if min(self.cds, self.intron, self.sites) < 0:
            raise ConfigError(f"evidence weights must be >= 0, got cds {self.cds}, intron {self.intron}, "
                              f"sites {self.sites}")
        if self.cap <= 0:
            raise ConfigError(f"evidence cap must be > 0 nats, got {self.cap}")

    @property
    def reads_tagger(self) -> bool:
        """Whether these weights weigh in a tagging network's probabilities (and so need them)."""
        return self.cds != 0 or self.intron != 0

    @property
    def reads_site_network(self) -> bool:
        """Whether these weights weigh in a site network's evidence (and so need one)."""
        return self.sites != 0

    def strand_evidence(self, probs: np.ndarray | None, classes: Sequence[str],
                        site_logits: Sequence[np.ndarray] | None = None) -> list[StrandEvidence]:
        """The extra terms of the + and − strands (each in its strand's coordinates) from (2, classes, n)
        probabilities in forward coordinates (row 0: + strand genes; None: no tagger, its weights must be
        0) and, with site weights, each strand's (2, n + 1) site network logits in its own coordinates
        (:meth:`SiteModel.logits`)."""
        site_logits = site_logits or (None, None)
        return [self.terms(*log_odds, sites) for log_odds, sites in zip(self.log_odds(probs, classes), site_logits)]

    def log_odds(self, probs: np.ndarray | None, classes: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each strand's per-base (CDS, intron) log-odds of a tagger's probabilities; zeros without one."""
        if probs is not None:
            return [network_log_odds(strand_probs, classes) for strand_probs in _strand_rows(probs)]
        if self.cds or self.intron:
            raise ConfigError(f"evidence weights cds {self.cds} and intron {self.intron} weigh a tagging network's "
                              "probabilities: give the tagging model (--model), or weights 0")
        return [(np.zeros(1), np.zeros(1))] * 2  # broadcast over every base

    def terms(self, cds_log_odds: np.ndarray, intron_log_odds: np.ndarray,
              site_logits: np.ndarray | None = None) -> StrandEvidence:
        """One strand's extra terms from the network's per-base log-odds (``network_log_odds``) and the
        site network's (2, n + 1) logits (needed when ``sites`` is not 0)."""
        signals = None
        if self.reads_site_network:
            if site_logits is None:
                raise ConfigError(f"evidence weight sites {self.sites} needs a site network's logits: the gene model "
                                  "has none (learn one with site network steps above 0)")
            signals = {kind: self.sites * (site_logits[row] + self.site_offset) for row, kind in enumerate(SITE_KINDS)}
        return StrandEvidence(cds=self.cds * np.clip(cds_log_odds, -self.cap, self.cap),
                              intron=self.intron * np.clip(intron_log_odds, -self.cap, self.cap), signals=signals)

    def save(self, path: str | Path, fit: dict | None = None) -> Path:
        """Write the weights (and what they were fitted on, ``fit``) as JSON, atomically; returns the path."""
        path = Path(path)
        data = {"format": WEIGHTS_FORMAT, "format_version": WEIGHTS_VERSION, "weights": asdict(self),
                "fit": fit or {}}
        with atomic_write(path) as handle:
            json.dump(data, handle, indent=1)
        return path

    @classmethod
    def load(cls, path: str | Path, gene_model: GeneModel | None = None) -> "EvidenceWeights":
        """Read a file written by :meth:`save` (a folder: its ``evidence_weights.json``); refuses another
        format or version and missing or malformed weights, naming the file and the field, and weights
        fitted for another gene model than ``gene_model`` (where the file records which: its fingerprint)."""
        path = Path(path)
        if path.is_dir():
            path = path / WEIGHTS_FILE
        if not path.is_file():
            raise ModelFileError(path, "evidence weights file not found: fit the weights of a network and this gene "
                                       "model on validation regions with `genoformer combine` (or fit_evidence)")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(path, f"not a readable JSON evidence weights file ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != WEIGHTS_FORMAT:
            raise ModelFileError(path, f"not an evidence weights file (expected \"format\": \"{WEIGHTS_FORMAT}\")")
        version = data.get("format_version")
        if version not in (1, WEIGHTS_VERSION):
            raise ModelFileError(path, f"evidence weights field 'format_version': this genoformer reads versions 1 "
                                       f"and {WEIGHTS_VERSION}, the file has {version!r}; fit the weights again with "
                                       "this version")
        weights = data.get("weights")
        names = [f for f in cls.__dataclass_fields__ if version > 1 or f not in SITE_FIELDS]
        if not isinstance(weights, dict):
            raise ModelFileError(path, f"evidence weights field 'weights': missing, or not a mapping of {names}")
        unknown = sorted(set(weights) - set(names))
        missing = [name for name in names if name not in weights]
        if unknown or missing:
            problems = [f"{kind} {found}" for kind, found in (("unknown", unknown), ("missing", missing)) if found]
            raise ModelFileError(path, f"evidence weights field 'weights': {' and '.join(problems)} (expected {names})")
        fit = data.get("fit")
        fitted_for = fit.get("gene_model") if isinstance(fit, dict) else None
        if gene_model is not None and fitted_for is not None:
            fingerprint = gene_model.fingerprint()
            if fitted_for != fingerprint:
                raise ModelFileError(path, f"these evidence weights were fitted for another gene model (fingerprint "
                                           f"{fitted_for}, this one's {fingerprint}): learned again since? Fit them "
                                           "again with `genoformer combine`")
        try:
            return cls(**weights)
        except ConfigError as exc:
            raise ModelFileError(path, f"evidence weights field 'weights': {exc}") from None


def _strand_rows(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The + and − strands' (classes, n) probabilities, each read 5' -> 3' along its strand."""
    return probs[0], probs[1, :, ::-1]


def strand_site_logits(site_model: SiteModel | None, sequence: str) -> list[np.ndarray] | None:
    """The site network's (2, n + 1) logits on the + and the − strand of ``sequence`` (each in its strand's
    coordinates); None without a site network."""
    if site_model is None:
        return None
    codes = encode_bases(sequence)
    return [site_model.logits(view) for view in (codes, reverse_complement_codes(codes))]


def combined_evidence(weights: EvidenceWeights, classes: Sequence[str],
                      site_model: SiteModel | None = None) -> Callable[..., tuple]:
    """For :func:`~genoformer.genemodel.decode.decode_with_gene_model`'s ``evidence``: a stretch's (2, classes,
    n) probabilities and its sequence -> the strands' extra terms and the sums that score the called
    features. ``site_model`` (the gene model's) is run on the sequence when the weights read it."""
    classes = tuple(classes)
    if weights.reads_site_network and site_model is None:
        raise ConfigError(f"evidence weight sites {weights.sites} weighs in a site network, but the gene model has none")

    def evidence(probs: np.ndarray | None, sequence: str | None = None) -> tuple[list[StrandEvidence], StrandSums]:
        if weights.reads_site_network and sequence is None:
            raise ConfigError("weighing in the site network needs the stretch's sequence")
        site_logits = strand_site_logits(site_model, sequence) if weights.reads_site_network else None
        sums = StrandSums(probs, classes) if probs is not None else NO_PROBABILITIES
        return weights.strand_evidence(probs, classes, site_logits), sums

    return evidence


@dataclass
class EvidenceFit:
    """What :func:`fit_evidence_weights` found: the best weights, their scores, every trial's."""

    weights: EvidenceWeights
    scores: dict  # the evaluator's nucleotide / exon / gene F1 and the objective, at the best weights
    trials: list[dict] = field(default_factory=list)  # {"weights": ..., "objective": ...} in the order tried

    def record(self, regions: Sequence[Interval], gene_model: GeneModel) -> dict:
        """The ``fit`` section of the weights file: the gene model's fingerprint, the regions, the objective and
        the scores."""
        return {"gene_model": gene_model.fingerprint(), "regions": [f"{iv.name}:{iv.start}-{iv.end}" for iv in regions],
                "objective": OBJECTIVE, "scores": self.scores, "trials": self.trials}


class _Stretch:
    """One validation stretch prepared once: both strands' gene-model terms and network log-odds."""

    def __init__(self, tables: ScoringTables, sequence: str, probs: np.ndarray | None, classes: Sequence[str],
                 site_model: SiteModel | None):
        codes = encode_bases(sequence)
        self.views = (codes, reverse_complement_codes(codes))
        self.terms = [tables.strand_terms(view) for view in self.views]
        self.log_odds = EvidenceWeights().log_odds(None if probs is None else check_inputs(sequence, probs), classes)
        self.site_logits = strand_site_logits(site_model, sequence) or [None, None]

    def transcripts(self, tables: ScoringTables, weights: EvidenceWeights):
        decoded = [tables.decode(view, terms.scores(weights.terms(*log_odds, sites)))
                   for view, terms, log_odds, sites in zip(self.views, self.terms, self.log_odds, self.site_logits)]
        return tables.transcripts(decoded, self.views)


def fit_evidence_weights(genome, annotation: pd.DataFrame, regions: Sequence[Interval], gene_model: GeneModel,
                         probabilities: Callable[[Interval], np.ndarray] | None, classes: Sequence[str], *,
                         grid: dict | None = None, rounds: int = 2,
                         progress: Callable[[str], None] | None = None) -> EvidenceFit:
    """Weights for the network's evidence that maximise :data:`OBJECTIVE` on ``regions`` of ``genome``
    against ``annotation`` (``read_annotation``), decoding with ``gene_model`` and its decoder settings (those
    fitted for it, :func:`~genoformer.genemodel.fitting.fit_decode_settings`, else the defaults: what
    ``annotate`` decodes it with, so the weights fit the calls they will weigh into).

    ``probabilities(region)`` gives a region's (2, classes, length) network probabilities (``classes``
    names the rows); None: no tagging network, only the site network's weights are searched. A coordinate search: each weight in turn takes the best of its ``grid`` values
    (default :data:`SEARCH_GRID`) with the others held, for ``rounds`` rounds, from all weights 0 (the
    gene model alone, so the fit never scores below it on these regions). The site weights are searched
    only when the gene model has a site network. Fitting and scoring on the same regions is optimistic:
    score the result on other regions.
    """
    grid = dict(grid or SEARCH_GRID)
    dropped = (SITE_FIELDS if gene_model.site_model is None else ()) + (
        ("cds", "intron", "cap") if probabilities is None else ())
    for name in dropped:
        grid.pop(name, None)
    if not grid:
        raise ConfigError("nothing to fit: without a tagging network the gene model needs a site network")
    unknown = set(grid) - set(EvidenceWeights.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"evidence search grid names unknown weights {sorted(unknown)}")
    if not regions:
        raise ConfigError("fitting evidence weights needs at least one validation region")
    tables = ScoringTables(gene_model)
    stretches = [_Stretch(tables, genome.fetch(iv.name, iv.start, iv.end),
                          None if probabilities is None else probabilities(iv), classes, gene_model.site_model)
                 for iv in regions]
    tried: dict[EvidenceWeights, dict] = {}
    trials: list[dict] = []

    def score(weights: EvidenceWeights) -> float:
        if weights not in tried:
            calls = [stretch.transcripts(tables, weights) for stretch in stretches]
            tried[weights] = score_calls(annotation, regions, calls, genome.lengths)
            trials.append({"weights": asdict(weights), **tried[weights]})
            if progress:
                progress(f"evidence weights {asdict(weights)}: {tried[weights]}")
        return tried[weights]["objective"]

    def skip(best: EvidenceWeights, name: str) -> bool:  # the cap or offset of zero weights changes nothing
        return (name == "cap" and best.cds == best.intron == 0) or (name == "site_offset" and best.sites == 0)

    best = coordinate_search(EvidenceWeights(), grid, score, rounds=rounds, skip=skip,
                             prefer=lambda w: -w.cds - w.intron - w.sites)
    return EvidenceFit(weights=best, scores=tried[best], trials=trials)
