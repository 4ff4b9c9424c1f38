"""Train genoformer's gene model on FASTA + GFF3/GTF training regions and score it alone (no network)
on validation regions with genoformer's evaluator, printing one Markdown row per decoding variant.

    python bench/gene_model.py --fasta ../shared/data/arabidopsis_chr1/TAIR10.1_chr1.fna.gz \\
        --annotation ../shared/data/arabidopsis_chr1/TAIR10.1_chr1.gff.gz \\
        --train NC_003070.9:0-24000000 --validate NC_003070.9:24000000-27000000 \\
        --variant "" --variant "coding_weight=1.2" --model runs/gene_model

Regions are ``name:start-end`` (0-based half-open) or BED files. ``--variant`` is a comma-separated list
of ``DecodeSettings`` fields (``""``: the defaults); ``--order`` the Markov order.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genoformer.evaluate import evaluate  # noqa: E402
from genoformer.genemodel import DecodeSettings, GeneModel, decode_with_gene_model  # noqa: E402
from genoformer.genome import Genome, Interval, read_annotation, read_bed_regions  # noqa: E402


def regions(text: str) -> list[Interval]:
    if os.path.exists(text):
        return read_bed_regions(text)
    name, _, span = text.rpartition(":")
    start, end = (int(x.replace(",", "")) for x in span.split("-"))
    return [Interval(name, start, end)]


def settings(text: str) -> DecodeSettings:
    types = {f.name: f.type for f in fields(DecodeSettings)}
    values = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"unknown setting {key!r}; known: {sorted(types)}")
        values[key] = float(value) if "." in value or "e" in value else int(value)
    return DecodeSettings(**values)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fasta", required=True)
    parser.add_argument("--annotation", required=True)
    parser.add_argument("--train", required=True, action="append", help="region or BED (repeatable)")
    parser.add_argument("--validate", required=True, action="append", help="region or BED (repeatable)")
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--variant", action="append", default=None, help="DecodeSettings fields, k=v,k=v")
    parser.add_argument("--model", help="folder to save the trained gene model in")
    args = parser.parse_args(argv)

    genome, annotation = Genome(args.fasta), read_annotation(args.annotation)
    train = [r for text in args.train for r in regions(text)]
    validate = [r for text in args.validate for r in regions(text)]
    began = time.process_time()
    model = GeneModel.fit(genome, annotation, train, order=args.order)
    fit_seconds = time.process_time() - began
    train_mb = sum(len(r) for r in train) / 1e6
    print(f"trained on {train_mb:.1f} Mb in {fit_seconds:.1f} s CPU ({train_mb / fit_seconds * 60:.0f} Mb/min); "
          f"{model.report}")
    if args.model:
        print("saved", model.save(args.model))
    valid_mb = sum(len(r) for r in validate) / 1e6
    print("\n| variant | order | nucleotide CDS F1 | CDS exon F1 | gene F1 | genes called | decode Mb/min (both strands) |")
    print("|---|---|---|---|---|---|---|")
    for text in args.variant or [""]:
        began = time.process_time()
        prediction = decode_with_gene_model(genome, model, validate, settings(text))
        seconds = time.process_time() - began
        scores = evaluate(annotation, prediction, lengths=genome.lengths, regions=validate)
        print(f"| {text or 'defaults'} | {args.order} | {scores['nucleotide']['coding']['f1']:.3f} | "
              f"{scores['exon']['f1']:.3f} | {scores['gene']['f1']:.3f} | {int((prediction['type'] == 'gene').sum())} | "
              f"{valid_mb / seconds * 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()
