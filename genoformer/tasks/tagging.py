"""Gene-region tagging: per-base, strand-aware classes, fine-tuned from a pretrained encoder."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..datasets.stitch import ProbabilityStitcher
from ..datasets.windows import IGNORE_LABEL
from ..decode import StartModel, Stretch, decode_stretches, gene_decoder_options, start_model_from_genes
from ..decode.prokaryote import MIN_START_TRAINING_GENES
from ..decode.start_sites import region_genes
from ..errors import ConfigError
from ..evaluate import evaluate
from ..genome import LabelScheme
from ..model.config import DEFAULT_TOKENIZER
from ..model.networks import ReformerTagger
from .base import ReformerTask
from .metrics import ConfusionMatrix, pool_ranks


class TaggingTask(ReformerTask):
    """Per-base classification head on the Reformer encoder.

    ``classes`` is ``"gene_structure"`` (intergenic, 5'UTR, CDS, intron, 3'UTR, ncRNA) or a list
    of the user's own class names (BED name column or GFF feature types). The loss is plain,
    class-weighted (weights 1/sqrt(frequency) measured on the training stretches) or focal.
    Each validation epoch logs per-class F1/MCC per base and, for gene structures, decodes the
    validation stretches into gene models and logs exon- and gene-level scores against the
    reference annotation.
    """

    task_name = ReformerTagger.task

    def __init__(
        self,
        classes: str | list[str] = "gene_structure",
        organism: Literal["prokaryote", "eukaryote"] = "prokaryote",
        loss: Literal["ce", "weighted", "focal"] = "weighted",
        focal_gamma: float = 2.0,
        freeze_encoder: bool = False,
        gene_metrics: bool = True,
        tokenizer: str = DEFAULT_TOKENIZER,
        encoder: dict[str, Any] | None = None,
        pretrained: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        seed: int = 0,
    ):
        self.organism, self.loss_kind = organism, loss
        self.scheme = (LabelScheme.gene_structure() if classes == "gene_structure"
                       else LabelScheme.from_names([classes] if isinstance(classes, str) else classes))
        super().__init__(
            tokenizer=tokenizer, encoder=encoder, pretrained=pretrained, lr=lr, weight_decay=weight_decay,
            warmup_steps=warmup_steps, seed=seed,
        )
        self.save_hyperparameters()
        if freeze_encoder:
            self.network.encoder.requires_grad_(False)
        n = self.scheme.n_classes
        self.register_buffer("class_weights", torch.ones(n), persistent=False)
        self.confusion = {stage: ConfusionMatrix(n) for stage in ("val", "test")}
        self.stitchers: dict[tuple[int, str, int], ProbabilityStitcher] = {}
        # Prokaryote gene structures: where genes start, learnt from the training regions' annotation on
        # first use (see `learnt_start_model`); kept in checkpoints and written into the model folder.
        self.start_model: StartModel | None = None
        self._start_model_learnt = False

    def build_network(self) -> ReformerTagger:
        # The loss travels with the model: the gene decoder's default cost depends on it.
        settings = {"classes": list(self.scheme.classes), "scheme": self.scheme.to_dict(), "organism": self.organism,
                    "loss": self.loss_kind}
        return ReformerTagger(self.config, self.scheme.n_classes, k=self.tokenizer.k, stride=self.tokenizer.stride,
                              head_settings=settings)

    @property
    def decoder_options(self) -> dict:
        """The gene decoder's options for this model, as ``genoformer annotate`` uses them by default."""
        if self.scheme.kind != "gene_structure":
            return {}
        options = gene_decoder_options(self.organism, self.loss_kind)
        start_model = self.learnt_start_model()
        return options if start_model is None else {**options, "start_model": start_model}

    def exported_head(self, window_length: int | None) -> dict[str, Any]:
        # genoformer annotate's default window is the one the model was trained on.
        head = {} if window_length is None else {"window_length": int(window_length)}
        start_model = self.learnt_start_model()
        return head if start_model is None else {**head, "start_model": start_model.to_dict()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        start_model = self.learnt_start_model()
        if start_model is not None:
            checkpoint["genoformer_start_model"] = start_model.to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if "genoformer_start_model" in checkpoint:
            self.start_model = StartModel.from_dict(checkpoint["genoformer_start_model"])

    def learnt_start_model(self) -> StartModel | None:
        """The start model, learnt on first use from the attached data module (in whichever process asks:
        under ``ddp_spawn`` training runs in workers whose attributes never reach the exporting process);
        None for eukaryotes, other label sets, too few genes, or no data at hand."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if (self.start_model is None and not self._start_model_learnt and datamodule is not None
                and getattr(datamodule, "scheme", None) is not None and self.organism == "prokaryote"
                and self.scheme.kind == "gene_structure"):
            self._start_model_learnt = True
            self.learn_start_model(datamodule)
        return self.start_model

    def learn_start_model(self, datamodule) -> None:
        """The prokaryote decoder's start model, from the CDS of the training regions' annotation (genes that
        lie wholly inside a region). Too few genes for one: a warning, and the decoder self-trains instead."""
        training = datamodule.split_intervals("train")
        model, n_genes = start_model_from_genes(
            genes for source, intervals in enumerate(training)
            for genes in region_genes(datamodule.genomes[source], datamodule.annotations[source], intervals))
        names = sorted({iv.name for intervals in training for iv in intervals})
        if n_genes < MIN_START_TRAINING_GENES:
            warnings.warn(f"the training regions hold {n_genes} genes with a start and stop codon, too few to learn "
                          f"where genes start (at least {MIN_START_TRAINING_GENES}); the decoder learns it from "
                          "its own calls instead", stacklevel=2)
            model = None
        self.start_model = None if model is None else dataclasses.replace(model, records=tuple(names))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self.trainer.datamodule
        if datamodule.scheme is None:
            raise ConfigError("tagging needs annotated data: set data.annotation (one file per FASTA)")
        if tuple(datamodule.scheme.classes) != tuple(self.scheme.classes):
            raise ConfigError(f"the model's classes {list(self.scheme.classes)} differ from the data's "
                              f"{list(datamodule.scheme.classes)}: set model classes and data classes alike")
        if self.hparams.loss == "weighted" and stage == "fit":
            freq = torch.as_tensor(datamodule.class_frequencies(), dtype=torch.float32)
            weights = torch.where(freq > 0, freq.clamp_min(1e-6).rsqrt(), torch.zeros_like(freq))
            self.class_weights.copy_(weights / (weights * freq).sum().clamp_min(1e-12))

    # ---- loss -------------------------------------------------------------------------------
    def loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float().transpose(1, 2)  # (batch, classes, strands, bases)
        if self.hparams.loss == "focal":
            logp = F.log_softmax(logits, dim=1)
            valid = labels != IGNORE_LABEL
            target = labels.clamp_min(0)
            logp_t = logp.gather(1, target[:, None])[:, 0]  # (batch, strands, bases)
            focal = -((1 - logp_t.exp()) ** self.hparams.focal_gamma) * logp_t
            return focal[valid].mean()
        weight = self.class_weights if self.hparams.loss == "weighted" else None
        return F.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE_LABEL)

    def forward(self, batch: dict) -> torch.Tensor:
        # Unlabelled windows: predictions up to the longest window's last base.
        n_bases = batch["labels"].shape[-1] if "labels" in batch else int(batch["n_bases"].max())
        return self.network(batch["input_ids"], batch["attention_mask"], n_bases)  # (batch, 2, classes, bases)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(self(batch), batch["labels"])
        self.guard_loss(loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["labels"].shape[0])
        return loss

    # ---- evaluation -------------------------------------------------------------------------
    def eval_step(self, batch: dict, stage: str) -> None:
        logits = self(batch)
        labels = batch["labels"]
        loss = self.loss_fn(logits, labels)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=labels.shape[0], sync_dist=True)
        self.confusion[stage].update(logits.argmax(2), labels)
        if self.hparams.gene_metrics and self.scheme.kind == "gene_structure":
            probs = torch.softmax(logits.float(), dim=2).cpu().numpy()
            for i, p in enumerate(probs):
                key = (int(batch["source"][i]), int(batch["record"][i]))
                n = int(batch["n_bases"][i])
                self.stitch(key, int(batch["start"][i]), p[:, :, :n], stage)

    def stitch(self, key: tuple[int, int], start: int, probs: np.ndarray, stage: str) -> None:
        datamodule = self.trainer.datamodule
        source, record = key
        name = datamodule.genomes[source].names[record]
        for iv in datamodule.split_intervals(stage)[source]:
            if iv.name == name and iv.start <= start < iv.end:
                skey = (source, name, iv.start)
                if skey not in self.stitchers:
                    self.stitchers[skey] = ProbabilityStitcher(len(iv), self.scheme.n_classes, offset=iv.start)
                self.stitchers[skey].add(start, probs)
                return

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.log_metrics("test")

    def log_metrics(self, stage: str) -> None:
        # Under DDP every rank first pools all ranks' windows, so each computes the whole evaluation's
        # metrics (sync_dist then averages equal values; a per-rank F1 averaged would not be the F1).
        pool_ranks(self.confusion[stage], self.stitchers, self.scheme.n_classes, self.device)
        for name, value in self.confusion[stage].summary(self.scheme.classes).items():
            self.log(f"{stage}/{name}", value, sync_dist=True)
        self.confusion[stage].reset()
        if self.stitchers and not self.trainer.sanity_checking:
            for name, value in self.gene_level(stage).items():
                self.log(f"{stage}/{name}", value, sync_dist=True)
        self.stitchers.clear()

    def gene_level(self, stage: str) -> dict[str, float]:
        """Decode the stitched stretches into gene models; score them against the reference."""
        datamodule = self.trainer.datamodule
        out: dict[str, float] = {}
        for source, genome in enumerate(datamodule.genomes):
            stretches = [Stretch(name, start) for s, name, start in self.stitchers if s == source]
            if not stretches:
                continue
            probs = [self.stitchers[source, stretch.seqid, stretch.start].result() for stretch in stretches]

            def load(i: int, lazy: bool) -> tuple[str, np.ndarray]:  # used at once, inside this iteration
                start = stretches[i].start
                return genome.fetch(stretches[i].seqid, start, start + probs[i].shape[-1]), probs[i]

            # Decoded as `genoformer annotate` decodes the same regions: statistics pooled over them.
            tables = decode_stretches(stretches, load, self.scheme, self.hparams.organism, **self.decoder_options)
            regions = datamodule.split_intervals(stage)[source]
            result = evaluate(datamodule.annotations[source], pd.concat(tables, ignore_index=True),
                              lengths=genome.lengths, regions=regions,
                              prokaryote=self.hparams.organism == "prokaryote")
            for level in ("exon", "gene"):
                for metric in ("sensitivity", "precision", "f1"):
                    value = result.get(level, {}).get(metric)
                    if value is not None:
                        out[f"{level}_{metric}"] = float(value)
        return out

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return torch.softmax(self(batch).float(), dim=2)
