"""Long windows: one training step (forward + backward + AdamW) from 65,536 to 4,194,304 tokens.

    .venv/bin/python bench/long_windows.py [--lengths 65536,262144,1048576,4194304]
        [--infer-lengths 4194304] [--hashes 4] [--tools genoformer,genoformer-bf16,genoformer-infer,genoformer-infer-bf16,hf,reformer-pytorch]
        [--timeout 3600] [--peer-timeout 1200] [--max-rss-gb 22] [--set KEY=VALUE ...] [--json PATH]

Same model as bench/reformer.py (d_model 256, 4 heads, d_ff 1024, depth 6, chunk 64, batch 1,
vocabulary 10, no dropout), each configuration in a fresh process (bench/_measure.py):

- genoformer, fp32 and bf16 autocast: forward + backward + AdamW step at every length; seconds per
  step and peak RSS (whole process: Python, torch, weights, AdamW state, activations);
- genoformer inference (``torch.no_grad``, fp32 and bf16 autocast) at --infer-lengths;
- under bf16 autocast the reversible streams are held in bf16 (``low_precision_streams``, the default;
  ``--set low_precision_streams=false`` measures float32 streams under autocast);
- Hugging Face ReformerModel and reformer-pytorch ReformerLM, training step as above, from the
  shortest length up until their first failure (out of memory, memory cap, timeout, exception),
  which is recorded; longer lengths are not attempted.

Bytes per token: least-squares line through (length, peak RSS) of each genoformer variant's
successful runs; the intercept is the fixed cost (interpreter, torch, weights).

Planner check: when ``genoformer/model/memory.py`` has ``plan(config, length, ...)``, its predicted
peak is printed beside the measured one (and their ratio); otherwise that column says
"no planner" and holds no number. ``--set`` passes extra ReformerConfig fields to genoformer (memory
knobs such as attention_chunk_tokens or ff_chunk_size), e.g. ``--set ff_chunk_size=4096``.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] == str(ROOT / "bench"):
    # run as a script: import from the repository root (see bench/reformer.py)
    sys.path[0] = str(ROOT)
from bench._measure import measure  # noqa: E402
from bench.reformer import CHUNK, D_FF, D_MODEL, DEPTH, N_HEADS, cpu_name, genoformer_config, markdown, versions  # noqa: E402

GIB = 2 ** 30
TOOLS = ("genoformer", "genoformer-bf16", "genoformer-infer", "genoformer-infer-bf16", "hf", "reformer-pytorch")
PEERS = ("hf", "reformer-pytorch")
LABELS = {"genoformer": "genoformer fp32", "genoformer-bf16": "genoformer bf16",
          "genoformer-infer": "genoformer inference fp32", "genoformer-infer-bf16": "genoformer inference bf16",
          "hf": "HF Reformer", "reformer-pytorch": "reformer-pytorch"}
# issue 7's targets: (tool, length) -> peak RSS limit in GiB
TARGETS = {("genoformer", 1048576): 12, ("genoformer-bf16", 1048576): 12, ("genoformer", 4194304): 22,
           ("genoformer-bf16", 4194304): 22, ("genoformer-infer", 4194304): 8, ("genoformer-infer-bf16", 4194304): 8}


def inference(tool: str) -> bool:
    return tool.startswith("genoformer-infer")


def bf16(tool: str) -> bool:
    return tool.startswith("genoformer") and tool.endswith("bf16")


def run(tool: str, length: int, args) -> dict:
    builder = {"hf": "bench.reformer:build_hf", "reformer-pytorch": "bench.reformer:build_reformer_pytorch"}.get(
        tool, "bench.reformer:build_genoformer")
    kwargs = {"n_hashes": args.hashes}
    if tool.startswith("genoformer"):
        kwargs.update(args.set)
    record = measure(builder, length, kwargs=kwargs, mode="infer" if inference(tool) else "train_opt",
                     bf16=bf16(tool), timeout=args.peer_timeout if tool in PEERS else args.timeout,
                     max_rss_gb=args.max_rss_gb, threads=args.threads, min_seconds=0.0, max_steps=1)
    record["tool"] = tool
    if tool.startswith("genoformer"):
        record["predicted"] = predicted_peak(tool, length, args)
    print(f"  {LABELS[tool]}, {length:,} tokens: {cell(record)}"
          + (f" (step CPU time {record['cpu_seconds']:.1f} s)" if record["status"] == "ok" else ""),
          file=sys.stderr, flush=True)
    return record


def predicted_peak(tool: str, length: int, args) -> float | str:
    """The memory planner's predicted peak in bytes, or a text saying why there is none."""
    try:
        memory = importlib.import_module("genoformer.model.memory")
    except ModuleNotFoundError:
        return "no planner"
    plan = getattr(memory, "plan", None)
    if plan is None:
        return "no plan() in genoformer.model.memory"
    training = not inference(tool)
    offered = {"inference": not training, "batch_size": 1,
               "precision": "bf16-mixed" if bf16(tool) else "32"}
    accepted = inspect.signature(plan).parameters
    try:
        answer = plan(genoformer_config(args.hashes, DEPTH, **args.set), length,
                      **{k: v for k, v in offered.items() if k in accepted})
    except Exception as error:  # noqa: BLE001 - the planner's failure is itself a finding
        return f"plan() raised {type(error).__name__}: {error}"[:120]
    if isinstance(answer, (int, float)):
        return float(answer)
    for name in ("peak_bytes", "total_bytes", "bytes"):
        value = answer.get(name) if isinstance(answer, dict) else getattr(answer, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return f"plan() answer not recognised: {answer!r}"[:120]


def cell(record: dict | None) -> str:
    if record is None:
        return "—"
    if record["status"] != "ok":
        return record["status"][:80]
    return f"{record['seconds']:.1f} s · {record['peak_rss_gb'] * 1e9 / GIB:.2f} GiB"


def planner_cell(record: dict | None) -> str:
    if record is None:
        return "—"
    predicted = record.get("predicted")
    if not isinstance(predicted, float):
        return f"*{predicted}*"
    text = f"{predicted / GIB:.2f} GiB"
    if record["status"] == "ok":
        text += f" ({predicted / (record['peak_rss_gb'] * 1e9):.2f}× measured)"
    return text


def fit(records: list[dict]) -> str:
    """Bytes per token and fixed cost from a least-squares line through the successful runs."""
    done = [r for r in records if r["status"] == "ok"]
    if len(done) < 2:
        return "fewer than two successful runs: no fit"
    lengths = np.array([r["length"] for r in done], dtype=float)
    peaks = np.array([r["peak_rss_gb"] * 1e9 for r in done])
    slope, intercept = np.polyfit(lengths, peaks, 1)
    worst = np.max(np.abs(np.polyval([slope, intercept], lengths) - peaks) / peaks)
    return f"{slope:,.0f} bytes/token + {intercept / GIB:.2f} GiB fixed (largest deviation from the line {worst:.1%})"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    parser.add_argument("--lengths", type=ints, default=[65536, 262144, 1048576, 4194304])
    parser.add_argument("--infer-lengths", type=ints, default=[4194304])
    parser.add_argument("--hashes", type=int, default=4)
    parser.add_argument("--tools", type=lambda t: t.split(","), default=list(TOOLS))
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per genoformer run")
    parser.add_argument("--peer-timeout", type=float, default=1200.0, help="seconds per peer run")
    parser.add_argument("--max-rss-gb", type=float, default=None, help="kill a run above this RSS in GB (default 90%% of RAM)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra genoformer ReformerConfig field (VALUE parsed as JSON)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    unknown = set(args.tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {', '.join(TOOLS)}")
    args.set = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    if args.max_rss_gb is None:
        import psutil

        args.max_rss_gb = 0.9 * psutil.virtual_memory().total / 1e9
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    results: list[dict] = []
    failed: set[str] = set()
    for length in sorted(set(args.lengths) | set(args.infer_lengths)):
        for tool in args.tools:
            wanted = length in (args.infer_lengths if inference(tool) else args.lengths)
            if wanted and tool not in failed:
                record = run(tool, length, args)
                results.append(record)
                if tool in PEERS and record["status"] != "ok":
                    failed.add(tool)  # record a peer's first failure, then stop it

    by = {(r["tool"], r["length"]): r for r in results}
    mine = [t for t in args.tools if t.startswith("genoformer")]
    header = ["tokens"] + [LABELS[t] for t in args.tools] + [f"{LABELS[t]}: planner predicted" for t in mine]
    rows = [[f"{length:,}"] + [cell(by.get((t, length))) for t in args.tools]
            + [planner_cell(by.get((t, length))) for t in mine]
            for length in sorted(set(args.lengths) | set(args.infer_lengths))]
    print(f"Long windows: d_model {D_MODEL}, {N_HEADS} heads, d_ff {D_FF}, depth {DEPTH}, chunk {CHUNK}, "
          f"{args.hashes} hashes, batch 1; training = forward + backward + AdamW step; {cpu_name()}; {versions()}"
          + (f"; genoformer overrides {args.set}" if args.set else "") + ".\n"
          "Cells: seconds per step · peak RSS of the whole process (GiB). "
          "A peer is not run past its first failure.\n")
    print(markdown(header, rows))
    print()
    for tool in mine:
        print(f"- {LABELS[tool]}: {fit([r for r in results if r['tool'] == tool])}")
    for (tool, length), limit in TARGETS.items():
        record = by.get((tool, length))
        if tool in args.tools and record is not None:
            peak = record.get("peak_rss_gb", 0.0) * 1e9
            verdict = (f"{peak / GIB:.2f} GiB: {'met' if peak <= limit * GIB else 'MISSED'}"
                       if record["status"] == "ok" else record["status"])
            print(f"- target {LABELS[tool]} at {length:,} tokens ≤ {limit} GiB: {verdict}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
