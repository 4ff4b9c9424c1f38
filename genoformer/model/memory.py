"""Memory planner: predict a training step's peak memory and time before running it.

Everything in the Reformer that grows with the sequence grows linearly (chunked attention, chunked
feed-forward, reversible layers that keep one block's activations), so peak memory and time are
``fixed + per_token * tokens``. Rather than a hand-kept formula that drifts from the code, the
planner measures two short probe steps of the real model on the current device — each in a fresh
process on a CPU, where peak RSS cannot be reset — and extrapolates. Probes cost up to a minute; the
prediction is checked against measurements at long lengths by ``bench/long_windows.py``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from ..errors import ConfigError, MemoryPlanError
from .config import ReformerConfig

GiB = 1024**3

__all__ = ["Plan", "plan", "plan_from_cli", "available_bytes", "measure_step"]


@dataclass
class Plan:
    """Predicted cost of one step at ``length`` tokens (batch ``batch_size``)."""

    length: int
    batch_size: int
    precision: str
    inference: bool
    device: str
    peak_bytes: float
    seconds: float
    bytes_per_token: float
    fixed_bytes: float
    available_bytes: float

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= 0.9 * self.available_bytes

    def __str__(self) -> str:
        mode = "inference" if self.inference else "training step"
        return (f"{mode} at {self.length:,} tokens x batch {self.batch_size}, {self.precision}, {self.device}: "
                f"peak {self.peak_bytes / GiB:.2f} GiB ({self.bytes_per_token:,.0f} bytes/token + "
                f"{self.fixed_bytes / GiB:.2f} GiB fixed), about {self.seconds:.1f} s; "
                f"{self.available_bytes / GiB:.1f} GiB available: {'fits' if self.fits else 'does NOT fit'}")

    def check(self) -> "Plan":
        """Raise :class:`MemoryPlanError` when the step would not fit."""
        if not self.fits:
            hint = "lower --length or the batch size" + ("" if self.precision != "32" else ", or use bf16-mixed")
            raise MemoryPlanError(f"a {('forward pass' if self.inference else 'training step')} at "
                                  f"{self.length:,} tokens needs about {self.peak_bytes / GiB:.1f} GiB, "
                                  f"{self.available_bytes / GiB:.1f} GiB available: {hint}")
        return self


def available_bytes(device: torch.device) -> float:
    """Free memory now: GPU memory for CUDA, ``MemAvailable`` for the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def measure_step(config: ReformerConfig, length: int, batch_size: int, precision: str, inference: bool,
                 device: torch.device) -> tuple[float, float]:
    """Peak bytes and seconds of one step, measured in this process (fresh on a CPU)."""
    from .networks import ReformerForMaskedLM

    network = ReformerForMaskedLM(config).to(device)
    optimizer = torch.optim.AdamW(network.parameters())
    ids = torch.randint(0, config.vocab_size, (batch_size, length), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_peak_rss()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision != "32")
    started = time.perf_counter()
    if inference:
        network.eval()
        with torch.no_grad(), autocast:
            network(ids)
    else:
        with autocast:
            hidden = network(ids)
            # The masked-LM loss touches 15% of positions, as the pretraining task does.
            picked = hidden[:, :: max(1, int(1 / 0.15))]
            loss = torch.nn.functional.cross_entropy(network.lm_head(picked).flatten(0, 1).float(),
                                                     ids[:, :: max(1, int(1 / 0.15))].flatten())
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = float(torch.cuda.max_memory_allocated(device))
    else:
        peak = _peak_rss()
    return peak, time.perf_counter() - started


def _reset_peak_rss() -> None:
    """Reset the kernel's high-water mark (VmHWM), so start-up (imports) does not hide the step's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # not Linux: ru_maxrss below then includes start-up


def _peak_rss() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _probe(config: ReformerConfig, length: int, batch_size: int, precision: str, inference: bool,
           device: torch.device) -> tuple[float, float]:
    if device.type == "cuda":
        return measure_step(config, length, batch_size, precision, inference, device)
    request = json.dumps({"config": config.to_dict(), "length": length, "batch_size": batch_size,
                          "precision": precision, "inference": inference})
    result = subprocess.run([sys.executable, "-m", "genoformer.model.memory", "--probe", request],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise MemoryPlanError(f"the memory probe at {length} tokens failed: {result.stderr.strip().splitlines()[-1:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return out["peak_bytes"], out["seconds"]


def plan(config: ReformerConfig, length: int, *, batch_size: int = 1, precision: str = "32",
         inference: bool = False, device: str | torch.device | None = None,
         probe_lengths: tuple[int, int] | None = None) -> Plan:
    """Predict peak memory and time of a step at ``length`` tokens from two probe steps."""
    if precision not in ("32", "bf16-mixed"):
        raise ConfigError(f"precision must be '32' or 'bf16-mixed', got {precision!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if config.head_group_size is None:  # probe with the head grouping the long call will use
        padded = -(-length // config.chunk_size) * config.chunk_size
        heads = config.head_groups(batch_size * padded)[0]
        config = dataclasses.replace(config, head_group_size=heads.stop - heads.start)
    if probe_lengths is None:
        # Temporaries sized by a chunk knob (feed-forward and hashing chunks are positions, whatever
        # the batch) grow with length only up to the knob, so both probes lie well beyond it (else the
        # slope would count them per token), and far apart: the allocator's slack is tens of MB, which
        # over a short span would swing the bytes per token by half (measured: 4 and 8 chunks predict
        # 9.30 GiB for a 1 Mb step that peaks at 8.98 GiB).
        # Inference holds about a third of what training does per token, so its probes go 4x longer
        # for the same signal, at about the cost of training probes (at 4 and 8 chunks, bf16, the
        # probes differed by ~50 MB, within the allocator's noise: 0.47 GiB predicted for a 1 Mb
        # forward that peaks at 1.92 GiB).
        base = max(config.ff_chunk_size, 64 * config.chunk_size) * (4 if inference else 1)
        probe_lengths = (4 * base, 8 * base) if length > 8 * base else (length, length)
    short, long = probe_lengths
    peak_a, time_a = _probe(config, short, batch_size, precision, inference, device)
    if long == short:
        per_token_bytes = 0.0
        peak_b, time_b = peak_a, time_a
    else:
        peak_b, time_b = _probe(config, long, batch_size, precision, inference, device)
        per_token_bytes = max(0.0, (peak_b - peak_a) / (long - short))
    # Time is linear in length with a negligible fixed part; the longer probe's rate is the steadier
    # one (a difference of two short timings is mostly noise on a shared machine).
    per_token_seconds = time_b / long
    fixed = peak_b - per_token_bytes * long
    return Plan(length, batch_size, precision, inference, str(device),
                peak_bytes=fixed + per_token_bytes * length,
                seconds=per_token_seconds * length,
                bytes_per_token=per_token_bytes / batch_size, fixed_bytes=fixed,
                available_bytes=available_bytes(device))


def plan_from_cli(config_path: str | None, length: int, *, batch_size: int = 1, precision: str = "32",
                  inference: bool = False) -> Plan:
    """``genoformer plan``: model settings from a pipeline or LightningCLI YAML (defaults otherwise)."""
    import yaml

    from ..tokenize import make_tokenizer

    settings: dict = {}
    if config_path:
        with open(config_path) as handle:
            loaded = yaml.safe_load(handle) or {}
        model = loaded.get("model", {})
        settings = dict(model.get("init_args", model))  # LightningCLI nests under init_args
    tokenizer = make_tokenizer(settings.pop("tokenizer", "nucleotide"))
    keep = {k: v for k, v in settings.items() if k in ReformerConfig.__dataclass_fields__}
    config = ReformerConfig(vocab_size=tokenizer.vocab_size, **keep)
    return plan(config, length, batch_size=batch_size, precision=precision, inference=inference)


def _probe_main(request: str) -> None:
    spec = json.loads(request)
    peak, seconds = measure_step(ReformerConfig.from_dict(spec["config"]), spec["length"], spec["batch_size"],
                                 spec["precision"], spec["inference"], torch.device("cpu"))
    print(json.dumps({"peak_bytes": peak, "seconds": seconds}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="memory probe (internal)")
    parser.add_argument("--probe", required=True)
    _probe_main(parser.parse_args().probe)
