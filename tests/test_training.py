"""Lightning training: exact resume, NaN guard, safe checkpoints, export, and the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from genoformer.errors import ConfigError, TrainingError
from genoformer.model.networks import load_network
from genoformer.tasks import GenomeDataModule, MaskedLMTask, TaggingTask

from .conftest import SLICE, TINY


def _trainer(tmp_path: Path, max_steps: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, default_root_dir=tmp_path,
                      logger=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, limit_val_batches=0, **kwargs)


class Crash(pl.Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


def _pretrain_parts(fasta: Path, seed: int = 3):
    pl.seed_everything(seed, workers=True, verbose=False)
    task = MaskedLMTask(encoder=TINY, lr=3e-3, warmup_steps=2, seed=seed)
    data = GenomeDataModule(fasta=str(fasta), window_length=256, batch_size=2, windows_per_epoch=6,
                            val_fraction=0.1, seed=seed)
    return task, data


def test_interrupted_and_resumed_run_ends_with_the_same_weights(ecoli_slice, tmp_path):
    fasta, _ = ecoli_slice
    task, data = _pretrain_parts(fasta)
    _trainer(tmp_path / "straight", 12).fit(task, datamodule=data)
    straight = {k: v.clone() for k, v in task.state_dict().items()}

    from pytorch_lightning.callbacks import ModelCheckpoint

    ckpt_dir = tmp_path / "ckpt"
    task, data = _pretrain_parts(fasta)
    # The same run crashes at step 7, mid-epoch (3 steps per epoch); it resumes from its last checkpoint.
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _trainer(tmp_path / "first", 12, callbacks=[Crash(at_step=7), checkpoint]).fit(task, datamodule=data)
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 7
    task, data = _pretrain_parts(fasta)
    torch.manual_seed(12345)  # dropout and masking streams must come from the checkpoint, not from here
    _trainer(tmp_path / "second", 12).fit(task, datamodule=data, ckpt_path=str(ckpt_dir / "last.ckpt"), weights_only=True)
    resumed = task.state_dict()
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-5, atol=1e-6, msg=key)


def test_checkpoint_loads_with_weights_only_and_exports(ecoli_slice, tmp_path):
    fasta, _ = ecoli_slice
    from pytorch_lightning.callbacks import ModelCheckpoint

    task, data = _pretrain_parts(fasta)
    _trainer(tmp_path, 3, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)]).fit(task, datamodule=data)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["genoformer_task"] == "masked_lm"
    assert checkpoint["hyper_parameters"]["encoder"] == TINY
    assert all(isinstance(v, (int, float, str, bool, list, dict, type(None))) for v in checkpoint["hyper_parameters"].values())
    out = tmp_path / "exported"
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", "export", "--checkpoint",
                             str(tmp_path / "last.ckpt"), "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    network, pretrained = load_network(out)
    assert pretrained.task == "masked_lm"
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, task.network.state_dict()[key])


def test_non_finite_loss_stops_training_before_a_checkpoint_is_written(ecoli_slice, tmp_path):
    fasta, _ = ecoli_slice
    from pytorch_lightning.callbacks import ModelCheckpoint

    task, data = _pretrain_parts(fasta)
    original = task.shared_step

    def poisoned(batch, stage):
        loss = original(batch, stage)
        return loss * float("nan") if task.global_step >= 2 else loss

    task.shared_step = poisoned
    trainer = _trainer(tmp_path, 20, log_every_n_steps=1,
                       callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)])
    with pytest.raises(TrainingError, match=r"NaN/Inf at step 2.*learning rate"):
        trainer.fit(task, datamodule=data)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["global_step"] <= 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_splits_do_not_overlap_and_bad_settings_are_named(ecoli_slice):
    fasta, gff = ecoli_slice
    data = GenomeDataModule(fasta=str(fasta), annotation=str(gff), val_fraction=0.1, test_fraction=0.2)
    spans = {k: [(iv.start, iv.end) for iv in v] for k, v in data.splits[0].items()}
    assert spans == {"train": [(0, 42_000)], "val": [(42_000, 48_000)], "test": [(48_000, 60_000)]}
    with pytest.raises(ConfigError, match="one per FASTA"):
        GenomeDataModule(fasta=[str(fasta)], annotation=[str(gff), str(gff)])
    with pytest.raises(ConfigError, match="absent from the FASTA"):
        GenomeDataModule(fasta=str(fasta), test_records=["chrZ"]).splits


def test_tagging_windows_carry_strand_flipped_labels(ecoli_slice):
    fasta, gff = ecoli_slice
    data = GenomeDataModule(fasta=str(fasta), annotation=str(gff), window_length=512, val_fraction=0.1)
    dataset = data.train_dataset()
    item_plus = next(dataset[i] for i in range(50) if not dataset[i]["minus"])
    item_minus = next(dataset[i] for i in range(50) if dataset[i]["minus"])
    for item in (item_plus, item_minus):
        start, n = int(item["start"]), int(item["n_bases"])
        direct = data.label_fns[0]("NC_000913.3", start, start + n)
        expected = direct[::-1, ::-1] if item["minus"] else direct
        assert (item["labels"][:, :n].numpy() == expected).all()


def test_tagging_fits_exports_and_annotates(ecoli_slice, tmp_path):
    fasta, gff = ecoli_slice
    pl.seed_everything(0, verbose=False)
    task = TaggingTask(encoder=TINY, lr=3e-3, warmup_steps=2)
    data = GenomeDataModule(fasta=str(fasta), annotation=str(gff), window_length=512, batch_size=2,
                            windows_per_epoch=4, val_fraction=0.1, max_eval_windows=None)
    trainer = pl.Trainer(accelerator="cpu", max_steps=4, default_root_dir=tmp_path, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=data)
    metrics = trainer.callback_metrics
    assert "val/f1_CDS" in metrics and "val/gene_sensitivity" in metrics
    model = task.export(tmp_path / "tagger", window_length=data.hparams.window_length)
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", "annotate", "--model", str(model),
                             "--fasta", str(fasta), "--out", str(tmp_path / "pred" / "ecoli")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    gff_out = (tmp_path / "pred" / "ecoli.gff3").read_text().splitlines()
    assert gff_out[0] == "##gff-version 3"
    assert gff_out[1] == "##sequence-region NC_000913.3 1 60000"
    track = pd.read_csv(tmp_path / "pred" / "ecoli.CDS.plus.bedgraph", sep="\t", skiprows=1, header=None)
    assert track[1].iloc[0] == 0 and track[2].iloc[-1] == SLICE


def test_annotating_regions_pools_statistics_keeps_ids_unique_and_closes_ends_on_request(
        ecoli_slice, tmp_path, monkeypatch):
    """Two regions of one record, with a stand-in model whose probabilities are the reference labels:
    the decoder learns from both regions together (their probabilities wait in a temporary folder,
    removed afterwards), and each region's genes get IDs of their own. Genes cut by a region's end are
    called partial, or not at all with ``--closed-ends``."""
    import re

    import numpy as np

    import genoformer.decode
    import genoformer.predict
    from genoformer.cli import main
    from genoformer.annotate import annotate_genome
    from genoformer.genome import Interval, LabelScheme, label_track, read_annotation

    fasta, gff = ecoli_slice
    reference, scheme = read_annotation(gff), LabelScheme.gene_structure()

    def reference_probs(network, genome, name, tokenizer, n_classes, *, start, end, **_):
        labels = label_track(reference, name, start, end, scheme)  # (2, length)
        probs = np.full((2, n_classes, end - start), 0.02, dtype=np.float32)
        np.put_along_axis(probs, labels[:, None, :].astype(np.int64), 0.9, axis=1)
        return probs

    monkeypatch.setattr(genoformer.predict, "predict_record", reference_probs)
    learnt_from = []
    learn = genoformer.decode.learn_genome_statistics

    def spy(records, *args, **kwargs):
        learnt_from.append([(len(sequence), Path(probs.filename).parent) for sequence, probs in records()])
        return learn(records, *args, **kwargs)

    monkeypatch.setattr(genoformer.decode, "learn_genome_statistics", spy)
    model = TaggingTask(encoder=TINY).export(tmp_path / "tagger")
    regions = [Interval("NC_000913.3", 0, 30_000), Interval("NC_000913.3", 30_000, 60_000)]
    paths = annotate_genome(model, fasta, tmp_path / "pred" / "two", regions=regions, window_length=512).paths
    calls = read_annotation(paths["gff3"])
    genes = calls[calls["type"] == "gene"]
    assert len(genes) > 40 and genes["id"].is_unique and calls["id"].dropna().is_unique
    assert set(genes["id"].str.rsplit(".", n=1).str[0]) == {"NC_000913.3:1-30000", "NC_000913.3:30001-60000"}
    # Learnt once, from both regions' probabilities, read back from a hidden folder beside the outputs
    # (the disk chosen for them), which is gone afterwards.
    (sizes, folders), = [zip(*stretches) for stretches in learnt_from]
    assert sizes == (30_000, 30_000) and len(set(folders)) == 1
    assert folders[0].parent == tmp_path / "pred" and re.fullmatch(r"\.two\.probs-.*\.tmp", folders[0].name)
    assert not folders[0].exists()
    assert sorted(p.name for p in (tmp_path / "pred").iterdir() if p.name.startswith(".")) == []
    partial = genes["attributes"].map(lambda attributes: "partial" in attributes)
    assert partial.any()
    bed = tmp_path / "regions.bed"
    bed.write_text("".join(f"{iv.name}\t{iv.start}\t{iv.end}\n" for iv in regions))
    assert main(["annotate", "--model", str(model), "--fasta", str(fasta), "--regions", str(bed),
                 "--window-length", "512", "--out", str(tmp_path / "closed" / "two"), "--closed-ends"]) == 0
    closed = read_annotation(tmp_path / "closed" / "two.gff3")
    closed_genes = closed[closed["type"] == "gene"]
    assert not closed_genes["attributes"].map(lambda attributes: "partial" in attributes).any()
    assert len(closed_genes) >= (~partial).sum() - 2


def test_exported_tagger_records_its_loss_for_the_decoder(tmp_path):
    task = TaggingTask(encoder=TINY, loss="ce")
    _, pretrained = load_network(task.export(tmp_path / "tagger"))
    assert pretrained.head["loss"] == "ce" and task.decoder_options == {"gene_cost": 400.0}


def test_cli_reports_bad_input_in_one_line(tmp_path):
    missing = tmp_path / "nope.fa"
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", "annotate", "--model", str(tmp_path),
                             "--fasta", str(missing), "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "genoformer: error:" in result.stderr
    assert not list(tmp_path.glob("x*"))
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", "fit", "--model", "MaskedLMTask",
                             "--data.fasta", "x.fa", "--print_config"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "genoformer.tasks.MaskedLMTask" in result.stdout and "encoder:" in result.stdout
