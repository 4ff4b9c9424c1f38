"""Prokaryotic gene calls: open reading frames scored by the model's coding probability.

Every constant below was chosen on the validation stretch (NC_000913.3:3.85-4.08 Mb); what each
choice measured is in docs/gene-decoding.md, stated there once.

What is built (a segment-level decoder, as fast gene finders do; no per-base loop):

1. Per strand (the − strand is decoded on the reverse complement, with its probability row
   reversed), every base gets the coding log-odds ``log p(CDS) - log(1 - p(CDS))``, where p is the
   strand's P(CDS) mixed with P(coding on either strand) (``STRAND_SHARE``: models know where
   coding is better than on which strand; the ORFs, codon statistics and step 4 pick the strand), clipped to
   [``PROBABILITY_FLOOR``, 1 - ``PROBABILITY_FLOOR``] (0.2: one base's evidence is capped at +-1.39, so the
   self-trained statistics can overrule a model sure of a wrong call), and their prefix sums, so the
   score of any span is two lookups.
2. Stop and start codons are found for all positions at once from 3-mer codes. For each frame the
   start codons are assigned to the first in-frame stop downstream (``searchsorted``): that is the
   ORF each start opens. A candidate gene is start..stop inclusive of the stop codon, at least
   ``min_cds_length`` long, scored by its span's log-odds plus a start-codon prior
   (ATG > GTG > TTG) plus ``rbs_bonus`` where a Shine-Dalgarno 4-mer (AGGA, GGAG, GAGG) begins
   6-15 bases upstream of the start. The model's coding probability rises over tens of bases
   around a start, so the codon and the ribosome binding site pick most starts. Per stop the
   best-scoring start is kept, plus up to 7 shorter alternatives that each beat every start
   downstream of them (needed when the best start would overlap the upstream neighbour too much).
   All vectorised.
3. Every gene pays ``gene_cost`` (candidates scoring no more are dropped). Without it any ORF over
   coding-looking bases adds to the total, so short alternative-frame ORFs fill every gap beside
   real genes, in rRNA and over antisense shadows; with it a gene must carry that much evidence
   of its own.
4. Overlaps on a strand are resolved by weighted interval scheduling over the candidates sorted by
   end: a gene may overlap its predecessor by up to ``max_overlap`` bases (operons), and the
   log-odds of an overlap, counted by both genes, is subtracted once so that alternative-frame ORFs
   straddling two real genes do not pay. The only Python loop is over candidates (and their few
   overlapping predecessors). Both strands are scheduled together, genes on opposite strands
   sharing at most ``max_opposite_overlap`` bases, so that a coding stretch is one gene, not a gene
   and its antisense shadow (with shared strand evidence, step 1, the shadow's ORFs score too).

5. Self-training (``codon_weight`` > 0, as GeneMark and Prodigal train on the genome they annotate):
   the first pass's genes give this sequence's in-frame 6-mer (codon-pair) log-odds against all of
   its 6-mers; a second pass adds ``codon_weight`` x their sum over each candidate's span. That is
   evidence the per-base probabilities lack: the reading frame (other-frame and antisense ORFs
   score negative) and the genome's own codon usage (genes the model is unsure of). A stop's
   candidates all get the score of its best start's span, so the statistics decide which genes,
   not where they start.

6. Self-trained start sites (``start_weight`` > 0, as Prodigal learns its ribosome binding site and
   start-codon statistics from the genome): the second pass's genes give position-specific base
   log-odds over the ``START_SITE`` bases around their starts (30 upstream: binding site and
   spacer; the start codon and the next) against the other start codons of the same open reading
   frames, i.e. the alternatives the decoder had to choose among. A third pass scores each
   candidate's start by ``start_weight`` x its summed log-odds in place of the fixed start-codon
   prior and Shine-Dalgarno bonus. The model's coding probability changes over a hundred bases or
   more around a start, so the start sites carry most of the evidence about where a gene begins,
   and a less trained model gains most. It is learnt only when the previous pass called ``MIN_START_TRAINING_GENES``
   genes or more. The statistics of 5 and 6 are learnt from one record, or from all of a genome's
   records together (:func:`learn_gene_statistics`), as Prodigal trains on a whole genome.
   Given a start model learnt from an annotation (``start_model``, start_sites.py: a tagger learns one
   from its training regions), the passes with codon statistics choose among each ORF's starts by it:
   every candidate of an ORF keeps the self-trained log-odds of the ORF's best start, which weigh
   whether the ORF is a gene, plus ``start_weight`` x the start model's log probability of its own
   start. E. coli, validation and three held-out stretches of the training part (start model learnt
   beside them), no network: exact-gene F1 0.847 -> 0.894 on average, either-strand MCC 0.879 -> 0.888.

7. Genes that run off the sequence's ends (a contig's or an annotated region's) are called as Prodigal
   calls them, partial: from the frame's first whole codon, or to its last, without a start or stop
   codon, flagged ``partial`` (left/right edge digits) in the GFF3: a draft assembly's short contigs
   cut many genes.

Cost: O(length) numpy work plus O(candidates log candidates); the E. coli genome (4.6 Mb, both
strands) decodes in ~1 s of CPU time on one core.

Each gene is written gene -> mRNA -> exon + CDS (exon = CDS span, phase 0), the same hierarchy as
eukaryotic calls, so exporters and the evaluator treat both alike.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from genoformer.decode.codon_statistics import codon_frame_sums, hexamer_counts, hexamer_log_odds, hexamer_table
from genoformer.decode.segments import (
    StrandSums, Transcript, encode_bases, prefix_sums, reverse_complement_codes, transcript_table, word_codes, word_index,
    word_mask,
)
from genoformer.decode.start_sites import (
    START_SITE, StartModel, learn_start_model, orf_starts, start_site_counts, start_site_scores, start_site_table,
    strand_genes,
)

GENE_STRUCTURE_CLASSES = ("intergenic", "five_prime_UTR", "CDS", "intron", "three_prime_UTR", "ncRNA")
# Bonus of each start codon relative to ATG, in summed log-odds units: the log frequency ratios
# (~90% / 8% / 1% of E. coli starts) times ~10, because neighbouring bases' log-odds are strongly
# correlated and their sum overstates the evidence about as much (tuned on E. coli, NC_000913.3:3.85-4.08 Mb).
START_CODONS = MappingProxyType({"ATG": 0.0, "GTG": -24.0, "TTG": -45.0})
STOP_CODONS = ("TAA", "TAG", "TGA")
# Shine-Dalgarno core 4-mers (of AGGAGG) and where one must begin, in bases upstream of the start
# codon: [start - 15, start - 5), i.e. the motif ends 2-14 bases before the start.
SHINE_DALGARNO = ("AGGA", "GGAG", "GAGG")
RBS_WINDOW = (15, 5)
# Weight of the self-trained in-frame 6-mer log-odds (nats per codon) beside the model's summed
# per-base log-odds.
CODON_WEIGHT = 10.0
# Weight of the start-site scores (start_sites.py) beside the model's summed per-base log-odds.
START_WEIGHT = 60.0
# The start-site model is learnt only from at least this many genes (~40 kb of a bacterial genome):
# from a handful it memorises their starts' surroundings, and its scores then call spurious genes
# (5 kb pieces of the validation stretch: 198 -> 217 genes called, none more correct).
MIN_START_TRAINING_GENES = 40
# Alternative starts kept per stop codon for the overlap resolution to choose from.
STARTS_PER_STOP = 8
# Per-base probabilities are clipped to [floor, 1 - floor] before their log-odds are summed. Neighbouring
# bases' evidence is far from independent, and a model sure of a wrong call over a whole gene (p = 0.01:
# -4.6 a base, -4,600 over a kb) could never be overruled by the codon and start-site statistics; capped
# at +-1.39 a base they can weigh in.
PROBABILITY_FLOOR = 0.2
# Each strand's P(CDS) is mixed with P(coding on either strand) = 1 - (1 - p+)(1 - p-) before the
# log-odds, weight STRAND_SHARE on the latter. Models know that a stretch is coding better than which
# strand it is coded on: on the validation stretch the genes they missed included yidI, ppiC and rfaH,
# each painted coding on the wrong strand (P(CDS) 0.68-0.78 antisense, 0.01-0.07 sense), where the
# antisense frames are full of stops. Shared evidence lets the ORFs, the codon statistics and the
# joint scheduling of both strands (MAX_OPPOSITE_OVERLAP) choose the strand. Scheduled apart, so much
# sharing would call antisense shadows beside genes.
STRAND_SHARE = 0.75
# Bases genes on opposite strands may share (convergent or divergent neighbours; Prodigal allows 200 at
# 3' ends). More would let a gene and its antisense shadow both be called.
MAX_OPPOSITE_OVERLAP = 120


def resolve_classes(probs: np.ndarray, classes: Sequence[str] | None) -> tuple[str, ...]:
    """The class names of ``probs`` rows: given, or the gene-structure set (without ncRNA for 5 rows)."""
    if classes is None:
        n = probs.shape[1]
        classes = GENE_STRUCTURE_CLASSES[:n] if n in (5, 6) else None
        if classes is None:
            raise ValueError(f"cannot tell the classes of {n} probability rows; pass classes=")
    classes = tuple(classes)
    if probs.shape[1] != len(classes):
        raise ValueError(f"{probs.shape[1]} probability rows for {len(classes)} classes {classes}")
    return classes


def check_inputs(sequence: str, probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != 2:
        raise ValueError(f"expected probabilities of shape (2, n_classes, length), got {probs.shape}")
    if probs.shape[2] != len(sequence):
        raise ValueError(f"probabilities cover {probs.shape[2]} bases but the sequence has {len(sequence)}")
    return probs


def strand_view(codes: np.ndarray, probs: np.ndarray, row: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes and (classes, length) probabilities of strand ``row`` read 5' -> 3' along that strand."""
    if row == 0:
        return codes, probs[0]
    return reverse_complement_codes(codes), probs[1, :, ::-1]


def _start_table(start_codons: Mapping[str, float] | Sequence[str]) -> dict[str, float]:
    if isinstance(start_codons, Mapping):
        return {codon.upper(): float(bonus) for codon, bonus in start_codons.items()}
    return {codon.upper(): 0.0 for codon in start_codons}


def _with_edge_orfs(words: np.ndarray, begin: np.ndarray, end: np.ndarray, starts: Sequence[str],
                    stops: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """ORFs plus those that run off the sequence's ends (a contig's or region's), as Prodigal calls
    partial genes: a start with no stop downstream ends at its frame's last whole codon, and each
    frame's first stop (or, with none, the frame's last whole codon) also gets an ORF from the frame's
    first whole codon when that codon is not a start (else the ORF is complete and already listed)."""
    n = len(words)

    def last_codon_end(at):  # end of the last whole codon of the frame that ``at`` begins
        return at + 3 * ((n - at) // 3)

    end = np.where(end >= 0, end, last_codon_end(begin))
    stop_at = np.flatnonzero(word_mask(words, stops, 3))
    start_word = word_mask(words[:3], starts, 3)
    extra_begin, extra_end = [], []
    for frame in range(min(3, n)):
        if start_word[frame]:
            continue
        frame_stops = stop_at[stop_at % 3 == frame]
        extra_begin.append(frame)
        extra_end.append(frame_stops[0] + 3 if len(frame_stops) else last_codon_end(frame))
    return (np.concatenate([begin, np.array(extra_begin, dtype=begin.dtype)]),
            np.concatenate([end, np.array(extra_end, dtype=end.dtype)]))


def orf_candidates(
    codes: np.ndarray,
    log_odds_sums: np.ndarray,
    starts: Mapping[str, float],
    stops: Sequence[str],
    min_length: int,
    min_score: float,
    rbs_bonus: float,
    frame_sums: np.ndarray | None = None,
    start_scores: np.ndarray | None = None,
    closed_ends: bool = False,
    start_choice: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate genes on one strand: (begin, end, score) arrays in strand coordinates.

    A candidate's score is its span's summed log-odds, plus its start's score: ``start_scores`` at
    its first base when given (see :func:`start_site_scores`), else its start codon's bonus plus
    ``rbs_bonus`` if a Shine-Dalgarno 4-mer begins in ``RBS_WINDOW`` upstream of the start; plus
    (given ``frame_sums``, see :func:`codon_frame_sums`) the in-frame codon-statistics score of its span.
    Per stop codon: the best-scoring start and up to ``STARTS_PER_STOP - 1`` shorter alternatives
    that each beat every start downstream of them; candidates scoring at most ``min_score`` are dropped.
    ORFs running off either end of the sequence are candidates too (see :func:`_with_edge_orfs`); one
    with no start codon gets no start score. ``closed_ends``: only ORFs with a start and a stop codon.

    ``start_choice`` (a start model's weighted log probabilities, see :meth:`_Decoder.start_choice`):
    every start codon of an ORF with a stop codon gets the best start score among them plus its own
    ``start_choice``; candidates running off either end keep their own score.

    ``end`` includes the stop codon (an ORF running off the 3' end has none). ``log_odds_sums`` is the
    (length + 1,) prefix sum of the coding log-odds.
    """
    words = word_codes(codes, 3)
    start_bonus = np.zeros(65, dtype=np.float64)
    for codon, bonus in starts.items():
        if len(codon) != 3:
            raise ValueError(f"{codon!r} is not a codon")
        start_bonus[word_index(codon)] = bonus
    begin, end = orf_starts(words, list(starts), stops)  # an ORF is named by its end: one per stop codon
    if closed_ends:
        begin, end = begin[end >= 0], end[end >= 0]
    else:
        begin, end = _with_edge_orfs(words, begin, end, list(starts), stops)
    long_enough = end - begin >= min_length
    begin, end = begin[long_enough], end[long_enough]
    if len(begin) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    is_start = word_mask(words[begin], list(starts), 3)  # False where a gene runs in from the 5' end
    if start_scores is None:
        motif_sums = prefix_sums(word_mask(word_codes(codes, 4), SHINE_DALGARNO, 4).astype(np.float64))
        far, near = RBS_WINDOW
        has_rbs = motif_sums[np.maximum(begin - near, 0)] > motif_sums[np.maximum(begin - far, 0)]
        start_score = np.where(is_start, start_bonus[words[begin]] + rbs_bonus * has_rbs, 0.0)
    else:
        start_score = np.where(is_start, start_scores[begin], 0.0)
    if start_choice is not None:
        # The ORF's evidence of being a gene stays its best start's score; the start model picks the start.
        # Only among the start codons of ORFs with a stop codon (the model's candidates): a gene running
        # in from the 5' end, or off the 3' end, keeps its own score.
        chosen = is_start & word_mask(words[end - 3], stops, 3)
        best = pd.Series(np.where(chosen, start_score, -np.inf)).groupby(end).transform("max").to_numpy()
        start_score = np.where(chosen, best + start_choice[begin], start_score)
    score = log_odds_sums[end] - log_odds_sums[begin] + start_score
    # Walking upstream from the stop, a start is worth keeping only if it beats every start
    # downstream of it (a longer gene must score higher to be preferred; a shorter one may be
    # needed to fit beside a neighbour). Keep the best few of those per stop.
    order = np.lexsort((-begin, end))
    group, ranked = end[order], score[order]
    running = pd.Series(ranked).groupby(group).cummax().to_numpy()
    new_group = np.concatenate(([True], group[1:] != group[:-1]))
    record = new_group | (ranked > np.concatenate(([-np.inf], running[:-1])))
    kept = order[record]
    best_first = kept[np.lexsort((-score[kept], end[kept]))]
    rank = pd.Series(end[best_first]).groupby(end[best_first]).cumcount().to_numpy()
    chosen = best_first[rank < STARTS_PER_STOP]
    # The codon statistics weigh in on which genes to call, not on where they start: summed
    # over a few codons of an extension they are noise beside the start-codon and RBS evidence.
    # Every candidate of a stop gets the score of that stop's best start's span.
    codons = 0.0
    if frame_sums is not None:
        top = best_first[rank == 0]  # one per stop, in the order of `end`
        per_stop = frame_sums[end[top] - 3] - frame_sums[begin[top]]
        codons = per_stop[np.searchsorted(end[top], end[chosen])]
    begin, end, score = begin[chosen], end[chosen], score[chosen] + codons
    keep = score > min_score
    return begin[keep], end[keep], score[keep]


def select_genes(
    begin: np.ndarray, end: np.ndarray, score: np.ndarray, strand: np.ndarray, sums: np.ndarray,
    max_overlap: int, max_opposite_overlap: int,
) -> np.ndarray:
    """Indices of the best-scoring set of candidates (both strands, forward coordinates; ``strand`` 0 or
    1 each) in which a gene overlaps its predecessor by at most ``max_overlap`` bases on its own strand
    and ``max_opposite_overlap`` on the other.

    Weighted interval scheduling over candidates sorted by end. A predecessor either ends before the
    gene starts (best of all such, by prefix maximum) or starts before it and overlaps it within the
    allowance. On one strand the overlap's log-odds (``sums``: (2, length + 1) forward-coordinate prefix
    sums per strand) is counted by both genes, so it is paid once; across strands each gene's evidence
    is its own.
    """
    n = len(begin)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((begin, end))
    b, e, w, st = begin[order], end[order], score[order], strand[order]
    clear = np.searchsorted(e, b, side="right")  # candidates ending at or before each start
    widest = max(max_overlap, max_opposite_overlap)
    reach = np.minimum(np.searchsorted(e, b + widest, side="right"), np.arange(n))
    counts = np.maximum(reach - clear, 0)
    # All (predecessor i, gene j) pairs within the widest allowance, then each pair's own rule.
    pair_j = np.repeat(np.arange(n), counts)
    pair_i = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(clear, counts)
    same = st[pair_i] == st[pair_j]
    allowed = (b[pair_i] < b[pair_j]) & (e[pair_i] - b[pair_j] <= np.where(same, max_overlap, max_opposite_overlap))
    pair_i, pair_j, same = pair_i[allowed], pair_j[allowed], same[allowed]
    counts = np.bincount(pair_j, minlength=n)
    cost = np.where(same, np.maximum(sums[st[pair_j], e[pair_i]] - sums[st[pair_j], b[pair_j]], 0.0), 0.0)
    pair_offsets = np.concatenate(([0], np.cumsum(counts))).tolist()
    pair_i_list, cost_list = pair_i.tolist(), cost.tolist()
    clear_list, w_list = clear.tolist(), w.tolist()

    best = [0.0] * n
    back = [-1] * n
    prefix_best = [0.0] * (n + 1)  # best total over the first k candidates
    prefix_arg = [-1] * (n + 1)
    for j in range(n):
        total, arg = prefix_best[clear_list[j]], prefix_arg[clear_list[j]]
        for p in range(pair_offsets[j], pair_offsets[j + 1]):
            i = pair_i_list[p]
            value = best[i] - cost_list[p]
            if value > total:
                total, arg = value, i
        best[j] = w_list[j] + total
        back[j] = arg
        if best[j] > prefix_best[j]:
            prefix_best[j + 1], prefix_arg[j + 1] = best[j], j
        else:
            prefix_best[j + 1], prefix_arg[j + 1] = prefix_best[j], prefix_arg[j]
    chosen = []
    j = prefix_arg[n]
    while j >= 0:
        chosen.append(j)
        j = back[j]
    return np.sort(order[chosen])


@dataclass(frozen=True)
class GeneStatistics:
    """Self-trained statistics (sections 5 and 6): the in-frame 6-mer log-odds (:func:`hexamer_log_odds`)
    and the start-site log-odds (:func:`start_site_log_odds`); ``None`` where that pass is off or had
    too few genes to learn from. Learnt from one record, or pooled over every record of a genome
    (:func:`learn_gene_statistics`), as Prodigal trains on the whole genome: a draft assembly's
    contigs are each too short to learn from."""

    codon_table: np.ndarray | None = None
    start_table: np.ndarray | None = None


class _Strands:
    """One sequence's two strands as the decoder reads them, 5' -> 3': base codes, the prefix sums of
    the coding log-odds, and (on first use) 6-mer codes."""

    def __init__(self, sequence: str, probs: np.ndarray, classes: Sequence[str] | None):
        probs = check_inputs(sequence, probs)
        classes = resolve_classes(probs, classes)
        if "CDS" not in classes:
            raise ValueError(f"no CDS class among {classes}")
        codes = encode_bases(sequence)
        coding = probs[:, [classes.index("CDS")]].astype(np.float64)  # (2, 1, length): P(CDS) per strand row
        either = 1.0 - (1.0 - coding[0]) * (1.0 - coding[1])  # (1, length): coding on either strand
        coding = np.clip((1.0 - STRAND_SHARE) * coding + STRAND_SHARE * either,
                         PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
        self.length = len(sequence)
        self.views, self.sums = [], []
        for row in range(2):
            strand_codes, (p,) = strand_view(codes, coding, row)
            self.views.append(strand_codes)
            self.sums.append(prefix_sums(np.log(p) - np.log1p(-p)))
        # (2, length + 1): both strands' prefix sums along the forward strand (the scheduler's coordinates).
        self.forward_sums = np.stack([self.sums[0], self.sums[1][-1] - self.sums[1][::-1]])
        self._hexamers: list[np.ndarray] | None = None

    @property
    def hexamers(self) -> list[np.ndarray]:
        if self._hexamers is None:
            self._hexamers = [word_codes(view, 6) for view in self.views]
        return self._hexamers


@dataclass(frozen=True)
class _Decoder:
    """The decoder's settings (see :func:`call_genes_prokaryote`) and one decoding pass."""

    starts: dict[str, float]
    stops: tuple[str, ...]
    min_cds_length: int
    max_overlap: int
    max_opposite_overlap: int
    gene_cost: float
    rbs_bonus: float
    codon_weight: float
    start_weight: float
    closed_ends: bool
    start_model: StartModel | None
    start_evidence: Callable[[np.ndarray], np.ndarray] | None  # a strand's codes -> scores added to its starts'

    @classmethod
    def build(cls, *, min_cds_length=90, start_codons=START_CODONS, stop_codons=STOP_CODONS, max_overlap=60,
              max_opposite_overlap=MAX_OPPOSITE_OVERLAP, gene_cost=300.0, rbs_bonus=100.0, codon_weight=CODON_WEIGHT,
              start_weight=START_WEIGHT, closed_ends=False, start_model=None, start_evidence=None) -> "_Decoder":
        return cls(_start_table(start_codons), tuple(stop_codons), min_cds_length,
                   max(0, min(max_overlap, min_cds_length - 1)), max(0, max_opposite_overlap), gene_cost, rbs_bonus,
                   codon_weight, start_weight, closed_ends, start_model, start_evidence)

    def genes(self, strands: _Strands, codon_table: np.ndarray | None = None,
              start_table: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(begin, end) of the genes called on each strand, in strand coordinates."""
        candidates = []
        for row in range(2):
            frame_sums = None if codon_table is None else codon_frame_sums(
                strands.hexamers[row], codon_table, self.codon_weight)
            start_scores = None if start_table is None else start_site_scores(
                strands.views[row], start_table, list(self.starts), self.start_weight)
            candidates.append(orf_candidates(strands.views[row], strands.sums[row], self.starts, self.stops,
                                             self.min_cds_length, self.gene_cost, self.rbs_bonus, frame_sums,
                                             start_scores, self.closed_ends,
                                             self.start_choice(strands, row, codon_table)))
        # Both strands are scheduled together, in forward coordinates, so that a stretch is not called a
        # gene on both (with shared strand evidence its antisense ORFs score too).
        (plus_begin, plus_end, plus_score), (minus_begin, minus_end, minus_score) = candidates
        length = strands.length
        keep = select_genes(
            np.concatenate([plus_begin, length - minus_end]), np.concatenate([plus_end, length - minus_begin]),
            np.concatenate([plus_score, minus_score]) - self.gene_cost,
            np.repeat([0, 1], [len(plus_begin), len(minus_begin)]), strands.forward_sums,
            self.max_overlap, self.max_opposite_overlap)
        genes = []
        for row, (begin, end, _) in enumerate(candidates):
            offset = 0 if row == 0 else len(plus_begin)
            mine = keep[(keep >= offset) & (keep < offset + len(begin))] - offset
            genes.append((begin[mine], end[mine]))
        return genes

    def start_choice(self, strands: _Strands, row: int, codon_table: np.ndarray | None) -> np.ndarray | None:
        """``start_weight`` x the start model's log probability of each start codon of strand ``row`` among its
        ORF's, once there are codon statistics (its codon feature reads them), with ``start_evidence``'s scores
        (a start network's) added to the model's; None without a start model."""
        if self.start_model is None or self.start_weight == 0 or codon_table is None:
            return None
        frame_sums = codon_frame_sums(strands.hexamers[row], codon_table, 1.0)
        view = strands.views[row]
        extra = None if self.start_evidence is None else self.start_evidence(view)
        return self.start_weight * self.start_model.log_probabilities(
            view, list(self.starts), self.stops, self.min_cds_length, frame_sums, extra)

    def learn(self, records: Callable[[], Iterable[_Strands]]) -> GeneStatistics:
        """Self-train on every record ``records()`` yields (called once per pass: it may reread them)."""
        codon_table = start_table = None
        if self.codon_weight > 0:  # pass 1's genes -> codon statistics
            coding, background, n_genes = np.zeros(4**6 + 1), np.zeros(4**6 + 1), 0
            for strands in records():
                for words, (begin, end) in zip(strands.hexamers, self.genes(strands)):
                    c, b = hexamer_counts(words, begin, end)
                    coding, background, n_genes = coding + c, background + b, n_genes + len(begin)
            codon_table = hexamer_table(coding, background) if n_genes > 0 else None
        if self.start_weight > 0:  # pass 2's genes (pass 1's without codon statistics) -> start sites
            width = sum(START_SITE)
            chosen, other, n_genes = np.zeros((width, 5)), np.zeros((width, 5)), 0
            for strands in records():
                for codes, (begin, end) in zip(strands.views, self.genes(strands, codon_table)):
                    c, o = start_site_counts(codes, begin, end, list(self.starts), self.stops)
                    chosen, other, n_genes = chosen + c, other + o, n_genes + len(begin)
            start_table = start_site_table(chosen, other) if n_genes >= MIN_START_TRAINING_GENES else None
        return GeneStatistics(codon_table, start_table)


def learn_gene_statistics(records: Callable[[], Iterable[tuple[str, np.ndarray]]], *,
                          classes: Sequence[str] | None = None, **options) -> GeneStatistics:
    """Codon and start-site statistics pooled over every (sequence, probs) record ``records()`` yields;
    ``options`` as :func:`call_genes_prokaryote`'s. ``records`` is called once per training pass, so the
    records can be reread from disk rather than held together in memory."""
    decoder = _Decoder.build(**options)
    return decoder.learn(lambda: (_Strands(sequence, probs, classes) for sequence, probs in records()))


def start_model_from_genes(records: Iterable[tuple[str, pd.DataFrame]], *, start_codons=START_CODONS,
                           stop_codons=STOP_CODONS, min_cds_length: int = 90) -> tuple[StartModel | None, int]:
    """A start model (start_sites.py) learnt from annotated genes, and how many genes it learnt from.
    ``records`` yields (sequence, genes): the genes' CDS spans on that sequence, columns start, end
    (0-based half-open) and strand. A span that does not run from a start codon to the end of a stop
    codon in frame (a gene cut by the sequence's end, one piece of a frameshifted gene) is not learnt
    from. The codon statistics its candidates are scored with are learnt from the same genes."""
    strands = [strand for sequence, table in records for strand in strand_genes(sequence, table, min_cds_length)]
    views, genes = [codes for codes, _, _ in strands], [(begin, end) for _, begin, end in strands]
    if not views:
        return None, 0
    hexamers = [word_codes(view, 6) for view in views]
    codon_table = hexamer_log_odds(hexamers, genes)
    return learn_start_model([(view, begin, end, codon_frame_sums(words, codon_table, 1.0))
                              for view, words, (begin, end) in zip(views, hexamers, genes)],
                             list(_start_table(start_codons)), tuple(stop_codons), min_cds_length)


def prokaryote_transcripts(
    sequence: str,
    probs: np.ndarray,
    *,
    classes: Sequence[str] | None = None,
    statistics: GeneStatistics | None = None,
    **options,
) -> list[Transcript]:
    """The genes of :func:`call_genes_prokaryote` (same options) as transcripts, forward-strand coordinates."""
    decoder = _Decoder.build(**options)
    strands = _Strands(sequence, probs, classes)
    if statistics is None:
        statistics = decoder.learn(lambda: [strands])
    genes = decoder.genes(strands, statistics.codon_table, statistics.start_table)
    transcripts = []
    for row, strand in enumerate(("+", "-")):
        begin, end = genes[row]
        words = word_codes(strands.views[row], 3)
        # Genes running off the sequence's ends lack a start or a stop codon. As Prodigal's "partial"
        # flag: left and right edge of the sequence (forward strand), 1 where the gene runs off it.
        open_5 = ~word_mask(words[begin], list(decoder.starts), 3)
        open_3 = ~word_mask(words[end - 3], decoder.stops, 3)
        left, right = (open_5, open_3) if row == 0 else (open_3, open_5)
        for b, e, lo, hi in zip(begin.tolist(), end.tolist(), left.tolist(), right.tolist()):
            span = (b, e) if row == 0 else (strands.length - e, strands.length - b)
            partial = f"{int(lo)}{int(hi)}" if lo or hi else ""
            transcripts.append(Transcript(strand=strand, cds=[span], partial=partial))
    return transcripts


def call_genes_prokaryote(
    sequence: str,
    probs: np.ndarray,
    seqid: str,
    *,
    classes: Sequence[str] | None = None,
    min_cds_length: int = 90,
    start_codons: Mapping[str, float] | Sequence[str] = START_CODONS,
    stop_codons: Sequence[str] = STOP_CODONS,
    max_overlap: int = 60,
    max_opposite_overlap: int = MAX_OPPOSITE_OVERLAP,
    gene_cost: float = 300.0,
    rbs_bonus: float = 100.0,
    codon_weight: float = CODON_WEIGHT,
    start_weight: float = START_WEIGHT,
    closed_ends: bool = False,
    start_model: StartModel | None = None,
    start_evidence: Callable[[np.ndarray], np.ndarray] | None = None,
    statistics: GeneStatistics | None = None,
) -> pd.DataFrame:
    """Genes (gene -> mRNA -> exon + CDS rows) called from (2, n_classes, length) probabilities.

    ``classes`` names the probability rows (default: the gene-structure classes). ``start_codons``
    is a sequence of codons (no preference) or a mapping codon -> bonus added to a candidate's
    score (summed coding log-odds). ``rbs_bonus`` is added where a Shine-Dalgarno motif lies
    upstream of the start; ``gene_cost`` is subtracted per gene (the least score a gene needs).
    ``max_overlap`` (bases two genes on one strand may share) is clamped below ``min_cds_length``;
    ``max_opposite_overlap`` is what genes on opposite strands may share. Genes may run off the
    sequence's ends (a contig's, a region's) and are then flagged partial, unless ``closed_ends``
    (Prodigal's ``-c``, for complete sequences).
    ``codon_weight`` > 0 decodes twice: the first pass's genes train this sequence's in-frame 6-mer
    log-odds (:func:`hexamer_log_odds`), which, times the weight, score every candidate of the second.
    ``start_weight`` > 0 decodes once more with start sites scored by statistics learnt from the
    previous pass's starts (:func:`start_site_log_odds`) instead of ``start_codons``' bonuses and
    ``rbs_bonus``; ``start_codons`` still says which codons may start a gene. Given ``statistics``
    (:func:`learn_gene_statistics` over a whole genome), those passes' tables are not learnt from this
    sequence alone: one pass decodes with them. ``start_model`` (:func:`start_model_from_genes`, learnt from
    annotated genes) chooses among each reading frame's starts in the passes with codon statistics;
    ``start_evidence`` (a strand's base codes -> (length,) scores, e.g. a start network's
    :meth:`~genoformer.decode.start_network.StartNetwork.scores`) adds to its score of each candidate.
    """
    transcripts = prokaryote_transcripts(
        sequence, probs, classes=classes, statistics=statistics, min_cds_length=min_cds_length,
        start_codons=start_codons, stop_codons=stop_codons, max_overlap=max_overlap,
        max_opposite_overlap=max_opposite_overlap, gene_cost=gene_cost,
        rbs_bonus=rbs_bonus, codon_weight=codon_weight, start_weight=start_weight, closed_ends=closed_ends,
        start_model=start_model, start_evidence=start_evidence,
    )
    probs = np.asarray(probs)
    return transcript_table(seqid, transcripts, StrandSums(probs, resolve_classes(probs, classes)))
