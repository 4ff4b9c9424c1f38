"""The plain (non-Lightning) subcommands of ``genoformer``; each takes parsed argparse args."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .errors import InputFileError


def annotate(args: argparse.Namespace) -> int:
    from .annotate import annotate_genome

    result = annotate_genome(
        args.model, args.fasta, args.out, evidence=args.evidence, gene_model=args.gene_model, records=args.records, regions=args.regions,
        organism=args.organism, window_length=args.window_length, batch_size=args.batch_size,
        both_strands=not args.single_strand, bigwig=args.bigwig, device=args.device, gene_cost=args.gene_cost,
        codon_weight=args.codon_weight, start_weight=args.start_weight, closed_ends=args.closed_ends or None,
        evidence_weights=args.evidence_weights, model_starts=not args.self_trained_starts,
    )
    for path in result.paths.values():
        print(path)
    return 0


def gene_model(args: argparse.Namespace) -> int:
    from .annotate import genome_stretches
    from .genemodel import GeneModel
    from .genemodel.fitting import check_validation_regions, fit_pseudogene_filter, fitted_decoder
    from .genome import Genome, read_annotation

    genome = Genome(args.fasta)
    regions = genome_stretches(genome, args.fasta, regions=args.regions)
    annotation = read_annotation(args.annotation)
    validation = genome_stretches(genome, args.fasta, regions=args.val_regions) if args.val_regions else None
    if validation:
        check_validation_regions(annotation, validation)  # before the minutes of learning

    def progress(line: str) -> None:
        print(line, file=sys.stderr)

    model = GeneModel.fit(genome, annotation, regions, order=args.order, site_network_steps=args.site_network_steps,
                          progress=progress)
    model = fit_pseudogene_filter(model, genome, annotation, regions, share=args.pseudogene_filter, progress=progress)
    if validation:
        model = fitted_decoder(model, genome, annotation, validation, progress=progress)
    print(model.save(args.out))
    print(", ".join(f"{key} {value}" for key, value in model.report.items()), file=sys.stderr)
    return 0


def combine(args: argparse.Namespace) -> int:
    from .combine import fit_evidence

    fit = fit_evidence(args.model, args.gene_model, args.fasta, args.annotation, args.regions, out=args.out,
                       window_length=args.window_length, batch_size=args.batch_size, device=args.device,
                       progress=lambda line: print(line, file=sys.stderr))
    print(fit.path)
    print("weights " + ", ".join(f"{k} {v:g}" for k, v in vars(fit.weights).items()) + "; validation "
          + ", ".join(f"{k} {v:.4f}" for k, v in fit.scores.items()), file=sys.stderr)
    return 0


def start_network(args: argparse.Namespace) -> int:
    from .combine import add_start_network
    from .decode.start_network import STEM

    network = add_start_network(args.model, [(args.fasta, args.annotation, args.train_regions, args.val_regions)],
                                steps=args.steps, progress=lambda line: print(line, file=sys.stderr))
    print(Path(args.model) / f"{STEM}.json")
    print(f"weight {network.weight:g}; " + ", ".join(f"{key} {value}" for key, value in network.site_model.report.items()),
          file=sys.stderr)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from .evaluate import evaluate as score, format_table, write_json
    from .genome import Genome, check_against_genome, read_annotation, read_bed_regions

    reference = read_annotation(args.reference)
    prediction = read_annotation(args.prediction)
    declared = {**prediction.attrs.get("sequence_lengths", {}), **reference.attrs.get("sequence_lengths", {})}
    if args.fasta:
        lengths = Genome(args.fasta).lengths
        for table, path in ((reference, args.reference), (prediction, args.prediction)):
            check_against_genome(table, lengths, path)  # first: it names the line of a feature off the genome
    else:
        # Declared record lengths (##sequence-region) where present, else each record's last feature end.
        ends = pd.concat([reference, prediction]).groupby("seqid")["end"].max().astype(int).to_dict()
        lengths = {**ends, **declared}
    _check_shared_records(args, reference, prediction)
    if not reference["type"].isin(["CDS", "stop_codon"]).any():
        kinds = reference["type"].value_counts()
        read = ", ".join(f"{n} {kind!r}" for kind, n in kinds.head(5).items()) or "no features"
        how = " (a BED line's name column is its type)" if reference.attrs.get("format") == "bed" else ""
        raise InputFileError(args.reference, f"no CDS feature, so no base or gene of the reference counts: read {read}"
                                             f"{how}; the scores compare CDS features (BED: name 'CDS', or BED12)")
    regions = read_bed_regions(args.regions) if args.regions else None
    results = score(reference, prediction, lengths=lengths, regions=regions,
                    prokaryote=args.organism == "prokaryote")
    print(format_table(results))
    if args.json:
        write_json(results, args.json)
    return 0


def _check_shared_records(args: argparse.Namespace, reference, prediction) -> None:
    """Refuse a prediction on other records than the reference: every score would be 0 without a word."""
    names = [set(table["seqid"].astype(str)) | set(table.attrs.get("sequence_lengths", {}))
             for table in (reference, prediction)]
    if all(names) and not names[0] & names[1]:
        listed = ["', '".join(sorted(side)[:3]) + ("', ..." if len(side) > 3 else "'") for side in names]
        raise InputFileError(args.prediction, f"no record name in common with the reference {args.reference} "
                                              f"(reference: '{listed[0]}; prediction: '{listed[1]}), so nothing "
                                              "could match; rename one side's records")


def export(args: argparse.Namespace) -> int:
    import torch

    path = Path(args.checkpoint)
    if not path.is_file():
        raise InputFileError(path, "checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or corrupt file
        refused = re.search(r"GLOBAL [\w.]+", str(exc))  # the call the file asked to make, if any
        detail = refused.group(0) if refused else type(exc).__name__
        raise InputFileError(path, "cannot load checkpoint safely: not a checkpoint, or it holds objects other than "
                                   f"tensors and plain values, which genoformer refuses to unpickle ({detail})") from None
    from .tasks import TASKS

    name = checkpoint.get("genoformer_task")
    if name not in TASKS:
        raise InputFileError(path, "not a genoformer training checkpoint (no task recorded)")
    task = TASKS[name](**TASKS[name].init_args(checkpoint["hyper_parameters"]))
    task.load_state_dict(checkpoint["state_dict"])
    task.on_load_checkpoint(checkpoint)
    # The data module's settings travel in the checkpoint too: the window the model was trained on.
    window_length = checkpoint.get("datamodule_hyper_parameters", {}).get("window_length")
    print(task.export(args.out, window_length=window_length, overwrite=args.overwrite))
    return 0


def plan(args: argparse.Namespace) -> int:
    from .model.memory import plan_from_cli

    print(plan_from_cli(args.config, args.length, batch_size=args.batch_size, precision=args.precision,
                        inference=args.inference))
    return 0


def pipeline(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    report = run_pipeline(args.config, args.out, stages=args.stages, overrides=args.overrides)
    print(report)
    return 0
