"""Bad input to the gene model's training: each refusal names the annotation file and says what to do.

Built from the bundled A. thaliana Chr2 slice (about 60 coding genes): its annotation with shifted
coordinates, renamed records, or a sequence whose introns were made non-canonical.
"""
from __future__ import annotations

import gzip
import re
import subprocess
import sys

import pytest

from genoformer.errors import AnnotationError
from genoformer.genemodel import GeneModel
from genoformer.genemodel.training import coding_transcripts
from genoformer.genome import Genome, Interval, read_annotation

RECORD = "Chr2"


@pytest.fixture(scope="module")
def chr2_gff_lines(athaliana_gff) -> list[list[str]]:
    """The Chr2 slice's GFF3 data lines, split into columns."""
    with gzip.open(athaliana_gff, "rt") as handle:
        return [line.rstrip("\n").split("\t") for line in handle if line.startswith(f"{RECORD}\t")]


def _write_gff(path, rows: list[list[str]]):
    path.write_text("##gff-version 3\n" + "".join("\t".join(row) + "\n" for row in rows))
    return path


def _whole(genome: Genome, name: str = RECORD) -> list[Interval]:
    return [Interval(name, 0, genome.lengths[name])]


def test_a_training_region_without_a_coding_gene_is_refused_naming_the_file_and_region(athaliana, athaliana_gff):
    genome, annotation = athaliana
    with pytest.raises(AnnotationError, match=r"A\.thaliana\.gff\.gz: nothing to learn a gene model from in the "
                                              r"training regions ChrC:1-500 of .*A\.thaliana\.fa\.gz: no coding gene "
                                              r"lies wholly inside them; train on regions that hold annotated"):
        GeneModel.fit(genome, annotation, [Interval("ChrC", 0, 500)])


def test_an_annotation_naming_records_otherwise_than_the_fasta_is_refused_listing_its_records(
        athaliana, chr2_gff_lines, tmp_path):
    genome, _ = athaliana
    renamed = _write_gff(tmp_path / "renamed.gff3", [["2", *row[1:]] for row in chr2_gff_lines])
    with pytest.raises(AnnotationError, match=r"renamed\.gff3: .* it has no CDS rows on 'Chr2' \(its CDS rows are "
                                              r"on: 2\); .*record names as the FASTA has them"):
        GeneModel.fit(genome, read_annotation(renamed), _whole(genome))


def test_an_annotation_whose_cds_contradict_the_sequence_is_refused_with_the_reasons(
        athaliana, chr2_gff_lines, tmp_path):
    genome, _ = athaliana
    # One base off (a 0-based file read as 1-based, or another assembly): every CDS leaves its reading frame.
    shifted = [row[:3] + [str(int(row[3]) + 1), str(int(row[4]) + 1)] + row[5:] if row[2] == "CDS" else row
               for row in chr2_gff_lines]
    path = _write_gff(tmp_path / "shifted.gff3", shifted)
    with pytest.raises(AnnotationError) as refused:
        GeneModel.fit(genome, read_annotation(path), _whole(genome))
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and "do not fit the sequence of" in message
    assert "no start codon: " in message and "same assembly" in message
    misfits, seen = (int(n) for n in re.search(r"(\d+) of the (\d+) coding genes", message).groups())
    assert seen > 30 and misfits > 0.9 * seen
    # The same annotation unshifted trains (with a warning: a slice holds fewer than 200 genes).
    with pytest.warns(UserWarning):
        GeneModel.fit(genome, read_annotation(_write_gff(tmp_path / "good.gff3", chr2_gff_lines)), _whole(genome))


def test_a_gene_model_command_refusing_bad_input_prints_one_line_and_exits_2(athaliana_fasta, chr2_gff_lines, tmp_path):
    shifted = [row[:3] + [str(int(row[3]) + 1), str(int(row[4]) + 1)] + row[5:] if row[2] == "CDS" else row
               for row in chr2_gff_lines]
    path = _write_gff(tmp_path / "shifted.gff3", shifted)
    (tmp_path / "chr2.bed").write_text(f"{RECORD}\t0\t196982\n")
    done = subprocess.run([sys.executable, "-m", "genoformer.cli", "gene-model", "--fasta", str(athaliana_fasta),
                           "--annotation", str(path), "--regions", str(tmp_path / "chr2.bed"),
                           "--out", str(tmp_path / "model")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"genoformer: error: {path}: ") and "same assembly" in done.stderr
    assert not (tmp_path / "model").exists()


def test_a_species_whose_introns_are_mostly_non_canonical_is_refused(athaliana, write_fasta):
    genome, annotation = athaliana
    sequence = list(genome.fetch(RECORD, 0, genome.lengths[RECORD]))
    pieces = coding_transcripts(annotation, RECORD)
    # Every intron between two CDS pieces of a transcript gets other ends (its coding sequence is untouched).
    for _, transcript in pieces.groupby("transcript"):
        spans = sorted(zip(transcript["start"], transcript["end"]))
        for (_, intron_start), (intron_end, _) in zip(spans, spans[1:]):
            sequence[intron_start:intron_start + 2] = "AA"
            sequence[intron_end - 2:intron_end] = "AA"
    fasta = write_fasta({RECORD: "".join(sequence)}, "noncanonical.fa")
    with pytest.raises(AnnotationError, match=r"A\.thaliana\.gff\.gz: (\d+) of the \1 introns of the training genes "
                                              r"are not GT-AG, GC-AG, AT-AC \(most common: (AA-AA|TT-TT) \d+.*check that "
                                              r"the exon coordinates fit .*noncanonical\.fa"):
        GeneModel.fit(Genome(fasta), annotation, _whole(genome))


def test_fitting_on_fewer_than_200_genes_warns_with_the_count_and_the_file(athaliana):
    genome, annotation = athaliana
    with pytest.warns(UserWarning, match=r"A\.thaliana\.gff\.gz: the gene model learned from only (\d+) genes "
                                         r"\(fewer than 200\)") as caught:
        model = GeneModel.fit(genome, annotation, _whole(genome, "Chr1"))
    assert f"only {model.report['genes used']} genes" in str(caught[0].message)
    assert 30 < model.report["genes used"] < 200
