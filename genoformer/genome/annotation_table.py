"""The annotation table every reader returns and every decoder builds, and its gene/transcript links.

Columns are :data:`ANNOTATION_COLUMNS`, with 0-based half-open coordinates. The table's index (named
``line``) is the 1-based line of the source file each row came from (rows derived from one line, e.g.
the blocks of a BED12 line, share it), so later checks such as :func:`check_against_genome` can still
point at the offending line.

Hierarchy columns: ``id``/``parent`` link features (several parents stay comma-joined; how each format
fills them is told in :mod:`genoformer.genome.annotation`). From those links, ``transcript_id`` is the
row's parents that are not top-level features (a row whose parents are all top-level, such as an mRNA
under its gene or a bacterial CDS directly under its gene, is its own transcript) and ``gene_id`` the
top-level ancestor.
"""
from __future__ import annotations

from os import PathLike
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from genoformer.errors import AnnotationError

ANNOTATION_COLUMNS = (
    "seqid", "source", "type", "start", "end", "score", "strand", "phase",
    "id", "parent", "gene_id", "transcript_id", "name", "attributes",
)
_STR_COLUMNS = ("seqid", "source", "type", "strand")
_OBJECT_COLUMNS = ("id", "parent", "gene_id", "transcript_id", "name", "attributes")


def parent_ids(text: str, known: set[str]) -> list[str]:
    """The IDs a Parent value lists, comma separated. An ID may hold commas itself (GFF3 escapes them
    as %2C; one built from a record named ``a,b``): runs of pieces that join into a ``known`` ID are
    one parent, the longest run first."""
    if "," not in text or text in known:
        return [text]
    pieces = text.split(",")
    listed, i = [], 0
    while i < len(pieces):
        j = next((j for j in range(len(pieces), i + 1, -1) if ",".join(pieces[i:j]) in known), i + 1)
        listed.append(",".join(pieces[i:j]))
        i = j
    return listed


def marked_pseudo(attributes: object) -> bool:
    """Whether a row's attributes (a dict, or anything else for none) say ``pseudo=true`` (NCBI's mark of a
    pseudogene's features)."""
    return isinstance(attributes, dict) and str(attributes.get("pseudo", "")).lower() == "true"


def parent_lists(parents: Sequence, ids: Sequence) -> list[list[str] | None]:
    """Each row's Parent as its list of IDs (:func:`parent_ids`, ``ids`` being the table's), None where absent."""
    known = {i for i in ids if isinstance(i, str)}
    return [parent_ids(p, known) if isinstance(p, str) and p else None for p in parents]


def make_annotation(columns: Mapping[str, Any], index: Sequence[int] | None = None) -> pd.DataFrame:
    """Build an annotation table with the standard columns and dtypes from column arrays.

    Missing columns get their empty value (source ``"."``, score NaN, strand ``"."``, phase
    <NA>, ids None, attributes ``{}``); decoders and tests use this to produce the same shape
    :func:`~genoformer.genome.annotation.read_annotation` returns.
    """
    unknown = set(columns) - set(ANNOTATION_COLUMNS)
    if unknown:
        raise ValueError(f"unknown annotation columns: {sorted(unknown)}")
    n = len(columns["seqid"])
    data: dict[str, Any] = {}
    for name in ANNOTATION_COLUMNS:
        value = columns.get(name)
        if name in _STR_COLUMNS:
            default = {"source": ".", "strand": "."}.get(name)
            if value is None and default is None:
                raise ValueError(f"annotation column {name!r} is required")
            data[name] = pd.array([default] * n if value is None else np.asarray(value, dtype=object), dtype="str")
        elif name in ("start", "end"):
            data[name] = np.asarray(value, dtype=np.int64)
        elif name == "score":
            data[name] = np.full(n, np.nan) if value is None else np.asarray(value, dtype=np.float64)
        elif name == "phase":
            data[name] = pd.array([pd.NA] * n if value is None else value, dtype="Int64")
        elif name == "attributes":
            data[name] = pd.Series([{} for _ in range(n)] if value is None else list(value), dtype=object).to_numpy()
        else:
            data[name] = _optional_strings(value, n)
    index = pd.Index(np.arange(1, n + 1) if index is None else np.asarray(index, dtype=np.int64), name="line")
    # explicit dtypes: pandas would otherwise infer its str dtype, turning None into NaN
    return pd.DataFrame({name: pd.Series(values, index=index, dtype=object if name in _OBJECT_COLUMNS else None)
                         for name, values in data.items()})


def check_against_genome(annotation: pd.DataFrame, lengths: Mapping[str, int], path: str | PathLike) -> None:
    """Raise AnnotationError if a feature's seqid is not in ``lengths`` or it ends past its record.

    ``path`` is the annotation file, named in the message with the first offending line (the
    table's index, as :func:`~genoformer.genome.annotation.read_annotation` sets it).
    """
    seqids = annotation["seqid"].astype(object)
    absent = ~seqids.isin(list(lengths)).to_numpy()
    if absent.any():
        i = int(np.flatnonzero(absent)[0])
        missing = sorted(set(seqids[absent]))
        shown = ", ".join(map(repr, list(lengths)[:5])) + (", ..." if len(lengths) > 5 else "")
        raise AnnotationError(
            path, f"seqid {seqids.iloc[i]!r} is not in the genome ({len(missing)} seqid(s) absent: "
            f"{', '.join(missing[:5])}; genome records: {shown})", line=int(annotation.index[i]))
    record_length = seqids.map(dict(lengths)).to_numpy(dtype=np.int64)
    beyond = annotation["end"].to_numpy() > record_length
    if beyond.any():
        i = int(np.flatnonzero(beyond)[0])
        raise AnnotationError(
            path, f"feature ends at {int(annotation['end'].iloc[i])} (1-based), beyond the end of record "
            f"{seqids.iloc[i]!r} (length {int(record_length[i])})", line=int(annotation.index[i]))


def gene_and_transcript_ids(ids: list[str | None], parents: list[str | None]) -> tuple[list, list]:
    """gene_id and transcript_id of each row from ID/Parent links (see the module docstring)."""
    first_parent: dict[str, str | None] = {}
    listed_parents = parent_lists(parents, ids)
    for identifier, listed in zip(ids, listed_parents):
        if identifier is not None and identifier not in first_parent:
            first_parent[identifier] = listed[0] if listed else None
    roots: dict[str, str | None] = {}

    def root(identifier: str) -> str | None:
        if identifier not in roots:
            current, steps = identifier, 0
            while first_parent.get(current) is not None and steps < 64:  # 64: cycle guard
                current, steps = first_parent[current], steps + 1
            roots[identifier] = current if identifier in first_parent else None
        return roots[identifier]

    gene_ids, transcript_ids = [], []
    for identifier, listed in zip(ids, listed_parents):
        if not listed:
            gene_ids.append(identifier), transcript_ids.append(None)
            continue
        transcripts = [p for p in listed if first_parent.get(p, "missing") is not None]
        if transcripts:
            gene_ids.append(root(transcripts[0])), transcript_ids.append(",".join(transcripts))
        else:
            gene_ids.append(listed[0]), transcript_ids.append(identifier)
    return gene_ids, transcript_ids


def _optional_strings(value: Any, n: int) -> np.ndarray:
    out = np.full(n, None, dtype=object)
    if value is not None:
        values = np.asarray(value, dtype=object)
        keep = pd.notna(values) & (values != "")
        out[keep] = values[keep]
    return out
