"""Self-supervised pretraining: masked-LM (BERT-style) or causal LM over genome windows."""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..model.config import DEFAULT_TOKENIZER
from ..model.networks import ReformerForMaskedLM
from .base import ReformerTask


class MaskedLMTask(ReformerTask):
    """Pretrain the encoder by predicting hidden tokens.

    ``objective="mlm"`` hides ``mask_prob`` of the tokens (80% become MASK, 10% a random base
    token, 10% stay) and scores only those. With overlapping k-mers a hidden token's bases are
    still visible in its neighbours, so whole spans of ``ceil(k / stride)`` tokens either side are
    hidden together. ``objective="causal"`` predicts each token from the ones before it (the
    encoder then runs with causal attention).
    """

    task_name = ReformerForMaskedLM.task

    def __init__(
        self,
        tokenizer: str = DEFAULT_TOKENIZER,
        encoder: dict[str, Any] | None = None,
        objective: Literal["mlm", "causal"] = "mlm",
        mask_prob: float = 0.15,
        pretrained: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        seed: int = 0,
    ):
        if not 0.0 < mask_prob < 1.0:
            raise ConfigError(f"model mask_prob must be in (0, 1), got {mask_prob}: set it to the fraction of "
                              "tokens to hide, e.g. 0.15")
        super().__init__(
            tokenizer=tokenizer, encoder=encoder, causal=objective == "causal", pretrained=pretrained, lr=lr,
            weight_decay=weight_decay, warmup_steps=warmup_steps, seed=seed,
        )
        self.save_hyperparameters()
        tok = self.tokenizer
        self.span = 2 * math.ceil(tok.k / tok.stride) - 1 if objective == "mlm" else 1
        # Ids a random replacement may take: the ordinary (non-special) tokens.
        ordinary = sorted(set(range(tok.vocab_size)) - set(tok.special_ids))
        self.register_buffer("ordinary_ids", torch.tensor(ordinary, dtype=torch.long), persistent=False)

    def build_network(self) -> ReformerForMaskedLM:
        return ReformerForMaskedLM(self.config)

    # ---- masking ----------------------------------------------------------------------------
    def mask_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """BERT masking with span dilation; returns (corrupted ids, bool mask of scored tokens)."""
        real = attention_mask & (input_ids != self.tokenizer.n_id)  # N carries nothing to learn
        # Masks come from (seed, step), not the global RNG: a resumed run masks exactly as an
        # uninterrupted one, whatever else drew random numbers in between.
        gen = torch.Generator(device=input_ids.device)
        gen.manual_seed(self.hparams.seed * 1_000_003 + self.global_step * 2 + (not self.training))
        anchor_p = self.hparams.mask_prob / self.span
        anchors = (torch.rand(input_ids.shape, device=input_ids.device, generator=gen) < anchor_p) & real
        if self.span > 1:
            # (batch, 1, tokens) -> dilate each anchor to a centred span of `span` tokens.
            anchors = F.max_pool1d(anchors[:, None].float(), self.span, stride=1, padding=self.span // 2)[:, 0] > 0
            anchors &= real
        choice = torch.rand(input_ids.shape, device=input_ids.device, generator=gen)
        corrupted = input_ids.clone()
        corrupted[anchors & (choice < 0.8)] = self.tokenizer.mask_id
        swap = anchors & (choice >= 0.8) & (choice < 0.9)
        random_ids = self.ordinary_ids[torch.randint(len(self.ordinary_ids), input_ids.shape,
                                                     device=input_ids.device, generator=gen)]
        corrupted[swap] = random_ids[swap]
        return corrupted, anchors

    # ---- steps ------------------------------------------------------------------------------
    def shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]  # (batch, tokens)
        if self.hparams.objective == "mlm":
            inputs, scored = self.mask_tokens(ids, mask)
            targets = ids
        else:
            inputs = ids
            # Position t predicts token t+1: score where both are real.
            scored = torch.zeros_like(mask)
            scored[:, :-1] = mask[:, 1:] & mask[:, :-1]
            targets = torch.roll(ids, -1, dims=1)
        hidden = self.network(inputs, mask)  # (batch, tokens, d_model)
        # Only scored positions go through the vocabulary projection: bounded memory at any length.
        logits = self.network.lm_head(hidden[scored])  # (scored, vocab)
        target = targets[scored]
        loss = F.cross_entropy(logits.float(), target) if target.numel() else hidden.sum() * 0.0
        accuracy = (logits.argmax(-1) == target).float().mean() if target.numel() else loss.detach()
        batch_size = ids.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=batch_size, sync_dist=stage != "train")
        self.log(f"{stage}/accuracy", accuracy, batch_size=batch_size, sync_dist=stage != "train")
        if stage != "train":
            self.log(f"{stage}/perplexity", torch.exp(loss.detach()), batch_size=batch_size, sync_dist=True)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.shared_step(batch, "train")
        self.guard_loss(loss)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.network(batch["input_ids"], batch["attention_mask"])
