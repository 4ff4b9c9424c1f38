"""The Reformer model: configuration, encoder and heads (plain PyTorch, no Lightning)."""
from genoformer.model.config import ReformerConfig
from genoformer.model.heads import MaskedLMHead, TaggingHead, masked_lm_loss
from genoformer.model.reformer import (
    FeedForward,
    FullSelfAttention,
    LocalSelfAttention,
    LSHSelfAttention,
    Reformer,
    ReversibleBlock,
)

__all__ = [
    "ReformerConfig", "Reformer", "ReversibleBlock", "FeedForward",
    "FullSelfAttention", "LocalSelfAttention", "LSHSelfAttention",
    "MaskedLMHead", "TaggingHead", "masked_lm_loss",
]
