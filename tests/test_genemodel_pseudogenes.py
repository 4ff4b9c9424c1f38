"""The pseudogene filter: which annotation rows teach it, its features and regression by hand, fitting it on
a real slice of A. thaliana chromosome 1's pericentromere, decoding with it, its file and its bad inputs."""
from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from genoformer.cli import main
from genoformer.errors import ConfigError, ModelFileError
from genoformer.decode.segments import encode_bases, reverse_complement_codes
from genoformer.genemodel import DecodeSettings, GeneModel
from genoformer.genemodel.decode import gene_model_transcripts
from genoformer.genemodel.fitting import fit_pseudogene_filter
from genoformer.genemodel.markov import ending_words, log_probabilities
from genoformer.genemodel.pseudogenes import (
    PROTEIN_WORD, call_features, cds_positions, family_share, fit_logistic, lookalike_spans, protein_words,
)
from genoformer.genome import Genome, Interval, read_annotation
from genoformer.genome.annotation_table import make_annotation

from .conftest import ATHALIANA_FASTA, ATHALIANA_GFF

# NCBI's chromosome 1 from 12.5 to 13.5 Mb: 143 protein-coding genes and 87 pseudogenes, most of them
# transposable-element genes (tests/data/README.md).
DATA = Path(__file__).parent / "data"
SLICE_FASTA, SLICE_GFF = DATA / "athaliana_chr1_12.5-13.5Mb.fa.gz", DATA / "athaliana_chr1_12.5-13.5Mb.gff3.gz"
RECORD = "NC_003070.9_12.5-13.5Mb"
TRAINING = [Interval(RECORD, 0, 600_000)]


@pytest.fixture(scope="module")
def pericentromere():
    return Genome(SLICE_FASTA), read_annotation(SLICE_GFF)


@pytest.fixture(scope="module")
def gene_model(athaliana):
    genome, annotation = athaliana
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GeneModel.fit(genome, annotation, [Interval(name, 0, genome.lengths[name])
                                                  for name in ("Chr1", "Chr2", "Chr3", "Chr4")])


@pytest.fixture(scope="module")
def filtered(gene_model, pericentromere):
    genome, annotation = pericentromere
    return fit_pseudogene_filter(gene_model, genome, annotation, TRAINING)


def test_the_lookalike_rows_are_pseudogenes_transposable_elements_and_genes_marked_or_typed_so():
    rows = [("pseudogene", "+", 0, 100, {}), ("transposable_element_gene", "-", 200, 300, {}),
            ("gene", "+", 400, 500, {"pseudo": "true"}), ("gene", "+", 600, 700, {}),
            ("pseudogenic_transcript", "+", 0, 100, {}), ("CDS", "+", 620, 680, {"pseudo": "true"}),
            ("transposable_element", "+", 800, 900, {}), ("gene", "-", 1000, 1100, {"gene_biotype": "transcribed_pseudogene"}),
            ("gene", "+", 1200, 1300, {"gene_biotype": "protein_coding"}), ("gene", "+", 1400, 1500, {"gene_type": "TEC"})]
    table = make_annotation({"seqid": ["c"] * len(rows), "source": ["x"] * len(rows), "type": [r[0] for r in rows],
                             "start": [r[2] for r in rows], "end": [r[3] for r in rows], "score": [np.nan] * len(rows),
                             "strand": [r[1] for r in rows], "phase": [None] * len(rows),
                             "id": [f"r{k}" for k in range(len(rows))], "parent": [None] * len(rows),
                             "gene_id": [None] * len(rows), "transcript_id": [None] * len(rows),
                             "name": [None] * len(rows), "attributes": [r[4] for r in rows]})
    spans = lookalike_spans(table, "c")
    assert list(zip(spans["strand"], spans["start"], spans["end"])) == [
        ("+", 0, 100), ("-", 200, 300), ("+", 400, 500), ("+", 0, 100), ("+", 800, 900), ("-", 1000, 1100)]
    assert lookalike_spans(table, "other").empty


def test_a_calls_features_are_its_mean_log_odds_per_coding_base_its_length_exons_and_family_share():
    codes = np.array([0, 1, 2, 3, 0, 1, 2, 3, 3, 2], dtype=np.uint8)  # order 1: words of two bases
    words = ending_words(codes, 1)
    rng = np.random.default_rng(0)
    coding, intergenic, lookalike = (np.log(rng.uniform(0.1, 1, size=shape)) for shape in ((3, 17), (17,), (17,)))
    pieces = [(1, 4), (6, 9)]  # six coding bases: 1 2 3 | 6 7 8, codon positions 0 1 2 0 1 2
    at, position = [1, 2, 3, 6, 7, 8], [0, 1, 2, 0, 1, 2]
    assert cds_positions(pieces).tolist() == at
    assert codes[cds_positions(pieces)].tolist() == [1, 2, 3, 2, 3, 3]
    protein = encode_bases("ATGGCT" * 4)  # MAMAMAMA: words MAMAMA, AMAMAM, MAMAMA
    families = np.sort(protein_words(encode_bases("GCTATGGCTATGGCTATG")))  # AMAMAM only
    features = call_features(protein, words[cds_positions(pieces)], len(pieces), coding, intergenic, lookalike, families)
    by_hand_coding = [coding[p, words[x]] for x, p in zip(at, position)]
    assert features[0] == pytest.approx(np.mean([c - lookalike[words[x]] for c, x in zip(by_hand_coding, at)]))
    assert features[1] == pytest.approx(np.mean([c - intergenic[words[x]] for c, x in zip(by_hand_coding, at)]))
    assert features[2] == pytest.approx(np.log(6)) and features[3] == 2 and features[4] == pytest.approx(1 / 3)


def test_protein_words_translate_the_cds_in_frame_and_skip_stops_and_ns():
    assert PROTEIN_WORD == 6
    m, a, k = (("ACDEFGHIKLMNPQRSTVWY".index(x)) for x in "MAK")
    # ATG GCT AAA ATG GCT AAA ATG: M A K M A K M, two words
    words = protein_words(encode_bases("ATGGCTAAAATGGCTAAAATGGC"))  # a trailing partial codon is ignored
    by_hand = [sum(x * 20 ** (5 - i) for i, x in enumerate(w)) for w in ((m, a, k, m, a, k), (a, k, m, a, k, m))]
    assert words.tolist() == by_hand
    assert protein_words(encode_bases("ATGGCTAAATAAATGGCTAAAATG")).size == 0  # a stop inside every word
    assert protein_words(encode_bases("ATGGCTAAANTGGCTAAAATGGCT")).size == 0  # an N in every word's codons
    assert protein_words(encode_bases("ATGGCTAAAATG")).size == 0  # shorter than a word
    assert family_share(words, np.array([], np.int64)) == 0 and family_share(np.array([], np.int64), words) == 0
    assert family_share(words, np.sort(words[:1])) == 0.5


def test_the_logistic_regression_stops_where_its_penalised_gradient_vanishes_and_separates_the_classes():
    rng = np.random.default_rng(1)
    features = np.vstack([rng.normal(0, 1, size=(200, 4)), rng.normal(1.5, 1, size=(100, 4))])
    labels = np.r_[np.zeros(200), np.ones(100)]
    center, scale, weights = fit_logistic(features, labels)
    design = np.column_stack([np.ones(len(features)), (features - center) / scale])
    p = 1 / (1 + np.exp(-design @ weights))
    assert np.abs(design.T @ (labels - p) - 1e-3 * weights).max() < 1e-8
    assert (weights[1:] > 0).all() and ((p > 0.5) == labels).mean() > 0.85


def test_fitted_on_a_pericentromere_slice_the_filter_learns_from_both_kinds_of_call(filtered):
    assert filtered.report["pseudogene filter training calls"] == "63 on genes, 42 look-alikes"
    fitted = filtered.pseudogene_filter
    assert fitted is not None and fitted.share == 0.005 and np.isfinite(fitted.threshold)
    # The look-alike chain counted every pseudogene and transposable-element base of the training stretch,
    # both strands as annotated, outside the coding transcripts.
    assert 100_000 < fitted.counts.sum() < 600_000
    # The look-alike families: the protein words of the 42 look-alike calls, at least a minimal CDS's worth each.
    assert len(fitted.families) > 42 * (60 // 3 - PROTEIN_WORD) and (np.diff(fitted.families) > 0).all()


def test_decoding_drops_exactly_the_complete_calls_the_filter_scores_above_its_threshold(filtered, pericentromere):
    genome, _ = pericentromere
    sequence = genome.fetch(RECORD, 600_000, 1_000_000)
    keep_both = DecodeSettings(strand_overlaps=True)  # so that a dropped call cannot let another one back in
    plain = gene_model_transcripts(sequence, replace(filtered, pseudogene_filter=None), keep_both)
    fitted = filtered.pseudogene_filter
    tables = (log_probabilities(filtered.coding, 1.0), log_probabilities(filtered.intergenic, 1.0),
              log_probabilities(fitted.counts, 1.0), fitted.families)
    views = {"+": encode_bases(sequence)}
    views["-"] = reverse_complement_codes(views["+"])
    n = len(sequence)

    def score(transcript):
        pieces = transcript.cds if transcript.strand == "+" else [(n - e, n - s) for s, e in transcript.cds[::-1]]
        words = ending_words(views[transcript.strand], filtered.order)
        at = cds_positions(pieces)
        features = call_features(views[transcript.strand][at], words[at], len(pieces), *tables)
        return float(fitted.scores(features[None])[0])

    complete = [t for t in plain if not t.partial]
    middle = float(np.median([score(t) for t in complete]))  # a threshold that drops half the complete calls
    halved = replace(filtered, pseudogene_filter=replace(fitted, threshold=middle))
    kept = gene_model_transcripts(sequence, halved, keep_both)
    expected = [t for t in plain if t.partial or score(t) <= middle]
    assert len(kept) < len(plain) and len(complete) > 20
    assert [(t.strand, t.cds) for t in kept] == [(t.strand, t.cds) for t in expected]


def test_without_enough_lookalike_calls_or_with_share_zero_there_is_no_filter_and_the_report_says_why(
        gene_model, pericentromere):
    genome, annotation = pericentromere
    few = fit_pseudogene_filter(gene_model, genome, annotation, [Interval(RECORD, 0, 300_000)])
    assert few.pseudogene_filter is None and few.report["pseudogene filter"].startswith("not fitted (fewer than 30")
    off = fit_pseudogene_filter(gene_model, genome, annotation, TRAINING, share=0)
    assert off.pseudogene_filter is None and off.report["pseudogene filter"] == "off"
    with pytest.raises(ConfigError, match=r"share .* must be in \[0, 1\), got 1.0"):
        fit_pseudogene_filter(gene_model, genome, annotation, TRAINING, share=1.0)


def test_a_saved_filter_loads_back_equal_and_changes_the_models_fingerprint(tmp_path, filtered, pericentromere):
    filtered.save(tmp_path)
    loaded = GeneModel.load(tmp_path)
    for name in ("counts", "families", "center", "scale", "weights"):
        assert np.array_equal(getattr(loaded.pseudogene_filter, name), getattr(filtered.pseudogene_filter, name))
    assert loaded.pseudogene_filter.threshold == filtered.pseudogene_filter.threshold
    off = fit_pseudogene_filter(filtered, *pericentromere, TRAINING, share=0)
    assert loaded.fingerprint() == filtered.fingerprint() != off.fingerprint()
    assert "pseudogene_filter" not in off.to_dict()  # no filter: no field, as in files from before it


@pytest.mark.parametrize("change, told", [
    (lambda f: f.update(counts=f["counts"][:-1]), "'pseudogene_filter.counts': must be a list of 4096 non-negative"),
    (lambda f: f["counts"].__setitem__(0, -1), "'pseudogene_filter.counts': must be a list of 4096 non-negative"),
    (lambda f: f["counts"].__setitem__(0, 1.5), "'pseudogene_filter.counts': must be a list of 4096 non-negative"),
    (lambda f: f.update(families=f["families"][::-1]), "'pseudogene_filter.families': must be sorted, without repeats"),
    (lambda f: f["families"].__setitem__(0, 20 ** 6), "'pseudogene_filter.families': must be a list of protein words"),
    (lambda f: f.update(families="MAK"), "'pseudogene_filter.families': must be a list of protein words"),
    (lambda f: f.update(scale=[1.0, 0.0, 1.0, 1.0, 1.0]), "'pseudogene_filter.scale': must be positive"),
    (lambda f: f.update(share=1.5), "'pseudogene_filter.share': 1.5 is not a valid value"),
    (lambda f: f.update(threshold="high"), "'pseudogene_filter.threshold': 'high' is not a valid value"),
    (lambda f: f.update(threshold=10 ** 400), "'pseudogene_filter.threshold': 1000"),
    (lambda f: f.update(weights=[1.0, "x", 0, 0, 0, 0]), "'pseudogene_filter.weights': must be a list of 6 finite numbers"),
    (lambda f: f.update(center=[True, 0.0, 0.0, 0.0, 0.0]), "'pseudogene_filter.center': must be a list of 5 finite numbers"),
    (lambda f: f.update(center=[0.0] * 4), "'pseudogene_filter.center': must be a list of 5 finite numbers"),
    (lambda f: f.pop("center"), "'pseudogene_filter': must map"),
])
def test_a_malformed_filter_is_refused_naming_the_file_and_the_field(tmp_path, filtered, change, told):
    data = filtered.to_dict()
    change(data["pseudogene_filter"])
    (tmp_path / "gene_model.json").write_text(json.dumps(data))
    with pytest.raises(ModelFileError) as error:
        GeneModel.load(tmp_path)
    assert str(tmp_path / "gene_model.json") in str(error.value) and told in str(error.value)


def test_the_cli_learns_the_filter_with_the_model_and_refuses_a_share_outside_zero_to_one(tmp_path, capsys):
    out = tmp_path / "model"
    bed = tmp_path / "train.bed"
    bed.write_text("\n".join(f"Chr{k}\t0\t100000" for k in (1, 2, 3, 4)) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small training set
        assert main(["gene-model", "--fasta", str(ATHALIANA_FASTA), "--annotation", str(ATHALIANA_GFF), "--regions",
                     str(bed), "--out", str(out), "--pseudogene-filter", "0"]) == 0
    assert GeneModel.load(out).report["pseudogene filter"] == "off"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_code:
        main(["gene-model", "--fasta", str(ATHALIANA_FASTA), "--annotation", str(ATHALIANA_GFF), "--out", str(out),
              "--pseudogene-filter", "1.5"])
    assert exit_code.value.code == 2 and "1.5 is not a share from 0 up to 1" in capsys.readouterr().err
