"""The gene model: what is learned (counts, signal windows, lengths), fitting it, and its model folder.

A gene model is stored as one JSON file, ``gene_model.json`` in its folder: plain counts (integers),
the fitted signal models' log-odds tables (numbers) and settings, never pickle. Log-probabilities are
derived from the counts when loaded, so the file is exactly what was counted and fitted. A splice-site
network trained beside it (``genoformer.genemodel.site_network``) is stored in the same folder. ``FORMAT_VERSION`` changes whenever a field's meaning changes; a file
from another version, or one missing a field, is refused naming the file and the field. The ``decoder``
field (settings fitted on validation, :mod:`genoformer.genemodel.fitting`) and the ``pseudogene_filter``
field (:mod:`genoformer.genemodel.pseudogenes`) are optional and written only when fitted, so models
without them keep their files and fingerprints; a genoformer from before a field reads a file holding it
as if it were absent (default settings; no filter).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genoformer.decode.prokaryote import STOP_CODONS
from genoformer.decode.segments import encode_bases
from genoformer.errors import ConfigError, ModelFileError
from genoformer.files import atomic_write
from genoformer.genemodel.pseudogenes import PseudogeneFilter
from genoformer.genemodel.settings import DecodeSettings
from genoformer.genemodel.site_network import CONFIG_FILE as SITE_CONFIG_FILE, STEM as SITE_STEM
from genoformer.genemodel.site_network import WEIGHTS_FILE as SITE_WEIGHTS_FILE, fit_site_network, load_site_model
from genoformer.model.site_model import SiteModel, SiteTraining
from genoformer.genemodel.signals import (
    FITTED_WINDOWS, MAX_DECOYS, START_RANKS, WINDOWS, fit_site_table, log_odds_table, rank_log_odds,
)
from genoformer.genemodel.training import (
    LENGTH_KINDS, TrainingCounts, add_region, check_training_genes, coding_transcripts,
)
from genoformer.genome.intervals import Interval

FORMAT_VERSION = 4  # 2: fitted signal models; 3: start rank weights; 4: the pseudogene filter's look-alike families
FILE_NAME = "gene_model.json"
# A donor / acceptor dinucleotide becomes a candidate signal when it is at least this share of introns.
MIN_SIGNAL_SHARE = 0.001


@dataclass
class GeneModel:
    """Counts learned from annotated genes; see :meth:`fit`. Decoding: :mod:`genoformer.genemodel.decode`."""

    order: int
    coding: np.ndarray  # (3, 4 ** (order + 1)) words ending at codon position 0, 1, 2
    intron: np.ndarray  # (4 ** (order + 1),)
    intergenic: np.ndarray  # (4 ** (order + 1),)
    background: np.ndarray  # (4, 4) first-order intergenic pair counts
    signals: dict[str, np.ndarray]  # kind -> (width, 4, 4) window pair counts
    fitted_signals: dict[str, np.ndarray]  # kind -> (width, 5, 5) fitted site log-odds (FITTED_WINDOWS)
    start_rank_weights: np.ndarray  # (START_RANKS,) fitted with the start model: log-odds of a start's open-frame rank
    donors: dict[str, int]  # intron first two bases -> count
    acceptors: dict[str, int]
    start_codons: dict[str, int]
    stop_codons: dict[str, int]
    lengths: dict[str, list[int]]
    report: dict[str, int] = field(default_factory=dict)
    pseudocount: float = 1.0
    # The decoder's settings fitted on validation regions (genemodel.fitting.fit_decode_settings); None: not
    # fitted, DecodeSettings' defaults (chosen on A. thaliana) are used.
    decoder: DecodeSettings | None = None
    # Drops calls that look like the annotation's pseudogenes and transposable-element genes
    # (genemodel.pseudogenes; fitted by genemodel.fitting.fit_pseudogene_filter). None: none fitted.
    pseudogene_filter: PseudogeneFilter | None = field(default=None, repr=False)
    # A splice-site network trained beside it (genemodel.site_network), whose evidence the decoder weighs in
    # with fitted EvidenceWeights; stored in the same folder. None: none was trained.
    site_model: SiteModel | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, genome, annotation: pd.DataFrame, regions: Iterable[Interval], *, order: int = 5,
            start_codons: Iterable[str] = ("ATG",), stop_codons: Iterable[str] = STOP_CODONS,
            site_network_steps: int = 0, progress: Callable[[str], None] | None = None) -> "GeneModel":
        """Learn from the coding genes of ``annotation`` (``read_annotation``) lying wholly inside
        ``regions`` of ``genome`` (a :class:`~genoformer.genome.Genome`), one transcript per gene (the
        longest CDS). Genes whose CDS is not a whole open reading frame are skipped and counted in
        ``report``. Refused, naming the annotation file: regions without a coding gene, an annotation whose CDS
        mostly do not fit the sequence, introns mostly not GT-AG / GC-AG / AT-AC; fewer than ``FEW_GENES``
        usable genes give a warning. ``site_network_steps`` above 0 also trains a splice-site network on the
        same regions for that many steps (:func:`~genoformer.genemodel.site_network.fit_site_network`; a few
        minutes on a CPU for 1,500), whose evidence ``EvidenceWeights`` can weigh in."""
        if not 1 <= order <= 8:
            raise ConfigError(f"gene model order must be between 1 and 8, got {order}")
        if isinstance(site_network_steps, bool) or not isinstance(site_network_steps, int) or site_network_steps < 0:
            raise ConfigError(f"site network steps must be an integer >= 0 (0: no site network), got {site_network_steps!r}")
        counts = TrainingCounts(order=order)
        start_codons, stop_codons = tuple(start_codons), tuple(stop_codons)
        began = time.perf_counter()
        by_record: dict[str, pd.DataFrame] = {}
        regions = list(regions)
        for region in regions:
            if region.name not in by_record:
                by_record[region.name] = coding_transcripts(annotation, region.name)
            pieces = by_record[region.name]
            spans = pieces.groupby("transcript")[["start", "end"]].agg({"start": "min", "end": "max"})
            inside = spans.index[(spans["start"] >= region.start) & (spans["end"] <= region.end)]
            codes = encode_bases(genome.fetch(region.name, region.start, region.end))
            add_region(counts, codes, pieces[pieces["transcript"].isin(inside)], region.start, start_codons, stop_codons)
        check_training_genes(counts, annotation, genome.path, regions)
        fitted = {kind: _fitted_signal(counts, kind) for kind in WINDOWS}  # kind -> (table, rank weights)
        counts.report["training seconds"] = round(time.perf_counter() - began, 1)
        site_model = None
        if site_network_steps:
            words = {"donor": _signal_words(counts.donors, "GT"), "acceptor": _signal_words(counts.acceptors, "AG")}
            site_model = fit_site_network(genome, annotation, regions, words=words,
                                          training=SiteTraining(steps=site_network_steps), progress=progress)
            counts.report.update({f"site network {key}": value for key, value in site_model.report.items()})
        return cls(site_model=site_model, order=order, coding=counts.coding, intron=counts.intron, intergenic=counts.intergenic,
                   background=counts.background, signals=counts.signals,
                   fitted_signals={kind: table for kind, (table, _) in fitted.items()},
                   start_rank_weights=fitted["start"][1],
                   donors=dict(counts.donors),
                   acceptors=dict(counts.acceptors), start_codons=_with_defaults(counts.starts, start_codons),
                   stop_codons=_with_defaults(counts.stops, stop_codons),
                   lengths={k: sorted(v) for k, v in counts.lengths.items()}, report=dict(counts.report))

    # ------------------------------------------------------------------ what the decoder uses

    def signal_words(self, kind: str) -> tuple[str, ...]:
        """Donor or acceptor dinucleotides common enough to be candidates (at least the canonical one)."""
        return _signal_words(self.donors if kind == "donor" else self.acceptors, "GT" if kind == "donor" else "AG")

    def mean_length(self, kind: str, floor: float = 1.0) -> float:
        """Mean training length of ``kind`` ("exon": every exon kind pooled), ``floor`` without any."""
        values = (sum((self.lengths[k] for k in LENGTH_KINDS if k.endswith("_exon")), []) if kind == "exon"
                  else self.lengths.get(kind)) or []
        return max(float(np.mean(values)) if values else floor, floor)

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION, "order": self.order, "pseudocount": self.pseudocount,
            "coding": self.coding.tolist(), "intron": self.intron.tolist(), "intergenic": self.intergenic.tolist(),
            "background": self.background.tolist(), "signals": {k: v.tolist() for k, v in self.signals.items()},
            "fitted_signals": {k: v.tolist() for k, v in self.fitted_signals.items()},
            "start_rank_weights": self.start_rank_weights.tolist(),
            "donors": self.donors, "acceptors": self.acceptors, "start_codons": self.start_codons,
            "stop_codons": self.stop_codons, "lengths": self.lengths, "report": self.report,
            # Only where fitted: a model without them keeps the fingerprint it had before the field existed.
            **({} if self.decoder is None else {"decoder": asdict(self.decoder)}),
            **({} if self.pseudogene_filter is None else {"pseudogene_filter": self.pseudogene_filter.to_dict()}),
        }

    def fingerprint(self) -> str:
        """A digest of everything the model scores with (its tables and its site network's weights): evidence
        weights fitted for it record it, so that they are not read with another model (a model learned again
        into the same folder)."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode())
        if self.site_model is not None:
            for name, tensor in sorted(self.site_model.network.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/gene_model.json`` (atomically) and the site network's files, if it has one (else
        removes any left from an earlier model there); returns the JSON file's path."""
        path = Path(folder) / FILE_NAME
        with atomic_write(path) as handle:
            json.dump(self.to_dict(), handle, separators=(",", ":"))
        if self.site_model is not None:
            self.site_model.save(folder, SITE_STEM)
        else:
            for name in (SITE_CONFIG_FILE, SITE_WEIGHTS_FILE):
                (Path(folder) / name).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "GeneModel":
        """Read a model folder written by :meth:`save`; refuses other versions and missing or malformed fields."""
        path = Path(folder) / FILE_NAME
        if not path.is_file():
            raise ModelFileError(path, "gene model file not found (learn one with `genoformer gene-model`, or GeneModel.fit and save)")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(path, f"not a readable JSON gene model ({exc})") from None
        if not isinstance(data, dict):
            raise ModelFileError(path, "not a gene model: expected a JSON object")
        model = cls.from_dict(data, path)
        if any((Path(folder) / name).exists() for name in (SITE_CONFIG_FILE, SITE_WEIGHTS_FILE)):
            model.site_model = load_site_model(folder)  # one file without the other is refused, named
        return model

    @classmethod
    def from_dict(cls, data: dict, path: str | Path | None = None) -> "GeneModel":
        def fail(name, why):
            raise ModelFileError(path, f"gene model field {name!r}: {why}")

        version = data.get("format_version")
        if version != FORMAT_VERSION:
            fail("format_version", f"this genoformer reads version {FORMAT_VERSION}, the file has {version!r}; "
                                   "learn the gene model again with this version (`genoformer gene-model`)")
        missing = [name for name in ("order", "pseudocount", "coding", "intron", "intergenic", "background",
                                     "signals", "fitted_signals", "start_rank_weights", "donors", "acceptors",
                                     "start_codons",
                                     "stop_codons", "lengths")
                   if name not in data]
        if missing:
            fail(missing[0], "missing: the file is incomplete or was not written by genoformer; learn the gene "
                             "model again (`genoformer gene-model`)")
        order = data["order"]
        if not isinstance(order, int) or not 1 <= order <= 8:
            fail("order", f"must be an integer between 1 and 8, got {order!r}")
        words = 4 ** (order + 1)

        def array(name, value, shape):
            try:
                out = np.asarray(value, dtype=np.int64)
            except (TypeError, ValueError, OverflowError):
                fail(name, "must hold whole-number counts")
            if out.shape != shape or (out < 0).any():
                fail(name, f"must be non-negative counts of shape {shape}, got shape {out.shape}")
            return out

        signals = data["signals"]
        if not isinstance(signals, dict) or set(signals) != set(WINDOWS):
            fail("signals", f"must have the kinds {sorted(WINDOWS)}")
        tables = {k: array(f"signals.{k}", signals[k], (WINDOWS[k][1], 4, 4)) for k in WINDOWS}
        fitted = data["fitted_signals"]
        if not isinstance(fitted, dict) or set(fitted) != set(WINDOWS):
            fail("fitted_signals", f"must have the kinds {sorted(WINDOWS)}")
        fitted_tables = {}
        for kind, value in fitted.items():
            try:
                table = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                fail(f"fitted_signals.{kind}", "must hold numbers")
            shape = (FITTED_WINDOWS[kind][1], 5, 5)
            if table.shape != shape or not np.isfinite(table).all():
                fail(f"fitted_signals.{kind}", f"must be finite numbers of shape {shape}, got shape {table.shape}")
            fitted_tables[kind] = table
        try:
            rank_weights = np.asarray(data["start_rank_weights"], dtype=np.float64)
        except (TypeError, ValueError):
            fail("start_rank_weights", "must hold numbers")
        if rank_weights.shape != (START_RANKS,) or not np.isfinite(rank_weights).all():
            fail("start_rank_weights", f"must be {START_RANKS} finite numbers, got shape {rank_weights.shape}")
        lengths = data["lengths"]
        if not isinstance(lengths, dict) or not all(isinstance(lengths.get(k), list) for k in LENGTH_KINDS):
            fail("lengths", f"must list the lengths of {list(LENGTH_KINDS)}")
        for name in ("donors", "acceptors", "start_codons", "stop_codons"):
            if not isinstance(data[name], dict) or not all(isinstance(c, int) for c in data[name].values()):
                fail(name, "must map words to counts")
        pseudocount = data["pseudocount"]
        if not isinstance(pseudocount, (int, float)) or not pseudocount > 0:
            fail("pseudocount", f"must be a positive number, got {pseudocount!r}")
        return cls(order=order, coding=array("coding", data["coding"], (3, words)),
                   intron=array("intron", data["intron"], (words,)),
                   intergenic=array("intergenic", data["intergenic"], (words,)),
                   background=array("background", data["background"], (4, 4)), signals=tables,
                   fitted_signals=fitted_tables, start_rank_weights=rank_weights,
                   donors=dict(data["donors"]), acceptors=dict(data["acceptors"]),
                   start_codons=dict(data["start_codons"]), stop_codons=dict(data["stop_codons"]),
                   lengths={k: [int(x) for x in lengths[k]] for k in LENGTH_KINDS},
                   report=dict(data.get("report") or {}), pseudocount=float(pseudocount),
                   decoder=None if "decoder" not in data else DecodeSettings.from_dict(data["decoder"], fail),
                   pseudogene_filter=None if "pseudogene_filter" not in data else PseudogeneFilter.from_dict(
                       data["pseudogene_filter"], order, fail))


def _signal_words(seen: dict[str, int], canonical: str) -> tuple[str, ...]:
    """The dinucleotides at least MIN_SIGNAL_SHARE of ``seen``'s sites have, with the canonical one."""
    total = max(sum(seen.values()), 1)
    common = [w for w, c in seen.items() if c >= MIN_SIGNAL_SHARE * total and "N" not in w]
    return tuple(sorted(set(common) | {canonical}))


def _with_defaults(seen: Counter, words: tuple[str, ...]) -> dict[str, int]:
    """The codons to decode with: the given ones, with how often each began / ended a training gene."""
    return {word: int(seen.get(word, 0)) for word in words}


# Fewer true sites of a kind than this: a fit would learn noise (on A. thaliana slices with ~100
# training genes it lost a third of the exons), so the counted WAM stands in for it.
MIN_FITTED_SITES = 500


def _fitted_signal(counts: TrainingCounts, kind: str, pseudocount: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The fitted (width, 5, 5) site log-odds of ``kind`` (``signals.fit_site_table``) and its
    (START_RANKS,) rank weights (starts only; zeros for the other kinds), at most ``MAX_DECOYS`` decoys
    drawn at random (seeded, so a model is learned the same way twice); with too few true sites, the
    counted WAM placed in the fitted window (zeros around it) and counted rank weights (``rank_log_odds``)."""
    true = np.concatenate(counts.fitted_site_windows[kind])
    counted = log_odds_table(counts.signals[kind], counts.background, pseudocount)  # (counted width, 5, 5)
    ranks = None
    if kind == "start":
        ranks = tuple(np.concatenate(counts.start_ranks[name]).astype(np.int64) for name in ("true", "decoy"))
    if len(true) < MIN_FITTED_SITES:
        (offset, width), (fitted_offset, fitted_width) = WINDOWS[kind], FITTED_WINDOWS[kind]
        table = np.zeros((fitted_width, 5, 5))
        table[offset - fitted_offset: offset - fitted_offset + width] = counted
        return table, np.zeros(START_RANKS) if ranks is None else rank_log_odds(*ranks, pseudocount)
    counted_windows = np.concatenate(counts.site_windows[kind]).astype(np.int64)
    flat = counted.reshape(-1, 25)
    typical = float(flat[np.arange(len(flat))[None, :], counted_windows].sum(axis=1).mean())
    decoys = np.concatenate(counts.decoy_windows[kind])
    if len(decoys) > MAX_DECOYS:
        chosen = np.sort(np.random.default_rng(0).choice(len(decoys), MAX_DECOYS, replace=False))
        decoys = decoys[chosen]
        ranks = None if ranks is None else (ranks[0], ranks[1][chosen])
    return fit_site_table(true.astype(np.int64), decoys, typical, ranks)
