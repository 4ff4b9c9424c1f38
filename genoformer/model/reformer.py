"""The Reformer encoder (Kitaev, Kaiser & Levskaya 2020): embedding -> reversible stack -> norm.

Its parts, one file each, in the paper's order:

    rotary.py      rotary positions
    runtime.py     per-call state: seeds, position-keyed dropout masks, allocator trimming
    chunked.py     the chunked attention kernel
    attention.py   full attention (the exact reference), local attention, LSH attention
    reversible.py  chunked feed-forward, reversible block, reversible stack (custom autograd)
    reformer.py    the Reformer model (this file)

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
* Memory is linear in length. The chunked kernel (`chunked.py`) scores
  ``attention_chunk_tokens`` query rows at a time, keeps only q, (k,) v, the output and one
  log-sum-exp per row (LSH keys are normalised from q as each step gathers them), and recomputes
  scores in backward (flash-attention style); hash rounds are folded in one after another with an
  online log-sum-exp; heads are processed in groups of ``head_group_size`` (by default chosen per
  call from batch x length); the feed-forward, the normalise-and-project steps and hashing run
  ``ff_chunk_size`` positions at a time (by default chosen per device). Sorting is a stable sort
  on int32 bucket ids (no bucket*L+pos key to overflow); the permutations are int32.
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

import torch
import torch.nn.functional as F
from torch import nn

from genoformer.model.config import ReformerConfig
from genoformer.model.activations import kept_blocks
from genoformer.model.reversible import ReversibleBlock, ReversibleStack
from genoformer.model.runtime import ForwardContext, mix_seed, release_host_memory


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
            seed = mix_seed(self.config.seed, 1, self.calls)
            self.calls += 1
            hash_seed = seed
        else:
            seed = hash_seed = mix_seed(self.config.seed, 0)
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
        grad = torch.is_grad_enabled()
        if grad:
            n_reversible = self._reversible_blocks(ids.numel(), x.device)
        else:  # the lean in-place stack, unless told to run the ordinary one (False, or 0 reversible blocks)
            n_reversible = 0 if not self.config.reversible else len(self.blocks)
        ctx.kept_from = n_reversible
        if n_reversible == 0:
            x1 = x2 = x
            for block in self.blocks:
                x1, x2 = block(x1, x2, ctx)
            return self.norm((x1 + x2) * 0.5)[:, :length]
        x = x.to(self._stream_dtype(x))  # (batch, padded, d_model)
        if grad:
            # The first blocks recompute their activations in backward; the rest (what memory allows,
            # see _reversible_blocks) keep them, which saves their recompute.
            reversible = self.blocks[:n_reversible]
            x1, x2 = ReversibleStack.apply(x, tuple(reversible), ctx, *reversible.parameters())
            for block in self.blocks[n_reversible:]:
                x1, x2 = block(x1, x2, ctx)
            return self.norm((x1 + x2) * 0.5)[:, :length]
        x1, x2 = x, x.clone()
        for block in self.blocks:
            block.forward_inplace(x1, x2, ctx, {})
            release_host_memory(x1.device)
        merged = x1.add_(x2).mul_(0.5)  # (batch, padded, d_model)
        del x2
        # The final norm overwrites the merged stream chunk by chunk: inference holds no third
        # full-length tensor (under autocast the output keeps the streams' dtype).
        for s in range(0, merged.shape[1], ctx.ff_positions):
            chunk = merged[:, s:s + ctx.ff_positions]
            chunk.copy_(self.norm(chunk))
        return merged[:, :length]

    def _reversible_blocks(self, tokens: int, device: torch.device) -> int:
        """How many blocks of a training call (the first ones) run reversibly, recomputing their activations
        in backward; the others run as an ordinary stack that keeps them. ``config.reversible``: True all,
        False none, an integer that many; "auto" as few as memory allows (activations.kept_blocks: the blocks
        whose activations' estimate fits keep them)."""
        setting, depth = self.config.reversible, len(self.blocks)
        if setting == "auto":
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else torch.float32
            return depth - kept_blocks(self.config, tokens, device, dtype)
        if isinstance(setting, bool):
            return depth if setting else 0
        return setting

    def _stream_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The reversible streams' dtype: the autocast dtype under autocast (unless the config keeps
        them in the parameters' precision), otherwise the embedding's."""
        device_type = x.device.type
        if self.config.low_precision_streams and torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return x.dtype

