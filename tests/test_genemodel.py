"""The gene model learned from an annotation: exact decoding, learning real genes, its model file."""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from genoformer.decode.eukaryote import LengthScores, StrandScores, decode_strand
from genoformer.decode.segments import encode_bases, prefix_sums
from genoformer.errors import ModelFileError
from genoformer.evaluate import evaluate
from genoformer.export import write_gff3
from genoformer.genemodel import DecodeSettings, GeneModel, decode_with_gene_model, gene_model_transcripts
from genoformer.genemodel.lengths import length_scores, smoothed_distribution, tail_rate
from genoformer.genemodel.model import MIN_FITTED_SITES
from genoformer.genemodel.signals import (
    FITTED_WINDOWS, START_RANKS, WINDOWS, fit_site_table, log_odds_table, rank_log_odds, start_ranks,
)
from genoformer.genemodel.training import TrainingCounts, add_region, coding_transcripts
from genoformer.genome import Interval

STOPS = ("TAA", "TAG", "TGA")
TRAINING_SLICES = ("Chr1", "Chr2", "Chr3", "Chr4")


# --------------------------------------------------------------------------- exactness (brute force)

def _brute_force(seq, per_base, intron, signals, *, min_exon, min_intron, gene_penalty, intron_penalty,
                 open_ends=False, lengths=None):
    """Every parse the decoder's rules allow, scored term by term: {parse: best score of that parse}.

    Rules: a gene starts at an ATG (frame = its position mod 3) and ends at the first in-frame stop
    codon of its last exon (the stop included); an exon left at a donor holds no in-frame stop codon
    starting before the donor; introns begin with GT/GC and end after AG; a codon spliced across an
    intron is no stop; exons and introns respect their minimum lengths; genes do not overlap. With
    ``open_ends`` the first gene may begin at base 0 inside a coding exon (any frame) or an intron (any
    phase), and the last may run to the end inside a coding exon (no in-frame stop left) or an intron.
    A parse is a tuple of genes, each (CDS pieces, partial flag 5' then 3'). ``lengths``
    (:class:`LengthScores`) adds each whole exon's term by kind and length, and each whole intron's.
    """
    n = len(seq)

    def exon_term(entry_kind, exit_kind, size):  # entry_kind None: the exon began before the sequence
        if lengths is None or entry_kind is None:
            return 0.0
        terms = lengths.exon[entry_kind][exit_kind]
        return terms[size] if size < len(terms) else lengths.exon_tail[entry_kind][exit_kind]

    def intron_term(size):
        if lengths is None:
            return 0.0
        return lengths.intron[size] if size < len(lengths.intron) else lengths.intron_tail

    at = lambda words, shift=0: [x + shift for x in range(n) if seq[x:x + len(words[0])] in words]  # noqa: E731
    starts, stops = at(("ATG",)), at(STOPS)
    donors = [x for x in at(("GT", "GC")) if 1 <= x < n]
    acceptors = [x for x in at(("AG",), 2) if x < n]
    parses = {}

    def record(done_genes, score):
        parses[done_genes] = max(score, parses.get(done_genes, -np.inf))

    def flag(left, right):
        return f"{int(left)}{int(right)}" if left or right else ""

    def after_acceptor(acceptor, left, score, gene, left_open, done_genes, done_score):
        need = (3 - left) % 3
        exon(acceptor, (acceptor + need) % 3, gene, score, left_open, min_exon, done_genes, done_score, 1)

    def exon(entry, frame, gene, score, left_open, shortest, done_genes, done_score, entry_kind):
        stop = next((y for y in stops if y >= entry and y % 3 == frame), None)
        if stop is not None and stop + 3 - entry >= shortest:  # end the gene
            piece_score = (sum(per_base[frame][entry:stop + 3]) + signals["stop"][stop]
                           + exon_term(entry_kind, 1, stop + 3 - entry))
            genes(stop + 3, done_genes + ((gene + ((entry, stop + 3),), flag(left_open, False)),),
                  done_score + score + piece_score)
        if open_ends and stop is None and n - entry >= shortest:  # run off the end in this exon
            record(done_genes + ((gene + ((entry, n),), flag(left_open, True)),),
                   done_score + score + sum(per_base[frame][entry:n]))
        for donor in donors:
            if donor < entry + shortest or (stop is not None and donor > stop):
                continue
            left = (donor - frame) % 3  # bases of an unfinished codon
            exon_score = (score + sum(per_base[frame][entry:donor]) + signals["donor"][donor] - intron_penalty
                          + exon_term(entry_kind, 0, donor - entry))
            pieces = gene + ((entry, donor),)
            if open_ends and n - donor >= min_intron:  # run off the end in this intron
                record(done_genes + ((pieces, flag(left_open, True)),), done_score + exon_score + sum(intron[donor:]))
            for acceptor in acceptors:
                if acceptor - donor < min_intron:
                    continue
                need = (3 - left) % 3
                if left and seq[donor - left:donor] + seq[acceptor:acceptor + need] in STOPS:
                    continue
                value = (exon_score + sum(intron[donor:acceptor]) + signals["acceptor"][acceptor]
                         + intron_term(acceptor - donor))
                after_acceptor(acceptor, left, value, pieces, left_open, done_genes, done_score)

    def genes(free, done_genes, done_score):
        record(done_genes, done_score)
        for start in starts:
            if start >= free:
                exon(start, start % 3, (), signals["start"][start] - gene_penalty, False, min_exon, done_genes,
                     done_score, 0)

    genes(0, (), 0.0)
    if open_ends:  # the first gene already under way at base 0
        for frame in range(3):
            exon(0, frame, (), -gene_penalty, True, 0, (), 0.0, None)
        for left in range(3):  # unknown bases of an unfinished codon: no spliced stop can be checked
            for acceptor in acceptors:
                after_acceptor(acceptor, left, -gene_penalty + sum(intron[:acceptor]) + signals["acceptor"][acceptor],
                               (), True, (), 0.0)
    return parses


def _planted_sequence(rng, length):
    # Signals on a filler without T (no stop codons of its own), so that many spliced parses exist.
    tokens = ["ATG", "ATG", "GT", "GT", "AG", "AG", "TAA", "TGA", "GC", "A", "C", "G", "CA", "GA"]
    seq = ""
    while len(seq) < length:
        seq += tokens[rng.integers(len(tokens))]
    return seq[:length]


@pytest.mark.parametrize("open_ends", [False, True])
@pytest.mark.parametrize("seed", range(25))
def test_decoder_best_path_score_equals_brute_force_over_all_parses(seed, open_ends):
    rng = np.random.default_rng(seed)
    seq = _planted_sequence(rng, 48)
    n = len(seq)
    per_base = rng.normal(0.3, 1.0, size=(3, n))  # frame-specific coding log-odds
    intron = rng.normal(0.1, 1.0, size=n)
    signals = {kind: rng.normal(0.0, 2.0, size=n + 1) for kind in ("donor", "acceptor", "start", "stop")}
    options = dict(min_exon=3, min_intron=4, gene_penalty=float(rng.uniform(0, 3)),
                   intron_penalty=float(rng.uniform(0, 2)), open_ends=open_ends)
    scores = StrandScores(cds=prefix_sums(per_base), intron=prefix_sums(intron), signals=signals)
    decoded = decode_strand(encode_bases(seq), scores, **options)
    parses = _brute_force(seq, per_base, intron, signals, **options)
    assert decoded.score == pytest.approx(max(parses.values()), abs=1e-9)
    path = tuple((tuple(tuple(piece) for piece in gene), flag) for gene, flag in zip(decoded.genes, decoded.partial))
    assert parses[path] == pytest.approx(decoded.score, abs=1e-9)  # the path returned is a valid parse, so scored
    for gene, gene_score in zip(path, decoded.gene_scores):  # each gene's score: that gene alone as a parse
        assert parses[(gene,)] == pytest.approx(gene_score, abs=1e-9)


@pytest.mark.parametrize("open_ends", [False, True])
@pytest.mark.parametrize("seed", range(25))
def test_with_explicit_lengths_the_decoder_still_finds_the_brute_force_best_parse(seed, open_ends):
    rng = np.random.default_rng(100 + seed)
    seq = _planted_sequence(rng, 48)
    n = len(seq)
    per_base = rng.normal(0.3, 1.0, size=(3, n))
    intron = rng.normal(0.1, 1.0, size=n)
    signals = {kind: rng.normal(0.0, 2.0, size=n + 1) for kind in ("donor", "acceptor", "start", "stop")}
    # Horizons shorter than the sequence, so that exits read both the table and the tail.
    lengths = LengthScores(exon=rng.normal(0.0, 2.0, size=(2, 2, 13)).tolist(),
                           exon_tail=rng.normal(0.0, 2.0, size=(2, 2)).tolist(),
                           intron=rng.normal(0.0, 2.0, size=9).tolist(), intron_tail=float(rng.normal(0.0, 2.0)))
    options = dict(min_exon=3, min_intron=4, gene_penalty=float(rng.uniform(0, 3)),
                   intron_penalty=float(rng.uniform(0, 2)), open_ends=open_ends, lengths=lengths)
    scores = StrandScores(cds=prefix_sums(per_base), intron=prefix_sums(intron), signals=signals)
    decoded = decode_strand(encode_bases(seq), scores, **options)
    parses = _brute_force(seq, per_base, intron, signals, **options)
    assert decoded.score == pytest.approx(max(parses.values()), abs=1e-9)
    path = tuple((tuple(tuple(piece) for piece in gene), flag) for gene, flag in zip(decoded.genes, decoded.partial))
    assert parses[path] == pytest.approx(decoded.score, abs=1e-9)


def test_brute_force_sees_spliced_genes_so_the_exactness_check_has_teeth():
    spliced = 0
    for seed in range(25):
        rng = np.random.default_rng(seed)
        seq = _planted_sequence(rng, 48)
        zeros = np.zeros((3, len(seq)))
        signals = {kind: np.zeros(len(seq) + 1) for kind in ("donor", "acceptor", "start", "stop")}
        parses = _brute_force(seq, zeros, zeros[0], signals, min_exon=3, min_intron=4, gene_penalty=0, intron_penalty=0)
        spliced += sum(1 for parse in parses if any(len(pieces) > 1 for pieces, _ in parse))
    assert spliced > 200


# --------------------------------------------------------------------------- learning real genes

@pytest.fixture(scope="module")
def trained(athaliana):
    genome, annotation = athaliana
    return GeneModel.fit(genome, annotation, [Interval(name, 0, genome.lengths[name]) for name in TRAINING_SLICES])


def _cds_f1(athaliana, model, settings=None):
    genome, annotation = athaliana
    held_out = [Interval("Chr5", 0, genome.lengths["Chr5"])]
    prediction = decode_with_gene_model(genome, model, held_out, settings)
    scores = evaluate(annotation, prediction, lengths=genome.lengths, regions=held_out)
    return scores["nucleotide"]["coding"]["f1"], scores["exon"]["f1"]


def test_gene_model_from_four_slices_finds_the_coding_sequence_of_the_fifth(athaliana, trained):
    assert trained.report["genes used"] > 250
    assert set(trained.donors) >= {"GT", "GC"} and trained.donors["GT"] > 0.95 * sum(trained.donors.values())
    nucleotide_f1, exon_f1 = _cds_f1(athaliana, trained)
    # Without content or signal models (weights 0), paid to call genes, the same decoder calls ORF-shaped
    # noise: nucleotide F1 0.22, exon F1 0.002. The model reaches 0.86 and 0.66.
    no_model = DecodeSettings(coding_weight=0.0, signal_weight=0.0, gene_penalty=-50.0, intron_penalty=-5.0)
    baseline_f1, baseline_exon_f1 = _cds_f1(athaliana, trained, no_model)
    assert nucleotide_f1 > 0.8 and exon_f1 > 0.55
    assert baseline_f1 < 0.3 and baseline_exon_f1 < 0.05


# --------------------------------------------------------------------------- length distributions

def test_length_terms_with_the_per_base_rate_give_back_a_distribution_summing_to_one():
    rng = np.random.default_rng(0)
    lengths = (60 + rng.gamma(2.0, 60.0, size=3000)).astype(int).tolist()
    horizon = 300
    probabilities, beyond = smoothed_distribution(lengths, horizon)
    assert probabilities.sum() + beyond == pytest.approx(1.0)
    assert beyond == pytest.approx(np.mean(np.array(lengths) > horizon), abs=1e-3)
    log_q = tail_rate(lengths, horizon, fallback_mean=100.0)
    scores, _, _ = length_scores({"intron": lengths, **{k: lengths for k in
                                  ("single_exon", "initial_exon", "internal_exon", "terminal_exon")}}, horizon, horizon)
    # What a path adds for an intron of length d: d per-base rates plus the length's term.
    within = np.exp(np.array(scores.intron) + np.arange(horizon + 1) * log_q)
    np.testing.assert_allclose(within, probabilities, rtol=1e-9)
    longer = np.arange(horizon + 1, 20 * horizon)
    tail = np.exp(scores.intron_tail + longer * log_q)
    assert within.sum() + tail.sum() == pytest.approx(1.0, abs=1e-6)
    # The tail's mean excess is the training lengths' beyond the horizon.
    excess = np.array(lengths)[np.array(lengths) > horizon] - horizon
    assert (longer - horizon) @ tail / tail.sum() == pytest.approx(excess.mean(), rel=1e-3)


def test_learned_exon_lengths_make_a_ten_base_terminal_exon_costly_and_a_long_single_exon_cheap(trained):
    scores, exon_q, _ = length_scores(trained.lengths, 600, 400)
    initial, single = scores.exon[0]
    internal, terminal = scores.exon[1]
    # Per base, every exon pays log q; the length terms say how much likelier a length is than that.
    assert terminal[10] < terminal[150] - 1.5
    assert internal[10] < internal[100] - 3.0
    assert single[600] > single[60] + 2.0


def test_explicit_lengths_call_more_exons_right_on_held_out_sequence_than_geometric_ones(athaliana, trained):
    explicit = _cds_f1(athaliana, trained, DecodeSettings())
    geometric = _cds_f1(athaliana, trained, DecodeSettings(explicit_lengths=False))
    assert explicit[1] > geometric[1] + 0.01


# --------------------------------------------------------------------------- fitted signal models

def _auc(true_scores, decoy_scores):
    scores = np.concatenate((true_scores, decoy_scores))
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores, kind="stable")] = np.arange(1, len(scores) + 1)
    n = len(true_scores)
    return (ranks[:n].sum() - n * (n + 1) / 2) / (n * len(decoy_scores))


def _embedded_wam(model, kind):
    (offset, width), (fitted_offset, fitted_width) = WINDOWS[kind], FITTED_WINDOWS[kind]
    table = np.zeros((fitted_width, 5, 5))
    table[offset - fitted_offset: offset - fitted_offset + width] = log_odds_table(
        model.signals[kind], model.background, model.pseudocount)
    return table


def test_fitted_splice_site_models_rank_held_out_sites_above_decoys_better_than_counted_ones(athaliana, trained):
    genome, annotation = athaliana
    held_out = TrainingCounts(order=trained.order)  # Chr5's true sites and decoys, never trained on
    add_region(held_out, encode_bases(genome.fetch("Chr5", 0, genome.lengths["Chr5"])),
               coding_transcripts(annotation, "Chr5"), 0, ("ATG",), STOPS)
    for kind in ("donor", "acceptor"):
        width = FITTED_WINDOWS[kind][1]
        true, decoys = (np.concatenate(held_out.fitted_site_windows[kind]).astype(np.int64),
                        np.concatenate(held_out.decoy_windows[kind]).astype(np.int64))

        def auc(table):
            flat = table.reshape(width, 25)
            return _auc(flat[np.arange(width), true].sum(axis=1), flat[np.arange(width), decoys].sum(axis=1))

        assert not np.allclose(trained.fitted_signals[kind], _embedded_wam(trained, kind))  # fitted, not a fallback
        assert auc(trained.fitted_signals[kind]) > auc(_embedded_wam(trained, kind)) + 0.005


def test_with_too_few_training_sites_the_fitted_signal_model_is_the_counted_one(trained):
    assert trained.report["genes used"] < MIN_FITTED_SITES  # one start per gene: too few to fit
    np.testing.assert_array_equal(trained.fitted_signals["start"], _embedded_wam(trained, "start"))


# --------------------------------------------------------------------------- a start's rank in its open frame

def _ranks_by_hand(sequence):
    """Every position's rank, read codon by codon backwards until an in-frame stop."""
    out = []
    for p in range(len(sequence)):
        rank, q = 0, p - 3
        while q >= 0 and sequence[q:q + 3] not in STOPS:
            rank += sequence[q:q + 3] == "ATG"
            q -= 3
        out.append(min(rank, START_RANKS - 1))
    return out


def _rank_positions(sequence):
    words = [sequence[p:p + 3] for p in range(len(sequence) - 2)]
    return (np.array([p for p, w in enumerate(words) if w == "ATG"], dtype=np.int64),
            np.array([p for p, w in enumerate(words) if w in STOPS], dtype=np.int64))


def test_a_start_codons_rank_counts_the_start_codons_in_its_frame_since_the_last_stop():
    # codons of frame 0: ATG CCC ATG ATG TAA ATG GCC ATG ATG ATG ATG CCC
    sequence = "ATGCCCATGATGTAAATGGCCATGATGATGATGCCC"
    starts, stops = _rank_positions(sequence)
    ranks = start_ranks(len(sequence), starts, stops)
    in_frame_0 = {p: r for p, r in zip(starts.tolist(), ranks[starts].tolist()) if p % 3 == 0}
    # first, second, third; the stop at 12; first again, then up to the cap (3: "three or more")
    assert in_frame_0 == {0: 0, 6: 1, 9: 2, 15: 0, 21: 1, 24: 2, 27: 3, 30: 3}
    rng = np.random.default_rng(7)
    for _ in range(20):
        sequence = "".join(rng.choice(list("ACGT"), size=300, p=[0.3, 0.2, 0.2, 0.3]))
        starts, stops = _rank_positions(sequence)
        assert start_ranks(len(sequence), starts, stops).tolist() == _ranks_by_hand(sequence)


def test_the_start_rank_weight_is_fitted_with_the_start_window_and_keeps_the_typical_true_score():
    rng = np.random.default_rng(0)
    width = 8
    true_pairs, decoy_pairs = rng.integers(0, 25, (600, width)), rng.integers(0, 25, (6000, width))
    true_ranks = rng.choice(START_RANKS, 600, p=[0.9, 0.06, 0.03, 0.01])  # A. thaliana-like: mostly first
    decoy_ranks = rng.choice(START_RANKS, 6000, p=[0.6, 0.2, 0.1, 0.1])
    table, by_rank = fit_site_table(true_pairs, decoy_pairs, 3.0, (true_ranks, decoy_ranks))
    assert by_rank[0] == 0 and by_rank[1] < -1 and by_rank[3] < by_rank[1]
    # about the log-odds ratios against rank 0: log((0.06/0.2)/(0.9/0.6)) = -1.6, log((0.01/0.1)/1.5) = -2.7
    assert by_rank[1] == pytest.approx(-1.6, abs=0.4) and by_rank[3] == pytest.approx(-2.7, abs=0.8)
    true_scores = table.reshape(width, 25)[np.arange(width), true_pairs].sum(axis=1) + by_rank[true_ranks]
    assert true_scores.mean() == pytest.approx(3.0)
    _, no_ranks = fit_site_table(true_pairs, decoy_pairs, 3.0)
    assert (no_ranks == 0).all()


def test_true_starts_are_mostly_the_first_start_codon_of_their_open_frame_and_that_calls_more_starts(
        athaliana, trained):
    # Too few training starts to fit: the counted rank log-odds stand in. Rank 0 (the first ATG after an
    # in-frame stop) is far likelier for a true start than for a decoy ATG near a gene.
    counts = TrainingCounts(order=trained.order)
    genome, annotation = athaliana
    for name in TRAINING_SLICES:
        add_region(counts, encode_bases(genome.fetch(name, 0, genome.lengths[name])),
                   coding_transcripts(annotation, name), 0, ("ATG",), STOPS)
    true, decoys = (np.concatenate(counts.start_ranks[kind]).astype(np.int64) for kind in ("true", "decoy"))
    assert (true == 0).mean() > 0.85 and (decoys == 0).mean() < 0.75
    np.testing.assert_allclose(trained.start_rank_weights, rank_log_odds(true, decoys, trained.pseudocount))
    assert trained.start_rank_weights[0] > 0 > trained.start_rank_weights[1]
    # On held-out Chr5 the ranks call 6 more of the 77 genes exactly (42 against 36): at least 3 here.
    held_out = [Interval("Chr5", 0, genome.lengths["Chr5"])]
    exact = []
    for model in (trained, dataclasses.replace(trained, start_rank_weights=np.zeros(START_RANKS))):
        prediction = decode_with_gene_model(genome, model, held_out)
        scores = evaluate(annotation, prediction, lengths=genome.lengths, regions=held_out)
        exact.append(scores["gene"]["matched_reference"])
    assert exact[0] >= exact[1] + 3


# --------------------------------------------------------------------------- the model file

def test_a_saved_gene_model_loads_back_equal_and_decodes_the_same(tmp_path, athaliana, trained):
    path = trained.save(tmp_path / "model")
    loaded = GeneModel.load(tmp_path / "model")
    assert json.loads(path.read_text()) == trained.to_dict() == loaded.to_dict()
    genome, _ = athaliana
    region = [Interval("Chr5", 0, 60_000)]
    first, second = decode_with_gene_model(genome, trained, region), decode_with_gene_model(genome, loaded, region)
    assert first.drop(columns="attributes").equals(second.drop(columns="attributes"))


@pytest.mark.parametrize("change, field", [
    (lambda d: d.update(format_version=99), "format_version"),
    (lambda d: d.pop("coding"), "coding"),
    (lambda d: d.update(intron=[1, 2, 3]), "intron"),
    (lambda d: d["signals"].pop("donor"), "signals"),
    (lambda d: d.update(start_rank_weights=[0.0, -1.0]), "start_rank_weights"),
    (lambda d: d.update(start_rank_weights=["a", "b", "c", "d"]), "start_rank_weights"),
])
def test_loading_refuses_another_version_or_a_missing_or_broken_field_naming_file_and_field(
        tmp_path, trained, change, field):
    path = trained.save(tmp_path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=f"gene_model.json.*'{field}'"):
        GeneModel.load(tmp_path)


@pytest.mark.parametrize("change, told", [
    (lambda d: d.update(format_version=0), "reads version 4, the file has 0; learn the gene model again with this version"),
    (lambda d: d.pop("format_version"), "the file has None; learn the gene model again"),
    (lambda d: d.pop("lengths"), "'lengths': missing: the file is incomplete or was not written by genoformer; learn"),
])
def test_a_gene_model_file_from_another_version_or_missing_a_field_says_to_learn_it_again(tmp_path, trained, change, told):
    path = trained.save(tmp_path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ModelFileError) as refused:
        GeneModel.load(tmp_path)
    assert str(refused.value).startswith(f"{path}: gene model field ")
    assert told in str(refused.value) and str(refused.value).endswith("(`genoformer gene-model`)")


def test_loading_refuses_a_folder_without_a_gene_model_or_a_file_that_is_not_json(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        GeneModel.load(tmp_path)
    (tmp_path / "gene_model.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="gene_model.json.*JSON"):
        GeneModel.load(tmp_path)


def test_a_gene_cut_by_the_sequence_end_is_called_as_a_partial_gene(athaliana, trained):
    genome, _ = athaliana
    sequence = genome.fetch("Chr5", 0, 60_000)
    whole = [t for t in gene_model_transcripts(sequence, trained) if not t.partial and len(t.cds) > 1]
    gene = max(whole, key=lambda t: sum(e - s for s, e in t.cds))
    cut = gene.cds[0][0] + 31  # just inside its leftmost CDS piece
    cut_off = [t for t in gene_model_transcripts(sequence[cut:], trained) if t.strand == gene.strand]
    first = min(cut_off, key=lambda t: t.start)
    # From base 0, in a coding exon or in an intron (the model may read the cut exon's first bases as one).
    assert first.partial == "10" and first.start < gene.cds[0][1] - cut
    assert [(s + cut, e + cut) for s, e in first.cds[1:]] == gene.cds[1:]  # the rest of the gene unchanged
    closed = gene_model_transcripts(sequence[cut:], trained, DecodeSettings(open_ends=False))
    same_strand = [t for t in closed if t.strand == gene.strand]
    assert same_strand and all(not t.partial and t.start > 0 for t in same_strand)


def test_gene_model_calls_carry_their_log_odds_and_leave_the_probability_score_empty(tmp_path, athaliana, trained):
    genome, _ = athaliana
    region = Interval("Chr5", 0, 60_000)
    transcripts = gene_model_transcripts(genome.fetch(region.name, region.start, region.end), trained)
    # A gene's share of the path: removing it (intergenic there instead) is a parse too, so it is never negative.
    assert len(transcripts) > 5 and all(t.log_odds > 0 for t in transcripts)
    table = decode_with_gene_model(genome, trained, [region])
    genes = table[table["type"] == "gene"].sort_values("start")
    by_start = sorted(transcripts, key=lambda t: t.start)
    assert [row["log_odds"] for row in genes["attributes"]] == [f"{t.log_odds:.2f}" for t in by_start]
    mrna = table[table["type"] == "mRNA"].sort_values("start")
    assert [row["log_odds"] for row in mrna["attributes"]] == [f"{t.log_odds:.2f}" for t in by_start]
    assert table["score"].isna().all()  # no class probabilities: no score, rather than a probability of 0
    path = write_gff3(table, tmp_path / "calls.gff3", {"Chr5": genome.lengths["Chr5"]})
    rows = [line.split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]
    assert {row[5] for row in rows} == {"."}
    assert all(";log_odds=" in row[8] for row in rows if row[2] in ("gene", "mRNA"))


def test_a_gtf_style_annotation_with_stop_codon_rows_trains_the_same_model(athaliana):
    genome, annotation = athaliana
    cds = annotation[(annotation["type"] == "CDS") & (annotation["seqid"] == "Chr2")].copy()
    # GTF leaves the stop codon out of CDS rows and lists it as a stop_codon row of its own.
    last = cds.groupby("transcript_id")["start"].transform(
        lambda starts: starts == (starts.max() if cds.loc[starts.index, "strand"].iloc[0] == "+" else starts.min()))
    ends = cds[last.to_numpy(dtype=bool)]
    assert (ends["end"] - ends["start"] > 3).all()
    plus = (ends["strand"] == "+").to_numpy()
    stop = ends.assign(type="stop_codon", start=np.where(plus, ends["end"] - 3, ends["start"]),
                       end=np.where(plus, ends["end"], ends["start"] + 3))
    trimmed = cds.copy()
    trimmed.loc[ends.index[plus], "end"] -= 3
    trimmed.loc[ends.index[~plus], "start"] += 3
    gtf_like = pd.concat([trimmed, stop], ignore_index=True)
    region = [Interval("Chr2", 0, genome.lengths["Chr2"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a slice has fewer than 200 genes
        from_gff, from_gtf = GeneModel.fit(genome, cds, region), GeneModel.fit(genome, gtf_like, region)
    assert from_gff.report["genes used"] > 30
    assert from_gtf.to_dict() | {"report": None} == from_gff.to_dict() | {"report": None}


def test_of_two_genes_overlapping_on_opposite_strands_the_lower_scoring_one_is_dropped():
    from genoformer.decode.segments import Transcript
    from genoformer.genemodel.decode import _without_strand_overlaps

    def gene(strand, start, end):
        return Transcript(strand=strand, cds=[(start, end)])

    called = [(10.0, gene("+", 100, 400)), (12.0, gene("-", 350, 700)), (3.0, gene("+", 800, 900)),
              (2.0, gene("-", 900, 1000)), (1.0, gene("-", 50, 120))]
    kept = _without_strand_overlaps(called)
    # + 100-400 loses to - 350-700; once dropped it blocks nothing (- 50-120 stays); touching is no overlap.
    assert [(t.strand, t.start, t.end) for t in kept] == [("-", 50, 120), ("-", 350, 700), ("+", 800, 900),
                                                         ("-", 900, 1000)]
