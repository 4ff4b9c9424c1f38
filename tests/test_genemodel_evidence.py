"""A network's evidence weighed into the learned gene model's scores: exactness at weight 0, the fit,
the weights file, and the CLI (`genoformer combine`, `annotate --model --gene-model`)."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from genoformer.cli import main
from genoformer.errors import ConfigError, ModelFileError
from genoformer.evaluate import evaluate
from genoformer.genemodel import (
    EvidenceWeights, GeneModel, combined_evidence, decode_with_gene_model, fit_evidence_weights, gene_model_transcripts,
)
from genoformer.genemodel.evidence import WEIGHTS_FILE
from genoformer.genome import Interval, LabelIndex, LabelScheme, read_annotation

from .conftest import ATHALIANA_FASTA, ATHALIANA_GFF, TINY

SCHEME = LabelScheme.gene_structure()
CHR4 = [Interval("Chr4", 0, 90_000)]  # a held-out stretch of the Chr4 slice (the model learns from Chr1-Chr3)


@pytest.fixture(scope="module")
def gene_model(athaliana):
    genome, annotation = athaliana
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ~210 genes: just above the few-genes warning, depending on slices
        return GeneModel.fit(genome, annotation, [Interval(name, 0, genome.lengths[name])
                                                  for name in ("Chr1", "Chr2", "Chr3")])


def _labelled_probabilities(annotation, iv: Interval, confidence: float) -> np.ndarray:
    """(2, classes, n) probabilities that put ``confidence`` on the reference's class of each base: an
    oracle network (the rest spread evenly over the other classes)."""
    labels = LabelIndex(annotation, SCHEME).track(iv.name, iv.start, iv.end)  # (2, n)
    n_classes = len(SCHEME.classes)
    probs = np.full((2, n_classes, len(iv)), (1 - confidence) / (n_classes - 1), dtype=np.float32)
    np.put_along_axis(probs, labels[:, None, :].astype(np.int64), confidence, axis=1)
    return probs


def _genes(table):
    return sorted(map(tuple, table.loc[table["type"] == "CDS", ["start", "end", "strand"]].to_numpy().tolist()))


def test_with_weights_zero_the_combination_calls_exactly_the_gene_model_alone(athaliana, gene_model):
    genome, annotation = athaliana
    iv = CHR4[0]
    sequence = genome.fetch(iv.name, iv.start, iv.end)
    rng = np.random.default_rng(0)
    noise = rng.dirichlet(np.ones(len(SCHEME.classes)), size=(2, len(iv))).transpose(0, 2, 1)  # (2, classes, n)
    alone = gene_model_transcripts(sequence, gene_model)
    zero = EvidenceWeights(cds=0.0, intron=0.0)
    assert gene_model_transcripts(sequence, gene_model, evidence=zero.strand_evidence(noise, SCHEME.classes)) == alone
    # The same noise at full weight changes the calls: the evidence does reach the decoder.
    loud = EvidenceWeights(cds=1.0, intron=1.0)
    assert gene_model_transcripts(sequence, gene_model, evidence=loud.strand_evidence(noise, SCHEME.classes)) != alone


def test_an_oracle_network_weighed_in_beats_the_gene_model_alone_and_the_fit_finds_its_weights(athaliana, gene_model):
    genome, annotation = athaliana

    def f1s(prediction):
        scores = evaluate(annotation, prediction, lengths=genome.lengths, regions=CHR4)
        return scores["exon"]["f1"], scores["gene"]["f1"]

    fit = fit_evidence_weights(genome, annotation, CHR4, gene_model,
                               lambda iv: _labelled_probabilities(annotation, iv, 0.7), SCHEME.classes,
                               grid={"cds": (0.0, 0.2, 1.0), "intron": (0.0, 0.2, 1.0), "cap": (1.0, 4.0)})
    assert fit.weights.cds > 0 and fit.weights.intron > 0
    alone = fit.trials[0]  # the search starts from weights 0: the gene model alone
    assert alone["weights"] == {"cds": 0.0, "intron": 0.0, "cap": 4.0, "sites": 0.0, "site_offset": 0.0}
    # Measured: exon F1 0.62 -> 0.97, gene F1 0.43 -> 0.93 (the fit's objective: the mean of three F1s).
    assert fit.scores["exon_f1"] > alone["exon_f1"] + 0.2 and fit.scores["gene_f1"] > alone["gene_f1"] + 0.3
    # decode_with_gene_model with the fitted weights calls what the fit scored.
    evidence = combined_evidence(fit.weights, SCHEME.classes)
    prediction = decode_with_gene_model(genome, gene_model, CHR4, evidence=lambda iv: evidence(
        _labelled_probabilities(annotation, iv, 0.7)))
    assert f1s(prediction) == (fit.scores["exon_f1"], fit.scores["gene_f1"])


def test_a_gene_models_fingerprint_survives_its_files_and_tells_models_apart(tmp_path, athaliana, gene_model):
    gene_model.save(tmp_path)
    assert GeneModel.load(tmp_path).fingerprint() == gene_model.fingerprint()
    genome, annotation = athaliana
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = GeneModel.fit(genome, annotation, [Interval("Chr1", 0, genome.lengths["Chr1"])])
    assert other.fingerprint() != gene_model.fingerprint()


def test_weights_written_to_a_file_load_back_equal(tmp_path):
    weights = EvidenceWeights(cds=0.35, intron=0.1, cap=2.0)
    path = weights.save(tmp_path / WEIGHTS_FILE, {"regions": ["Chr4:0-90000"]})
    assert EvidenceWeights.load(path) == weights == EvidenceWeights.load(tmp_path)  # a folder: its weights file
    assert json.loads(path.read_text())["fit"] == {"regions": ["Chr4:0-90000"]}


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable JSON"),
    ('{"format": "something else", "format_version": 1}', "not an evidence weights file"),
    ('{"format": "genoformer evidence weights", "format_version": 7, "weights": {}}', "reads versions 1 and 2, the file has 7"),
    ('{"format": "genoformer evidence weights", "format_version": 2, "weights": {"cds": 1, "intron": 1, "cap": 4}}',
     "missing ['sites', 'site_offset']"),
    ('{"format": "genoformer evidence weights", "format_version": 2, "weights": {"cds": 1, "intron": 1, "cap": 4, '
     '"sites": -0.5, "site_offset": 0}}', "must be >= 0"),
    ('{"format": "genoformer evidence weights", "format_version": 1}', "'weights': missing"),
    ('{"format": "genoformer evidence weights", "format_version": 1, "weights": {"cds": 1, "cap": 4}}',
     "missing ['intron']"),
    ('{"format": "genoformer evidence weights", "format_version": 1, "weights": {"cds": 1, "intron": 1, "cap": 4, '
     '"splice": 2}}', "unknown ['splice']"),
    ('{"format": "genoformer evidence weights", "format_version": 1, "weights": {"cds": -1, "intron": 1, "cap": 4}}',
     "must be >= 0"),
    ('{"format": "genoformer evidence weights", "format_version": 1, "weights": {"cds": "a", "intron": 1, "cap": 4}}',
     "must be a finite number"),
])
def test_a_bad_weights_file_is_refused_naming_the_file_and_what_is_wrong(tmp_path, content, message):
    path = tmp_path / WEIGHTS_FILE
    path.write_text(content)
    with pytest.raises(ModelFileError, match=re.escape(message)) as error:
        EvidenceWeights.load(path)
    assert str(path) in str(error.value)


def test_a_version_1_weights_file_reads_with_the_site_weights_0(tmp_path):
    path = tmp_path / WEIGHTS_FILE
    path.write_text('{"format": "genoformer evidence weights", "format_version": 1, '
                    '"weights": {"cds": 0.1, "intron": 0.2, "cap": 2}}')
    assert EvidenceWeights.load(path) == EvidenceWeights(cds=0.1, intron=0.2, cap=2.0)  # every site weight 0


def test_a_missing_weights_file_names_the_command_that_fits_one(tmp_path):
    with pytest.raises(ModelFileError, match="genoformer combine"):
        EvidenceWeights.load(tmp_path)
    with pytest.raises(ConfigError, match="must be > 0"):
        EvidenceWeights(cap=0.0)


def test_combine_then_annotate_through_the_cli_with_a_tiny_network(tmp_path, capsys, athaliana):
    """`genoformer combine` fits the weights of an (untrained) tiny tagger and of the gene model's (barely
    trained) site network on a Chr4 stretch and writes them beside the gene model; `annotate --model
    --gene-model` decodes with them; weights 0 give the gene model alone's genes."""
    from genoformer.tasks import TaggingTask

    genome, _ = athaliana
    tagger = TaggingTask(encoder=TINY, organism="eukaryote").export(tmp_path / "tagger")
    (tmp_path / "train.bed").write_text("Chr1\t0\t304276\nChr2\t0\t196982\nChr3\t0\t234598\n")
    (tmp_path / "val.bed").write_text("Chr4\t0\t30000\n")
    assert main(["gene-model", "--fasta", str(ATHALIANA_FASTA), "--annotation", str(ATHALIANA_GFF),
                 "--regions", str(tmp_path / "train.bed"), "--out", str(tmp_path / "genes"), "--site-network-steps", "5"]) == 0
    assert (tmp_path / "genes" / "site_network.safetensors").is_file()
    capsys.readouterr()
    assert main(["combine", "--model", str(tagger), "--gene-model", str(tmp_path / "genes"), "--fasta",
                 str(ATHALIANA_FASTA), "--annotation", str(ATHALIANA_GFF), "--regions", str(tmp_path / "val.bed"),
                 "--window-length", "3000"]) == 0
    written = capsys.readouterr()
    assert written.out.strip() == str(tmp_path / "genes" / WEIGHTS_FILE)
    assert "weights cds" in written.err and "objective" in written.err
    fitted = json.loads((tmp_path / "genes" / WEIGHTS_FILE).read_text())
    assert fitted["fit"]["regions"] == ["Chr4:0-30000"] and fitted["fit"]["trials"]
    assert any(trial["weights"]["sites"] > 0 for trial in fitted["fit"]["trials"])  # the site network was tried

    def annotate(out, *extra):
        assert main(["annotate", "--model", str(tagger), "--gene-model", str(tmp_path / "genes"), "--fasta",
                     str(ATHALIANA_FASTA), "--regions", str(tmp_path / "val.bed"), "--window-length", "3000",
                     "--out", str(tmp_path / out), *extra]) == 0
        return read_annotation(tmp_path / f"{out}.gff3")

    both = annotate("both")
    EvidenceWeights(cds=0.05).save(tmp_path / "some.json")
    annotate("some", "--evidence-weights", str(tmp_path / "some.json"))
    assert (tmp_path / "some.CDS.plus.bedgraph").is_file()  # the network's tracks are written too
    EvidenceWeights(cds=0.0, intron=0.0).save(tmp_path / "zero.json")
    capsys.readouterr()
    zero = annotate("zero", "--evidence-weights", str(tmp_path / "zero.json"))
    assert "weight 0: it is not run" in capsys.readouterr().err  # a tagger given no weight costs no time
    assert not (tmp_path / "zero.CDS.plus.bedgraph").exists()
    assert main(["annotate", "--gene-model", str(tmp_path / "genes"), "--evidence", "none", "--fasta",
                 str(ATHALIANA_FASTA), "--regions", str(tmp_path / "val.bed"), "--out", str(tmp_path / "alone")]) == 0
    alone = read_annotation(tmp_path / "alone.gff3")
    assert _genes(zero) == _genes(alone) and len(_genes(alone)) > 5
    assert len(_genes(both)) > 0
    # The weights name the gene model they were fitted for: one learned again into the folder refuses them.
    assert fitted["fit"]["gene_model"] == GeneModel.load(tmp_path / "genes").fingerprint()
    (tmp_path / "train.bed").write_text("Chr1\t0\t304276\nChr2\t0\t196982\n")
    assert main(["gene-model", "--fasta", str(ATHALIANA_FASTA), "--annotation", str(ATHALIANA_GFF),
                 "--regions", str(tmp_path / "train.bed"), "--out", str(tmp_path / "genes"), "--site-network-steps", "5"]) == 0
    capsys.readouterr()
    assert main(["annotate", "--model", str(tagger), "--gene-model", str(tmp_path / "genes"), "--fasta",
                 str(ATHALIANA_FASTA), "--regions", str(tmp_path / "val.bed"), "--out", str(tmp_path / "stale")]) == 2
    error = capsys.readouterr().err
    assert "fitted for another gene model" in error and WEIGHTS_FILE in error and "genoformer combine" in error


def test_evidence_weights_without_a_network_or_a_gene_model_are_refused(tmp_path, capsys):
    EvidenceWeights().save(tmp_path / "w.json")
    (tmp_path / "genes").mkdir()
    for args, message in ((["--gene-model", str(tmp_path / "genes"), "--evidence", "none"], "need --evidence network"),
                          (["--evidence", "none", "--organism", "eukaryote"], "give the gene model too")):
        capsys.readouterr()
        assert main(["annotate", *args, "--evidence-weights", str(tmp_path / "w.json"), "--fasta",
                     str(ATHALIANA_FASTA), "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
