"""A network's evidence in the gene model's scores: the weights, their file, and fitting them.

The tagger's per-base probabilities enter the learned gene model's path scores as extra per-base terms
(see :mod:`genoformer.genemodel.decode`): on each strand, every coding base adds
``cds * clip(log P(CDS) - log P(outside), ±cap)`` and every intron base adds
``intron * clip(log P(intron) - log P(outside), ±cap)``, the log-odds the network alone is decoded
with (:func:`genoformer.decode.eukaryote.network_log_odds`). With both weights 0 the combination is
the gene model alone, exactly. The cap bounds what one confident base can say: neighbouring bases'
probabilities are not independent evidence.

The weights are fitted on validation regions (:func:`fit_evidence_weights`: a coordinate search over
a small grid maximising the mean of nucleotide CDS F1, CDS exon F1 and gene F1 of the project's
evaluator) and stored as JSON beside the gene model (``evidence_weights.json``), never pickle.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from genoformer.decode.eukaryote import network_log_odds
from genoformer.decode.prokaryote import check_inputs
from genoformer.decode.segments import StrandSums, encode_bases, reverse_complement_codes, transcript_table
from genoformer.errors import ConfigError, ModelFileError
from genoformer.files import atomic_write
from genoformer.genemodel.decode import DecodeSettings, ScoringTables, StrandEvidence
from genoformer.genemodel.model import GeneModel
from genoformer.genome.intervals import Interval

WEIGHTS_FILE = "evidence_weights.json"
WEIGHTS_FORMAT = "genoformer evidence weights"
WEIGHTS_VERSION = 1
# The coordinate search's values per weight (tried in turn, each with the others held at their best).
# Small weights first: a weakly trained network's evidence (3-4 nats a base at most) outweighs the gene
# model's own per-base terms (tenths of a nat) already at 0.1.
SEARCH_GRID = {"cds": (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5), "intron": (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
               "cap": (0.5, 1.0, 2.0, 4.0)}
OBJECTIVE = "mean of nucleotide CDS F1, CDS exon F1 and gene F1"


@dataclass(frozen=True)
class EvidenceWeights:
    """How much the network's per-base log-odds count in the gene model's scores (0: not at all)."""

    cds: float = 0.0  # times the capped log-odds of CDS against outside, on each coding base
    intron: float = 0.0  # times the capped log-odds of intron against outside, on each intron base
    cap: float = 4.0  # per-base log-odds are clipped to [-cap, cap] first (nats)

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"evidence weight {name!r} must be a finite number, got {value!r}")
        if self.cds < 0 or self.intron < 0:
            raise ConfigError(f"evidence weights must be >= 0, got cds {self.cds}, intron {self.intron}")
        if self.cap <= 0:
            raise ConfigError(f"evidence cap must be > 0 nats, got {self.cap}")

    def strand_evidence(self, probs: np.ndarray, classes: Sequence[str]) -> list[StrandEvidence]:
        """The extra terms of the + and − strands (each in its strand's coordinates) from (2, classes, n)
        probabilities in forward coordinates (row 0: + strand genes)."""
        return [self.terms(*network_log_odds(strand_probs, classes)) for strand_probs in _strand_rows(probs)]

    def terms(self, cds_log_odds: np.ndarray, intron_log_odds: np.ndarray) -> StrandEvidence:
        """One strand's extra terms from the network's per-base log-odds (``network_log_odds``)."""
        return StrandEvidence(cds=self.cds * np.clip(cds_log_odds, -self.cap, self.cap),
                              intron=self.intron * np.clip(intron_log_odds, -self.cap, self.cap))

    def save(self, path: str | Path, fit: dict | None = None) -> Path:
        """Write the weights (and what they were fitted on, ``fit``) as JSON, atomically; returns the path."""
        path = Path(path)
        data = {"format": WEIGHTS_FORMAT, "format_version": WEIGHTS_VERSION, "weights": asdict(self),
                "fit": fit or {}}
        with atomic_write(path) as handle:
            json.dump(data, handle, indent=1)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EvidenceWeights":
        """Read a file written by :meth:`save` (a folder: its ``evidence_weights.json``); refuses another
        format or version and missing or malformed weights, naming the file and the field."""
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
        if data.get("format_version") != WEIGHTS_VERSION:
            raise ModelFileError(path, f"evidence weights field 'format_version': this genoformer reads version "
                                       f"{WEIGHTS_VERSION}, the file has {data.get('format_version')!r}; fit the "
                                       "weights again with this version")
        weights = data.get("weights")
        names = [f for f in cls.__dataclass_fields__]
        if not isinstance(weights, dict):
            raise ModelFileError(path, f"evidence weights field 'weights': missing, or not a mapping of {names}")
        unknown = sorted(set(weights) - set(names))
        missing = [name for name in names if name not in weights]
        if unknown or missing:
            problems = [f"{kind} {found}" for kind, found in (("unknown", unknown), ("missing", missing)) if found]
            raise ModelFileError(path, f"evidence weights field 'weights': {' and '.join(problems)} (expected {names})")
        try:
            return cls(**weights)
        except ConfigError as exc:
            raise ModelFileError(path, f"evidence weights field 'weights': {exc}") from None


def _strand_rows(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The + and − strands' (classes, n) probabilities, each read 5' -> 3' along its strand."""
    return probs[0], probs[1, :, ::-1]


def combined_evidence(weights: EvidenceWeights, classes: Sequence[str]) -> Callable[[np.ndarray], tuple]:
    """For :func:`~genoformer.genemodel.decode.decode_with_gene_model`'s ``evidence``: a stretch's (2, classes,
    n) probabilities -> the strands' extra terms and the sums that score the called features."""
    classes = tuple(classes)

    def evidence(probs: np.ndarray) -> tuple[list[StrandEvidence], StrandSums]:
        return weights.strand_evidence(probs, classes), StrandSums(probs, classes)

    return evidence


@dataclass
class EvidenceFit:
    """What :func:`fit_evidence_weights` found: the best weights, their scores, every trial's."""

    weights: EvidenceWeights
    scores: dict  # the evaluator's nucleotide / exon / gene F1 and the objective, at the best weights
    trials: list[dict] = field(default_factory=list)  # {"weights": ..., "objective": ...} in the order tried

    def record(self, regions: Sequence[Interval]) -> dict:
        """The ``fit`` section of the weights file: the regions, the objective and the scores."""
        return {"regions": [f"{iv.name}:{iv.start}-{iv.end}" for iv in regions], "objective": OBJECTIVE,
                "scores": self.scores, "trials": self.trials}


def summary_scores(scores: dict) -> dict:
    """The three F1s the fit maximises (and their mean, the objective) from an ``evaluate`` result."""
    found = {"nucleotide_cds_f1": scores["nucleotide"]["coding"]["f1"], "exon_f1": scores["exon"]["f1"],
             "gene_f1": scores["gene"]["f1"]}
    out = {name: float(value or 0.0) for name, value in found.items()}  # None (nothing called): 0
    out["objective"] = float(np.mean(list(out.values())))
    return out


def regional_scores(reference: pd.DataFrame, prediction: pd.DataFrame, regions: Sequence[Interval],
                    lengths: dict[str, int], margin: int = 200_000) -> dict:
    """``evaluate(reference, prediction, lengths=lengths, regions=regions, prokaryote=False)``'s
    :func:`summary_scores`, computed
    on each record's stretch around the regions (``margin`` bases either side) rather than the whole record.

    The evaluator's nucleotide counts build whole-record tracks: a minute per call on a 30 Mb chromosome,
    which a weight search repeats dozens of times. Its counts only depend on features touching the
    regions and on positions relative to one another, so the features lying wholly in each stretch are
    moved to its start; features crossing a stretch's edge are dropped (a gene longer than ``margin``
    that reaches a region would be scored differently)."""
    from genoformer.evaluate import evaluate

    windows = {}
    for iv in regions:
        lo, hi = windows.get(iv.name, (iv.start, iv.end))
        windows[iv.name] = (min(lo, iv.start), max(hi, iv.end))
    windows = {name: (max(0, lo - margin), min(lengths[name], hi + margin)) for name, (lo, hi) in windows.items()}

    def local(table: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for name, (lo, hi) in windows.items():
            rows = table[(table["seqid"] == name) & (table["start"] >= lo) & (table["end"] <= hi)]
            parts.append(rows.assign(start=rows["start"] - lo, end=rows["end"] - lo))
        return pd.concat(parts) if parts else table.iloc[:0]

    shifted = [Interval(iv.name, iv.start - windows[iv.name][0], iv.end - windows[iv.name][0]) for iv in regions]
    return summary_scores(evaluate(local(reference), local(prediction), lengths={
        name: hi - lo for name, (lo, hi) in windows.items()}, regions=shifted, prokaryote=False))


class _Stretch:
    """One validation stretch prepared once: both strands' gene-model terms and network log-odds."""

    def __init__(self, tables: ScoringTables, sequence: str, probs: np.ndarray, classes: Sequence[str]):
        probs = check_inputs(sequence, probs)
        codes = encode_bases(sequence)
        self.length = len(codes)
        self.views = (codes, reverse_complement_codes(codes))
        self.terms = [tables.strand_terms(view) for view in self.views]
        self.log_odds = [network_log_odds(strand_probs, classes) for strand_probs in _strand_rows(probs)]

    def transcripts(self, tables: ScoringTables, weights: EvidenceWeights):
        decoded = [tables.decode(view, terms.scores(weights.terms(*log_odds)))
                   for view, terms, log_odds in zip(self.views, self.terms, self.log_odds)]
        return tables.transcripts(decoded, self.length)


def fit_evidence_weights(genome, annotation: pd.DataFrame, regions: Sequence[Interval], gene_model: GeneModel,
                         probabilities: Callable[[Interval], np.ndarray], classes: Sequence[str], *,
                         settings: DecodeSettings | None = None, grid: dict | None = None, rounds: int = 2,
                         progress: Callable[[str], None] | None = None) -> EvidenceFit:
    """Weights for the network's evidence that maximise :data:`OBJECTIVE` on ``regions`` of ``genome``
    against ``annotation`` (``read_annotation``), decoding with ``gene_model`` and ``settings``.

    ``probabilities(region)`` gives a region's (2, classes, length) network probabilities (``classes``
    names the rows). A coordinate search: each weight in turn takes the best of its ``grid`` values
    (default :data:`SEARCH_GRID`) with the others held, for ``rounds`` rounds, from all weights 0 (the
    gene model alone, so the fit never scores below it on these regions). Fitting and scoring on the same
    regions is optimistic: score the result on other regions.
    """
    grid = grid or SEARCH_GRID
    unknown = set(grid) - set(EvidenceWeights.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"evidence search grid names unknown weights {sorted(unknown)}")
    if not regions:
        raise ConfigError("fitting evidence weights needs at least one validation region")
    tables = ScoringTables(gene_model, settings or DecodeSettings())
    stretches = [_Stretch(tables, genome.fetch(iv.name, iv.start, iv.end), probabilities(iv), classes)
                 for iv in regions]
    no_probabilities = StrandSums(np.zeros((2, 0, 0)), ())
    tried: dict[EvidenceWeights, dict] = {}
    trials: list[dict] = []

    def score(weights: EvidenceWeights) -> float:
        if weights not in tried:
            tables_out = []
            for k, (iv, stretch) in enumerate(zip(regions, stretches)):
                table = transcript_table(iv.name, stretch.transcripts(tables, weights), no_probabilities,
                                         id_prefix=f"fit{k}")
                table[["start", "end"]] += iv.start
                tables_out.append(table)
            prediction = pd.concat(tables_out, ignore_index=True)
            tried[weights] = regional_scores(annotation, prediction, regions, genome.lengths)
            trials.append({"weights": asdict(weights), **tried[weights]})
            if progress:
                progress(f"evidence weights {asdict(weights)}: {tried[weights]}")
        return tried[weights]["objective"]

    best = EvidenceWeights(cds=0.0, intron=0.0)
    score(best)
    for _ in range(rounds):
        before = best
        for name, values in grid.items():
            if name == "cap" and best.cds == best.intron == 0:
                continue  # the cap of zero weights changes nothing
            candidates = [replace(best, **{name: value}) for value in values]
            best = max(candidates + [best], key=lambda w: (score(w), -w.cds - w.intron))
        if best == before:
            break
    return EvidenceFit(weights=best, scores=tried[best], trials=trials)
