"""Callbacks and plugins the command line and the pipeline add to training runs."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ..files import atomic_path


class ExportModel(pl.Callback):
    """After training, write the model folder (config.json, model.safetensors, tokenizer.json):
    ``folder``, or ``model/`` under the trainer's ``default_root_dir`` (never the working directory,
    which is often a source checkout). A rerun replaces the model folder an earlier run wrote there;
    anything else there is refused. The data module's window length goes into the folder (a
    tagger's default window for ``genoformer annotate``)."""

    def __init__(self, folder: str | None = None):
        self.folder = folder

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            datamodule = getattr(trainer, "datamodule", None)
            window_length = datamodule.hparams.get("window_length") if datamodule is not None else None
            pl_module.export(Path(self.folder) if self.folder else Path(trainer.default_root_dir) / "model",
                             window_length=window_length, overwrite=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary sibling and renamed, so a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
