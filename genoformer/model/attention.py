"""The three self-attention kinds: full (exact reference), local (chunk and neighbours) and LSH
(shared-QK angular hashing, sorted chunks), sharing projections computed one head group at a time."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genoformer.model.chunked import MASKED, SELF_PENALTY, ChunkSpec, chunked_attention
from genoformer.model.config import MAX_BUCKET_FACTOR, ReformerConfig
from genoformer.model.flex import flex_chunked_attention
from genoformer.model.rotary import apply_rotary, apply_rotary_
from genoformer.model.runtime import (
    SITE_ATTENTION_PROBS,
    SITE_HASH,
    ForwardContext,
    draw_keeps,
    keep_scale,
    mix_seed,
    seeded_generator,
)

_PAD_BUCKET = 2**30    # padding sorts after every real bucket (bucket ids stay < 2**22 * 2 / chunk)


# --------------------------------------------------------------------------------------- attention: shared
def merge_heads(o: torch.Tensor) -> torch.Tensor:
    """(batch, heads, L, head_dim) -> (batch, L, heads * head_dim), the output projection's input."""
    return o.transpose(1, 2).reshape(o.shape[0], o.shape[2], -1)


class _SelfAttention(nn.Module):
    """Projections shared by the three attention kinds, computed one head group at a time.

    Subclasses implement ``attend(projections, heads, ctx, state) -> (batch, heads_in_group, L, d)``
    where ``heads`` is the group's slice of heads (one of ``ctx.head_groups``) and projections are its
    (batch, heads_in_group, L, d) queries[, keys] and values. Where no gradient is wanted, ``attend``
    rotates the projections in place (they are the caller's temporaries).
    """

    def __init__(self, config: ReformerConfig, layer_index: int, shared_qk: bool):
        super().__init__()
        d = config.d_model
        self.config, self.layer_index, self.shared_qk = config, layer_index, shared_qk
        self.head_dim = config.head_dim
        if shared_qk:
            self.qk = nn.Linear(d, d, bias=False)
        else:
            self.q = nn.Linear(d, d, bias=False)
            self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, d)

    def in_projections(self) -> list[nn.Linear]:
        return [self.qk, self.v] if self.shared_qk else [self.q, self.k, self.v]

    def group_rows(self, heads: slice) -> slice:
        """The group's rows of each input projection (and columns of the output projection)."""
        return slice(heads.start * self.head_dim, heads.stop * self.head_dim)

    def group_in_weight(self, heads: slice) -> torch.Tensor:
        """The group's input projections stacked: (parts * group width, d_model), parts = [q, (k,) v]."""
        rows = self.group_rows(heads)
        return torch.cat([p.weight[rows] for p in self.in_projections()])

    def group_out_weight(self, heads: slice) -> torch.Tensor:
        return self.out.weight[:, self.group_rows(heads)]

    def project(self, x: torch.Tensor, heads: slice, norm: nn.Module | None = None, chunk: int = 0) -> list[torch.Tensor]:
        """The group's projections before rotation: [q, (k,) v], each (batch, heads_in_group, L, head_dim).

        Without ``norm``, x is the normalised input and one (autograd-tracked) matmul projects it.
        With ``norm``, x is the raw stream: it is normalised and projected ``chunk`` positions at a
        time into the outputs, so no full-length normalised copy exists (no-grad paths)."""
        weight = self.group_in_weight(heads)
        batch, length, _ = x.shape
        n_parts, n_heads, dim = len(self.in_projections()), heads.stop - heads.start, self.head_dim
        if norm is None:
            proj = F.linear(x, weight).view(batch, length, n_parts, n_heads, dim)
            # unbind, not one select per part: backward stacks the parts' gradients once, where each
            # select's backward would zero-fill a full-size gradient and autograd would add them up
            return [part.transpose(1, 2) for part in proj.unbind(2)]
        parts = None
        for s in range(0, length, chunk):
            proj = F.linear(norm(x[:, s:s + chunk]), weight)
            proj = proj.view(batch, proj.shape[1], n_parts, n_heads, dim)
            if parts is None:
                parts = [proj.new_empty(batch, n_heads, length, dim) for _ in range(n_parts)]
            for i, part in enumerate(parts):
                part[:, :, s:s + chunk] = proj[:, :, i].transpose(1, 2)
        return parts

    def branch(self, x: torch.Tensor, ctx: ForwardContext, state: dict) -> torch.Tensor:
        """Attention output of normalised x (all groups + output bias), autograd-tracked: (batch, L, d_model)."""
        out = None
        for heads in ctx.head_groups:
            o = self.attend(self.project(x, heads), heads, ctx, state)
            part = F.linear(merge_heads(o), self.group_out_weight(heads))
            out = part if out is None else out + part
        return out + self.out.bias

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Standalone use: hidden (batch, L, d_model), mask (batch, L) True at real tokens -> (batch, L, d_model).

        Pads internally to a chunk multiple. Rotations and dropout masks come from ``config.seed``
        (the :class:`Reformer` draws fresh ones per training call)."""
        batch, length, _ = hidden.shape
        seed = mix_seed(self.config.seed, 0)
        ctx = ForwardContext.build(self.config, batch, length, attention_mask, hidden.device,
                                   training=self.training, seed=seed, hash_seed=seed)
        x = F.pad(hidden, (0, 0, 0, ctx.padded_length - length))
        return self.branch(x, ctx, {})[:, :length]


def _kernel(ctx: ForwardContext):
    """The chunked attention kernel of this call: FlexAttention's fused one, or chunk steps (same function)."""
    return flex_chunked_attention if ctx.uses_flex_attention else chunked_attention


def _rotate(parts: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
    """Rotary positions; in place where no gradient is wanted (the projections are the caller's
    fresh temporaries, so the unrotated copy is not needed)."""
    if torch.is_grad_enabled() and parts.requires_grad:
        return apply_rotary(parts, ctx.cos, ctx.sin)
    return apply_rotary_(parts, ctx.cos, ctx.sin)


# --------------------------------------------------------------------------------------- full attention
class FullSelfAttention(_SelfAttention):
    """Exact softmax attention over the whole sequence: O(L^2), for short inputs and as the reference.

    With ``shared_qk=True`` it uses LSH attention's parameterisation and rules (keys = unit-normalised
    rotated queries, no 1/sqrt(d), own-token penalty), so with the same weights it is what LSH attention
    approximates. Uses ``scaled_dot_product_attention`` when no attention dropout is needed.
    """

    def __init__(self, config: ReformerConfig, layer_index: int = 0, shared_qk: bool = False):
        super().__init__(config, layer_index, shared_qk)

    def attend(self, parts, heads, ctx, state):
        q = _rotate(parts[0], ctx)
        if self.shared_qk:
            k, v, scale = F.normalize(q, dim=-1), parts[1], 1.0
        else:
            k, v, scale = _rotate(parts[1], ctx), parts[2], self.head_dim ** -0.5
        length = q.shape[2]
        bias = None
        if ctx.real is not None:  # (batch, 1, 1, L)
            bias = torch.zeros(ctx.real.shape, device=q.device).masked_fill_(~ctx.real, MASKED)[:, None, None]
        if self.config.causal:
            future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu_(1)
            causal = torch.zeros(length, length, device=q.device).masked_fill_(future, MASKED)
            bias = causal if bias is None else bias + causal
        if self.shared_qk:
            own = torch.eye(length, device=q.device) * SELF_PENALTY
            bias = own if bias is None else bias + own
        p = self.config.attention_dropout if ctx.training else 0.0
        if p == 0.0:
            mask = None if bias is None else bias.to(q.dtype)
            return F.scaled_dot_product_attention(q, k, v.contiguous(), attn_mask=mask, scale=scale)
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
        if bias is not None:
            scores = scores + bias
        probs = scores.softmax(-1)
        seed = mix_seed(ctx.site_seed(self.layer_index, SITE_ATTENTION_PROBS), heads.start)
        keeps = draw_keeps(probs.shape, p, seeded_generator(seed, q.device), q.device)
        return torch.matmul((probs * keeps).to(v.dtype), v) * keep_scale(p)


# --------------------------------------------------------------------------------------- local attention
class LocalSelfAttention(_SelfAttention):
    """Chunks of `chunk_size` positions attend to themselves and the previous chunk (and the next one
    when bidirectional). Separate keys, 1/sqrt(d) scaling; linear in length."""

    def __init__(self, config: ReformerConfig, layer_index: int = 0):
        super().__init__(config, layer_index, shared_qk=False)

    def attend(self, parts, heads, ctx, state):
        c = self.config.chunk_size
        n_chunks = ctx.padded_length // c
        offsets = (0,) if n_chunks == 1 else (0, -1) if self.config.causal else (0, -1, 1)
        spec = ChunkSpec(
            chunk=c, offsets=offsets, causal=self.config.causal, causal_window=False,
            self_penalty=False, scale=self.head_dim ** -0.5,
            dropout=self.config.attention_dropout if ctx.training else 0.0,
            dropout_seed=mix_seed(ctx.site_seed(self.layer_index, SITE_ATTENTION_PROBS), heads.start),
            rows_per_step=ctx.attention_rows, keep_dropout_masks=ctx.keeps_activations(self.layer_index))
        return _kernel(ctx)(_rotate(parts[0], ctx), _rotate(parts[1], ctx), parts[2], None, None, ctx.real, spec)


# --------------------------------------------------------------------------------------- LSH attention
def bucket_widths(config: ReformerConfig, n_real: torch.Tensor, padded_length: int) -> tuple[torch.Tensor, list[int]]:
    """Bucket count of each sequence as a product of hash factors.

    Returns widths (batch, factors) int64 (buckets per factor, 1 = unused) and each factor's largest
    width in the batch. With ``n_buckets=None`` a sequence of n real tokens gets the next power of two
    >= 2 * ceil(n / chunk) buckets, so padding never changes a sequence's hashing."""
    device = n_real.device
    factor_bits = MAX_BUCKET_FACTOR.bit_length() - 1
    if config.n_buckets is not None and config.n_buckets <= MAX_BUCKET_FACTOR:
        widths = torch.full((n_real.shape[0], 1), config.n_buckets, dtype=torch.long, device=device)
        return widths, [config.n_buckets]
    if config.n_buckets is not None:
        bits = torch.full_like(n_real, config.n_buckets.bit_length() - 1)
        max_bits = config.n_buckets.bit_length() - 1
    else:
        c = config.chunk_size
        powers = 2 ** torch.arange(0, 62, device=device)
        chunks = (n_real.clamp(min=1) + c - 1) // c
        bits = 1 + torch.searchsorted(powers, chunks)  # 2 * next_pow2(chunks)
        max_bits = 1 + max(0, (padded_length // c - 1).bit_length())
    n_factors = -(-max_bits // factor_bits)
    shifts = torch.arange(n_factors, device=device) * factor_bits
    widths = 2 ** (bits[:, None] - shifts).clamp(0, factor_bits)
    return widths, [2 ** min(max(max_bits - i * factor_bits, 0), factor_bits) for i in range(n_factors)]


def lsh_sort(queries: torch.Tensor, ctx: ForwardContext, config: ReformerConfig, seed: int,
             heads: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hash the keys of queries (batch, G, L, d) and sort each round by bucket.

    Angular LSH: bucket = argmax([xR; -xR]) of the unit key x for a random Gaussian R per round,
    head and factor. Rotations are drawn with shape (n_heads, d, 64) whatever the length, so a
    head's rotation does not depend on padding or on the head grouping. Positions are hashed
    ``ctx.ff_positions`` at a time (only the int32 bucket ids have the full length). Padding goes to a
    bucket after all real ones. Returns perm (batch*G, rounds, L) int32 (sorted index -> position;
    stable, so ties keep position order) and, for causal attention only (it masks other buckets),
    the sorted bucket ids (int32).
    """
    batch, n_group, length, d = queries.shape
    widths, max_widths = bucket_widths(config, ctx.n_real, length)
    half_cols = MAX_BUCKET_FACTOR // 2
    unused = None
    if config.n_buckets is None:  # shorter sequences use fewer columns (fewer buckets)
        unused = [torch.arange(w // 2, device=queries.device) >= (widths[:, i] // 2)[:, None]  # (B, w/2)
                  for i, w in enumerate(max_widths)]
    perms, sorted_buckets = [], []
    for r in range(ctx.n_hashes):
        rotations = [None if w == 1 else
                     torch.randn(config.n_heads, d, half_cols, generator=seeded_generator(mix_seed(seed, r, i), torch.device("cpu")))
                     [heads, :, :w // 2].to(device=queries.device, dtype=queries.dtype)
                     for i, w in enumerate(max_widths)]
        bucket = torch.empty(batch, n_group, length, dtype=torch.int32, device=queries.device)
        for s in range(0, length, ctx.ff_positions):
            keys = F.normalize(queries[:, :, s:s + ctx.ff_positions], dim=-1)
            part = torch.zeros(keys.shape[:3], dtype=torch.long, device=keys.device)
            stride = torch.ones(batch, dtype=torch.long, device=keys.device)
            for i, rotation in enumerate(rotations):
                width = widths[:, i]
                if rotation is not None:
                    proj = torch.matmul(keys, rotation)  # (B, G, chunk, w/2)
                    magnitude = proj.abs()
                    if unused is not None:
                        magnitude.masked_fill_(unused[i][:, None, None, :], -1.0)
                    index = magnitude.argmax(-1)
                    negative = proj.gather(-1, index[..., None]).squeeze(-1) < 0
                    part += (index + negative * (width // 2)[:, None, None]) * stride[:, None, None]
                stride = stride * width
            bucket[:, :, s:s + ctx.ff_positions] = part
        if ctx.real is not None:
            bucket.masked_fill_(~ctx.real[:, None, :], _PAD_BUCKET)
        values, order = torch.sort(bucket.view(batch * n_group, length), dim=-1, stable=True)
        perms.append(order.to(torch.int32))
        if config.causal:
            sorted_buckets.append(values)
    return torch.stack(perms, 1), torch.stack(sorted_buckets, 1) if config.causal else None


class LSHSelfAttention(_SelfAttention):
    """Reformer LSH attention: shared-QK, ``n_hashes`` rounds of angular hashing, sort by bucket,
    chunks attend to themselves and their neighbours in sorted order, rounds combined by log-sum-exp.

    Per call and head group it records the hash permutations in ``state`` (int32), so a reversible
    recomputation attends over exactly the same chunks."""

    def __init__(self, config: ReformerConfig, layer_index: int = 0):
        super().__init__(config, layer_index, shared_qk=True)

    def attend(self, parts, heads, ctx, state):
        q = _rotate(parts[0], ctx)
        if heads.start not in state:
            with torch.no_grad():
                state[heads.start] = lsh_sort(q, ctx, self.config,
                                              ctx.site_seed(self.layer_index, SITE_HASH), heads)
        perm, sorted_buckets = state[heads.start]
        c = self.config.chunk_size
        n_chunks = ctx.padded_length // c
        offsets = (0,) if n_chunks == 1 else (0, -1) if self.config.causal else (0, -1, 1)
        spec = ChunkSpec(
            chunk=c, offsets=offsets, causal=False, causal_window=self.config.causal,
            self_penalty=True, scale=1.0,
            dropout=self.config.attention_dropout if ctx.training else 0.0,
            dropout_seed=mix_seed(ctx.site_seed(self.layer_index, SITE_ATTENTION_PROBS), heads.start),
            rows_per_step=ctx.attention_rows, shared_keys=True, keep_dropout_masks=ctx.keeps_activations(self.layer_index))
        return _kernel(ctx)(q, None, parts[1], perm, sorted_buckets, ctx.real, spec)
