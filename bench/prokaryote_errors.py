"""Where a prokaryote run's base-level errors lie, and how far either-strand MCC could rise without them.

    .venv/bin/python bench/prokaryote_errors.py --model runs/ecoli/finetune/model \\
        --regions pipelines/regions/ecoli_val.bed [--evidence none starts network]

For each evidence mode (``genoformer annotate --evidence``: ``none`` the decoder alone, ``starts`` the
start network, ``network`` the tagger too) it annotates the regions of the bundled E. coli genome (or
``--fasta`` / ``--annotation``) and prints one Markdown row per region: either-strand nucleotide MCC, the
coding bases called where the reference has none (false positives) and how many of them lie inside an
annotated pseudogene, the reference coding bases missed, and two counterfactual MCCs: the **ceiling**
(every base right except the calls inside pseudogenes, which stay called) and the MCC with pseudogene
regions left out of the count. The reference is the annotation's non-pseudo CDS, as the project's
evaluator reads it (its either-strand MCC equals the first column).

An ab initio gene finder cannot tell a recently broken gene (a frameshift, an early stop) from a working
one: its fragments read as coding and open with start codons. The ceiling says how much of the gap to a
perfect call is left once those are counted.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genoformer.annotate import annotate_genome  # noqa: E402
from genoformer.evaluate.features import is_pseudo  # noqa: E402
from genoformer.evaluate.metrics import binary_scores  # noqa: E402
from genoformer.evaluate.nucleotide import binary_counts, paint  # noqa: E402
from genoformer.genome import read_annotation, read_bed_regions  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
FASTA = DATA / "GCF_000005845.2_ASM584v2_genomic.fna.gz"
ANNOTATION = DATA / "GCF_000005845.2_ASM584v2_genomic.gff.gz"


def covered(features, region) -> np.ndarray:
    """(len(region),) bool: bases of ``region`` inside any of ``features`` (either strand)."""
    rows = features[(features["seqid"] == region.name) & (features["start"] < region.end) & (features["end"] > region.start)]
    starts = np.clip(rows["start"].to_numpy(np.int64) - region.start, 0, len(region))
    ends = np.clip(rows["end"].to_numpy(np.int64) - region.start, 0, len(region))
    return paint(starts, ends, len(region))


def mcc(truth: np.ndarray, called: np.ndarray, scored: np.ndarray | bool = True) -> float:
    """Matthews correlation over the ``scored`` bases, as the project's evaluator computes it."""
    return binary_scores(binary_counts(truth, called, np.asarray(scored)))["mcc"] or 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="prokaryote tagging model folder (with its start network)")
    parser.add_argument("--regions", required=True, help="BED file of the regions to score")
    parser.add_argument("--fasta", default=str(FASTA))
    parser.add_argument("--annotation", default=str(ANNOTATION))
    parser.add_argument("--evidence", nargs="+", default=["none", "starts", "network"])
    args = parser.parse_args(argv)
    reference = read_annotation(args.annotation)
    coding = reference[(reference["type"] == "CDS") & ~is_pseudo(reference)]
    pseudogenes = reference[reference["type"] == "pseudogene"]
    regions = read_bed_regions(args.regions)
    print("| evidence | region | either-strand MCC | false coding bases (in pseudogenes) | missed coding bases "
          "| ceiling MCC | MCC, pseudogenes left out |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for evidence in args.evidence:
            calls = annotate_genome(args.model, args.fasta, Path(scratch) / evidence, evidence=evidence,
                                    regions=args.regions).features
            called_cds = calls[calls["type"] == "CDS"]
            for region in regions:
                truth, called = covered(coding, region), covered(called_cds, region)
                pseudo = covered(pseudogenes, region)
                false = ~truth & called
                print(f"| {evidence} | {region.name}:{region.start}-{region.end} | {mcc(truth, called):.4f} "
                      f"| {int(false.sum())} ({int((false & pseudo).sum())}) | {int((truth & ~called).sum())} "
                      f"| {mcc(truth, truth | (called & pseudo)):.4f} | {mcc(truth, called, ~pseudo):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
