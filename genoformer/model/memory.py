"""Memory planner: predict a training step's peak memory and time before running it.

Everything in the Reformer that grows with the sequence grows linearly (chunked attention, chunked
feed-forward, reversible layers that keep one block's activations), so peak memory and time are
``fixed + per_token * tokens``. Rather than a hand-kept formula that drifts from the code, the
planner measures two probe steps of the real model on the current device (on a CPU each in a fresh
process, counting the bytes of live tensors as well as the resident peak) and extrapolates. Probes
take one to three minutes on two CPU cores; the prediction is checked against measurements at long
lengths by ``bench/long_windows.py``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import ConfigError, InputFileError, MemoryPlanError
from .activations import available_bytes, kept_blocks
from .config import DEFAULT_TOKENIZER, ReformerConfig

GiB = 1024**3
_LOSS_STRIDE = 6  # every 6th position: the 15% a masked-LM loss reads
__all__ = ["Plan", "StepCost", "plan", "plan_from_cli", "measure_step"]


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


@dataclass
class StepCost:
    """One measured step."""

    peak_bytes: float    # the process's peak: GPU memory allocated, or on a CPU the resident high-water mark
    tensor_bytes: float  # memory before the step + the most bytes its tensors held at once
    seconds: float


def measure_step(config: ReformerConfig, length: int, batch_size: int, precision: str, inference: bool,
                 device: torch.device) -> StepCost:
    """Cost of one step, measured in this process (fresh on a CPU): its peak and its tensors' peak.

    On a CPU both are read because neither alone extrapolates: a short probe's tensors of a few MB
    land on malloc's heap, whose freed blocks stay resident, while at long lengths the same tensors
    are hundreds of MB, mmapped and returned on free; so the resident peaks of two short probes
    over-state the bytes per token (by up to 45% in bf16 at the bench configuration, depending
    on malloc's mmap threshold), while the live tensor bytes grow exactly as the long step's do.
    """
    from .networks import ReformerForMaskedLM

    network = ReformerForMaskedLM(config).to(device)
    optimizer = torch.optim.AdamW(network.parameters())
    ids = torch.randint(0, config.vocab_size, (batch_size, length), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        _step(network, optimizer, ids, precision, inference)
        torch.cuda.synchronize(device)
        peak = float(torch.cuda.max_memory_allocated(device))  # the caching allocator counts tensors exactly
        return StepCost(peak, peak, time.perf_counter() - started)
    _reset_peak_rss()
    before = _rss("VmRSS")
    with _TensorBytes() as counted:
        started = time.perf_counter()
        _step(network, optimizer, ids, precision, inference)
        seconds = time.perf_counter() - started
    return StepCost(_rss("VmHWM"), before + counted.peak, seconds)


def _step(network, optimizer: torch.optim.Optimizer, ids: torch.Tensor, precision: str, inference: bool) -> None:
    autocast = torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=precision != "32")
    if inference:
        network.eval()
        with torch.no_grad(), autocast:
            network(ids)
        return
    with autocast:
        hidden = network(ids)
        # The masked-LM loss reads 15% of positions, gathered (a copy, as the pretraining task's
        # boolean index is), so the full-length output is freed before backward.
        picked = hidden[:, ::_LOSS_STRIDE].contiguous()
        del hidden
        loss = torch.nn.functional.cross_entropy(network.lm_head(picked).flatten(0, 1).float(),
                                                 ids[:, ::_LOSS_STRIDE].flatten())
        del picked
    loss.backward()
    optimizer.step()


class _TensorBytes(TorchDispatchMode):
    """Counts the bytes of live CPU tensor storages as operators create them; keeps the peak.

    Every operator's outputs pass through here (autograd's backward too); a storage is counted once
    (views share it) and uncounted when it is freed. Scratch memory inside one operator's kernel is
    not seen; bytes per token from this count agree with long measured steps within 1% (bench).
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._sizes: dict[int, int] = {}  # storage handle -> bytes, while it lives

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
                storage = tensor.untyped_storage()
                if storage._cdata not in self._sizes:
                    self._sizes[storage._cdata] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._freed, storage._cdata)
        return out

    def _freed(self, handle: int) -> None:
        self.live -= self._sizes.pop(handle)


def _reset_peak_rss() -> None:
    """Reset the kernel's high-water mark (VmHWM), so start-up (imports) does not hide the step's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # not Linux: ru_maxrss below then includes start-up


def _rss(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (high-water mark) of this process in bytes."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _probe(config: ReformerConfig, length: int, batch_size: int, precision: str, inference: bool,
           device: torch.device) -> StepCost:
    if device.type == "cuda":
        return measure_step(config, length, batch_size, precision, inference, device)
    request = json.dumps({"config": config.to_dict(), "length": length, "batch_size": batch_size,
                          "precision": precision, "inference": inference})
    result = subprocess.run([sys.executable, "-m", "genoformer.model.memory", "--probe", request],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise MemoryPlanError(f"the memory probe at {length} tokens failed: {result.stderr.strip().splitlines()[-1:]}")
    return StepCost(**json.loads(result.stdout.strip().splitlines()[-1]))


def plan(config: ReformerConfig, length: int, *, batch_size: int = 1, precision: str = "32",
         inference: bool = False, device: str | torch.device | None = None,
         probe_lengths: tuple[int, int] | None = None) -> Plan:
    """Predict peak memory and time of a step at ``length`` tokens from two probe steps."""
    if precision not in ("32", "bf16-mixed"):
        raise ConfigError(f"precision must be '32' or 'bf16-mixed', got {precision!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    padded = -(-length // config.chunk_size) * config.chunk_size
    if config.reversible == "auto":  # probe the stack the planned step will run, whatever the probes' size
        dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
        kept = 0 if inference else kept_blocks(config, batch_size * padded, device, dtype)
        config = dataclasses.replace(config, reversible=config.depth - kept)
    if config.head_group_size is None:  # probe with the head grouping the long call will use
        heads = config.head_groups(batch_size * padded, device.type)[0]
        config = dataclasses.replace(config, head_group_size=heads.stop - heads.start)
    if probe_lengths is None:
        # A step's peak is the largest of several moments, each ``fixed + per_token * tokens``: in a
        # short step the feed-forward chunk's activations (sized by ff_chunk_size, not by length) can
        # decide the peak, in a long one the attention backward's full-length tensors do. Both probes
        # must lie past that crossover or the slope between them is too low: fp32 at the bench
        # configuration gives 6,161 bytes/token from 32k/64k-token probes and 6,811 from 64k/128k
        # (also 6,800 with chunk knobs too small to matter); bf16 4,016 either way, against 4,033
        # measured at 262k-1M. Inference holds about a third of what training does per token, so its
        # crossover lies 2x further out (32k/64k probes: 1,234 bytes/token; 128k/256k: 1,653, against
        # 1,666 measured at 1-4 Mb).
        # Probes stay CPU-sized on any device: a GPU's 1M-position steps would make them as long as the
        # step being planned. There the feed-forward chunk grows with the probe, so the slope can only
        # over-state.
        base = max(config.ff_positions("cpu"), 64 * config.chunk_size) * (2 if inference else 1)
        probe_lengths = (8 * base, 16 * base) if length > 16 * base else (length, length)
    short, long = probe_lengths
    a = _probe(config, short, batch_size, precision, inference, device)
    b = a if long == short else _probe(config, long, batch_size, precision, inference, device)
    # Bytes per token from the tensors' growth, anchored on the shorter probe's real peak (its heap
    # slack, ~0.3 GiB at the bench configuration, stays in the fixed part; a pure tensor count would
    # under-predict by that much).
    per_token_bytes = 0.0 if long == short else max(0.0, (b.tensor_bytes - a.tensor_bytes) / (long - short))
    # Time is linear in length with a negligible fixed part; the longer probe's rate is the steadier
    # one (a difference of two short timings is mostly noise on a shared machine).
    per_token_seconds = b.seconds / long
    fixed = a.peak_bytes - per_token_bytes * short
    return Plan(length, batch_size, precision, inference, str(device),
                peak_bytes=fixed + per_token_bytes * length,
                seconds=per_token_seconds * length,
                bytes_per_token=per_token_bytes / batch_size, fixed_bytes=fixed,
                available_bytes=available_bytes(device))


def plan_from_cli(config_path: str | None, length: int, *, batch_size: int = 1, precision: str = "32",
                  inference: bool = False) -> Plan:
    """``genoformer plan``: the encoder training would build from a pipeline or LightningCLI YAML
    (ReformerConfig's defaults without one, as training without settings)."""
    return plan(training_config(config_path), length, batch_size=batch_size, precision=precision, inference=inference)


def training_config(config_path: str | None) -> ReformerConfig:
    """The encoder config a training run of ``config_path`` builds: a LightningCLI YAML's ``model.init_args``
    (tokenizer, ``encoder``, objective, or a ``pretrained`` folder's config) or a pipeline's ``model`` section
    (tokenizer and encoder settings)."""
    import yaml

    from ..tokenize import make_tokenizer
    from .io import load_pretrained

    model: dict = {}
    if config_path:
        try:
            with open(config_path) as handle:
                model = (yaml.safe_load(handle) or {}).get("model") or {}
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            raise InputFileError(config_path, f"cannot read it as a training YAML ({exc})") from None
    where = f"{config_path}: model"
    if "class_path" in model or "init_args" in model:  # LightningCLI
        args = model.get("init_args") or {}
        if args.get("pretrained"):
            return load_pretrained(args["pretrained"]).config
        tokenizer_name, encoder = args.get("tokenizer", DEFAULT_TOKENIZER), args.get("encoder")
        causal, where = args.get("objective") == "causal", f"{where}.init_args.encoder"
    else:  # pipeline: the model section is the tokenizer and the encoder settings
        encoder = {k: v for k, v in model.items() if k != "tokenizer"}
        tokenizer_name, causal = model.get("tokenizer", DEFAULT_TOKENIZER), False
    return ReformerConfig.from_settings(encoder, make_tokenizer(tokenizer_name), causal=causal, where=where)


def _probe_main(request: str) -> None:
    spec = json.loads(request)
    cost = measure_step(ReformerConfig.from_dict(spec["config"]), spec["length"], spec["batch_size"],
                        spec["precision"], spec["inference"], torch.device("cpu"))
    print(json.dumps(dataclasses.asdict(cost)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="memory probe (internal)")
    parser.add_argument("--probe", required=True)
    _probe_main(parser.parse_args().probe)
