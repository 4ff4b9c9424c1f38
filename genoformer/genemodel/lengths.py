"""Length distributions of exons (by kind) and introns: smoothed training lengths up to a horizon,
a geometric tail beyond it, turned into the decoder's :class:`~genoformer.decode.eukaryote.LengthScores`.

Why not geometric throughout: real lengths are far from it. On A. thaliana chromosome 1, 0.2% of
internal exons are under 20 bases but 4% of initial ones are; single-exon genes are rarely under
120 bases, yet a geometric law with the pooled mean makes the shortest lengths the likeliest. A
decoder with geometric exons happily splices a real stop codon away into a 10-base terminal exon.

The decoder's per-base terms carry the tail's rate ``log q`` on every coding (intron) base, so the
term of a length d within the horizon is ``log P(d) - d log q``, and beyond it the constant
``log P(> horizon) + log(1 - q) - (horizon + 1) log q`` (then P(d) = P(> horizon) (1 - q) q^(d - horizon - 1)).
Exon kinds share one tail rate, since the per-base terms cannot tell them apart.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genoformer.decode.eukaryote import LengthScores

# Lengths from the decoder's point of view: what enters an exon (a start, an acceptor) and what leaves it
# (a donor, a stop codon), as LengthScores indexes them.
EXON_KINDS = (("initial_exon", "single_exon"), ("internal_exon", "terminal_exon"))
SMOOTHING = 0.1  # kernel width as a share of the length (at least MIN_WIDTH bases)
MIN_WIDTH = 3.0


def smoothed_distribution(lengths: Sequence[int], horizon: int) -> tuple[np.ndarray, float]:
    """(horizon + 1,) probabilities of each length 0..horizon and the mass beyond it, from training lengths
    smoothed by a Gaussian kernel whose width grows with the length (one pseudo-observation spread flat)."""
    values = np.asarray(lengths, dtype=np.float64)
    within = values[values <= horizon]
    grid = np.arange(horizon + 1, dtype=np.float64)
    density = np.zeros(horizon + 1)
    for chunk in np.array_split(within, max(1, len(within) // 2048)):  # (chunk, horizon + 1) at a time
        width = np.maximum(MIN_WIDTH, SMOOTHING * chunk)[:, None]
        kernel = np.exp(-0.5 * ((grid[None, :] - chunk[:, None]) / width) ** 2)
        density += (kernel / kernel.sum(axis=1, keepdims=True)).sum(axis=0)
    total = len(values) + 1.0
    density += 1.0 / (horizon + 2)  # one pseudo-observation, flat over 0..horizon and "beyond"
    beyond = (len(values) - len(within) + 1.0 / (horizon + 2)) / total
    return density / total, beyond


def tail_rate(lengths: Sequence[int], horizon: int, fallback_mean: float) -> float:
    """log q of the geometric tail: lengths beyond ``horizon`` exceed it by 1 / (1 - q) on average."""
    values = np.asarray(lengths, dtype=np.float64)
    excess = values[values > horizon] - horizon
    mean = float(excess.mean()) if len(excess) >= 10 else fallback_mean
    return float(np.log1p(-1.0 / max(mean, 2.0)))


def _terms(lengths: Sequence[int], horizon: int, log_q: float) -> tuple[list[float], float]:
    probabilities, beyond = smoothed_distribution(lengths, horizon)
    terms = np.log(probabilities) - np.arange(horizon + 1) * log_q
    tail = np.log(beyond) + np.log(-np.expm1(log_q)) - (horizon + 1) * log_q
    return terms.tolist(), float(tail)


def length_scores(lengths: dict[str, list[int]], exon_horizon: int, intron_horizon: int,
                  ) -> tuple[LengthScores, float, float]:
    """The decoder's length terms from a gene model's training ``lengths`` (``GeneModel.lengths``), and the
    per-base log q of coding and of intron bases that go with them."""
    exons = sum((lengths[kind] for pair in EXON_KINDS for kind in pair), [])
    exon_q = tail_rate(exons, exon_horizon, fallback_mean=300.0)
    intron_q = tail_rate(lengths["intron"], intron_horizon, fallback_mean=300.0)
    exon_terms = [[_terms(lengths[kind], exon_horizon, exon_q) for kind in pair] for pair in EXON_KINDS]
    intron_terms, intron_tail = _terms(lengths["intron"], intron_horizon, intron_q)
    scores = LengthScores(exon=[[terms for terms, _ in row] for row in exon_terms],
                          exon_tail=[[tail for _, tail in row] for row in exon_terms],
                          intron=intron_terms, intron_tail=intron_tail)
    return scores, exon_q, intron_q
