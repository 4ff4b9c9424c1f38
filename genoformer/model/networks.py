"""Encoder + head pairs: the plain-PyTorch networks that tasks train and model folders hold.

The weights of a model folder are the ``state_dict`` of one of these, so ``encoder.*`` names are
the same for every task and a tagger can start from a pretrained masked-LM encoder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelFileError
from .config import ReformerConfig
from .heads import MaskedLMHead, TaggingHead
from ..tokenize import Tokenizer
from .io import PretrainedModel, load_pretrained, save_pretrained
from .reformer import Reformer


class PretrainedNetwork(nn.Module):
    """``save_pretrained`` / ``from_pretrained`` for the networks below (no Lightning needed)."""

    task = ""
    head_settings: dict[str, Any] = {}

    def save_pretrained(self, folder: str | os.PathLike, tokenizer: Tokenizer, *, head: dict[str, Any] | None = None,
                        overwrite: bool = False) -> Path:
        """Write the model folder; ``head``: settings recorded beside ``head_settings`` (e.g. the
        training window); ``overwrite``: see :func:`~genoformer.model.io.save_pretrained`."""
        return save_pretrained(folder, self, self.encoder.config, tokenizer, task=self.task,
                               head={**self.head_settings, **(head or {})}, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> tuple["PretrainedNetwork", Tokenizer]:
        """The network stored in ``folder`` (in eval mode) and its tokenizer."""
        network, pretrained = load_network(folder)
        if not isinstance(network, cls):
            raise ModelFileError(pretrained.folder / "config.json", f"holds a {pretrained.task!r} model, not {cls.task!r}")
        return network, pretrained.tokenizer


class ReformerForMaskedLM(PretrainedNetwork):
    """Encoder and a token-prediction head (masked or, with ``config.causal``, next-token LM)."""

    task = "masked_lm"

    def __init__(self, config: ReformerConfig):
        super().__init__()
        self.encoder = Reformer(config)
        self.lm_head = MaskedLMHead(config, self.encoder.embedding if config.tie_word_embeddings else None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask)  # (batch, length, d_model)


class ReformerTagger(PretrainedNetwork):
    """Encoder and a per-base, strand-aware classification head.

    ``head_settings`` (JSON) travel with the weights: the classes (``classes``, ``scheme``), the
    organism's gene rules and the training window length, so ``genoformer annotate`` needs only
    the folder.
    """

    task = "tagging"

    def __init__(self, config: ReformerConfig, n_classes: int, k: int = 1, stride: int = 1,
                 head_settings: dict[str, Any] | None = None):
        super().__init__()
        self.head_settings = dict(head_settings or {})
        self.encoder = Reformer(config)
        self.head = TaggingHead(config.d_model, n_classes, k=k, stride=stride)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, n_bases: int) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask)  # (batch, tokens, d_model)
        return self.head(hidden, n_bases)  # (batch, 2 strands, classes, bases)


def load_network(folder: str | os.PathLike) -> tuple[PretrainedNetwork, PretrainedModel]:
    """Rebuild the network stored in a model folder, weights loaded, in eval mode."""
    pretrained = load_pretrained(folder)
    if pretrained.task not in (ReformerTagger.task, ReformerForMaskedLM.task):
        raise ModelFileError(pretrained.folder / "config.json", f"unknown task {pretrained.task!r}")

    def build() -> PretrainedNetwork:
        if pretrained.task == ReformerTagger.task:
            return ReformerTagger(pretrained.config, len(pretrained.head["classes"]), k=pretrained.tokenizer.k,
                                  stride=pretrained.tokenizer.stride, head_settings=pretrained.head)
        return ReformerForMaskedLM(pretrained.config)

    # Shapes first, on the meta device (no memory): a config.json far larger than its weights is refused
    # before the network is allocated.
    with torch.device("meta"):
        pretrained.check_fits(build())
    network = build()
    pretrained.load_into(network)
    return network.eval(), pretrained


__all__ = ["ReformerForMaskedLM", "ReformerTagger", "load_network"]
