"""Callbacks the command line adds to training runs."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class ExportModel(pl.Callback):
    """After training, write the model folder (config.json, model.safetensors, tokenizer.json)."""

    def __init__(self, folder: str = "model"):
        self.folder = folder

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            pl_module.export(Path(self.folder))
