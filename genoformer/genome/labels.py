"""Per-base class labels for any window, from an annotation table.

A label track is ``np.ndarray (2, end - start) int8``: row 0 the + strand, row 1 the - strand,
values index ``scheme.classes``; 0 is the background. Unstranded features (``.``) label both rows.

Two kinds of :class:`LabelScheme`:

``gene_structure`` (classes intergenic, five_prime_UTR, CDS, intron, three_prime_UTR, ncRNA):

* CDS: every CDS row (GTF ``stop_codon`` rows too, since GTF leaves the stop codon out of CDS
  while GFF3/GenBank/BED12 include it).
* UTRs: explicit five_prime_UTR/three_prime_UTR rows (and their GTF spellings); generic ``UTR``
  rows are put on the 5' or 3' side of their transcript's CDS by strand; a transcript with exons
  and CDS but no UTR rows (BED12, many GTFs) gets the exon parts outside its CDS span.
* Introns are derived, never read: the gaps between consecutive exons of one transcript (or, for a
  coding transcript listed without exons, such as a bacterial gene whose CDS is a ``join``,
  between its CDS/UTR parts). Intron rows in the file are ignored, so evidence rows such as the
  ``RNASeq_splice`` introns of the C. elegans and A. thaliana files label nothing.
  "Transcript" = a value of ``parent`` (rows with several parents belong to each).
* ncRNA: the exons of transcripts whose type (or GTF ``transcript_biotype``/``transcript_type``)
  is a non-coding RNA type (tRNA, rRNA, ncRNA, snoRNA, miRNA, lnc_RNA, ...), or the feature's own
  span when it has no exons. Introns of non-coding transcripts are introns.
* Overlaps resolve by priority CDS > UTR (5' over 3') > intron > ncRNA > intergenic, so the CDS
  of one isoform wins over the intron or UTR of another.
* Features with ``pseudo=true`` (NCBI pseudogene CDS), pseudogenes, pseudogenic transcripts and
  transposable-element genes carry no CDS and stay intergenic, as the reference annotations
  score them.

``regions`` (``LabelScheme.from_names``): every row whose ``type`` maps to a class paints it
(for BED files the type is the name column); where features overlap, the class later in the
list wins.

Build a :class:`LabelIndex` once per annotation and query many windows: each record's features
become sorted, disjoint blocks per strand and class, and a window costs two binary searches and
one vectorised paint per class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from genoformer.errors import ConfigError, RegionError
from genoformer.genome.annotation_table import marked_pseudo, parent_lists

GENE_STRUCTURE_CLASSES = ("intergenic", "five_prime_UTR", "CDS", "intron", "three_prime_UTR", "ncRNA")
KINDS = ("gene_structure", "regions")
NCRNA_TYPES = (
    "tRNA", "rRNA", "ncRNA", "snoRNA", "snRNA", "miRNA", "pre_miRNA", "piRNA", "siRNA", "lnc_RNA", "lncRNA",
    "lincRNA", "misc_RNA", "antisense_RNA", "antisense", "scRNA", "scaRNA", "sRNA", "SRP_RNA", "RNase_P_RNA",
    "RNase_MRP_RNA", "tmRNA", "ribozyme", "guide_RNA", "telomerase_RNA", "vault_RNA", "vaultRNA", "Y_RNA",
    "circular_ncRNA", "nc_primary_transcript", "primary_transcript", "Mt_tRNA", "Mt_rRNA",
)
_STRUCTURE_TYPES = {
    "CDS": "CDS", "stop_codon": "CDS",
    "five_prime_UTR": "five_prime_UTR", "five_prime_utr": "five_prime_UTR", "5UTR": "five_prime_UTR",
    "5'UTR": "five_prime_UTR", "three_prime_UTR": "three_prime_UTR", "three_prime_utr": "three_prime_UTR",
    "3UTR": "three_prime_UTR", "3'UTR": "three_prime_UTR",
    **{kind: "ncRNA" for kind in NCRNA_TYPES},
}
_GENERIC_UTR = frozenset({"UTR", "utr"})
_PAINT_ORDER = ("ncRNA", "intron", "three_prime_UTR", "five_prime_UTR", "CDS")  # lowest priority first


@dataclass(frozen=True)
class LabelScheme:
    """The classes of a label track, and which feature types paint which class.

    ``mapping`` (feature type -> class) defaults to the biology for ``gene_structure`` (CDS,
    UTR spellings, non-coding RNA types) and to the identity over the classes for ``regions``;
    it may be given as a dict and is stored as sorted pairs so the scheme stays hashable.
    """

    classes: tuple[str, ...]
    kind: str
    mapping: Any = ()

    def __post_init__(self):
        classes = tuple(self.classes)
        object.__setattr__(self, "classes", classes)
        if self.kind not in KINDS:
            raise ConfigError(f"label scheme kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
            raise ConfigError(f"a label scheme needs a background and at least one class, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise ConfigError(f"label classes repeat: {classes!r}")
        if len(classes) > 127:
            raise ConfigError(f"{len(classes)} classes do not fit the int8 label track (at most 127)")
        if self.kind == "gene_structure":
            unknown = set(classes) - set(GENE_STRUCTURE_CLASSES)
            if classes[0] != "intergenic" or unknown:
                raise ConfigError(f"gene_structure classes must start with 'intergenic' and come from "
                                  f"{GENE_STRUCTURE_CLASSES}, got {classes!r}")
        mapping = dict(self.mapping)
        if not mapping:
            defaults = _STRUCTURE_TYPES if self.kind == "gene_structure" else {c: c for c in classes[1:]}
            mapping = {kind: c for kind, c in defaults.items() if c in classes}
        wrong = {kind: c for kind, c in mapping.items() if c not in classes[1:]}
        if wrong:
            raise ConfigError(f"label mapping names classes not in {classes[1:]!r}: {wrong!r}")
        object.__setattr__(self, "mapping", tuple(sorted(mapping.items())))

    @classmethod
    def gene_structure(cls, ncrna: bool = True) -> "LabelScheme":
        """intergenic, five_prime_UTR, CDS, intron, three_prime_UTR (+ ncRNA)."""
        classes = GENE_STRUCTURE_CLASSES if ncrna else GENE_STRUCTURE_CLASSES[:-1]
        return cls(classes, "gene_structure")

    @classmethod
    def from_names(cls, names: Iterable[str], mapping: Mapping[str, str] | None = None) -> "LabelScheme":
        """A ``regions`` scheme: background plus ``names`` (BED name classes or GFF feature types).

        ``mapping`` may send several feature types to one class; later names win overlaps.
        """
        names = tuple(names)
        if "background" in names:
            raise ConfigError("'background' is the implicit class 0; do not list it among the names")
        return cls(("background", *names), "regions", mapping or ())

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def type_classes(self) -> dict[str, str]:
        """Feature type -> class name."""
        return dict(self.mapping)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "kind": self.kind, "mapping": dict(self.mapping)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LabelScheme":
        if not isinstance(data, Mapping):
            raise ConfigError(f"a label scheme is a mapping with classes/kind/mapping, got {type(data).__name__}")
        unknown = set(data) - {"classes", "kind", "mapping"}
        if unknown or "classes" not in data or "kind" not in data:
            raise ConfigError(f"label scheme needs keys 'classes' and 'kind' (and optional 'mapping'); "
                              f"got {sorted(data)}")
        if isinstance(data["classes"], str) or not isinstance(data["classes"], (list, tuple)):
            raise ConfigError(f"label scheme 'classes' must be a list of names, got {data['classes']!r}")
        mapping = data.get("mapping") or {}
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"label scheme 'mapping' must map feature types to classes, got {mapping!r}")
        return cls(tuple(data["classes"]), data["kind"], mapping)


class LabelIndex:
    """An annotation turned into per-record, per-strand, per-class disjoint blocks.

    Picklable (numpy arrays and dicts), so each DataLoader worker can hold a copy.
    """

    def __init__(self, annotation: pd.DataFrame, scheme: LabelScheme):
        self.scheme = scheme
        if scheme.kind == "gene_structure":
            segments = _gene_structure_segments(annotation, scheme)
            order = [name for name in _PAINT_ORDER if name in scheme.classes]
        else:
            segments = _region_segments(annotation, scheme)
            order = list(scheme.classes[1:])
        self._blocks = _blocks(segments, scheme.classes, order)

    @property
    def names(self) -> list[str]:
        """Records that carry at least one labelled base."""
        return list(self._blocks)

    def track(self, name: str, start: int, end: int) -> np.ndarray:
        """Labels of record ``name`` over [start, end): ``(2, end - start) int8``."""
        start, end = int(start), int(end)
        if start < 0 or end < start:
            raise RegionError(f"cannot label {name}:{start}-{end}: need 0 <= start <= end")
        length = end - start
        track = np.zeros((2, length), dtype=np.int8)  # (strand, base)
        for row, label, starts, ends in self._blocks.get(name, ()):
            first = np.searchsorted(ends, start, side="right")  # first block ending after start
            stop = np.searchsorted(starts, end, side="left")  # blocks starting before end
            if first >= stop:
                continue
            # blocks are disjoint and never touch, so their clipped edges are distinct positions
            edges = np.zeros(length + 1, dtype=np.int32)
            edges[np.clip(starts[first:stop] - start, 0, length)] += 1
            edges[np.clip(ends[first:stop] - start, 0, length)] -= 1
            track[row, np.cumsum(edges[:-1]) > 0] = label
        return track


def label_track(annotation: pd.DataFrame | LabelIndex, name: str, start: int, end: int,
                scheme: LabelScheme | None = None) -> np.ndarray:
    """Labels of ``name``:[start, end) as ``(2, end - start) int8`` (row 0 +, row 1 -).

    ``annotation`` is a table from ``read_annotation`` (indexed anew for each call, on the rows
    of ``name`` only) or a :class:`LabelIndex` built once for many windows. ``scheme`` defaults
    to ``LabelScheme.gene_structure()``.
    """
    if isinstance(annotation, LabelIndex):
        if scheme is not None and scheme != annotation.scheme:
            raise ValueError("scheme differs from the one the LabelIndex was built with")
        return annotation.track(name, start, end)
    scheme = scheme or LabelScheme.gene_structure()
    return LabelIndex(annotation[annotation["seqid"] == name], scheme).track(name, start, end)


# --------------------------------------------------------------------------- segments

def _segments(seqid, start, end, strand, name) -> pd.DataFrame:
    return pd.DataFrame({"seqid": np.asarray(seqid, dtype=object), "start": np.asarray(start, dtype=np.int64),
                         "end": np.asarray(end, dtype=np.int64), "strand": np.asarray(strand, dtype=object),
                         "label": name if isinstance(name, str) else np.asarray(name, dtype=object)})


def _region_segments(annotation: pd.DataFrame, scheme: LabelScheme) -> pd.DataFrame:
    label = annotation["type"].astype(object).map(scheme.type_classes)
    rows = annotation[label.notna().to_numpy()]
    return _segments(rows["seqid"], rows["start"], rows["end"], rows["strand"], label.dropna().to_numpy())


def _gene_structure_segments(annotation: pd.DataFrame, scheme: LabelScheme) -> pd.DataFrame:
    types = annotation["type"].astype(object).to_numpy()
    attributes = annotation["attributes"].to_numpy()
    mapping = scheme.type_classes
    pseudo = np.fromiter((marked_pseudo(a) for a in attributes), dtype=bool, count=len(types))
    biotypes = [(a.get("transcript_biotype") or a.get("transcript_type")) if isinstance(a, dict) else None
                for a in attributes]
    structure = np.array([mapping.get(t) for t in types], dtype=object)
    nc = np.array([mapping.get(t) == "ncRNA" or mapping.get(b) == "ncRNA" for t, b in zip(types, biotypes)], dtype=bool)
    role = np.where(structure == "ncRNA", None, structure)
    role[types == "exon"] = "exon"
    role[np.isin(types, list(_GENERIC_UTR))] = "UTR"

    table = pd.DataFrame({
        "seqid": annotation["seqid"].astype(object).to_numpy(), "start": annotation["start"].to_numpy(np.int64),
        "end": annotation["end"].to_numpy(np.int64), "strand": annotation["strand"].astype(object).to_numpy(),
        "role": role, "nc": nc,
    })[~pseudo]
    ids = annotation["id"].to_numpy(dtype=object)[~pseudo]
    parents = annotation["parent"].to_numpy(dtype=object)[~pseudo]
    transcripts = annotation["transcript_id"].to_numpy(dtype=object)[~pseudo]
    # group keys: each parent; else the transcript id; else the row's own id; else the row alone
    keys = [p if p else [t] if isinstance(t, str) and t else [i] if isinstance(i, str) and i else [f"\0{k}"]
            for k, (p, t, i) in enumerate(zip(parent_lists(parents, annotation["id"].tolist()), transcripts, ids))]
    members = table.assign(key=keys).explode("key", ignore_index=True)
    # a transcript is a key on one record: the same id on two records must not join them
    code, _ = pd.factorize(members["seqid"] + "\0" + members["key"])
    n_groups = int(code.max()) + 1 if len(code) else 0
    first_member = np.empty(n_groups, dtype=np.int64)
    first_member[code[::-1]] = np.arange(len(code))[::-1]
    group_names = members["key"].to_numpy(dtype=object)[first_member]  # (n_groups,) the transcript ids
    m_role = members["role"].to_numpy(dtype=object)
    m_start, m_end = members["start"].to_numpy(), members["end"].to_numpy()

    def any_in(mask: np.ndarray) -> np.ndarray:  # (n_groups,) whether a member satisfies mask
        return np.bincount(code[mask], minlength=n_groups) > 0

    is_cds, is_exon = m_role == "CDS", m_role == "exon"
    is_utr = np.isin(m_role, ["five_prime_UTR", "three_prime_UTR", "UTR"])
    coding, has_exon, has_utr = any_in(is_cds), any_in(is_exon), any_in(is_utr)
    own_nc = pd.Series(table["nc"].to_numpy(), index=ids).groupby(level=0).any()
    nc_group = (any_in(members["nc"].to_numpy(dtype=bool))
                | pd.Series(group_names).map(own_nc).eq(True).to_numpy()) & ~coding
    cds_low = np.full(n_groups, np.iinfo(np.int64).max)
    cds_high = np.full(n_groups, -1)
    np.minimum.at(cds_low, code[is_cds], m_start[is_cds])
    np.maximum.at(cds_high, code[is_cds], m_end[is_cds])
    low, high = cds_low[code], cds_high[code]  # (n_members,) the CDS span of each member's transcript
    plus = members["strand"].to_numpy(dtype=object) != "-"

    pieces = [_segments(table["seqid"], table["start"], table["end"], table["strand"], table["role"])
              [table["role"].isin(["CDS", "five_prime_UTR", "three_prime_UTR"]).to_numpy()]]
    # generic UTR rows and derived UTRs: the side of the CDS span decides 5' or 3' with the strand
    derive = is_exon & (coding & has_exon & ~has_utr)[code]
    generic = is_utr & (m_role == "UTR") & coding[code]
    for mask, left_start, left_end, right_start, right_end in (
        (generic, m_start, np.where(m_end <= low, m_end, m_start), np.where(m_start >= high, m_start, m_end), m_end),
        (derive, m_start, np.minimum(m_end, low), np.maximum(m_start, high), m_end),
    ):
        for side_start, side_end, five in ((left_start, left_end, plus), (right_start, right_end, ~plus)):
            keep = mask & (side_start < side_end)
            pieces.append(_segments(members["seqid"][keep], side_start[keep], side_end[keep], members["strand"][keep],
                                    np.where(five[keep], "five_prime_UTR", "three_prime_UTR")))
    pieces.append(_introns(members, code, np.where(has_exon[code], is_exon, (is_cds | is_utr)) & (coding | nc_group)[code]))
    # ncRNA: exons of non-coding RNA transcripts, or the RNA feature itself when it has no exons
    nc_exons = is_exon & nc_group[code]
    pieces.append(_segments(members["seqid"][nc_exons], m_start[nc_exons], m_end[nc_exons],
                            members["strand"][nc_exons], "ncRNA"))
    with_exons = set(group_names[has_exon | coding].tolist())
    bare = table["nc"].to_numpy() & (table["role"].isna().to_numpy()) & ~pd.Series(ids).isin(with_exons).to_numpy()
    pieces.append(_segments(table["seqid"][bare], table["start"][bare], table["end"][bare], table["strand"][bare], "ncRNA"))
    return pd.concat(pieces, ignore_index=True)


def _introns(members: pd.DataFrame, code: np.ndarray, structural: np.ndarray) -> pd.DataFrame:
    """Gaps between the merged structural parts (exons, or CDS/UTR) of each transcript."""
    order = np.lexsort((members["start"].to_numpy()[structural], code[structural]))
    group = code[structural][order]
    start = members["start"].to_numpy()[structural][order]
    reach = pd.Series(members["end"].to_numpy()[structural][order]).groupby(group).cummax().to_numpy()
    gap = np.zeros(len(group), dtype=bool)
    gap[1:] = (group[1:] == group[:-1]) & (start[1:] > reach[:-1])
    rows = np.flatnonzero(gap)
    source = members[structural].iloc[order]
    return _segments(source["seqid"].to_numpy()[rows], reach[rows - 1], start[rows],
                     source["strand"].to_numpy()[rows], "intron")


def _blocks(segments: pd.DataFrame, classes: tuple[str, ...], paint_order: list[str]) -> dict[str, list[tuple]]:
    """seqid -> [(strand row, class index, starts, ends)] in paint order, blocks merged and sorted.

    Segments of classes the scheme lacks (e.g. UTRs in a CDS-only scheme) are dropped.
    """
    rank_of = {name: rank for rank, name in enumerate(paint_order)}
    rank = segments["label"].map(rank_of).fillna(-1).to_numpy(dtype=np.int64)
    strand = segments["strand"].to_numpy(dtype=object)
    # unstranded features paint both rows
    on_plus, on_minus = strand != "-", strand != "+"
    both = np.r_[np.flatnonzero(on_plus), np.flatnonzero(on_minus)]
    row = np.r_[np.zeros(on_plus.sum(), np.int64), np.ones(on_minus.sum(), np.int64)]
    seqid = segments["seqid"].to_numpy(dtype=object)[both]
    start, end, rank = segments["start"].to_numpy(np.int64)[both], segments["end"].to_numpy(np.int64)[both], rank[both]
    keep = (start < end) & (rank >= 0)
    seqid, row, rank, start, end = seqid[keep], row[keep], rank[keep], start[keep], end[keep]
    if not len(start):
        return {}
    seq_code, seq_names = pd.factorize(seqid)
    order = np.lexsort((start, row, rank, seq_code))
    seq_code, row, rank, start, end = (a[order] for a in (seq_code, row, rank, start, end))
    group = (seq_code * len(paint_order) + rank) * 2 + row  # one group per (record, class, strand)
    reach = pd.Series(end).groupby(group).cummax().to_numpy()
    new = np.ones(len(start), dtype=bool)
    new[1:] = (group[1:] != group[:-1]) | (start[1:] > reach[:-1])  # touching blocks merge too
    first = np.flatnonzero(new)
    block_start, block_end, block_group = start[first], np.maximum.reduceat(end, first), group[first]
    bounds = np.flatnonzero(np.r_[True, block_group[1:] != block_group[:-1], True])
    blocks: dict[str, list[tuple]] = {}
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        i = first[lo]
        blocks.setdefault(seq_names[seq_code[i]], []).append(
            (int(row[i]), classes.index(paint_order[rank[i]]), block_start[lo:hi], block_end[lo:hi]))
    return blocks
