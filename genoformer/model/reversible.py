"""The reversible block (RevNet coupling of attention and a chunked feed-forward) and the
reversible stack, whose backward rebuilds each block's inputs from its outputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genoformer.model.attention import FullSelfAttention, LocalSelfAttention, LSHSelfAttention, merge_heads
from genoformer.model.config import ReformerConfig
from genoformer.model.runtime import (
    SITE_ATTENTION_OUT,
    SITE_FEED_FORWARD,
    ForwardContext,
    apply_dropout,
    kept_positions,
    position_dropout,
    release_host_memory,
)


# --------------------------------------------------------------------------------------- feed-forward
class FeedForward(nn.Module):
    """LayerNorm -> Linear(d_model, d_ff) -> GELU -> Linear(d_ff, d_model) -> dropout.

    Position-wise, so callers run it ``ctx.ff_positions`` positions at a time; ``start`` is the first
    position of the given slice (dropout masks are keyed by position)."""

    def __init__(self, config: ReformerConfig, layer_index: int = 0):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.w1 = nn.Linear(config.d_model, config.d_ff)
        self.w2 = nn.Linear(config.d_ff, config.d_model)
        self.p, self.layer_index = config.dropout, layer_index

    def forward(self, x: torch.Tensor, ctx: ForwardContext, start: int = 0) -> torch.Tensor:
        h = self.w2(F.gelu(self.w1(self.norm(x))))
        return position_dropout(h, self.p, ctx, ctx.site_seed(self.layer_index, SITE_FEED_FORWARD), start)


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

    @staticmethod
    def _chunks(length: int, ctx: ForwardContext):
        step = ctx.ff_positions
        return [(s, min(length, s + step)) for s in range(0, length, step)]

    def _branch_dropout(self, x: torch.Tensor, ctx: ForwardContext, start: int) -> torch.Tensor:
        """Dropout on the attention branch's output (and, being a mask multiply, on its gradient)."""
        return position_dropout(x, self.config.dropout, ctx, ctx.site_seed(self.layer_index, SITE_ATTENTION_OUT), start)

    def _branch_keeps(self, ctx: ForwardContext, like: torch.Tensor, start: int, end: int) -> torch.Tensor | None:
        """The 0/1 mask `_branch_dropout` applies at positions [start, end): (batch, n, d_model) uint8, or None."""
        if not ctx.training or self.config.dropout == 0.0:
            return None
        return kept_positions(ctx.site_seed(self.layer_index, SITE_ATTENTION_OUT), like.shape[0], start, end,
                              self.config.d_model, self.config.dropout, like.device)

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
        attention, chunks = self.attention, self._chunks(x1.shape[1], ctx)
        for heads in ctx.head_groups:
            parts = attention.project(x2, heads, self.attention_norm, ctx.ff_positions)
            o = attention.attend(parts, heads, ctx, state)
            del parts
            weight = attention.group_out_weight(heads)
            for s, e in chunks:
                x1[:, s:e] += self._branch_dropout(F.linear(merge_heads(o[:, :, s:e]), weight), ctx, s)
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
        chunks = self._chunks(y1.shape[1], ctx)
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
                parts = [p.requires_grad_() for p in attention.project(y2, heads, norm, ctx.ff_positions)]
            with torch.enable_grad():
                o = attention.attend(parts, heads, ctx, state)  # (batch, heads_in_group, L, head_dim)
            # output projection, chunk by chunk: peel this group off Y1, its weight gradient, dO
            weight = attention.group_out_weight(heads)
            d_weight = torch.zeros_like(weight) if attention.out.weight.requires_grad else None
            d_o = torch.empty_like(o)
            for s, e in chunks:
                merged = merge_heads(o[:, :, s:e].detach())  # (batch, n, group width)
                peel, d_branch = F.linear(merged, weight), dy1[:, s:e]  # (batch, n, d_model) each
                keeps = self._branch_keeps(ctx, y1, s, e)
                if keeps is not None:
                    p = self.config.dropout
                    peel, d_branch = apply_dropout(peel, keeps, p), apply_dropout(d_branch, keeps, p).to(dy1.dtype)
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
                d_proj = torch.cat([merge_heads(d[:, :, s:e]) for d in d_parts], -1)  # (batch, n, parts * width)
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
            keeps = self._branch_keeps(ctx, y1, s, e)
            y1[:, s:e] -= bias if keeps is None else apply_dropout(bias, keeps, self.config.dropout)
            if bias.requires_grad:
                d_branch = dy1[:, s:e] if keeps is None else apply_dropout(dy1[:, s:e], keeps, self.config.dropout)
                _accumulate(grads, [bias], [d_branch.sum((0, 1)).to(bias.dtype)])


# --------------------------------------------------------------------------------------- reversible stack
class ReversibleStack(torch.autograd.Function):
    """Runs every block keeping only the final (Y1, Y2); backward rebuilds each block's inputs from its
    outputs and back-propagates block by block, so activation memory does not grow with depth.

    All parameters are inputs and their gradients are outputs of backward (see the design notes in reformer.py)."""

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
            release_host_memory(x.device)
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
                release_host_memory(y1.device)
        ctx.states = None
        dx = dy1.add_(dy2) if ctx.needs_input_grad[0] else None
        param_grads = [grads.pop(p, None) for p in ctx.params]  # sole owner: autograd can adopt them
        return (dx, None, None, *param_grads)
