"""Evaluate predicted gene structures against a reference annotation, as gene-finder papers do.

Levels (Burset & Guigo 1996 definitions; sensitivity = recall, precision = specificity in their
older wording):

- nucleotide, coding (strand-aware): each base on each strand is coding when a (non-pseudo) CDS
  on that strand covers it; TP/FP/FN/TN are counted over both strands of every evaluated base.
  ``coding_unstranded`` is the same with a base coding when a CDS on either strand covers it.
- nucleotide, per class: when both sides carry gene-structure classes besides CDS (UTR,
  intron, ncRNA), per-base label tracks (:class:`genoformer.genome.labels.LabelIndex`,
  gene-structure scheme) are compared class by class on both strands.
- exon: unique CDS parts (record, strand, start, end); a part matches when a part on the
  other side has both boundaries and the strand equal.
- gene: a reference gene is found when the CDS parts of at least one of its transcripts are
  exactly the CDS parts of one predicted transcript (same chain, same strand); a predicted
  gene is correct likewise. Pseudogenes and genes without CDS are not genes here.
- gene_stop (prokaryotes): as gene, but a transcript matches when the 3' end of its CDS on its
  strand (the stop codon) is equal: how prokaryotic gene finders are usually scored, since
  start codons are uncertain.

``regions`` restricts everything: only bases inside the (merged) regions are counted, and only
exons and genes (span of all the gene's CDS parts) lying wholly inside one merged region, on
either side. Ratios with a zero denominator are ``None``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from genoformer.errors import RegionError
from genoformer.evaluate.features import coding_parts, exon_counts, gene_counts, is_pseudo, transcript_keys
from genoformer.evaluate.nucleotide import binary_counts, coding_track, confusion, paint
from genoformer.files import atomic_write
from genoformer.genome.annotation_table import check_against_genome
from genoformer.genome.labels import LabelIndex, LabelScheme

# Share of reference coding transcripts with several CDS parts below which a genome counts as
# prokaryotic (E. coli: a handful of programmed frameshifts among 4,300 genes).
PROKARYOTE_MULTIPART_FRACTION = 0.01


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def binary_scores(counts: np.ndarray) -> dict:
    """Precision, recall, F1 and Matthews correlation from [tp, fp, fn, tn]."""
    tp, fp, fn, tn = (int(c) for c in counts)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    denominator = math.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": precision, "recall": recall, "f1": _f1(precision, recall),
        "mcc": _ratio(tp * tn - fp * fn, denominator),
    }


def match_scores(counts: dict) -> dict:
    """Sensitivity, precision and F1 from matched/total counts on each side."""
    sensitivity = _ratio(counts["matched_reference"], counts["reference"])
    precision = _ratio(counts["matched_predicted"], counts["predicted"])
    return {**counts, "sensitivity": sensitivity, "precision": precision, "f1": _f1(precision, sensitivity)}


def merge_regions(regions: Iterable, lengths: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Regions (anything with name/start/end) as record -> sorted disjoint (n, 2) [start, end) arrays.

    Overlapping or touching regions merge; empty ones are dropped; a region on an unknown record
    or past its record's end is an error.
    """
    frame = pd.DataFrame([(r.name, int(r.start), int(r.end)) for r in regions], columns=["name", "start", "end"])
    merged = {}
    for name, spans in frame[frame["end"] > frame["start"]].groupby("name", sort=False):
        if name not in lengths:
            raise RegionError(f"region on record {name!r}, which is not among the sequences")
        spans = spans.sort_values("start")
        starts, ends = spans["start"].to_numpy(), spans["end"].to_numpy()
        if (starts < 0).any() or (ends > lengths[name]).any():
            raise RegionError(f"a region on {name!r} lies outside the record (length {lengths[name]})")
        reach = np.maximum.accumulate(ends)
        # A region starting past everything before it opens a new merged block.
        first = np.flatnonzero(np.concatenate(([True], starts[1:] > reach[:-1])))
        merged[name] = np.stack([starts[first], np.maximum.reduceat(ends, first)], axis=1)
    return merged


def _check_records(table: pd.DataFrame, lengths: Mapping[str, int], side: str) -> None:
    if table.attrs.get("path"):  # read from a file: name it and the offending line
        check_against_genome(table, lengths, table.attrs["path"])
    unknown = ~table["seqid"].isin(list(lengths))
    if unknown.any():
        names = sorted(table.loc[unknown, "seqid"].astype(str).unique())
        raise RegionError(f"{side}: features on records not among the sequences: {', '.join(map(repr, names[:5]))}")
    beyond = table["end"].to_numpy() > table["seqid"].map(dict(lengths)).to_numpy()
    if beyond.any():
        row = table[beyond].iloc[0]
        raise RegionError(
            f"{side}: {row['type']} {row['seqid']}:{row['start']}-{row['end']} ends beyond its record "
            f"(length {lengths[row['seqid']]})"
        )


def _is_prokaryote(parts: pd.DataFrame) -> bool:
    per_transcript = parts.groupby("transcript").size()
    return bool(len(per_transcript)) and float((per_transcript > 1).mean()) < PROKARYOTE_MULTIPART_FRACTION


def _nucleotide(reference, prediction, ref_parts, pred_parts, lengths, regions) -> dict:
    scheme = LabelScheme.gene_structure(ncrna=True)
    n_classes = len(scheme.classes)
    stranded = np.zeros(4, dtype=np.int64)
    unstranded = np.zeros(4, dtype=np.int64)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    ref_by, pred_by = dict(tuple(ref_parts.groupby("seqid"))), dict(tuple(pred_parts.groupby("seqid")))
    ref_labels, pred_labels = LabelIndex(reference, scheme), LabelIndex(prediction, scheme)
    empty = ref_parts.iloc[:0]
    for name, length in lengths.items():
        if regions is None:
            mask = np.ones(length, dtype=bool)
        elif name in regions:
            mask = paint(regions[name][:, 0], regions[name][:, 1], length)
        else:
            continue
        ref = coding_track(ref_by.get(name, empty), length)
        pred = coding_track(pred_by.get(name, empty), length)
        stranded += binary_counts(ref, pred, mask)
        unstranded += binary_counts(ref.any(axis=0), pred.any(axis=0), mask)
        matrix += confusion(ref_labels.track(name, 0, length), pred_labels.track(name, 0, length), mask, n_classes)
    result = {"coding": binary_scores(stranded), "coding_unstranded": binary_scores(unstranded)}
    # Per-class scores only when both sides describe gene structure beyond CDS (a Prodigal-style
    # CDS-only prediction would otherwise score 0 on every UTR/intron class it never claims to call).
    structure = [i for i, c in enumerate(scheme.classes) if i != 0 and c != "CDS"]
    if matrix[structure, :].sum() and matrix[:, structure].sum():
        total = matrix.sum()
        classes = {}
        for i, label in enumerate(scheme.classes):
            tp, ref_n, pred_n = matrix[i, i], matrix[i, :].sum(), matrix[:, i].sum()
            if ref_n or pred_n:
                classes[label] = binary_scores(np.array([tp, pred_n - tp, ref_n - tp, total - ref_n - pred_n + tp]))
        result["classes"] = classes
        result["accuracy"] = _ratio(np.trace(matrix), total)
    return result


def evaluate(
    reference: pd.DataFrame,
    prediction: pd.DataFrame,
    *,
    lengths: Mapping[str, int],
    regions: Iterable | None = None,
    prokaryote: bool | None = None,
) -> dict:
    """Compare two annotation tables (columns of ``read_annotation``); returns a JSON-able nested dict.

    ``lengths`` gives every record to score (bases outside all CDS are true negatives);
    ``regions`` (Interval-like: name, start, end; strand ignored) restricts the scoring to
    those bases and to exons/genes wholly inside them. ``prokaryote`` adds stop-codon-exact
    gene matching; by default it is decided from the reference (fewer than 1% of its coding
    transcripts have several CDS parts).
    """
    lengths = {str(name): int(length) for name, length in lengths.items()}
    _check_records(reference, lengths, "reference")
    _check_records(prediction, lengths, "prediction")
    merged = None if regions is None else merge_regions(regions, lengths)
    reference = reference[~is_pseudo(reference)].reset_index(drop=True)
    prediction = prediction[~is_pseudo(prediction)].reset_index(drop=True)
    ref_parts, pred_parts = coding_parts(reference), coding_parts(prediction)
    if prokaryote is None:
        prokaryote = _is_prokaryote(ref_parts)
    ref_tx, pred_tx = transcript_keys(ref_parts, merged), transcript_keys(pred_parts, merged)

    evaluated = lengths if merged is None else {n: int((s[:, 1] - s[:, 0]).sum()) for n, s in merged.items()}
    results = {
        "settings": {
            "prokaryote": prokaryote,
            "records": len(evaluated),
            "bases": int(sum(evaluated.values())),
            "regions": None if merged is None else int(sum(len(s) for s in merged.values())),
        },
        "nucleotide": _nucleotide(reference, prediction, ref_parts, pred_parts, lengths, merged),
        "exon": match_scores(exon_counts(ref_parts, pred_parts, merged)),
        "gene": match_scores(gene_counts(ref_tx, pred_tx, "chain")),
    }
    if prokaryote:
        results["gene_stop"] = match_scores(gene_counts(ref_tx, pred_tx, "stop"))
    return results


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_table(results: dict) -> str:
    """The results as one Markdown table (sensitivity = recall)."""
    lines = [
        "| level | sensitivity | precision | F1 | MCC | reference | predicted |",
        "|---|---|---|---|---|---|---|",
    ]
    nucleotide = results["nucleotide"]
    rows = [("nucleotide coding (strand-aware)", nucleotide["coding"]),
            ("nucleotide coding (either strand)", nucleotide["coding_unstranded"])]
    rows += [(f"nucleotide {label}", scores) for label, scores in nucleotide.get("classes", {}).items()]
    for label, scores in rows:
        lines.append(
            f"| {label} | {_cell(scores['recall'])} | {_cell(scores['precision'])} | {_cell(scores['f1'])} | "
            f"{_cell(scores['mcc'])} | {scores['tp'] + scores['fn']} bp | {scores['tp'] + scores['fp']} bp |"
        )
    levels = (("exon", "exon (CDS, exact)"), ("gene", "gene (all CDS exons exact)"),
              ("gene_stop", "gene (stop codon exact)"))
    for key, label in levels:
        if key in results:
            scores = results[key]
            lines.append(
                f"| {label} | {_cell(scores['sensitivity'])} | {_cell(scores['precision'])} | {_cell(scores['f1'])} | "
                f"| {scores['reference']} | {scores['predicted']} |"
            )
    return "\n".join(lines) + "\n"


def write_json(results: dict, path: str | os.PathLike) -> Path:
    """Write the results as indented JSON, atomically."""
    with atomic_write(path) as handle:
        json.dump(results, handle, indent=2)
        handle.write("\n")
    return Path(path)
