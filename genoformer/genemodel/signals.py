"""Signal models: first-order weight array matrices (WAMs) over a window around a site, as log-odds,
counted from true sites or fitted against decoys (the default; see ``FITTED_WINDOWS``).

A site sits at a boundary ``x`` of the strand sequence (a donor at an intron's first base, an
acceptor at the base after its last, a start or stop codon at its first base). Its window covers
bases ``x + offset`` .. ``x + offset + width - 1``; each window base is predicted from the base
before it (the base before the window included), with position-specific probabilities, against a
first-order background chain. Bases that are N, or off the sequence, add nothing. A start also
scores its rank among the start codons of its open frame (:func:`start_ranks`), fitted with its window.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Window (offset, width) per signal kind, relative to the site's boundary.
WINDOWS = {
    "donor": (-3, 9),  # 3 exon bases, GT and 4 more intron bases
    "acceptor": (-20, 23),  # 18 intron bases, AG, 3 exon bases
    "start": (-10, 16),  # 10 bases upstream, ATG and 3 codons' worth after
    "stop": (-3, 9),  # the last sense codon, the stop and 3 bases after
}


def _padded(codes: np.ndarray, margin: int) -> np.ndarray:
    pad = np.full(margin, 4, dtype=np.uint8)
    return np.concatenate((pad, codes, pad))


def window_pairs(codes: np.ndarray, sites: np.ndarray, offset: int, width: int) -> np.ndarray:
    """(sites, width) pair codes previous * 5 + base for each window base (code 4 = N or off the sequence)."""
    margin = width + abs(offset) + 1
    padded = _padded(codes, margin).astype(np.int64)
    columns = np.asarray(sites, dtype=np.int64)[:, None] + offset + np.arange(width)[None, :] + margin  # (sites, width)
    return padded[columns - 1] * 5 + padded[columns]


def count_sites(codes: np.ndarray, sites: np.ndarray, offset: int, width: int) -> np.ndarray:
    """(width, 4, 4) counts of (previous base, base) at each window position over the sites."""
    pairs = window_pairs(codes, sites, offset, width)  # (sites, width)
    counts = np.zeros((width, 25), dtype=np.int64)
    for j in range(width):
        counts[j] = np.bincount(pairs[:, j], minlength=25)
    return counts.reshape(width, 5, 5)[:, :4, :4]


def log_odds_table(counts: np.ndarray, background: np.ndarray, pseudocount: float) -> np.ndarray:
    """(width, 5, 5) log P(base | previous, position) - log P_background(base | previous); N rows/columns 0.

    ``counts`` is (width, 4, 4) from :func:`count_sites`, ``background`` (4, 4) pair counts. A window
    base after an N is predicted by the position's base frequencies (summed over the previous base).
    """
    counts = np.asarray(counts, dtype=np.float64) + pseudocount
    background = np.asarray(background, dtype=np.float64) + pseudocount
    table = np.zeros((len(counts), 5, 5))
    table[:, :4, :4] = np.log(counts / counts.sum(axis=2, keepdims=True)) - np.log(
        background / background.sum(axis=1, keepdims=True))[None]
    marginal = counts.sum(axis=1)  # (width, 4)
    base_rate = background.sum(axis=0)
    table[:, 4, :4] = np.log(marginal / marginal.sum(axis=1, keepdims=True)) - np.log(base_rate / base_rate.sum())
    return table


def score_sites(codes: np.ndarray, sites: np.ndarray, table: np.ndarray, offset: int) -> np.ndarray:
    """(sites,) summed window log-odds of each site under ``table`` (from :func:`log_odds_table`)."""
    width = len(table)
    if len(sites) == 0:
        return np.zeros(0)
    return score_pairs(table, window_pairs(codes, sites, offset, width))


def score_pairs(table: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(sites,) summed log-odds under ``table`` (width, 5, 5) of windows given as pair codes (sites, width)."""
    width = len(table)
    return table.reshape(width, 25)[np.arange(width)[None, :], pairs].sum(axis=1)


# ---------------------------------------------------------------------------- fitted signal models
#
# The counted WAMs above learn each site from true sites alone. A fitted model learns the same kind of
# table (a weight per window position and base pair) by logistic regression of true sites against the
# decoys the decoder would otherwise choose: candidate words within DECOY_FLANK bases of an annotated
# gene. Its L2 penalty lets it read wider windows without the extra positions adding noise. On
# A. thaliana chromosome 1 validation, gene F1 rose from 0.621 (WAMs) to 0.674 with these windows.
FITTED_WINDOWS = {
    "donor": (-6, 16),  # 6 exon bases, 10 intron bases
    "acceptor": (-50, 56),  # 50 intron bases (branch point and pyrimidine tract), 6 exon bases
    "start": (-30, 40),  # the 5' UTR's last 30 bases, 10 codons
    "stop": (-20, 40),  # 6 codons before, the 3' UTR's first 37 bases
}
DECOY_FLANK = 1000
MAX_DECOYS = 400_000  # per kind, drawn at random (seeded) beyond this
L2 = 1e-5  # per weight, against the mean log-loss


def fit_site_table(true_pairs: np.ndarray, decoy_pairs: np.ndarray, typical: float,
                   ranks: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(width, 5, 5) site log-odds fitted by L2-regularised logistic regression on the pair codes
    (:func:`window_pairs`) of true sites against decoys, shifted so that the true sites' mean score is
    ``typical`` (the counted WAM's mean over the same sites): the fit decides how sites rank against
    each other, the generative model what a typical site is worth against background DNA.

    ``ranks``: each true site's and decoy's :func:`start_ranks` (starts only), fitted jointly as one
    weight per rank. Returns the table and the (START_RANKS,) rank weights, rank 0's weight 0 (all zero
    without ``ranks``)."""
    width = true_pairs.shape[1]
    codes = torch.as_tensor(np.concatenate((true_pairs, decoy_pairs)).astype(np.int64))  # (sites, width)
    labels = torch.cat((torch.ones(len(true_pairs)), torch.zeros(len(decoy_pairs))))
    weights = torch.zeros(width, 25, requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    rank_weights = torch.zeros(START_RANKS, requires_grad=ranks is not None)
    columns = torch.arange(width)[None, :]
    optimiser = torch.optim.LBFGS([weights, bias] + ([rank_weights] if ranks is not None else []), max_iter=60,
                                  line_search_fn="strong_wolfe")
    rank = None if ranks is None else torch.as_tensor(np.concatenate(ranks).astype(np.int64))  # (sites,)

    def loss():
        optimiser.zero_grad()
        logits = weights[columns, codes].sum(dim=1) + bias  # (sites,)
        if rank is not None:
            logits = logits + rank_weights[rank]
        value = F.binary_cross_entropy_with_logits(logits, labels) + L2 * weights.pow(2).sum()
        value.backward()
        return value

    optimiser.step(loss)
    table = weights.detach().double().numpy().reshape(width, 5, 5)
    by_rank = rank_weights.detach().double().numpy()
    by_rank -= by_rank[0]  # the bias holds rank 0's; the shift below sets the level
    true_scores = score_pairs(table, true_pairs) + (by_rank[ranks[0]] if ranks is not None else 0.0)
    table[0] += typical - true_scores.mean()  # every site reads exactly one entry of position 0
    return table, by_rank


# ---------------------------------------------------------------------------- a start's rank in its open frame
#
# Ribosomes scanning an mRNA start at its first ATG, so a true start is nearly always the first start
# codon after the last in-frame stop upstream (in genomic sequence, when no 5' UTR intron intervenes):
# on A. thaliana chromosome 1, 96% of training starts have rank 0 against 65% of decoy ATGs near genes.
# Without this the decoder often chose an ATG a few codons downstream, whose lost N-terminal codons
# score near zero as coding; fitted with the start model, validation gene F1 0.684 -> 0.704.
START_RANKS = 4  # ranks 0, 1, 2 and 3 or more


def start_ranks(length: int, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """(length,) for each position p of a strand ``length`` bases long: how many start codons (``starts``:
    every one's position, from ``signal_positions``) lie in p's frame after the last stop codon before p
    (``stops``: every one's position) and before p, capped at ``START_RANKS - 1``. At a start codon, its rank."""
    is_start, is_stop = np.zeros(length, bool), np.zeros(length, bool)
    is_start[starts], is_stop[stops] = True, True
    rank = np.zeros(length, np.int64)
    for frame in range(3):
        here_start, here_stop = is_start[frame::3], is_stop[frame::3]  # one codon slot each
        slots = np.arange(len(here_start))
        before = np.concatenate(([0], np.cumsum(here_start)))  # before[i]: start codons in slots < i
        last_stop = np.maximum.accumulate(np.where(here_stop, slots, -1))  # at or before slot i
        previous_stop = np.concatenate(([-1], last_stop[:-1]))  # strictly before slot i
        rank[frame::3] = before[slots] - before[previous_stop + 1]
    return np.minimum(rank, START_RANKS - 1)


def rank_log_odds(true_ranks: np.ndarray, decoy_ranks: np.ndarray, pseudocount: float) -> np.ndarray:
    """(START_RANKS,) log P(rank | true start) - log P(rank | decoy), counted: the rank weights that stand
    in for fitted ones when the true starts are too few to fit (as the counted WAM does for the window)."""
    true = np.bincount(true_ranks, minlength=START_RANKS) + pseudocount
    decoy = np.bincount(decoy_ranks, minlength=START_RANKS) + pseudocount
    return np.log(true / true.sum()) - np.log(decoy / decoy.sum())
