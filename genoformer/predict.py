"""Per-base class probabilities over whole records from a tagging network.

Windows overlap by half and are stitched back with tent weights (:mod:`genoformer.datasets.stitch`),
so a base is decided by the windows that see it with the most context on both sides. Optionally the
reverse complement is predicted too and averaged in, which makes the two strands' calls consistent.

Memory holds one record's probabilities at a time, ``(2, classes, length)`` float32, plus one
batch of windows: it does not grow with the number of records.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .datasets.stitch import ProbabilityStitcher
from .errors import ConfigError
from .genome import Genome, Interval
from .tokenize import Tokenizer


def tile_record(name: str, length: int, window_length: int, stride: int) -> list[Interval]:
    """Windows of ``window_length`` every ``stride`` bases, the last one flush with the record end."""
    if length <= window_length:
        return [Interval(name, 0, length)]
    starts = list(range(0, length - window_length, stride)) + [length - window_length]
    return [Interval(name, s, s + window_length) for s in starts]


def _batches(genome: Genome, windows: list[Interval], tokenizer: Tokenizer, window_length: int,
             batch_size: int, minus: bool) -> Iterator[tuple[list[Interval], torch.Tensor, torch.Tensor]]:
    n_tokens = tokenizer.n_tokens(window_length)
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        ids = np.full((len(chunk), n_tokens), tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros((len(chunk), n_tokens), dtype=bool)
        for row, iv in enumerate(chunk):
            encoded = tokenizer.encode(genome.fetch(iv.name, iv.start, iv.end, "-" if minus else "+"))
            ids[row, : len(encoded)] = encoded
            mask[row, : len(encoded)] = True
        yield chunk, torch.from_numpy(ids), torch.from_numpy(mask)


@torch.no_grad()
def predict_record(
    network: torch.nn.Module,
    genome: Genome,
    name: str,
    tokenizer: Tokenizer,
    n_classes: int,
    *,
    window_length: int,
    start: int = 0,
    end: int | None = None,
    batch_size: int = 8,
    both_strands: bool = True,
    device: str | torch.device = "cpu",
    progress=None,
) -> np.ndarray:
    """Probabilities ``(2, classes, end - start)`` for one record stretch (row 0: + strand genes)."""
    for option, value in (("batch_size", batch_size), ("window_length", window_length)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{option} must be a whole number of at least 1, got {value!r}")
    end = genome.lengths[name] if end is None else end
    # Every window is padded to window_length tokens: a window longer than the stretch would only
    # add padding (a 50 Mb window on a 3 kb record asked for gigabytes).
    window_length = max(1, min(window_length, end - start))
    stitcher = ProbabilityStitcher(end - start, n_classes, offset=start)
    windows = [Interval(name, start + iv.start, start + iv.end)
               for iv in tile_record(name, end - start, window_length, max(1, window_length // 2))]
    device_type = torch.device(device).type
    for minus in ([False, True] if both_strands else [False]):
        for chunk, ids, mask in _batches(genome, windows, tokenizer, window_length, batch_size, minus):
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"):
                logits = network(ids.to(device, non_blocking=True), mask.to(device, non_blocking=True), window_length)
            probs = torch.softmax(logits.float(), dim=2).cpu().numpy()  # (batch, 2, classes, bases)
            for iv, p in zip(chunk, probs):
                p = p[:, :, : len(iv)]
                if minus:
                    # The model read the reverse complement: flip positions back, swap strand rows.
                    p = p[::-1, :, ::-1]
                stitcher.add(iv.start, np.ascontiguousarray(p))
            if progress is not None:
                progress(sum(len(iv) for iv in chunk))
    return stitcher.result()
