"""Fixed-length windows over a genome or over regions, computed arithmetically.

Window ``k`` of a span ``[s, e)`` (a whole record, or one region) is ``[s + k*stride, s + k*stride + length)``
with its end clipped to ``e``; a span yields windows until one reaches ``e``, so the last window may be
shorter (the consumer pads it and masks the padding). Nothing per window is stored: window ``i`` is found
from cumulative window counts per span with ``np.searchsorted``, so a 3 Gb genome in 1 kb windows costs a
few arrays the size of the number of records.

N filtering (``max_n_fraction < 1``) is decided once, at construction: each record used is scanned in
4 Mb chunks for runs of N, and only the windows touching a run are checked and, if above the threshold,
remembered as dropped. Memory is O(N runs + dropped windows); indexing stays arithmetic. The same runs
let :meth:`GenomeWindows.sample` reject N-rich random windows.
"""
from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import ConfigError, RegionError
from .fasta import Genome
from .intervals import Interval, read_bed_regions

_N_SCAN_CHUNK = 1 << 22
_ITER_CHUNK = 1 << 16


def _n_runs(genome: Genome, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, disjoint runs ``[starts, ends)`` of N/n bases in record ``name``."""
    length = genome.lengths[name]
    starts, ends = [], []
    for off in range(0, length, _N_SCAN_CHUNK):
        seq = genome.fetch(name, off, min(off + _N_SCAN_CHUNK, length)).encode("ascii")
        is_n = (np.frombuffer(seq, dtype=np.uint8) | 0x20) == ord("n")
        edges = np.diff(is_n.astype(np.int8), prepend=0, append=0)
        starts.append(np.flatnonzero(edges == 1) + off)
        ends.append(np.flatnonzero(edges == -1) + off)
    rs, re = np.concatenate(starts), np.concatenate(ends)
    if rs.size == 0:
        return rs, re
    # runs cut by a chunk boundary: an end equal to the next start joins them
    separate = rs[1:] != re[:-1]
    return rs[np.r_[True, separate]], re[np.r_[separate, True]]


class _NCounter:
    """Number of N bases in ``[a, b)`` for many intervals of one record, from its N runs."""

    def __init__(self, runs: tuple[np.ndarray, np.ndarray]):
        self.starts, self.ends = runs
        self.before = np.concatenate(([0], np.cumsum(self.ends - self.starts)))  # N bases in runs < j

    def _prefix(self, x: np.ndarray) -> np.ndarray:
        j = np.searchsorted(self.starts, x, side="left")  # runs starting before x
        last_end = self.ends[np.maximum(j - 1, 0)] if self.ends.size else np.zeros_like(x)
        overhang = np.where(j > 0, np.maximum(last_end - x, 0), 0)  # part of run j-1 at or after x
        return self.before[j] - overhang

    def count(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._prefix(b) - self._prefix(a)


class GenomeWindows:
    """Windows of ``length`` every ``stride`` bases (default ``length``) over all records or ``regions``.

    ``regions``: an iterable of :class:`Interval` (windows keep the region's strand) or a BED file path.
    Windows whose fraction of N bases exceeds ``max_n_fraction`` are skipped. ``len()``, ``[i]`` (an
    :class:`Interval`), iteration, :meth:`fetch` and :meth:`sample` are all 0-based half-open.
    """

    def __init__(
        self,
        genome: Genome,
        length: int,
        stride: int | None = None,
        *,
        regions: Iterable[Interval] | str | os.PathLike | None = None,
        max_n_fraction: float = 1.0,
    ):
        self.genome = genome
        self.length = self._positive("length", length)
        self.stride = self.length if stride is None else self._positive("stride", stride)
        if not 0.0 <= float(max_n_fraction) <= 1.0:
            raise ConfigError(f"max_n_fraction must be between 0 and 1, got {max_n_fraction!r}")
        self.max_n_fraction = float(max_n_fraction)
        self.regions = self._spans(genome, regions)
        if not self.regions:
            raise ConfigError("no regions to tile")

        name_index = {name: i for i, name in enumerate(genome.names)}
        self._record = np.array([name_index[r.name] for r in self.regions], dtype=np.int64)
        self._starts = np.array([r.start for r in self.regions], dtype=np.int64)
        self._ends = np.array([r.end for r in self.regions], dtype=np.int64)
        span = self._ends - self._starts
        L, S = self.length, self.stride
        # windows until one reaches the span end, and never one starting at or after it (stride > length)
        self._counts = np.minimum(1 - (-np.maximum(span - L, 0) // S), -(-span // S))
        self._first = np.concatenate(([0], np.cumsum(self._counts)))  # global index of each span's window 0

        self._n_counters: dict[int, _NCounter] = {}
        dropped = self._find_dropped() if self.max_n_fraction < 1.0 else np.empty(0, dtype=np.int64)
        self._n_dropped = dropped.size
        # kept index i -> global index i + (dropped windows at or before it): searchsorted on this array
        self._dropped_shift = dropped - np.arange(dropped.size)

    @staticmethod
    def _positive(what: str, value) -> int:
        try:
            value = operator.index(value)
        except TypeError:
            raise ConfigError(f"window {what} must be an integer, got {value!r}") from None
        if value <= 0:
            raise ConfigError(f"window {what} must be positive, got {value}")
        return value

    @staticmethod
    def _spans(genome: Genome, regions) -> list[Interval]:
        if regions is None:
            return [Interval(name, 0, genome.lengths[name]) for name in genome.names]
        source = None
        if isinstance(regions, (str, os.PathLike)):
            source = Path(regions)
            regions = read_bed_regions(source)
        spans = [r if isinstance(r, Interval) else Interval(*r) for r in regions]
        for i, r in enumerate(spans):
            try:
                genome.validate_interval(r.name, r.start, r.end)
            except RegionError as exc:
                where = f"{source}: region {i + 1}" if source else f"region {i + 1} ({r.name}:{r.start}-{r.end})"
                raise RegionError(f"{where}: {exc}") from None
        return spans

    def _counter(self, record: int) -> _NCounter:
        if record not in self._n_counters:
            self._n_counters[record] = _NCounter(_n_runs(self.genome, self.genome.names[record]))
        return self._n_counters[record]

    def _find_dropped(self) -> np.ndarray:
        L, S = self.length, self.stride
        dropped = []
        for j in range(len(self.regions)):
            counter = self._counter(int(self._record[j]))
            s, e, count = int(self._starts[j]), int(self._ends[j]), int(self._counts[j])
            touch = (counter.ends > s) & (counter.starts < e)
            if not touch.any():
                continue
            rs, re = counter.starts[touch], counter.ends[touch]
            # windows k with s + k*S < re and s + k*S + L > rs
            lo = np.maximum((rs - L - s) // S + 1, 0)
            hi = np.minimum((re - 1 - s) // S, count - 1)
            sizes = np.maximum(hi - lo + 1, 0)
            ks = np.repeat(lo - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
            ks = np.unique(ks)
            a = s + ks * S
            b = np.minimum(a + L, e)
            too_many = counter.count(a, b) > self.max_n_fraction * (b - a)
            dropped.append(ks[too_many] + self._first[j])
        return np.concatenate(dropped) if dropped else np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._first[-1]) - self._n_dropped

    def _locate(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kept window indices -> (span, start, end) arrays."""
        glob = index + np.searchsorted(self._dropped_shift, index, side="right")
        span = np.searchsorted(self._first, glob, side="right") - 1
        start = self._starts[span] + (glob - self._first[span]) * self.stride
        return span, start, np.minimum(start + self.length, self._ends[span])

    def _intervals(self, span, start, end) -> list[Interval]:
        names = self.genome.names
        return [
            Interval(names[self._record[j]], int(a), int(b), self.regions[j].strand)
            for j, a, b in zip(span, start, end)
        ]

    def __getitem__(self, i: int) -> Interval:
        n = len(self)
        i = operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"window {i} out of range for {n} windows")
        return self._intervals(*self._locate(np.array([i % n], dtype=np.int64)))[0]

    def __iter__(self) -> Iterator[Interval]:
        for lo in range(0, len(self), _ITER_CHUNK):
            yield from self._intervals(*self._locate(np.arange(lo, min(lo + _ITER_CHUNK, len(self)))))

    def fetch(self, item: int | Interval) -> str:
        """Sequence of window ``item`` (an index or an Interval), unpadded, on the window's strand."""
        iv = item if isinstance(item, Interval) else self[item]
        return self.genome.fetch(iv.name, iv.start, iv.end, iv.strand)

    def sample(self, n: int, seed: int | np.random.Generator | None = None) -> list[Interval]:
        """``n`` random windows of ``length`` (whole span if shorter), spans drawn in proportion to length.

        The same seed gives the same windows; ``seed`` may also be a ``numpy.random.Generator``, which is
        advanced. Windows above ``max_n_fraction`` are redrawn.
        """
        n = operator.index(n)
        rng = np.random.default_rng(seed)
        sizes = self._ends - self._starts
        weights = sizes / sizes.sum()
        filtering = self.max_n_fraction < 1.0
        picked: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        have = 0
        for _ in range(100):
            if have >= n:
                break
            m = 2 * (n - have) + 16 if filtering else n - have
            span = rng.choice(len(sizes), size=m, p=weights)
            start = self._starts[span] + rng.integers(0, np.maximum(sizes[span] - self.length, 0) + 1)
            end = np.minimum(start + self.length, self._ends[span])
            if filtering:
                keep = np.ones(m, dtype=bool)
                for record in np.unique(self._record[span]):
                    sel = self._record[span] == record
                    n_count = self._counter(int(record)).count(start[sel], end[sel])
                    keep[sel] = n_count <= self.max_n_fraction * (end[sel] - start[sel])
                span, start, end = span[keep], start[keep], end[keep]
            take = min(n - have, span.size)
            picked.append((span[:take], start[:take], end[:take]))
            have += take
        if have < n:
            raise ConfigError(
                f"only {have} of {n} random windows pass max_n_fraction={self.max_n_fraction}: "
                "the regions are almost all N"
            )
        return self._intervals(*(np.concatenate(parts) for parts in zip(*picked))) if picked else []

    def __repr__(self) -> str:
        return (
            f"GenomeWindows({self.genome!r}, length={self.length}, stride={self.stride}, "
            f"{len(self.regions)} spans, {len(self)} windows)"
        )
