"""Per-base labels checked against hand-read lines of the real annotations, across formats."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from Bio import SeqIO
from Bio.Seq import Seq
from Bio.SeqFeature import FeatureLocation, SeqFeature
from Bio.SeqRecord import SeqRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genoformer.errors import ConfigError, RegionError
from genoformer.genome.annotation import read_annotation
from genoformer.genome.labels import LabelIndex, LabelScheme, label_track

from .conftest import ATHALIANA_GFF, CELEGANS_GFF, ECOLI_GENBANK_SLICES, ECOLI_GFF, read_ecoli_genbank


ECOLI = "NC_000913.3"
SCHEME = LabelScheme.gene_structure()
INTERGENIC, UTR5, CDS, INTRON, UTR3, NCRNA = range(6)
assert SCHEME.classes == ("intergenic", "five_prime_UTR", "CDS", "intron", "three_prime_UTR", "ncRNA")


@pytest.fixture(scope="module")
def ecoli_gff_index() -> LabelIndex:
    return LabelIndex(read_annotation(ECOLI_GFF), SCHEME)


@pytest.fixture(scope="module")
def ecoli_gbff_index() -> LabelIndex:
    """Labels from the GenBank slices (see conftest), at genome coordinates."""
    return LabelIndex(read_ecoli_genbank(), SCHEME)


@pytest.fixture(scope="module")
def thaliana() -> pd.DataFrame:
    return read_annotation(ATHALIANA_GFF)


@pytest.fixture(scope="module")
def elegans() -> LabelIndex:
    return LabelIndex(read_annotation(CELEGANS_GFF), SCHEME)


def one_based(track: np.ndarray, window_start: int, first: int, last: int, row: int) -> np.ndarray:
    """Labels of 1-based closed positions first..last (as the GFF lines read) on one strand row."""
    return track[row, first - 1 - window_start:last - window_start]


# --------------------------------------------------------------------------- E. coli

def test_ecoli_first_genes(ecoli_gff_index):
    track = ecoli_gff_index.track(ECOLI, 0, 7000)
    assert track.shape == (2, 7000) and track.dtype == np.int8
    # thrL CDS 190..255 +: 0-based [189, 255) is CDS on row 0; bases 188 and 255 are not
    assert (track[0, 189:255] == CDS).all() and track[0, 188] == INTERGENIC and track[0, 255] == INTERGENIC
    assert (track[1, 150:300] == INTERGENIC).all()
    assert (one_based(track, 0, 337, 2799, 0) == CDS).all()  # thrA 337..2799 +
    assert track[0, 2799] == INTERGENIC and track[0, 2800] == CDS  # thrB starts at 2801
    # yaaA 5683..6459 -: row 1 is CDS, row 0 intergenic there
    assert (one_based(track, 0, 5683, 6459, 1) == CDS).all() and track[1, 5681] == INTERGENIC
    assert (one_based(track, 0, 5683, 6459, 0) == INTERGENIC).all()


def test_ecoli_genbank_gives_the_same_labels(ecoli_gff_index, ecoli_gbff_index):
    first = ecoli_gff_index.track(ECOLI, 0, 20_000)
    assert np.array_equal(first, ecoli_gbff_index.track(ECOLI, 0, 20_000))
    assert set(np.unique(first)) == {INTERGENIC, CDS, NCRNA}  # sokC ncRNA at 16952..17010
    for _, start, end in ECOLI_GENBANK_SLICES:  # each slice ends between genes: no feature was cut
        assert np.array_equal(ecoli_gff_index.track(ECOLI, start, end), ecoli_gbff_index.track(ECOLI, start, end))
    # prfB: complement(join(3035184..3036206,3036208..3036282)) skips base 3036207 (frameshift):
    # the gap between the CDS parts of a gene listed without exons is an intron, from both files
    prfb = ecoli_gbff_index.track(ECOLI, 3035000, 3036400)
    assert one_based(prfb, 3035000, 3036207, 3036207, 1).tolist() == [INTRON]
    assert (one_based(prfb, 3035000, 3035184, 3036206, 1) == CDS).all()
    assert (one_based(prfb, 3035000, 3036208, 3036282, 1) == CDS).all()
    # the crl pseudogene (join of two CDS parts with pseudo=true, GFF3 lines 520-521) stays intergenic
    crl = ecoli_gbff_index.track(ECOLI, 257828, 259006)
    assert (crl[0] == INTERGENIC).all()
    # tRNA ileV 225381..225457 + (tRNA -> exon lines 438-439) is non-coding RNA
    trna = ecoli_gff_index.track(ECOLI, 225300, 225500)
    assert (one_based(trna, 225300, 225381, 225457, 0) == NCRNA).all() and trna[0, 79] == INTERGENIC


# --------------------------------------------------------------------------- A. thaliana, C. elegans

def test_thaliana_plus_strand_gene_with_utrs(thaliana):
    track = label_track(thaliana, "Chr1", 3000, 9000, SCHEME)
    expected = [  # AT1G01010.1, lines 1-17
        (3631, 3759, UTR5), (3760, 3913, CDS), (3914, 3995, INTRON), (3996, 4276, CDS), (4277, 4485, INTRON),
        (4486, 4605, CDS), (4606, 4705, INTRON), (4706, 5095, CDS), (5096, 5173, INTRON), (5174, 5326, CDS),
        (5327, 5438, INTRON), (5439, 5630, CDS), (5631, 5899, UTR3),
    ]
    for first, last, label in expected:
        assert (one_based(track, 3000, first, last, 0) == label).all(), (first, last)
    assert track[0, 3629 - 3000] == INTERGENIC and track[0, 5899 - 3000] == INTERGENIC
    # RNASeq_splice evidence introns (e.g. "Chr1 RNASeq_splice intron 3912 3993 . -") label nothing
    assert (one_based(track, 3000, 3001, 5927, 1) == INTERGENIC).all()


def test_thaliana_minus_strand_gene_and_isoform_priority(thaliana):
    track = label_track(thaliana, "Chr1", 3000, 9000, SCHEME)
    expected = [  # AT1G01020 isoforms .1 and .2 (lines 18-60), - strand: 5' UTR at the high end
        (8667, 8737, UTR5), (8571, 8666, CDS), (8465, 8570, INTRON), (8417, 8464, CDS),
        (7942, 7987, CDS), (7451, 7563, INTRON),
        (7384, 7450, CDS),  # CDS of both isoforms
        (7315, 7383, CDS),  # .2's CDS 7315..7450 over .1's intron 7233..7383: CDS wins
        (7233, 7314, UTR3),  # .2's 3' UTR 7157..7314 over .1's intron: UTR wins
        (7157, 7232, CDS),  # .1's CDS over .2's 3' UTR
        (7070, 7156, INTRON), (6915, 7069, CDS), (6437, 6914, UTR3), (6264, 6436, INTRON), (5928, 6263, UTR3),
    ]
    for first, last, label in expected:
        assert (one_based(track, 3000, first, last, 1) == label).all(), (first, last)
    assert track[1, 5927 - 3000 - 1] == INTERGENIC and track[1, 8737 - 3000] == INTERGENIC
    assert (one_based(track, 3000, 5928, 8737, 0) == INTERGENIC).all()


def test_elegans_minus_strand_gene_ncrna_and_evidence_rows(elegans):
    track = elegans.track("I", 2000, 12000)
    expected = [  # Y74C9A.3.1, - strand
        (4116, 4220, UTR3), (4221, 4358, CDS), (4359, 5194, INTRON), (5195, 5296, CDS), (5297, 6036, INTRON),
        (6037, 6327, CDS), (6328, 9726, INTRON), (9727, 9846, CDS), (9847, 10094, INTRON), (10095, 10148, CDS),
        (10149, 10230, UTR5),
        (3747, 3909, NCRNA),  # snoRNA Y74C9A.6 (snoRNA -> exon)
    ]
    for first, last, label in expected:
        assert (one_based(track, 2000, first, last, 1) == label).all(), (first, last)
    # + strand: RNASeq_splice intron 2064..3664 and transposable element 4423..4750 are not gene models
    assert (one_based(track, 2000, 2001, 11494, 0) == INTERGENIC).all()
    # Y74C9A.2a (+): 5' UTR 11495..11561, intron 11562..11617 of isoforms .1/.3, UTR, then a CDS shared by 3 isoforms
    for first, last, label in [(11495, 11561, UTR5), (11562, 11617, INTRON), (11618, 11640, UTR5),
                               (11641, 11689, CDS)]:
        assert (one_based(track, 2000, first, last, 0) == label).all(), (first, last)


# --------------------------------------------------------------------------- the same genes in other formats

THALIANA_GFF3 = """\
##gff-version 3
Chr1\tTAIR10\tgene\t3631\t5899\t.\t+\t.\tID=AT1G01010
Chr1\tTAIR10\tmRNA\t3631\t5899\t.\t+\t.\tID=AT1G01010.1;Parent=AT1G01010
Chr1\tTAIR10\texon\t3631\t3913\t.\t+\t.\tParent=AT1G01010.1
Chr1\tTAIR10\tfive_prime_UTR\t3631\t3759\t.\t+\t.\tParent=AT1G01010.1
Chr1\tTAIR10\tCDS\t3760\t3913\t.\t+\t0\tParent=AT1G01010.1
Chr1\tTAIR10\texon\t3996\t4276\t.\t+\t.\tParent=AT1G01010.1
Chr1\tTAIR10\tCDS\t3996\t4276\t.\t+\t2\tParent=AT1G01010.1
Chr1\tTAIR10\texon\t4486\t4605\t.\t+\t.\tParent=AT1G01010.1
Chr1\tTAIR10\tCDS\t4486\t4605\t.\t+\t0\tParent=AT1G01010.1
Chr1\tTAIR10\texon\t4706\t5095\t.\t+\t.\tParent=AT1G01010.1
Chr1\tTAIR10\tCDS\t4706\t5095\t.\t+\t0\tParent=AT1G01010.1
Chr1\tTAIR10\texon\t5174\t5326\t.\t+\t.\tParent=AT1G01010.1
Chr1\tTAIR10\tCDS\t5174\t5326\t.\t+\t0\tParent=AT1G01010.1
Chr1\tTAIR10\texon\t5439\t5899\t.\t+\t.\tParent=AT1G01010.1
Chr1\tTAIR10\tCDS\t5439\t5630\t.\t+\t0\tParent=AT1G01010.1
Chr1\tTAIR10\tthree_prime_UTR\t5631\t5899\t.\t+\t.\tParent=AT1G01010.1
Chr1\tTAIR10\tgene\t6000\t6100\t.\t+\t.\tID=AT1G0tRNA
Chr1\tTAIR10\ttRNA\t6000\t6100\t.\t+\t.\tID=AT1G0tRNA.1;Parent=AT1G0tRNA
Chr1\tTAIR10\texon\t6000\t6030\t.\t+\t.\tParent=AT1G0tRNA.1
Chr1\tTAIR10\texon\t6071\t6100\t.\t+\t.\tParent=AT1G0tRNA.1
"""

# the same models as GTF: Ensembl spellings, CDS without the stop codon, a tRNA by transcript_biotype
THALIANA_GTF = """\
Chr1\tT\tgene\t3631\t5899\t.\t+\t.\tgene_id "AT1G01010";
Chr1\tT\ttranscript\t3631\t5899\t.\t+\t.\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\texon\t3631\t3913\t.\t+\t.\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\tfive_prime_utr\t3631\t3759\t.\t+\t.\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\tCDS\t3760\t3913\t.\t+\t0\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\tstart_codon\t3760\t3762\t.\t+\t0\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\texon\t3996\t4276\t.\t+\t.\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\tCDS\t3996\t4276\t.\t+\t2\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\texon\t4486\t4605\t.\t+\t.\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\tCDS\t4486\t4605\t.\t+\t0\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\texon\t4706\t5095\t.\t+\t.\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\tCDS\t4706\t5095\t.\t+\t0\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\texon\t5174\t5326\t.\t+\t.\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\tCDS\t5174\t5326\t.\t+\t0\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\texon\t5439\t5899\t.\t+\t.\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\tCDS\t5439\t5627\t.\t+\t0\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\tstop_codon\t5628\t5630\t.\t+\t0\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\tthree_prime_utr\t5631\t5899\t.\t+\t.\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";
Chr1\tT\texon\t6000\t6030\t.\t+\t.\tgene_id "g"; transcript_id "t"; transcript_biotype "tRNA";
Chr1\tT\texon\t6071\t6100\t.\t+\t.\tgene_id "g"; transcript_id "t"; transcript_biotype "tRNA";
"""

# and as BED12: no UTR lines, so UTRs are derived from the exons outside thickStart..thickEnd
THALIANA_BED12 = (
    "Chr1\t3630\t5899\tAT1G01010.1\t0\t+\t3759\t5630\t0\t6\t283,281,120,390,153,461,\t0,365,855,1075,1543,1808,\n"
    "Chr1\t5999\t6100\ttRNA\t0\t+\t5999\t5999\t0\t2\t31,30,\t0,71,\n"
)


def test_gff3_gtf_bed12_and_genbank_give_identical_tracks(tmp_path, thaliana):
    tracks = {}
    for name, text in (("g.gff3", THALIANA_GFF3), ("g.gtf", THALIANA_GTF), ("g.bed", THALIANA_BED12)):
        (tmp_path / name).write_text(text)
        tracks[name] = label_track(read_annotation(tmp_path / name), "Chr1", 3000, 7000, SCHEME)
    # GenBank: gene, mRNA join(exons), CDS join(coding parts); UTRs derive from mRNA exons outside the CDS
    exons = [(3630, 3913), (3995, 4276), (4485, 4605), (4705, 5095), (5173, 5326), (5438, 5899)]
    coding = [(3759, 3913), *exons[1:5], (5438, 5630)]
    record = SeqRecord(Seq("A" * 7000), id="Chr1", annotations={"molecule_type": "DNA"})
    join = lambda parts: sum((FeatureLocation(s, e, 1) for s, e in parts[1:]), FeatureLocation(*parts[0], 1))
    tag = {"locus_tag": ["AT1G01010"]}
    record.features = [SeqFeature(FeatureLocation(3630, 5899, 1), type="gene", qualifiers=tag),
                       SeqFeature(join(exons), type="mRNA", qualifiers=tag),
                       SeqFeature(join(coding), type="CDS", qualifiers=tag),
                       SeqFeature(FeatureLocation(5999, 6100, 1), type="gene", qualifiers={"locus_tag": ["R"]}),
                       SeqFeature(join([(5999, 6030), (6070, 6100)]), type="tRNA", qualifiers={"locus_tag": ["R"]})]
    SeqIO.write(record, tmp_path / "g.gbk", "genbank")
    tracks["g.gbk"] = label_track(read_annotation(tmp_path / "g.gbk"), "Chr1", 3000, 7000, SCHEME)

    reference = label_track(thaliana, "Chr1", 3000, 7000, SCHEME)
    gff3 = tracks["g.gff3"]
    assert np.array_equal(gff3[:, :5899 - 3000], reference[:, :5899 - 3000])  # AT1G01010 as in the real file
    assert (one_based(gff3, 3000, 6000, 6030, 0) == NCRNA).all() and (one_based(gff3, 3000, 6031, 6070, 0) == INTRON).all()
    for name, track in tracks.items():
        assert np.array_equal(track, gff3), name


def test_generic_utr_rows_take_their_side_from_strand(tmp_path):
    gtf = tmp_path / "utr.gtf"
    gtf.write_text("".join(
        f'c\tT\t{kind}\t{first}\t{last}\t.\t-\t.\tgene_id "g"; transcript_id "t";\n'
        for kind, first, last in [("exon", 1, 30), ("exon", 51, 80), ("UTR", 1, 10), ("CDS", 11, 30),
                                  ("CDS", 51, 60), ("UTR", 61, 80)]))
    track = label_track(read_annotation(gtf), "c", 0, 80, SCHEME)
    assert track[1].tolist() == [UTR3] * 10 + [CDS] * 20 + [INTRON] * 20 + [CDS] * 10 + [UTR5] * 20
    assert (track[0] == INTERGENIC).all()


# --------------------------------------------------------------------------- regions, schemes, API

def test_bed_name_classes_with_later_classes_winning(tmp_path):
    bed = tmp_path / "marks.bed"
    bed.write_text("c1\t0\t50\tpromoter\t0\t+\nc1\t40\t60\tenhancer\t0\t.\nc1\t70\t80\tCTCF\t0\t-\n"
                   "c1\t90\t95\tunlisted\t0\t+\n")
    table = read_annotation(bed)
    scheme = LabelScheme.from_names(["promoter", "enhancer", "insulator"], mapping={
        "promoter": "promoter", "enhancer": "enhancer", "CTCF": "insulator"})
    assert scheme.classes == ("background", "promoter", "enhancer", "insulator") and scheme.kind == "regions"
    track = label_track(table, "c1", 0, 100, scheme)
    assert track[0].tolist() == [1] * 40 + [2] * 20 + [0] * 40  # enhancer, later in the list, wins 40..50
    assert track[1].tolist() == [0] * 40 + [2] * 20 + [0] * 10 + [3] * 10 + [0] * 20  # '.' paints both rows
    reversed_order = LabelScheme.from_names(["enhancer", "promoter"])
    assert label_track(table, "c1", 0, 100, reversed_order)[0, 40:50].tolist() == [2] * 10


def test_gff_feature_types_as_classes():
    table = read_annotation(CELEGANS_GFF)
    scheme = LabelScheme.from_names(["transposable_element"])
    track = label_track(table, "I", 4000, 5000, scheme)
    assert (one_based(track, 4000, 4423, 4750, 0) == 1).all() and track[0, 4422 - 4000 - 1] == 0
    assert (track[1] == 0).all()


def test_scheme_round_trip_and_validation():
    for scheme in (SCHEME, LabelScheme.gene_structure(ncrna=False), LabelScheme.from_names(["a", "b"])):
        restored = LabelScheme.from_dict(json.loads(json.dumps(scheme.to_dict())))
        assert restored == scheme and hash(restored) == hash(scheme)
    assert LabelScheme.gene_structure(ncrna=False).n_classes == 5 and SCHEME.n_classes == 6
    assert SCHEME.type_classes["stop_codon"] == "CDS" and SCHEME.type_classes["snoRNA"] == "ncRNA"
    assert LabelScheme(("intergenic", "CDS"), "gene_structure").type_classes == {"CDS": "CDS", "stop_codon": "CDS"}
    bad = [
        dict(classes=("intergenic", "CDS"), kind="genes"),
        dict(classes=("CDS", "intergenic"), kind="gene_structure"),
        dict(classes=("intergenic", "exon"), kind="gene_structure"),
        dict(classes=("background",), kind="regions"),
        dict(classes=("background", "a", "a"), kind="regions"),
        dict(classes=("background", "a"), kind="regions", mapping={"x": "b"}),
    ]
    for arguments in bad:
        with pytest.raises(ConfigError):
            LabelScheme(**arguments)
    for data in ({"classes": ["background", "a"]}, {"classes": "ab", "kind": "regions"},
                 {"classes": ["background", "a"], "kind": "regions", "colour": 1}, ["background"]):
        with pytest.raises(ConfigError):
            LabelScheme.from_dict(data)
    with pytest.raises(ConfigError, match="implicit class 0"):
        LabelScheme.from_names(["background", "a"])


def test_without_ncrna_class_rnas_are_intergenic(ecoli_gff_index):
    table = read_annotation(ECOLI_GFF)
    scheme = LabelScheme.gene_structure(ncrna=False)
    track = label_track(table, ECOLI, 225300, 225500, scheme)
    assert (track == INTERGENIC).all()  # tRNA ileV
    cds_only = LabelScheme(("intergenic", "CDS"), "gene_structure")
    prfb = label_track(table, ECOLI, 3036200, 3036212, cds_only)
    assert prfb[1].tolist() == [1] * 6 + [0] + [1] * 5  # the 1-base gap: no intron class, so background


def test_windows_index_reuse_and_bad_windows(ecoli_gff_index):
    table = read_annotation(ECOLI_GFF)
    whole = ecoli_gff_index.track(ECOLI, 0, 30_000)
    for start, end in [(0, 1), (188, 190), (250, 5000), (29_000, 30_000), (1234, 1234)]:
        window = label_track(ecoli_gff_index, ECOLI, start, end)
        assert np.array_equal(window, whole[:, start:end])
        assert np.array_equal(window, label_track(table, ECOLI, start, end, SCHEME))
    assert (ecoli_gff_index.track("plasmid", 0, 100) == 0).all()  # a record without features
    assert (label_track(table, "plasmid", 0, 100, SCHEME) == 0).all()
    assert (ecoli_gff_index.track(ECOLI, 4_641_652, 4_700_000) == 0).all()  # beyond every feature
    assert ecoli_gff_index.names == [ECOLI]
    for start, end in [(-1, 10), (10, 5)]:
        with pytest.raises(RegionError):
            ecoli_gff_index.track(ECOLI, start, end)
    with pytest.raises(ValueError, match="scheme differs"):
        label_track(ecoli_gff_index, ECOLI, 0, 10, LabelScheme.gene_structure(ncrna=False))


# --------------------------------------------------------------------------- property: GFF3 round trip

@st.composite
def gene_models(draw):
    """Non-overlapping gene models on one record: (strand, exons, cds_first, cds_last, explicit_utr)."""
    genes, position = [], 0
    for _ in range(draw(st.integers(1, 4))):
        position += draw(st.integers(1, 30))
        n_exons = draw(st.integers(1, 4))
        exons = []
        for k in range(n_exons):
            if k:
                position += draw(st.integers(1, 15))  # intron
            length = draw(st.integers(1, 20))
            exons.append((position, position + length))
            position += length
        exonic = sum(e - s for s, e in exons)
        first = draw(st.integers(0, exonic - 1))
        last = draw(st.integers(first, exonic - 1))
        genes.append((draw(st.sampled_from("+-")), exons, first, last, draw(st.booleans())))
    return genes, position + draw(st.integers(0, 20))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gene_models())
def test_gff3_round_trip_matches_direct_painting(tmp_path, models):
    genes, length = models
    lines, expected = ["##gff-version 3"], np.zeros((2, length), dtype=np.int8)
    for g, (strand, exons, first, last, explicit_utr) in enumerate(genes):
        row = 0 if strand == "+" else 1
        lines += [f"r\tt\tgene\t{exons[0][0] + 1}\t{exons[-1][1]}\t.\t{strand}\t.\tID=g{g}",
                  f"r\tt\tmRNA\t{exons[0][0] + 1}\t{exons[-1][1]}\t.\t{strand}\t.\tID=t{g};Parent=g{g}"]
        positions = np.concatenate([np.arange(s, e) for s, e in exons])  # exonic bases in order
        cds_start, cds_end = positions[first], positions[last] + 1
        expected[row, exons[0][0]:exons[-1][1]] = INTRON
        left, right = (UTR5, UTR3) if strand == "+" else (UTR3, UTR5)
        expected[row, positions] = np.where(positions < cds_start, left, np.where(positions >= cds_end, right, CDS))
        for s, e in exons:
            lines.append(f"r\tt\texon\t{s + 1}\t{e}\t.\t{strand}\t.\tParent=t{g}")
            if max(s, cds_start) < min(e, cds_end):
                lines.append(f"r\tt\tCDS\t{max(s, cds_start) + 1}\t{min(e, cds_end)}\t.\t{strand}\t0\tParent=t{g}")
            if explicit_utr:
                for us, ue, label in ((s, min(e, cds_start), left), (max(s, cds_end), e, right)):
                    if us < ue:
                        kind = "five_prime_UTR" if label == UTR5 else "three_prime_UTR"
                        lines.append(f"r\tt\t{kind}\t{us + 1}\t{ue}\t.\t{strand}\t.\tParent=t{g}")
    path = tmp_path / "models.gff3"
    path.write_text("\n".join(lines) + "\n")
    assert np.array_equal(label_track(read_annotation(path), "r", 0, length, SCHEME), expected)
