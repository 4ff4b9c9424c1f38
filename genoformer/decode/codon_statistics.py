"""A genome's own codon statistics, as the prokaryote decoder self-trains them (as GeneMark and Prodigal
do): the in-frame 6-mers (codon pairs) of the genes a first pass called, against all 6-mers of the
sequence, and their sums along each reading frame, so that any span's codon score is two lookups."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hexamer_counts(words: np.ndarray, begin: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coding, background) counts of the 4**6 + 1 6-mer codes of one strand (``words``, read 5' -> 3'):
    in frame inside the genes ``begin``..``end``, and everywhere."""
    background = np.bincount(words, minlength=4**6 + 1).astype(np.float64)
    coding = np.zeros(4**6 + 1)
    if len(begin):
        # codon starts begin, begin + 3, ..., end - 6 of every gene, all genes at once
        n_words = np.maximum((end - begin - 3) // 3, 0)
        first = np.repeat(begin, n_words)
        step = np.arange(n_words.sum()) - np.repeat(np.cumsum(n_words) - n_words, n_words)
        coding += np.bincount(words[first + 3 * step], minlength=4**6 + 1)
    return coding, background


def hexamer_log_odds(hexamers: Sequence[np.ndarray], genes: Sequence[tuple[np.ndarray, np.ndarray]],
                     pseudocount: float = 1.0) -> np.ndarray:
    """Log-odds of each 6-mer (4**6 + 1 codes; the last, any word with N, is 0) read in frame inside
    the given genes against all 6-mers of both strands: this genome's codon-pair usage.

    ``hexamers`` are the strands' 6-mer codes (:func:`word_codes`, read 5' -> 3'), ``genes`` the
    (begin, end) arrays called on each (any number of strands: of one record or of a whole genome).
    """
    coding, background = (sum(parts) for parts in zip(*(hexamer_counts(words, b, e)
                                                         for words, (b, e) in zip(hexamers, genes))))
    return hexamer_table(coding, background, pseudocount)


def hexamer_table(coding: np.ndarray, background: np.ndarray, pseudocount: float = 1.0) -> np.ndarray:
    coding, background = coding[:-1] + pseudocount, background[:-1] + pseudocount
    return np.append(np.log(coding / coding.sum()) - np.log(background / background.sum()), 0.0)


def codon_frame_sums(words: np.ndarray, table: np.ndarray, weight: float) -> np.ndarray:
    """(length + 3,) sums along each frame of ``weight`` x the 6-mer log-odds starting at each base:
    the in-frame score of codons begin, begin + 3, ..., e - 3 (6-mers ending by e) is
    ``out[e - 3] - out[begin]``."""
    values = weight * table[words]
    out = np.zeros(len(words) + 3)
    for frame in range(3):
        out[frame + 3::3] = np.cumsum(values[frame::3])
    return out
