"""Run one benchmark configuration in a fresh Python process and report time and peak memory.

Each configuration gets its own process so that one run's allocator state, caches and leaked
memory never inflate the next run's peak, and so that an out-of-memory kill or a hang costs one
table cell, not the whole benchmark. The parent reads the child's peak RSS from the kernel
(``os.wait4``: that child's own ``ru_maxrss``, which survives a SIGKILL) and polls RSS with psutil
to enforce a memory cap and a timeout.

A configuration names a builder ``"module:function"`` (e.g. ``"bench.reformer:build_hf"``; the
child runs as ``python -m bench._measure`` from the repository root, so ``bench`` and ``genoformer``
import from the checkout and ``bench/tokenizers.py`` cannot shadow Hugging Face's ``tokenizers``) called with ``length`` and its keyword arguments; the builder returns
``(module, forward, vocab_size)`` where ``forward(ids)`` gives a float tensor of hidden states.
The child then times complete steps on random token ids, batch 1:

- ``train``: forward (under bf16 autocast if asked) and backward of the mean square of every
  ``LOSS_STRIDE``-th position's hidden state, the share of positions a masked-LM loss reads (15%);
  the full-length output is dropped before backward, as a training step's is (only the loss's
  positions are kept), so no tool is charged for an output a real loss would not hold;
- ``train_opt``: the same plus an AdamW step (its state is allocated on the first step);
- ``infer``: forward only, under ``torch.no_grad``.

The first step is timed like the others (it includes first-touch page faults, which a long-window
training step pays too); further steps run while the total stays under ``min_seconds`` and at most
``max_steps``, and the fastest step is reported.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
GB = 1e9
# ~15% of positions, as masked-LM pretraining; the memory planner probes with the same stride
# (genoformer.model.memory._LOSS_STRIDE), not imported: a peer's measured process must not load genoformer.
LOSS_STRIDE = 6


def measure(builder: str, length: int, *, kwargs: dict | None = None, mode: str = "train",
            bf16: bool = False, timeout: float = 600.0, max_rss_gb: float | None = None,
            threads: int | None = None, min_seconds: float = 20.0, max_steps: int = 3,
            seed: int = 0) -> dict:
    """Run one configuration in a child process; never raises for a failed run.

    Returns a dict with ``status`` ("ok" or "failed: <reason>"), ``seconds`` (best step, wall),
    ``cpu_seconds`` (that step's process CPU time: on a shared machine, wall time includes waiting
    for a core, CPU time does not), ``tokens_per_s``, ``peak_rss_gb`` (whole child process, including Python, torch and the
    model), ``base_rss_gb`` (RSS after building the model and inputs, before the first step),
    ``steps`` and the configuration itself. A failed run keeps the peak RSS it reached.
    """
    import psutil

    spec = {"builder": builder, "length": length, "kwargs": kwargs or {}, "mode": mode, "bf16": bf16,
            "threads": threads, "min_seconds": min_seconds, "max_steps": max_steps, "seed": seed}
    record = {"builder": builder, "length": length, "kwargs": kwargs or {}, "mode": mode, "bf16": bf16}
    with tempfile.TemporaryDirectory(prefix="genoformer-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        log_path = Path(tmp) / "log.txt"
        with open(log_path, "wb") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "bench._measure", json.dumps(spec), str(result_path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            killed_for, polled_peak, status_code, usage = _watch(child, psutil, timeout, max_rss_gb)
        # ru_maxrss is in KiB on Linux
        record["peak_rss_gb"] = max(usage.ru_maxrss * 1024, polled_peak) / GB
        result = json.loads(result_path.read_text()) if result_path.exists() else {}
        log_tail = log_path.read_text(errors="replace").strip().splitlines()[-20:]
    record.update({key: result[key] for key in ("seconds", "cpu_seconds", "steps", "base_rss_gb", "threads") if key in result})
    if killed_for:
        record["status"] = f"failed: {killed_for}"
    elif "error" in result:
        record["status"] = f"failed: {result['error']}"
    elif os.WIFSIGNALED(status_code):
        number = os.WTERMSIG(status_code)
        reason = "killed by SIGKILL (likely the kernel's out-of-memory killer)" if number == signal.SIGKILL \
            else f"killed by signal {signal.Signals(number).name}"
        record["status"] = f"failed: {reason}"
    elif os.WEXITSTATUS(status_code) != 0 or "seconds" not in result:
        last = log_tail[-1] if log_tail else "no output"
        record["status"] = f"failed: exit code {os.WEXITSTATUS(status_code)} ({last})"
    else:
        record["status"] = "ok"
        record["tokens_per_s"] = length / record["seconds"]
    if record["status"] != "ok":
        record["log_tail"] = log_tail
    return record


def _watch(child: subprocess.Popen, psutil, timeout: float, max_rss_gb: float | None):
    """Poll the child until it exits; kill it on timeout or when its RSS passes the cap."""
    start = time.monotonic()
    killed_for = None
    polled_peak = 0
    process = psutil.Process(child.pid)
    while True:
        pid, status_code, usage = os.wait4(child.pid, os.WNOHANG)
        if pid == child.pid:
            child.returncode = status_code  # reaped here; keep Popen from waiting again
            return killed_for, polled_peak, status_code, usage
        if killed_for is None:
            try:
                polled_peak = max(polled_peak, process.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
            if max_rss_gb is not None and polled_peak > max_rss_gb * GB:
                killed_for = f"memory cap exceeded (> {max_rss_gb:.1f} GB RSS)"
            elif time.monotonic() - start > timeout:
                killed_for = f"timeout after {timeout:.0f} s"
            if killed_for is not None:
                child.kill()
        time.sleep(0.1)


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    if isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
        return f"out of memory ({text[:200]})"
    return text[:300]


def _child(spec: dict, result_path: Path) -> None:
    """Build the model, run the steps, write the result JSON (or the error) for the parent."""
    import importlib

    import torch

    result: dict = {}
    try:
        if spec["threads"]:
            torch.set_num_threads(spec["threads"])
        result["threads"] = torch.get_num_threads()
        torch.manual_seed(spec["seed"])
        module_name, function_name = spec["builder"].split(":")
        build = getattr(importlib.import_module(module_name), function_name)
        model, forward, vocab_size = build(spec["length"], **spec["kwargs"])
        ids = torch.randint(0, vocab_size, (1, spec["length"]))
        mode = spec["mode"]
        model.train(mode != "infer")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if mode == "train_opt" else None
        result["base_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["bf16"]):
                if mode == "infer":
                    with torch.no_grad():
                        forward(ids)
                    return
                out = forward(ids)
                picked = out[:, ::LOSS_STRIDE].contiguous().float()  # (batch, length / stride, d_model), a copy
                del out
            # backward outside autocast, the way Lightning runs it
            picked.square().mean().backward()
            del picked
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            else:
                model.zero_grad(set_to_none=True)

        times, cpu_times = [], []
        while len(times) < spec["max_steps"] and (not times or sum(times) < spec["min_seconds"]):
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        best = times.index(min(times))
        result.update(seconds=times[best], cpu_seconds=cpu_times[best], steps=len(times))
    except BaseException as error:  # noqa: BLE001 - any failure becomes a table cell
        result["error"] = _describe(error)
        import traceback

        traceback.print_exc()
    result_path.write_text(json.dumps(result))
    sys.exit(1 if "error" in result else 0)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]), Path(sys.argv[2]))
