"""What every genoformer LightningModule shares.

The encoder's settings arrive whole, as one ``encoder`` mapping of :class:`ReformerConfig` fields
(the one place their defaults live), so a YAML file or LightningCLI fills them in one block and the
checkpoint's hyperparameters stay primitive and load with ``weights_only=True``. This base class
turns them into a :class:`ReformerConfig`, builds the optimiser and schedule, keeps the random
streams' positions in the checkpoint so a resumed run continues exactly, and refuses to save a
checkpoint once the loss has become NaN/Inf. The task owns the tokenizer (a pretrained folder fixes
it); the data module is handed it (``GenomeDataModule(tokenizer=task.tokenizer)``), and ``setup``
checks the two agree.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from ..errors import ConfigError, TrainingError
from ..model import ReformerConfig
from ..model.config import DEFAULT_TOKENIZER
from ..model.io import PretrainedModel, load_pretrained
from ..tokenize import Tokenizer, make_tokenizer


class ReformerTask(pl.LightningModule):
    """Base class: an encoder built from its settings, AdamW with warm-up and cosine decay.

    ``encoder``: :class:`ReformerConfig` fields other than those the task sets (vocabulary and padding
    from the tokenizer, ``causal`` from the objective, ``seed``); unset ones take ReformerConfig's
    defaults. Ignored with ``pretrained``, whose folder fixes the encoder."""

    task_name = ""

    def __init__(
        self,
        tokenizer: str = DEFAULT_TOKENIZER,
        encoder: dict[str, Any] | None = None,
        pretrained: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        seed: int = 0,
        causal: bool = False,
    ):
        super().__init__()
        self.pretrained_model: PretrainedModel | None = load_pretrained(pretrained) if pretrained else None
        if self.pretrained_model is not None:
            # A pretrained folder fixes the vocabulary and the encoder's shape.
            self.tokenizer: Tokenizer = self.pretrained_model.tokenizer
            self.config = self.pretrained_model.config
        else:
            self.tokenizer = make_tokenizer(tokenizer)
            self.config = ReformerConfig.from_settings(encoder, self.tokenizer, causal=causal, seed=seed,
                                                       where="model.encoder")
        self.network = self.build_network()
        if self.pretrained_model is not None:
            # Fine-tuning starts from the pretrained encoder; a head of another task starts fresh.
            self.pretrained_model.load_into(self.network.encoder, prefix="encoder.", strict=False)
        # First step at which the loss was not finite (-1: none). Kept on the device so the hot
        # path never waits for the host; read at logging and checkpoint time.
        self.register_buffer("first_nonfinite_step", torch.tensor(-1, dtype=torch.long), persistent=False)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and datamodule.tokenizer != self.tokenizer:
            raise ConfigError(f"the data module tokenises with {datamodule.tokenizer!r} but the model uses "
                              f"{self.tokenizer!r}: give the data module the model's tokenizer "
                              "(GenomeDataModule(..., tokenizer=task.tokenizer))")

    def build_network(self) -> torch.nn.Module:
        """The plain-PyTorch network (``.encoder`` plus a head) this task trains and exports."""
        raise NotImplementedError

    # ---- numerical safety -------------------------------------------------------------------
    def guard_loss(self, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach())
        unset = self.first_nonfinite_step < 0
        step = torch.tensor(self.global_step, device=loss.device)
        self.first_nonfinite_step.copy_(torch.where(bad & unset, step, self.first_nonfinite_step))

    def check_finite(self) -> None:
        step = int(self.first_nonfinite_step)
        if step >= 0:
            raise TrainingError(
                f"the training loss became NaN/Inf at step {step}; stopping before a poisoned checkpoint "
                f"is written. Lower the learning rate (--model.lr), add gradient clipping "
                f"(--trainer.gradient_clip_val 1.0) or train in fp32 (--trainer.precision 32)."
            )

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Counted here, not at batch end: checkpoint callbacks run before the module's batch-end hook.
        loader = self.trainer.train_dataloader
        if hasattr(loader, "batch_consumed"):  # ResumableLoader: position for exact resume
            loader.batch_consumed()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            self.check_finite()
        # The steps done, as a metric: a process that spawned the training workers (ddp_spawn) gets their
        # metrics back but keeps its own trainer's global step, 0.
        self.log("train/steps", float(self.global_step), rank_zero_only=True)

    # ---- exact resume -----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.check_finite()
        # Masking draws from the global torch RNG; Lightning does not store it.
        checkpoint["genoformer_task"] = self.task_name
        # The encoder draws LSH rotations and dropout masks from (seed, number of training calls).
        checkpoint["genoformer_rng"] = {"cpu": torch.get_rng_state(), "encoder_calls": self.network.encoder.calls}
        if torch.cuda.is_available():
            checkpoint["genoformer_rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("genoformer_rng")
        if state:
            torch.set_rng_state(state["cpu"])
            self.network.encoder.calls = int(state.get("encoder_calls", 0))
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])

    # ---- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "norm" in name else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.hparams.warmup_steps, total // 2)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- export -----------------------------------------------------------------------------
    def export(self, folder: str | Path, *, window_length: int | None = None, overwrite: bool = False) -> Path:
        """Write a model folder (config.json, model.safetensors, tokenizer.json) others can load.

        ``window_length``: the bases per window the model was trained on (the data module's), which a
        tagger records as ``genoformer annotate``'s default window. ``overwrite``: replace an existing
        model folder at ``folder`` (anything else there is refused, see ``save_pretrained``)."""
        return self.network.save_pretrained(folder, self.tokenizer, overwrite=overwrite,
                                            head=self.exported_head(window_length))

    def exported_head(self, window_length: int | None) -> dict[str, Any]:
        """Settings written into the folder's head besides the network's own (none by default)."""
        return {}

    # ---- checkpoints ------------------------------------------------------------------------
    @staticmethod
    def init_args(hyper_parameters: dict[str, Any]) -> dict[str, Any]:
        """The constructor arguments stored in a checkpoint's ``hyper_parameters``: LightningCLI adds
        its own entries (``_class_path``, ``_instantiator``), and checkpoints written before the encoder
        settings were one ``encoder`` mapping hold them as separate arguments."""
        args = {k: v for k, v in hyper_parameters.items() if not k.startswith("_")}
        flat = {k: args.pop(k) for k in list(args) if k in _FLAT_ENCODER_ARGS}
        if flat:
            # Those tasks used their dropout for attention probabilities too.
            args["encoder"] = {**flat, "attention_dropout": flat["dropout"]}
        return args


# The encoder arguments of checkpoints written before ``encoder`` (they hold every argument).
_FLAT_ENCODER_ARGS = ("d_model", "n_heads", "depth", "d_ff", "attention", "chunk_size", "n_hashes", "dropout",
                      "reversible")
