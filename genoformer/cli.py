"""The ``genoformer`` command.

Training subcommands (``fit``, ``validate``, ``test``, ``predict``) are LightningCLI: every model,
data and trainer option can be set from a YAML file (``--config``) or a dotted flag. The others
(``annotate``, ``evaluate``, ``export``, ``plan``, ``pipeline``) are plain argparse commands.
Errors in the user's input print one line on stderr and exit with status 2 (``--debug`` shows the
traceback); results go to files, logs and progress to stderr.
"""
from __future__ import annotations

import argparse
import sys
import traceback

from . import __version__
from .errors import ConfigError, GenoformerError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

EXAMPLES = {
    "annotate": "genoformer annotate --model runs/default/tagger --fasta genome.fa --out runs/pred/genome",
    "evaluate": "genoformer evaluate --reference ref.gff3 --prediction pred.gff3 --regions held_out.bed --json metrics.json",
    "export": "genoformer export --checkpoint runs/pretrain/last.ckpt --out models/pretrained",
    "plan": "genoformer plan --config pipelines/pretrain_ecoli.yaml --length 1048576",
    "pipeline": "genoformer pipeline --config pipelines/default.yaml --out runs/ecoli",
}


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
        p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all)")
        return p

    p = command("annotate", "predict gene regions over whole FASTA files; write GFF3, BED and probability tracks")
    p.add_argument("--model", required=True, help="model folder written by training (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--fasta", required=True, help="FASTA file (plain, gzip or BGZF)")
    p.add_argument("--out", required=True, help="output prefix: PREFIX.gff3, PREFIX.bed, PREFIX.<class>.bedgraph")
    p.add_argument("--records", nargs="*", default=None, help="only these records")
    p.add_argument("--regions", default=None, help="BED file: only these regions")
    p.add_argument("--organism", choices=["prokaryote", "eukaryote"], default=None, help="gene model rules (default: the model's)")
    p.add_argument("--window-length", type=int, default=None, help="bases per window (default: the model's training window)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--single-strand", action="store_true", help="do not average with the reverse-complement prediction")
    p.add_argument("--bigwig", action="store_true", help="also write bigWig tracks (needs pyBigWig)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--gene-cost", type=float, default=None,
                   help="prokaryotes: cost per called gene in summed coding log-odds (default: the model's, "
                        "from its fine-tuning loss: 400 for cross-entropy, 300 for class-weighted; lower it when a "
                        "less trained model misses genes)")
    p.add_argument("--codon-weight", type=float, default=None,
                   help="prokaryotes: weight of the codon statistics the decoder learns from its own first-pass "
                        "calls on this genome (default 10; 0 turns the second pass off)")
    p.add_argument("--start-weight", type=float, default=None,
                   help="prokaryotes: weight of the start-site statistics the decoder learns from its own calls "
                        "on this genome (default 60; 0 keeps the fixed start-codon and Shine-Dalgarno scores)")
    p.add_argument("--closed-ends", action="store_true",
                   help="prokaryotes: no genes running off a record's (or region's) ends, for complete sequences "
                        "(Prodigal's -c; by default such genes are called and flagged partial)")

    p = command("evaluate", "score a predicted annotation against a reference (nucleotide, exon and gene level)")
    p.add_argument("--reference", required=True, help="reference annotation (GFF3, GTF, BED or GenBank)")
    p.add_argument("--prediction", required=True, help="predicted annotation (any supported format)")
    p.add_argument("--fasta", default=None, help="genome FASTA, for record lengths (else taken from the annotations)")
    p.add_argument("--regions", default=None, help="BED file: score only inside these regions")
    p.add_argument("--organism", choices=["prokaryote", "eukaryote"], default="prokaryote",
                   help="prokaryote adds stop-codon-exact gene matching")
    p.add_argument("--json", default=None, help="write the metrics as JSON here")

    p = command("export", "turn a training checkpoint into a model folder")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model folder already at --out (anything else there is never replaced)")

    p = command("plan", "predict peak memory and time of a training step before running it")
    p.add_argument("--config", default=None, help="training YAML (model settings are read from it)")
    p.add_argument("--length", type=int, required=True, help="window length in tokens")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    p.add_argument("--inference", action="store_true", help="forward only, no gradients")

    p = command("pipeline", "pretrain → fine-tune → annotate → export → evaluate → report, on FASTA files")
    p.add_argument("--config", default=None, help="pipeline YAML (default: pipelines/default.yaml, the bundled E. coli run)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    p.add_argument("--stages", nargs="*", default=None, help="run only these stages")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config key (dotted, value as YAML), e.g. --set finetune.max_minutes=4; repeatable")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
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

        return getattr(commands, args.command)(args) or 0
    except GenoformerError as exc:
        if debug:
            traceback.print_exc()
        print(f"genoformer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genoformer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
