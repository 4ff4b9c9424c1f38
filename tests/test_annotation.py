"""read_annotation on the real GFF3/GenBank files (hand-read lines), hand-made GTF/BED, and bad input."""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from Bio import SeqIO
from Bio.Seq import Seq
from Bio.SeqFeature import FeatureLocation, SeqFeature
from Bio.SeqRecord import SeqRecord

from genoformer.errors import AnnotationError
from genoformer.genome.annotation import detect_format, genbank_to_fasta, read_annotation
from genoformer.genome.annotation_table import ANNOTATION_COLUMNS, check_against_genome, make_annotation

from .conftest import (
    ATHALIANA_GFF, CELEGANS_GFF, ECOLI_GENBANK_SLICES, ECOLI_GFF, NO_SEQUENCE_GENBANK, read_genbank_slice,
)


@pytest.fixture(scope="module")
def ecoli_gff() -> pd.DataFrame:
    return read_annotation(ECOLI_GFF)


@pytest.fixture(scope="module")
def ecoli_gbff() -> list[tuple[pd.DataFrame, int, int]]:
    """Each GenBank slice's rows at genome coordinates, with the slice's first base and end."""
    return [(read_genbank_slice(path, first), first, end) for path, first, end in ECOLI_GENBANK_SLICES]


def rows(table: pd.DataFrame, **where) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        mask &= (table[column] == value).to_numpy()
    return table[mask]


# --------------------------------------------------------------------------- real files

def test_ecoli_gff3_columns_coordinates_and_lines(ecoli_gff):
    assert tuple(ecoli_gff.columns) == ANNOTATION_COLUMNS
    assert ecoli_gff.index.name == "line"
    assert ecoli_gff["start"].dtype == np.int64 and str(ecoli_gff["phase"].dtype) == "Int64"
    # line 10: NC_000913.3 RefSeq CDS 190 255 . + 0 ID=cds-NP_414542.1;Parent=gene-b0001;...;gene=thrL
    thrl = ecoli_gff.loc[10]
    assert (thrl.type, thrl.start, thrl.end, thrl.strand, thrl.phase) == ("CDS", 189, 255, "+", 0)
    assert (thrl.id, thrl.parent, thrl.gene_id, thrl.transcript_id) == (
        "cds-NP_414542.1", "gene-b0001", "gene-b0001", "cds-NP_414542.1")
    assert thrl.attributes["product"] == "thr operon leader peptide" and np.isnan(thrl.score)
    # line 19: gene 5683 6459 - (yaaA)
    yaaa = ecoli_gff.loc[19]
    assert (yaaa.type, yaaa.start, yaaa.end, yaaa.strand, yaaa["name"]) == ("gene", 5682, 6459, "-", "yaaA")
    assert yaaa.parent is None and yaaa.transcript_id is None and yaaa.gene_id == "gene-b0006"
    assert ecoli_gff["type"].value_counts()["CDS"] == 4337


def test_gff3_percent_decoding_and_discontinuous_cds(ecoli_gff):
    # lines 520-521: the crl pseudogene CDS, ID=cds-gnl|b0240|CDS%3D250, parts 257829..257899 and 258676..259006
    crl = ecoli_gff.loc[[520, 521]]
    assert list(crl["id"]) == ["cds-gnl|b0240|CDS=250"] * 2
    assert list(crl["phase"]) == [0, 1] and list(crl["start"]) == [257828, 258675]
    assert crl.iloc[0].attributes["orig_transcript_id"] == "gnl|b0240|mrna.CDS=250"
    assert crl.iloc[0].attributes["pseudo"] == "true"


def test_thaliana_multi_parent_rows():
    table = read_annotation(ATHALIANA_GFF)
    # line 6: Chr1 TAIR10 CDS 3760 3913 . + 0 Parent=AT1G01010.1,AT1G01010.1-Protein;
    cds = table.loc[6]
    assert (cds.seqid, cds.type, cds.start, cds.end, cds.phase) == ("Chr1", "CDS", 3759, 3913, 0)
    assert cds.parent == "AT1G01010.1,AT1G01010.1-Protein"
    assert (cds.transcript_id, cds.gene_id) == ("AT1G01010.1", "AT1G01010")
    mrna = table.loc[2]
    assert (mrna.type, mrna.id, mrna.transcript_id, mrna.gene_id) == ("mRNA", "AT1G01010.1", "AT1G01010.1", "AT1G01010")


def test_elegans_cds_shared_by_isoforms_and_escaped_notes():
    table = read_annotation(CELEGANS_GFF)
    # line 224: I WormBase CDS 11641 11689 . + 0 ID=CDS:Y74C9A.2a;Parent=Transcript:Y74C9A.2a.1,...2a.2,...2a.3
    cds = table.loc[224]
    assert cds.transcript_id == "Transcript:Y74C9A.2a.1,Transcript:Y74C9A.2a.2,Transcript:Y74C9A.2a.3"
    assert cds.gene_id == "Gene:WBGene00022276" and (cds.start, cds.end) == (11640, 11689)
    notes = rows(table, source="WormBase", type="intron")["attributes"].map(lambda a: a.get("Note", ""))
    assert notes.str.contains(" ; Confirmed_EST").any() and not notes.str.contains("%3B").any()


def test_genbank_matches_gff3(ecoli_gff, ecoli_gbff):
    """Slices of the same genome's GenBank file give the same feature rows as NCBI's GFF3 there."""
    for genbank, first, end in ecoli_gbff:
        assert tuple(genbank.columns) == ANNOTATION_COLUMNS
        # Biopython dropped the features crossing a slice's ends (the whole-genome source/region among them).
        gff3 = ecoli_gff[(ecoli_gff["start"] >= first) & (ecoli_gff["end"] <= end)]
        assert genbank["type"].value_counts().to_dict() == gff3["type"].value_counts().to_dict()
        for kind in ("CDS", "exon", "tRNA", "rRNA", "ncRNA", "gene", "pseudogene"):
            columns = ["start", "end", "strand", "phase"]
            gff = rows(gff3, type=kind)[columns].astype(str).value_counts()
            gbk = rows(genbank, type=kind)[columns].astype(str).value_counts()
            assert gff.sort_index().equals(gbk.sort_index()), kind
    head, prfb = ecoli_gbff[0][0], ecoli_gbff[1][0]
    assert set(head["type"]) >= {"CDS", "exon", "tRNA", "rRNA", "ncRNA", "gene", "pseudogene"}
    # line 17 of the first slice: CDS 190..255 (thrL), a child of gene b0001 (line 10)
    thrl = head.loc[17]
    assert (thrl.type, thrl.start, thrl.end, thrl.strand, thrl.phase) == ("CDS", 189, 255, "+", 0)
    assert thrl.parent == head.loc[10].id == "gene-b0001" and thrl.gene_id == "gene-b0001"
    # line 17 of the prfB slice: complement(join(4..1026,1028..1102)): one CDS row per part
    prfb = prfb.loc[[17]]
    assert sorted(zip(prfb.start, prfb.end)) == [(3035183, 3036206), (3036207, 3036282)]
    assert set(prfb.strand) == {"-"} and list(prfb.phase) == [0, 0]


def test_genbank_mrna_parents_cds_and_exons(tmp_path):
    """A eukaryotic-style record: the CDS hangs under the mRNA listed before it."""
    record = SeqRecord(Seq("ACGT" * 50), id="chrT", name="chrT", annotations={"molecule_type": "DNA"})
    join = FeatureLocation(10, 40, 1) + FeatureLocation(60, 100, 1)
    record.features = [
        SeqFeature(FeatureLocation(10, 100, 1), type="gene", qualifiers={"locus_tag": ["T1"], "gene": ["abc"]}),
        SeqFeature(join, type="mRNA", qualifiers={"locus_tag": ["T1"]}),
        SeqFeature(FeatureLocation(20, 40, 1) + FeatureLocation(60, 80, 1), type="CDS",
                   qualifiers={"locus_tag": ["T1"], "codon_start": ["2"], "protein_id": ["P1.1"]}),
    ]
    path = tmp_path / "t.gb"
    SeqIO.write(record, path, "genbank")
    table = read_annotation(path)
    mrna = rows(table, type="mRNA").iloc[0]
    assert (mrna.start, mrna.end, mrna.parent) == (10, 100, "gene-T1")
    exons = rows(table, type="exon")
    assert list(zip(exons.start, exons.end)) == [(10, 40), (60, 100)] and set(exons.parent) == {mrna.id}
    cds = rows(table, type="CDS")
    # part 1 keeps 19 coding bases after the skipped one: 6 codons + 1 base, so part 2 starts 2 bases in
    assert list(zip(cds.start, cds.end, cds.phase)) == [(20, 40, 1), (60, 80, 2)]
    assert set(cds.parent) == {mrna.id} and set(cds.gene_id) == {"gene-T1"} and set(cds["name"]) == {"P1.1"}


def test_gtf_hand_lines(tmp_path):
    path = tmp_path / "genes.gtf"
    path.write_text(
        '#!genome-build TAIR10\n'
        'Chr1\tT\tgene\t3631\t5899\t.\t+\t.\tgene_id "AT1G01010"; gene_name "NAC001";\n'
        'Chr1\tT\ttranscript\t3631\t5899\t.\t+\t.\tgene_id "AT1G01010"; transcript_id "AT1G01010.1"; '
        'tag "basic"; tag "Ensembl_canonical";\n'
        'Chr1\tT\texon\t3631\t3913\t.\t+\t.\tgene_id "AT1G01010"; transcript_id "AT1G01010.1"; exon_number 1;\n'
        'Chr1\tT\tCDS\t3760\t3913\t12.5\t+\t0\tgene_id "AT1G01010"; transcript_id "AT1G01010.1";\n')
    table = read_annotation(path)
    assert detect_format(path.read_text()) == "gtf"
    assert list(table.index) == [2, 3, 4, 5]
    gene, transcript, exon, cds = (table.iloc[i] for i in range(4))
    assert (gene.id, gene.parent, gene.gene_id, gene.transcript_id, gene["name"]) == (
        "AT1G01010", None, "AT1G01010", None, "NAC001")
    assert (transcript.id, transcript.parent, transcript.transcript_id) == ("AT1G01010.1", "AT1G01010", "AT1G01010.1")
    assert transcript.attributes["tag"] == "basic,Ensembl_canonical"
    assert (exon.parent, exon.attributes["exon_number"], exon.start, exon.end) == ("AT1G01010.1", "1", 3630, 3913)
    assert (cds.score, cds.phase, cds.gene_id) == (12.5, 0, "AT1G01010")


def test_bed_names_become_types_and_bed12_becomes_a_transcript(tmp_path):
    bed3 = tmp_path / "r.bed"
    bed3.write_text("track name=x\nchr1\t10\t20\nchr1\t30\t35\n")
    table = read_annotation(bed3)
    assert list(table["type"]) == ["region", "region"] and list(table.index) == [2, 3]
    assert list(table["strand"]) == [".", "."] and table["id"].isna().all()

    bed6 = tmp_path / "classes.bed"
    bed6.write_text("chr1 0 100 promoter 500 +\nchr1 50 80 enhancer . -\nchr1 90 95 . 0 .\n")  # spaces: accepted
    table = read_annotation(bed6)
    assert list(table["type"]) == ["promoter", "enhancer", "region"]
    assert list(table["name"]) == ["promoter", "enhancer", None]
    assert table["score"].iloc[0] == 500 and np.isnan(table["score"].iloc[1])

    # AT1G01020.1 (- strand, 10 exons, CDS 6915..8666) as one BED12 line
    bed12 = tmp_path / "t.bed"
    bed12.write_text("Chr1\t5927\t8737\tAT1G01020.1\t0\t-\t6914\t8666\t0\t10\t"
                     "336,633,76,67,86,74,46,90,48,167,\t0,509,1229,1456,1636,1834,2014,2308,2489,2643,\n")
    table = read_annotation(bed12)
    assert list(table["type"].value_counts().sort_index().items()) == [("CDS", 9), ("exon", 10), ("mRNA", 1)]
    assert set(table.index) == {1}
    assert set(rows(table, type="exon")["parent"]) == {"AT1G01020.1"}
    gff = read_annotation(ATHALIANA_GFF)
    reference = gff[(gff["type"] == "CDS") & (gff["parent"].str.startswith("AT1G01020.1,"))]
    got = rows(table, type="CDS")
    assert sorted(zip(got.start, got.end, got.phase)) == sorted(zip(reference.start, reference.end, reference.phase))


def test_format_is_detected_from_content_not_suffix(tmp_path):
    misleading = tmp_path / "annotation.bed.txt"  # really gzipped GFF3
    misleading.write_bytes(gzip.compress(b"##gff-version 3\nc1\ts\tgene\t1\t10\t.\t+\t.\tID=g1\n"))
    table = read_annotation(misleading)
    assert list(table["type"]) == ["gene"] and table["id"].iloc[0] == "g1"
    assert read_annotation(misleading, format="gff").equals(table)
    windows = tmp_path / "windows.gff3"
    windows.write_bytes(b"##gff-version 3\r\nc1\ts\tgene\t1\t10\t.\t+\t.\tID=g1\r\n")
    assert read_annotation(windows)["id"].iloc[0] == "g1"
    with pytest.raises(AnnotationError, match="unknown annotation format 'vcf'"):
        read_annotation(misleading, format="vcf")


def test_make_annotation_fills_defaults():
    table = make_annotation({"seqid": ["c1"], "type": ["CDS"], "start": [5], "end": [9]})
    assert tuple(table.columns) == ANNOTATION_COLUMNS
    row = table.iloc[0]
    assert (row.source, row.strand, row.id, row.attributes) == (".", ".", None, {})
    assert pd.isna(row.phase) and np.isnan(row.score)


# --------------------------------------------------------------------------- bad input

GFF_HEAD = "##gff-version 3\nc1\ts\tgene\t1\t100\t.\t+\t.\tID=g1\n"


@pytest.mark.parametrize("bad_line, message", [
    ("c1\ts\tCDS\t1\t100\t.\t+\n", "expected 9 tab-separated columns, found 7"),
    ("c1\ts\tCDS\t1x\t100\t.\t+\t0\tParent=g1\n", "start coordinate '1x' is not a non-negative integer"),
    ("c1\ts\tCDS\t1\t100.5\t.\t+\t0\tParent=g1\n", "end coordinate '100.5'"),
    ("c1\ts\tCDS\t1\t100\t.\tx\t0\tParent=g1\n", "strand 'x'"),
    ("c1\ts\tCDS\t50\t10\t.\t+\t0\tParent=g1\n", "start 50 is greater than end 10"),
    ("c1\ts\tCDS\t0\t10\t.\t+\t0\tParent=g1\n", "below 1"),
    ("c1\ts\tCDS\t1\t10\t.\t+\t3\tParent=g1\n", "phase '3'"),
    ("c1\ts\tCDS\t1\t10\tmany\t+\t0\tParent=g1\n", "score 'many'"),
    ("c1\ts\tCDS\t1\t10\t.\t+\t0\tParent=g1;broken\n", "attribute 'broken' is not key=value"),
])
def test_bad_gff3_lines_name_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "bad.gff3"
    path.write_text(GFF_HEAD + "# comment\n" + bad_line)
    with pytest.raises(AnnotationError, match=message) as error:
        read_annotation(path)
    assert str(path) in str(error.value) and "line 4" in str(error.value)
    assert error.value.line == 4


@pytest.mark.parametrize("name, text, message, line", [
    ("bad.gtf", 'c1\ts\texon\t1\t10\t.\t+\t.\tgene_id "g"; transcript_id "t\n', "cannot parse GTF attributes", 1),
    ("bad.bed", "c1\t0\t10\nc1\t20\t5\n", "start 20 is greater than end 5", 2),
    ("bad.bed", "c1\t0\t10\nc1\t20\n", "found 2", 2),
    ("bad.bed", "c1\t0\t10\tn\nc1\t0\t10\n", "found 3 columns where the first BED line has 4", 2),
    ("bad.bed", "c1\t0\t10\tn\t0\t+\t0\t10\t0\t2\n", "found 10", 1),
    ("bad.bed", "c1\t0\t10\tn\t0\t*\n", "strand '\\*'", 1),
    ("bad.bed", "#x\nc1\t0\t10\tn\t0\t+\t0\t10\t0\t2\t5,5,\t0,\n", "blockSizes lists 2 value\\(s\\) but blockCount is 2|blockStarts lists 1", 2),
    ("bad.bed", "c1\t0\t10\tn\t0\t+\t0\t10\t0\t1\t12,\t0,\n", "ends past the line's end", 1),
    ("bad.bed", "c1\t0\t10\tn\t0\t+\t0\t10\t0\t2\t5,5,\t0,3,\n", "blocks overlap", 1),
    ("bad.bed", "c1\t5\t10\tn\t0\t+\t2\t8\t0\t1\t5,\t0,\n", "lies outside", 1),
    ("notes.txt", "hello\nworld\n", "unrecognised annotation format", 1),
    ("seq.fa", ">chr1\nACGT\n", "unrecognised annotation format", 1),
])
def test_bad_gtf_and_bed_lines(tmp_path, name, text, message, line):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(AnnotationError, match=message) as error:
        read_annotation(path)
    assert str(path) in str(error.value) and error.value.line == line


def test_unreadable_files(tmp_path):
    cases = {
        tmp_path / "missing.gff3": "no such file",
        tmp_path: "is a directory",
    }
    (tmp_path / "empty.gff3").write_text("\n\n")
    cases[tmp_path / "empty.gff3"] = "file is empty"
    (tmp_path / "comments.gtf").write_text("# nothing\n#!genome-build x\n")
    cases[tmp_path / "comments.gtf"] = "only comments or blank lines"
    truncated = tmp_path / "cut.gff3.gz"
    truncated.write_bytes(gzip.compress((GFF_HEAD * 200).encode())[:-40])
    cases[truncated] = "truncated gzip"
    (tmp_path / "binary.gff").write_bytes(b"##gff-version 3\n\xff\xfe\x00")
    cases[tmp_path / "binary.gff"] = "invalid UTF-8"
    (tmp_path / "cut.gb").write_text("LOCUS       X 10 bp    DNA     linear   UNK\nFEATURES             Location/Qualifiers\n"
                                      "     gene            1..5\n")
    cases[tmp_path / "cut.gb"] = "cannot parse GenBank record #1"
    for path, message in cases.items():
        with pytest.raises(AnnotationError, match=message) as error:
            read_annotation(path)
        assert str(path) in str(error.value)


def test_genbank_bad_location_names_the_feature_line(tmp_path):
    path = tmp_path / "broken.gb"
    path.write_text("LOCUS       X 10 bp    DNA     linear   UNK\nFEATURES             Location/Qualifiers\n"
                    "     source          1..10\n     gene            1..zz\nORIGIN\n        1 acgtacgtac\n//\n")
    with pytest.raises(AnnotationError, match="cannot parse the location of this gene feature") as error:
        read_annotation(path)
    assert str(path) in str(error.value) and error.value.line == 4 and error.value.record == "X"




def test_genbank_without_sequence(tmp_path):
    path = tmp_path / "no_sequence.gbk"
    path.write_text(NO_SEQUENCE_GENBANK)
    table = read_annotation(path)  # the features alone are fine
    assert list(zip(table.type, table.start, table.end, table.strand)) == [("gene", 2, 30, "-")]
    with pytest.raises(AnnotationError, match="no sequence") as error:
        genbank_to_fasta(path, tmp_path / "genome.fa")
    assert str(path) in str(error.value) and "record 'chrN'" in str(error.value)
    assert not (tmp_path / "genome.fa").exists()


def test_genbank_to_fasta_writes_the_sequence(tmp_path):
    record = SeqRecord(Seq("ACGTN" * 40), id="chrS", name="chrS", annotations={"molecule_type": "DNA"})
    source = tmp_path / "s.gbk"
    SeqIO.write(record, source, "genbank")
    out = genbank_to_fasta(source, tmp_path / "s.fa")
    lines = out.read_text().split("\n")
    assert lines[0] == ">chrS" and "".join(lines[1:]) == "ACGTN" * 40 and len(lines[1]) == 80


def test_check_against_genome(tmp_path):
    path = tmp_path / "a.gff3"
    path.write_text(GFF_HEAD + "c1\ts\tCDS\t1\t100\t.\t+\t0\tParent=g1\nc2\ts\tgene\t5\t30\t.\t-\t.\tID=g2\n")
    table = read_annotation(path)
    check_against_genome(table, {"c1": 100, "c2": 30}, path)
    with pytest.raises(AnnotationError, match="seqid 'c2' is not in the genome") as error:
        check_against_genome(table, {"c1": 100, "chrX": 10}, path)
    assert str(path) in str(error.value) and error.value.line == 4
    with pytest.raises(AnnotationError, match="beyond the end of record 'c1' \\(length 99\\)") as error:
        check_against_genome(table, {"c1": 99, "c2": 30}, path)
    assert error.value.line == 2


def test_declared_gff3_without_features_is_an_empty_table(tmp_path):
    path = tmp_path / "none.gff3"
    path.write_text("##gff-version 3\n##sequence-region chr1 1 100\n")
    table = read_annotation(path)
    assert len(table) == 0 and list(table.columns)[:4] == ["seqid", "source", "type", "start"]
