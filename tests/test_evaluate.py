"""Evaluator: hand-built cases with known counts, and the E. coli reference against itself."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from genoformer.errors import RegionError
from genoformer.evaluate import evaluate, format_table, write_json
from genoformer.evaluate.features import coding_parts
from genoformer.export import write_bed12
from genoformer.genome.annotation import read_annotation
from genoformer.genome.intervals import Interval

from .conftest import ATHALIANA_GFF, CELEGANS_GFF, ECOLI_GENBANK_SLICES, ECOLI_GFF, read_ecoli_genbank

COLUMNS = ["seqid", "source", "type", "start", "end", "score", "strand", "phase", "id", "parent",
           "gene_id", "transcript_id", "name", "attributes"]
ECOLI_LENGTHS = {"NC_000913.3": 4_641_652}


def table(*rows: tuple) -> pd.DataFrame:
    """Rows of (type, start, end, strand, id, parent[, attributes]) on record chr1."""
    records = []
    for row in rows:
        kind, start, end, strand, identifier, parent, *extra = row
        records.append({
            "seqid": "chr1", "source": "test", "type": kind, "start": start, "end": end, "score": np.nan,
            "strand": strand, "phase": pd.NA, "id": identifier, "parent": parent, "gene_id": None,
            "transcript_id": None, "name": None, "attributes": extra[0] if extra else {},
        })
    frame = pd.DataFrame(records, columns=COLUMNS)
    return frame.astype({"start": "int64", "end": "int64", "phase": "Int64"})


def gene(name: str, strand: str, cds: list[tuple[int, int]], transcripts: int = 1) -> list[tuple]:
    """A gene whose transcripts t1..tn all carry the given CDS parts (isoforms differ only by later edits)."""
    start, end = min(s for s, _ in cds), max(e for _, e in cds)
    rows = [("gene", start, end, strand, name, None)]
    for t in range(1, transcripts + 1):
        rows.append(("mRNA", start, end, strand, f"{name}.t{t}", name))
        rows += [("CDS", s, e, strand, None, f"{name}.t{t}") for s, e in cds]
    return rows


LENGTHS = {"chr1": 1000}
REFERENCE = table(*gene("g1", "+", [(100, 160), (200, 260)]), *gene("g2", "-", [(400, 430), (500, 560), (600, 630)]))


def test_identical_annotations_score_one_everywhere():
    results = evaluate(REFERENCE, REFERENCE, lengths=LENGTHS, prokaryote=True)
    for scores in (results["nucleotide"]["coding"], results["nucleotide"]["coding_unstranded"]):
        assert scores["precision"] == scores["recall"] == scores["f1"] == scores["mcc"] == 1.0
    for level in ("exon", "gene", "gene_stop"):
        assert results[level]["sensitivity"] == results[level]["precision"] == results[level]["f1"] == 1.0
    assert results["exon"]["reference"] == 5 and results["gene"]["reference"] == 2
    assert results["nucleotide"]["coding"]["tp"] == 60 + 60 + 30 + 60 + 30
    assert results["nucleotide"]["coding"]["tn"] == 2 * 1000 - 240
    json.dumps(results)  # JSON-serialisable as returned


def test_shifted_exon_boundary_fails_exon_and_gene_but_not_bases():
    prediction = table(*gene("g1", "+", [(100, 160), (203, 260)]),
                       *gene("g2", "-", [(400, 430), (500, 560), (600, 630)]))
    results = evaluate(REFERENCE, prediction, lengths=LENGTHS)
    coding = results["nucleotide"]["coding"]
    assert (coding["tp"], coding["fp"], coding["fn"]) == (237, 0, 3)
    assert coding["recall"] == pytest.approx(237 / 240) and coding["precision"] == 1.0
    assert coding["mcc"] > 0.99
    exon = results["exon"]
    assert (exon["matched_reference"], exon["reference"], exon["predicted"]) == (4, 5, 5)
    assert exon["sensitivity"] == exon["precision"] == pytest.approx(0.8)
    gene_level = results["gene"]
    assert (gene_level["matched_reference"], gene_level["matched_predicted"]) == (1, 1)
    assert gene_level["sensitivity"] == gene_level["precision"] == 0.5


def test_missing_gene_costs_sensitivity_only():
    prediction = table(*gene("p1", "+", [(100, 160), (200, 260)]))
    results = evaluate(REFERENCE, prediction, lengths=LENGTHS)
    assert results["gene"]["sensitivity"] == 0.5 and results["gene"]["precision"] == 1.0
    assert results["exon"]["sensitivity"] == pytest.approx(2 / 5) and results["exon"]["precision"] == 1.0
    coding = results["nucleotide"]["coding"]
    assert (coding["tp"], coding["fp"], coding["fn"]) == (120, 0, 120)


def test_wrong_strand_is_wrong_except_on_the_unstranded_track():
    flipped = REFERENCE.assign(strand=REFERENCE["strand"].map({"+": "-", "-": "+"}))
    results = evaluate(REFERENCE, flipped, lengths=LENGTHS)
    assert results["nucleotide"]["coding"]["tp"] == 0
    assert results["nucleotide"]["coding"]["mcc"] < 0
    assert results["nucleotide"]["coding_unstranded"]["f1"] == 1.0
    assert results["exon"]["matched_reference"] == 0 and results["gene"]["matched_reference"] == 0


def test_cds_only_prediction_scores_genes_but_no_structure_classes():
    # Prodigal-style output: CDS rows with an ID and no parent; each is its own gene.
    prediction = table(("CDS", 100, 160, "+", "c1", None), ("CDS", 200, 260, "+", "c2", None),
                       ("CDS", 400, 430, "-", "c3", None))
    ncrna = table(("gene", 700, 800, "+", "nc", None), ("ncRNA", 700, 800, "+", "nc.1", "nc"))
    reference = pd.concat([REFERENCE, ncrna])
    results = evaluate(reference, prediction, lengths=LENGTHS)
    assert results["settings"]["prokaryote"] is False and "gene_stop" not in results
    assert results["gene"]["predicted"] == 3 and results["gene"]["matched_predicted"] == 0
    assert results["exon"]["matched_reference"] == 3
    assert "classes" not in results["nucleotide"]


def test_per_class_scores_when_both_sides_carry_structure():
    def transcript(cds_end: int) -> pd.DataFrame:
        return table(
            ("gene", 100, 400, "+", "g", None), ("mRNA", 100, 400, "+", "t", "g"),
            ("exon", 100, 200, "+", None, "t"), ("exon", 300, 400, "+", None, "t"),
            ("five_prime_UTR", 100, 150, "+", None, "t"), ("CDS", 150, 200, "+", None, "t"),
            ("CDS", 300, cds_end, "+", None, "t"), ("three_prime_UTR", cds_end, 400, "+", None, "t"),
        )
    results = evaluate(transcript(350), transcript(360), lengths=LENGTHS)
    classes = results["nucleotide"]["classes"]
    assert set(classes) == {"intergenic", "five_prime_UTR", "CDS", "intron", "three_prime_UTR"}
    assert (classes["CDS"]["tp"], classes["CDS"]["fp"], classes["CDS"]["fn"]) == (100, 10, 0)
    assert (classes["three_prime_UTR"]["tp"], classes["three_prime_UTR"]["fn"]) == (40, 10)
    assert classes["intron"]["f1"] == classes["five_prime_UTR"]["f1"] == 1.0
    assert results["nucleotide"]["accuracy"] == pytest.approx(1 - 10 / 2000)
    assert "nucleotide three_prime_UTR" in format_table(results)


def test_bed12_export_of_the_reference_scores_perfectly(tmp_path):
    bed = write_bed12(REFERENCE, tmp_path / "ref.bed")
    results = evaluate(REFERENCE, read_annotation(bed), lengths=LENGTHS)
    assert results["gene"]["f1"] == results["exon"]["f1"] == results["nucleotide"]["coding"]["f1"] == 1.0


def test_gtf_stop_codon_rows_join_the_cds(tmp_path):
    # GTF leaves the stop codon out of CDS; the same models as REFERENCE must still match exactly.
    rows = [
        ("transcript", 101, 260, "+", "g1"), ("CDS", 101, 160, "+", "g1"), ("CDS", 201, 257, "+", "g1"),
        ("stop_codon", 258, 260, "+", "g1"),
        ("transcript", 401, 630, "-", "g2"), ("stop_codon", 401, 403, "-", "g2"), ("CDS", 404, 430, "-", "g2"),
        ("CDS", 501, 560, "-", "g2"), ("CDS", 601, 630, "-", "g2"),
    ]
    gtf = tmp_path / "pred.gtf"
    gtf.write_text("".join(f'chr1\ttest\t{kind}\t{s}\t{e}\t.\t{strand}\t.\tgene_id "{g}"; transcript_id "{g}.1";\n'
                           for kind, s, e, strand, g in rows))
    results = evaluate(REFERENCE, read_annotation(gtf), lengths=LENGTHS)
    assert results["gene"]["f1"] == results["exon"]["f1"] == results["nucleotide"]["coding"]["f1"] == 1.0


def test_any_isoform_exact_finds_the_gene():
    reference = table(
        *gene("g1", "+", [(100, 160), (200, 260)]),
        ("mRNA", 100, 300, "+", "g1.t2", "g1"),
        ("CDS", 100, 160, "+", None, "g1.t2"), ("CDS", 230, 300, "+", None, "g1.t2"),
    )
    prediction = table(*gene("p1", "+", [(100, 160), (230, 300)]))
    results = evaluate(reference, prediction, lengths=LENGTHS)
    assert results["gene"]["reference"] == 1 and results["gene"]["sensitivity"] == 1.0
    assert results["exon"]["reference"] == 3 and results["exon"]["matched_reference"] == 2


def test_cds_of_cut_off_transcripts_count_once_per_gene():
    """Slices drop gene/mRNA rows that cross their end but keep the CDS rows (TAIR, WormBase layouts)."""
    reference = table(
        ("protein", 100, 160, "+", "a1.1-Protein", None),  # TAIR: mRNA a1.1 cut off, its protein kept
        ("CDS", 100, 160, "+", None, "a1.1,a1.1-Protein"),
        ("CDS", 200, 260, "-", None, "a2.1,a2.1-Protein"),  # ... or both parents cut off
        ("CDS", 300, 330, "+", "CDS:f1", "T:f1.1,T:f1.2", {"locus": "bli"}),  # one CDS, two cut-off isoforms
        ("CDS", 400, 430, "+", "CDS:f1", "T:f1.1,T:f1.2", {"locus": "bli"}),
        ("gene", 500, 700, "+", "G:lec", None, {"locus": "lec"}),
        ("mRNA", 500, 600, "+", "T:dc.a", "G:lec", {"locus": "lec"}),
        ("CDS", 500, 600, "+", "CDS:dc.a", "T:dc.a", {"locus": "lec"}),
        ("CDS", 520, 650, "+", "CDS:dc.b", "T:dc.b", {"locus": "lec"}),  # isoform whose mRNA is cut off
        ("CDS", 800, 830, "-", "CDS:x", "T:x.1", {"locus": "lec"}),  # same locus name, other strand
    )
    parts = coding_parts(reference)
    genes = parts.groupby("gene")["transcript"].unique().map(sorted).to_dict()
    assert genes == {"a1.1": ["a1.1"], "a2.1": ["a2.1"], "locus=bli": ["T:f1.1"],
                     "G:lec": ["T:dc.a", "T:dc.b"], "locus=lec": ["T:x.1"]}
    for path, expected in ((ATHALIANA_GFF, 347), (CELEGANS_GFF, 159)):
        ref = read_annotation(path)
        lengths = ref.groupby("seqid")["end"].max().astype(int).to_dict()
        assert evaluate(ref, ref, lengths=lengths, prokaryote=False)["gene"]["reference"] == expected, path.name


def test_pseudogenes_and_genes_without_cds_are_not_reference_genes():
    reference = table(
        *gene("g1", "+", [(100, 160)]),
        ("pseudogene", 300, 400, "+", "ps1", None), ("CDS", 300, 400, "+", None, "ps1"),
        ("CDS", 500, 530, "-", "cds-x", "g9", {"pseudo": "true"}),
        ("gene", 700, 800, "+", "nc1", None), ("ncRNA", 700, 800, "+", "nc1.t", "nc1"),
    )
    results = evaluate(reference, table(*gene("p1", "+", [(100, 160)])), lengths=LENGTHS)
    assert results["gene"]["reference"] == 1 and results["gene"]["f1"] == 1.0
    assert results["nucleotide"]["coding"]["fn"] == 0


def test_regions_count_only_inside_bases_and_whole_genes():
    prediction = table(*gene("p1", "+", [(100, 160), (200, 260)]), *gene("p2", "+", [(400, 430)]))
    # chr1:0-300 holds g1 whole; chr1:420-1000 cuts g2 (400-630) and p2 (400-430): both left out.
    regions = [Interval("chr1", 0, 300), Interval("chr1", 250, 300), Interval("chr1", 420, 1000)]
    results = evaluate(REFERENCE, prediction, lengths=LENGTHS, regions=regions)
    assert results["settings"]["bases"] == 300 + 580 and results["settings"]["regions"] == 2
    assert results["gene"]["reference"] == 1 and results["gene"]["predicted"] == 1 and results["gene"]["f1"] == 1.0
    assert results["exon"]["reference"] == 2 + 2  # g1's two exons, g2's 500-560 and 600-630
    coding = results["nucleotide"]["coding"]
    assert coding["tp"] + coding["fp"] + coding["fn"] + coding["tn"] == 2 * 880
    assert (coding["tp"], coding["fp"], coding["fn"]) == (120, 10, 10 + 60 + 30)


def test_unknown_record_and_feature_beyond_end_are_errors():
    with pytest.raises(RegionError, match="chr1"):
        evaluate(REFERENCE, REFERENCE, lengths={"chr2": 1000})
    with pytest.raises(RegionError, match="beyond"):
        evaluate(REFERENCE, REFERENCE, lengths={"chr1": 500})
    with pytest.raises(RegionError, match="chr9"):
        evaluate(REFERENCE, REFERENCE, lengths=LENGTHS, regions=[Interval("chr9", 0, 10)])
    with pytest.raises(RegionError, match="outside"):
        evaluate(REFERENCE, REFERENCE, lengths=LENGTHS, regions=[Interval("chr1", 900, 1001)])


def test_report_table_and_json(tmp_path):
    results = evaluate(REFERENCE, REFERENCE, lengths=LENGTHS, prokaryote=False)
    text = format_table(results)
    assert text.splitlines()[0].startswith("| level | sensitivity | precision | F1 | MCC")
    assert any(line.startswith("| gene (all CDS exons exact) | 1.000 | 1.000 | 1.000 |") for line in text.splitlines())
    assert "stop codon" not in text
    path = write_json(results, tmp_path / "out.json")
    assert json.loads(path.read_text()) == results


@pytest.fixture(scope="module")
def ecoli():
    return read_annotation(ECOLI_GFF)


def test_ecoli_against_itself_is_perfect_and_fast(ecoli):
    started = time.perf_counter()
    results = evaluate(ecoli, ecoli, lengths=ECOLI_LENGTHS)
    assert time.perf_counter() - started < 10
    assert results["settings"]["prokaryote"] is True
    assert results["nucleotide"]["coding"]["mcc"] == 1.0
    # 4,337 CDS rows less 50 pseudo-CDS rows; a few genes have two CDS parts (frameshifts).
    assert 4250 < results["gene"]["reference"] < 4300
    for level in ("exon", "gene", "gene_stop"):
        assert results[level]["f1"] == 1.0


def test_ecoli_gff_against_its_genbank_is_perfect(ecoli):
    genbank = read_ecoli_genbank()  # slices of the GenBank record, at genome coordinates
    regions = [Interval("NC_000913.3", start, end) for _, start, end in ECOLI_GENBANK_SLICES]
    results = evaluate(ecoli, genbank, lengths=ECOLI_LENGTHS, regions=regions)
    assert results["gene"]["reference"] > 200  # thrL .. crl, and prfB with its two CDS parts
    assert results["nucleotide"]["coding"]["f1"] == 1.0
    assert results["gene"]["f1"] == results["exon"]["f1"] == 1.0


def test_ecoli_with_every_stop_moved_fails_genes_not_bases(ecoli):
    cds = ecoli[ecoli["type"] == "CDS"]
    # The 3' part of each CDS: the last one on +, the first one on -.
    last_plus = cds[cds["strand"] == "+"].groupby("id")["end"].idxmax()
    first_minus = cds[cds["strand"] == "-"].groupby("id")["start"].idxmin()
    moved = ecoli.copy()
    moved.loc[last_plus.to_numpy(), "end"] += 3
    moved.loc[first_minus.to_numpy(), "start"] -= 3
    results = evaluate(ecoli, moved, lengths=ECOLI_LENGTHS)
    assert results["gene"]["f1"] == 0.0 and results["gene_stop"]["f1"] == 0.0
    assert results["exon"]["f1"] < 0.01
    assert results["nucleotide"]["coding"]["f1"] > 0.99 and results["nucleotide"]["coding"]["mcc"] > 0.99
