"""The ``genoformer`` command.

Training subcommands (``fit``, ``validate``, ``test``, ``predict``) are LightningCLI: every model,
data and trainer option can be set from a YAML file (``--config``) or a dotted flag. The others
(``annotate``, ``gene-model``, ``combine``, ``start-network``, ``evaluate``, ``export``, ``plan``,
``pipeline``) are plain argparse commands.
Errors in the user's input print one line on stderr and exit with status 2 (``--debug`` shows the
traceback); results go to files, logs and progress to stderr.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import traceback
import warnings
from pathlib import Path

from . import __version__
from .errors import ConfigError, GenoformerError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

EXAMPLES = {
    "annotate": "genoformer annotate --model runs/default/tagger --fasta genome.fa --out runs/pred/genome",
    "gene-model": "genoformer gene-model --fasta genome.fa --annotation genes.gff3 --regions train.bed --out models/genes",
    "combine": "genoformer combine --model runs/x/finetune/model --gene-model models/genes --fasta genome.fa "
               "--annotation genes.gff3 --regions val.bed",
    "start-network": "genoformer start-network --model runs/x/finetune/model --fasta genome.fa --annotation genes.gff3 "
                     "--train-regions train.bed --val-regions val.bed",
    "evaluate": "genoformer evaluate --reference ref.gff3 --prediction pred.gff3 --regions held_out.bed --json metrics.json",
    "export": "genoformer export --checkpoint runs/pretrain/last.ckpt --out models/pretrained",
    "plan": "genoformer plan --config pipelines/pretrain_ecoli.yaml --length 1048576",
    "pipeline": "genoformer pipeline --config pipelines/default.yaml --out runs/ecoli",
}


# Options naming the user's files and folders: an OSError about one of them (or a file beside or
# inside it) is the user's to fix and prints as one line; any other OSError is a bug, a traceback.
PATH_OPTIONS = ("model", "gene_model", "annotation", "fasta", "out", "regions", "reference", "prediction", "json", "checkpoint", "config",
                "evidence_weights", "train_regions", "val_regions")


def _whole_number(text: str, minimum: int, wanted: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is not {wanted}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _whole_number(text, 1, "a positive number (1 or more)")


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    return _whole_number(text, 0, "0 or more")


def share(text: str) -> float:
    """argparse type: a number from 0 up to (not including) 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share from 0 up to 1")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of 0 or more")
    return value


def device_name(text: str) -> str:
    """argparse type: auto, cpu, cuda, cuda:N or mps, and present on this machine."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if text in ("auto", "cpu"):
        return text
    import torch

    if text == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError("mps is not available to this torch; use cpu or auto")
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.partition(":")[2] or 0)
        if index >= count:
            raise argparse.ArgumentTypeError(f"{text} asked for, but this torch sees {count} CUDA device(s); "
                                             "use cpu or auto")
    return text


def output_path(text: str) -> str:
    """argparse type: a non-empty file name or prefix."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name; give a file name or prefix")
    return text


def _about_user_paths(exc: OSError, args: argparse.Namespace | None) -> bool:
    """Whether ``exc`` concerns a path the user named or chose (that path, a file inside or beside it
    sharing its name, such as PREFIX.gff3 or its hidden temporary file, or a folder above it; the
    cache folder, $GENOFORMER_CACHE, whose disk may be full too)."""
    from .files import cache_root

    given = [Path(os.path.abspath(value)) for name in PATH_OPTIONS
             if isinstance(value := getattr(args, name, None), str) and value]
    given.append(Path(os.path.abspath(cache_root())))
    for failed in (exc.filename, exc.filename2):
        if failed is None or isinstance(failed, int):
            continue
        failed = Path(os.path.abspath(os.fsdecode(failed)))
        for path in given:
            if failed == path or path in failed.parents or failed in path.parents or (
                    failed.parent == path.parent and failed.name.lstrip(".").startswith(path.name)):
                return True
    return False


def lightning_main(argv: list[str] | None) -> None:
    """LightningCLI on ``argv`` (None: it reads sys.argv itself, as it prefers)."""
    from jsonargparse import ArgumentError, lazy_instance
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelSummary
    from pytorch_lightning.cli import LightningCLI
    from pytorch_lightning.loggers import CSVLogger

    from .tasks import GenomeDataModule, ReformerTask
    from .tasks.callbacks import AtomicCheckpointIO

    class GenoformerCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            # The model owns the tokenizer (a pretrained folder fixes it); the data module is handed it.
            parser.link_arguments("model.tokenizer", "data.tokenizer", apply_on="instantiate")

    try:
        GenoformerCLI(
            ReformerTask,
            GenomeDataModule,
            subclass_mode_model=True,
            args=argv,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": lazy_instance(CSVLogger, save_dir="runs"),
                "callbacks": [LearningRateMonitor(logging_interval="step"), ModelSummary(max_depth=2)],
                "plugins": [AtomicCheckpointIO()],
            },
            parser_kwargs={"exit_on_error": False,
                           "description": "Train or evaluate a genoformer model (LightningCLI). "
                                          "Example: genoformer fit --config pipelines/pretrain_ecoli.yaml"},
        )
    except ArgumentError as exc:
        raise ConfigError(" ".join(str(exc).split())) from None
    except ValueError as exc:
        # jsonargparse wraps an error raised while building the model or data module (a bad setting)
        # in a ValueError listing every type it tried: report the setting's own error.
        cause = exc
        while cause is not None and not isinstance(cause, GenoformerError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def _genome_and_annotation(p: argparse.ArgumentParser, annotation_help: str) -> None:
    """The genome and annotation options of the commands that learn from (or score against) an annotation."""
    p.add_argument("--fasta", required=True, help="genome FASTA (plain, gzip or BGZF)")
    p.add_argument("--annotation", required=True, help=annotation_help)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genoformer",
        description="Long-context genomic sequence modelling with a Reformer.",
        epilog="Training: genoformer {fit,validate,test,predict} --help (LightningCLI).",
    )
    parser.add_argument("--version", action="version", version=f"genoformer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"{name} with LightningCLI (see genoformer {name} --help)", add_help=False)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=f"example: {EXAMPLES[name]}",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: all)")
        return p

    p = command("annotate", "predict gene regions over whole FASTA files; write GFF3, BED and probability tracks")
    p.add_argument("--model", default=None, help="model folder written by training (config.json, model.safetensors, "
                                             "tokenizer.json); optional with --evidence none, or with a --gene-model "
                                             "that has a site network (then its evidence alone is weighed in)")
    p.add_argument("--evidence", choices=["network", "starts", "none"], default="network",
                   help="network: the model folder's networks (the tagger, and a prokaryote start network if it has "
                        "one); starts: its start network alone, the tagger not run (fast); none: no network; every base "
                        "gets probabilities that favour none of the decoder's choices "
                        "(prokaryotes: P(CDS) 0.5): the gene decoder alone, the ablation a model's scores compare with. Scheme, organism and gene cost come from --model "
                        "if given, else the default classes and decoder options of --organism")
    p.add_argument("--gene-model", default=None,
                   help="folder of a gene model learned by `genoformer gene-model` (eukaryotes): call genes with it, "
                        "alone (--evidence none: a classical gene finder) or with --model's per-base probabilities "
                        "weighed into its scores by the weights `genoformer combine` fitted")
    p.add_argument("--evidence-weights", default=None,
                   help="with --gene-model and a network: the weights file to use (default: the gene model folder's "
                        "evidence_weights.json, written by `genoformer combine`)")
    p.add_argument("--fasta", required=True, help="FASTA file (plain, gzip or BGZF)")
    p.add_argument("--out", required=True, type=output_path, help="output prefix: PREFIX.gff3, PREFIX.bed, PREFIX.<class>.bedgraph")
    p.add_argument("--records", nargs="*", default=None, help="only these records")
    p.add_argument("--regions", default=None, help="BED file: only these regions")
    p.add_argument("--organism", choices=["prokaryote", "eukaryote"], default=None, help="gene model rules (default: the model's)")
    p.add_argument("--window-length", type=positive_int, default=None, help="bases per window (default: the model's training window)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass")
    p.add_argument("--single-strand", action="store_true", help="do not average with the reverse-complement prediction")
    p.add_argument("--bigwig", action="store_true", help="write the probability tracks as bigWig instead of bedGraph (needs pyBigWig)")
    p.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--gene-cost", type=non_negative_float, default=None,
                   help="prokaryotes: cost per called gene in summed coding log-odds (default: the model's, "
                        "from its fine-tuning loss: 400 for cross-entropy, 300 for class-weighted; lower it when a "
                        "less trained model misses genes)")
    p.add_argument("--codon-weight", type=non_negative_float, default=None,
                   help="prokaryotes: weight of the codon statistics the decoder learns from its own first-pass "
                        "calls on this genome (default 10; 0 turns the second pass off)")
    p.add_argument("--start-weight", type=non_negative_float, default=None,
                   help="prokaryotes: weight of the start-site statistics the decoder learns from its own calls "
                        "on this genome (default 60; 0 keeps the fixed start-codon and Shine-Dalgarno scores)")
    p.add_argument("--closed-ends", action="store_true",
                   help="prokaryotes: no genes running off a record's (or region's) ends, for complete sequences "
                        "(Prodigal's -c; by default such genes are called and flagged partial)")
    p.add_argument("--self-trained-starts", action="store_true",
                   help="prokaryotes: ignore the model folder's start model (where its training genome's genes "
                        "start) and its start network, and learn starts from this genome's own calls, for a genome "
                        "other than the model's")

    p = command("gene-model", "learn a eukaryotic gene model (signals, lengths, coding statistics) from an annotation")
    _genome_and_annotation(p, "its annotation (GFF3, GTF or GenBank): coding genes to learn from")
    p.add_argument("--regions", default=None, help="BED file: learn only from genes wholly inside these (default: all records)")
    p.add_argument("--order", type=positive_int, default=5, help="order of the coding and non-coding Markov chains (1-8)")
    p.add_argument("--site-network-steps", type=non_negative_int, default=0,
                   help="also train a splice-site network for this many steps (0: none; 1500: "
                        "~9 minutes on 2 CPU cores), whose evidence `genoformer combine` weighs in")
    p.add_argument("--pseudogene-filter", type=share, default=0.005, metavar="SHARE",
                   help="learn to drop calls that look like the annotation's pseudogenes and transposable-element genes, "
                        "giving up this share of the training genes' calls (default 0.005, chosen on A. thaliana; 0: no "
                        "filter; about as long again as learning the model)")
    p.add_argument("--val-regions", default=None,
                   help="BED file: fit the decoder's settings (gene and intron penalties, coding and signal weights) "
                        "on the genes inside these, not the training regions (default: settings chosen on A. thaliana; "
                        "a few seconds a Mb per trial, about 30 trials)")
    p.add_argument("--out", required=True, type=output_path, help="folder to write gene_model.json in")

    p = command("combine", "fit how much a tagging model's and a site network's evidence count in a gene model's "
                           "scores, on validation regions")
    p.add_argument("--model", default=None, help="tagging model folder (gene-structure classes); omit to weigh in only "
                                                 "the gene model's site network")
    p.add_argument("--gene-model", required=True, help="gene model folder written by `genoformer gene-model`")
    _genome_and_annotation(p, "its reference annotation (GFF3, GTF or GenBank), to score against")
    p.add_argument("--regions", required=True, help="BED file: the validation regions to fit on (not the training or test ones)")
    p.add_argument("--out", default=None, type=output_path,
                   help="weights file to write (default: GENE_MODEL/evidence_weights.json, where annotate looks)")
    p.add_argument("--window-length", type=positive_int, default=None, help="bases per window (default: the model's training window)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass")
    p.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda, cuda:N or mps")

    p = command("start-network", "train a start-site network for a prokaryote tagging model folder, weighed beside its "
                                 "start model on validation regions, and write it into the folder")
    p.add_argument("--model", required=True, help="prokaryote tagging model folder (with the start model its fine-tuning "
                                                  "learnt); the network is written into it")
    _genome_and_annotation(p, "its annotation (GFF3, GTF or GenBank): the genes to learn from")
    p.add_argument("--train-regions", required=True,
                   help="BED file: learn from the genes wholly inside these (those the model was fine-tuned on: not "
                        "the validation or test regions)")
    p.add_argument("--val-regions", required=True, help="BED file: choose the network's weight on the genes inside these")
    p.add_argument("--steps", type=positive_int, default=300, help="training steps (300: ~3 minutes on 2 CPU cores)")

    p = command("evaluate", "score a predicted annotation against a reference (nucleotide, exon and gene level)")
    p.add_argument("--reference", required=True, help="reference annotation (GFF3, GTF, BED or GenBank)")
    p.add_argument("--prediction", required=True, help="predicted annotation (any supported format)")
    p.add_argument("--fasta", default=None, help="genome FASTA, for record lengths (else taken from the annotations)")
    p.add_argument("--regions", default=None, help="BED file: score only inside these regions")
    p.add_argument("--organism", choices=["prokaryote", "eukaryote"], default="prokaryote",
                   help="prokaryote adds stop-codon-exact gene matching")
    p.add_argument("--json", default=None, type=output_path, help="write the metrics as JSON here ('-': standard output)")

    p = command("export", "turn a training checkpoint into a model folder")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, type=output_path, help="model folder to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model folder already at --out (anything else there is never replaced)")

    p = command("plan", "predict peak memory and time of a training step before running it")
    p.add_argument("--config", default=None, help="training YAML (model settings are read from it)")
    p.add_argument("--length", type=positive_int, required=True, help="window length in tokens")
    p.add_argument("--batch-size", type=positive_int, default=1)
    p.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    p.add_argument("--inference", action="store_true", help="forward only, no gradients")

    p = command("pipeline", "pretrain → fine-tune → (prokaryotes: start network; eukaryotes: gene model, combine) → annotate → "
                            "evaluate → report, on FASTA files")
    p.add_argument("--config", default=None, help="pipeline YAML (default: pipelines/default.yaml, the bundled E. coli run)")
    p.add_argument("--out", default=None, type=output_path, help="output folder (default: runs/<config name>)")
    p.add_argument("--stages", nargs="*", default=None, help="run only these stages")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config key (dotted, value as YAML), e.g. --set finetune.max_minutes=4; repeatable")
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"genoformer: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    args = None
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            lightning_main(None if argv == sys.argv[1:] else argv)
            return 0
        args = _parser().parse_args(argv)
        if args.command is None:
            _parser().print_help(sys.stderr)
            return 2
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        from . import commands

        # Batch schedulers stop jobs with SIGTERM: clean up (temporary files, locks) as for Ctrl-C.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            with warnings.catch_warnings():
                # The library's warnings (e.g. a gene model learned from few genes) reach a user as one line.
                warnings.showwarning = _one_line_warning
                return getattr(commands, args.command.replace("-", "_"))(args) or 0
        finally:
            signal.signal(signal.SIGTERM, previous)
    except GenoformerError as exc:
        if debug:
            traceback.print_exc()
        print(f"genoformer: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if debug or not _about_user_paths(exc, args):
            raise
        print(f"genoformer: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genoformer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
