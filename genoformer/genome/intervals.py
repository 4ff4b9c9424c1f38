"""Genomic intervals (0-based, half-open) and reading them from BED files."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from ..errors import AnnotationError, RegionError

_STRANDS = ("+", "-", ".")


@dataclass(frozen=True, slots=True)
class Interval:
    """``[start, end)`` on record ``name``, 0-based half-open; ``strand`` is "+", "-" or "." (unstranded)."""

    name: str
    start: int
    end: int
    strand: str = "+"

    def __post_init__(self):
        if self.start < 0 or self.end < self.start:
            raise RegionError(f"interval {self.name}:[{self.start}, {self.end}) has start < 0 or end < start")
        if self.strand not in _STRANDS:
            raise RegionError(f"interval {self.name}:[{self.start}, {self.end}): strand must be +, - or ., got {self.strand!r}")

    def __len__(self) -> int:
        return self.end - self.start


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def read_bed_files(paths: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Interval]:
    """The regions of one BED file or of several (:func:`read_bed_regions`), in order; none for ``None``."""
    if paths is None:
        return []
    return [iv for path in ([paths] if isinstance(paths, (str, os.PathLike)) else paths) for iv in read_bed_regions(path)]


def read_bed_regions(path: str | os.PathLike) -> list[Interval]:
    """Regions of a BED file (3 or more tab-separated columns; column 6, if present, is the strand).

    Lines without a strand get ``"."`` (unstranded; :meth:`Genome.fetch` reads it as ``"+"``).
    Blank, ``#`` comment, ``track`` and ``browser`` lines are skipped. BED is already 0-based half-open,
    so coordinates are taken as they are. Errors name the file and the 1-based line number.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(path, "no such file" if not path.exists() else "not a regular file")
    # One column per line keeps the file's line numbers (blank lines included) for messages;
    # fields are split afterwards so lines may have any number of columns.
    try:
        lines = pd.read_csv(
            path,
            sep="\x1f",
            header=None,
            names=["line"],
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            quoting=csv.QUOTE_NONE,
            compression="gzip" if _is_gzip(path) else None,
            engine="c",
        )["line"]
    except pd.errors.EmptyDataError:
        raise AnnotationError(path, "empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise AnnotationError(path, f"cannot read as BED text ({exc})") from None
    stripped = lines.str.strip()
    # "trackA" is a record name; only the words track/browser and whitespace make a header line.
    skip = (stripped == "") | stripped.str.startswith("#") | stripped.str.match(r"(?:track|browser)(?:\s|$)")
    body = lines[~skip].str.rstrip("\r")
    if body.empty:
        raise AnnotationError(path, "no regions (only blank, comment, track or browser lines)")
    fields = body.str.split("\t", expand=True)
    line_no = body.index.to_numpy() + 1

    def fail(mask, message):
        first = int(mask.to_numpy().argmax())
        raise AnnotationError(path, message.format(value=body.iloc[first][:60]), line=int(line_no[first]))

    if fields.shape[1] < 3 or fields[2].isna().any():
        short = fields[2].isna() if fields.shape[1] >= 3 else pd.Series(True, index=body.index)
        fail(short, "a BED line needs at least 3 tab-separated columns (chrom, start, end), got {value!r}")
    for col, name in ((1, "start"), (2, "end")):
        bad = ~fields[col].str.fullmatch(r"-?[0-9]+")
        if bad.any():
            fail(bad, f"column {col + 1} ({name}) is not an integer: {{value!r}}")
    starts = fields[1].astype("int64")
    ends = fields[2].astype("int64")
    if (starts < 0).any():
        fail(starts < 0, "start is negative: {value!r}")
    if (ends <= starts).any():
        fail(ends <= starts, "end is not after start (BED is 0-based, end exclusive): {value!r}")
    if fields.shape[1] >= 6:
        strands = fields[5].fillna(".").replace("", ".")
        bad = ~strands.isin(_STRANDS)
        if bad.any():
            fail(bad, "column 6 (strand) must be +, - or .: {value!r}")
    else:
        strands = pd.Series(".", index=fields.index)
    if (fields[0] == "").any():
        fail(fields[0] == "", "empty chromosome name: {value!r}")
    return [
        Interval(name, int(s), int(e), strand)
        for name, s, e, strand in zip(fields[0], starts, ends, strands)
    ]


def subtract_intervals(intervals: Iterable[Interval], remove: Iterable[Interval]) -> list[Interval]:
    """The parts of ``intervals`` not covered by any of ``remove`` (same record, any strand).

    Pieces keep their interval's name and strand, in input order; empty pieces are dropped.
    """
    holes: dict[str, list[tuple[int, int]]] = {}
    for r in remove:
        holes.setdefault(r.name, []).append((r.start, r.end))
    for spans in holes.values():
        spans.sort()
    out = []
    for iv in intervals:
        cursor = iv.start
        for start, end in holes.get(iv.name, ()):
            if start >= iv.end:
                break
            if end > cursor and start > cursor:
                out.append(Interval(iv.name, cursor, start, iv.strand))
            cursor = max(cursor, end)
        if cursor < iv.end:
            out.append(Interval(iv.name, cursor, iv.end, iv.strand))
    return out
