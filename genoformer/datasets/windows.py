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
from torch.utils.data import Dataset, Sampler

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
    ``i`` of epoch ``e``. :class:`EpochSampler` hands out those keys, so every epoch sees fresh
    windows, each worker process draws the same windows whatever the worker count, and a resumed
    run draws exactly what an uninterrupted one would have. With several genomes, each window
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


class EpochSampler(Sampler[int]):
    """Shuffled keys ``epoch * n + i`` for :class:`RandomWindowDataset`, split across DDP ranks."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        yield from (int(self.epoch * self.n + i) for i in order[self.rank :: self.world_size])
