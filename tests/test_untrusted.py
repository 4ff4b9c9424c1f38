"""Untrusted files never run code: crafted pickles, YAML tags, garbage model files, links out of a model folder.

Each crafted file would create a marker file if anything unpickled it or constructed its YAML tag;
the tests check the marker never appears and that the error names the file.
"""
from __future__ import annotations

import ast
import os
import pickle
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from genoformer import cli
from genoformer.errors import ModelFileError
from genoformer.model.networks import load_network
from genoformer.pipeline_config import load_config
from genoformer.tasks import GenomeDataModule, MaskedLMTask, TaggingTask

from .conftest import TINY

PACKAGE = Path(__file__).resolve().parents[1] / "genoformer"


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "a crafted file ran code"


@pytest.fixture
def crafted(tmp_path, marker) -> dict[str, Path]:
    """The same payload as bare pickles and as a torch.save zip checkpoint (what a .ckpt looks like)."""
    files = {"zip": tmp_path / "zipped.ckpt"}
    torch.save({"state_dict": {}, "genoformer_task": "masked_lm", "payload": RunsCode(marker)}, files["zip"])
    for protocol in (2, pickle.DEFAULT_PROTOCOL):
        files[f"pickle{protocol}"] = tmp_path / f"pickle{protocol}.ckpt"
        files[f"pickle{protocol}"].write_bytes(pickle.dumps({"payload": RunsCode(marker)}, protocol=protocol))
    assert not marker.exists()  # pickling does not run the payload; only loading would
    return files


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return TaggingTask(encoder=TINY).export(tmp_path_factory.mktemp("untrusted") / "model")


def _copy(model: Path, folder: Path) -> Path:
    shutil.copytree(model, folder)
    return folder


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the foreign protocol
def test_export_refuses_a_checkpoint_that_would_run_code(crafted, marker, tmp_path, capsys):
    for kind, path in crafted.items():
        assert cli.main(["export", "--checkpoint", str(path), "--out", str(tmp_path / kind)]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"genoformer: error: {path}: cannot load checkpoint safely: not a checkpoint")
        if kind != f"pickle{pickle.DEFAULT_PROTOCOL}":  # (torch stops at protocol 4's first FRAME opcode)
            assert "GLOBAL posix.system" in lines[0]  # the refused call is named
        assert not (tmp_path / kind).exists()


def test_training_resume_refuses_a_checkpoint_that_would_run_code(crafted, ecoli_slice, tmp_path):
    """``genoformer fit --ckpt_path`` and the pipeline's resume load checkpoints through Lightning."""
    task = MaskedLMTask(encoder=TINY, warmup_steps=1)
    data = GenomeDataModule(fasta=str(ecoli_slice[0]), window_length=256, batch_size=2, windows_per_epoch=2)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        trainer.fit(task, datamodule=data, ckpt_path=str(crafted["zip"]))  # LightningCLI's default weights_only


def test_model_folder_files_are_read_as_data(crafted, model, tmp_path, capsys):
    payload = crafted["zip"].read_bytes()
    cases = {"model.safetensors": "cannot read the weights as safetensors", "tokenizer.json": "not valid JSON",
             "config.json": "not valid JSON"}
    for name, message in cases.items():
        folder = _copy(model, tmp_path / name)
        (folder / name).write_bytes(payload)
        with pytest.raises(ModelFileError, match=message) as info:
            load_network(folder)
        assert str(info.value).startswith(f"{folder / name}: ")
        argv = ["annotate", "--model", str(folder), "--fasta", "x.fa", "--out", str(tmp_path / "out" / "x")]
        assert cli.main(argv) == 2
        assert capsys.readouterr().err == f"genoformer: error: {info.value}\n"
    assert not (tmp_path / "out").exists()


def test_yaml_tags_are_not_constructed(marker, tmp_path):
    tag = f'!!python/object/apply:os.system ["touch {marker}"]'
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"seed: {tag}\n")
    with pytest.raises(Exception, match="could not determine a constructor"):
        load_config(pipeline)
    training = tmp_path / "fit.yaml"
    training.write_text(f"model:\n  class_path: genoformer.tasks.MaskedLMTask\n  init_args:\n    d_model: {tag}\n")
    # jsonargparse's safe loader refuses the tag; the CLI reports it as one line and exits 2.
    assert cli.main(["fit", "--config", str(training)]) == 2
    assert not marker.exists()


def test_a_model_file_linked_from_outside_the_folder_is_refused(model, tmp_path):
    outside = _copy(model, tmp_path / "elsewhere")
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        folder = _copy(model, tmp_path / f"linked-{name}")
        (folder / name).unlink()
        (folder / name).symlink_to(outside / name)  # a valid file: only where it lives is wrong
        with pytest.raises(ModelFileError, match="outside the model folder") as info:
            load_network(folder)
        assert str(info.value).startswith(f"{folder / name}: is a link to {outside / name}")
    # A link that stays inside the folder is fine.
    folder = _copy(model, tmp_path / "inner-link")
    (folder / "weights").mkdir()
    (folder / "model.safetensors").rename(folder / "weights" / "model.safetensors")
    (folder / "model.safetensors").symlink_to(Path("weights") / "model.safetensors")
    network, _ = load_network(folder)
    reference, _ = load_network(model)
    for key, value in network.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key])


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
            yield node, name, owner, func.attr if isinstance(func, ast.Attribute) else None


def test_the_package_never_evaluates_or_unpickles_what_it_reads():
    """No eval/exec, no unsafe YAML or pickle loaders; every torch.load passes weights_only=True."""
    problems, torch_loads = [], 0
    for path in sorted(PACKAGE.rglob("*.py")):
        for node, name, owner, attr in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            if name in ("eval", "exec", "compile"):
                problems.append(f"{where}: {name}()")
            elif owner == "yaml" and attr in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all"):
                problems.append(f"{where}: yaml.{attr}()")
            elif owner in ("pickle", "marshal", "dill", "shelve", "cloudpickle") and attr in ("load", "loads", "open"):
                problems.append(f"{where}: {owner}.{attr}()")
            elif owner == "torch" and attr == "load":
                torch_loads += 1
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    problems.append(f"{where}: torch.load() without weights_only=True")
    assert problems == []
    assert torch_loads >= 1  # the scan does see the checkpoint loader (genoformer export)
