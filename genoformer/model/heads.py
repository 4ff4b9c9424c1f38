"""Output heads on the Reformer's hidden states, and the chunked masked-LM loss.

`MaskedLMHead` maps hidden states to vocabulary logits (decoder optionally tied to the token
embedding). `masked_lm_loss` evaluates it only at labelled positions and a chunk of rows at a time,
so a multi-megabase window never materialises (length x vocab) logits.
`TaggingHead` turns token states into per-base, per-strand class logits (B, 2, n_classes, n_bases).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from genoformer.model.config import ReformerConfig


class MaskedLMHead(nn.Module):
    """Linear -> GELU -> LayerNorm -> decoder to ``vocab_size`` logits.

    With ``config.tie_word_embeddings`` and an ``embedding`` given, the decoder multiplies by the
    embedding's weight. That weight is referenced, not registered here, so it appears once in a state
    dict (under the model) and the head's own parameters are dense, norm and decoder bias."""

    def __init__(self, config: ReformerConfig, embedding: nn.Embedding | None = None):
        super().__init__()
        d = config.d_model
        self.dense = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        nn.init.normal_(self.dense.weight, std=config.init_std)
        nn.init.zeros_(self.dense.bias)
        if config.tie_word_embeddings and embedding is not None:
            if embedding.weight.shape != (config.vocab_size, d):
                raise ValueError(f"embedding shape {tuple(embedding.weight.shape)} does not match the config "
                                 f"({config.vocab_size}, {d})")
            object.__setattr__(self, "_tied", embedding)  # not a submodule: no duplicate state-dict entry
            self.decoder = None
        else:
            object.__setattr__(self, "_tied", None)
            self.decoder = nn.Parameter(torch.empty(config.vocab_size, d).normal_(std=config.init_std))

    @property
    def decoder_weight(self) -> torch.Tensor:
        return self._tied.weight if self._tied is not None else self.decoder

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., d_model) -> logits (..., vocab_size)."""
        return F.linear(self.norm(F.gelu(self.dense(hidden))), self.decoder_weight, self.bias)


def masked_lm_loss(hidden: torch.Tensor, head: MaskedLMHead, labels: torch.Tensor, chunk: int = 8192,
                   ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of ``head(hidden)`` against ``labels`` over labelled positions only.

    hidden (B, L, d_model), labels (B, L) long with ``ignore_index`` where unlabelled. The head runs on
    ``chunk`` labelled rows at a time under activation checkpointing, so the peak holds one chunk's
    logits (forward and backward), not (labelled rows x vocab). Returns a 0-dim tensor (0 if nothing
    is labelled, still connected to the graph)."""
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match hidden {tuple(hidden.shape[:-1])}")
    flat_labels = labels.reshape(-1)
    rows = (flat_labels != ignore_index).nonzero().squeeze(1)
    if rows.numel() == 0:
        return hidden.sum() * 0.0
    selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)
    targets = flat_labels.index_select(0, rows)

    def chunk_loss(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), y, reduction="sum")

    total = None
    for s in range(0, rows.numel(), chunk):
        h, y = selected[s:s + chunk], targets[s:s + chunk]
        part = (checkpoint(chunk_loss, h, y, use_reentrant=False, preserve_rng_state=False)
                if torch.is_grad_enabled() else chunk_loss(h, y))
        total = part if total is None else total + part
    return total / rows.numel()


class TaggingHead(nn.Module):
    """Per-base, per-strand class logits from token states.

    Token t covers bases [t*stride, t*stride + k); it predicts logits for each of those k bases, for
    both strands. A base covered by several tokens gets the mean of their predictions; a base no token
    covers (a tail shorter than k) gets logits 0 (uniform).
    ``forward(hidden (B, T, d_model), n_bases) -> (B, 2, n_classes, n_bases)``, strand rows as labels
    (0 = +, 1 = -)."""

    def __init__(self, d_model: int, n_classes: int, k: int = 1, stride: int = 1):
        super().__init__()
        if n_classes < 1 or k < 1 or stride < 1:
            raise ValueError(f"TaggingHead needs n_classes, k, stride >= 1, got {n_classes}, {k}, {stride}")
        self.n_classes, self.k, self.stride = n_classes, k, stride
        self.proj = nn.Linear(d_model, 2 * n_classes * k)

    def forward(self, hidden: torch.Tensor, n_bases: int) -> torch.Tensor:
        batch, n_tokens, _ = hidden.shape
        channels = 2 * self.n_classes
        # (B, T, k, 2*C) -> (B, 2*C, T*k): entry t*k + j is base t*stride + j
        pred = self.proj(hidden).view(batch, n_tokens, self.k, channels)
        pred = pred.permute(0, 3, 1, 2).reshape(batch, channels, -1)
        if self.k == 1 and self.stride == 1:
            out = pred[..., :n_bases]
            if out.shape[-1] < n_bases:
                out = F.pad(out, (0, n_bases - out.shape[-1]))
            return out.reshape(batch, 2, self.n_classes, n_bases)
        base = (torch.arange(n_tokens, device=hidden.device)[:, None] * self.stride
                + torch.arange(self.k, device=hidden.device)).view(-1)
        base = torch.where(base < n_bases, base, n_bases)  # bases past the end go to a dropped slot
        sums = pred.new_zeros(batch, channels, n_bases + 1).index_add(2, base, pred)
        counts = pred.new_zeros(n_bases + 1).index_add_(0, base, pred.new_ones(base.shape)).clamp_(min=1)
        return (sums / counts)[..., :n_bases].reshape(batch, 2, self.n_classes, n_bases)
