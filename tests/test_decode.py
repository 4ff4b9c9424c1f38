"""Decoding per-base probabilities into gene models and segments."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from genoformer.decode import (
    Stretch, call_genes_eukaryote, call_genes_prokaryote, call_segments, decode_record, decode_stretches,
    gene_decoder_options,
)
from genoformer.decode import prokaryote
from genoformer.decode.codon_statistics import codon_frame_sums, hexamer_log_odds
from genoformer.decode.prokaryote import MIN_START_TRAINING_GENES, learn_gene_statistics, select_genes
from genoformer.decode.start_sites import START_SITE, start_site_log_odds
from genoformer.decode.segments import encode_bases, word_codes
from genoformer.errors import ConfigError
from genoformer.genome.annotation import read_annotation
from genoformer.genome.annotation_table import ANNOTATION_COLUMNS
from genoformer.genome.labels import LabelScheme, label_track

from .conftest import ATHALIANA_FASTA, ATHALIANA_GFF, ECOLI_FASTA, ECOLI_GFF

STOPS = ("TAA", "TAG", "TGA")
CDS, INTRON, UTR5, UTR3, NCRNA = 2, 3, 1, 4, 5
_COMPLEMENT = str.maketrans("ACGTacgt", "TGCAtgca")


def revcomp(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def random_dna(rng, n: int) -> str:
    return np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, n)].tobytes().decode()


def codons(rng, n: int, first: str = "") -> str:
    """n random sense codons (no stop), the first one starting with ``first``."""
    out = []
    while len(out) < n:
        codon = "".join(rng.choice(list("ACGT"), 3))
        if codon not in STOPS and codon.startswith(first if not out else ""):
            out.append(codon)
    return "".join(out)


def probabilities(labels: np.ndarray, rng, n_classes: int = 6, noise: float = 0.25) -> np.ndarray:
    """(2, n_classes, length) float32: the one-hot truth blended with uniform noise, normalised."""
    onehot = np.zeros((2, n_classes, labels.shape[1]), dtype=np.float32)
    for row in range(2):
        onehot[row, labels[row], np.arange(labels.shape[1])] = 1.0
    probs = (1 - noise) * onehot + noise * rng.random(onehot.shape, dtype=np.float32)
    return probs / probs.sum(axis=1, keepdims=True)


def paint(labels, row, cls, start, end):
    labels[row, start:end] = cls


def cds_rows(table, strand=None):
    rows = table[table["type"] == "CDS"]
    if strand is not None:
        rows = rows[rows["strand"] == strand]
    return sorted(zip(rows["start"], rows["end"]))


def check_hierarchy(table):
    assert tuple(table.columns) == ANNOTATION_COLUMNS
    assert table["id"].is_unique
    ids = set(table["id"])
    children = table[table["type"] != "gene"]
    assert children["parent"].isin(ids).all()
    genes = table[table["type"] == "gene"]
    assert genes["parent"].isna().all()
    assert table["score"].between(0, 1).all()
    cds = table[table["type"] == "CDS"]
    assert cds["phase"].notna().all() and cds["phase"].isin([0, 1, 2]).all()
    assert table.loc[table["type"] != "CDS", "phase"].isna().all()


# --------------------------------------------------------------------------- prokaryote

def sharp(labels, rng):
    """Probabilities as confident as a trained tagger's (coding log-odds ~2 per base inside genes);
    the prokaryote decoder's gene cost and start bonuses are in those units."""
    return probabilities(labels, rng, noise=0.05)


def planted_prokaryote(rng, length=3000):
    """Random DNA with a 303 bp gene on + at 500 and a 453 bp gene on - at 1500; labels (2, length)."""
    seq = list(random_dna(rng, length))
    plus = "ATG" + codons(rng, 99) + "TAA"
    minus = "ATG" + codons(rng, 149) + "TGA"
    seq[500 : 500 + len(plus)] = plus
    seq[1500 : 1500 + len(minus)] = revcomp(minus)
    labels = np.zeros((2, length), dtype=np.int64)
    paint(labels, 0, CDS, 500, 500 + len(plus))
    paint(labels, 1, CDS, 1500, 1500 + len(minus))
    return "".join(seq), labels, [(500, 803)], [(1500, 1953)]


def test_prokaryote_recovers_planted_genes_on_both_strands():
    rng = np.random.default_rng(0)
    seq, labels, plus, minus = planted_prokaryote(rng)
    table = call_genes_prokaryote(seq.lower(), sharp(labels, rng), "chr")
    assert cds_rows(table, "+") == plus and cds_rows(table, "-") == minus
    check_hierarchy(table)
    assert list(table["type"]) == ["gene", "mRNA", "exon", "CDS"] * 2
    assert list(table["id"][:4]) == ["chr.g1", "chr.g1.t1", "chr.g1.t1.exon1", "chr.g1.t1.cds1"]
    assert (table.loc[table["type"] == "CDS", "phase"] == 0).all()
    assert (table.loc[table["type"] == "exon", ["start", "end"]].to_numpy() == np.array(plus + minus)).all()


def test_prokaryote_start_follows_where_coding_probability_begins():
    rng = np.random.default_rng(1)
    # Three in-frame starts (ATG, GTG, ATG) 30 bases apart; the probability begins at the second.
    body = "ATG" + codons(rng, 9) + "GTG" + codons(rng, 9) + "ATG" + codons(rng, 80) + "TAG"
    upstream = "TAA" + random_dna(rng, 97)  # an in-frame stop closes the ORF upstream
    seq = random_dna(rng, 200) + upstream + body + random_dna(rng, 300)
    begin = 300
    labels = np.zeros((2, len(seq)), dtype=np.int64)
    paint(labels, 0, CDS, begin + 30, begin + len(body))
    table = call_genes_prokaryote(seq, sharp(labels, rng), "chr")
    assert cds_rows(table, "+") == [(begin + 30, begin + len(body))]
    # Where the probability starts at the first ATG, the first ATG is chosen.
    labels[0, begin : begin + 30] = CDS
    table = call_genes_prokaryote(seq, sharp(labels, rng), "chr")
    assert cds_rows(table, "+") == [(begin, begin + len(body))]


def test_prokaryote_keeps_operon_overlap_and_picks_the_right_start_beside_a_neighbour():
    rng = np.random.default_rng(2)
    # Gene A ends ...ATGA, gene B starts ATGA...: the classic 4-base overlap. B's ORF runs on
    # upstream through A (same frame), so starts inside A would give B a longer, coding-rich CDS;
    # they are not allowed to overlap A by more than 60 bases.
    last = next(c for c in iter(lambda: codons(rng, 1), None) if c.endswith("A"))
    gene_a = "ATG" + codons(rng, 120) + last + "TGA"
    gene_b = "ATGA" + codons(rng, 150)[1:] + "TAA"  # codon 2 is A + two bases: never a stop
    seq = random_dna(rng, 300) + gene_a + gene_b[4:] + random_dna(rng, 300)
    a = (300, 300 + len(gene_a))
    b = (a[1] - 4, a[1] - 4 + len(gene_b))
    labels = np.zeros((2, len(seq)), dtype=np.int64)
    paint(labels, 0, CDS, *a)
    paint(labels, 0, CDS, *b)
    table = call_genes_prokaryote(seq, sharp(labels, rng), "chr")
    assert cds_rows(table, "+") == [a, b]


def orf_whose_reverse_complement_reads_through(rng, n_codons: int) -> str:
    """ATG + codons + TAA whose reverse complement has no stop in frame 0 (an antisense shadow)."""
    while True:
        orf = "ATG" + codons(rng, n_codons) + "TAA"
        antisense = revcomp(orf)
        if all(antisense[i : i + 3] not in STOPS for i in range(0, len(antisense), 3)):
            return orf


def test_prokaryote_gene_cost_drops_weak_short_orfs_and_antisense_shadows():
    rng = np.random.default_rng(3)
    # A + gene that holds a 120 bp ORF on its - strand (a shadow), and a 120 bp ORF in
    # intergenic space; both short ORFs have a moderate coding probability.
    shadow_orf = orf_whose_reverse_complement_reads_through(rng, 38)
    gene = "ATG" + codons(rng, 20) + revcomp(shadow_orf) + codons(rng, 20) + "TAA"
    stray_orf = "ATG" + codons(rng, 38) + "TAG"
    seq = random_dna(rng, 300) + gene + random_dna(rng, 400) + stray_orf + random_dna(rng, 300)
    plus = (300, 300 + len(gene))
    shadow = (300 + 63, 300 + 63 + len(shadow_orf))
    stray = (plus[1] + 400, plus[1] + 400 + len(stray_orf))
    labels = np.zeros((2, len(seq)), dtype=np.int64)
    paint(labels, 0, CDS, *plus)
    probs = sharp(labels, rng)
    for row, (start, end) in ((1, shadow), (0, stray)):
        probs[row, :, start:end] = 0.3 / 5
        probs[row, CDS, start:end] = 0.7
    table = call_genes_prokaryote(seq, probs, "chr")
    assert cds_rows(table, "+") == [plus] and cds_rows(table, "-") == []
    # Without the per-gene cost their positive log-odds would call both (the shadow at its stop).
    table = call_genes_prokaryote(seq, probs, "chr", gene_cost=0.0)
    assert stray in cds_rows(table, "+") and shadow[0] in [start for start, _ in cds_rows(table, "-")]


def test_codon_frame_sums_add_the_in_frame_hexamers_of_a_span():
    rng = np.random.default_rng(11)
    codes = encode_bases(random_dna(rng, 200))
    table = np.append(rng.normal(size=4**6), 0.0)
    words = word_codes(codes, 6)
    sums = codon_frame_sums(words, table, weight=3.0)
    for begin, end in ((0, 30), (7, 103), (41, 200)):
        end -= (end - begin) % 3
        expected = 3.0 * sum(table[words[i]] for i in range(begin, end - 5, 3))
        assert sums[end - 3] - sums[begin] == pytest.approx(expected)


def test_hexamer_log_odds_learns_the_called_genes_codon_usage():
    rng = np.random.default_rng(12)
    usage = ["GCT", "GAA", "CTG", "AAA"]  # a strongly biased genome
    gene = "ATG" + "".join(rng.choice(usage, 200)) + "TAA"
    codes = encode_bases(random_dna(rng, 500) + gene + random_dna(rng, 500))
    table = hexamer_log_odds([word_codes(codes, 6), word_codes(codes[::-1].copy(), 6)], [(np.array([500]), np.array([500 + len(gene)])),
                                                         (np.array([], dtype=np.int64), np.array([], dtype=np.int64))])
    in_frame = [encode_bases(a + b) for a in usage for b in usage]
    shifted = [encode_bases((a + b)[1:] + "G") for a in usage for b in usage]
    code = lambda c: int(np.dot(c.astype(np.int64), 4 ** np.arange(5, -1, -1)))
    in_frame, shifted = (np.mean([table[code(c)] for c in words]) for words in (in_frame, shifted))
    assert in_frame > 0 and in_frame > shifted + 1.0, (in_frame, shifted)
    assert table[-1] == 0.0  # words with N score nothing


def plus_strand_genome(rng, genes: list[str], spacer: int = 300):
    """The genes on + between random spacers; (sequence, gene spans, sharp probabilities of them)."""
    parts, spans, at = [], [], 0
    for gene in genes:
        parts += [random_dna(rng, spacer), gene]
        spans.append((at + spacer, at + spacer + len(gene)))
        at += spacer + len(gene)
    seq = "".join(parts) + random_dna(rng, spacer)
    labels = np.zeros((2, len(seq)), dtype=np.int64)
    for span in spans:
        paint(labels, 0, CDS, *span)
    return seq, spans, sharp(labels, rng)


def test_self_trained_codon_statistics_rescue_a_gene_the_model_is_unsure_of():
    rng = np.random.default_rng(13)
    usage = ["GCT", "GAA", "CTG", "AAA", "GGC", "ACC", "CGT", "ATC"]
    genes = ["ATG" + "".join(rng.choice(usage, n)) + "TAA" for n in (300, 250, 280, 320, 260)]
    seq, spans, probs = plus_strand_genome(rng, genes)
    weak = spans[2]
    probs[0, :, weak[0]:weak[1]] = 0.55 / 5
    probs[0, CDS, weak[0]:weak[1]] = 0.45  # the model leans (slightly) against a real gene
    without = cds_rows(call_genes_prokaryote(seq, probs, "chr", codon_weight=0.0), "+")
    assert weak not in without and set(without) == set(spans) - {weak}
    with_codons = cds_rows(call_genes_prokaryote(seq, probs, "chr"), "+")
    assert set(with_codons) == set(spans)


def test_a_gene_the_model_paints_on_the_wrong_strand_is_called_on_its_orfs_strand(monkeypatch):
    # Trained taggers know where coding is better than on which strand (real case: E. coli yidX/ppiC).
    rng = np.random.default_rng(14)
    genes = ["ATG" + codons(rng, n) + "TAA" for n in (300, 250, 400, 320)]
    seq, spans, probs = plus_strand_genome(rng, genes)
    confused = spans[2]
    probs[:, :, confused[0]:confused[1]] = 0.2 / 5
    probs[1, CDS, confused[0]:confused[1]] = 0.8  # coding, says the model, but on the - strand
    probs[0, :, confused[0]:confused[1]] = 0.65 / 5
    probs[0, CDS, confused[0]:confused[1]] = 0.35
    monkeypatch.setattr(prokaryote, "STRAND_SHARE", 0.0)
    assert set(cds_rows(call_genes_prokaryote(seq, probs, "chr"), "+")) == set(spans) - {confused}
    monkeypatch.undo()
    # Shared evidence lets the + ORF carry the gene, and scheduling both strands together drops the
    # 312 bp antisense ORF inside it that the model painted 0.8.
    table = call_genes_prokaryote(seq, probs, "chr")
    assert set(cds_rows(table, "+")) == set(spans) and cds_rows(table, "-") == []


def test_start_site_log_odds_count_chosen_starts_against_the_other_starts_of_their_orfs():
    upstream, _ = START_SITE
    # One ORF: an ATG at 40 (chosen), an in-frame GTG at 49 and TTG at 55 (its alternatives), stop at 67.
    # The ATG at 70 opens the next ORF, which ends no chosen gene: not an alternative.
    orf = "ATG" + "CCC" + "AAA" + "GTG" + "CCC" + "TTG" + "AAA" * 3 + "TAA"
    seq = "C" * 40 + orf + "ATGCCCTGA" + "C" * 40
    assert [seq[i:i + 3] for i in (49, 55, 70)] == ["GTG", "TTG", "ATG"]
    codes = encode_bases(seq)
    genes = [(np.array([40]), np.array([40 + len(orf)])), (np.array([], np.int64), np.array([], np.int64))]
    table = start_site_log_odds([codes, encode_bases(revcomp(seq))], genes, ["ATG", "GTG", "TTG"], STOPS)
    assert table.shape == (sum(START_SITE), 5) and (table[:, 4] == 0).all()
    A, C, G, T = range(4)
    # Codon positions: chosen A,T,G; alternatives G,T,G and T,T,G; pseudocount 1 per base.
    log = np.log
    assert table[upstream, A] == pytest.approx(log(2 / 5) - log(1 / 6))
    assert table[upstream, G] == pytest.approx(log(1 / 5) - log(2 / 6))
    assert table[upstream + 1, T] == pytest.approx(log(2 / 5) - log(3 / 6))
    # The base before the start: C for the chosen one (at 39); A (48) and C (54) for the alternatives.
    assert table[upstream - 1, C] == pytest.approx(log(2 / 5) - log(2 / 6))
    assert table[upstream - 1, A] == pytest.approx(log(1 / 5) - log(2 / 6))


def late_start_genome(n_genes: int = 50, late=(3, 11, 19, 27, 35, 43)):
    """A genome whose genes start at GTG, 20 codons before an in-frame ATG, each after a 120-base spacer
    with no start codon, and probabilities where the model is unsure of the first 20 codons of the
    ``late`` genes. Returns (sequence, probs, gene spans)."""
    rng = np.random.default_rng(21)
    usage = ["GCT", "GAA", "CTG", "AAA", "GGC", "ACC", "CGT", "ATC", "CAG", "TCC"]  # no start or stop codon
    parts, spans, at = [], [], 0
    for _ in range(n_genes):
        gene = "GTG" + "".join(rng.choice(usage, 19)) + "ATG" + "".join(rng.choice(usage, 80)) + "TAA"
        spacer = "TAA" + "".join(rng.choice(list("AC"), 117))  # no start codon in any frame
        parts += [spacer, gene]
        spans.append((at + len(spacer), at + len(spacer) + len(gene)))
        at += len(spacer) + len(gene)
    seq = "".join(parts) + random_dna(rng, 120)
    labels = np.zeros((2, len(seq)), dtype=np.int64)
    for span in spans:
        paint(labels, 0, CDS, *span)
    probs = sharp(labels, rng)
    for i in late:
        begin = spans[i][0]
        probs[0, :, begin:begin + 60] = 0.55 / 5
        probs[0, CDS, begin:begin + 60] = 0.45
    return seq, probs, spans


def test_self_trained_start_sites_move_starts_the_model_placed_late():
    """Where the model's coding probability rises only at the ATG, the fixed prior (ATG over GTG)
    starts the gene there; the start sites learnt from the other genes move it back to the GTG."""
    late = {3, 11, 19, 27, 35, 43}
    seq, probs, spans = late_start_genome(50, late)
    assert len(spans) >= MIN_START_TRAINING_GENES
    fixed = cds_rows(call_genes_prokaryote(seq, probs, "chr", start_weight=0.0), "+")
    assert all((b + 60, e) in fixed for i, (b, e) in enumerate(spans) if i in late)
    learnt = cds_rows(call_genes_prokaryote(seq, probs, "chr"), "+")
    assert learnt == spans
    # From fewer genes than MIN_START_TRAINING_GENES nothing is learnt: the fixed prior decides.
    few = spans[MIN_START_TRAINING_GENES - 2][1]
    few_calls = cds_rows(call_genes_prokaryote(seq[:few + 60], probs[:, :, :few + 60], "chr"), "+")
    assert few_calls == [span for span in fixed if span[1] <= few]


def test_statistics_pooled_over_contigs_learn_what_no_contig_can():
    """The same genome cut into five contigs of ten genes, each too few to learn start sites from:
    decoded one by one they keep the fixed prior's late starts; with statistics pooled over all
    contigs (as a draft assembly is annotated) every start is right."""
    late = {3, 11, 19, 27, 35, 43}
    seq, probs, spans = late_start_genome(50, late)
    contigs = [(spans[i][0] - 120, spans[i + 9][1]) for i in range(0, 50, 10)]
    assert 10 < MIN_START_TRAINING_GENES

    def calls(statistics=None):
        found = []
        for a, b in contigs:
            table = call_genes_prokaryote(seq[a:b], probs[:, :, a:b], "contig", statistics=statistics)
            found += [(s + a, e + a) for s, e in cds_rows(table, "+")]
        return found

    alone = calls()
    assert all((b + 60, e) in alone for i, (b, e) in enumerate(spans) if i in late)
    pooled = learn_gene_statistics(lambda: ((seq[a:b], probs[:, :, a:b]) for a, b in contigs))
    assert pooled.codon_table is not None and pooled.start_table is not None
    assert calls(pooled) == spans
    # Pooled over one record, the statistics are the ones that record learns alone.
    alone = learn_gene_statistics(lambda: [(seq, probs)])
    assert call_genes_prokaryote(seq, probs, "chr", statistics=alone).equals(call_genes_prokaryote(seq, probs, "chr"))


def test_decode_stretches_decodes_each_contig_with_statistics_pooled_over_all():
    """The one decoding path of annotate and of validation: several stretches of a genome, each table
    in record coordinates with its own ID prefix, decoded with the statistics all of them teach."""
    late = {3, 11, 19, 27, 35, 43}
    seq, probs, spans = late_start_genome(50, late)
    contigs = [(spans[i][0] - 120, spans[i + 9][1]) for i in range(0, 50, 10)]
    stretches = [Stretch("chr", a, f"chr:{a + 1}-{b}") for a, b in contigs]

    def load(i, lazy):
        a, b = contigs[i]
        return seq[a:b], probs[:, :, a:b]

    tables = decode_stretches(stretches, load, LabelScheme.gene_structure())
    assert [(s, e) for table in tables for s, e in cds_rows(table, "+")] == spans  # every late start right
    assert all(table["id"].str.startswith(f"chr:{a + 1}-{b}.").all() for table, (a, b) in zip(tables, contigs))


def test_gene_cost_defaults_to_the_models_loss():
    assert gene_decoder_options("prokaryote", "ce") == {"gene_cost": 400.0}
    assert gene_decoder_options("prokaryote", "weighted") == {} and gene_decoder_options("prokaryote") == {}
    assert gene_decoder_options("prokaryote", "ce", gene_cost=250.0) == {"gene_cost": 250.0}
    assert gene_decoder_options("eukaryote", "ce") == {}
    assert gene_decoder_options("prokaryote", closed_ends=True) == {"closed_ends": True}
    with pytest.raises(ConfigError, match="closed_ends must be true or false, got 1"):
        gene_decoder_options("prokaryote", closed_ends=1)
    with pytest.raises(ConfigError, match="closed_ends applies to the prokaryote gene decoder only"):
        gene_decoder_options("eukaryote", closed_ends=True)


def test_genes_running_off_a_contigs_ends_are_called_partial():
    """A contig that begins inside a + gene (its start codon cut off) and ends inside a − gene (its start
    cut off too, at the contig's right end), and a contig lying wholly inside a gene: the cut genes
    are called up to the contig's ends, flagged as Prodigal flags them, with CDS phase 0."""
    rng = np.random.default_rng(5)
    cut_plus = codons(rng, 120) + "TAA"                    # no start codon: it lies before the contig
    whole = "ATG" + codons(rng, 100) + "TGA"
    cut_minus = revcomp("ATG" + codons(rng, 150) + "TAG")[:-60]  # the − gene's start side runs off the right end
    gap = "".join(rng.choice(list("AC"), 200))             # no stop codon of either strand's frames
    seq = "C" + cut_plus + gap + whole + gap + cut_minus
    whole_end = len(seq) - len(cut_minus) - 200
    spans = {"+": [(1, 1 + len(cut_plus)), (whole_end - len(whole), whole_end)],
             "-": [(len(seq) - len(cut_minus), len(seq))]}
    labels = np.zeros((2, len(seq)), dtype=np.int64)
    for b, e in spans["+"]:
        paint(labels, 0, CDS, b, e)
    paint(labels, 1, CDS, *spans["-"][0])
    labels_of_contig = labels
    table = call_genes_prokaryote(seq, sharp(labels, rng), "contig")
    check_hierarchy(table)
    assert cds_rows(table, "+") == spans["+"] and cds_rows(table, "-") == spans["-"]
    genes = table[table["type"] == "gene"].sort_values("start")
    assert [a.get("partial") for a in genes["attributes"]] == ["10", None, "01"]
    cds = table[table["type"] == "CDS"].sort_values("start")
    assert [a.get("partial") for a in cds["attributes"]] == ["10", None, "01"] and (cds["phase"] == 0).all()
    # Inside one gene, both ends run off.
    inside = "C" + codons(rng, 200)
    labels = np.full((2, len(inside)), 0, dtype=np.int64)
    paint(labels, 0, CDS, 1, len(inside))
    inside_probs = sharp(labels, rng)
    table = call_genes_prokaryote(inside, inside_probs, "contig")
    assert cds_rows(table) == [(1, len(inside))]
    assert table.loc[table["type"] == "gene", "attributes"].iloc[0] == {"partial": "11"}
    # Closed ends (a complete sequence, Prodigal's -c): genes with a start and a stop codon only. A cut
    # gene's stretch then holds, at most, a gene from an internal start codon to its real stop.
    table = call_genes_prokaryote(seq, sharp(labels_of_contig, rng), "contig", closed_ends=True)
    assert spans["+"][1] in cds_rows(table, "+")
    assert not any("partial" in attributes for attributes in table["attributes"])
    assert all(start > 1 and end == spans["+"][0][1] for start, end in cds_rows(table, "+")[:-1])
    assert [start for start, _ in cds_rows(table, "-")] == [spans["-"][0][0]]  # − strand: its stop is on the left
    assert len(call_genes_prokaryote(inside, inside_probs, "contig", closed_ends=True)) == 0


def test_prokaryote_calls_convergent_genes_overlapping_on_opposite_strands():
    rng = np.random.default_rng(4)
    # A + gene and a - gene sharing 9 bases: the + gene's last three codons (ending in its stop)
    # are the reverse complement of the - gene's last three (ending in its stop).
    while True:
        shared = random_dna(rng, 10)
        plus_frame = [shared[i : i + 3] for i in (1, 4, 7)]
        minus_frame = [revcomp(shared)[i : i + 3] for i in (0, 3, 6)]
        if (plus_frame[2] in STOPS and minus_frame[2] in STOPS
                and not {plus_frame[0], plus_frame[1], minus_frame[0], minus_frame[1]} & set(STOPS)
                and not set(plus_frame + minus_frame) & {"ATG", "GTG", "TTG"}):
            break
    gene_a = "ATG" + codons(rng, 120) + "GC" + shared  # GC + shared[0]: never a stop
    gene_b = "ATG" + codons(rng, 100) + revcomp(shared)[:9]
    seq = random_dna(rng, 300) + gene_a + revcomp(gene_b)[9:] + random_dna(rng, 300)
    a = (300, 300 + len(gene_a))
    b = (a[1] - 9, a[1] - 9 + len(gene_b))
    assert seq[slice(*b)] == revcomp(gene_b)
    labels = np.zeros((2, len(seq)), dtype=np.int64)
    paint(labels, 0, CDS, *a)
    paint(labels, 1, CDS, *b)
    table = call_genes_prokaryote(seq, sharp(labels, rng), "chr")
    assert cds_rows(table, "+") == [a] and cds_rows(table, "-") == [b]


def test_prokaryote_start_prefers_one_behind_a_shine_dalgarno_motif():
    rng = np.random.default_rng(5)
    # Two in-frame ATGs 15 bases apart inside a uniformly coding-looking stretch; the downstream
    # one has AGGAGG 8 bases before it.
    first = "ATG" + "GCT" * 2 + "AGGAGG" + "GCT"  # ATG GCT GCT AGG AGG GCT: no stop, no start
    body = first + "ATG" + codons(rng, 100) + "TAA"
    upstream = "TAA" + random_dna(rng, 97).replace("AGG", "ACC").replace("GGA", "GCA")
    seq = random_dna(rng, 200) + upstream + body + random_dna(rng, 300)
    begin = 300
    labels = np.zeros((2, len(seq)), dtype=np.int64)
    paint(labels, 0, CDS, begin, begin + len(body))
    probs = sharp(labels, rng)
    table = call_genes_prokaryote(seq, probs, "chr")
    assert cds_rows(table, "+") == [(begin + len(first), begin + len(body))]
    table = call_genes_prokaryote(seq, probs, "chr", rbs_bonus=0.0)
    assert cds_rows(table, "+") == [(begin, begin + len(body))]


def test_overlap_resolution_allows_small_overlaps_and_charges_double_counted_bases():
    sums = np.zeros((2, 2001))
    begin = np.array([0, 500, 590, 100])
    end = np.array([600, 900, 900, 400])
    score = np.array([100.0, 50.0, 40.0, 10.0])
    plus = np.zeros(4, dtype=np.int64)
    # [500, 900) overlaps [0, 600) by 100 > 60; [590, 900) by 10; [100, 400) lies inside.
    chosen = select_genes(begin, end, score, plus, sums, 60, 120)
    assert begin[chosen].tolist() == [0, 590]
    chosen = select_genes(begin[:2], end[:2], np.array([100.0, 150.0]), plus[:2], sums, 60, 120)
    assert begin[chosen].tolist() == [500]
    # Across strands 100 shared bases are allowed (up to 120), 200 are not, and one gene never lies
    # inside another: a coding stretch is one gene, not a gene and its antisense shadow.
    chosen = select_genes(begin, end, score, np.array([0, 1, 1, 1]), sums, 60, 120)
    assert begin[chosen].tolist() == [0, 500]
    chosen = select_genes(np.array([0, 400]), np.array([600, 900]), np.array([100.0, 150.0]), np.array([0, 1]),
                          sums, 60, 120)
    assert chosen.tolist() == [1]
    # A short candidate straddling two genes within the allowance gains only what it adds:
    # its overlaps' log-odds are already counted by the genes.
    coding = np.zeros(2000)
    coding[0:600] = coding[640:1200] = 1.0
    sums[0] = np.concatenate(([0.0], np.cumsum(coding)))
    begin, end = np.array([0, 640, 550]), np.array([600, 1200, 690])
    chosen = select_genes(begin, end, sums[0][end] - sums[0][begin], np.zeros(3, dtype=np.int64), sums, 60, 120)
    assert begin[chosen].tolist() == [0, 640]


# --------------------------------------------------------------------------- eukaryote

def spliced_gene(rng, cds: str, cuts: list[int], intron_lengths: list[int], donor="GT"):
    """Insert introns (donor..AG) into ``cds`` after the given CDS offsets; returns gene and CDS pieces (gene offsets)."""
    gene, pieces, done, position = "", [], 0, 0
    for cut, length in zip(cuts, intron_lengths):
        gene += cds[done:cut]
        pieces.append((position, position + cut - done))
        position += cut - done
        gene += donor + random_dna(rng, length - 4) + "AG"
        position += length
        done = cut
    gene += cds[done:]
    pieces.append((position, position + len(cds) - done))
    return gene, pieces


def test_eukaryote_two_exon_genes_with_phases_and_utrs_on_both_strands():
    rng = np.random.default_rng(3)
    length = 5000
    seq = list(random_dna(rng, length))
    labels = np.zeros((2, length), dtype=np.int64)
    # + strand: exon 1 is 100 bases (phase 2 next), GT..AG intron of 204 bases, 5' and 3' UTRs.
    plus_gene, plus_pieces = spliced_gene(rng, "ATG" + codons(rng, 80) + "TAG", [100], [204])
    g = 1000
    seq[g : g + len(plus_gene)] = plus_gene
    plus_cds = [(g + s, g + e) for s, e in plus_pieces]
    paint(labels, 0, UTR5, g - 50, g)
    paint(labels, 0, INTRON, plus_cds[0][1], plus_cds[1][0])
    for s, e in plus_cds:
        paint(labels, 0, CDS, s, e)
    paint(labels, 0, UTR3, plus_cds[-1][1], plus_cds[-1][1] + 80)
    # - strand: three exons (50 and 92 bases first: phases 0, 1, 2), a GC donor, no UTRs.
    minus_gene, minus_pieces = spliced_gene(rng, "ATG" + codons(rng, 90) + "TGA", [50, 142], [104, 60], donor="GC")
    h = 3000
    seq[h : h + len(minus_gene)] = revcomp(minus_gene)
    n = len(minus_gene)
    minus_cds = sorted((h + n - e, h + n - s) for s, e in minus_pieces)
    paint(labels, 1, INTRON, minus_cds[0][0], minus_cds[-1][1])
    for s, e in minus_cds:
        paint(labels, 1, CDS, s, e)
    seq = "".join(seq)

    table = call_genes_eukaryote(seq, probabilities(labels, rng), "chr")
    check_hierarchy(table)
    assert cds_rows(table, "+") == plus_cds
    assert cds_rows(table, "-") == minus_cds
    plus = table[table["strand"] == "+"]
    assert plus.loc[plus["type"] == "CDS", "phase"].tolist() == [0, 2]
    assert plus.loc[plus["type"] == "five_prime_UTR", ["start", "end"]].values.tolist() == [[g - 50, g]]
    assert plus.loc[plus["type"] == "three_prime_UTR", ["start", "end"]].values.tolist() == [
        [plus_cds[-1][1], plus_cds[-1][1] + 80]]
    assert plus.loc[plus["type"] == "exon", ["start", "end"]].values.tolist() == [
        [g - 50, plus_cds[0][1]], [plus_cds[1][0], plus_cds[1][1] + 80]]
    assert plus.loc[plus["type"] == "gene", ["start", "end"]].values.tolist() == [[g - 50, plus_cds[-1][1] + 80]]
    minus = table[table["strand"] == "-"]
    # Listed by position, i.e. right to left along the - strand transcript.
    assert minus.loc[minus["type"] == "CDS", "phase"].tolist() == [2, 1, 0]
    assert minus.loc[minus["type"] == "CDS", "id"].tolist() == ["chr.g2.t1.cds3", "chr.g2.t1.cds2", "chr.g2.t1.cds1"]


@pytest.mark.parametrize("exon2_start, allowed", [("AA", False), ("AC", True)])
def test_eukaryote_refuses_an_intron_that_splices_a_stop_codon(exon2_start, allowed):
    rng = np.random.default_rng(4)
    # Exon 1 ends one base into a codon with T; spliced to exon 2's first two bases, T|AA is a stop
    # (the model's probabilities alone would accept it), T|AC is not.
    first = "ATG" + codons(rng, 30) + "T"
    second = exon2_start + codons(rng, 40) + "TAG"
    intron = "GT" + random_dna(rng, 96) + "AG"
    seq = random_dna(rng, 300) + first + intron + second + random_dna(rng, 300)
    labels = np.zeros((2, len(seq)), dtype=np.int64)
    a = 300 + len(first)
    paint(labels, 0, CDS, 300, a)
    paint(labels, 0, INTRON, a, a + len(intron))
    paint(labels, 0, CDS, a + len(intron), a + len(intron) + len(second))
    table = call_genes_eukaryote(seq, probabilities(labels, rng, noise=0.1), "chr")
    introns = [(e1, s2) for (_, e1), (s2, _) in zip(cds_rows(table), cds_rows(table)[1:])]
    assert ((a, a + len(intron)) in introns) == allowed


def translate_ok(seq: str, pieces: list[tuple[int, int]], strand: str, *, min_exon: int, min_intron: int) -> None:
    """Assert a decoded CDS is a valid gene model: ATG..stop, whole codons, no internal stop, GT/GC..AG introns."""
    spliced = "".join(seq[s:e] for s, e in pieces)
    introns = [seq[e:s] for (_, e), (s, _) in zip(pieces, pieces[1:])]
    if strand == "-":
        spliced = revcomp(spliced)
        introns = [revcomp(intron) for intron in introns]
    assert spliced.startswith("ATG") and spliced[-3:] in STOPS and len(spliced) % 3 == 0
    assert not any(spliced[i : i + 3] in STOPS for i in range(0, len(spliced) - 3, 3))
    assert all(e - s >= min_exon for s, e in pieces)
    assert all(len(intron) >= min_intron and intron[:2] in ("GT", "GC") and intron[-2:] == "AG" for intron in introns)


def test_eukaryote_calls_are_valid_gene_models_on_noisy_landscapes():
    rng = np.random.default_rng(5)
    length = 60_000
    seq = random_dna(rng, length)
    # Blocks of random lengths whose most likely class is random: many candidate structures.
    labels = np.zeros((2, length), dtype=np.int64)
    for row in range(2):
        edges = np.cumsum(rng.integers(20, 400, size=length // 20))
        edges = np.concatenate(([0], edges[edges < length], [length]))
        for s, e in zip(edges[:-1], edges[1:]):
            labels[row, s:e] = rng.choice([0, CDS, CDS, INTRON, UTR5, UTR3])
    table = call_genes_eukaryote(seq, probabilities(labels, rng, noise=0.4), "chr", min_exon=3, min_intron=20)
    check_hierarchy(table)
    cds = table[table["type"] == "CDS"]
    assert cds["parent"].nunique() > 5
    for (_, strand), rows in cds.groupby(["parent", "strand"]):
        pieces = sorted(zip(rows["start"], rows["end"]))
        translate_ok(seq, pieces, strand, min_exon=3, min_intron=20)
        phases = rows.sort_values("start", ascending=strand == "+")["phase"].tolist()
        lengths = [e - s for s, e in (pieces if strand == "+" else pieces[::-1])]
        assert phases == [(3 - sum(lengths[:k]) % 3) % 3 for k in range(len(lengths))]


# --------------------------------------------------------------------------- segments and dispatch

def test_segments_merge_short_runs_and_respect_class_minimums():
    length = 1000
    probs = np.zeros((3, length), dtype=np.float32)
    probs[0] = 1.0
    probs[:, 200:600] = [[0.1], [0.8], [0.1]]  # class 1 ...
    probs[:, 300:303] = [[0.6], [0.4], [0.0]]  # ... with a 3-base background gap
    probs[:, 400:402] = [[0.1], [0.3], [0.6]]  # ... and a 2-base class-2 blip
    probs[:, 800:805] = [[0.2], [0.0], [0.8]]  # a 5-base class-2 run on its own
    assert len(call_segments(probs)) == 5  # raw arg-max runs
    segments = call_segments(probs, {0: 10, 1: 50, 2: 4})
    assert [(c, s, e) for c, s, e, _ in segments] == [(1, 200, 600), (2, 800, 805)]
    assert segments[0][3] == pytest.approx((0.8 * 395 + 0.4 * 3 + 0.3 * 2) / 400, rel=1e-5)
    assert [(c, s, e) for c, s, e, _ in call_segments(probs, 10)] == [(1, 200, 600)]
    # Smoothing over 9 bases alone removes the gap, the blip and the 5-base run (edges may move a little).
    smoothed = call_segments(probs, 1, window=9)
    assert [c for c, *_ in smoothed] == [1]
    assert abs(smoothed[0][1] - 200) <= 2 and abs(smoothed[0][2] - 600) <= 2


def test_decode_record_regions_stranded_and_unstranded():
    scheme = LabelScheme.from_names(["promoter", "enhancer"])
    rng = np.random.default_rng(6)
    labels = np.zeros((2, 2000), dtype=np.int64)
    paint(labels, 0, 1, 100, 400)
    paint(labels, 1, 2, 1000, 1500)
    probs = probabilities(labels, rng, n_classes=3, noise=0.3)
    table = decode_record(random_dna(rng, 2000), probs, "chr", scheme, min_length={"promoter": 50, "enhancer": 50},
                          window=5)
    assert table[["type", "strand", "start", "end"]].values.tolist() == [
        ["promoter", "+", 100, 400], ["enhancer", "-", 1000, 1500]]
    assert table["id"].tolist() == ["chr.r1", "chr.r2"]
    both = probabilities(np.stack([labels[0], labels[0]]), rng, n_classes=3, noise=0.3)
    table = decode_record("A" * 2000, both, "chr", scheme, min_length=50, window=5, stranded=False)
    assert table[["type", "strand", "start", "end"]].values.tolist() == [["promoter", ".", 100, 400]]
    with pytest.raises(ConfigError):
        decode_record("A" * 2000, probs, "chr", scheme, min_length={"silencer": 5})


def test_decode_record_gene_structure_adds_ncrna_and_checks_inputs():
    rng = np.random.default_rng(7)
    seq, labels, plus, minus = planted_prokaryote(rng)
    paint(labels, 1, NCRNA, 2500, 2576)  # a tRNA-sized ncRNA on the - strand
    scheme = LabelScheme.gene_structure()
    probs = sharp(labels, rng)
    table = decode_record(seq, probs, "chr", scheme, "prokaryote", min_cds_length=90)
    check_hierarchy(table)
    assert cds_rows(table) == plus + minus
    ncrna = table[table["type"] == "ncRNA"]
    assert ncrna[["start", "end", "strand"]].values.tolist() == [[2500, 2576, "-"]]
    assert table.loc[table["parent"] == ncrna["id"].iloc[0], "type"].tolist() == ["exon"]
    eukaryote = decode_record(seq, probs, "chr", scheme, "eukaryote")
    assert cds_rows(eukaryote) == plus + minus
    with pytest.raises(ConfigError):
        decode_record(seq, probs, "chr", scheme, "archaeon")
    with pytest.raises(ConfigError):
        decode_record(seq, probs[:, :5], "chr", scheme)
    with pytest.raises(ValueError):
        call_genes_prokaryote(seq[:-1], probs, "chr")
    empty = call_genes_eukaryote("ACGT" * 50, np.full((2, 6, 200), 1 / 6, np.float32), "chr")
    assert len(empty) == 0 and tuple(empty.columns) == ANNOTATION_COLUMNS


def test_decoders_handle_a_megabase():
    rng = np.random.default_rng(8)
    length = 1_000_000
    seq = random_dna(rng, length)
    labels = np.zeros((2, length), dtype=np.int64)
    for s in range(1000, length - 5000, 5000):
        labels[0, s : s + 1500] = CDS
        labels[0, s + 600 : s + 800] = INTRON
    probs = probabilities(labels, rng, noise=0.3)
    # Random DNA rarely holds the painted structures; this is about running through, not accuracy
    # (without a gene cost: this landscape is far less confident than a trained tagger's).
    painted = labels[0] > 0
    for decode, options in ((call_genes_prokaryote, {"gene_cost": 0.0}), (call_genes_eukaryote, {})):
        table = decode(seq, probs, "chr", **options)
        cds = table[table["type"] == "CDS"]
        assert table["end"].max() <= length
        # Calls follow the paint; the prokaryote decoder shares coding evidence between strands and
        # random DNA gives its ORFs no strand to prefer, so only the eukaryote's must be on +.
        inside = sum(painted[start:end].sum() for start, end in zip(cds["start"], cds["end"]))
        assert inside > 0.9 * (cds["end"] - cds["start"]).sum()
    assert table["strand"].eq("+").mean() > 0.9


# --------------------------------------------------------------------------- real data

def read_fasta_prefix(path: Path, name: str | None, length: int | None) -> tuple[str, str]:
    with gzip.open(path, "rt") as handle:
        records, current = {}, None
        for line in handle:
            if line.startswith(">"):
                current = line[1:].split()[0]
                records[current] = []
            else:
                records[current].append(line.strip())
    name = name or next(iter(records))
    sequence = "".join(records[name])
    return name, sequence[:length] if length else sequence


def perfect_probabilities(labels: np.ndarray, n_classes: int = 6) -> np.ndarray:
    probs = np.zeros((2, n_classes, labels.shape[1]), dtype=np.float32)
    for row in range(2):
        probs[row, labels[row], np.arange(labels.shape[1])] = 1.0
    return probs


def test_ecoli_first_50kb_stops_recovered_from_painted_probabilities():
    name, seq = read_fasta_prefix(ECOLI_FASTA, None, 50_000)
    annotation = read_annotation(ECOLI_GFF)
    scheme = LabelScheme.gene_structure()
    probs = perfect_probabilities(label_track(annotation, name, 0, len(seq), scheme).astype(np.int64))
    table = decode_record(seq, probs, name, scheme, "prokaryote")
    check_hierarchy(table)
    reference = annotation[(annotation["type"] == "CDS") & (annotation["seqid"] == name)
                           & (annotation["end"] <= len(seq)) & (annotation["end"] - annotation["start"] >= 90)]
    reference = reference[[attrs.get("pseudo") != "true" for attrs in reference["attributes"]]]
    stop = lambda rows: set(zip(rows["strand"], np.where(rows["strand"] == "+", rows["end"], rows["start"])))
    predicted = stop(table[table["type"] == "CDS"])
    wanted = stop(reference)
    assert len(wanted) > 40
    assert len(wanted & predicted) / len(wanted) >= 0.95
    assert len(wanted & predicted) / len(predicted) >= 0.9


def test_athaliana_chr1_gene_structures_recovered_from_painted_probabilities():
    name, seq = read_fasta_prefix(ATHALIANA_FASTA, "Chr1", None)
    annotation = read_annotation(ATHALIANA_GFF)
    scheme = LabelScheme.gene_structure()
    probs = perfect_probabilities(label_track(annotation, name, 0, len(seq), scheme).astype(np.int64))
    table = decode_record(seq, probs, name, scheme, "eukaryote")
    check_hierarchy(table)
    cds = annotation[(annotation["type"] == "CDS") & (annotation["seqid"] == name)]
    transcript = cds["parent"].str.split(",").str[0]
    chains = {}
    for key, rows in cds.assign(transcript=transcript).groupby("transcript"):
        chains[key] = (rows["strand"].iloc[0], tuple(sorted(zip(rows["start"], rows["end"]))))
    genes = {}
    for key, chain in chains.items():
        genes.setdefault(key.split(".")[0], set()).add(chain)
    predicted = {}
    calls = table[table["type"] == "CDS"]
    for key, rows in calls.groupby("parent"):
        predicted[key] = (rows["strand"].iloc[0], tuple(sorted(zip(rows["start"], rows["end"]))))
    found = sum(bool(chains_of_gene & set(predicted.values())) for chains_of_gene in genes.values())
    assert len(genes) > 50
    # Isoforms are painted together (the CDS of one wins over the intron of another), so a few
    # genes have no single isoform matching the union; the rest must come back exactly.
    assert found / len(genes) >= 0.85
    for strand, pieces in predicted.values():
        translate_ok(seq, list(pieces), strand, min_exon=3, min_intron=20)
