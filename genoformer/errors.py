"""Errors that name what is wrong and where.

Every problem with a user's input raises a subclass of :class:`GenoformerError`.
The command line prints ``str(error)`` as one line on stderr and exits non-zero;
the message always names the file and, where known, the record, line and position.
"""
from __future__ import annotations

import re
from os import PathLike

_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


class GenoformerError(Exception):
    """Base class: a problem the user can fix (bad file, bad config, bad model folder).

    ``str(error)`` is always one line: messages that quote another library's multi-line text
    (a YAML parser, torch's unpickler) are joined, so the command line prints exactly one line.
    """

    def __str__(self) -> str:
        return _LINE_BREAKS.sub(" ", super().__str__()).strip()


class InputFileError(GenoformerError, ValueError):
    """A file given as input is missing, unreadable or malformed."""

    def __init__(
        self,
        path: str | PathLike | None,
        message: str,
        *,
        record: str | None = None,
        line: int | None = None,
        position: int | None = None,
    ):
        self.path = None if path is None else str(path)
        self.record = record
        self.line = line
        self.position = position
        self.reason = message
        where = [self.path or "<input>"]
        if record is not None:
            where.append(f"record {record!r}")
        if line is not None:
            where.append(f"line {line}")
        if position is not None:
            where.append(f"position {position}")
        super().__init__(f"{', '.join(where)}: {message}")


class FastaError(InputFileError):
    """A FASTA file (or its index) is missing, empty or malformed."""


class AnnotationError(InputFileError):
    """A GFF3/GTF/BED/GenBank annotation is malformed or disagrees with the genome."""


class RegionError(GenoformerError, ValueError):
    """A requested interval lies outside its record or is empty/inverted."""


class ConfigError(GenoformerError, ValueError):
    """A configuration has an unknown key, a wrong type or an impossible value."""


class ModelFileError(InputFileError):
    """A model folder has a missing, mismatched or unsafe file."""


class TrainingError(GenoformerError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN/Inf)."""


class MemoryPlanError(GenoformerError, MemoryError):
    """A run would need more memory than the device has."""


class OutputLockedError(GenoformerError, RuntimeError):
    """Another run is writing the same outputs (its lock file is held)."""
