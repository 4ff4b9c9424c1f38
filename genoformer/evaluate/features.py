"""Coding gene models of an annotation table, and exon/gene level matching.

Each CDS row becomes a *part* of a transcript: the transcript is the CDS's parent (several
parents: one part per parent, protein/polypeptide parents skipped), else its transcript_id,
else its own ID; the gene is the topmost ancestor of the transcript through Parent links,
else the row's gene_id, else the transcript itself. So NCBI prokaryotic files (CDS -> gene),
eukaryotic GFF3 (CDS -> mRNA -> gene), GTF (transcript_id/gene_id) and bare CDS lists all
give one chain of CDS parts per transcript.

Slices of a genome cut gene and mRNA rows whose span crosses the slice end while keeping their
CDS rows, so a CDS may name parents that are not in the table. Such a CDS keeps only its first
parent as its transcript (TAIR's second parent is the protein, WormBase lists every isoform that
shares the CDS), and the gene of an absent transcript is the row's gene_id, else the gene that
carries the same gene attribute (``gene``, ``locus``, ``locus_tag``) on the same record and
strand, else the transcript itself.

GTF leaves the stop codon out of CDS rows and lists it as ``stop_codon``: stop_codon rows of a
coding transcript are joined to its CDS parts (touching or overlapping parts merge), so GTF and
GFF3 versions of one gene model give the same chain.

Pseudogenes are not coding genes: CDS rows marked ``pseudo=true``, or below a feature whose
type names a pseudogene or that is marked ``pseudo=true``, are dropped.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from genoformer.genome.annotation_table import marked_pseudo, parent_lists

# Parents that are not transcripts: TAIR lists the protein as a second parent of each CDS.
_NOT_TRANSCRIPTS = {"protein", "polypeptide"}
# Attributes that name a row's gene, most specific first (NCBI: gene/locus_tag; WormBase: locus).
_GENE_ATTRIBUTES = ("gene", "locus", "locus_tag")


def _present(series: pd.Series) -> pd.Series:
    return series.notna() & (series.astype(str) != "")


def _ancestors(keys: pd.Series, parent_of: dict[str, str]):
    """Yield the successive ancestors of each key (first parent each step; NaN once past the root)."""
    current = keys
    for _ in range(len(parent_of) + 1):
        current = current.map(parent_of)
        if not current.notna().any():
            return
        yield current
    raise ValueError("the Parent links of the annotation form a cycle")


def _root(keys: pd.Series, parent_of: dict[str, str]) -> pd.Series:
    """Topmost ancestor of each key (the key itself when it has no parent)."""
    root = keys
    for upper in _ancestors(keys, parent_of):
        root = upper.where(upper.notna(), root)
    return root


def _parent_map(table: pd.DataFrame) -> dict[str, str]:
    has = _present(table["id"]) & _present(table["parent"])
    rows = table[has]
    firsts = parent_lists(rows["parent"].astype(str).tolist(), table["id"].tolist())
    return dict(zip(rows["id"].astype(str), (listed[0] for listed in firsts)))


def is_pseudo(table: pd.DataFrame) -> np.ndarray:
    """Rows that are pseudogenes, marked ``pseudo=true``, or descend from such a feature."""
    marked = table["type"].astype(str).str.contains("pseudogen", case=False).to_numpy() | np.array(
        [marked_pseudo(a) for a in table["attributes"]], dtype=bool
    )
    pseudo_ids = set(table.loc[marked & _present(table["id"]).to_numpy(), "id"].astype(str))
    if not pseudo_ids:
        return marked
    parent_of = _parent_map(table)
    listed = parent_lists(table["parent"].where(_present(table["parent"])).tolist(), table["id"].tolist())
    first = pd.Series([None if parents is None else parents[0] for parents in listed], index=table.index, dtype=object)
    below = first.isin(pseudo_ids).to_numpy()
    for upper in _ancestors(first, parent_of):
        below = below | upper.isin(pseudo_ids).to_numpy()
    return marked | below


def coding_parts(table: pd.DataFrame) -> pd.DataFrame:
    """Non-pseudo CDS parts, one row per part and transcript: seqid, strand, start, end, transcript, gene."""
    table = table.reset_index(drop=True)  # BED12 rows share their line number as index
    cds = table[table["type"].isin(["CDS", "stop_codon"]).to_numpy() & ~is_pseudo(table)]
    named = table[_present(table["id"])]
    kinds = dict(zip(named["id"].astype(str), named["type"]))
    # Without a parent a CDS is its own transcript: its transcript_id, else its ID, else the row alone.
    own = pd.Series([f"\0row{i}" for i in range(len(cds))], index=cds.index)
    for column in ("id", "transcript_id"):
        own = cds[column].where(_present(cds[column]), own)
    parents = pd.Series(parent_lists(cds["parent"].where(_present(cds["parent"])).tolist(), table["id"].tolist()),
                        index=cds.index, dtype=object)
    parts = cds.assign(transcript=parents).explode("transcript")
    transcripts = parts["transcript"].where(parts["transcript"].notna(), own.reindex(parts.index)).astype(str)
    # Keep the parents that are transcripts in the table; a CDS with none keeps its first parent
    # (absent from a cut-off slice, or a lone protein parent).
    kind = transcripts.map(kinds)
    usable = kind.notna() & ~kind.isin(_NOT_TRANSCRIPTS)
    first = ~pd.Series(parts.index.duplicated(keep="first"), index=parts.index)
    keep = usable | (first & ~usable.groupby(level=0).transform("any"))
    parts = parts.assign(transcript=transcripts)[keep].reset_index(drop=True)

    gene = _root(parts["transcript"], _parent_map(table)).to_numpy(dtype=object)
    absent = ~parts["transcript"].isin(kinds.keys()).to_numpy()
    gene[absent] = _absent_genes(table, parts[absent])
    out = pd.DataFrame(
        {
            "seqid": parts["seqid"].astype(str).to_numpy(),
            "strand": parts["strand"].astype(str).to_numpy(),
            "start": parts["start"].to_numpy(dtype=np.int64),
            "end": parts["end"].to_numpy(dtype=np.int64),
            "transcript": parts["transcript"].to_numpy(),
            "gene": gene.astype(str),
        }
    )
    coding = set(out.loc[(parts["type"] == "CDS").to_numpy(), "transcript"])
    return _merge_touching(out[out["transcript"].isin(coding)])


def _attribute(frame: pd.DataFrame, key: str) -> pd.Series:
    return frame["attributes"].map(lambda a: (a.get(key) or None) if isinstance(a, dict) else None)


def _absent_genes(table: pd.DataFrame, parts: pd.DataFrame) -> np.ndarray:
    """Gene of CDS parts whose transcript is absent: gene_id, else the gene sharing a gene attribute."""
    gene = parts["transcript"].to_numpy(dtype=object).copy()
    has_id = _present(parts["gene_id"]).to_numpy()
    gene[has_id] = parts["gene_id"].to_numpy(dtype=object)[has_id]
    rest = parts[~has_id]
    if rest.empty:
        return gene
    positions = np.flatnonzero(~has_id)
    named = table[_present(table["id"])]
    roots = _root(named["id"].astype(str), _parent_map(table))
    # Chains that end in one of the absent transcripts themselves (its other CDS rows) name no gene.
    rooted = named[~roots.isin(set(rest["transcript"])).to_numpy()].assign(root=roots)
    settled = np.zeros(len(rest), dtype=bool)
    for key in _GENE_ATTRIBUTES:  # each part uses the most specific attribute it carries
        value = _attribute(rest, key).to_numpy(dtype=object)
        todo = ~settled & pd.notna(value)
        if not todo.any():
            continue
        found = rooted.assign(value=_attribute(rooted, key)).dropna(subset=["value"])
        owner = dict(zip(zip(found["seqid"], found["strand"], found["value"]), found["root"]))
        for i in np.flatnonzero(todo):
            gene[positions[i]] = owner.get((rest["seqid"].iat[i], rest["strand"].iat[i], value[i]), f"{key}={value[i]}")
        settled |= todo
    return gene


def _merge_touching(parts: pd.DataFrame) -> pd.DataFrame:
    """Union of each transcript's parts per strand: overlapping or touching parts become one."""
    parts = parts.sort_values(["transcript", "strand", "start", "end"], kind="stable").reset_index(drop=True)
    group = parts["transcript"] + "\0" + parts["strand"]
    reach = parts.groupby(group, sort=False)["end"].cummax().groupby(group, sort=False).shift(1)
    block = (reach.isna() | (parts["start"] > reach)).cumsum()
    merged = parts.groupby(block, sort=False).agg(
        seqid=("seqid", "first"), strand=("strand", "first"), start=("start", "min"), end=("end", "max"),
        transcript=("transcript", "first"), gene=("gene", "first"),
    )
    return merged.reset_index(drop=True)


def inside_regions(
    seqid: pd.Series, start: pd.Series, end: pd.Series, regions: dict[str, np.ndarray] | None
) -> np.ndarray:
    """Whether each interval lies wholly inside one (merged) region; all True without regions.

    ``regions`` maps a record to an array (n, 2) of sorted, disjoint [start, end) intervals.
    """
    if regions is None:
        return np.ones(len(seqid), dtype=bool)
    inside = np.zeros(len(seqid), dtype=bool)
    seqids = seqid.to_numpy()
    for name, spans in regions.items():
        rows = np.flatnonzero(seqids == name)
        if rows.size == 0 or spans.size == 0:
            continue
        starts, ends = start.to_numpy()[rows], end.to_numpy()[rows]
        # The only region that can hold [s, e) is the last one starting at or before s.
        which = np.searchsorted(spans[:, 0], starts, side="right") - 1
        ok = which >= 0
        inside[rows[ok]] = ends[ok] <= spans[which[ok], 1]
    return inside


def exon_counts(reference: pd.DataFrame, prediction: pd.DataFrame, regions) -> dict:
    """Unique CDS exons (record, strand, start, end) inside the regions, and how many match exactly."""
    key = ["seqid", "strand", "start", "end"]
    ref = reference[key].drop_duplicates()
    pred = prediction[key].drop_duplicates()
    ref = ref[inside_regions(ref["seqid"], ref["start"], ref["end"], regions)]
    pred = pred[inside_regions(pred["seqid"], pred["start"], pred["end"], regions)]
    matched = len(ref.merge(pred, on=key))
    return {"reference": len(ref), "predicted": len(pred), "matched_reference": matched, "matched_predicted": matched}


def transcript_keys(parts: pd.DataFrame, regions) -> pd.DataFrame:
    """One row per transcript: gene, its exact CDS chain key and its stop-codon key, for genes inside the regions.

    The chain key is record, strand(s) and every (start, end) in order; the stop key is record,
    strand and the 3' end of the CDS on that strand (end on +, start on -).
    """
    parts = parts.sort_values(["transcript", "start", "end"], kind="stable")
    coords = parts["start"].astype(str) + "-" + parts["end"].astype(str)
    grouped = parts.assign(coords=coords).groupby("transcript", sort=False)
    table = grouped.agg(
        gene=("gene", "first"),
        seqid=("seqid", "first"),
        strand=("strand", "first"),
        n_strands=("strand", "nunique"),
        start=("start", "min"),
        end=("end", "max"),
        chain=("coords", ",".join),
    )
    span = table.groupby("gene").agg(seqid=("seqid", "first"), start=("start", "min"), end=("end", "max"))
    keep_genes = span.index[inside_regions(span["seqid"], span["start"], span["end"], regions)]
    table = table[table["gene"].isin(keep_genes)]
    # A chain on both strands (trans-splicing) is kept as such; it has no single stop codon.
    table["strands"] = table["strand"].where(table["n_strands"] == 1, "+-")
    table["chain"] = table["seqid"] + "\0" + table["strands"] + "\0" + table["chain"]
    stop = np.where(table["strands"] == "-", table["start"], table["end"]).astype(str)
    table["stop"] = (table["seqid"] + "\0" + table["strands"] + "\0" + stop).where(table["strands"].isin(["+", "-"]))
    return table


def gene_counts(reference: pd.DataFrame, prediction: pd.DataFrame, column: str) -> dict:
    """Genes with at least one transcript whose ``column`` key (chain or stop) occurs on the other side."""
    ref_keys = set(reference[column].dropna())
    pred_keys = set(prediction[column].dropna())
    found = reference.loc[reference[column].isin(pred_keys), "gene"].nunique()
    correct = prediction.loc[prediction[column].isin(ref_keys), "gene"].nunique()
    return {
        "reference": int(reference["gene"].nunique()),
        "predicted": int(prediction["gene"].nunique()),
        "matched_reference": int(found),
        "matched_predicted": int(correct),
    }
