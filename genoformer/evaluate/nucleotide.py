"""Base-level comparison: strand-aware coding tracks and per-class confusion counts.

Every base of a record is looked at twice, once per strand: a base is coding on + when a
CDS on + covers it, on - likewise (unstranded CDS count on both). Counts run over the bases
inside the evaluated regions of each record, on both strands.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def paint(starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Boolean track of ``length`` bases, True where any [start, end) interval covers the base."""
    if len(starts) == 0:
        return np.zeros(length, dtype=bool)
    depth = np.bincount(starts, minlength=length + 1) - np.bincount(ends, minlength=length + 1)
    return np.cumsum(depth[:length]) > 0


def coding_track(parts: pd.DataFrame, length: int) -> np.ndarray:
    """(2, length) bool: row 0 coding on +, row 1 coding on - (CDS parts of one record)."""
    track = np.zeros((2, length), dtype=bool)
    for row, strands in ((0, ("+", ".")), (1, ("-", "."))):
        on = parts[parts["strand"].isin(strands)]
        track[row] = paint(on["start"].to_numpy(np.int64), on["end"].to_numpy(np.int64), length)
    return track


def binary_counts(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[tp, fp, fn, tn] over the bases where ``mask`` is True (arrays broadcast together)."""
    ref = reference & mask
    pred = prediction & mask
    tp = np.count_nonzero(ref & pred)
    fp = np.count_nonzero(pred) - tp
    fn = np.count_nonzero(ref) - tp
    tn = np.count_nonzero(np.broadcast_to(mask, reference.shape)) - tp - fp - fn
    return np.array([tp, fp, fn, tn], dtype=np.int64)


def confusion(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: [reference class, predicted class] over the masked bases."""
    ref = reference[:, mask].astype(np.int64).ravel()
    pred = prediction[:, mask].astype(np.int64).ravel()
    return np.bincount(ref * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
