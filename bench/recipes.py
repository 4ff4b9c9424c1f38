"""Training tokens/s of the recipes' models, through the Lightning tasks the pipeline trains.

    python bench/recipes.py [--recipes default,eukaryote] [--stages finetune,pretrain] [--steps 6]
        [--runs 3] [--before 8c36586] [--threads 1] [--precision 32] [--set KEY=VALUE] [--json out.json]
    python bench/recipes.py --profile [--recipes ...] [--stages ...] [--threads 1]

Recipes: `default` is pipelines/default.yaml (E. coli; 8 x 2 kb windows), `eukaryote` is
pipelines/model_organisms.yaml (A. thaliana + C. elegans; 4 x 4 kb windows); both train d_model 128,
depth 4, d_ff 256, [local, lsh], 2 hash rounds, dropout 0.05. Each measurement is a fresh process that
builds the stage's task and data module as the pipeline does (same settings and seed) and trains
`--warmup` + `--steps` steps with the recipe's `trainer:` section (validation, checkpoints and logging
off); a step's time runs from one batch's start to the next's (data loading, Lightning, optimiser
included); tokens/s is the median over the timed steps, of wall time and of the process's CPU time
(on a machine shared with other jobs wall time includes waiting for a core, CPU time does not; with
`--threads 1` CPU seconds are the step's work).

`--before REV` also measures the code of git revision REV (its `genoformer/` exported into a temporary
folder), interleaved run by run with the working tree's, and prints the ratio of medians over `--runs`;
the loss of every step is compared too: an exact fast path gives the same curve up to float rounding.

`--profile` times one training step's parts instead (manual steps without Lightning, in one process):
the reversible stack against the ordinary one (the recompute), torch.profiler self-CPU time grouped by
what the operators do, data loading per batch, and the same task's step through Lightning (its
overhead: the difference to the manual step).

On a machine shared with other jobs, `--threads 1` keeps torch's worker threads from waiting on each
other (with 2 threads on 2 busy cores, steps ran 7x slower than with 1).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"default": "pipelines/default.yaml", "eukaryote": "pipelines/model_organisms.yaml"}
# torch.profiler operator names -> what a training step spends the time on (the rest is "other")
PROFILE_GROUPS = {
    "dropout draws (random_ + ge; bernoulli_ before)": ("bernoulli", "aten::random_", "aten::ge"),
    "attention kernel matmuls (bmm)": ("aten::bmm", "aten::baddbmm"),
    "attention kernel gathers/scatters": ("index_select", "index_copy", "index_add", "scatter_add", "aten::gather"),
    "softmax arithmetic (exp, amax, logaddexp, sigmoid)": ("aten::exp", "aten::amax", "logaddexp", "sigmoid"),
    "projections + feed-forward (mm, addmm, gelu)": ("aten::mm", "aten::addmm", "aten::gelu", "aten::linear"),
    "hashing + sorting (sort, argmax, randn)": ("aten::sort", "aten::argmax", "aten::randn", "normal_"),
    "layer norms": ("layer_norm",),
    "elementwise arithmetic and copies": ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::copy_",
                                          "aten::fill_", "aten::cat", "aten::sum", "aten::where", "aten::zero"),
    "optimiser (AdamW)": ("_foreach", "Optimizer.step"),
}


# ----------------------------------------------------------------------------------------------
# Child process: one recipe stage, timed (or profiled) with the genoformer on PYTHONPATH.

def build(recipe: str, stage: str, overrides: dict):
    """The task and data module the pipeline builds for `stage` of `recipe` (fine-tuning starts fresh
    here instead of from the pretrained folder: the same step cost)."""
    import yaml

    from genoformer.tasks import GenomeDataModule, MaskedLMTask, TaggingTask

    config = yaml.safe_load((ROOT / RECIPES[recipe]).read_text())
    model, data, settings = config["model"], config["data"], config[stage]
    encoder = {**{k: v for k, v in model.items() if k != "tokenizer"}, **overrides}
    common = dict(tokenizer=model["tokenizer"], encoder=encoder, lr=settings["lr"],
                  warmup_steps=settings["warmup_steps"], seed=config["seed"])
    if stage == "pretrain":
        task = MaskedLMTask(**common)
    else:
        task = TaggingTask(classes=data["classes"], organism=data["organism"], loss=settings["loss"], **common)
    datamodule = GenomeDataModule(
        fasta=data["fasta"], annotation=data["annotation"] if stage == "finetune" else None, classes=data["classes"],
        val_regions=data["val_regions"], test_regions=data["test_regions"], val_fraction=0.0, test_fraction=0.0,
        window_length=settings["window_length"], batch_size=settings["batch_size"],
        windows_per_epoch=settings["batch_size"] * 50, seed=config["seed"], tokenizer=task.tokenizer)
    return config, task, datamodule


def fit_timed(task, datamodule, trainer_settings: dict, warmup: int, steps: int) -> dict:
    """Train `warmup` + `steps` steps; the timed steps' medians (wall and CPU seconds) and every loss."""
    import pytorch_lightning as pl

    class StepTimes(pl.Callback):
        def __init__(self):
            self.starts, self.losses, self.tokens = [], [], 0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.starts.append((time.perf_counter(), time.process_time()))
            self.tokens = batch["input_ids"].numel()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.end = (time.perf_counter(), time.process_time())
            self.losses.append(float(outputs["loss"]))

    timer = StepTimes()
    trainer = pl.Trainer(**trainer_settings, max_steps=warmup + steps, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, use_distributed_sampler=False,
                         num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[timer])
    trainer.fit(task, datamodule=datamodule)
    ends = timer.starts[1:] + [timer.end]
    wall, cpu = ([e[i] - s[i] for s, e in zip(timer.starts, ends)][warmup:] for i in (0, 1))
    step, cpu_step = statistics.median(wall), statistics.median(cpu)
    return dict(seconds_per_step=step, cpu_seconds_per_step=cpu_step, tokens_per_step=timer.tokens,
                tokens_per_s=timer.tokens / step, tokens_per_cpu_s=timer.tokens / cpu_step, losses=timer.losses)


def timed_fit(spec: dict) -> dict:
    import pytorch_lightning as pl
    import torch

    pl.seed_everything(0, verbose=False)
    config, task, datamodule = build(spec["recipe"], spec["stage"], spec["overrides"])
    trainer_settings = {**config["trainer"], **({"precision": spec["precision"]} if spec["precision"] else {})}
    result = fit_timed(task, datamodule, trainer_settings, spec["warmup"], spec["steps"])
    return {**result, "threads": torch.get_num_threads()}


def profile(spec: dict) -> dict:
    """One step's parts: see the module docstring."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    config, task, datamodule = build(spec["recipe"], spec["stage"], spec["overrides"])
    log = task.log
    task.log = lambda *args, **kwargs: None  # no trainer attached
    started = time.perf_counter()
    batches = [batch for _, batch in zip(range(4), datamodule.loader(datamodule.train_dataset()))]
    loading = (time.perf_counter() - started) / len(batches)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)

    def step(batch):
        loss = task.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def manual(reversible, n=3) -> float:
        task.config.reversible = reversible
        step(batches[0])  # warm-up
        times = []
        for i in range(n):
            started = time.perf_counter()
            step(batches[1 + i % 3])
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    task.train()
    result = {"data loading per batch": loading, "tokens_per_step": batches[0]["input_ids"].numel()}
    for reversible in (True, False):
        result[f"step, reversible={reversible}"] = manual(reversible)
        task.config.reversible = reversible
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step(batches[1])
        groups = dict.fromkeys(list(PROFILE_GROUPS) + ["other"], 0.0)
        for event in prof.key_averages():
            group = next((g for g, names in PROFILE_GROUPS.items() if any(n in event.key for n in names)), "other")
            groups[group] += event.self_cpu_time_total / 1e6
        result[f"profile, reversible={reversible}"] = groups
    task.log = log
    lightning = fit_timed(task, datamodule, config["trainer"], 1, 3)  # the ordinary stack, as set last
    result["lightning step"] = lightning["seconds_per_step"]
    return result


def child_main(spec: dict) -> None:
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    result = profile(spec) if spec["profile"] else timed_fit(spec)
    print("RESULT " + json.dumps(result))


# ----------------------------------------------------------------------------------------------
# Parent: runs the children, prints the tables.

def export_revision(revision: str, folder: Path) -> Path:
    """The `genoformer/` package of git `revision`, unpacked under `folder`."""
    archive = folder / "code.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), revision, "genoformer"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / revision, filter="data")
    return folder / revision


def run_child(spec: dict, code: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=spec.get("timeout", 1800))
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {result.returncode}: {tail[:200]}"}
    return json.loads(lines[-1].removeprefix("RESULT "))


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = json.loads(value)
    return out


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def throughput_table(args, results: dict, key: str) -> str:
    """Medians (and every run) of `key` ("tokens_per_s" or "tokens_per_cpu_s") per recipe stage."""
    header = ["recipe · stage"] + [f"{name} (runs)" for name in results] + \
             (["ratio of medians", "max |Δ loss|"] if len(results) == 2 else [])
    rows = []
    for recipe in args.recipes:
        for stage in args.stages:
            row, medians, losses = [f"{recipe} · {stage}"], [], []
            for runs in results.values():
                done = [r for r in runs[recipe, stage] if "error" not in r]
                rates = [r[key] for r in done]
                medians.append(statistics.median(rates) if rates else None)
                losses.append(done[0]["losses"] if done else None)
                errors = [r["error"] for r in runs[recipe, stage] if "error" in r]
                row.append(f"**{medians[-1]:,.0f}** ({', '.join(f'{x:,.0f}' for x in rates)})" if rates else errors[0])
            if len(results) == 2:
                row.append(f"{medians[1] / medians[0]:.2f}×" if None not in medians else "—")
                row.append(f"{max(abs(a - b) for a, b in zip(*losses)):.1e}" if None not in losses else "—")
            rows.append(row)
    return markdown(header, rows)


def profile_table(args, results: dict) -> str:
    blocks = []
    for (recipe, stage), r in results.items():
        if "error" in r:
            blocks.append(f"{recipe} · {stage}: {r['error']}")
            continue
        rev, ordinary = r["step, reversible=True"], r["step, reversible=False"]
        rows = [[group, f"{r['profile, reversible=True'][group]:.2f}", f"{r['profile, reversible=False'][group]:.2f}"]
                for group in r["profile, reversible=True"]]
        rows.append(["**step (median of 3, wall)**", f"**{rev:.2f}**", f"**{ordinary:.2f}**"])
        rows.append(["data loading per batch (main process)", f"{r['data loading per batch']:.3f}", ""])
        rows.append(["Lightning step (median of 3, wall)", "", f"{r['lightning step']:.2f}"])
        blocks.append(f"{recipe} · {stage} ({r['tokens_per_step']:,} tokens a step; reversible recompute "
                      f"= {rev - ordinary:.2f} s, {(rev - ordinary) / rev:.0%} of the reversible step)\n\n"
                      + markdown(["part (self CPU s, one step)", "reversible stack", "ordinary stack (kept activations)"],
                                 rows))
    return "\n\n".join(blocks)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = lambda text: [x for x in text.split(",") if x]  # noqa: E731
    parser.add_argument("--recipes", type=names, default=list(RECIPES))
    parser.add_argument("--stages", type=names, default=["finetune", "pretrain"])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", help="git revision to compare against (e.g. 8c36586)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--precision", default="", help="override the recipe's trainer.precision")
    parser.add_argument("--set", action="append", default=[], help="encoder setting KEY=JSON, e.g. reversible=true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return
    base = dict(steps=args.steps, warmup=args.warmup, threads=args.threads, precision=args.precision,
                overrides=parse_set(args.set), profile=args.profile)
    with tempfile.TemporaryDirectory() as scratch:
        codes = {"working tree": ROOT}
        if args.before:
            codes = {args.before: export_revision(args.before, Path(scratch)), **codes}
        if args.profile:
            results = {(recipe, stage): run_child({**base, "recipe": recipe, "stage": stage}, ROOT)
                       for recipe in args.recipes for stage in args.stages}
            print(profile_table(args, results))
            table = results
        else:
            results = {name: {(r, s): [] for r in args.recipes for s in args.stages} for name in codes}
            for run in range(args.runs):  # interleaved, so load on a shared machine hits both alike
                for recipe in args.recipes:
                    for stage in args.stages:
                        for name, code in codes.items():
                            record = run_child({**base, "recipe": recipe, "stage": stage}, code)
                            results[name][recipe, stage].append(record)
                            print(f"  run {run + 1}, {recipe} · {stage}, {name}: {record.get('tokens_per_s', 0):,.0f} "
                                  f"tok/s, {record.get('tokens_per_cpu_s', 0):,.0f} tok/CPU-s {record.get('error', '')}",
                                  file=sys.stderr, flush=True)
            print("Training tokens/s (wall):\n\n" + throughput_table(args, results, "tokens_per_s"))
            print("\nTraining tokens per CPU second (the process's own CPU time):\n\n"
                  + throughput_table(args, results, "tokens_per_cpu_s"))
            table = {name: {f"{r} {s}": v for (r, s), v in by.items()} for name, by in results.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(table if not args.profile else
                                              {f"{r} {s}": v for (r, s), v in table.items()}, indent=1))


if __name__ == "__main__":
    if sys.path[0] == str(ROOT / "bench"):
        sys.path.pop(0)  # bench/tokenizers.py must not shadow Hugging Face's `tokenizers`
    main()
