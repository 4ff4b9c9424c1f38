"""The Reformer encoder (Kitaev, Kaiser & Levskaya 2020), in the paper's order.

    rotary positions -> full attention (the exact reference) -> chunked attention kernel
    -> local attention -> LSH attention -> chunked feed-forward -> reversible block
    -> reversible stack (custom autograd) -> Reformer model

Design decisions (see also :class:`~genoformer.model.config.ReformerConfig`):

* Positions are rotary, computed per call from float64 block angles (exact at position 2**22 and
  beyond; no table stored between calls), applied to queries (and keys); LSH hashes the rotated, unit-normalised
  vectors it attends with.
* LSH attention shares queries and keys: keys are the unit-normalised rotated queries and logits are
  ``q . k_hat`` with no further 1/sqrt(d) (as trax and Hugging Face do): |q| acts as a learned
  per-query temperature, while an extra 1/sqrt(64) would start every head almost uniform.
  Local and full attention use separate keys and the usual 1/sqrt(d).
* Masks are additive. Masked keys (padding, causal, outside the window) get -1e9; a token's own key
  gets -1e5 under shared QK, so it is attended to only when nothing else is available (and still
  beats masked keys). Full attention applies the same rules, so it is the test reference.
* Multi-round LSH combines rounds by their log-sum-exp (equivalently: one softmax over the union of
  every round's keys). Keys met in several rounds count several times, as in trax/HF (the paper's
  duplicate correction is left off).
* Neighbouring chunks do not wrap around the ends of the sorted order (trax/HF wrap): a wrapped
  neighbour would make real tokens depend on how much padding follows. Padding is hashed into a
  bucket after every real one, and each sequence's bucket count follows its own real length.
* Causal LSH attends to keys of the query's own bucket at most one chunk back in sorted order (a
  sliding window), not to whole neighbouring chunks: chunk boundaries depend on later tokens'
  buckets, so chunk-aligned causal LSH would let later tokens change earlier outputs.
* Memory is linear in length. The chunked kernel (`_ChunkedAttention`) scores
  ``attention_chunk_tokens`` query rows at a time, keeps only q, (k,) v, the output and one
  log-sum-exp per row (LSH keys are normalised from q as each step gathers them), and recomputes
  scores in backward (flash-attention style); hash rounds are folded in one after another with an
  online log-sum-exp; heads are processed in groups of ``head_group_size`` (by default chosen per
  call from batch x length); the feed-forward runs ``ff_chunk_size`` positions at a time; hashing
  runs over chunks of positions. Sorting is a stable sort on int32 bucket ids (no bucket*L+pos key
  to overflow); the permutations are int32.
* Under bf16 autocast everything that grows with length is bf16 (``low_precision_streams``): the
  two residual streams and their gradients, the rotary tables, projections, the attention output
  (rounds blended in float32, stored in bf16); accumulators that sum many terms (gradients of q and
  v, log-sum-exps, weight gradients) stay float32. Where no gradient is wanted, rotation is in place.
* Randomness never touches the global RNG. Rotations and dropout masks come from private
  ``torch.Generator``s seeded from (config.seed, call counter, layer, site[, block]); dropout masks
  are defined per block of positions, so they do not depend on how the length is chunked.
* Reversible replay is exact: the stack stores each LSH layer's permutations (int32) and recomputes
  dropout masks from the same seeds; the recomputation runs under the forward's autocast state.
  The stack's autograd Function receives every parameter as an input and returns their gradients,
  computed with ``torch.autograd.grad`` inside its backward; each parameter's gradient is therefore
  accumulated exactly once per backward, so DDP hooks fire once (no static_graph or
  find_unused_parameters needed), and parameters get gradients even when the stack input does not
  require grad.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genoformer.model.config import MAX_BUCKET_FACTOR, ReformerConfig

MASKED = -1e9          # additive logit for keys a query must not see
SELF_PENALTY = -1e5    # added to a token's own logit under shared QK: used only when nothing else is left
_PAD_BUCKET = 2**30    # padding sorts after every real bucket (bucket ids stay < 2**22 * 2 / chunk)
_DROPOUT_BLOCK = 1024  # positions per dropout-mask block (masks are a function of position only)
_ROTARY_BLOCK = 4096  # rotary tables: angle addition over blocks of this many positions
_ROTARY_INPLACE_CHUNK = 16384  # positions rotated per step in place
_HASH_CHUNK = 8192  # positions hashed at a time (bounds the projection temporaries)

_SITE_ATTENTION_OUT, _SITE_FEED_FORWARD, _SITE_ATTENTION_PROBS, _SITE_HASH = 1, 2, 3, 4


def _mix(*values: int) -> int:
    """Deterministic 63-bit seed from integers (splitmix64 steps): independent streams per site."""
    mask = (1 << 64) - 1
    h = 0x9E3779B97F4A7C15
    for value in values:
        h = (h ^ (value & mask)) & mask
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & mask
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & mask
        h ^= h >> 31
    return h & ((1 << 63) - 1)


def _load_malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim()


def _release_host_memory(device: torch.device) -> None:
    """Return freed heap pages to the OS between blocks. glibc keeps them, and with each layer's
    differently sized temporaries the resident set of a long-sequence run would creep up with depth
    (measured: 1.45x from depth 2 to 12 at 16k tokens without this, 1.15x with it; no time cost)."""
    if device.type == "cpu" and _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


# --------------------------------------------------------------------------------------- per-call state
@dataclass
class ForwardContext:
    """What every layer of one forward call shares: padding, positions and seeds.

    ``real`` is (batch, padded_length) bool, True at real tokens, or None when nothing is padded;
    ``n_real`` (batch,) counts them. ``cos``/``sin`` are the rotary tables, (padded_length, head_dim/2),
    in the dtype the projections they rotate have (bf16 under bf16 autocast: the same values rotation
    would cast them to, at half the memory).
    ``head_groups`` are the slices of heads attended together and ``attention_rows`` the query rows per
    attention kernel step, both for this call's size and device (see ``ReformerConfig``).
    """

    length: int
    padded_length: int
    real: torch.Tensor | None
    n_real: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    seed: int
    hash_seed: int
    training: bool
    n_hashes: int
    head_groups: list[slice]
    attention_rows: int

    @classmethod
    def build(cls, config: ReformerConfig, batch: int, length: int, attention_mask: torch.Tensor | None,
              device: torch.device, *, training: bool, seed: int, hash_seed: int,
              dtype: torch.dtype = torch.float32) -> "ForwardContext":
        if length < 1:
            raise ValueError("input length must be >= 1")
        padded = -(-length // config.chunk_size) * config.chunk_size
        if attention_mask is None and padded == length:
            real, n_real = None, torch.full((batch,), length, dtype=torch.long, device=device)
        else:
            real = torch.zeros(batch, padded, dtype=torch.bool, device=device)
            real[:, :length] = True if attention_mask is None else attention_mask.to(device=device, dtype=torch.bool)
            n_real = real.sum(1)
        cos, sin = (t.to(dtype) for t in rotary_tables(padded, config.head_dim, config.rotary_base, device))
        n_hashes = config.n_hashes if training or config.eval_n_hashes is None else config.eval_n_hashes
        return cls(length, padded, real, n_real, cos, sin, seed, hash_seed, training, n_hashes,
                   config.head_groups(batch * padded, device.type), config.attention_rows(device.type))

    def site_seed(self, layer: int, site: int) -> int:
        return _mix(self.hash_seed if site == _SITE_HASH else self.seed, layer, site)


def _keep_mask(seed: int, batch: int, start: int, end: int, width: int, p: float,
               device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Inverted-dropout multipliers (0 or 1/(1-p)) for positions [start, end): (batch, end-start, width).

    Each block of `_DROPOUT_BLOCK` positions has its own generator, so a position's mask is the same
    however the caller chunks the length (reversible recompute, ordinary stack, any padding)."""
    first, last = start // _DROPOUT_BLOCK, (end - 1) // _DROPOUT_BLOCK
    blocks = [torch.empty(batch, _DROPOUT_BLOCK, width, device=device, dtype=dtype)
              .bernoulli_(1.0 - p, generator=_generator(_mix(seed, b), device))
              for b in range(first, last + 1)]
    offset = first * _DROPOUT_BLOCK
    return torch.cat(blocks, 1)[:, start - offset:end - offset].div_(1.0 - p)


def _dropout(x: torch.Tensor, p: float, ctx: ForwardContext, seed: int, start: int = 0) -> torch.Tensor:
    """Dropout on (batch, positions, width) with masks keyed by absolute position (see `_keep_mask`)."""
    if not ctx.training or p == 0.0:
        return x
    dtype = torch.promote_types(x.dtype, torch.float32)
    return x * _keep_mask(seed, x.shape[0], start, start + x.shape[1], x.shape[2], p, x.device, dtype)


# --------------------------------------------------------------------------------------- rotary positions
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


# --------------------------------------------------------------------------------------- attention: shared
def _merge_heads(o: torch.Tensor) -> torch.Tensor:
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
            return [proj[:, :, i].transpose(1, 2) for i in range(n_parts)]
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
            part = F.linear(_merge_heads(o), self.group_out_weight(heads))
            out = part if out is None else out + part
        return out + self.out.bias

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Standalone use: hidden (batch, L, d_model), mask (batch, L) True at real tokens -> (batch, L, d_model).

        Pads internally to a chunk multiple. Rotations and dropout masks come from ``config.seed``
        (the :class:`Reformer` draws fresh ones per training call)."""
        batch, length, _ = hidden.shape
        seed = _mix(self.config.seed, 0)
        ctx = ForwardContext.build(self.config, batch, length, attention_mask, hidden.device,
                                   training=self.training, seed=seed, hash_seed=seed)
        x = F.pad(hidden, (0, 0, 0, ctx.padded_length - length))
        return self.branch(x, ctx, {})[:, :length]


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
        seed = _mix(ctx.site_seed(self.layer_index, _SITE_ATTENTION_PROBS), heads.start)
        keep = torch.empty_like(probs).bernoulli_(1.0 - p, generator=_generator(seed, q.device)).div_(1.0 - p)
        return torch.matmul((probs * keep).to(v.dtype), v)


# --------------------------------------------------------------------------------------- chunked kernel
@dataclass(frozen=True)
class _ChunkSpec:
    """How the chunked kernel pairs query chunks with key chunks and masks them.

    offsets: key chunks each query chunk sees, relative to itself, own chunk first. Neighbours do not
        wrap around the ends (as they do in trax/HF): a wrapped neighbour would depend on padding.
    causal: key position <= query position (positions equal sorted indices: local attention only).
    causal_window: causal LSH: keys in the query's bucket at most `chunk` sorted steps back, which
        depends only on earlier tokens (a chunk-aligned window would depend on later tokens' buckets).
    self_penalty: add SELF_PENALTY to a token's own logit (shared QK).
    shared_keys: keys are the unit-normalised queries (LSH's shared QK), normalised as each step gathers
        them, so no full-length key tensor or key gradient exists; key gradients flow into the queries.
    """

    chunk: int
    offsets: tuple[int, ...]
    causal: bool
    causal_window: bool
    self_penalty: bool
    scale: float
    dropout: float
    dropout_seed: int
    rows_per_step: int
    shared_keys: bool = False


@dataclass
class _Step:
    """One kernel step: hash round `r`, query chunks [a, a + n) of the sorted order.

    The keys these queries may see lie in chunks [a + lo, a + n + hi) (lo/hi: extreme offsets); they
    are gathered once as "x" rows, and offset o's keys for all n query chunks are then the contiguous
    slice x[o - lo : o - lo + n]. Rows are laid out chunk-major, (chunk, N, c), so that slice is a
    plain (n*N, c, d) batch for bmm. `q_rows`/`x_rows` index flat (rows, d) tensors. Chunks beyond
    the sequence ends are gathered from a clamped index and masked; `inside` is the slice of x chunks
    that exist (the only ones that receive gradients). `bias` is the additive mask
    (offsets, n*N, c or 1, c) or None. Every mask is additive (never a replacement), so the gradient is
    the exact derivative even for fully masked rows."""

    r: int
    a: int
    n: int
    q_rows: torch.Tensor
    x_rows: torch.Tensor
    inside: slice
    bias: torch.Tensor | None


def _steps(n_rows: int, length: int, perm, sbuckets, key_real, spec: _ChunkSpec, device):
    """Yield every `_Step`.

    perm: (N, R, L) int32 sorted index -> position, or None (identity order: local attention).
    key_real: (N, L) bool, or None when no key is padding. Per round, the chunk-major row table of
    every chunk (plus clamped copies beyond both ends) is built once; steps are slices of it."""
    c = spec.chunk
    n_chunks = length // c
    lo, hi = min(spec.offsets), max(spec.offsets)
    span, n_off = hi - lo, len(spec.offsets)
    per_step = max(1, spec.rows_per_step // (n_rows * c))
    arange_c = torch.arange(c, device=device)
    padded_chunks = torch.arange(lo, n_chunks + hi, device=device).clamp_(0, n_chunks - 1)
    row_base = torch.arange(n_rows, device=device)[:, None, None] * length
    causal = None  # (offsets, 1, 1, c, c): key - query sorted offset is the same for every chunk
    if spec.causal or spec.causal_window:
        rel = torch.tensor(spec.offsets, device=device)[:, None, None] * c + arange_c - arange_c[:, None]
        causal = ((rel > 0) | (rel < -c) if spec.causal_window else rel > 0)[:, None, None]

    def look_around(x, n):  # (n + span, ...) chunk table -> (offsets, n, ...)
        return torch.stack([x[o - lo:o - lo + n] for o in spec.offsets])

    for r in range(1 if perm is None else perm.shape[1]):
        order = torch.arange(length, device=device).expand(n_rows, -1) if perm is None else perm[:, r].long()
        rows = (order.view(n_rows, n_chunks, c)[:, padded_chunks] + row_base).transpose(0, 1).contiguous()
        pad = None if key_real is None else ~key_real.view(-1)[rows]  # (n_chunks + span, N, c)
        buckets = None
        if spec.causal_window:
            buckets = sbuckets[:, r].view(n_rows, n_chunks, c)[:, padded_chunks].transpose(0, 1)
        for a in range(0, n_chunks, per_step):
            n = min(per_step, n_chunks - a)
            x, q = slice(a, a + n + span), slice(a - lo, a - lo + n)  # in padded-chunk coordinates
            inside = slice(max(0, -(a + lo)), n + span - max(0, a + n + hi - n_chunks))
            terms = [] if causal is None else [causal]
            if pad is not None:
                terms.append(look_around(pad[x], n)[:, :, :, None, :])
            if inside != slice(0, n + span):  # neighbours beyond the sequence ends
                outside = torch.ones(n + span, dtype=torch.bool, device=device)
                outside[inside] = False
                terms.append(look_around(outside, n)[:, :, None, None, None])
            if buckets is not None:  # causal LSH: keys from other buckets
                terms.append(buckets[q][None, :, :, :, None] != look_around(buckets[x], n)[:, :, :, None, :])
            bias = None
            if terms:
                bad = terms[0]
                for term in terms[1:]:
                    bad = bad | term
                bad = bad.expand(n_off, n, n_rows, c if causal is not None else 1, c)
                bias = torch.zeros(bad.shape, dtype=torch.float32, device=device).masked_fill_(bad, MASKED)
                bias = bias.view(n_off, n * n_rows, -1, c)
            yield _Step(r, a, n, rows[q].view(-1), rows[x].view(-1), inside, bias)


def _probs_dropout(spec: _ChunkSpec, r: int, a: int, shape, device, dtype) -> torch.Tensor:
    g = _generator(_mix(spec.dropout_seed, r, a), device)
    keep = torch.empty(shape, device=device, dtype=dtype).bernoulli_(1.0 - spec.dropout, generator=g)
    return keep.div_(1.0 - spec.dropout)


class _StepOperands:
    """Gathered operands of one step: Q (n*N, c, d) pre-scaled, and key/value chunks (n+span, N, c, d)
    with per-offset (n*N, c, d) views. With shared keys, ``k_raw`` keeps the gathered queries the keys
    were normalised from (their backward needs them)."""

    def __init__(self, q, k, v, step: _Step, spec: _ChunkSpec):
        d, c = q.shape[-1], spec.chunk
        self.lo, self.n = min(spec.offsets), step.n
        self.q = q.index_select(0, step.q_rows).view(-1, c, d)
        if spec.scale != 1.0:
            self.q = self.q * spec.scale
        key_shape = (-1, self.q.shape[0] // step.n, c, d)
        if spec.shared_keys:
            self.k_raw = q.index_select(0, step.x_rows).view(key_shape)
            self.k = F.normalize(self.k_raw, dim=-1)
        else:
            self.k = k.index_select(0, step.x_rows).view(key_shape)
        self.v = v.index_select(0, step.x_rows).view(self.k.shape)

    def at(self, x: torch.Tensor, o: int) -> torch.Tensor:
        """Offset o's slice of a (n+span, N, c, ...) chunk tensor, as a (n*N, c, ...) batch."""
        part = x[o - self.lo:o - self.lo + self.n]
        return part.reshape(-1, *part.shape[2:])


def _scores(ops: _StepOperands, bias, spec: _ChunkSpec, acc: torch.dtype) -> torch.Tensor:
    """Masked logits (offsets, n*N, c, c) in the accumulation dtype."""
    s = torch.empty(len(spec.offsets), *ops.q.shape[:2], spec.chunk, dtype=acc, device=ops.q.device)
    for i, o in enumerate(spec.offsets):
        k_t = ops.at(ops.k, o).transpose(1, 2)
        if ops.q.dtype == acc:
            if bias is None:
                torch.bmm(ops.q, k_t, out=s[i])
            else:
                torch.baddbmm(bias[i].to(acc), ops.q, k_t, out=s[i])
        else:
            s[i].copy_(torch.bmm(ops.q, k_t))
            if bias is not None:
                s[i] += bias[i]
    if spec.self_penalty:  # own key: same sorted index, the diagonal of the own-chunk block (offset 0)
        s[0].diagonal(dim1=1, dim2=2).add_(SELF_PENALTY)
    return s


def _bmm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, add: bool) -> None:
    """out = a @ b, or out += a @ b, in place and in out's dtype (a, b may be lower precision)."""
    if a.dtype == out.dtype:
        if add:
            out.baddbmm_(a, b)
        else:
            torch.bmm(a, b, out=out)
    elif add:
        out.add_(torch.bmm(a, b))
    else:
        out.copy_(torch.bmm(a, b))


def _weighted_values(p: torch.Tensor, ops: _StepOperands, spec: _ChunkSpec, acc: torch.dtype) -> torch.Tensor:
    """sum over offsets of p[o] @ v[o]: (n*N, c, d) in acc dtype."""
    out = torch.empty(*ops.q.shape, dtype=acc, device=ops.q.device)
    for i, o in enumerate(spec.offsets):
        v = ops.at(ops.v, o)
        _bmm_into(out, p[i].to(v.dtype), v, add=i > 0)
    return out


class _ChunkedAttention(torch.autograd.Function):
    """Chunked softmax attention over (optionally permuted, multi-round) sequences.

    Forward keeps a running per-row log-sum-exp across rounds, so the result equals one softmax over
    the union of every round's keys; backward recomputes each step's scores from q, k, v and the
    final log-sum-exp. Nothing of size L x L, or even rows x keys for the whole sequence, is kept.
    """

    @staticmethod
    def forward(ctx, q, k, v, perm, sbuckets, key_real, spec: _ChunkSpec):
        with torch.autocast(q.device.type, enabled=False):
            out, lse = _chunked_forward(q, k, v, perm, sbuckets, key_real, spec)
        ctx.save_for_backward(q, k, v, perm, sbuckets, key_real, out, lse)
        ctx.spec = spec
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, perm, sbuckets, key_real, out, lse = ctx.saved_tensors
        with torch.autocast(q.device.type, enabled=False):
            delta = _row_dot(d_out, out)
            dq, dk, dv = _chunked_backward(q, k, v, perm, sbuckets, key_real, delta, lse, d_out, ctx.spec)
        return dq, dk, dv, None, None, None, None


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """rowsum(a * b) over the last dim in float32 or wider, flattened: backward's softmax correction."""
    acc = torch.promote_types(a.dtype, torch.float32)
    return torch.linalg.vecdot(a.reshape(-1, a.shape[-1]).to(acc), b.reshape(-1, b.shape[-1]).to(acc))


def _chunked_forward(q, k, v, perm, sbuckets, key_real, spec):
    n_rows, length, d = q.shape
    acc = torch.promote_types(q.dtype, torch.float32)
    qf, vf = q.reshape(-1, d), v.reshape(-1, d)
    kf = None if spec.shared_keys else k.reshape(-1, d)
    # Round 0 writes every row. The full-length output is kept in the values' dtype (bf16 under
    # autocast: each later round's blend, computed in float32, is rounded once more); log-sum-exps
    # and every step's own arithmetic stay in float32.
    out = torch.empty(n_rows * length, d, dtype=v.dtype, device=q.device)
    lse = torch.empty(n_rows * length, dtype=acc, device=q.device)
    for step in _steps(n_rows, length, perm, sbuckets, key_real, spec, q.device):
        ops = _StepOperands(qf, kf, vf, step, spec)
        p = _scores(ops, step.bias, spec, acc)
        m = p.amax(dim=(0, 3), keepdim=True)
        p.sub_(m).exp_()
        total = p.sum(dim=(0, 3), keepdim=True)[0]  # (n*N, c, 1)
        if spec.dropout:
            p.mul_(_probs_dropout(spec, step.r, step.a, p.shape, q.device, acc))
        o = _weighted_values(p, ops, spec, acc).div_(total).view(-1, d)
        step_lse = (m[0] + total.log()).view(-1)
        if step.r == 0:
            out.index_copy_(0, step.q_rows, o.to(out.dtype))
            lse.index_copy_(0, step.q_rows, step_lse)
        else:  # fold this round in with weights softmax(lse_so_far, lse_round), from their difference
            old = lse.index_select(0, step.q_rows)  # so they sum to 1 even for self-only rows (lse ~ -1e5)
            w_round = torch.sigmoid(step_lse - old)[:, None]
            blended = out.index_select(0, step.q_rows).to(acc).mul_(1.0 - w_round).add_(o.mul_(w_round))
            out.index_copy_(0, step.q_rows, blended.to(out.dtype))
            lse.index_copy_(0, step.q_rows, torch.logaddexp(old, step_lse))
    return out.view(n_rows, length, d), lse


def _chunked_backward(q, k, v, perm, sbuckets, key_real, delta, lse, d_out, spec):
    """Gradients (dq, dk, dv) from the forward's final log-sum-exp and delta = rowsum(dO * O).
    With shared keys dk is None: the key gradients are already folded into dq."""
    n_rows, length, d = q.shape
    c, acc = spec.chunk, torch.promote_types(q.dtype, torch.float32)
    qf, vf = q.reshape(-1, d), v.reshape(-1, d)
    kf = None if spec.shared_keys else k.reshape(-1, d)
    dof = d_out.reshape(-1, d).to(v.dtype)
    # Key gradients of shared keys land on query rows other steps write later, so dq accumulates.
    dq = torch.zeros(qf.shape, dtype=acc, device=q.device) if spec.shared_keys else \
        torch.empty(qf.shape, dtype=acc, device=q.device)  # round 0 writes every row
    dk = None if spec.shared_keys else torch.zeros(kf.shape, dtype=acc, device=q.device)
    dv = torch.zeros(vf.shape, dtype=acc, device=q.device)
    for step in _steps(n_rows, length, perm, sbuckets, key_real, spec, q.device):
        ops = _StepOperands(qf, kf, vf, step, spec)
        d_o = dof.index_select(0, step.q_rows).view(-1, c, d)
        p = _scores(ops, step.bias, spec, acc)
        p.sub_(lse.index_select(0, step.q_rows).view(-1, c, 1)).exp_()  # probabilities over all rounds
        keep = _probs_dropout(spec, step.r, step.a, p.shape, q.device, acc) if spec.dropout else None
        # key/value-chunk gradients (n+span, N, c, d): the own-chunk offset (first) writes the middle
        # n chunks, the edge chunks start at zero, the other offsets add
        lo = min(spec.offsets)
        d_kx, d_vx = (torch.empty(ops.k.shape, dtype=acc, device=q.device) for _ in range(2))
        for grad in (d_kx, d_vx):
            grad[:-lo].zero_()
            grad[-lo + step.n:].zero_()
        d_p = torch.empty_like(p)
        for i, o in enumerate(spec.offsets):
            p_i = p[i] if keep is None else p[i] * keep[i]
            _bmm_into(ops.at(d_vx, o), p_i.transpose(1, 2).to(v.dtype), d_o, add=i > 0)
            _bmm_into(d_p[i], d_o, ops.at(ops.v, o).transpose(1, 2), add=False)
        if keep is not None:
            d_p.mul_(keep)
        ds = p.mul_(d_p.sub_(delta.index_select(0, step.q_rows).view(-1, c, 1))).to(q.dtype)
        d_q = torch.empty(ops.q.shape, dtype=acc, device=q.device)
        for i, o in enumerate(spec.offsets):
            _bmm_into(d_q, ds[i], ops.at(ops.k, o), add=i > 0)
            _bmm_into(ops.at(d_kx, o), ds[i].transpose(1, 2), ops.q, add=i > 0)
        if spec.scale != 1.0:
            d_q.mul_(spec.scale)
        if step.r == 0 and not spec.shared_keys:
            dq.index_copy_(0, step.q_rows, d_q.view(-1, d))
        else:
            dq.index_add_(0, step.q_rows, d_q.view(-1, d))
        x_rows = step.x_rows.view(-1, n_rows * c)[step.inside].reshape(-1)
        d_keys = d_kx[step.inside]
        if spec.shared_keys:  # through k = r / |r|: dr = (dk - k (k . dk)) / |r|
            raw = ops.k_raw[step.inside].to(acc)
            norm = raw.norm(dim=-1, keepdim=True).clamp_min_(1e-12)
            unit = raw / norm
            d_keys = d_keys.sub_(unit * (unit * d_keys).sum(-1, keepdim=True)).div_(norm)
        (dq if spec.shared_keys else dk).index_add_(0, x_rows, d_keys.reshape(-1, d))
        dv.index_add_(0, x_rows, d_vx[step.inside].reshape(-1, d))
    dk = None if dk is None else dk.view(k.shape).to(k.dtype)
    return dq.view(q.shape).to(q.dtype), dk, dv.view(v.shape).to(v.dtype)


def chunked_attention(q, k, v, perm, sbuckets, key_real, spec: _ChunkSpec) -> torch.Tensor:
    """q, k, v: (batch, heads, L, d) (k None with shared keys); perm/sbuckets: (batch*heads, rounds, L)
    int32 or None; key_real: (batch, L) bool or None. Returns (batch, heads, L, d)."""
    batch, heads, length, d = q.shape
    flat = [None if t is None else t.reshape(batch * heads, length, d) for t in (q, k, v)]
    if key_real is not None:
        key_real = key_real.repeat_interleave(heads, 0)
    return _ChunkedAttention.apply(*flat, perm, sbuckets, key_real, spec).view(batch, heads, length, d)


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
        spec = _ChunkSpec(
            chunk=c, offsets=offsets, causal=self.config.causal, causal_window=False,
            self_penalty=False, scale=self.head_dim ** -0.5,
            dropout=self.config.attention_dropout if ctx.training else 0.0,
            dropout_seed=_mix(ctx.site_seed(self.layer_index, _SITE_ATTENTION_PROBS), heads.start),
            rows_per_step=ctx.attention_rows)
        return chunked_attention(_rotate(parts[0], ctx), _rotate(parts[1], ctx), parts[2], None, None, ctx.real, spec)


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
    ``_HASH_CHUNK`` at a time (only the int32 bucket ids have the full length). Padding goes to a
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
                     torch.randn(config.n_heads, d, half_cols, generator=_generator(_mix(seed, r, i), torch.device("cpu")))
                     [heads, :, :w // 2].to(device=queries.device, dtype=queries.dtype)
                     for i, w in enumerate(max_widths)]
        bucket = torch.empty(batch, n_group, length, dtype=torch.int32, device=queries.device)
        for s in range(0, length, _HASH_CHUNK):
            keys = F.normalize(queries[:, :, s:s + _HASH_CHUNK], dim=-1)
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
            bucket[:, :, s:s + _HASH_CHUNK] = part
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
                                              ctx.site_seed(self.layer_index, _SITE_HASH), heads)
        perm, sorted_buckets = state[heads.start]
        c = self.config.chunk_size
        n_chunks = ctx.padded_length // c
        offsets = (0,) if n_chunks == 1 else (0, -1) if self.config.causal else (0, -1, 1)
        spec = _ChunkSpec(
            chunk=c, offsets=offsets, causal=False, causal_window=self.config.causal,
            self_penalty=True, scale=1.0,
            dropout=self.config.attention_dropout if ctx.training else 0.0,
            dropout_seed=_mix(ctx.site_seed(self.layer_index, _SITE_ATTENTION_PROBS), heads.start),
            rows_per_step=ctx.attention_rows, shared_keys=True)
        return chunked_attention(q, None, parts[1], perm, sorted_buckets, ctx.real, spec)


# --------------------------------------------------------------------------------------- feed-forward
class FeedForward(nn.Module):
    """LayerNorm -> Linear(d_model, d_ff) -> GELU -> Linear(d_ff, d_model) -> dropout.

    Position-wise, so callers run it ``ff_chunk_size`` positions at a time; ``start`` is the first
    position of the given slice (dropout masks are keyed by position)."""

    def __init__(self, config: ReformerConfig, layer_index: int = 0):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.w1 = nn.Linear(config.d_model, config.d_ff)
        self.w2 = nn.Linear(config.d_ff, config.d_model)
        self.p, self.layer_index = config.dropout, layer_index

    def forward(self, x: torch.Tensor, ctx: ForwardContext, start: int = 0) -> torch.Tensor:
        h = self.w2(F.gelu(self.w1(self.norm(x))))
        return _dropout(h, self.p, ctx, ctx.site_seed(self.layer_index, _SITE_FEED_FORWARD), start)


# --------------------------------------------------------------------------------------- reversible block
_ATTENTION = {"lsh": LSHSelfAttention, "local": LocalSelfAttention, "full": FullSelfAttention}


def _trainable(params) -> list[nn.Parameter]:
    return [p for p in params if p.requires_grad]


def _grad(output: torch.Tensor, inputs: list[torch.Tensor], grad_output: torch.Tensor):
    return torch.autograd.grad(output, inputs, grad_output, allow_unused=True)


def _accumulate(grads: dict, params, values) -> None:
    for p, g in zip(params, values):
        if g is not None:
            if p in grads:
                grads[p] += g
            else:
                grads[p] = g


def _accumulate_part(grads: dict, param: nn.Parameter, index, value: torch.Tensor) -> None:
    """Add a head group's gradient into its slice of a parameter's gradient (frozen: skipped)."""
    if param.requires_grad:
        if param not in grads:
            grads[param] = torch.zeros_like(param)
        grads[param][index] += value


class ReversibleBlock(nn.Module):
    """RevNet coupling: Y1 = X1 + Attention(LN(X2)), Y2 = X2 + FeedForward(Y1).

    ``forward`` is the ordinary autograd version; ``forward_inplace``/``backward_inplace`` are the
    memory-lean versions the reversible stack uses (outputs overwrite inputs; backward rebuilds the
    inputs from the outputs and accumulates parameter gradients into a dict)."""

    def __init__(self, config: ReformerConfig, layer_index: int):
        super().__init__()
        self.config, self.layer_index = config, layer_index
        self.attention_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attention = _ATTENTION[config.layer_types[layer_index]](config, layer_index)
        self.feed_forward = FeedForward(config, layer_index)

    def _chunks(self, length: int):
        step = self.config.ff_chunk_size
        return [(s, min(length, s + step)) for s in range(0, length, step)]

    def _branch_dropout(self, x: torch.Tensor, ctx: ForwardContext, start: int) -> torch.Tensor:
        """Dropout on the attention branch's output (and, being a mask multiply, on its gradient)."""
        return _dropout(x, self.config.dropout, ctx, ctx.site_seed(self.layer_index, _SITE_ATTENTION_OUT), start)

    def _branch_keep(self, ctx: ForwardContext, like: torch.Tensor, start: int, end: int) -> torch.Tensor | None:
        """The multipliers `_branch_dropout` applies to positions [start, end): (batch, n, d_model), or None."""
        if not ctx.training or self.config.dropout == 0.0:
            return None
        return _keep_mask(ctx.site_seed(self.layer_index, _SITE_ATTENTION_OUT), like.shape[0], start, end,
                          self.config.d_model, self.config.dropout, like.device, torch.float32)

    def forward(self, x1, x2, ctx: ForwardContext, state: dict | None = None):
        branch = self.attention.branch(self.attention_norm(x2), ctx, {} if state is None else state)
        y1 = x1 + self._branch_dropout(branch, ctx, 0)
        y2 = x2 + self.feed_forward(y1, ctx)
        return y1, y2

    @torch.no_grad()
    def forward_inplace(self, x1: torch.Tensor, x2: torch.Tensor, ctx: ForwardContext, state: dict) -> None:
        """x1 += F(x2); x2 += G(x1), holding one head group / one chunk of positions at a time.

        Dropout is a mask multiply, so dropout(sum of the groups' outputs + bias) is added group by
        group with the same per-position masks."""
        attention, chunks = self.attention, self._chunks(x1.shape[1])
        for heads in ctx.head_groups:
            parts = attention.project(x2, heads, self.attention_norm, self.config.ff_chunk_size)
            o = attention.attend(parts, heads, ctx, state)
            del parts
            weight = attention.group_out_weight(heads)
            for s, e in chunks:
                x1[:, s:e] += self._branch_dropout(F.linear(_merge_heads(o[:, :, s:e]), weight), ctx, s)
            del o
        bias = attention.out.bias
        for s, e in chunks:
            x1[:, s:e] += self._branch_dropout(bias.expand(x1.shape[0], e - s, -1), ctx, s)
        for s, e in chunks:
            x2[:, s:e] += self.feed_forward(x1[:, s:e], ctx, s)

    def backward_inplace(self, y1, y2, dy1, dy2, ctx: ForwardContext, state: dict, grads: dict) -> None:
        """Rebuild (X1, X2) from (Y1, Y2) in place and turn (dY1, dY2) into (dX1, dX2) in place.

        Only the attention core of one head group (rotation and the chunked attention over the
        forward's hash permutations) runs under autograd, on full-length (batch, heads_in_group, L, head_dim) projections; layer norm, input
        and output projections and dropout are position-wise and are differentiated by hand one chunk
        of positions at a time, so no full-length d_model-wide temporary is made."""
        chunks = self._chunks(y1.shape[1])
        # Y2 = X2 + G(Y1): recompute G chunk by chunk, back-propagate dY2, peel G off Y2.
        ff_params = _trainable(self.feed_forward.parameters())
        for s, e in chunks:
            with torch.enable_grad():
                y1c = y1[:, s:e].detach().requires_grad_()
                out = self.feed_forward(y1c, ctx, s)
            g = _grad(out, [y1c, *ff_params], dy2[:, s:e])
            y2[:, s:e] -= out.detach()
            dy1[:, s:e] += g[0]
            _accumulate(grads, ff_params, g[1:])
            del out, g, y1c
        # Y1 = X1 + dropout(Attention(LN(X2))), Y2 now holding X2: head group by head group.
        attention, norm = self.attention, self.attention_norm
        norm_params = _trainable(norm.parameters())
        batch = y1.shape[0]
        for heads in ctx.head_groups:
            with torch.no_grad():
                parts = [p.requires_grad_() for p in attention.project(y2, heads, norm, self.config.ff_chunk_size)]
            with torch.enable_grad():
                o = attention.attend(parts, heads, ctx, state)  # (batch, heads_in_group, L, head_dim)
            # output projection, chunk by chunk: peel this group off Y1, its weight gradient, dO
            weight = attention.group_out_weight(heads)
            d_weight = torch.zeros_like(weight) if attention.out.weight.requires_grad else None
            d_o = torch.empty_like(o)
            for s, e in chunks:
                merged = _merge_heads(o[:, :, s:e].detach())  # (batch, n, group width)
                peel, d_branch = F.linear(merged, weight), dy1[:, s:e]  # (batch, n, d_model) each
                keep = self._branch_keep(ctx, y1, s, e)
                if keep is not None:
                    peel, d_branch = peel * keep, (d_branch * keep).to(dy1.dtype)
                y1[:, s:e] -= peel
                if d_weight is not None:
                    d_weight += d_branch.flatten(0, 1).T @ merged.flatten(0, 1)
                d_o[:, :, s:e] = (d_branch @ weight).view(batch, e - s, heads.stop - heads.start, -1).transpose(1, 2)
            d_parts = _grad(o, parts, d_o)
            del o, d_o, parts
            rows = attention.group_rows(heads)
            if d_weight is not None:
                _accumulate_part(grads, attention.out.weight, (slice(None), rows), d_weight)
            # input projections and layer norm, chunk by chunk: their weight gradients and dX2
            weight = attention.group_in_weight(heads)
            trained = any(p.weight.requires_grad for p in attention.in_projections())
            d_weight = torch.zeros_like(weight) if trained else None
            for s, e in chunks:
                with torch.enable_grad():
                    x2c = y2[:, s:e].detach().requires_grad_()
                    normed = norm(x2c)
                d_proj = torch.cat([_merge_heads(d[:, :, s:e]) for d in d_parts], -1)  # (batch, n, parts * width)
                if d_weight is not None:
                    d_weight += d_proj.flatten(0, 1).T @ normed.detach().flatten(0, 1)
                g = _grad(normed, [x2c, *norm_params], d_proj @ weight)
                dy2[:, s:e] += g[0]
                _accumulate(grads, norm_params, g[1:])
            del d_parts
            width = rows.stop - rows.start
            for i, projection in enumerate(attention.in_projections()):
                if d_weight is not None:
                    _accumulate_part(grads, projection.weight, rows, d_weight[i * width:(i + 1) * width])
        bias = attention.out.bias
        for s, e in chunks:
            keep = self._branch_keep(ctx, y1, s, e)
            y1[:, s:e] -= bias if keep is None else bias * keep
            if bias.requires_grad:
                d_branch = dy1[:, s:e] if keep is None else dy1[:, s:e] * keep
                _accumulate(grads, [bias], [d_branch.sum((0, 1)).to(bias.dtype)])


# --------------------------------------------------------------------------------------- reversible stack
class _ReversibleStack(torch.autograd.Function):
    """Runs every block keeping only the final (Y1, Y2); backward rebuilds each block's inputs from its
    outputs and back-propagates block by block, so activation memory does not grow with depth.

    All parameters are inputs and their gradients are outputs of backward (see module docstring)."""

    @staticmethod
    def forward(ctx, x, blocks, fctx, *params):
        ctx.blocks, ctx.fctx, ctx.params = blocks, fctx, params
        device_type = x.device.type
        ctx.autocast = dict(device_type=device_type, dtype=torch.get_autocast_dtype(device_type),
                            enabled=torch.is_autocast_enabled(device_type))
        x1, x2 = x.clone(), x.clone()
        ctx.states = [{} for _ in blocks]
        for block, state in zip(blocks, ctx.states):
            block.forward_inplace(x1, x2, fctx, state)
            _release_host_memory(x.device)
        ctx.save_for_backward(x1, x2)
        return x1, x2

    @staticmethod
    def backward(ctx, dy1, dy2):
        if ctx.states is None:
            raise RuntimeError("the reversible stack was already back-propagated (retain_graph is not supported)")
        y1, y2 = ctx.saved_tensors
        # The gradients are updated in place, so own them. The model's merge (x1 + x2) hands the same
        # fresh tensor to both outputs: one copy suffices; otherwise copy both (they may be the caller's).
        if dy1.data_ptr() == dy2.data_ptr():
            dy1, dy2 = dy1.clone(memory_format=torch.contiguous_format), dy2.contiguous()
        else:
            dy1, dy2 = (t.clone(memory_format=torch.contiguous_format) for t in (dy1, dy2))
        grads: dict = {}
        with torch.autocast(**ctx.autocast):
            for block, state in zip(reversed(ctx.blocks), reversed(ctx.states)):
                block.backward_inplace(y1, y2, dy1, dy2, ctx.fctx, state, grads)
                _release_host_memory(y1.device)
        ctx.states = None
        dx = dy1.add_(dy2) if ctx.needs_input_grad[0] else None
        param_grads = [grads.pop(p, None) for p in ctx.params]  # sole owner: autograd can adopt them
        return (dx, None, None, *param_grads)


# --------------------------------------------------------------------------------------- model
class Reformer(nn.Module):
    """Token embedding -> reversible stack (two streams, both starting at the embedding) -> mean of the
    streams -> final LayerNorm.

    ``forward(input_ids (batch, L) long, attention_mask (batch, L) bool | None) -> (batch, L, d_model)``;
    mask True marks real tokens (None: all real). Any length >= 1: the input is padded to a chunk
    multiple internally and the output cut back. Under bf16 autocast the reversible streams (and
    their gradients) are bf16 unless ``config.low_precision_streams`` is off; inference then returns
    bf16 too (its final norm overwrites the merged stream). Each training-mode call draws fresh LSH rotations and
    dropout masks from (config.seed, ``calls``); evaluation uses fixed rotations and no dropout.
    """

    def __init__(self, config: ReformerConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(ReversibleBlock(config, i) for i in range(config.depth))
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.calls = 0
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _context(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> ForwardContext:
        batch, length = input_ids.shape
        if self.training:
            seed = _mix(self.config.seed, 1, self.calls)
            self.calls += 1
            hash_seed = seed
        else:
            seed = hash_seed = _mix(self.config.seed, 0)
        device_type = input_ids.device.type
        autocast = torch.is_autocast_enabled(device_type)
        return ForwardContext.build(self.config, batch, length, attention_mask, input_ids.device,
                                    training=self.training, seed=seed, hash_seed=hash_seed,
                                    dtype=torch.get_autocast_dtype(device_type) if autocast else torch.float32)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int32):
            raise ValueError(f"input_ids must be a (batch, length) integer tensor, "
                             f"got {tuple(input_ids.shape)} {input_ids.dtype}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} "
                             f"!= input_ids shape {tuple(input_ids.shape)}")
        length = input_ids.shape[1]
        ctx = self._context(input_ids, attention_mask)
        ids = F.pad(input_ids, (0, ctx.padded_length - length), value=self.config.pad_token_id)
        x = self.embedding(ids)
        if not self.config.reversible:
            x1 = x2 = x
            for block in self.blocks:
                x1, x2 = block(x1, x2, ctx)
            return self.norm((x1 + x2) * 0.5)[:, :length]
        x = x.to(self._stream_dtype(x))  # (batch, padded, d_model)
        if torch.is_grad_enabled():
            x1, x2 = _ReversibleStack.apply(x, tuple(self.blocks), ctx, *self.blocks.parameters())
            return self.norm((x1 + x2) * 0.5)[:, :length]
        x1, x2 = x, x.clone()
        for block in self.blocks:
            block.forward_inplace(x1, x2, ctx, {})
            _release_host_memory(x1.device)
        merged = x1.add_(x2).mul_(0.5)  # (batch, padded, d_model)
        del x2
        # The final norm overwrites the merged stream chunk by chunk: inference holds no third
        # full-length tensor (under autocast the output keeps the streams' dtype).
        for s in range(0, merged.shape[1], self.config.ff_chunk_size):
            chunk = merged[:, s:s + self.config.ff_chunk_size]
            chunk.copy_(self.norm(chunk))
        return merged[:, :length]

    def _stream_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The reversible streams' dtype: the autocast dtype under autocast (unless the config keeps
        them in the parameters' precision), otherwise the embedding's."""
        device_type = x.device.type
        if self.config.low_precision_streams and torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return x.dtype

