"""The gene model's splice-site network: its labels against hand-read GFF lines, what it learns on real
slices, its files, prediction in chunks, and its evidence in the gene model's scores."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch

from genoformer.decode.segments import encode_bases, reverse_complement_codes
from genoformer.errors import ConfigError, ModelFileError
from genoformer.genemodel import EvidenceWeights, GeneModel, combined_evidence, gene_model_transcripts
from genoformer.genemodel import site_network as sn
from genoformer.genemodel.site_network import SITE_KINDS, fit_site_network, load_site_model, region_sites, site_labels
from genoformer.genome import Interval, read_annotation
from genoformer.model import site_model
from genoformer.model.site_model import SiteModel, SiteTraining
from genoformer.model.sites import SiteNetwork, SiteNetworkConfig

from .conftest import ATHALIANA_FASTA, ATHALIANA_GFF, average_precision

SMALL = SiteNetworkConfig(channels=24, kernel_size=7, dilations=(1, 2, 4, 8))  # reach 45 bases
QUICK = SiteTraining(steps=300, batch_size=8, crop=2000, lr=4e-3)  # ~10 s on one core
TRAIN = [Interval(name, 0, length) for name, length in (("Chr1", 304276), ("Chr2", 196982), ("Chr3", 234598))]
HELD_OUT = Interval("Chr4", 0, 185850)
WORDS = {"donor": ("GC", "GT"), "acceptor": ("AG",)}


@pytest.fixture(scope="module")
def trained(athaliana):
    genome, annotation = athaliana
    return fit_site_network(genome, annotation, TRAIN, words=WORDS, config=SMALL, training=QUICK)


def test_labels_mark_candidates_and_the_listed_sites_and_nothing_else():
    codes = encode_bases("AAGTAAGCAGTTAGAA")  # GT at 2 and 9, GC at 6; AG at 1, 5, 8, 12 (boundaries after
    labels = site_labels(codes, {"donor": [9, 4], "acceptor": [14]}, WORDS)  # them: 3, 7, 10, 14)
    assert labels.shape == (2, 16)
    assert np.flatnonzero(labels[0] >= 0).tolist() == [2, 6, 9]
    assert np.flatnonzero(labels[0] == 1).tolist() == [9]  # 4 is listed but no candidate: left unlabelled
    assert np.flatnonzero(labels[1] >= 0).tolist() == [3, 7, 10, 14]
    assert np.flatnonzero(labels[1] == 1).tolist() == [14]


def test_sites_of_a_minus_strand_gene_match_its_hand_read_gff_lines(athaliana):
    # Chr4 CDS 10211-10364 (-) then 9982-10125 (-), AT4G00020.1: the first intron (on the - strand) runs
    # from forward base 10210 down to 10126 (1-based). In the - strand's coordinates of Chr4:0-20000
    # (n = 20000), its donor boundary is n - 10210 = 9790 and its acceptor n - 10125 = 9875.
    genome, annotation = athaliana
    region = Interval("Chr4", 0, 20000)
    sites = region_sites(annotation, region)
    assert 9790 in sites["-"]["donor"] and 9875 in sites["-"]["acceptor"]
    minus = reverse_complement_codes(encode_bases(genome.fetch("Chr4", 0, 20000)))
    assert "".join("ACGTN"[c] for c in minus[9790:9792]) == "GT"
    assert "".join("ACGTN"[c] for c in minus[9873:9875]) == "AG"
    assert len(sites["-"]["donor"]) == len(sites["-"]["acceptor"]) > 5


def test_introns_outside_the_cds_are_left_unlabelled_not_taught_as_decoys(athaliana):
    # Chr4 AT4G00060.1 (+) ends in a spliced 3' UTR: exon 28156-28281, then exon 28373-28574 (1-based), so
    # an intron 28282-28372 whose donor boundary is 28281 and acceptor 28372 (0-based) lies after the stop.
    genome, annotation = athaliana
    region = Interval("Chr4", 0, 185850)
    coding, spliced = region_sites(annotation, region), region_sites(annotation, region, introns="any")
    assert 28281 not in coding["+"]["donor"] and 28372 not in coding["+"]["acceptor"]
    assert 28281 in spliced["+"]["donor"] and 28372 in spliced["+"]["acceptor"]
    assert set(coding["+"]["donor"]) <= set(spliced["+"]["donor"])
    codes = encode_bases(genome.fetch("Chr4", 0, 185850))
    assert "".join("ACGTN"[c] for c in codes[28281:28283]) == "GT"
    plain = site_labels(codes, coding["+"], WORDS)
    labels = site_labels(codes, coding["+"], WORDS, unlabelled=spliced["+"])
    assert plain[0, 28281] == 0 and plain[1, 28372] == 0  # before: a real site taught as a decoy
    assert labels[0, 28281] == labels[1, 28372] == site_model.UNLABELLED
    assert np.array_equal(labels == 1, plain == 1)  # the coding introns' sites stay positive
    changed = np.flatnonzero((labels != plain).any(axis=0))
    assert len(changed) == len(set(spliced["+"]["donor"]) - set(coding["+"]["donor"])) + len(
        set(spliced["+"]["acceptor"]) - set(coding["+"]["acceptor"])), changed


def test_trained_on_three_slices_it_finds_the_sites_of_a_fourth_far_above_chance(athaliana, trained):
    genome, annotation = athaliana
    sites = region_sites(annotation, HELD_OUT)
    codes = encode_bases(genome.fetch(HELD_OUT.name, HELD_OUT.start, HELD_OUT.end))
    found = {}
    for row, kind in enumerate(SITE_KINDS):
        labels, scores = [], []
        for strand, view in (("+", codes), ("-", reverse_complement_codes(codes))):
            truth = site_labels(view, sites[strand], WORDS)[row]
            at = np.flatnonzero(truth >= 0)
            labels.append(truth[at])
            scores.append(trained.logits(view)[row, at])
        labels, scores = np.concatenate(labels), np.concatenate(scores)
        found[kind] = (average_precision(labels, scores), labels.mean())  # chance: the share of real sites
    # Measured with these settings (300 steps of 8 x 2,000 bases), average precision against chance: donors
    # 0.36 / 0.006, acceptors 0.31 / 0.008; the default network, 1,500 steps of 16 x 4,000 bases on
    # chromosome 1's training stretch, reaches 0.82 / 0.78 on its validation stretch.
    assert all(precision > 20 * chance for precision, chance in found.values()), found


def test_prediction_in_chunks_equals_one_pass(monkeypatch):
    torch.manual_seed(0)
    network = SiteModel(SiteNetwork(SMALL, SITE_KINDS).eval(), WORDS)
    codes = np.random.default_rng(0).integers(0, 5, 1000).astype(np.uint8)
    whole = network.logits(codes)
    monkeypatch.setattr(site_model, "PREDICT_CHUNK", 97)  # chunks meet at 97, 194, ...: each reads its reach beyond
    assert np.allclose(network.logits(codes), whole, atol=1e-5) and whole.shape == (2, 1001)
    assert (whole[:, -1] == 0).all()


def test_a_gene_model_folder_keeps_its_site_network_and_drops_a_stale_one(tmp_path, athaliana, trained):
    genome, annotation = athaliana
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GeneModel.fit(genome, annotation, TRAIN)
    model.site_model = trained
    model.save(tmp_path)
    loaded = GeneModel.load(tmp_path)
    codes = encode_bases(genome.fetch("Chr4", 0, 5000))
    assert np.array_equal(loaded.site_model.logits(codes), trained.logits(codes))
    assert loaded.site_model.words == WORDS and loaded.site_model.report == trained.report
    model.site_model = None
    model.save(tmp_path)
    assert GeneModel.load(tmp_path).site_model is None
    assert not (tmp_path / sn.WEIGHTS_FILE).exists() and not (tmp_path / sn.CONFIG_FILE).exists()
    trained.save(tmp_path, sn.STEM)
    (tmp_path / sn.CONFIG_FILE).unlink()  # its weights alone beside the gene model: refused, not ignored
    with pytest.raises(ModelFileError, match="site network file not found") as error:
        GeneModel.load(tmp_path)
    assert sn.CONFIG_FILE in str(error.value)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format_version=9), "reads version 1, the file has 9"),
    (lambda d: d.pop("words"), "'words': missing"),
    (lambda d: d["words"].update(acceptor=["AGX"]), "'words': acceptor needs a list of 2-letter words"),
    (lambda d: d.update(kinds=["donor", "acceptor", "start"]), "'kinds': this genoformer scores"),
    (lambda d: d["config"].update(kernel_size=4), "'config': site network needs"),
    (lambda d: d["config"].update(channels=8), "weights do not fit the configuration"),
    (lambda d: d["config"].update(channels=48.0), "'config': site network needs whole numbers"),
    (lambda d: d["config"].update(channels=10 ** 6), "'config': site network needs whole numbers"),
])
def test_a_bad_site_network_file_is_refused_naming_the_file(tmp_path, trained, change, message):
    trained.save(tmp_path, sn.STEM)
    data = json.loads((tmp_path / sn.CONFIG_FILE).read_text())
    change(data)
    (tmp_path / sn.CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=re.escape(message)) as error:
        load_site_model(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_missing_weights_and_training_without_introns_are_refused(tmp_path, athaliana, trained):
    trained.save(tmp_path, sn.STEM)
    (tmp_path / sn.WEIGHTS_FILE).unlink()
    with pytest.raises(ModelFileError, match="site network weights not found"):
        load_site_model(tmp_path)

    genome, annotation = athaliana
    with pytest.raises(ConfigError, match="learns from annotated introns.*ChrM.*0 donors"):
        fit_site_network(genome, annotation, [Interval("ChrM", 0, 3669)], words=WORDS, config=SMALL, training=QUICK)
    with pytest.raises(ConfigError, match="site network steps must be an integer >= 0"):
        GeneModel.fit(genome, annotation, TRAIN, site_network_steps=-1)


def test_site_evidence_adds_its_weighted_shifted_logits_to_each_donor_and_acceptor(athaliana, trained):
    genome, annotation = athaliana
    sequence = genome.fetch("Chr4", 0, 30000)
    probs = np.full((2, 6, len(sequence)), 1 / 6, np.float32)
    classes = ("intergenic", "five_prime_UTR", "CDS", "intron", "three_prime_UTR", "ncRNA")
    evidence, _ = combined_evidence(EvidenceWeights(sites=0.5, site_offset=2.0), classes, trained)(probs, sequence)
    codes = encode_bases(sequence)
    for strand, view in zip(evidence, (codes, reverse_complement_codes(codes))):
        logits = trained.logits(view)
        assert np.array_equal(strand.signals["donor"], 0.5 * (logits[0] + 2.0))
        assert np.array_equal(strand.signals["acceptor"], 0.5 * (logits[1] + 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GeneModel.fit(genome, annotation, TRAIN)
    alone = gene_model_transcripts(sequence, model)
    generous, _ = combined_evidence(EvidenceWeights(sites=1.0, site_offset=4.0), ("CDS", "intron"), trained)(
        probs[:, :2], sequence)  # every candidate site made 4 nats likelier: more introns are called
    called = gene_model_transcripts(sequence, model, evidence=generous)
    assert sum(len(t.cds) for t in called) > sum(len(t.cds) for t in alone)
    with pytest.raises(ConfigError, match="the gene model has none"):
        combined_evidence(EvidenceWeights(sites=0.5), ("CDS",), None)


def test_without_a_tagger_combine_fits_the_site_weights_and_annotate_uses_them(tmp_path, capsys, athaliana, trained):
    """The site network alone as evidence: `genoformer combine` without --model searches only its weights, and
    `annotate --gene-model` without --model calls genes with them (weights 0: the gene model alone's genes)."""
    from genoformer.cli import main

    genome, annotation = athaliana
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GeneModel.fit(genome, annotation, TRAIN)
    model.site_model = trained
    model.save(tmp_path / "genes")
    (tmp_path / "val.bed").write_text("Chr4\t0\t60000\n")
    common = ["--fasta", str(ATHALIANA_FASTA), "--regions", str(tmp_path / "val.bed")]
    assert main(["combine", "--gene-model", str(tmp_path / "genes"), "--annotation", str(ATHALIANA_GFF), *common]) == 0
    fitted = json.loads((tmp_path / "genes" / "evidence_weights.json").read_text())
    tried = {name for trial in fitted["fit"]["trials"] for name, value in trial["weights"].items() if value}
    assert tried <= {"sites", "site_offset", "cap"} and "sites" in tried  # the tagger's weights stay 0
    capsys.readouterr()

    def annotate(out, *extra):
        assert main(["annotate", "--gene-model", str(tmp_path / "genes"), *common, "--out", str(tmp_path / out),
                     *extra]) == 0
        return read_annotation(tmp_path / f"{out}.gff3")

    with_sites = annotate("sites")
    assert not (tmp_path / "sites.CDS.plus.bedgraph").exists()  # no tagger: no probability tracks
    EvidenceWeights().save(tmp_path / "zero.json")
    zero, alone = annotate("zero", "--evidence-weights", str(tmp_path / "zero.json")), annotate("alone", "--evidence", "none")
    cds = [sorted(map(tuple, t.loc[t["type"] == "CDS", ["start", "end"]].to_numpy().tolist())) for t in (with_sites, zero, alone)]
    assert cds[1] == cds[2] and len(cds[2]) > 20
    if fitted["weights"]["sites"]:
        assert cds[0] != cds[2]
    model.site_model = None
    model.save(tmp_path / "bare")
    assert main(["combine", "--gene-model", str(tmp_path / "bare"), "--annotation", str(ATHALIANA_GFF), *common]) == 2
    assert "give a tagging model (--model), or a gene model with a site network" in capsys.readouterr().err


def test_training_skips_batches_without_a_label_and_keeps_the_callers_random_state(athaliana):
    """A reach wider than the training view leaves no labelled position inside any crop: the network stays
    finite (a loss over no labels is NaN, which would spread into every weight), and the caller's global
    torch random state is the same after training as before."""
    genome, annotation = athaliana
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model = fit_site_network(genome, annotation, [Interval("Chr4", 0, 20000)], words=WORDS,
                             config=SiteNetworkConfig(channels=4, kernel_size=21, dilations=(1000, 1000)),
                             training=SiteTraining(steps=3, batch_size=2))
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.isfinite(p).all() for p in model.network.parameters())
