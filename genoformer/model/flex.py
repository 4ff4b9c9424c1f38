"""The chunked attention as one fused GPU kernel: PyTorch's FlexAttention over the (hash-sorted) sequence.

`chunked.py` computes, chunk by chunk, softmax attention of each sorted position over its own and the
neighbouring chunks, with additive masks and the rounds folded by log-sum-exp. The same function is a
block-sparse attention: in sorted order the keys a query may see lie in a band of chunks, so a block mask
that lists, for each block of queries, the few blocks of keys in that band lets FlexAttention's generated
Triton kernel (forward and backward) do the whole of it in one launch per head group, hash rounds as its
heads. Masks that never empty a row (padding, the own-token penalty) are added to the scores as in
`chunked.py`; the band, causality and causal LSH's own-bucket rule are mask functions (their rows always
keep the query's own key). Each round's log-sum-exp comes back with its output, and the rounds are
combined by the softmax of those, differentiably, as `chunked.py` folds them.

Around the kernel, rows move between position and sorted order. Those moves are random-access, and on a
GPU they can cost more than the kernel (a profiled 1 Mb step on an H200: row gathers 0.32 s of 1.07 s of
device time, FlexAttention 0.07 s), so each direction is the cheaper of gather and scatter as measured
there: into sorted order a gather (backward: a scatter, no zero-fill or atomic adds), back to positions
a scatter (backward: a gather), queries and values moved together as row pairs (bench/README.md).

No attention dropout (FlexAttention has none): the Reformer uses this kernel only where that is zero.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from genoformer.model.chunked import MASKED, SELF_PENALTY, ChunkSpec

# Query and key blocks of the block mask: FlexAttention's default tile; a chunk (64) is half of one.
_BLOCK = 128


# Compiled variants to allow before torch.compile gives up on FlexAttention and runs it eagerly (dense:
# out of memory at Mb lengths). Each mask variant (local or LSH, padded or not, causal), gradient mode and
# hash-round count is one, and twice over once a second length makes its shapes dynamic: a model with
# both layer kinds passed Dynamo's default of 8 after two lengths (counted with the eager backend).
_RECOMPILE_LIMIT = 64


@functools.cache
def _compiled_flex(backend: str = "inductor"):
    """The fused kernel: FlexAttention is only block-sparse (and only linear in memory) compiled.
    (``backend="eager"``: Dynamo's tracing and guards without code generation, for tests on a CPU.)"""
    compiled = torch.compile(flex_attention, backend=backend)

    def attend(*args, **kwargs):
        with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT):
            return compiled(*args, **kwargs)

    return attend


def _band(length: int, spec: ChunkSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last key block (n_blocks,) of each query block: those holding its chunks' neighbours.
    On the CPU: the mask's few kilobytes are built there, so no GPU sync waits on them."""
    c, n_chunks, n_blocks = spec.chunk, length // spec.chunk, -(-length // _BLOCK)
    first_query = torch.arange(n_blocks) * _BLOCK
    last_query = (first_query + _BLOCK - 1).clamp(max=length - 1)
    first_key = (first_query // c + min(spec.offsets)).clamp(min=0) * c
    last_key = ((last_query // c + max(spec.offsets)).clamp(max=n_chunks - 1) + 1) * c - 1
    return first_key // _BLOCK, last_key // _BLOCK


def _listed(first: torch.Tensor, last: torch.Tensor, n_blocks: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Block counts (1, 1, rows) and index lists (1, 1, rows, widest row) int32 of rows holding blocks
    first..last; entries past a row's count are unused (clamped in range)."""
    width = int((last - first).max()) + 1
    indices = (first[:, None] + torch.arange(width)).clamp(max=n_blocks - 1)
    return ((last - first + 1).to(torch.int32)[None, None].to(device),
            indices.to(torch.int32)[None, None].to(device))


def band_block_mask(length: int, spec: ChunkSpec, mask_mod, device) -> BlockMask:
    """The block mask of the band: for each query block its few key blocks and, for backward, for each
    key block its few query blocks, each in a (rows, band width) table: linear in length, where
    PyTorch's `BlockMask.from_kv_blocks` transposes through (rows, all blocks) tables (17 GB at 8 Mb)."""
    first, last = _band(length, spec)
    n_blocks = first.numel()
    # both ends are non-decreasing in the query block, so the query blocks that list key block j form a run
    blocks = torch.arange(n_blocks)
    q_first = torch.searchsorted(last, blocks)  # first query block whose last key block is >= j
    q_last = torch.searchsorted(first, blocks, right=True) - 1  # last query block whose first key block is <= j
    kv_counts, kv_indices = _listed(first, last, n_blocks, device)
    q_counts, q_indices = _listed(q_first, q_last, n_blocks, device)
    return BlockMask(seq_lengths=(length, length), kv_num_blocks=kv_counts, kv_indices=kv_indices,
                     full_kv_num_blocks=None, full_kv_indices=None, q_num_blocks=q_counts, q_indices=q_indices,
                     full_q_num_blocks=None, full_q_indices=None, BLOCK_SIZE=(_BLOCK, _BLOCK), mask_mod=mask_mod)


class _SortRows(torch.autograd.Function):
    """Rows into hash-sorted order: ``x`` (sequences*L, ...) -> (sequences*rounds*L, ...), sorted slot j
    taking x's row ``source[j]``. Backward moves each slot's gradient to its position in its round's
    copy (``by_position[j]``: a permutation, so a plain scatter, where index_select's own backward
    zero-fills and adds atomically) and sums the rounds, in float32 or wider."""

    @staticmethod
    def forward(ctx, x, source, by_position, sequences, rounds):
        ctx.save_for_backward(by_position)
        ctx.sequences, ctx.rounds = sequences, rounds
        return x.index_select(0, source)

    @staticmethod
    def backward(ctx, grad):
        (by_position,) = ctx.saved_tensors
        back = torch.empty_like(grad).index_copy_(0, by_position, grad)  # (sequences, rounds, L, ...) flat
        wide = torch.promote_types(grad.dtype, torch.float32)
        back = back.view(ctx.sequences, ctx.rounds, -1, *grad.shape[1:]).sum(1, dtype=wide).to(grad.dtype)
        return back.view(-1, *grad.shape[1:]), None, None, None, None


class _UnsortRows(torch.autograd.Function):
    """Sorted rows back to their positions, round by round: out[by_position[j]] = x[j] (a scatter by the
    permutation); backward gathers by the same index."""

    @staticmethod
    def forward(ctx, x, by_position):
        ctx.save_for_backward(by_position)
        return torch.empty_like(x).index_copy_(0, by_position, x)

    @staticmethod
    def backward(ctx, grad):
        (by_position,) = ctx.saved_tensors
        return grad.index_select(0, by_position), None


def flex_chunked_attention(q, k, v, perm, sbuckets, key_real, spec: ChunkSpec, *,
                           compiled: bool = True) -> torch.Tensor:
    """What `chunked.chunked_attention` returns, same arguments, through FlexAttention.

    q, k, v: (batch, heads, L, d) (k None with shared keys); perm/sbuckets: (batch*heads, rounds, L)
    int32 or None; key_real: (batch, L) bool or None. ``compiled=False`` runs FlexAttention eagerly
    (a dense reference: for tests on small inputs). Returns (batch, heads, L, d) in v's dtype. Rows of
    padding queries differ: the chunked kernel's single additive mask leaves a row with no real key a
    softmax over every masked key, this one over the band; no real token reads them."""
    if spec.dropout:
        raise ValueError("FlexAttention has no attention dropout: use the chunked kernel")
    batch, heads, length, d = q.shape
    n = batch * heads
    rounds = 1 if perm is None else perm.shape[1]
    c = spec.chunk
    with torch.autocast(q.device.type, enabled=False):
        if perm is None:
            qs, vs = q.reshape(n, 1, length, d), v.reshape(n, 1, length, d)
            ks = None if spec.shared_keys else k.reshape(n, 1, length, d)
        else:
            # Flat rows of each sorted slot (sequence, round, sorted index): the row of the (sequence,
            # position) layout it takes, and its position's row in the per-round (sequence, round,
            # position) layout
            perm = perm.long()
            source = (perm + torch.arange(n, device=q.device)[:, None, None] * length).view(-1)
            by_position = (perm + torch.arange(n * rounds, device=q.device).view(n, rounds, 1) * length).view(-1)

            def sort(x):  # (n*L, ...) -> (n, rounds, L, ...) in sorted order
                return _SortRows.apply(x, source, by_position, n, rounds).view(n, rounds, length, *x.shape[1:])

            # Queries and values sorted as row pairs: a gather's random reads cost by the row, so one
            # gather of (2, d) rows beats two of d (1 Mb step on an H200: 1.07 s against 1.09 s)
            pairs = sort(torch.stack([q.reshape(n * length, d), v.reshape(n * length, d).to(q.dtype)], 1))
            qs, vs = pairs[..., 0, :], pairs[..., 1, :]  # (n, rounds, L, d) each
            ks = None if spec.shared_keys else sort(k.reshape(n * length, d))
        if spec.shared_keys:  # unit keys: normalised in float32
            ks = F.normalize(qs.to(torch.promote_types(qs.dtype, torch.float32)), dim=-1).to(qs.dtype)
        pad = None
        if key_real is not None:  # (n, rounds, L): True where the sorted key is padding
            pad = ~key_real.repeat_interleave(heads, 0).view(-1)
            pad = (pad.view(n, 1, length) if perm is None else pad[source].view(n, rounds, length)).contiguous()
        buckets = None if sbuckets is None else sbuckets.contiguous()

        def score_mod(score, b, h, qi, ki):
            if spec.self_penalty:
                score = torch.where(qi == ki, score + SELF_PENALTY, score)
            if pad is not None:
                score = torch.where(pad[b, h, ki], score + MASKED, score)
            return score

        def mask_mod(b, h, qi, ki):
            rel = ki // c - qi // c
            keep = (rel >= min(spec.offsets)) & (rel <= max(spec.offsets))
            if spec.causal:
                keep = keep & (ki <= qi)
            if spec.causal_window:  # own bucket, at most one chunk back in sorted order
                keep = keep & (ki <= qi) & (ki >= qi - c) & (buckets[b, h, qi] == buckets[b, h, ki])
            return keep

        block_mask = band_block_mask(length, spec, mask_mod, q.device)
        attend = _compiled_flex() if compiled else flex_attention
        out, lse = attend(qs, ks, vs.to(qs.dtype), score_mod=score_mod, block_mask=block_mask,
                          scale=spec.scale, return_lse=True)  # (n, rounds, L, d), (n, rounds, L)
        if perm is None:
            return out.view(batch, heads, length, d).to(v.dtype)
        # back to positions: each round's output and log-sum-exp at perm's positions, then rounds blended
        # by softmax of their log-sum-exps (one softmax over the union of the rounds' keys)
        out = _UnsortRows.apply(out.reshape(-1, d), by_position).view(n, rounds, length, d)
        lse = _UnsortRows.apply(lse.reshape(-1), by_position).view(n, rounds, length)
        weight = torch.softmax(lse.to(torch.promote_types(lse.dtype, torch.float32)), dim=1)[..., None]
        out = (out * weight).sum(1)  # float32: out's dtype promoted by the weights'
        return out.view(batch, heads, length, d).to(v.dtype)
