"""Rotary positions: cos/sin tables exact at any position, applied out of place or in place."""
from __future__ import annotations

import math

import torch

_ROTARY_BLOCK = 4096  # rotary tables: angle addition over blocks of this many positions
_ROTARY_INPLACE_CHUNK = 16384  # positions rotated per step in place


def rotary_tables(length: int, dim: int, base: float, device: torch.device,
                  start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of rotary angles for positions [start, start + length): two (length, dim/2) float32 tensors.

    Position start + B*i + j uses the angle-addition formulas on two small float64 tables, for block
    starts (reduced modulo 2*pi in float64, so position 2**22 is as exact as position 1) and for
    offsets j < B; only the float32 results have the full length."""
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)
    block = min(length, _ROTARY_BLOCK)
    n_blocks = -(-length // block)
    starts = torch.outer(start + torch.arange(n_blocks, dtype=torch.float64, device=device) * block, inv_freq)
    starts = starts.remainder_(2 * math.pi)
    offsets = torch.outer(torch.arange(block, dtype=torch.float64, device=device), inv_freq)
    cos_a, sin_a = starts.cos().float()[:, None], starts.sin().float()[:, None]  # (blocks, 1, dim/2)
    cos_b, sin_b = offsets.cos().float(), offsets.sin().float()  # (block, dim/2)
    cos = (cos_a * cos_b).addcmul_(sin_a.expand(-1, block, -1), sin_b, value=-1.0)
    sin = (sin_a * cos_b).addcmul_(cos_a.expand(-1, block, -1), sin_b)
    return cos.view(-1, dim // 2)[:length], sin.view(-1, dim // 2)[:length]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + d/2) of x (..., length, d) by the position angles."""
    x1, x2 = x.chunk(2, dim=-1)  # (split: its backward concatenates, slicing's would zero-fill twice)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def apply_rotary_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rotary` in place, ``_ROTARY_INPLACE_CHUNK`` positions at a time (no autograd): the
    same roundings in the same order, without a second full-length copy of x."""
    half = x.shape[-1] // 2
    for s in range(0, x.shape[-2], _ROTARY_INPLACE_CHUNK):
        part = x[..., s:s + _ROTARY_INPLACE_CHUNK, :]
        x1, x2 = part[..., :half], part[..., half:]
        c = cos[s:s + _ROTARY_INPLACE_CHUNK].to(x.dtype)
        si = sin[s:s + _ROTARY_INPLACE_CHUNK].to(x.dtype)
        rotated_x1 = x1 * c - x2 * si
        x2.mul_(c).add_(x1 * si)
        x1.copy_(rotated_x1)
    return x

