"""Per-base classification metrics accumulated over an evaluation epoch."""
from __future__ import annotations

from typing import Sequence

import torch

from ..datasets.windows import IGNORE_LABEL


class ConfusionMatrix:
    """Counts (true class, predicted class) over every labelled base of both strands."""

    def __init__(self, n_classes: int):
        self.n = n_classes
        self.counts: torch.Tensor | None = None

    def update(self, predicted: torch.Tensor, labels: torch.Tensor) -> None:
        valid = labels != IGNORE_LABEL
        pairs = labels[valid].long() * self.n + predicted[valid].long()
        counts = torch.bincount(pairs, minlength=self.n * self.n).reshape(self.n, self.n)
        self.counts = counts if self.counts is None else self.counts + counts.to(self.counts.device)

    def reset(self) -> None:
        self.counts = None

    def summary(self, classes: Sequence[str]) -> dict[str, float]:
        """Per-class F1 and MCC (one class against the rest), macro F1 and accuracy."""
        if self.counts is None:
            return {}
        c = self.counts.double()
        total = c.sum()
        tp = c.diag()
        fp = c.sum(0) - tp
        fn = c.sum(1) - tp
        tn = total - tp - fp - fn
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
        denom = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)).sqrt()
        mcc = torch.where(denom > 0, (tp * tn - fp * fn) / denom.clamp_min(1e-12), torch.zeros_like(denom))
        out = {"accuracy": float(tp.sum() / total.clamp_min(1))}
        present = (tp + fn) > 0
        out["macro_f1"] = float(f1[present].mean()) if present.any() else 0.0
        for i, name in enumerate(classes):
            if present[i]:
                out[f"f1_{name}"] = float(f1[i])
                out[f"mcc_{name}"] = float(mcc[i])
        return out
