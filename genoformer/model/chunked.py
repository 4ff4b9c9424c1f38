"""The chunked attention kernel: softmax attention over (optionally hash-sorted, multi-round) chunks,
linear memory in length, scores recomputed in backward (flash-attention style)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genoformer.model.runtime import draw_keeps, drop_rate, keep_scale, mix_seed, seeded_generator

MASKED = -1e9          # additive logit for keys a query must not see
SELF_PENALTY = -1e5    # added to a token's own logit under shared QK: used only when nothing else is left


@dataclass(frozen=True)
class ChunkSpec:
    """How the chunked kernel pairs query chunks with key chunks and masks them.

    offsets: key chunks each query chunk sees, relative to itself, own chunk first. Neighbours do not
        wrap around the ends (as they do in trax/HF): a wrapped neighbour would depend on padding.
    causal: key position <= query position (positions equal sorted indices: local attention only).
    causal_window: causal LSH: keys in the query's bucket at most `chunk` sorted steps back, which
        depends only on earlier tokens (a chunk-aligned window would depend on later tokens' buckets).
    self_penalty: add SELF_PENALTY to a token's own logit (shared QK).
    shared_keys: keys are the unit-normalised queries (LSH's shared QK), normalised as each step gathers
        them, so no full-length key tensor or key gradient exists; key gradients flow into the queries.
    keep_dropout_masks: the forward keeps its attention-dropout draws for backward (see `_DropoutMasks`).
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
    keep_dropout_masks: bool = False


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


def _steps(n_rows: int, length: int, perm, sbuckets, key_real, spec: ChunkSpec, device):
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


class _DropoutMasks:
    """Attention-probability dropout of each kernel step: which probabilities are kept, (offsets,
    n*N, c, c) uint8 0/1 like the step's probabilities, drawn from (seed, round, first chunk) (see
    `runtime.draw_keeps`). The kernel zeroes the dropped probabilities in place and applies inverted
    dropout's 1/(1-p) to the step's smaller operands instead: the softmax normaliser in forward, the
    output gradient in backward. Backward redraws the masks, unless the forward kept them
    (``spec.keep_dropout_masks``: one byte per probability; the Reformer asks for it only when it keeps
    activations anyway), which saves the redraw and gives the same masks."""

    def __init__(self, spec: ChunkSpec):
        self.spec = spec
        self.keep_fraction = 1.0 - drop_rate(spec.dropout)
        self.scale = keep_scale(spec.dropout)
        self.kept: list[torch.Tensor] | None = [] if spec.keep_dropout_masks else None

    def _draw(self, step: "_Step", shape, device) -> torch.Tensor:
        g = seeded_generator(mix_seed(self.spec.dropout_seed, step.r, step.a), device)
        return draw_keeps(shape, self.spec.dropout, g, device)

    def forward(self, step: "_Step", shape, device) -> torch.Tensor:
        keeps = self._draw(step, shape, device)
        if self.kept is not None:
            self.kept.append(keeps)
        return keeps

    def backward(self, index: int, step: "_Step", shape, device) -> torch.Tensor:
        """The mask of the ``index``-th step (steps run in the forward's order)."""
        return self.kept[index] if self.kept is not None else self._draw(step, shape, device)


class _StepOperands:
    """Gathered operands of one step: Q (n*N, c, d) pre-scaled, and key/value chunks (n+span, N, c, d)
    with per-offset (n*N, c, d) views. With shared keys, ``k_raw`` keeps the gathered queries the keys
    were normalised from (their backward needs them)."""

    def __init__(self, q, k, v, step: _Step, spec: ChunkSpec):
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


def _scores(ops: _StepOperands, bias, spec: ChunkSpec, acc: torch.dtype) -> torch.Tensor:
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


def _weighted_values(p: torch.Tensor, ops: _StepOperands, spec: ChunkSpec, acc: torch.dtype) -> torch.Tensor:
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
    def forward(ctx, q, k, v, perm, sbuckets, key_real, spec: ChunkSpec):
        masks = _DropoutMasks(spec) if spec.dropout else None
        with torch.autocast(q.device.type, enabled=False):
            out, lse = _chunked_forward(q, k, v, perm, sbuckets, key_real, spec, masks)
        ctx.save_for_backward(q, k, v, perm, sbuckets, key_real, out, lse)
        ctx.spec, ctx.masks = spec, masks
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, perm, sbuckets, key_real, out, lse = ctx.saved_tensors
        with torch.autocast(q.device.type, enabled=False):
            delta = _row_dot(d_out, out)
            dq, dk, dv = _chunked_backward(q, k, v, perm, sbuckets, key_real, delta, lse, d_out, ctx.spec, ctx.masks)
        return dq, dk, dv, None, None, None, None


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """rowsum(a * b) over the last dim in float32 or wider, flattened: backward's softmax correction."""
    acc = torch.promote_types(a.dtype, torch.float32)
    return torch.linalg.vecdot(a.reshape(-1, a.shape[-1]).to(acc), b.reshape(-1, b.shape[-1]).to(acc))


def _chunked_forward(q, k, v, perm, sbuckets, key_real, spec, masks: _DropoutMasks | None):
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
        if masks is not None:  # the kept probabilities' 1/(1-p) rides on the normaliser
            p.mul_(masks.forward(step, p.shape, q.device))
        o = _weighted_values(p, ops, spec, acc).div_(total if masks is None else total * masks.keep_fraction)
        o = o.view(-1, d)
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


def _chunked_backward(q, k, v, perm, sbuckets, key_real, delta, lse, d_out, spec, masks: _DropoutMasks | None):
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
    for index, step in enumerate(_steps(n_rows, length, perm, sbuckets, key_real, spec, q.device)):
        ops = _StepOperands(qf, kf, vf, step, spec)
        d_o = dof.index_select(0, step.q_rows).view(-1, c, d)
        p = _scores(ops, step.bias, spec, acc)
        p.sub_(lse.index_select(0, step.q_rows).view(-1, c, 1)).exp_()  # probabilities over all rounds
        keeps = None
        if masks is not None:  # dO carries the kept probabilities' 1/(1-p): both gradients below need it
            keeps = masks.backward(index, step, p.shape, q.device)
            d_o = d_o * masks.scale
        # key/value-chunk gradients (n+span, N, c, d): the own-chunk offset (first) writes the middle
        # n chunks, the edge chunks start at zero, the other offsets add
        lo = min(spec.offsets)
        d_kx, d_vx = (torch.empty(ops.k.shape, dtype=acc, device=q.device) for _ in range(2))
        for grad in (d_kx, d_vx):
            grad[:-lo].zero_()
            grad[-lo + step.n:].zero_()
        d_p = torch.empty_like(p)
        for i, o in enumerate(spec.offsets):
            _bmm_into(d_p[i], d_o, ops.at(ops.v, o).transpose(1, 2), add=False)
        if keeps is not None:
            d_p.mul_(keeps)
        ds = d_p.sub_(delta.index_select(0, step.q_rows).view(-1, c, 1)).mul_(p)  # P (dP - delta), in dP's place
        if keeps is not None:  # P is free now: the value gradient takes the kept probabilities, in place
            p.mul_(keeps)
        for i, o in enumerate(spec.offsets):
            _bmm_into(ops.at(d_vx, o), p[i].transpose(1, 2).to(v.dtype), d_o, add=i > 0)
        ds = ds.to(q.dtype)
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


def chunked_attention(q, k, v, perm, sbuckets, key_real, spec: ChunkSpec) -> torch.Tensor:
    """q, k, v: (batch, heads, L, d) (k None with shared keys); perm/sbuckets: (batch*heads, rounds, L)
    int32 or None; key_real: (batch, L) bool or None. Returns (batch, heads, L, d)."""
    batch, heads, length, d = q.shape
    flat = [None if t is None else t.reshape(batch * heads, length, d) for t in (q, k, v)]
    if key_real is not None:
        key_real = key_real.repeat_interleave(heads, 0)
    return _ChunkedAttention.apply(*flat, perm, sbuckets, key_real, spec).view(batch, heads, length, d)
