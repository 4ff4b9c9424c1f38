"""Where bacterial genes start: candidate starts by hand, the start model's scores, its file form, and on
real E. coli genes that it chooses starts better than the decoder's self-trained statistics."""
import json

import numpy as np
import pytest

from genoformer.annotate import load_model, uninformative_probabilities
from genoformer.decode import decode_record, gene_decoder_options, start_model_from_genes
from genoformer.decode.segments import encode_bases, word_codes
from genoformer.decode.start_sites import N_FEATURES, StartModel, candidate_starts, start_features
from genoformer.cli import main
from genoformer.errors import InputFileError
from genoformer.evaluate import evaluate
from genoformer.evaluate.features import is_pseudo
from genoformer.genome import Genome, Interval, LabelScheme, read_annotation
from genoformer.tasks import TaggingTask

from .conftest import ECOLI_FASTA, ECOLI_GFF, TINY

STARTS, STOPS = ["ATG", "GTG", "TTG"], ("TAA", "TAG", "TGA")


def test_candidate_starts_are_the_start_codons_of_each_orf_far_enough_from_its_stop():
    #          0     6     12    18    24    30
    seq = "CC" + "ATGAAAGTGAAATTGAAAAAAAAATAA" + "ATGCCCTAG"
    words = word_codes(encode_bases(seq), 3)
    start_at, orf_end, rank = candidate_starts(words, STARTS, STOPS, min_length=12)
    # frame 2: ATG at 2, GTG at 8, TTG at 14 share the stop TAA at 26-29; TTG is 15 bases from the
    # stop's end (>= 12); the ATG at 29 is 9 bases from its stop's end (< 12).
    assert start_at.tolist() == [2, 8, 14] and orf_end.tolist() == [29, 29, 29] and rank.tolist() == [0, 1, 2]
    start_at, _, _ = candidate_starts(words, STARTS, STOPS, min_length=16)
    assert start_at.tolist() == [2, 8]


def test_start_log_probabilities_are_a_softmax_of_the_features_times_the_weights_over_each_orf():
    seq = Genome(ECOLI_FASTA).fetch("NC_000913.3", 0, 20_000)
    codes = encode_bases(seq)
    frame_sums = np.cumsum(np.random.default_rng(0).normal(size=len(codes) + 3))
    model = StartModel(np.random.default_rng(1).normal(size=N_FEATURES))
    start_at, orf_end, rank = candidate_starts(word_codes(codes, 3), STARTS, STOPS, 90)
    assert len(start_at) > 400 and len(np.unique(orf_end)) > 80
    linear = start_features(codes, start_at, orf_end, rank, frame_sums) @ model.weights
    np.testing.assert_allclose(model.raw_scores(codes, start_at, orf_end, rank, frame_sums), linear, rtol=1e-10,
                               atol=1e-10)
    log_p = model.log_probabilities(codes, STARTS, STOPS, 90, frame_sums)
    for end in np.unique(orf_end)[:50]:
        mine = orf_end == end
        expected = linear[mine] - np.log(np.exp(linear[mine]).sum())
        np.testing.assert_allclose(log_p[start_at[mine]], expected, rtol=1e-9, atol=1e-9)
    assert (np.delete(log_p, start_at) == 0).all()


def test_start_model_round_trips_and_refuses_broken_fields():
    model = StartModel(np.linspace(-1, 1, N_FEATURES), ("chr", "plasmid"))
    again = StartModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert (again.weights == model.weights).all() and again.records == ("chr", "plasmid")
    for broken in ({"weights": [0.0] * (N_FEATURES - 1)}, {"weights": [float("nan")] * N_FEATURES},
                   {"weights": "x" * N_FEATURES}, {}, []):
        with pytest.raises(ValueError, match=f"{N_FEATURES} finite weights"):
            StartModel.from_dict(broken)
    with pytest.raises(ValueError, match="records must be a list of record names"):
        StartModel.from_dict({"weights": [0.0] * N_FEATURES, "records": "NC_000913.3"})
    assert StartModel.from_dict({"weights": [0.0] * N_FEATURES}).records == ()


def _ecoli_genes(lo: int, hi: int):
    table = read_annotation(ECOLI_GFF)
    cds = table[(table["type"] == "CDS") & ~is_pseudo(table) & (table["start"] >= lo) & (table["end"] <= hi)]
    return table, cds.assign(start=cds["start"] - lo, end=cds["end"] - lo)[["start", "end", "strand"]]


def test_a_start_model_learnt_from_annotated_genes_chooses_starts_better_than_self_training():
    genome = Genome(ECOLI_FASTA)
    table, train = _ecoli_genes(0, 1_500_000)
    model, n_genes = start_model_from_genes([(genome.fetch("NC_000913.3", 0, 1_500_000), train)])
    assert n_genes > 1300 and model is not None
    lo, hi = 2_300_000, 2_600_000
    sequence = genome.fetch("NC_000913.3", lo, hi)
    scheme = LabelScheme.gene_structure()
    probs = uninformative_probabilities(scheme, "prokaryote", len(sequence))

    def exact_genes(**options) -> tuple[int, int]:
        calls = decode_record(sequence, probs, "NC_000913.3", scheme, "prokaryote",
                              **gene_decoder_options("prokaryote", "ce"), **options)
        calls[["start", "end"]] += lo
        gene = evaluate(table, calls, lengths=genome.lengths, regions=[Interval("NC_000913.3", lo, hi)])["gene"]
        return gene["matched_reference"], gene["f1"]

    (alone, alone_f1), (learnt, learnt_f1) = exact_genes(), exact_genes(start_model=model)
    # Measured: 232 -> 246 genes exact (gene F1 0.861 -> 0.908).
    assert learnt >= alone + 10 and learnt_f1 >= alone_f1 + 0.04


def test_a_prokaryote_tagger_learns_its_start_model_at_fit_and_exports_it(tmp_path, ecoli_fasta, ecoli_gff, lambda_fasta,
                                                                         capsys):
    from genoformer.tasks import GenomeDataModule

    data = GenomeDataModule(fasta=str(ecoli_fasta), annotation=str(ecoli_gff), window_length=256,
                            regions=None, val_fraction=0.05, test_fraction=0.05)
    task = TaggingTask(encoder=TINY, loss="ce")
    task.learn_start_model(data)
    assert task.start_model is not None and task.decoder_options["start_model"] is task.start_model
    folder = task.export(tmp_path / "tagger")
    loaded = load_model(folder)
    assert (loaded.start_model.weights == task.start_model.weights).all()
    assert loaded.start_model.records == ("NC_000913.3",)
    # `genoformer annotate` decodes with it, unless told to learn starts from the genome's own calls.
    bed = tmp_path / "region.bed"
    bed.write_text("NC_000913.3\t2300000\t2600000\n")
    exact = {}
    for flags in ([], ["--self-trained-starts"]):
        out = tmp_path / ("own" if flags else "model") / "calls"
        assert main(["annotate", "--model", str(folder), "--evidence", "none", "--fasta", str(ecoli_fasta),
                     "--regions", str(bed), "--out", str(out), *flags]) == 0
        result = evaluate(read_annotation(ecoli_gff), read_annotation(out.with_suffix(".gff3")),
                          lengths=Genome(ecoli_fasta).lengths, regions=[Interval("NC_000913.3", 2_300_000, 2_600_000)])
        exact[bool(flags)] = result["gene"]["matched_reference"]
    assert exact[False] >= exact[True] + 10
    # Another genome (phage lambda's record): a warning that the start model was learnt elsewhere.
    capsys.readouterr()
    assert main(["annotate", "--model", str(folder), "--evidence", "none", "--fasta", str(lambda_fasta),
                 "--out", str(tmp_path / "lambda" / "calls")]) == 0
    assert "start model was learnt on other records (NC_000913.3); if this is another species" in capsys.readouterr().err
    assert main(["annotate", "--model", str(folder), "--evidence", "none", "--fasta", str(lambda_fasta),
                 "--out", str(tmp_path / "lambda2" / "calls"), "--self-trained-starts"]) == 0
    assert "start model" not in capsys.readouterr().err
    config = folder / "config.json"
    head = json.loads(config.read_text())
    head["head"]["start_model"]["weights"] = head["head"]["start_model"]["weights"][:-1]
    config.write_text(json.dumps(head))
    with pytest.raises(InputFileError, match="broken start model"):
        load_model(folder)


def test_too_few_training_genes_for_a_start_model_gets_a_warning_with_the_count(ecoli_slice):
    from genoformer.tasks import GenomeDataModule

    fasta, gff = ecoli_slice
    data = GenomeDataModule(fasta=str(fasta), annotation=str(gff), window_length=256, val_fraction=0.3, test_fraction=0.3)
    task = TaggingTask(encoder=TINY, loss="ce")
    with pytest.warns(UserWarning, match=r"the training regions hold \d+ genes .* too few to learn where genes start"):
        task.learn_start_model(data)
    assert task.start_model is None and "start_model" not in task.decoder_options


def test_the_start_model_leaves_genes_running_off_either_end_their_own_start_scores():
    from genoformer.decode.prokaryote import START_CODONS, _start_table, orf_candidates

    rng = np.random.default_rng(0)
    sense = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"
             if a + b + c not in ("TAA", "TAG", "TGA", "ATG", "GTG", "TTG")]
    starts = _start_table(START_CODONS)
    model = StartModel(np.zeros(N_FEATURES))  # every candidate equally likely

    def candidates(seq, scores, log_odds):
        codes = encode_bases(seq)
        choice = 60 * model.log_probabilities(codes, list(starts), STOPS, 90)
        with_model = orf_candidates(codes, log_odds, starts, STOPS, 90, -1e9, 100.0, None, scores, False, choice)
        without = orf_candidates(codes, log_odds, starts, STOPS, 90, -1e9, 100.0, None, scores, False)
        return with_model, without

    # Off the 3' end (no stop in frame): starts at 0, 60 and 120, the one at 60 the self-trained favourite.
    seq = "ATG" + "".join(rng.choice(sense, 19)) + "ATG" + "".join(rng.choice(sense, 19)) + "ATG" + "".join(
        rng.choice(sense, 100))
    scores = np.zeros(len(seq))
    scores[[0, 60, 120]] = -40.0, 50.0, -40.0
    for begin, _, score in candidates(seq, scores, np.zeros(len(seq) + 1)):
        best = {int(b): float(s) for b, s in zip(begin, score) if b % 3 == 0}
        assert max(best, key=best.get) == 60 and best[60] == 50.0
    # In from the 5' end: the frame's first codon (no start codon) must not outscore the ATG at 30.
    seq = "CCC" * 10 + "ATG" + "".join(rng.choice(sense, 100)) + "TAA" + "CCCCCC"
    scores = np.zeros(len(seq))
    scores[30] = 50.0
    log_odds = np.concatenate([[0], np.cumsum(np.full(len(seq), 0.1))])
    for begin, end, score in candidates(seq, scores, log_odds):
        ours = end == 336
        assert begin[ours].tolist() == [30]


def test_start_examples_number_orfs_with_one_start_each_and_skip_a_stop_with_two():
    genome = Genome(ECOLI_FASTA)
    _, genes = _ecoli_genes(0, 300_000)
    sequence = genome.fetch("NC_000913.3", 0, 300_000)
    plus = genes[genes["strand"] == "+"]
    begin, end = plus["start"].to_numpy(), plus["end"].to_numpy()
    # A second start for a gene's stop: an isoform, which says nothing about which start is right.
    codes = encode_bases(sequence)
    start_at, orf_end, _ = candidate_starts(word_codes(codes, 3), STARTS, STOPS, 90)
    g = next(i for i in range(len(end)) if ((orf_end == end[i]) & (start_at != begin[i])).any()
             and begin[i] in start_at[orf_end == end[i]])
    other = start_at[(orf_end == end[g]) & (start_at != begin[g])][0]
    from genoformer.decode.start_sites import start_examples
    x, orf, chosen = start_examples(codes, np.append(begin, other), np.append(end, end[g]), STARTS, STOPS, 90)
    n_orfs = orf.max() + 1
    assert np.array_equal(np.unique(orf), np.arange(n_orfs))
    assert np.array_equal(np.bincount(orf, weights=chosen), np.ones(n_orfs))
    alone = start_examples(codes, begin, end, STARTS, STOPS, 90)[1].max() + 1
    assert n_orfs == alone - 1 and len(x) == len(orf)  # the isoform's ORF is left out
    model, n = start_model_from_genes([(sequence, genes), ("ATGAAATAA" * 3, genes.iloc[:0])])
    assert model is not None and n > 200  # a record without genes teaches nothing and breaks nothing
    assert start_model_from_genes([("ATGAAATAA" * 3, genes.iloc[:0])]) == (None, 0)
