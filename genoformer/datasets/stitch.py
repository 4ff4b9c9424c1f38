"""Per-base probabilities of overlapping windows stitched back into one stretch of a record.

Each window is weighted by distance from its nearer edge (a tent that is 1 at the edges and grows
linearly to the centre), so a base is decided by the windows that see it with the most context on
both sides. Whole-genome prediction (:mod:`genoformer.predict`) and the tagging task's validation
gene scores both stitch this way.
"""
from __future__ import annotations

import numpy as np


def edge_weights(n: int) -> np.ndarray:
    """Tent weights over a window of n bases: 1 at the edges, about n/2 in the middle."""
    position = np.arange(n, dtype=np.float32)
    return 1.0 + np.minimum(position, n - 1 - position)


class ProbabilityStitcher:
    """Weighted average of overlapping windows' per-base probabilities along one stretch."""

    def __init__(self, length: int, n_classes: int, offset: int = 0):
        self.offset = offset
        self.total = np.zeros((2, n_classes, length), dtype=np.float32)  # (strands, classes, bases)
        self.weight = np.zeros(length, dtype=np.float32)

    def add(self, start: int, probs: np.ndarray) -> None:
        """Add one window's probabilities ``(2, classes, n)`` beginning at genome position ``start``."""
        n = probs.shape[-1]
        lo = start - self.offset
        w = edge_weights(n)
        self.total[:, :, lo : lo + n] += probs * w
        self.weight[lo : lo + n] += w

    def result(self) -> np.ndarray:
        """Averaged probabilities ``(2, classes, length)``; bases no window covered get uniform ones."""
        covered = self.weight > 0
        out = np.full_like(self.total, 1.0 / self.total.shape[1])
        out[:, :, covered] = self.total[:, :, covered] / self.weight[covered]
        return out
