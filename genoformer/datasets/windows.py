"""Torch datasets: genome windows → token ids (+ per-base labels).

Every item has a fixed size (``window_length`` bases, ``tokenizer.n_tokens(window_length)`` tokens)
so the default collate stacks them; a window cut short by a record end is padded with PAD tokens
(``attention_mask`` False) and labels of -100 (ignored by the loss).

A window read from the minus strand is the reverse complement of the genome there; its labels
are reversed along the sequence and the two strand rows swapped, so that row 0 always describes
the strand the model reads.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..genome import Genome, GenomeWindows, Interval
from ..tokenize import Tokenizer

IGNORE_LABEL = -100
# (record, start, end) -> (2, end - start) int8 labels on the forward strand's coordinates.
LabelFn = Callable[[str, int, int], np.ndarray]


def encode_window(
    genome: Genome,
    interval: Interval,
    tokenizer: Tokenizer,
    window_length: int,
    labels: LabelFn | None = None,
) -> dict[str, torch.Tensor]:
    """One padded window as tensors: input_ids, attention_mask, position info and labels."""
    sequence = genome.fetch(interval.name, interval.start, interval.end, interval.strand)
    n_tokens = tokenizer.n_tokens(window_length)
    ids = np.full(n_tokens, tokenizer.pad_id, dtype=np.int64)
    encoded = tokenizer.encode(sequence)
    ids[: len(encoded)] = encoded
    mask = np.zeros(n_tokens, dtype=bool)
    mask[: len(encoded)] = True
    item = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "start": torch.tensor(interval.start),
        "n_bases": torch.tensor(len(interval)),
        "minus": torch.tensor(interval.strand == "-"),
    }
    if labels is not None:
        track = labels(interval.name, interval.start, interval.end)  # (2, bases), + strand first
        if interval.strand == "-":
            track = track[::-1, ::-1]
        padded = np.full((2, window_length), IGNORE_LABEL, dtype=np.int64)
        padded[:, : track.shape[1]] = track
        item["labels"] = torch.from_numpy(padded)
    return item


class TiledWindowDataset(Dataset):
    """Fixed windows (validation, test, prediction): item ``i`` is ``intervals[i]``."""

    def __init__(self, genome: Genome, intervals: Sequence[Interval], tokenizer: Tokenizer,
                 window_length: int, labels: LabelFn | None = None, source: int = 0):
        self.genome, self.intervals, self.tokenizer = genome, list(intervals), tokenizer
        self.window_length, self.labels, self.source = window_length, labels, source
        self.record_index = {name: i for i, name in enumerate(genome.names)}

    def __len__(self) -> int:
        return len(self.intervals)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        interval = self.intervals[i]
        item = encode_window(self.genome, interval, self.tokenizer, self.window_length, self.labels)
        item["source"] = torch.tensor(self.source)  # which FASTA file
        item["record"] = torch.tensor(self.record_index[interval.name])
        return item


class RandomWindowDataset(Dataset):
    """Random training windows, reproducible from (seed, epoch, index).

    The dataset has ``windows_per_epoch`` items, but accepts any key: key ``e * n + i`` is window
    ``i`` of epoch ``e``. :class:`WindowStream` hands out those keys, so every epoch sees fresh
    windows, each worker process draws the same windows whatever the worker count, and a resumed
    run draws exactly what an uninterrupted one would have (see :class:`WindowStream`). With several genomes, each window
    first picks a genome with probability ``weights`` (default: by training length).
    """

    def __init__(self, windows: Sequence[GenomeWindows], tokenizer: Tokenizer, windows_per_epoch: int, *,
                 weights: Sequence[float] | None = None, seed: int = 0, reverse_complement: bool = True,
                 labels: Sequence[LabelFn | None] | None = None):
        self.windows, self.tokenizer = list(windows), tokenizer
        self.labels = list(labels) if labels is not None else [None] * len(self.windows)
        self.weights = np.full(len(self.windows), 1 / len(self.windows)) if weights is None else np.asarray(weights)
        self.windows_per_epoch, self.seed, self.reverse_complement = windows_per_epoch, seed, reverse_complement

    def __len__(self) -> int:
        return self.windows_per_epoch

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        epoch, i = divmod(int(key), self.windows_per_epoch)
        rng = np.random.default_rng([self.seed, epoch, i])
        source = int(rng.choice(len(self.windows), p=self.weights)) if len(self.windows) > 1 else 0
        windows = self.windows[source]
        interval = windows.sample(1, seed=rng)[0]
        if self.reverse_complement and rng.random() < 0.5:
            interval = Interval(interval.name, interval.start, interval.end, "-")
        return encode_window(windows.genome, interval, self.tokenizer, windows.length, self.labels[source])


class WindowStream(Sampler[int]):
    """An endless, reproducible stream of :class:`RandomWindowDataset` keys, split across ranks.

    Global sample ``j`` is window ``perm_e[j % n]`` of epoch ``e = j // n`` (``perm_e`` a seeded
    permutation); rank ``r`` of ``w`` takes ``j = r, r + w, ...``. One pass yields ``len(self)``
    keys starting from ``start`` (the rank's samples already used), so the stream does not depend
    on where the trainer draws its epoch boundaries.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.start = 0

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[int]:
        for t in range(self.start, self.start + len(self)):
            j = self.rank + t * self.world_size
            epoch, i = divmod(j, self.n)
            yield int(epoch * self.n + np.random.default_rng([self.seed, epoch]).permutation(self.n)[i])


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`WindowStream` that knows how many batches were trained on.

    The training loop calls :meth:`batch_consumed` as each batch starts; Lightning stores
    ``state_dict()`` in checkpoints and calls ``load_state_dict`` on resume, so a run interrupted
    anywhere (mid-epoch included) continues with exactly the batches an uninterrupted run would
    have drawn next. Counting yields instead would be off by the batches Lightning prefetches.
    """

    def __init__(self, dataset: Dataset, stream: WindowStream, **kwargs):
        super().__init__(dataset, sampler=stream, **kwargs)
        self.stream = stream
        self.consumed = 0

    def __iter__(self):
        self.stream.start = self.consumed * self.batch_size
        return super().__iter__()

    def batch_consumed(self) -> None:
        self.consumed += 1

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = int(state["consumed"])
