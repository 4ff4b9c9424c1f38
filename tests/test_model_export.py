"""Model folders from training: `genoformer fit` then `genoformer export`, what export may replace,
the encoder settings training and `genoformer plan` share, and errors naming the setting to change."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genoformer.cli import main
from genoformer.errors import ConfigError
from genoformer.model.memory import training_config
from genoformer.tasks import MaskedLMTask

from .conftest import REPO

# `genoformer fit --config pipelines/pretrain_ecoli.yaml` (as docs/training.md shows), shrunk to seconds.
TINY_FIT = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--data.window_length", "256", "--data.batch_size", "2", "--data.windows_per_epoch", "4",
            "--data.max_eval_windows", "2", "--data.num_workers", "0"]


@pytest.fixture()
def genoformer(capsys, monkeypatch):
    """Run the `genoformer` command in this process (no interpreter start-up per call) in ``cwd``."""

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        capsys.readouterr()
        with monkeypatch.context() as patch:
            patch.chdir(cwd)
            code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """A folder where `genoformer fit --config pipelines/pretrain_ecoli.yaml` ran (its relative paths
    resolve through links to the repository's data/ and pipelines/)."""
    folder = tmp_path_factory.mktemp("fit")
    for name in ("data", "pipelines"):
        (folder / name).symlink_to(REPO / name)
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", "fit", "--config", "pipelines/pretrain_ecoli.yaml",
                             *TINY_FIT], capture_output=True, text=True, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def checkpoint(fitted: Path) -> str:
    return str(fitted / "runs" / "pretrain_ecoli" / "checkpoints" / "last.ckpt")


def test_export_accepts_a_checkpoint_written_by_genoformer_fit(fitted, tmp_path, genoformer):
    result = genoformer("export", "--checkpoint", checkpoint(fitted), "--out", str(tmp_path / "model"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    exported = load_file(tmp_path / "model" / "model.safetensors")
    trained = load_file(fitted / "runs" / "pretrain_ecoli" / "model" / "model.safetensors")  # ExportModel's
    assert exported.keys() == trained.keys()
    assert all(torch.equal(exported[name], trained[name]) for name in exported)


def test_plan_uses_the_encoder_training_builds(fitted):
    trained = json.loads((fitted / "runs" / "pretrain_ecoli" / "model" / "config.json").read_text())["model"]
    assert training_config(str(REPO / "pipelines" / "pretrain_ecoli.yaml")).to_dict() == trained
    planned = training_config(str(REPO / "pipelines" / "default.yaml"))
    assert (planned.d_model, planned.d_ff, planned.n_hashes, planned.attention_dropout) == (128, 256, 2, 0.05)


def test_export_refuses_an_existing_folder_it_did_not_write(fitted, tmp_path, genoformer):
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        result = genoformer("export", "--checkpoint", checkpoint(fitted), "--out", str(mine), *extra, cwd=tmp_path)
        assert result.returncode == 2 and "not a model folder" in result.stderr, result.stderr
        assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


def test_export_refuses_an_existing_file_and_leaves_it_in_place(fitted, tmp_path, genoformer):
    target = tmp_path / "model"
    target.write_text("not a folder")
    result = genoformer("export", "--checkpoint", checkpoint(fitted), "--out", str(target), "--overwrite", cwd=tmp_path)
    assert result.returncode == 2 and "not a model folder" in result.stderr, result.stderr
    assert target.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_export_replaces_a_model_folder_only_when_told_to(fitted, tmp_path, genoformer):
    target = str(tmp_path / "model")
    assert genoformer("export", "--checkpoint", checkpoint(fitted), "--out", target, cwd=tmp_path).returncode == 0
    result = genoformer("export", "--checkpoint", checkpoint(fitted), "--out", target, cwd=tmp_path)
    assert result.returncode == 2 and "--overwrite" in result.stderr
    result = genoformer("export", "--checkpoint", checkpoint(fitted), "--out", target, "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # ... but not a model folder someone added files to.
    (tmp_path / "model" / "README.md").write_text("my notes")
    result = genoformer("export", "--checkpoint", checkpoint(fitted), "--out", target, "--overwrite", cwd=tmp_path)
    assert result.returncode == 2 and "README.md" in result.stderr
    assert (tmp_path / "model" / "README.md").read_text() == "my notes"


def test_fit_names_a_bad_setting_in_one_line(fitted, genoformer):
    for flag, value in (("--model.mask_prob", "1.5"), ("--model.encoder.d_modle", "64")):
        result = genoformer("fit", "--config", "pipelines/pretrain_ecoli.yaml", *TINY_FIT, flag, value, cwd=fitted)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert last.startswith("genoformer: error:") and flag.rpartition(".")[2] in last


def test_encoder_settings_the_task_sets_itself_are_refused():
    with pytest.raises(ConfigError, match=r"\['seed', 'vocab_size'\] are set by the training task"):
        MaskedLMTask(encoder={"vocab_size": 12, "seed": 3})
