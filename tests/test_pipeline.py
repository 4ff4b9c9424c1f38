"""The end-to-end pipeline on a small real slice, its resume logic and its config checks."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from genoformer.errors import ConfigError
from genoformer.pipeline import DEFAULT_CONFIG, load_config, run_pipeline

from .conftest import TINY


@pytest.fixture()
def tiny_config(ecoli_slice, tmp_path) -> Path:
    fasta, gff = ecoli_slice
    (tmp_path / "val.bed").write_text("NC_000913.3\t40000\t46000\n")
    (tmp_path / "test.bed").write_text("NC_000913.3\t46000\t60000\n")
    config = {
        "name": "tiny", "seed": 1,
        "data": {"fasta": str(fasta), "annotation": str(gff), "organism": "prokaryote",
                 "val_regions": str(tmp_path / "val.bed"), "test_regions": str(tmp_path / "test.bed")},
        "model": dict(TINY),
        "trainer": {"accelerator": "cpu", "log_every_n_steps": 1},
        "pretrain": {"window_length": 512, "batch_size": 2, "max_steps": 3, "warmup_steps": 1},
        "finetune": {"window_length": 512, "batch_size": 2, "max_steps": 3, "warmup_steps": 1},
        "annotate": {"window_length": 512, "batch_size": 4},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_pipeline_runs_end_to_end_and_skips_finished_stages(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    report = run_pipeline(tiny_config, out)
    assert report == out / "report" / "report.md"
    text = report.read_text()
    assert "Held-out evaluation" in text and "tracks.png" in text
    assert (out / "report" / "tracks.png").stat().st_size > 10_000
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    # The model's scores where they always were, the decoder alone's (same regions, no network) beside them.
    assert set(metrics) == {"ecoli60k.fa", "decoder_alone"} and set(metrics["decoder_alone"]) == {"ecoli60k.fa"}
    model, alone = metrics["ecoli60k.fa"], metrics["decoder_alone"]["ecoli60k.fa"]
    assert model["gene"]["reference"] == alone["gene"]["reference"] > 0 and alone["gene"]["f1"] > 0.5
    assert "| genoformer (network + decoder) |" in text and "| decoder alone (no network) |" in text
    assert re.search(r"\*\*The network (beat|did not beat) the decoder alone", text)
    for path in ("finetune/model/model.safetensors", "annotate/genome0.gff3", "annotate/genome0.bed",
                 "annotate/genome0.CDS.plus.bedgraph", "annotate/genome0.decoder_alone.gff3", "config.yaml"):
        assert (out / path).is_file(), path
    capsys.readouterr()
    run_pipeline(tiny_config, out)
    log = capsys.readouterr().err
    assert log.count("up to date, skipped") == 5
    # A changed annotate setting reruns annotate and what follows it, not training.
    config = yaml.safe_load(tiny_config.read_text())
    config["annotate"]["both_strands"] = False
    tiny_config.write_text(yaml.safe_dump(config))
    run_pipeline(tiny_config, out)
    log = capsys.readouterr().err
    assert "pretrain: up to date" in log and "finetune: up to date" in log and "annotate: running" in log


def test_training_stages_are_reproducible_from_the_seed(tiny_config, tmp_path):
    """Same config, same weights, whatever the global random state was before (the seed is set
    before the models are built: their initial weights come from the global generator)."""
    from safetensors.torch import load_file

    weights = []
    for run, disturbance in (("a", 1), ("b", 2)):
        torch.manual_seed(disturbance)
        run_pipeline(tiny_config, tmp_path / run, stages=["pretrain", "finetune"])
        weights.append(load_file(tmp_path / run / "finetune" / "model" / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_a_changed_training_stage_does_not_resume_from_the_old_configs_checkpoint(tiny_config, tmp_path, capsys):
    """A stage rerun under a new config trains afresh: the previous config's last.ckpt would carry over its
    steps, schedule and time used (seen on a GPU: max_steps 200 -> 350 resumed at step 200)."""
    from safetensors.torch import load_file

    config = yaml.safe_load(tiny_config.read_text())
    config["pretrain"]["enabled"] = False
    tiny_config.write_text(yaml.safe_dump(config))
    run_pipeline(tiny_config, tmp_path / "rerun", stages=["finetune"])
    assert (tmp_path / "rerun" / "finetune" / "checkpoints" / "last.ckpt").is_file()
    config["finetune"]["max_steps"] = 4
    tiny_config.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    run_pipeline(tiny_config, tmp_path / "rerun", stages=["finetune"])
    assert "holds another config's checkpoints; training afresh" in capsys.readouterr().err
    run_pipeline(tiny_config, tmp_path / "fresh", stages=["finetune"])
    rerun, fresh = (load_file(tmp_path / run / "finetune" / "model" / "model.safetensors")
                    for run in ("rerun", "fresh"))
    assert all(torch.equal(rerun[name], fresh[name]) for name in fresh)


def test_max_minutes_stops_training_and_still_validates_and_exports(tiny_config, tmp_path, capsys):
    config = yaml.safe_load(tiny_config.read_text())
    config["pretrain"]["enabled"] = False
    config["finetune"].update(max_steps=100_000, max_minutes=0.001)  # 60 ms: stops after its first step
    tiny_config.write_text(yaml.safe_dump(config))
    run_pipeline(tiny_config, tmp_path / "run", stages=["finetune"])
    record = json.loads((tmp_path / "run" / "finetune" / "stage.json").read_text())
    assert 1 <= record["steps"] < 100_000
    assert "val/loss" in record["metrics"] and "val/gene_sensitivity" in record["metrics"]
    assert (tmp_path / "run" / "finetune" / "model" / "model.safetensors").is_file()
    assert f"stopped by max_minutes after {record['steps']} of 100000 steps" in capsys.readouterr().err


def test_set_overrides_config_keys_with_yaml_values():
    config = load_config(None, ["finetune.max_steps=200", "annotate.gene_cost=350.5", "model.attention=[lsh, local]",
                                "pretrain.max_minutes=null", "seed=3"])
    assert config["finetune"]["max_steps"] == 200 and config["annotate"]["gene_cost"] == 350.5
    assert config["model"]["attention"] == ["lsh", "local"] and config["seed"] == 3
    assert config["pretrain"]["max_minutes"] is None and config["finetune"]["lr"] == load_config(None)["finetune"]["lr"]


@pytest.mark.parametrize("item, message", [
    ("finetune.max_stesp=3", "with --set finetune.max_stesp=3: unknown key 'finetune.max_stesp'"),
    ("finetune.max_steps=many", "'finetune.max_steps' must be int, got 'many'"),
    ("max_steps", "--set 'max_steps': expected KEY=VALUE"),
    ("data.fasta.x=1", "--set 'data.fasta.x=1': 'data.fasta' is not a section"),
    ("seed=[1", "--set 'seed=\\[1': the value is not valid YAML"),
])
def test_set_errors_name_the_override(tmp_path, item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [item])
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", "pipeline", "--set", item,
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2 and re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "out").exists()


def test_default_config_is_valid_and_points_at_bundled_data():
    config = load_config(None)
    assert Path(config["data"]["fasta"][0]).is_file()
    assert Path(config["data"]["test_regions"]).is_file()


@pytest.mark.parametrize("name", ["default", "ecoli_long", "ecoli_gpu", "model_organisms"])
def test_every_shipped_pipeline_config_loads(name):
    config = load_config(DEFAULT_CONFIG.parent / f"{name}.yaml")
    assert all(Path(p).is_file() for p in config["data"]["fasta"] + (config["data"]["annotation"] or []))


def test_shipped_lightning_cli_config_parses():
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", "fit", "--config",
                             str(DEFAULT_CONFIG.parent / "pretrain_ecoli.yaml"), "--print_config"],
                            capture_output=True, text=True, cwd=DEFAULT_CONFIG.parents[1])
    assert result.returncode == 0, result.stderr
    assert "genoformer.tasks.MaskedLMTask" in result.stdout


@pytest.mark.parametrize("change, message", [
    ({"modle": {}}, "unknown key 'modle'"),
    ({"model": {"d_modle": 3}}, "unknown key 'model.d_modle'"),
    ({"pretrain": {"max_steps": "many"}}, "'pretrain.max_steps' must be int"),
    ({"data": "x"}, "'data' must be a mapping"),
    ({"annotate": {"gene_cost": "high"}}, "annotate.gene_cost must be a number, got 'high'"),
    ({"annotate": {"codon_weight": -1}}, "annotate.codon_weight must be >= 0, got -1"),
    ({"annotate": {"start_weight": -2.5}}, "annotate.start_weight must be >= 0, got -2.5"),
    ({"annotate": {"closed_ends": "yes"}}, "annotate.closed_ends must be true or false, got 'yes'"),
    ({"finetune": {"max_minutes": 0}}, "finetune.max_minutes must be a number of minutes > 0 \\(or null\\), got 0"),
    ({"pretrain": {"max_minutes": "1h"}}, "pretrain.max_minutes must be a number of minutes > 0 \\(or null\\), got '1h'"),
    ({"data": {**yaml.safe_load(DEFAULT_CONFIG.read_text())["data"], "organism": "eukaryote"},
      "annotate": {"codon_weight": 5}}, "annotate.codon_weight applies to the prokaryote gene decoder only"),
])
def test_config_errors_name_the_key(tmp_path, change, message):
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config.update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", "pipeline", "--config", str(path),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2 and "bad.yaml" in result.stderr and re.search(message, result.stderr)
    assert not (tmp_path / "out").exists()
