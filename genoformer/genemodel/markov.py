"""Fixed-order Markov chains over DNA: counting (context, base) words and scoring every base.

A chain of order k predicts each base from the k bases before it (in strand coordinates). Words of
k + 1 letters are coded as :func:`genoformer.decode.segments.word_codes` codes them, so the word
ending at base i is the (k + 1)-mer starting at i - k; bases whose word holds an N (or that have
fewer than k bases before them) get the code ``4 ** (k + 1)`` and score 0 (no evidence either way).
"""
from __future__ import annotations

import numpy as np

from genoformer.decode.segments import word_codes


def ending_words(codes: np.ndarray, order: int) -> np.ndarray:
    """(n,) int64: the code of the (order + 1)-mer ending at each base; ``4 ** (order + 1)`` where invalid."""
    k = order + 1
    invalid = 4**k
    starting = word_codes(codes, k).astype(np.int64)  # (n,) the k-mer starting at each base
    out = np.full(len(codes), invalid, dtype=np.int64)
    if len(codes) > order:
        out[order:] = starting[: len(codes) - order]
    return out


def count_words(words: np.ndarray, mask: np.ndarray, order: int) -> np.ndarray:
    """(4 ** (order + 1),) int64 counts of the valid words where ``mask`` is set."""
    size = 4 ** (order + 1)
    chosen = words[mask]
    return np.bincount(chosen[chosen < size], minlength=size).astype(np.int64)


def log_probabilities(counts: np.ndarray, pseudocount: float) -> np.ndarray:
    """(..., 4 ** (order + 1) + 1) log P(base | context) per word, with a trailing 0 for invalid words.

    ``counts`` is (..., 4 ** (order + 1)); the last base of a word varies fastest, so each run of
    four words shares a context.
    """
    counts = np.asarray(counts, dtype=np.float64)
    grouped = counts.reshape(counts.shape[:-1] + (-1, 4)) + pseudocount  # (..., contexts, 4)
    logp = np.log(grouped / grouped.sum(axis=-1, keepdims=True)).reshape(counts.shape)
    return np.concatenate((logp, np.zeros(counts.shape[:-1] + (1,))), axis=-1)

