"""Per-base value tracks (class probabilities) as bedGraph or bigWig.

Values arrive one record at a time (a 1-D float array covering the whole record), so a
whole-genome run never holds more than one record per track in memory. Consecutive bases
whose values are equal after rounding are merged into one interval; NaN bases are left out
(a gap in the track). Files are written to a temporary sibling and renamed into place.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

import numpy as np

from genoformer.errors import GenoformerError
from genoformer.export.bed import warn_unreadable_names
from genoformer.files import atomic_path, atomic_write

Records = Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]
_CHUNK = 1 << 20  # runs formatted per write


def runs(values: np.ndarray, decimals: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length merge a per-base track: ``(starts, ends, values)``, 0-based half-open.

    Values are rounded to ``decimals`` first so that noise below the printed precision does
    not split runs; NaN bases start/stop runs and are dropped.
    """
    values = np.round(np.asarray(values, dtype=np.float64), decimals)
    if values.ndim != 1:
        raise ValueError(f"a track is one value per base (1-D), got shape {values.shape}")
    if values.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    nan = np.isnan(values)
    # A run breaks where the value changes or NaN-ness changes (NaN != NaN would split every base).
    change = (values[1:] != values[:-1]) & ~(nan[1:] & nan[:-1])
    change |= nan[1:] != nan[:-1]
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    ends = np.concatenate((starts[1:], [values.size]))
    keep = ~nan[starts]
    return starts[keep], ends[keep], values[starts[keep]]


def _records(values: Records) -> Iterator[tuple[str, np.ndarray]]:
    return iter(values.items()) if isinstance(values, Mapping) else iter(values)


def _check_length(seqid: str, values: np.ndarray, sequence_lengths: Mapping[str, int] | None) -> None:
    if sequence_lengths is None:
        return
    if seqid not in sequence_lengths:
        raise GenoformerError(f"track values for record {seqid!r}, which is not among the sequences")
    if len(values) != sequence_lengths[seqid]:
        raise GenoformerError(
            f"track values for record {seqid!r} cover {len(values)} bases, the record has {sequence_lengths[seqid]}"
        )


def _quote(text: str) -> str:
    # Track-line values are double-quoted; a quote or newline inside would break the line.
    return '"' + str(text).replace('"', "'").replace("\n", " ").replace("\t", " ") + '"'


class BedGraphWriter:
    """Streams records into an open bedGraph handle (see :func:`write_bedgraph`)."""

    def __init__(
        self,
        handle: IO[str],
        name: str,
        *,
        description: str | None = None,
        decimals: int = 3,
        sequence_lengths: Mapping[str, int] | None = None,
    ):
        self.handle = handle
        self.decimals = decimals
        self.sequence_lengths = sequence_lengths
        header = f"track type=bedGraph name={_quote(name)}"
        if description:
            header += f" description={_quote(description)}"
        handle.write(header + "\n")

    def add(self, seqid: str, values: np.ndarray) -> None:
        _check_length(seqid, values, self.sequence_lengths)
        warn_unreadable_names([seqid])
        starts, ends, vals = runs(values, self.decimals)
        # str.format over Python lists (shortest float repr) is about twice as fast as DataFrame.to_csv;
        # chunks bound the text held in memory for a long, noisy record.
        line = seqid.replace("{", "{{").replace("}", "}}") + "\t{}\t{}\t{}\n"
        for first in range(0, len(starts), _CHUNK):
            chunk = slice(first, first + _CHUNK)
            self.handle.write(
                "".join(map(line.format, starts[chunk].tolist(), ends[chunk].tolist(), vals[chunk].tolist()))
            )


def track_format(path: str | os.PathLike) -> str:
    """``"bigwig"`` for a ``.bw`` / ``.bigwig`` file, else ``"bedgraph"``."""
    return "bigwig" if Path(path).suffix.lower() in (".bw", ".bigwig") else "bedgraph"


def pybigwig():
    """The pyBigWig module, or a message saying how to install it."""
    try:
        import pyBigWig
    except ImportError as error:
        raise GenoformerError(
            "bigWig tracks need the pyBigWig package: install it with "
            "`pip install 'genoformer[tracks]'`, or write bedGraph tracks instead"
        ) from error
    return pyBigWig


class BigWigWriter:
    """Streams records into an open pyBigWig file; records must come in header order."""

    def __init__(self, path: Path, sequence_lengths: Mapping[str, int], *, decimals: int = 3):
        self.decimals = decimals
        self.sequence_lengths = dict(sequence_lengths)
        self.order = {name: i for i, name in enumerate(self.sequence_lengths)}
        self.last = -1
        self.file = pybigwig().open(str(path), "w")
        self.file.addHeader([(name, int(length)) for name, length in self.sequence_lengths.items()])

    def add(self, seqid: str, values: np.ndarray) -> None:
        _check_length(seqid, values, self.sequence_lengths)
        rank = self.order[seqid]
        if rank <= self.last:
            # bigWig entries must be added sorted in header order; say so instead of corrupting the file.
            raise GenoformerError(
                f"bigWig records must arrive in the order of sequence_lengths; {seqid!r} came after a later record"
            )
        self.last = rank
        starts, ends, vals = runs(values, self.decimals)
        if starts.size:
            self.file.addEntries(
                [seqid] * starts.size, starts.tolist(), ends=ends.tolist(), values=vals.tolist()
            )

    def close(self) -> None:
        self.file.close()


@contextlib.contextmanager
def open_track(
    path: str | os.PathLike,
    name: str,
    *,
    sequence_lengths: Mapping[str, int] | None = None,
    description: str | None = None,
    decimals: int = 3,
    format: str | None = None,
) -> Iterator[BedGraphWriter | BigWigWriter]:
    """Open one track for record-by-record writing; the file appears only when the block succeeds.

    ``format`` is ``"bedgraph"`` or ``"bigwig"`` (default: from the suffix, ``.bw``/``.bigwig``
    meaning bigWig). bigWig needs ``sequence_lengths`` for its header.
    """
    path = Path(path)
    format = format or track_format(path)
    if format == "bedgraph":
        with atomic_write(path) as handle:
            yield BedGraphWriter(
                handle, name, description=description, decimals=decimals, sequence_lengths=sequence_lengths
            )
    elif format == "bigwig":
        if sequence_lengths is None:
            raise GenoformerError("a bigWig header needs the record lengths (sequence_lengths)")
        pybigwig()
        with atomic_path(path) as tmp:
            writer = BigWigWriter(tmp, sequence_lengths, decimals=decimals)
            try:
                yield writer
            finally:
                writer.close()
    else:
        raise GenoformerError(f"unknown track format {format!r}: use 'bedgraph' or 'bigwig'")


def write_bedgraph(
    path: str | os.PathLike,
    name: str,
    values: Records,
    *,
    sequence_lengths: Mapping[str, int] | None = None,
    description: str | None = None,
    decimals: int = 3,
) -> Path:
    """Write per-base ``values`` (``{seqid: 1-D float array}`` or ``(seqid, array)`` pairs) as bedGraph.

    One ``track type=bedGraph`` header line, then ``seqid start end value`` lines (0-based
    half-open), run-length merged after rounding to ``decimals``. When ``sequence_lengths`` is
    given, each array must cover its whole record.
    """
    with open_track(
        path, name, sequence_lengths=sequence_lengths, description=description, decimals=decimals, format="bedgraph"
    ) as writer:
        for seqid, track in _records(values):
            writer.add(seqid, track)
    return Path(path)


def write_bigwig(
    path: str | os.PathLike,
    values: Records,
    sequence_lengths: Mapping[str, int],
    *,
    decimals: int = 3,
) -> Path:
    """Write per-base ``values`` as bigWig (needs pyBigWig).

    The header lists every record of ``sequence_lengths`` with its length, in that order;
    records must be given in the same order (a generator may skip records).
    """
    with open_track(path, "", sequence_lengths=sequence_lengths, decimals=decimals, format="bigwig") as writer:
        for seqid, track in _records(values):
            writer.add(seqid, track)
    return Path(path)


def write_class_tracks(
    prefix: str | os.PathLike,
    probabilities: Records,
    classes: Iterable[str],
    *,
    sequence_lengths: Mapping[str, int],
    format: str = "bedgraph",
    decimals: int = 3,
) -> list[Path]:
    """One track per class and strand from per-record probabilities ``(2, n_classes, length)``.

    Files are ``{prefix}.{class}.{plus|minus}.bedgraph`` (or ``.bw``); every file stays a
    temporary sibling until all records are written, so an interrupted run leaves none.
    """
    classes = list(classes)
    suffix = {"bedgraph": "bedgraph", "bigwig": "bw"}.get(format)
    if suffix is None:
        raise GenoformerError(f"unknown track format {format!r}: use 'bedgraph' or 'bigwig'")
    paths = []
    with contextlib.ExitStack() as stack:
        writers = []
        for label in classes:
            for strand, word in (("+", "plus"), ("-", "minus")):
                path = Path(f"{prefix}.{label}.{word}.{suffix}")
                paths.append(path)
                writers.append(
                    stack.enter_context(
                        open_track(
                            path,
                            f"{label} {strand}",
                            description=f"probability of {label} on the {strand} strand",
                            sequence_lengths=sequence_lengths,
                            decimals=decimals,
                            format=format,
                        )
                    )
                )
        for seqid, record in _records(probabilities):
            record = np.asarray(record)
            if record.ndim != 3 or record.shape[:2] != (2, len(classes)):
                raise GenoformerError(
                    f"probabilities for record {seqid!r} have shape {record.shape}, "
                    f"expected (2, {len(classes)}, length)"
                )
            for index, writer in enumerate(writers):
                class_index, strand_row = divmod(index, 2)
                writer.add(seqid, record[strand_row, class_index])
    return paths
