"""The plain (non-Lightning) subcommands of ``genoformer``; each takes parsed argparse args."""
from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
from pathlib import Path

from .errors import ConfigError, InputFileError


def _progress(total: int, desc: str):
    """A progress bar on stderr (tqdm comes with Lightning); returns an update(n) callable and closer."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="bp", unit_scale=True, file=sys.stderr, leave=False,
               disable=not sys.stderr.isatty())
    return bar.update, bar.close


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _decode_stretch(genome, iv, probs, scheme, organism: str, options: dict, statistics=None):
    """Features of one predicted stretch, in record coordinates. IDs are numbered per stretch, so a
    stretch that is not its whole record names itself in them (``chr1:1001-5000.g3``): several
    regions of one record must not share IDs."""
    from .decode import decode_record

    whole = (iv.start, iv.end) == (0, genome.lengths[iv.name])
    table = decode_record(genome.fetch(iv.name, iv.start, iv.end), probs, iv.name, scheme, organism=organism,
                          statistics=statistics, id_prefix=None if whole else f"{iv.name}:{iv.start + 1}-{iv.end}",
                          **options)
    table[["start", "end"]] += iv.start
    return table


def annotate_genome(
    model: str | Path,
    fasta: str | Path,
    out: str | Path,
    *,
    records: list[str] | None = None,
    regions: str | Path | list | None = None,
    organism: str | None = None,
    window_length: int | None = None,
    batch_size: int = 8,
    both_strands: bool = True,
    bigwig: bool = False,
    device: str = "auto",
    gene_cost: float | None = None,
    codon_weight: float | None = None,
    start_weight: float | None = None,
    closed_ends: bool | None = None,
) -> dict[str, Path]:
    """Predict, decode and export gene regions for every record (or region) of ``fasta``.

    ``regions`` is a BED path or a list of Intervals; ``out`` is a prefix for PREFIX.gff3,
    PREFIX.bed and one probability track per class and strand. ``gene_cost`` overrides the
    prokaryotic decoder's cost per gene (summed coding log-odds; lower it for a less confident
    model), ``codon_weight`` and ``start_weight`` the weights of its self-trained codon and
    start-site statistics (0: off), which are learnt from all records (or regions) together: their
    probabilities wait in a hidden folder beside the outputs (``.PREFIX.probs-*.tmp``, 48 bytes a base;
    removed at the end, left behind only by a killed run, as the outputs' temporary files are) until
    every record is predicted. ``closed_ends`` forbids genes running off a record's or region's ends
    (by default they are called, flagged partial). Returns the written paths.
    """
    import numpy as np
    import pandas as pd

    from .decode import gene_decoder_options, learn_genome_statistics, self_trains
    from .export import open_track, write_bed, write_gff3
    from .genome import Genome, Interval, LabelScheme, make_annotation, read_bed_regions
    from .model.networks import ReformerTagger, load_network
    from .predict import predict_record

    network, pretrained = load_network(model)
    if pretrained.task != ReformerTagger.task:
        raise InputFileError(model, f"is a {pretrained.task!r} model; annotate needs a tagging model")
    scheme = LabelScheme.from_dict(pretrained.head["scheme"])
    organism = organism or pretrained.head.get("organism", "prokaryote")
    decoder_options = gene_decoder_options(organism, pretrained.head.get("loss"), gene_cost=gene_cost,
                                           codon_weight=codon_weight, start_weight=start_weight,
                                           closed_ends=closed_ends)
    window = window_length or int(pretrained.head.get("window_length") or 0)
    min_window = pretrained.tokenizer.k
    if window < max(min_window, 1):
        raise ConfigError(f"window length {window} is below the model's minimum ({min_window} bases); set --window-length")
    dev = _device(device)
    network.to(dev)
    genome = Genome(fasta)
    if regions is not None:
        stretches = regions if isinstance(regions, list) else read_bed_regions(regions)
        for iv in stretches:
            genome.validate_interval(iv.name, iv.start, iv.end)
    else:
        names = records if records else genome.names
        for name in names:
            if name not in genome.lengths:
                raise InputFileError(fasta, f"no record named {name!r} (records: {', '.join(genome.names[:5])}...)")
        stretches = [Interval(name, 0, genome.lengths[name]) for name in names]

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {"gff3": out.with_name(out.name + ".gff3"), "bed": out.with_name(out.name + ".bed")}
    suffix = ".bw" if bigwig else ".bedgraph"
    tracked = [c for c in scheme.classes[1:]]
    lengths = {iv.name: genome.lengths[iv.name] for iv in stretches}
    update, close = _progress(sum(len(iv) for iv in stretches) * (2 if both_strands else 1), "annotate")
    tables = []
    with contextlib.ExitStack() as stack:
        writers = {}
        for cls in tracked:
            for strand, sign in (("plus", "+"), ("minus", "-")):
                key = f"{cls}.{strand}"
                paths[key] = out.with_name(f"{out.name}.{key}{suffix}")
                writers[key] = stack.enter_context(open_track(
                    paths[key], f"{out.name} {cls} ({sign})", sequence_lengths=lengths if bigwig else None,
                    description=f"genoformer P({cls}) on the {sign} strand"))
        # A prokaryote's decoder self-trains on the genes it calls: with several records (contigs,
        # plasmids) it learns from all of them, so each record's probabilities wait on disk for that.
        pooled = len(stretches) > 1 and self_trains(scheme, organism)
        scratch = None
        if pooled:
            # Beside the outputs, on the disk chosen for them (a small /tmp would not hold 48 bytes a base of
            # a large draft genome), hidden and named like the outputs' own temporary files.
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix=f".{out.name}.probs-", suffix=".tmp", dir=out.parent)))
        waiting = []
        for i, iv in enumerate(stretches):
            if len(iv) < pretrained.tokenizer.k:
                print(f"genoformer: {fasta}: record {iv.name!r} [{iv.start}, {iv.end}) is shorter than one "
                      f"{pretrained.tokenizer.k}-mer token; no predictions for it", file=sys.stderr)
                continue
            probs = predict_record(network, genome, iv.name, pretrained.tokenizer, scheme.n_classes,
                                   window_length=window, start=iv.start, end=iv.end, batch_size=batch_size,
                                   both_strands=both_strands, device=dev, progress=update)
            if pooled:
                np.save(scratch / f"{i}.npy", probs)
                waiting.append((iv, scratch / f"{i}.npy"))
            else:
                tables.append(_decode_stretch(genome, iv, probs, scheme, organism, decoder_options))
            for c, cls in enumerate(scheme.classes):
                if cls not in tracked:
                    continue
                for row, strand in enumerate(("plus", "minus")):
                    track = probs[row, c]
                    if bigwig or iv.start or iv.end != genome.lengths[iv.name]:
                        # Region runs: place the stretch on its record, zeros elsewhere.
                        full = np.zeros(genome.lengths[iv.name], dtype=np.float32)
                        full[iv.start : iv.end] = track
                        track = full
                    writers[f"{cls}.{strand}"].add(iv.name, track)
        close()
        if waiting:
            def records():
                return ((genome.fetch(iv.name, iv.start, iv.end), np.load(path, mmap_mode="r")) for iv, path in waiting)

            statistics = learn_genome_statistics(records, scheme, organism, **decoder_options)
            tables += [_decode_stretch(genome, iv, np.load(path), scheme, organism, decoder_options, statistics)
                       for iv, path in waiting]
        predictions = pd.concat(tables, ignore_index=True) if tables else make_annotation(
            {"seqid": [], "type": [], "start": [], "end": []})
        write_gff3(predictions, paths["gff3"], lengths)
        write_bed(predictions, paths["bed"], sequence_lengths=lengths,
                  types=["gene", "ncRNA"] if scheme.kind == "gene_structure" else None)
    return paths


def annotate(args: argparse.Namespace) -> int:
    paths = annotate_genome(
        args.model, args.fasta, args.out, records=args.records, regions=args.regions, organism=args.organism,
        window_length=args.window_length, batch_size=args.batch_size, both_strands=not args.single_strand,
        bigwig=args.bigwig, device=args.device, gene_cost=args.gene_cost,
        codon_weight=args.codon_weight, start_weight=args.start_weight, closed_ends=args.closed_ends or None,
    )
    for path in paths.values():
        print(path)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate as score, format_table, write_json
    from .genome import Genome, read_annotation, read_bed_regions

    reference = read_annotation(args.reference)
    prediction = read_annotation(args.prediction)
    if args.fasta:
        lengths = Genome(args.fasta).lengths
    else:
        both = __import__("pandas").concat([reference, prediction])
        lengths = both.groupby("seqid")["end"].max().astype(int).to_dict()
    regions = read_bed_regions(args.regions) if args.regions else None
    results = score(reference, prediction, lengths=lengths, regions=regions,
                    prokaryote=args.organism == "prokaryote")
    print(format_table(results))
    if args.json:
        write_json(results, args.json)
    return 0


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
