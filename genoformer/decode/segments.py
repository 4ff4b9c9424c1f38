"""Shared pieces of decoding: bases as codes, run-length segmentation, and decoded features as table rows.

Segmentation (``call_segments``) is the decoder for label sets that are not gene structures
("regions": promoters, enhancers, ...) and for non-coding RNA calls. It is deliberately HMM-free
and works on runs rather than bases, so it is linear in the sequence length with no Python loop
over positions:

1. smooth each class's probability with a centred moving average of ``window`` bases (cumulative sums);
2. label each base with the arg-max class and cut the labels into runs;
3. repeatedly relabel runs shorter than their class's minimum length with the class of the
   neighbouring run that has the larger summed probability over the short run, then merge equal
   neighbours. Only runs shorter than their short neighbours change in one round (so two short
   neighbours never swap classes), and the shortest short run always changes, so the rounds end;
   with noisy input they end after a handful of rounds, each a few numpy passes over the runs;
4. report every run of a non-background class with the mean (unsmoothed) probability of its class.

The gene decoders (``prokaryote``, ``eukaryote``) describe their calls as :class:`Transcript` objects
(CDS and UTR pieces in forward-strand coordinates); :func:`transcript_table` and
:func:`segment_table` turn decoded features into the annotation table that ``read_annotation``
returns, so exporters and the evaluator see one shape whether features came from a file or a model.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from genoformer.genome.annotation_table import ANNOTATION_COLUMNS as COLUMNS, make_annotation

SOURCE = "genoformer"
STRANDS = ("+", "-")

# A=0, C=1, G=2, T=3 so that the complement of a code c is 3 - c; everything else (N, IUPAC) is 4.
_CODES = np.full(256, 4, dtype=np.uint8)
for _code, _letters in enumerate(("Aa", "Cc", "Gg", "Tt")):
    for _letter in _letters:
        _CODES[ord(_letter)] = _code
_COMPLEMENT = np.array([3, 2, 1, 0, 4], dtype=np.uint8)
INVALID_CODON = 64


def encode_bases(sequence: str) -> np.ndarray:
    """(length,) uint8 codes: A C G T -> 0..3 (either case), anything else -> 4."""
    return _CODES[np.frombuffer(sequence.encode("ascii", errors="replace"), dtype=np.uint8)]


def reverse_complement_codes(codes: np.ndarray) -> np.ndarray:
    return _COMPLEMENT[codes[::-1]]


def word_codes(codes: np.ndarray, k: int) -> np.ndarray:
    """Code of the k-mer starting at every base, (length,) int32; k-mers with a non-ACGT base or
    running off the end get 4**k (matches no word)."""
    n = len(codes)
    out = np.zeros(n, dtype=np.int32)
    bad = np.zeros(n, dtype=bool)
    for offset in range(k):
        shifted = np.full(n, 4, dtype=np.uint8)
        shifted[: n - offset] = codes[offset:]
        out = out * 4 + np.minimum(shifted, 3)
        bad |= shifted > 3
    out[bad] = 4**k
    return out


def word_index(word: str) -> int:
    """The code :func:`word_codes` gives ``word`` (ACGT only, either case)."""
    codes = encode_bases(word)
    if len(codes) == 0 or (codes > 3).any():
        raise ValueError(f"{word!r} is not a word over ACGT")
    return int(np.dot(codes.astype(np.int64), 4 ** np.arange(len(codes) - 1, -1, -1)))


def word_mask(words: np.ndarray, vocabulary: Iterable[str], k: int) -> np.ndarray:
    """True where the k-mer code in ``words`` (from :func:`word_codes`) is one of ``vocabulary``."""
    table = np.zeros(4**k + 1, dtype=bool)
    for word in vocabulary:
        if len(word) != k:
            raise ValueError(f"{word!r} is not a {k}-letter word")
        table[word_index(word)] = True
    return table[words]


def prefix_sums(values: np.ndarray) -> np.ndarray:
    """Cumulative sums with a leading 0 (float64), so sum(values[a:b]) = out[b] - out[a]."""
    out = np.empty(values.shape[:-1] + (values.shape[-1] + 1,), dtype=np.float64)
    out[..., 0] = 0.0
    np.cumsum(values, axis=-1, dtype=np.float64, out=out[..., 1:])
    return out


def _moving_average(probs: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along the last axis; near the ends the window is clipped."""
    if window <= 1:
        return probs
    sums = prefix_sums(probs)  # (classes, length + 1)
    n = probs.shape[-1]
    positions = np.arange(n)
    lo = np.maximum(positions - window // 2, 0)
    hi = np.minimum(positions - window // 2 + window, n)
    return (sums[:, hi] - sums[:, lo]) / (hi - lo)


def _runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starts, ends and classes of the maximal runs of equal labels."""
    starts = np.flatnonzero(np.concatenate(([True], labels[1:] != labels[:-1])))
    ends = np.append(starts[1:], len(labels))
    return starts, ends, labels[starts]


def call_segments(
    probs: np.ndarray,
    min_length: int | Mapping[int, int] = 1,
    window: int = 1,
) -> list[tuple[int, int, int, float]]:
    """Segments ``(class, start, end, score)`` of the non-background classes of one strand.

    ``probs`` is (n_classes, length) with class 0 the background. ``min_length`` is one minimum
    for every class or a mapping class index -> minimum (absent classes: 1); runs shorter than
    their minimum are absorbed by a neighbour (see the module docstring). ``window`` is the moving
    average applied before the arg-max (1 = none). ``score`` is the mean probability of the class
    over the segment.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"expected probabilities of shape (n_classes, length), got {probs.shape}")
    n_classes, n = probs.shape
    if n == 0:
        return []
    minimum = np.ones(n_classes, dtype=np.int64)
    if isinstance(min_length, Mapping):
        for cls, value in min_length.items():
            minimum[int(cls)] = int(value)
    else:
        minimum[:] = int(min_length)

    starts, ends, classes = _runs(np.argmax(_moving_average(probs, window), axis=0))
    sums = prefix_sums(probs)  # (classes, length + 1)
    while len(starts) > 1:
        lengths = ends - starts
        short = lengths < minimum[classes]
        if not short.any():
            break
        # Compare only with short neighbours: those are the runs that could change in the same round.
        guard = np.iinfo(np.int64).max
        left = np.concatenate(([guard], np.where(short[:-1], lengths[:-1], guard)))
        right = np.concatenate((np.where(short[1:], lengths[1:], guard), [guard]))
        change = np.flatnonzero(short & (lengths < left) & (lengths <= right))
        left_class = classes[np.maximum(change - 1, 0)]
        right_class = classes[np.minimum(change + 1, len(classes) - 1)]
        s, e = starts[change], ends[change]
        left_mass = np.where(change > 0, sums[left_class, e] - sums[left_class, s], -np.inf)
        right_mass = np.where(change < len(classes) - 1, sums[right_class, e] - sums[right_class, s], -np.inf)
        classes = classes.copy()
        classes[change] = np.where(left_mass >= right_mass, left_class, right_class)
        keep = np.concatenate(([True], classes[1:] != classes[:-1]))
        starts, classes = starts[keep], classes[keep]
        ends = np.append(starts[1:], n)

    lengths = ends - starts
    score = (sums[classes, ends] - sums[classes, starts]) / lengths
    called = classes != 0
    return [
        (int(c), int(s), int(e), float(p))
        for c, s, e, p in zip(classes[called], starts[called], ends[called], score[called])
    ]


@dataclass
class Transcript:
    """One decoded transcript in forward-strand coordinates (0-based half-open, ascending pieces).

    ``kind`` is the transcript's SO type (mRNA, ncRNA). ``cds`` are the coding pieces,
    ``five_prime_utr`` / ``three_prime_utr`` the untranslated ones, ``exons`` the non-coding
    exons of a transcript without CDS. ``introns`` are scored for the gene's mean probability.
    ``partial`` is "" for a whole gene, else Prodigal's flag: two digits for the sequence's left and
    right edge, 1 where the gene runs off it ("10": no start or stop codon on the left). ``log_odds``
    (nats), where the decoder gives one: how much more likely its model finds the sequence with this gene
    than with intergenic DNA in its place (a gene model's share of the path score, penalties included).
    """

    strand: str
    kind: str = "mRNA"
    cds: list[tuple[int, int]] = field(default_factory=list)
    five_prime_utr: list[tuple[int, int]] = field(default_factory=list)
    three_prime_utr: list[tuple[int, int]] = field(default_factory=list)
    exons: list[tuple[int, int]] = field(default_factory=list)
    partial: str = ""
    log_odds: float | None = None

    def pieces(self) -> list[tuple[str, int, int]]:
        """(class name, start, end) of every exonic piece, by position."""
        named = (
            [("CDS", s, e) for s, e in self.cds]
            + [("five_prime_UTR", s, e) for s, e in self.five_prime_utr]
            + [("three_prime_UTR", s, e) for s, e in self.three_prime_utr]
            + [(self.kind, s, e) for s, e in self.exons]
        )
        return sorted(named, key=lambda piece: piece[1])

    def exon_spans(self) -> list[tuple[int, int]]:
        """Exons: the exonic pieces with touching pieces (UTR next to CDS) merged."""
        merged: list[list[int]] = []
        for _, s, e in self.pieces():
            if merged and merged[-1][1] == s:
                merged[-1][1] = e
            else:
                merged.append([s, e])
        return [(s, e) for s, e in merged]

    @property
    def start(self) -> int:
        return min(s for _, s, _ in self.pieces())

    @property
    def end(self) -> int:
        return max(e for _, _, e in self.pieces())


class StrandSums:
    """Prefix sums of per-base probabilities, per strand row and class, computed when first asked. With
    no classes at all (a decoder without a network) every total is NaN: the feature has no probability,
    which GFF3 writes as ".", not 0."""

    def __init__(self, probs: np.ndarray, classes: Sequence[str]):
        self._probs = probs  # (2, classes, length)
        self._index = {name: i for i, name in enumerate(classes)}
        self._sums: dict[tuple[int, str], np.ndarray] = {}

    def total(self, strand: str, name: str, start: int, end: int) -> float:
        row = STRANDS.index(strand)
        key = (row, name)
        if key not in self._sums:
            if not self._index:
                return float("nan")
            if name not in self._index:
                return 0.0
            self._sums[key] = prefix_sums(self._probs[row, self._index[name]])
        sums = self._sums[key]
        return float(sums[end] - sums[start])

    def mean(self, strand: str, name: str, start: int, end: int) -> float:
        return self.total(strand, name, start, end) / max(end - start, 1)


def _frame(rows: list[dict]) -> pd.DataFrame:
    # make_annotation gives the dtypes and index read_annotation returns.
    return make_annotation({column: [row[column] for row in rows] for column in COLUMNS})


def _row(seqid, kind, start, end, score, strand, *, phase=None, id=None, parent=None, gene_id=None, transcript_id=None,
         attributes=None):
    return {
        "seqid": seqid, "source": SOURCE, "type": kind, "start": int(start), "end": int(end),
        "score": round(float(score), 4), "strand": strand, "phase": phase, "id": id, "parent": parent,
        "gene_id": gene_id, "transcript_id": transcript_id, "name": None, "attributes": dict(attributes or {}),
    }


def cds_phases(cds: Sequence[tuple[int, int]], strand: str) -> list[int]:
    """GFF3 phase of each CDS piece (listed by position): bases to skip at the piece's 5' end
    before the next codon starts, counted along the transcript."""
    order = list(range(len(cds))) if strand == "+" else list(range(len(cds)))[::-1]
    phases = [0] * len(cds)
    done = 0
    for i in order:
        phases[i] = (3 - done % 3) % 3
        done += cds[i][1] - cds[i][0]
    return phases


def transcript_table(seqid: str, transcripts: Iterable[Transcript], sums: StrandSums,
                     id_prefix: str | None = None) -> pd.DataFrame:
    """gene -> transcript -> exon / CDS / UTR rows, one gene per transcript, genes numbered by position
    (IDs ``{id_prefix}.g{n}``; the prefix defaults to ``seqid``).

    Scores are mean probabilities of the called class: per piece its own class, per exon the
    pieces it merges, per gene and transcript every base of the span (introns as "intron"); NaN where
    ``sums`` holds no probabilities. A transcript's ``log_odds`` goes on its gene and mRNA rows.
    """
    rows: list[dict] = []
    ordered = sorted(transcripts, key=lambda t: (t.start, t.end, t.strand))
    for number, transcript in enumerate(ordered, start=1):
        strand = transcript.strand
        gene_id = f"{id_prefix or seqid}.g{number}"
        transcript_id = f"{gene_id}.t1"
        pieces = transcript.pieces()
        exonic = sum(sums.total(strand, name, s, e) for name, s, e in pieces)
        exons = transcript.exon_spans()
        introns = sum(sums.total(strand, "intron", a[1], b[0]) for a, b in zip(exons, exons[1:]))
        span = (transcript.start, transcript.end)
        gene_score = (exonic + introns) / (span[1] - span[0])
        flag = {"partial": transcript.partial} if transcript.partial else {}
        odds = {} if transcript.log_odds is None else {"log_odds": f"{transcript.log_odds:.2f}"}
        rows.append(_row(seqid, "gene", *span, gene_score, strand, id=gene_id, gene_id=gene_id,
                         attributes={**flag, **odds}))
        rows.append(_row(seqid, transcript.kind, *span, gene_score, strand, id=transcript_id, parent=gene_id,
                         gene_id=gene_id, transcript_id=transcript_id, attributes={**flag, **odds}))
        # Children are numbered 5' -> 3' along the transcript.
        along = (lambda items: items) if strand == "+" else (lambda items: items[::-1])
        children: list[dict] = []
        for k, (s, e) in enumerate(along(exons), start=1):
            mass = sum(sums.total(strand, name, max(s, ps), min(e, pe)) for name, ps, pe in pieces if ps < e and pe > s)
            children.append(_row(seqid, "exon", s, e, mass / (e - s), strand, id=f"{transcript_id}.exon{k}",
                                 parent=transcript_id, gene_id=gene_id, transcript_id=transcript_id))
        labelled = (
            ("five_prime_UTR", "utr5p", transcript.five_prime_utr, None),
            ("CDS", "cds", transcript.cds, cds_phases(transcript.cds, strand)),
            ("three_prime_UTR", "utr3p", transcript.three_prime_utr, None),
        )
        for kind, suffix, spans, phases in labelled:
            phases = phases or [None] * len(spans)
            numbered = list(zip(spans, phases))
            for k, ((s, e), phase) in enumerate(along(numbered), start=1):
                children.append(_row(seqid, kind, s, e, sums.mean(strand, kind, s, e), strand, phase=phase,
                                     id=f"{transcript_id}.{suffix}{k}", parent=transcript_id, gene_id=gene_id,
                                     transcript_id=transcript_id, attributes=flag if kind == "CDS" else None))
        rank = {"exon": 0, "five_prime_UTR": 1, "CDS": 2, "three_prime_UTR": 3}
        rows.extend(sorted(children, key=lambda row: (row["start"], rank[row["type"]])))
    return _frame(rows)


def segment_table(seqid: str, segments: Iterable[tuple[str, str, int, int, float]],
                  id_prefix: str | None = None) -> pd.DataFrame:
    """One row per ``(type, strand, start, end, score)`` segment, sorted by position, ids ``{id_prefix}.r{n}``
    (the prefix defaults to ``seqid``)."""
    ordered = sorted(segments, key=lambda seg: (seg[2], seg[3], seg[1], seg[0]))
    return _frame([
        _row(seqid, kind, s, e, score, strand, id=f"{id_prefix or seqid}.r{n}")
        for n, (kind, strand, s, e, score) in enumerate(ordered, start=1)
    ])
