"""Signal models: first-order weight array matrices (WAMs) over a window around a site, as log-odds.

A site sits at a boundary ``x`` of the strand sequence (a donor at an intron's first base, an
acceptor at the base after its last, a start or stop codon at its first base). Its window covers
bases ``x + offset`` .. ``x + offset + width - 1``; each window base is predicted from the base
before it (the base before the window included), with position-specific probabilities, against a
first-order background chain. Bases that are N, or off the sequence, add nothing.
"""
from __future__ import annotations

import numpy as np

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
    pairs = window_pairs(codes, sites, offset, width)  # (sites, width)
    flat = table.reshape(width, 25)
    return flat[np.arange(width)[None, :], pairs].sum(axis=1)
