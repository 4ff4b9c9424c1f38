"""Choosing on validation regions: the coordinate search, the decoder's settings fitted for a gene model,
stored in its file and used where it decodes, and the bad inputs of that fit."""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, replace

import pytest

from genoformer.cli import main
from genoformer.errors import ConfigError, ModelFileError
from genoformer.genemodel import DecodeSettings, GeneModel, ScoringTables, decode_with_gene_model, fit_decode_settings
from genoformer.genemodel.fitting import check_validation_regions, coordinate_search
from genoformer.genome import Interval

from .conftest import ATHALIANA_FASTA, ATHALIANA_GFF

VALIDATION = [Interval("Chr4", 0, 90_000)]  # a stretch of the Chr4 slice; the model learns from Chr1-Chr3
SMALL_GRID = {"gene_penalty": (3.0, 7.0), "coding_weight": (1.2,)}


@pytest.fixture(scope="module")
def gene_model(athaliana):
    genome, annotation = athaliana
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ~210 genes: near the few-genes warning, depending on slices
        return GeneModel.fit(genome, annotation, [Interval(name, 0, genome.lengths[name])
                                                  for name in ("Chr1", "Chr2", "Chr3")])


@pytest.fixture(scope="module")
def fit(athaliana, gene_model):
    genome, annotation = athaliana
    with pytest.warns(UserWarning, match=r"on only \d\d coding transcripts \(fewer than 200\): .* noisy"):
        return fit_decode_settings(genome, annotation, VALIDATION, gene_model, grid=SMALL_GRID)


@dataclass(frozen=True)
class _Point:
    x: float = 0.0
    y: float = 0.0


def test_the_coordinate_search_finds_the_grid_optimum_of_a_separable_objective_and_breaks_ties_by_preference():
    seen = []

    def score(p):
        seen.append(p)
        return -(p.x - 2) ** 2 - (p.y + 1) ** 2

    grid = {"x": (0.0, 1.0, 2.0, 3.0), "y": (-2.0, -1.0, 0.0)}
    assert coordinate_search(_Point(), grid, score, rounds=3) == _Point(2.0, -1.0)
    assert seen[0] == _Point()  # the start is scored first: the search never returns worse than it
    flat = coordinate_search(_Point(), {"x": (5.0, 1.0)}, lambda p: 0.0, rounds=1, prefer=lambda p: -abs(p.x - 1))
    assert flat == _Point(1.0, 0.0)  # all tie: the preferred point
    skipped = coordinate_search(_Point(), grid, score, rounds=2, skip=lambda best, name: name == "y")
    assert skipped == _Point(2.0, 0.0)


def test_fitted_decoder_settings_score_at_least_the_defaults_on_their_regions(fit):
    start, *_ = fit.trials
    assert start["settings"] == {"gene_penalty": 5.0, "coding_weight": 1.0}  # the defaults, tried first
    assert fit.scores["objective"] >= start["objective"]
    assert fit.scores["objective"] == max(t["objective"] for t in fit.trials)
    assert {name: getattr(fit.settings, name) for name in SMALL_GRID} in [t["settings"] for t in fit.trials]
    # Only the grid's settings move.
    untouched = {k: v for k, v in asdict(fit.settings).items() if k not in SMALL_GRID}
    assert untouched == {k: v for k, v in asdict(DecodeSettings()).items() if k not in SMALL_GRID}


def test_fitted_settings_travel_in_the_model_file_and_are_what_it_decodes_with(tmp_path, athaliana, gene_model):
    genome, _ = athaliana
    chosen = DecodeSettings(gene_penalty=7.0, coding_weight=1.2)
    assert "decoder" not in gene_model.to_dict()  # not fitted: the file (and fingerprint) as before the field
    fitted = GeneModel.load(replace(gene_model, decoder=chosen).save(tmp_path).parent)
    assert fitted.decoder == chosen and ScoringTables(fitted).settings == chosen
    assert fitted.fingerprint() != gene_model.fingerprint()  # evidence weights fitted before are refused
    region = [Interval("Chr5", 0, 60_000)]
    by_file = decode_with_gene_model(genome, fitted, region)
    by_hand = decode_with_gene_model(genome, gene_model, region, chosen)
    assert by_file.drop(columns="attributes").equals(by_hand.drop(columns="attributes"))
    # Settings given explicitly still win over the fitted ones.
    assert ScoringTables(fitted, DecodeSettings()).settings == DecodeSettings()


@pytest.mark.parametrize("change, told", [
    (lambda d: d.update(decoder=[1, 2]), "'decoder': must map the settings"),
    (lambda d: d["decoder"].update(speed=1.0), "'decoder': unknown ['speed']"),
    (lambda d: d["decoder"].pop("gene_penalty"), "'decoder': missing ['gene_penalty']"),
    (lambda d: d["decoder"].update(gene_penalty="high"), "'decoder.gene_penalty': 'high' is not a valid value"),
    (lambda d: d["decoder"].update(coding_weight=True), "'decoder.coding_weight': True is not a valid value"),
    (lambda d: d["decoder"].update(min_exon=0), "'decoder.min_exon': 0 is not a valid value (the default is 3)"),
    (lambda d: d["decoder"].update(open_ends=1), "'decoder.open_ends': 1 is not a valid value"),
    (lambda d: d["decoder"].update(coding_weight=-3), "'decoder.coding_weight': -3 is not a valid value"),
    (lambda d: d["decoder"].update(gene_penalty=10 ** 400), "'decoder.gene_penalty': 1000"),
    (lambda d: d["decoder"].update(intron_horizon=10 ** 12), "'decoder.intron_horizon': 1000000000000 is not a valid"),
])
def test_a_broken_decoder_field_is_refused_naming_the_file_and_the_setting(tmp_path, gene_model, change, told):
    path = replace(gene_model, decoder=DecodeSettings()).save(tmp_path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ModelFileError) as refused:
        GeneModel.load(tmp_path)
    assert str(refused.value).startswith(f"{path}: gene model field ") and told in str(refused.value)


def test_fitting_on_regions_without_a_coding_gene_or_with_an_unknown_setting_is_refused(athaliana, gene_model):
    genome, annotation = athaliana
    with pytest.raises(ConfigError, match=r"\(Chr4:0-10\) hold no annotated coding transcript"):
        fit_decode_settings(genome, annotation, [Interval("Chr4", 0, 10)], gene_model)
    with pytest.raises(ConfigError, match=r"unknown settings \['speed'\]"):
        fit_decode_settings(genome, annotation, VALIDATION, gene_model, grid={"speed": (1.0,)})
    with pytest.raises(ConfigError, match="at least one validation region"):
        fit_decode_settings(genome, annotation, [], gene_model)
    # A region given twice counts its transcripts once (the few-transcripts warning must not be hidden).
    assert check_validation_regions(annotation, VALIDATION * 2) == check_validation_regions(annotation, VALIDATION) > 0


def test_gene_model_cli_fits_the_decoder_on_validation_regions_and_annotate_uses_them(tmp_path, capsys):
    train, val = tmp_path / "train.bed", tmp_path / "val.bed"
    train.write_text("Chr1\t0\t304276\nChr2\t0\t196982\nChr3\t0\t234598\n")
    val.write_text("Chr4\t0\t60000\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["gene-model", "--fasta", str(ATHALIANA_FASTA), "--annotation", str(ATHALIANA_GFF),
                     "--regions", str(train), "--val-regions", str(val), "--out", str(tmp_path / "genes")]) == 0
    model = GeneModel.load(tmp_path / "genes")
    assert model.decoder is not None and model.report["decoder fitted on"] == "Chr4:0-60000"
    assert model.report["decoder trials"] >= 10 and 0 < model.report["decoder validation objective"] <= 1
    assert "decoder fitted on Chr4:0-60000" in capsys.readouterr().err
    empty = tmp_path / "empty.bed"
    empty.write_text("Chr4\t0\t10\n")
    assert main(["gene-model", "--fasta", str(ATHALIANA_FASTA), "--annotation", str(ATHALIANA_GFF),
                 "--regions", str(train), "--val-regions", str(empty), "--out", str(tmp_path / "none")]) != 0
    assert "hold no annotated coding transcript" in capsys.readouterr().err
    assert not (tmp_path / "none" / "gene_model.json").exists()
