"""How much memory a training step's kept activations take, and whether they fit: what
``reversible="auto"`` asks on every training call (an estimate from the config, no probe: the
measured planner in :mod:`genoformer.model.memory` builds networks, which build on this)."""
from __future__ import annotations

import os

import torch

from .config import ReformerConfig

# Values per token and layer that an ordinary (non-reversible) training step keeps for backward, per
# d_model and d_ff unit. Live tensor bytes after the forward (_TensorBytes), per token and layer, measured
# in float32 with the float32 / bool dropout masks of db7bf19: 7,820 at d_model 128 / d_ff 256 with
# dropout 0.05 (the recipes' model), 6,796 without; 19,496 at 256 / 1,024 (LSH, 4 hashes); 23,656 at
# 256 / 1,024 with dropout 0.1; 7,412 at 64 / 512 (8 hashes). 12 and 3 float32 values bound them all; the
# uint8 masks used since keep less with dropout on, so the bound is looser there.
_KEPT_PER_D_MODEL, _KEPT_PER_D_FF = 12, 3
# Bytes per such value: float32 steps keep float32; under bf16 (or fp16) autocast most kept tensors are
# the autocast dtype's, the rest (layer norms' statistics, log-sum-exps, integer permutations) wider:
# measured 1.8-2.1 bytes at 256 / 1,024 (2 hashes), 256 / 768 (4 hashes) and 64 / 128 under bf16 on a CPU,
# 2.34 on an H200 with FlexAttention (256 / 1,024, 2 hashes, 1 Mb: 84.2 GiB kept by six blocks); fp16 is
# taken to be as bf16 (not measured).
_BYTES_PER_VALUE = {torch.float32: 4.0, torch.bfloat16: 2.5, torch.float16: 2.5}
# Reversible "auto" keeps activations when they take at most this share of the free memory, so that a
# step stays inside the planner's 0.9 (Plan.fits) beside what the reversible blocks need. On a CPU an
# ordinary step's peak is ~1.3x its kept activations. On a GPU (H200, 1 Mb, bf16) it is the kept
# activations plus 3-10 GiB, and an all-reversible step's peak is 8-21 kB a token (21 at 1 Mb, 8 at 4-8
# Mb): at the worst length, one block just inside 0.55 of the memory beside a reversible rest, a step
# peaks near 0.83 of it. At 1 Mb on an H200 that keeps five of six blocks: 0.86 s a step against 1.07 s
# with all six reversible (bench/README.md).
ACTIVATION_SHARE = {"cpu": 0.25, "cuda": 0.55}


def available_bytes(device: torch.device) -> float:
    """Free memory now: GPU memory for CUDA (what the device has free plus what torch's caching allocator
    holds unused, so a second step does not see the first step's cached blocks as taken), ``MemAvailable``
    for the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def kept_activation_bytes(config: ReformerConfig, tokens: int, dtype: torch.dtype = torch.float32) -> float:
    """Upper estimate of the bytes an ordinary (non-reversible) training step over ``tokens`` (batch x
    padded length) keeps for backward, computing in ``dtype`` (float32, or the autocast dtype of a
    mixed-precision step). With attention dropout the chunked kernel also keeps its draws: a byte per
    query, key chunk (3) x chunk key and hash round."""
    values = _KEPT_PER_D_MODEL * config.d_model + _KEPT_PER_D_FF * config.d_ff
    per_token = _BYTES_PER_VALUE.get(dtype, 4.0) * config.depth * values
    if config.attention_dropout:
        rounds = sum({"lsh": config.n_hashes, "local": 1}.get(kind, 0) for kind in config.layer_types)
        per_token += config.n_heads * 3 * config.chunk_size * rounds
    return tokens * per_token


def kept_blocks(config: ReformerConfig, tokens: int, device: torch.device, dtype: torch.dtype = torch.float32) -> int:
    """How many blocks of a training step over ``tokens`` computing in ``dtype`` may keep their activations
    (``reversible="auto"``; the others recompute them): as many as fit in the device type's
    ``ACTIVATION_SHARE`` of its free memory, each taking 1 / depth of :func:`kept_activation_bytes`."""
    per_block = kept_activation_bytes(config, tokens, dtype) / config.depth
    share = ACTIVATION_SHARE.get(device.type, ACTIVATION_SHARE["cpu"])
    return int(min(config.depth, share * available_bytes(device) // per_block))
