"""How far a gene finder's confidence tells good calls from bad: calls binned by it, against a reference.

    .venv/bin/python bench/call_confidence.py --reference genes.gff3 --prediction pred/val.gff3 \\
        --regions pipelines/regions/athaliana_chr1_val.bed [--bins 10,20,30,50,100]
    .venv/bin/python bench/call_confidence.py ... --prediction augustus.gff3 --score column --bins 0.5,0.8,0.95

``--prediction`` is a ``genoformer annotate --gene-model`` GFF3 (its mRNAs carry ``log_odds``, the
default ``--score``), or another finder's with ``--score column``: the transcript's score column (AUGUSTUS:
its posterior probability). Per bin it prints a Markdown row: the calls, the share whose CDS chain is exactly a reference
transcript's, the share with a CDS base on a reference CDS of the same strand, and the median CDS
length. Calls are those whose CDS lies inside ``--regions``; the reference's transcripts are its
non-pseudo coding ones, as the project's evaluator reads them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genoformer.genemodel.training import coding_transcripts, merged_pieces  # noqa: E402
from genoformer.genome import read_annotation  # noqa: E402
from genoformer.genome.intervals import read_bed_regions  # noqa: E402


def chain(pieces: pd.DataFrame) -> tuple[tuple[int, int], ...]:
    """A transcript's CDS pieces, sorted, with touching or overlapping ones merged (a stop_codon row beside
    or inside its CDS, as GTF and AUGUSTUS write them)."""
    return tuple(merged_pieces(pieces[["start", "end"]].to_numpy()))


def call_table(reference: pd.DataFrame, prediction: pd.DataFrame, regions, score: str = "log_odds") -> pd.DataFrame:
    """One row per predicted transcript inside ``regions``: its ``score`` (an attribute, or "column"), exact,
    on_gene, cds (bases)."""
    transcripts = prediction[prediction["type"].isin(("mRNA", "transcript"))]
    if score == "column":
        confidence = dict(zip(transcripts["id"], transcripts["score"].astype(float)))
    else:
        confidence = {row.id: float(row.attributes[score]) for row in transcripts.itertuples() if score in row.attributes}
    rows = []
    for region in regions:
        truth = coding_transcripts(reference, region.name)
        chains = {(pieces["strand"].iloc[0], chain(pieces)) for _, pieces in truth.groupby("transcript")}
        covered = {strand: np.zeros(region.end - region.start, bool) for strand in "+-"}
        for start, end, strand in zip(truth["start"], truth["end"], truth["strand"]):
            start, end = max(start - region.start, 0), min(end - region.start, region.end - region.start)
            if strand in covered and end > start:
                covered[strand][start:end] = True
        called = coding_transcripts(prediction, region.name)
        for transcript, pieces in called.groupby("transcript"):
            if pieces["start"].min() < region.start or pieces["end"].max() > region.end or transcript not in confidence:
                continue
            strand = pieces["strand"].iloc[0]
            called_chain = chain(pieces)
            on_gene = any(covered[strand][s - region.start:e - region.start].any() for s, e in called_chain)
            rows.append((confidence[transcript], (strand, called_chain) in chains, on_gene,
                         sum(e - s for s, e in called_chain)))
    return pd.DataFrame(rows, columns=["score", "exact", "on_gene", "cds"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True)
    parser.add_argument("--prediction", required=True)
    parser.add_argument("--regions", required=True)
    parser.add_argument("--score", default="log_odds",
                        help="the transcripts' attribute to bin by, or 'column' for their score column")
    parser.add_argument("--bins", default="10,20,30,50,100", help="bin edges, comma-separated")
    args = parser.parse_args(argv)
    calls = call_table(read_annotation(args.reference), read_annotation(args.prediction), read_bed_regions(args.regions),
                       args.score)
    if calls.empty:
        sys.exit(f"{args.prediction}: no called transcript with a {args.score} score inside {args.regions}")
    edges = [-np.inf, *(float(x) for x in args.bins.split(",")), np.inf]
    calls["bin"] = pd.cut(calls["score"], edges)
    print(f"| {args.score} | calls | exact | on a reference gene | median CDS |")
    print("|---|---|---|---|---|")
    for interval, group in calls.groupby("bin", observed=True):
        print(f"| {interval} | {len(group)} | {group['exact'].mean():.3f} | {group['on_gene'].mean():.3f} | "
              f"{int(group['cds'].median())} |")
    print(f"| all | {len(calls)} | {calls['exact'].mean():.3f} | {calls['on_gene'].mean():.3f} | "
          f"{int(calls['cds'].median())} |")


if __name__ == "__main__":
    main()
