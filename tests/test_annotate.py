"""The annotate workflow: the decoder alone (no network), the Python API and one track per record."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import genoformer
from genoformer.annotate import uninformative_probabilities
from genoformer.cli import main
from genoformer.evaluate import evaluate
from genoformer.genome import Genome, LabelScheme, read_annotation, read_bed_regions

from .conftest import ATHALIANA_FASTA, ATHALIANA_GFF, SLICE, TINY


@pytest.fixture(scope="module")
def tiny_tagger(tmp_path_factory):
    """An untrained tiny tagging model exported with the cross-entropy loss (decoder gene cost 400)."""
    from genoformer.tasks import TaggingTask

    return TaggingTask(encoder=TINY, loss="ce").export(tmp_path_factory.mktemp("tagger") / "model")


@pytest.fixture()
def small_fasta(tmp_path):
    bases = "ACGTTGCAAGGCTTAACCGGTTAA" * 160  # 3,840 bases
    path = tmp_path / "genome.fa"
    path.write_text(f">one\n{bases}\n")
    return path


def test_decoder_alone_through_the_cli_calls_most_reference_genes_of_an_ecoli_slice(ecoli_slice, tmp_path, capsys):
    fasta, gff = ecoli_slice
    out = tmp_path / "alone" / "slice"
    assert main(["annotate", "--evidence", "none", "--organism", "prokaryote", "--fasta", str(fasta),
                 "--out", str(out)]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(out) + ".gff3", str(out) + ".bed"]  # no network, no probability tracks
    results = evaluate(read_annotation(gff), read_annotation(out.with_name("slice.gff3")),
                       lengths={"NC_000913.3": SLICE}, prokaryote=True)
    # 47 of the slice's 57 reference genes exactly, 50 to the stop codon (the default decoder, gene cost 300).
    assert results["gene"]["reference"] == 57
    assert results["gene"]["sensitivity"] > 0.75 and results["gene"]["precision"] > 0.8
    assert results["gene_stop"]["sensitivity"] > 0.85
    assert results["nucleotide"]["coding_unstranded"]["mcc"] > 0.8


def test_decoder_alone_takes_its_gene_cost_from_a_given_model_and_never_runs_its_network(
        ecoli_slice, tiny_tagger, tmp_path, monkeypatch):
    import genoformer.predict

    def refuse(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(genoformer.predict, "predict_record", refuse)
    fasta, _ = ecoli_slice
    runs = {"model": ["--model", str(tiny_tagger)], "cost": ["--organism", "prokaryote", "--gene-cost", "400"],
            "default": ["--organism", "prokaryote"]}
    for name, options in runs.items():
        assert main(["annotate", "--evidence", "none", "--fasta", str(fasta), "--out", str(tmp_path / name),
                     *options]) == 0
    genes = {name: read_annotation(tmp_path / f"{name}.gff3").query("type == 'gene'") for name in runs}
    # The model's cross-entropy loss sets gene cost 400, as it does for the model's own annotation.
    assert genes["model"][["start", "end", "strand"]].equals(genes["cost"][["start", "end", "strand"]])
    assert len(genes["default"]) > len(genes["model"])


def test_uninformative_probabilities_leave_every_decoder_choice_even():
    scheme = LabelScheme.gene_structure()
    index = {name: i for i, name in enumerate(scheme.classes)}
    pro = uninformative_probabilities(scheme, "prokaryote", 7)
    assert pro.shape == (2, 6, 7) and np.allclose(pro.sum(axis=1), 1)
    assert (pro[:, index["CDS"]] == 0.5).all() and (pro[:, index["intergenic"]] == 0.5).all()
    eu = uninformative_probabilities(scheme, "eukaryote", 7)[0, :, 0]
    outside = 1 - eu[index["CDS"]] - eu[index["intron"]]
    # CDS against outside, intron against outside, UTRs against intergenic: all log-odds 0; no ncRNA.
    assert np.isclose(eu.sum(), 1) and np.isclose(eu[index["CDS"]], outside) and np.isclose(eu[index["intron"]], outside)
    assert eu[index["five_prime_UTR"]] == eu[index["three_prime_UTR"]] == eu[index["intergenic"]]
    assert eu[index["ncRNA"]] == 0


@pytest.mark.parametrize("options, message", [
    ([], r"annotating with a network needs a model \(--model\)"),
    (["--evidence", "none"], r"without a model, give the organism \(--organism prokaryote or eukaryote\)"),
])
def test_annotate_without_a_model_says_what_to_give(small_fasta, tmp_path, capsys, options, message):
    assert main(["annotate", "--fasta", str(small_fasta), "--out", str(tmp_path / "out" / "pred"), *options]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_decoder_alone_refuses_a_model_without_gene_structure(small_fasta, tmp_path, capsys):
    from genoformer.tasks import TaggingTask

    model = TaggingTask(encoder=TINY, classes=["promoter"]).export(tmp_path / "regions_model")
    assert main(["annotate", "--evidence", "none", "--model", str(model), "--fasta", str(small_fasta),
                 "--out", str(tmp_path / "out" / "pred")]) == 2
    assert "needs a gene-structure model with a CDS class; this one's classes are ['background', 'promoter']" in \
        capsys.readouterr().err


def test_python_api_loads_a_model_and_returns_the_written_paths_and_the_called_features(tiny_tagger, small_fasta,
                                                                                         tmp_path):
    model = genoformer.load_model(tiny_tagger)
    assert model.organism == "prokaryote" and model.loss == "ce" and model.scheme == LabelScheme.gene_structure()
    result = genoformer.annotate_genome(model, small_fasta, tmp_path / "pred", window_length=128)
    assert {"gff3", "bed", "CDS.plus", "CDS.minus"} <= set(result.paths)
    assert all(path.is_file() for path in result.paths.values())
    assert isinstance(result.features, pd.DataFrame)
    written = read_annotation(result.paths["gff3"])
    assert list(result.features["type"]) == list(written["type"])
    assert list(result.features["start"]) == list(written["start"])
    # The same from a folder path, and without a network (the decoder alone) from the same model.
    alone = genoformer.annotate_genome(tiny_tagger, small_fasta, tmp_path / "alone", evidence="none")
    assert set(alone.paths) == {"gff3", "bed"}


def _record_values(path, name: str, length: int) -> np.ndarray:
    """A bedGraph's values over record ``name``, checking the record is listed once, as sorted runs tiling it."""
    track = pd.read_csv(path, sep="\t", skiprows=1, header=None, names=["chrom", "start", "end", "value"])
    assert list(track["chrom"].drop_duplicates()) == ["one", "two"] and track["chrom"].is_monotonic_increasing
    runs = track[track["chrom"] == name]
    assert runs["start"].iloc[0] == 0 and runs["end"].iloc[-1] == length
    assert (runs["start"].to_numpy()[1:] == runs["end"].to_numpy()[:-1]).all()
    values = np.zeros(length)
    for start, end, value in runs[["start", "end", "value"]].itertuples(index=False):
        values[start:end] = value
    return values


@pytest.mark.parametrize("bigwig", [False, True])
def test_two_regions_on_one_record_write_one_track_listing_the_record_once(tiny_tagger, tmp_path, bigwig):
    bases = "ACGTTGCAAGGCTTAACCGGTTAA" * 160  # 3,840 bases per record
    fasta = tmp_path / "genome.fa"
    fasta.write_text(f">one\n{bases}\n>two\n{bases[::-1]}\n")
    regions = tmp_path / "regions.bed"
    regions.write_text("one\t100\t1000\ntwo\t0\t500\none\t2000\t3000\n")
    out = tmp_path / "pred"
    assert main(["annotate", "--model", str(tiny_tagger), "--fasta", str(fasta), "--regions", str(regions),
                 "--window-length", "128", "--out", str(out), *(["--bigwig"] if bigwig else [])]) == 0
    if bigwig:
        handle = pytest.importorskip("pyBigWig").open(str(tmp_path / "pred.CDS.plus.bw"))
        assert handle.chroms() == {"one": 3840, "two": 3840}
        one = np.nan_to_num(np.array(handle.values("one", 0, 3840)))
        handle.close()
    else:
        one = _record_values(tmp_path / "pred.CDS.plus.bedgraph", "one", 3840)
    # Both regions' values on the one record-long track, zeros elsewhere.
    assert (one[100:1000] > 0).all() and (one[2000:3000] > 0).all()
    assert not one[:100].any() and not one[1000:2000].any() and not one[3000:].any()


def test_a_gene_model_learned_through_the_cli_finds_genes_of_a_held_out_athaliana_slice(tmp_path, capsys):
    """`genoformer gene-model` learns from the Chr1-Chr3 slices; `annotate --gene-model` (no network)
    then calls the Chr4 slice's genes well above what the decoder alone finds there (nothing)."""
    (tmp_path / "train.bed").write_text("Chr1\t0\t304276\nChr2\t0\t196982\nChr3\t0\t234598\n")
    (tmp_path / "val.bed").write_text("Chr4\t0\t185850\n")
    assert main(["gene-model", "--fasta", str(ATHALIANA_FASTA), "--annotation", str(ATHALIANA_GFF),
                 "--regions", str(tmp_path / "train.bed"), "--out", str(tmp_path / "genes")]) == 0
    assert (tmp_path / "genes" / "gene_model.json").is_file()
    assert "genes used 211" in capsys.readouterr().err
    out = tmp_path / "pred" / "chr4"
    assert main(["annotate", "--gene-model", str(tmp_path / "genes"), "--evidence", "none",
                 "--fasta", str(ATHALIANA_FASTA), "--regions", str(tmp_path / "val.bed"), "--out", str(out)]) == 0
    scores = evaluate(read_annotation(ATHALIANA_GFF), read_annotation(f"{out}.gff3"),
                      lengths=Genome(ATHALIANA_FASTA).lengths, regions=read_bed_regions(tmp_path / "val.bed"))
    # Measured: nucleotide CDS F1 0.883, CDS exon F1 0.626, gene F1 0.436 (54 reference genes).
    assert scores["nucleotide"]["coding"]["f1"] > 0.8
    assert scores["exon"]["f1"] > 0.5 and scores["gene"]["f1"] > 0.3


def test_a_gene_model_with_a_network_but_no_fitted_weights_or_for_a_prokaryote_is_refused(tmp_path, capsys):
    (tmp_path / "train.bed").write_text("Chr1\t0\t304276\n")
    assert main(["gene-model", "--fasta", str(ATHALIANA_FASTA), "--annotation", str(ATHALIANA_GFF),
                 "--regions", str(tmp_path / "train.bed"), "--out", str(tmp_path / "genes")]) == 0
    for extra, message in ((["--evidence", "network"], "evidence weights file not found: fit the weights of a network "
                                                        "and this gene model on validation regions with `genoformer combine`"),
                           (["--evidence", "none", "--organism", "prokaryote"], "calls eukaryotic genes")):
        capsys.readouterr()
        assert main(["annotate", "--gene-model", str(tmp_path / "genes"), "--fasta", str(ATHALIANA_FASTA),
                     "--out", str(tmp_path / "x"), *extra]) == 2
        assert message in capsys.readouterr().err
