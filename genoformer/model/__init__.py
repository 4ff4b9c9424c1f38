"""The Reformer model: configuration, encoder and heads (plain PyTorch, no Lightning)."""
from genoformer.model.attention import FullSelfAttention, LocalSelfAttention, LSHSelfAttention
from genoformer.model.config import ReformerConfig
from genoformer.model.heads import MaskedLMHead, TaggingHead, masked_lm_loss
from genoformer.model.reformer import Reformer
from genoformer.model.reversible import FeedForward, ReversibleBlock

__all__ = [
    "ReformerConfig", "Reformer", "ReversibleBlock", "FeedForward",
    "FullSelfAttention", "LocalSelfAttention", "LSHSelfAttention",
    "MaskedLMHead", "TaggingHead", "masked_lm_loss",
]
