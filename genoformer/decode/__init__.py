"""Per-base class probabilities -> features (an annotation table like ``read_annotation``'s).

Probabilities for one record are (2, n_classes, length): row 0 the + strand, row 1 the − strand,
both in forward-strand coordinates, classes as the model's ``LabelScheme``.

- Gene structures, prokaryote: ORF-constrained gene calls (``prokaryote``).
- Gene structures, eukaryote: exon–intron Viterbi over splice, start and stop signals (``eukaryote``).
- In both, an "ncRNA" class is segmented on its own (``segments.call_segments``) into
  gene -> ncRNA -> exon models.
- Any other label set ("regions"): run-length segmentation with minimum lengths (``segments``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from genoformer.decode.eukaryote import call_genes_eukaryote, eukaryote_transcripts
from genoformer.decode.prokaryote import (
    GeneStatistics, call_genes_prokaryote, check_inputs, learn_gene_statistics, prokaryote_transcripts,
    start_model_from_genes,
)
from genoformer.decode.start_sites import StartModel
from genoformer.decode.segments import (
    STRANDS, StrandSums, Transcript, call_segments, segment_table, transcript_table,
)
from genoformer.errors import ConfigError

__all__ = [
    "decode_record", "decode_stretches", "Stretch", "gene_decoder_options", "self_trains", "learn_genome_statistics", "call_genes_prokaryote",
    "call_genes_eukaryote", "call_segments", "StartModel", "start_model_from_genes",
]

ORGANISMS = ("prokaryote", "eukaryote")
# The prokaryote decoder's user-facing knobs: numbers, and one switch.
PROKARYOTE_OPTIONS = ("gene_cost", "codon_weight", "start_weight", "closed_ends")
# The gene cost suits how sure a model is of coding bases, which its fine-tuning loss sets: cross-
# entropy models call a few spurious genes at the decoder's 300, which suits class-weighted ones
# (docs/gene-decoding.md has the figures).
GENE_COST_BY_LOSS = {"ce": 400.0}


def gene_decoder_options(organism: str, loss: str | None = None,
                         **options: float | bool | None) -> dict[str, float | bool]:
    """The given (not ``None``) gene-decoder options, checked; callers check before a long run starts.
    With the fine-tuning ``loss`` of the model being decoded, a missing gene cost is that loss's
    (``GENE_COST_BY_LOSS``)."""
    given = {name: value for name, value in options.items() if value is not None}
    for name, value in given.items():
        if name not in PROKARYOTE_OPTIONS:
            raise ConfigError(f"unknown gene decoder option {name!r}; known: {list(PROKARYOTE_OPTIONS)}")
        if name == "closed_ends":
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if organism != "prokaryote":
            raise ConfigError(f"{name} applies to the prokaryote gene decoder only")
    for name in ("codon_weight", "start_weight"):
        if given.get(name, 0) < 0:
            raise ConfigError(f"{name} must be >= 0, got {given[name]}")
    if organism == "prokaryote" and "gene_cost" not in given and loss in GENE_COST_BY_LOSS:
        given["gene_cost"] = GENE_COST_BY_LOSS[loss]
    return given


def _class_minimums(min_length: int | Mapping[str, int], classes: tuple[str, ...]) -> int | dict[int, int]:
    if not isinstance(min_length, Mapping):
        return int(min_length)
    unknown = set(min_length) - set(classes)
    if unknown:
        raise ConfigError(f"min_length names classes {sorted(unknown)} that are not among {list(classes)}")
    return {classes.index(name): int(value) for name, value in min_length.items()}


def _ncrna_transcripts(probs: np.ndarray, index: int, min_length: int, window: int) -> list[Transcript]:
    transcripts = []
    for row, strand in enumerate(STRANDS):
        others = np.delete(probs[row], index, axis=0)  # (classes - 1, length)
        # ncRNA where it beats every other class: (2, length) best other class, ncRNA.
        two_class = np.stack((others.max(axis=0), probs[row, index])).astype(np.float32)
        for _, start, end, _ in call_segments(two_class, {1: min_length}, window):
            transcripts.append(Transcript(strand=strand, kind="ncRNA", exons=[(start, end)]))
    return transcripts


def self_trains(scheme: Any, organism: str) -> bool:
    """Whether the decoder learns statistics from the genes it calls (prokaryote gene structures)."""
    return scheme.kind == "gene_structure" and organism == "prokaryote"


def learn_genome_statistics(records: Callable[[], Iterable[tuple[str, np.ndarray]]], scheme: Any,
                            organism: str = "prokaryote", **options) -> GeneStatistics | None:
    """The gene decoder's self-trained statistics pooled over all of a genome's records (``records()``
    yields (sequence, probs) pairs and is called once per training pass), for :func:`decode_record`'s
    ``statistics``; ``None`` where the decoder learns none (see :func:`self_trains`)."""
    if not self_trains(scheme, organism):
        return None
    return learn_gene_statistics(records, classes=tuple(scheme.classes), **options)


def decode_record(
    sequence: str,
    probs: np.ndarray,
    seqid: str,
    scheme: Any,
    organism: str = "prokaryote",
    *,
    min_length: int | Mapping[str, int] = 1,
    window: int = 1,
    stranded: bool = True,
    ncrna_min_length: int = 40,
    statistics: GeneStatistics | None = None,
    id_prefix: str | None = None,
    **options,
) -> pd.DataFrame:
    """Features of one record decoded from its (2, n_classes, length) probabilities.

    ``scheme`` is the model's ``LabelScheme`` (``classes``, ``kind``). For ``kind ==
    "gene_structure"`` the ``organism`` picks the gene decoder and ``options`` go to it
    (see ``call_genes_prokaryote`` / ``call_genes_eukaryote``); an "ncRNA" class is segmented with
    ``ncrna_min_length`` and ``window``. For ``kind == "regions"`` each strand row is segmented
    (``min_length``: one minimum or class name -> minimum; ``window``: smoothing); with
    ``stranded=False`` (labels from unstranded features, identical on both rows) the two rows are
    averaged and segments get strand ".". ``statistics`` (:func:`learn_genome_statistics`) replaces the
    prokaryote decoder's statistics learnt from this record alone. Feature IDs begin with ``id_prefix``
    (default ``seqid``): give each stretch of a record its own when decoding several.
    """
    probs = check_inputs(sequence, probs)
    classes = tuple(scheme.classes)
    if probs.shape[1] != len(classes):
        raise ConfigError(f"{probs.shape[1]} probability rows for the {len(classes)} classes {list(classes)}")
    if scheme.kind == "gene_structure":
        if organism not in ORGANISMS:
            raise ConfigError(f"organism must be one of {ORGANISMS}, got {organism!r}")
        if organism == "prokaryote":
            transcripts = prokaryote_transcripts(sequence, probs, classes=classes, statistics=statistics, **options)
        else:
            transcripts = eukaryote_transcripts(sequence, probs, classes=classes, **options)
        if "ncRNA" in classes:
            transcripts += _ncrna_transcripts(probs, classes.index("ncRNA"), ncrna_min_length, window)
        return transcript_table(seqid, transcripts, StrandSums(probs, classes), id_prefix)
    if scheme.kind == "regions":
        minimums = _class_minimums(min_length, classes)
        if not stranded:
            merged = probs.mean(axis=0)  # (classes, length)
            found = [(classes[c], ".", s, e, p) for c, s, e, p in call_segments(merged, minimums, window)]
        else:
            found = [
                (classes[c], strand, s, e, p)
                for row, strand in enumerate(STRANDS)
                for c, s, e, p in call_segments(probs[row], minimums, window)
            ]
        return segment_table(seqid, found, id_prefix)
    raise ConfigError(f"unknown label scheme kind {scheme.kind!r} (expected 'gene_structure' or 'regions')")


@dataclass(frozen=True)
class Stretch:
    """Where a decoded stretch lies on its record, and the prefix of its feature IDs (None: the record's)."""
    seqid: str
    start: int = 0
    id_prefix: str | None = None


def decode_stretches(stretches: Sequence[Stretch], load: Callable[[int, bool], tuple[str, np.ndarray]],
                     scheme: Any, organism: str = "prokaryote", **options) -> list[pd.DataFrame]:
    """Features of several stretches of one genome, each table in its record's coordinates.

    ``load(i, lazy)`` gives stretch ``i``'s sequence and (2, n_classes, length) probabilities (``lazy``:
    a memory map will do; the probabilities of a whole draft genome need not fit in memory at once).
    With several stretches the decoder's self-trained statistics are learnt from all of them together
    (:func:`learn_genome_statistics`: a genome's contigs or regions, as Prodigal trains on a whole
    genome), then each stretch is decoded with them. This is the one decoding path of
    ``genoformer annotate`` and of the tagging task's gene-level validation scores, so the two agree.
    """
    statistics = None
    if len(stretches) > 1:
        statistics = learn_genome_statistics(lambda: (load(i, True) for i in range(len(stretches))), scheme,
                                             organism, **options)
    tables = []
    for i, stretch in enumerate(stretches):
        sequence, probs = load(i, False)
        table = decode_record(sequence, probs, stretch.seqid, scheme, organism=organism, statistics=statistics,
                              id_prefix=stretch.id_prefix, **options)
        table[["start", "end"]] += stretch.start
        tables.append(table)
    return tables
