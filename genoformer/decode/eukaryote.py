"""Eukaryotic gene calls: exon–intron structures decoded from per-base probabilities.

What is built: an exact Viterbi over a gene-structure state machine, evaluated only at sequence
signals (a generalised-HMM / event-driven decoder), so no Python work is spent on the bases in
between. Per strand (the − strand decoded on the reverse complement), states are

    OUT                      intergenic and UTR bases (UTRs are added afterwards, see below)
    CDS_f   f = 0, 1, 2      coding, with codons starting at positions ≡ f (mod 3)
    INTRON_p[..]             intron after p = 0, 1, 2 bases of an unfinished codon; phases 1 and 2
                             also remember those bases (T / other; TA / TG / other) so that a stop
                             codon spliced together across the intron is refused

and a path's score is the sum over its bases of the log-odds of its state against OUT:
``log p(CDS) - log p(OUT)`` for coding bases, ``log p(intron) - log p(OUT)`` for intron bases
(p(OUT) = everything that is neither CDS nor intron), 0 for OUT. Prefix sums make any stretch of
one state two lookups, so for each state the decoder keeps only the best "entry value minus prefix
sum at entry" (a running maximum) and a back-pointer. Transitions happen only at signals:

    OUT  -> CDS_f          at a start codon (ATG) beginning at a position ≡ f
    CDS  -> INTRON_p       at a donor (GT, or GC) — p follows from the position and the frame
    INTRON_p -> CDS        at an acceptor (the end of AG), the frame continuing across the intron
    CDS_f -> OUT           after a stop codon at a position ≡ f (the stop is part of the CDS)
    CDS_f killed           by every stop codon at a position ≡ f (no in-frame stop inside a CDS)

The per-base terms and signal scores come in a :class:`StrandScores`: from the network's class
probabilities (above; the same coding log-odds in every frame, no signal scores) or from a learned
gene model (``genoformer.genemodel``: frame-specific coding log-odds of a 3-periodic Markov chain,
and each donor / acceptor / start / stop scored by a signal model, added when a path uses it).
:func:`decode_strand` decodes one strand from such scores and returns the path's score too.

Minimum exon and intron lengths are exact: an entry only becomes usable ``min_exon`` /
``min_intron`` bases later (per-state queues of pending entries, monotone so each stays short).
Lengths are otherwise geometric (the per-base terms carry the rate), unless :class:`LengthScores`
are given: then each exon adds a term for its length by its kind (single, initial, internal,
terminal: what entered it, a start or an acceptor, and what leaves it, a stop or a donor) and each
intron one for its length, looked up for lengths up to a horizon and constant beyond it (where the
per-base rate is the tail's). Entries younger than the horizon are kept in full per state and
scanned at each exit; a stop codon clears its frame's, so in non-coding DNA they stay few.
Signals where the model gives the neighbouring classes less than ``prune`` probability are dropped
before the loop (default 1e-3: such a transition would cost ~7 nats anyway); stop codons are
never dropped, since they are constraints. The loop is pure Python over the remaining signals
(~0.25 per base before pruning), a few float operations each; O(signals) time and memory.

UTRs: after decoding, each gene's 5′ UTR is the stretch upstream of its start codon (not reaching
the previous gene's CDS) that maximises the summed log-odds ``log p(5'UTR) - log p(intergenic)``,
and the 3′ UTR likewise downstream; if the two UTRs between neighbours would overlap they meet at
the best split. UTR introns are not modelled. Genes whose CDS is shorter than ``min_cds_length``
are dropped.

Speed (one core, CPU time): ~0.4 s per strand per Mb when nothing is pruned (noisy synthetic
probabilities), i.e. ~2.5 Mb/s; confident predictions prune most donors/acceptors in intergenic DNA.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from genoformer.decode.prokaryote import STOP_CODONS, check_inputs, resolve_classes, strand_view
from genoformer.decode.segments import (
    StrandSums, Transcript, encode_bases, prefix_sums, transcript_table, word_codes, word_mask,
)

OUT, CDS0, CDS1, CDS2, I0, I1T, I1X, I2TA, I2TG, I2X = range(10)
_N_STATES = 10
# Event kinds, in the order they are handled at one position: leaving a CDS (donor) before
# entering one (acceptor, start), and a stop codon's kill after entries at its own first base.
_DONOR, _ACCEPTOR, _START, _STOP = range(4)
_A, _C, _G, _T = range(4)
NEG = float("-inf")
EPS = 1e-6  # floor for the logs of probabilities


@dataclass
class StrandScores:
    """What a path's score adds up on one strand (strand coordinates, ``n`` bases), against OUT.

    ``cds``: (3, n + 1) prefix sums of the per-base log-odds of coding in frame f (codons starting
    at positions ≡ f), or (1, n + 1) when the frame does not matter; ``intron``: (n + 1,) prefix sums
    of intron log-odds. ``signals`` maps "donor" / "acceptor" / "start" / "stop" to (n + 1,) log-odds
    of that signal at each position (an intron's first base, the base after its last, a codon's
    first base), added when a path uses it; absent kinds add 0. ``keep`` maps "donor" / "acceptor" /
    "start" to (n + 1,) masks of the candidate positions considered (absent: every one).
    """

    cds: np.ndarray
    intron: np.ndarray
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    keep: dict[str, np.ndarray] = field(default_factory=dict)


class LengthScores(NamedTuple):
    """Explicit length terms a path adds on top of :class:`StrandScores`' per-base ones.

    ``exon[entry][exit]`` lists the term of an exon of each length 0..horizon, entered at a start
    (``entry`` 0) or an acceptor (1) and left at a donor (``exit`` 0) or after a stop codon (1): the
    initial, internal, single and terminal exons; ``exon_tail[entry][exit]`` is the term of any
    longer one. ``intron`` / ``intron_tail`` likewise for introns. Exons and introns of genes
    running off the sequence (``open_ends``) get no length term.
    """

    exon: list[list[list[float]]]
    exon_tail: list[list[float]]
    intron: list[float]
    intron_tail: float


class _NoTerms:
    """The length terms of an exon or intron cut by the sequence's end: none."""

    def __getitem__(self, length: int) -> float:
        return 0.0


_NO_TERMS = _NoTerms()
_KIND_NAMES = ("donor", "acceptor", "start", "stop")


def signal_positions(codes: np.ndarray, *, starts: Sequence[str], stops: Sequence[str], donors: Sequence[str],
                     acceptors: Sequence[str]) -> dict[str, np.ndarray]:
    """Where each signal kind's words occur, as the decoder reads them (boundaries, strand coordinates): an
    intron's first base (the G of GT), the base after its last (after AG), a start or stop codon's first base."""
    words2, words3 = word_codes(codes, 2), word_codes(codes, 3)
    return {
        "donor": np.flatnonzero(word_mask(words2, donors, 2)),
        "acceptor": np.flatnonzero(word_mask(words2, acceptors, 2)) + 2,
        "start": np.flatnonzero(word_mask(words3, starts, 3)),
        "stop": np.flatnonzero(word_mask(words3, stops, 3)),
    }


def _events(codes, keep, *, starts, stops, donors, acceptors):
    """Signal positions (boundaries between bases) sorted by (position, kind), strand coordinates."""
    n = len(codes)
    at = signal_positions(codes, starts=starts, stops=stops, donors=donors, acceptors=acceptors)
    donor_at, acceptor_at = at["donor"], at["acceptor"]
    donor_at = donor_at[(donor_at >= 1) & (donor_at < n)]
    acceptor_at = acceptor_at[acceptor_at < n]
    found = [donor_at, acceptor_at, at["start"], at["stop"]]
    for k, name in enumerate(_KIND_NAMES[:3]):  # stop codons are constraints, never dropped
        if name in keep:
            found[k] = found[k][keep[name][found[k]]]
    position = np.concatenate(found)
    kind = np.concatenate([np.full(len(a), k) for k, a in enumerate(found)])
    order = np.lexsort((kind, position))
    return position[order], kind[order]


def _network_keep(p_cds, p_intron, prune):
    """Candidate masks for the network path: the bases on either side of a signal must be plausible."""
    cds_ok, intron_ok = np.append(p_cds >= prune, False), np.append(p_intron >= prune, False)  # (n + 1,)
    before_cds, before_intron = np.roll(cds_ok, 1), np.roll(intron_ok, 1)  # base x - 1 (x >= 1)
    before_cds[0] = before_intron[0] = False
    return {"start": cds_ok, "donor": before_cds & intron_ok, "acceptor": before_intron & cds_ok}


def _splice_context(codes: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: the phase-1 and phase-2 intron state a donor here opens (from the bases before
    it), and which phase-1 / phase-2 intron states may close at an acceptor here (bit mask over
    I1T, I2TA, I2TG: bit set = the spliced codon would be a stop)."""
    padded = np.concatenate((np.full(2, 4, np.uint8), codes, np.full(2, 4, np.uint8)))
    before1, before2 = padded[position + 1], padded[position]  # bases position-1, position-2
    after0, after1 = padded[position + 2], padded[position + 3]  # bases position, position+1
    phase1 = np.where(before1 == _T, I1T, I1X)
    phase2 = np.full(len(position), I2X)
    phase2[(before2 == _T) & (before1 == _A)] = I2TA
    phase2[(before2 == _T) & (before1 == _G)] = I2TG
    # T|AA, T|AG, T|GA; TA|A, TA|G; TG|A are stops once spliced.
    t_stop = ((after0 == _A) & ((after1 == _A) | (after1 == _G))) | ((after0 == _G) & (after1 == _A))
    ta_stop = (after0 == _A) | (after0 == _G)
    tg_stop = after0 == _A
    forbidden = t_stop.astype(np.int64) | (ta_stop.astype(np.int64) << 1) | (tg_stop.astype(np.int64) << 2)
    return phase1, phase2, forbidden


def _viterbi(position, kind, scores, phase1, phase2, forbidden, *, min_exon, min_intron, gene_penalty,
             intron_penalty, length, open_ends=False, lengths=None):
    """Best path through the signals: the genes as lists of CDS pieces (strand coordinates), their
    partial flags and scores (see :class:`StrandGenes`), and the path's score."""
    # Gather everything the loop reads as Python lists (indexing numpy scalars is slow).
    pos = position.tolist()
    kinds = kind.tolist()
    frames = np.arange(3) % len(scores.cds)
    rows = [scores.cds[r, position].tolist() for r in range(len(scores.cds))]  # one row: the network's, all frames
    c_at = [rows[frames[f]] for f in range(3)]  # per frame
    i_at = scores.intron[np.minimum(position, length)].tolist()
    c_after_stop = scores.cds[frames[position % 3], np.minimum(position + 3, length)].tolist()
    bonus = np.zeros(len(position))
    for k, name in enumerate(_KIND_NAMES):
        if name in scores.signals:
            here = kind == k
            bonus[here] = scores.signals[name][position[here]]
    bonus = bonus.tolist()
    ph1, ph2, bad = phase1.tolist(), phase2.tolist(), forbidden.tolist()

    best = [NEG] * _N_STATES  # best (entry score - prefix sum at entry) per state
    node = [None] * _N_STATES  # back-pointer of that best entry: (kind, position, previous node)
    pending = [deque() for _ in range(_N_STATES)]  # (usable from, value, node), values increasing
    best[OUT] = 0.0
    if open_ends:  # a gene already under way at the sequence's start: in any frame, or in an intron
        for state in (CDS0, CDS1, CDS2, I0, I1X, I2X):
            pending[state].append((0, -gene_penalty, ("P" if state < I0 else "Q", 0, None, 0.0)))

    def activate(state, x):  # pending entries usable at x become the state's best (callers check non-empty)
        queue = pending[state]
        while queue and queue[0][0] <= x:
            _, best[state], node[state] = queue.popleft()

    def offer(state, usable, value, back):  # queue an entry unless an earlier-usable one is as good
        queue = pending[state]
        if value > (queue[-1][1] if queue else best[state]):
            queue.append((usable, value, back))

    # With explicit lengths, entries of coding and intron states wait in ``recent`` (per state and
    # entry kind: 0 start or donor, 1 acceptor) until they are older than the horizon, then join
    # ``aged`` (the best such entry), whose exits all add the same tail term.
    explicit = lengths is not None
    if explicit:
        exon_terms, exon_tail = lengths.exon, lengths.exon_tail
        intron_terms, intron_tail = lengths.intron, lengths.intron_tail
        exon_horizon, intron_horizon = len(exon_terms[0][0]) - 1, len(intron_terms) - 1
        recent = [(deque(), deque()) for _ in range(_N_STATES)]  # (entry position, value, node)
        aged = [[NEG, None, NEG, None] for _ in range(_N_STATES)]  # value, node per entry kind

    def timed_best(state, entry, x, terms, tail, horizon, shortest):  # best entry of a kind, its length term added
        queue, old = recent[state][entry], aged[state]
        while queue and x - queue[0][0] > horizon:
            _, value, back = queue.popleft()
            if value > old[2 * entry]:
                old[2 * entry], old[2 * entry + 1] = value, back
        top, back = old[2 * entry] + tail, old[2 * entry + 1]
        for at, value, entry_node in queue:
            if x - at < shortest:
                break
            value += terms[x - at]
            if value > top:
                top, back = value, entry_node
        return top, back

    def leave_exon(state, x, exit_kind):  # best value leaving coding state ``state`` at x, and its node
        if pending[state]:
            activate(state, x)
        top, back = best[state], node[state]
        if explicit:
            for entry in (0, 1):
                value, entry_node = timed_best(state, entry, x, exon_terms[entry][exit_kind],
                                               exon_tail[entry][exit_kind], exon_horizon, min_exon)
                if value > top:
                    top, back = value, entry_node
        return top, back

    for e in range(len(pos)):
        x, k = pos[e], kinds[e]
        f = x % 3
        if k == _DONOR:
            # Frame f + j has j bases (mod 3) of an unfinished codon at the donor.
            for state, target in ((CDS0 + f, I0), (CDS0 + (f + 2) % 3, ph1[e]), (CDS0 + (f + 1) % 3, ph2[e])):
                top, back = leave_exon(state, x, 0)
                if top > NEG:
                    value = top + c_at[state - CDS0][e] - i_at[e] - intron_penalty + bonus[e]
                    if explicit:
                        recent[target][0].append((x, value, ("D", x, back, None)))
                    else:
                        offer(target, x + min_intron, value, ("D", x, back, None))
        elif k == _ACCEPTOR:
            no = bad[e]
            for sources, target in (
                ((I0,), CDS0 + f),
                ((I1X,) if no & 1 else (I1T, I1X), CDS0 + (f + 2) % 3),
                ((I2X,) + (() if no & 2 else (I2TA,)) + (() if no & 4 else (I2TG,)), CDS0 + (f + 1) % 3),
            ):
                top, back = NEG, None
                for state in sources:
                    if pending[state]:
                        activate(state, x)
                    if best[state] > top:
                        top, back = best[state], node[state]
                    if explicit:
                        value, entry_node = timed_best(state, 0, x, intron_terms, intron_tail, intron_horizon, min_intron)
                        if value > top:
                            top, back = value, entry_node
                if top > NEG:
                    value = top + (i_at[e] - c_at[target - CDS0][e] + bonus[e])
                    if explicit:
                        recent[target][1].append((x, value, ("A", x, back, None)))
                    else:
                        offer(target, x + min_exon, value, ("A", x, back, None))
        elif k == _START:
            if pending[OUT]:
                activate(OUT, x)
            value, back = best[OUT] - gene_penalty - c_at[f][e] + bonus[e], ("S", x, node[OUT], best[OUT])
            if explicit:
                recent[CDS0 + f][0].append((x, value, back))
            else:
                offer(CDS0 + f, x + min_exon, value, back)
        else:  # stop codon at x: ends the genes of its frame, then forbids that frame beyond it
            state = CDS0 + f
            top, back = leave_exon(state, x + 3, 1)
            pending[state].clear()
            if top > NEG:
                ended = top + c_after_stop[e] + bonus[e]
                offer(OUT, x + 3, ended, ("E", x + 3, back, ended))
            best[state], node[state] = NEG, None
            if explicit:
                recent[state][0].clear()
                recent[state][1].clear()
                aged[state][:] = [NEG, None, NEG, None]
    if pending[OUT]:
        activate(OUT, length)
    if open_ends:  # a gene still under way at the sequence's end: in a coding exon, or in an intron
        c_end = scores.cds[frames, length].tolist()
        for state in (CDS0, CDS1, CDS2, I0, I1T, I1X, I2TA, I2TG, I2X):
            if pending[state]:
                activate(state, length)
            top, back = best[state], node[state]
            if explicit:  # a cut exon or intron: no length term
                shortest = min_exon if state < I0 else min_intron
                for entry in (0, 1):
                    value, entry_node = timed_best(state, entry, length, _NO_TERMS, 0.0, length, shortest)
                    if value > top:
                        top, back = value, entry_node
            end = c_end[state - CDS0] if state < I0 else scores.intron[length]
            if top + end > best[OUT]:
                best[OUT] = top + end
                node[OUT] = ("F" if state < I0 else "G", length, back, best[OUT])

    genes, partial, gene_scores, piece_end, pieces, open_end, ended = [], [], [], None, [], "0", 0.0
    back = node[OUT]
    while back is not None:  # walk the path backwards: (E|F|G) (A D)* (S|P|Q) per gene
        label, x, back, path_score = back  # path_score: the path's score after a gene (E F G) / before it (S P Q)
        if label in "EFG":
            ended = path_score
            open_end = "0" if label == "E" else "1"
        if label in "EDF":
            piece_end = x
        elif label != "G":
            if label != "Q":
                pieces.append((x, piece_end))
            if label in "SPQ":
                if pieces:
                    genes.append(pieces[::-1])
                    partial.append("" if label == "S" and open_end == "0" else ("0" if label == "S" else "1") + open_end)
                    gene_scores.append(ended - path_score)
                pieces, open_end = [], "0"
    return genes[::-1], partial[::-1], gene_scores[::-1], best[OUT]


class StrandGenes(NamedTuple):
    """Genes of one strand (lists of CDS pieces, strand coordinates), each one's partial flag ("" whole;
    else two digits, 5' end then 3' end, 1 where the gene runs off the sequence) and score (its share
    of the path's score, penalties included), and the path's score."""

    genes: list[list[tuple[int, int]]]
    partial: list[str]
    gene_scores: list[float]
    score: float


def decode_strand(codes: np.ndarray, scores: StrandScores, *, start_codons: Sequence[str] = ("ATG",),
                  stop_codons: Sequence[str] = STOP_CODONS, donors: Sequence[str] = ("GT", "GC"),
                  acceptors: Sequence[str] = ("AG",), min_exon: int = 3, min_intron: int = 20,
                  gene_penalty: float = 0.0, intron_penalty: float = 0.0, open_ends: bool = False,
                  lengths: LengthScores | None = None) -> StrandGenes:
    """The best-scoring genes of one strand (``codes`` from ``encode_bases``, strand coordinates) and that
    path's score: the sum of ``scores``' terms over the path (and ``lengths``' terms, if given) minus the
    penalties. With ``open_ends`` a gene may run off either end of the sequence (in a coding exon in any
    frame, or in an intron)."""
    position, kind = _events(codes, scores.keep, starts=start_codons, stops=stop_codons, donors=donors,
                             acceptors=acceptors)
    phase1, phase2, forbidden = _splice_context(codes, position)
    return StrandGenes(*_viterbi(position, kind, scores, phase1, phase2, forbidden, min_exon=min_exon,
                                 min_intron=min_intron, gene_penalty=gene_penalty, intron_penalty=intron_penalty,
                                 length=len(codes), open_ends=open_ends, lengths=lengths))


def _add_utrs(genes, five_sums, three_sums, length, max_utr):
    """(five_prime, cds, three_prime) pieces per gene, UTRs from the best-scoring flanks (strand
    coordinates). ``five_sums`` / ``three_sums`` are prefix sums of UTR log-odds, or None (no UTR class)."""
    bounds = []
    ends = [0] + [cds[-1][1] for cds in genes]
    begins = [cds[0][0] for cds in genes] + [length]
    for k, cds in enumerate(genes):
        begin, end = cds[0][0], cds[-1][1]
        u, v = begin, end
        if five_sums is not None:  # UTR start u in [lower, begin] minimising five_sums[u]; ties: shortest
            lower = max(ends[k], begin - max_utr)
            window = five_sums[lower : begin + 1][::-1]
            u = begin - int(np.argmin(window))
        if three_sums is not None:  # UTR end v in [end, upper] maximising three_sums[v]; ties: shortest
            upper = min(begins[k + 1], end + max_utr)
            v = end + int(np.argmax(three_sums[end : upper + 1]))
        bounds.append([u, v])
    # A 3' UTR and the next gene's 5' UTR that would overlap meet where the pair scores best.
    for left, right in zip(bounds, bounds[1:]):
        if left[1] > right[0]:
            lo, hi = right[0], left[1]
            split = lo + int(np.argmax(three_sums[lo : hi + 1] - five_sums[lo : hi + 1]))
            left[1] = right[0] = split
    return [
        ([(u, cds[0][0])] if u < cds[0][0] else [], cds, [(cds[-1][1], v)] if v > cds[-1][1] else [])
        for (u, v), cds in zip(bounds, genes)
    ]


def _log_odds(p_in: np.ndarray, p_out: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p_in, EPS, 1.0)) - np.log(np.clip(p_out, EPS, 1.0))


def _log_odds_sums(p_in: np.ndarray, p_out: np.ndarray) -> np.ndarray:
    return prefix_sums(_log_odds(p_in, p_out))


def _coding_rows(strand_probs: np.ndarray, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One strand's P(CDS), P(intron) and P(outside) = the rest, (n,) each (float64; 0 for an absent class)."""
    zeros = np.zeros(strand_probs.shape[1], dtype=np.float64)
    p_cds, p_intron = (strand_probs[index[name]].astype(np.float64) if name in index else zeros
                       for name in ("CDS", "intron"))
    return p_cds, p_intron, np.clip(1.0 - p_cds - p_intron, 0.0, 1.0)


def network_log_odds(strand_probs: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One strand's per-base log-odds (n,) of CDS and of intron against the outside (everything else),
    from its (n_classes, n) probabilities in strand coordinates: the terms a path's score adds up when the
    network alone is decoded, and the network's evidence a learned gene model adds to its own."""
    p_cds, p_intron, p_out = _coding_rows(strand_probs, {name: i for i, name in enumerate(classes)})
    return _log_odds(p_cds, p_out), _log_odds(p_intron, p_out)


def eukaryote_transcripts(
    sequence: str,
    probs: np.ndarray,
    *,
    classes: Sequence[str] | None = None,
    min_intron: int = 20,
    min_exon: int = 3,
    min_cds_length: int = 60,
    start_codons: Sequence[str] = ("ATG",),
    stop_codons: Sequence[str] = STOP_CODONS,
    donors: Sequence[str] = ("GT", "GC"),
    acceptors: Sequence[str] = ("AG",),
    gene_penalty: float = 0.0,
    intron_penalty: float = 0.0,
    max_utr: int = 5000,
    prune: float = 1e-3,
) -> list[Transcript]:
    """The genes of :func:`call_genes_eukaryote` (same options) as transcripts, forward-strand coordinates."""
    probs = check_inputs(sequence, probs)
    classes = resolve_classes(probs, classes)
    index = {name: i for i, name in enumerate(classes)}
    if "CDS" not in index:
        raise ValueError(f"no CDS class among {classes}")
    codes = encode_bases(sequence)
    n = len(sequence)
    zeros = np.zeros(n, dtype=np.float64)

    def row_of(strand_probs, name):
        return strand_probs[index[name]].astype(np.float64) if name in index else zeros

    def forward(spans, row):
        return spans if row == 0 else [(n - e, n - s) for s, e in spans[::-1]]

    transcripts = []
    for row, strand in enumerate(("+", "-")):
        strand_codes, strand_probs = strand_view(codes, probs, row)
        p_cds, p_intron, p_out = _coding_rows(strand_probs, index)
        scores = StrandScores(cds=_log_odds_sums(p_cds, p_out)[None], intron=_log_odds_sums(p_intron, p_out),
                              keep=_network_keep(p_cds, p_intron, prune))
        genes = decode_strand(strand_codes, scores, start_codons=start_codons, stop_codons=stop_codons,
                                 donors=donors, acceptors=acceptors, min_exon=min_exon, min_intron=min_intron,
                                 gene_penalty=gene_penalty, intron_penalty=intron_penalty).genes
        genes = [cds for cds in genes if sum(e - s for s, e in cds) >= min_cds_length]
        p_intergenic = row_of(strand_probs, "intergenic") + row_of(strand_probs, "ncRNA")
        five = _log_odds_sums(row_of(strand_probs, "five_prime_UTR"), p_intergenic) if "five_prime_UTR" in index else None
        three = _log_odds_sums(row_of(strand_probs, "three_prime_UTR"), p_intergenic) if "three_prime_UTR" in index else None
        for five_utr, cds, three_utr in _add_utrs(genes, five, three, n, max_utr):
            transcripts.append(Transcript(strand=strand, cds=forward(cds, row), five_prime_utr=forward(five_utr, row),
                                          three_prime_utr=forward(three_utr, row)))
    return transcripts


def call_genes_eukaryote(
    sequence: str,
    probs: np.ndarray,
    seqid: str,
    *,
    classes: Sequence[str] | None = None,
    min_intron: int = 20,
    min_exon: int = 3,
    min_cds_length: int = 60,
    start_codons: Sequence[str] = ("ATG",),
    stop_codons: Sequence[str] = STOP_CODONS,
    donors: Sequence[str] = ("GT", "GC"),
    acceptors: Sequence[str] = ("AG",),
    gene_penalty: float = 0.0,
    intron_penalty: float = 0.0,
    max_utr: int = 5000,
    prune: float = 1e-3,
) -> pd.DataFrame:
    """Genes (gene -> mRNA -> exon / CDS / UTR rows) called from (2, n_classes, length) probabilities.

    ``classes`` names the probability rows (default: the gene-structure classes). Lengths are in
    bases; ``min_cds_length`` is the spliced CDS. ``donors`` / ``acceptors`` are an intron's first /
    last two bases. ``gene_penalty`` / ``intron_penalty`` (nats) are subtracted per gene / intron to
    discourage spurious ones; ``max_utr`` bounds the UTR search; ``prune`` is the probability below
    which a start, donor or acceptor is not considered (see the module docstring).
    """
    probs = np.asarray(probs)
    transcripts = eukaryote_transcripts(
        sequence, probs, classes=classes, min_intron=min_intron, min_exon=min_exon, min_cds_length=min_cds_length,
        start_codons=start_codons, stop_codons=stop_codons, donors=donors, acceptors=acceptors,
        gene_penalty=gene_penalty, intron_penalty=intron_penalty, max_utr=max_utr, prune=prune,
    )
    return transcript_table(seqid, transcripts, StrandSums(probs, resolve_classes(probs, classes)))
