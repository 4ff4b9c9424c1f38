"""How much memory a training step's kept activations take, and whether they fit: what
``reversible="auto"`` asks on every training call (an estimate from the config, no probe: the
measured planner in :mod:`genoformer.model.memory` builds networks, which build on this)."""
from __future__ import annotations

import os

import torch

from .config import ReformerConfig

# Bytes per token and layer that an ordinary (non-reversible) training step keeps for backward, as
# float32 values per d_model and d_ff unit. Live tensor bytes after the forward (_TensorBytes), per
# token and layer, measured with the float32 / bool dropout masks of db7bf19: 7,820 at d_model 128 /
# d_ff 256 with dropout 0.05 (the recipes' model), 6,796 without; 19,496 at 256 / 1,024 (LSH, 4 hashes);
# 23,656 at 256 / 1,024 with dropout 0.1; 7,412 at 64 / 512 (8 hashes). 12 and 3 bound them all; the
# uint8 masks used since keep less with dropout on, so the bound is looser there.
_KEPT_PER_D_MODEL, _KEPT_PER_D_FF = 12, 3
# Reversible "auto" keeps activations when they take at most this share of the free memory: an ordinary
# step's peak is ~1.3x its kept activations, so such a step stays well inside the planner's 0.9 (Plan.fits).
ACTIVATION_SHARE = 0.25


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


def kept_activation_bytes(config: ReformerConfig, tokens: int) -> float:
    """Upper estimate of the bytes an ordinary (non-reversible) training step over ``tokens`` (batch x
    padded length) keeps for backward, in float32 (bf16 autocast keeps less). With attention dropout the
    chunked kernel also keeps its draws: a byte per query, key chunk (3) x chunk key and hash round."""
    per_token = 4.0 * config.depth * (_KEPT_PER_D_MODEL * config.d_model + _KEPT_PER_D_FF * config.d_ff)
    if config.attention_dropout:
        rounds = sum({"lsh": config.n_hashes, "local": 1}.get(kind, 0) for kind in config.layer_types)
        per_token += config.n_heads * 3 * config.chunk_size * rounds
    return tokens * per_token


def kept_blocks(config: ReformerConfig, tokens: int, device: torch.device) -> int:
    """How many blocks of a training step over ``tokens`` may keep their activations (``reversible="auto"``;
    the others recompute them): as many as fit in ``ACTIVATION_SHARE`` of the device's free memory, each
    taking 1 / depth of :func:`kept_activation_bytes`."""
    per_block = kept_activation_bytes(config, tokens) / config.depth
    return int(min(config.depth, ACTIVATION_SHARE * available_bytes(device) // per_block))
