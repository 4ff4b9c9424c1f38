"""LightningDataModule over FASTA files (with annotations for tagging).

``regions`` (BED files) limit the data to those stretches (the held-out regions of their records
are still held out). Splits never overlap: a whole record named in ``test_records``/``val_records`` (or listed in a
``test_regions``/``val_regions`` BED file) is held out; otherwise each record is cut into three
contiguous stretches, train | validation | test, by ``val_fraction`` and ``test_fraction`` (the
held-out stretches sit at the record's end). Training draws random windows wholly inside the
training stretches; validation and test tile their stretches with fixed windows.
"""
from __future__ import annotations

from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader

from ..datasets.windows import LabelFn, RandomWindowDataset, ResumableLoader, TiledWindowDataset, WindowStream
from ..errors import ConfigError
from ..genome import (Genome, GenomeWindows, Interval, LabelIndex, LabelScheme, check_against_genome,
                      read_annotation, read_bed_files, subtract_intervals)
from ..tokenize import NucleotideTokenizer, Tokenizer

Split = Literal["train", "val", "test"]


class GenomeDataModule(pl.LightningDataModule):
    """Windows of one or more FASTA files, tokenised, with per-base labels when annotated.

    ``tokenizer`` is the model's (``task.tokenizer``; LightningCLI links it from the model); without
    one the data module tokenises single nucleotides. A task refuses a data module whose tokenizer
    differs from its own.
    """

    def __init__(
        self,
        fasta: str | list[str],
        annotation: str | list[str] | None = None,
        classes: str | list[str] = "gene_structure",
        regions: str | list[str] | None = None,
        val_records: list[str] | None = None,
        test_records: list[str] | None = None,
        val_regions: str | list[str] | None = None,
        test_regions: str | list[str] | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.0,
        window_length: int = 4096,
        batch_size: int = 8,
        windows_per_epoch: int = 512,
        max_eval_windows: int | None = 256,
        reverse_complement: bool = True,
        max_n_fraction: float = 0.5,
        num_workers: int = 0,
        seed: int = 0,
        tokenizer: Tokenizer | None = None,
    ):
        super().__init__()
        # An object, not a setting: the model folder records it (checkpoints load with weights_only).
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = tokenizer or NucleotideTokenizer()
        self.fasta = [fasta] if isinstance(fasta, str) else list(fasta)
        annotations = [annotation] if isinstance(annotation, str) else list(annotation or [])
        if annotations and len(annotations) != len(self.fasta):
            raise ConfigError(f"{len(self.fasta)} FASTA files but {len(annotations)} annotation files: give one per FASTA")
        self.annotation_paths = annotations
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ConfigError("val_fraction and test_fraction must be in [0, 1) and sum below 1")

    # ---- inputs -----------------------------------------------------------------------------
    @cached_property
    def genomes(self) -> list[Genome]:
        return [Genome(path) for path in self.fasta]

    @cached_property
    def scheme(self) -> LabelScheme | None:
        if not self.annotation_paths:
            return None
        classes = self.hparams.classes
        if classes == "gene_structure":
            return LabelScheme.gene_structure()
        return LabelScheme.from_names([classes] if isinstance(classes, str) else classes)

    @cached_property
    def annotations(self) -> list[pd.DataFrame]:
        """One annotation table per FASTA file, checked against its records."""
        tables = []
        for genome, path in zip(self.genomes, self.annotation_paths):
            table = read_annotation(path)
            check_against_genome(table, genome.lengths, path)
            tables.append(table)
        return tables

    @cached_property
    def label_fns(self) -> list[LabelFn | None]:
        if self.scheme is None:
            return [None] * len(self.fasta)
        return [LabelIndex(table, self.scheme).track for table in self.annotations]

    # ---- splits -----------------------------------------------------------------------------
    @cached_property
    def splits(self) -> list[dict[Split, list[Interval]]]:
        """Per FASTA file: the train/val/test intervals, disjoint."""
        hp = self.hparams
        region_filter = read_bed_files(hp.regions) if hp.regions else None
        held = {"val": read_bed_files(hp.val_regions), "test": read_bed_files(hp.test_regions)}
        whole = {"val": set(hp.val_records or []), "test": set(hp.test_records or [])}
        known = {name for g in self.genomes for name in g.names}
        for split, names in whole.items():
            if names - known:
                raise ConfigError(f"{split}_records names records absent from the FASTA files: {sorted(names - known)}")
        out = []
        for genome in self.genomes:
            base = region_filter if region_filter is not None else [Interval(n, 0, L) for n, L in genome.lengths.items()]
            base = [iv for iv in base if iv.name in genome.lengths]
            split: dict[Split, list[Interval]] = {"train": [], "val": [], "test": []}
            held_records = set()  # a record's held-out regions are listed once, however many stretches it has
            for iv in base:
                name = next((s for s in ("test", "val") if iv.name in whole[s]), None)
                if name is not None:
                    split[name].append(iv)
                    continue
                if held["val"] or held["test"]:
                    if iv.name not in held_records:
                        held_records.add(iv.name)
                        split["val"] += [h for h in held["val"] if h.name == iv.name]
                        split["test"] += [h for h in held["test"] if h.name == iv.name]
                    split["train"] += subtract_intervals([iv], held["val"] + held["test"])
                    continue
                n_test = int(round(len(iv) * hp.test_fraction))
                n_val = int(round(len(iv) * hp.val_fraction))
                cut_val, cut_test = iv.end - n_test - n_val, iv.end - n_test
                for name, lo, hi in (("train", iv.start, cut_val), ("val", cut_val, cut_test), ("test", cut_test, iv.end)):
                    if hi > lo:
                        split[name].append(Interval(iv.name, lo, hi))
            out.append(split)
        if not any(s["train"] for s in out):
            raise ConfigError("no training sequence left after holding out validation and test regions")
        return out

    def split_intervals(self, split: Split) -> list[list[Interval]]:
        return [s[split] for s in self.splits]

    # ---- datasets ---------------------------------------------------------------------------
    def train_dataset(self) -> RandomWindowDataset:
        hp = self.hparams
        windows = [GenomeWindows(g, hp.window_length, regions=s["train"], max_n_fraction=hp.max_n_fraction)
                   if s["train"] else None for g, s in zip(self.genomes, self.splits)]
        weights = np.array([sum(len(iv) for iv in s["train"]) for s in self.splits], dtype=float)
        return RandomWindowDataset(
            [w for w in windows if w is not None], self.tokenizer, hp.windows_per_epoch,
            weights=weights[weights > 0] / weights.sum(), seed=hp.seed,
            reverse_complement=hp.reverse_complement,
            labels=[fn for fn, w in zip(self.label_fns, windows) if w is not None],
        )

    def eval_dataset(self, split: Split) -> ConcatDataset:
        """Fixed windows tiling ``split``; at most ``max_eval_windows``, evenly spaced."""
        hp = self.hparams
        parts = []
        for source, (genome, s, fn) in enumerate(zip(self.genomes, self.splits, self.label_fns)):
            if not s[split]:
                continue
            tiles = GenomeWindows(genome, hp.window_length, regions=s[split], max_n_fraction=hp.max_n_fraction)
            parts.append(TiledWindowDataset(genome, list(tiles), self.tokenizer, hp.window_length, fn, source=source))
        if not parts:
            raise ConfigError(f"the {split} split is empty: set {split}_fraction, {split}_records or {split}_regions")
        dataset = ConcatDataset(parts)
        if hp.max_eval_windows and len(dataset) > hp.max_eval_windows:
            keep = np.linspace(0, len(dataset) - 1, hp.max_eval_windows).round().astype(int)
            dataset = torch.utils.data.Subset(dataset, keep.tolist())
        return dataset

    # ---- loaders ----------------------------------------------------------------------------
    def loader_options(self) -> dict:
        hp = self.hparams
        return dict(batch_size=hp.batch_size, num_workers=hp.num_workers, pin_memory=torch.cuda.is_available())

    def loader(self, dataset) -> DataLoader:
        return DataLoader(dataset, **self.loader_options())

    def train_dataloader(self) -> ResumableLoader:
        """Random windows; with several devices each rank draws its own share of the stream, so
        run the Trainer with ``use_distributed_sampler=False``."""
        dataset = self.train_dataset()
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return ResumableLoader(dataset, WindowStream(len(dataset), self.hparams.seed, rank, world),
                               **self.loader_options())

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.eval_dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.eval_dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        return self.loader(self.eval_dataset("test"))

    def class_frequencies(self, max_windows: int = 200) -> np.ndarray:
        """Fraction of each class over (a sample of) the training stretches, both strands."""
        if self.scheme is None:
            raise ConfigError("class frequencies need an annotation")
        counts = np.zeros(self.scheme.n_classes, dtype=np.int64)
        for s, fn in zip(self.splits, self.label_fns):
            for iv in s["train"][:max_windows]:
                counts += np.bincount(fn(iv.name, iv.start, iv.end).ravel(), minlength=len(counts))
        return counts / max(1, counts.sum())
