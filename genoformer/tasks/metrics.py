"""Per-base classification metrics accumulated over an evaluation epoch, pooled across processes."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..datasets.stitch import ProbabilityStitcher
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


def pool_ranks(confusion: ConfusionMatrix, stitchers: dict, n_classes: int, device: torch.device) -> None:
    """Give every process the union of all processes' evaluation, in place: confusion counts summed,
    stitched window probabilities summed stretch by stretch (stretches a rank did not see are added).
    Then every rank computes, and logs, the same metrics. A window every rank evaluated (the data
    module's loaders under ``use_distributed_sampler=False``) scales every sum alike, which leaves the
    metrics unchanged. Nothing happens on a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    counts = torch.zeros(n_classes, n_classes, dtype=torch.long, device=device) if confusion.counts is None \
        else confusion.counts.to(device)
    dist.all_reduce(counts)
    confusion.counts = counts if counts.sum() > 0 else None
    shapes = [None] * dist.get_world_size()  # every rank's stretches: key -> (length, offset)
    dist.all_gather_object(shapes, {key: (s.weight.shape[0], s.offset) for key, s in stitchers.items()})
    union = {key: shape for rank_shapes in shapes for key, shape in rank_shapes.items()}
    for key in sorted(union):  # the same order on every rank
        if key not in stitchers:
            length, offset = union[key]
            stitchers[key] = ProbabilityStitcher(length, n_classes, offset)
        stitcher = stitchers[key]
        sums = torch.from_numpy(np.concatenate([stitcher.total.ravel(), stitcher.weight])).to(device)
        dist.all_reduce(sums)
        sums = sums.cpu().numpy()
        stitcher.total[...] = sums[:stitcher.total.size].reshape(stitcher.total.shape)
        stitcher.weight[...] = sums[stitcher.total.size:]
