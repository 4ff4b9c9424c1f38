"""BED output: feature segments (BED6) and gene models (BED12).

BED keeps the table's 0-based half-open coordinates unchanged. Lines are sorted by record
(in ``sequence_lengths`` order when given, else by name), then start, then end; files are
written to a temporary sibling and renamed into place.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from genoformer.errors import GenoformerError
from genoformer.files import atomic_write
from genoformer.genome.annotation_table import parent_lists

# Rows that make up a transcript's structure; their parent is the transcript.
PART_TYPES = ("exon", "CDS", "five_prime_UTR", "three_prime_UTR")
# Parents that are not transcripts: TAIR lists the protein as a second parent of each CDS.
NOT_TRANSCRIPTS = ("protein", "polypeptide")


# A line starting with one of these words and whitespace (or nothing) is a header, not a feature.
_HEADER_WORD = re.compile(r"(track|browser)(\s|$)")
_warned: set[str] = set()  # record names already warned about in this process


def warn_unreadable_names(seqids: Iterable[str]) -> None:
    """Warn (once per record name and process) about record names whose BED or bedGraph lines
    readers would skip or split: a leading ``#`` (a comment), ``track``/``browser`` and whitespace
    (a header line), whitespace inside (more columns)."""
    for name in sorted(set(map(str, seqids)) - _warned):
        if name.startswith("#"):
            reason = "starts with '#': BED and bedGraph readers take its lines for comments"
        elif _HEADER_WORD.match(name + "\t"):
            reason = "is a header word: BED and bedGraph readers take its lines for track/browser lines"
        elif any(c.isspace() for c in name):
            reason = "holds whitespace: BED and bedGraph readers split its lines into extra columns"
        else:
            continue
        _warned.add(name)
        print(f"genoformer: warning: record {name!r} {reason}; rename the record to read these files back",
              file=sys.stderr)


def _record_rank(seqids: pd.Series, sequence_lengths: Mapping[str, int] | None) -> np.ndarray:
    names = list(sequence_lengths) if sequence_lengths is not None else sorted(seqids.unique())
    rank = seqids.map({name: i for i, name in enumerate(names)})
    if rank.isna().any():
        missing = sorted(seqids[rank.isna()].unique())
        raise GenoformerError(f"features on records not among the sequences: {', '.join(map(repr, missing[:5]))}")
    return rank.to_numpy(dtype=np.int64)


def bed_score(score: pd.Series) -> np.ndarray:
    """Probability in [0, 1] -> BED score 0-1000 (NaN -> 0)."""
    values = pd.to_numeric(score, errors="coerce").fillna(0.0).to_numpy(dtype=np.float64)
    return np.clip(np.rint(values * 1000), 0, 1000).astype(np.int64)


def _clean(text: pd.Series) -> pd.Series:
    # BED columns are tab separated and one line per feature: whitespace inside a name would break it.
    return text.astype(str).str.replace(r"[\t\r\n ]+", "_", regex=True)


def write_bed(
    table: pd.DataFrame,
    path: str | os.PathLike,
    *,
    sequence_lengths: Mapping[str, int] | None = None,
    name: str = "type",
    types: Iterable[str] | None = None,
) -> Path:
    """Write features as BED6: ``chrom start end name score strand``.

    ``name`` is the column giving the BED name (default the feature type; a class column such as
    ``"name"`` for region labels; missing values fall back to the type). ``score`` is the
    feature's probability scaled to 0-1000. ``types`` restricts which feature types are written.
    """
    rows = table if types is None else table[table["type"].isin(list(types))]
    labels = rows[name].where(rows[name].notna(), rows["type"]) if name != "type" else rows["type"]
    out = pd.DataFrame(
        {
            "chrom": rows["seqid"].astype(str).to_numpy(),
            "start": rows["start"].to_numpy(dtype=np.int64),
            "end": rows["end"].to_numpy(dtype=np.int64),
            "name": _clean(labels).to_numpy(),
            "score": bed_score(rows["score"]),
            "strand": rows["strand"].fillna(".").astype(str).to_numpy(),
        }
    )
    warn_unreadable_names(out["chrom"])
    out["rank"] = _record_rank(out["chrom"], sequence_lengths)
    out = out.sort_values(["rank", "start", "end"], kind="stable").drop(columns="rank")
    with atomic_write(path) as handle:
        out.to_csv(handle, sep="\t", header=False, index=False, lineterminator="\n")
    return Path(path)


def _transcript_parts(table: pd.DataFrame) -> pd.DataFrame:
    """Structure rows with one row per (part, parent transcript); several parents are split."""
    parts = table[table["type"].isin(PART_TYPES) & table["parent"].notna()]
    parts = parts.assign(transcript=parent_lists(parts["parent"].astype(str).tolist(), table["id"].tolist()))
    parts = parts.explode("transcript")
    proteins = table.loc[table["type"].isin(NOT_TRANSCRIPTS) & table["id"].notna(), "id"]
    parts = parts[~parts["transcript"].isin(set(proteins))]
    return parts[["seqid", "type", "start", "end", "strand", "transcript"]].reset_index(drop=True)


def _merge_blocks(parts: pd.DataFrame) -> pd.DataFrame:
    """Union of each transcript's intervals: overlapping or touching parts become one block."""
    parts = parts.sort_values(["transcript", "start", "end"], kind="stable").reset_index(drop=True)
    reach = parts.groupby("transcript", sort=False)["end"].cummax()
    previous_reach = reach.groupby(parts["transcript"], sort=False).shift(1)
    new_block = previous_reach.isna() | (parts["start"] > previous_reach)
    block = new_block.cumsum()
    return (
        parts.groupby(block, sort=False)
        .agg(transcript=("transcript", "first"), start=("start", "min"), end=("end", "max"))
        .reset_index(drop=True)
    )


def write_bed12(
    table: pd.DataFrame,
    path: str | os.PathLike,
    *,
    sequence_lengths: Mapping[str, int] | None = None,
) -> Path:
    """Write each transcript (the parent of exon/CDS/UTR rows) as one BED12 line.

    Blocks are the transcript's exons; a transcript without exon rows (a prokaryotic CDS whose
    parent is the gene) uses the union of its CDS and UTR parts. thickStart/thickEnd span the
    CDS (both equal chromStart when there is none). Name is the transcript ID; score comes
    from the transcript row's probability (0 when absent).
    """
    parts = _transcript_parts(table)
    has_exons = set(parts.loc[parts["type"] == "exon", "transcript"])
    from_exons = parts["transcript"].isin(has_exons)
    block_parts = parts[(from_exons & (parts["type"] == "exon")) | (~from_exons & (parts["type"] != "exon"))]
    blocks = _merge_blocks(block_parts)

    first = parts.groupby("transcript", sort=False).agg(seqid=("seqid", "first"), strand=("strand", "first"))
    span = blocks.groupby("transcript", sort=False).agg(start=("start", "min"), end=("end", "max"))
    cds = parts[parts["type"] == "CDS"].groupby("transcript")
    cds = cds.agg(thick_start=("start", "min"), thick_end=("end", "max"))
    lines = first.join(span, how="inner").join(cds, how="left")
    lines["thick_start"] = lines["thick_start"].fillna(lines["start"]).astype(np.int64)
    lines["thick_end"] = lines["thick_end"].fillna(lines["start"]).astype(np.int64)

    blocks = blocks.join(span["start"].rename("tx_start"), on="transcript")
    blocks["size"] = (blocks["end"] - blocks["start"]).astype(str)
    blocks["offset"] = (blocks["start"] - blocks["tx_start"]).astype(str)
    grouped = blocks.groupby("transcript", sort=False)
    lines["count"] = grouped.size()
    lines["sizes"] = grouped["size"].agg(",".join) + ","
    lines["offsets"] = grouped["offset"].agg(",".join) + ","

    rows = table[table["id"].notna()].drop_duplicates("id").set_index("id")
    score = rows["score"].reindex(lines.index) if len(rows) else pd.Series(np.nan, index=lines.index)
    lines["score"] = bed_score(score)
    lines["name"] = _clean(pd.Series(lines.index, index=lines.index))
    warn_unreadable_names(lines["seqid"])
    lines["rank"] = _record_rank(lines["seqid"], sequence_lengths)
    lines = lines.sort_values(["rank", "start", "end", "name"], kind="stable")
    lines["rgb"] = "0"
    columns = ["seqid", "start", "end", "name", "score", "strand",
               "thick_start", "thick_end", "rgb", "count", "sizes", "offsets"]
    with atomic_write(path) as handle:
        lines[columns].to_csv(handle, sep="\t", header=False, index=False, lineterminator="\n")
    return Path(path)
