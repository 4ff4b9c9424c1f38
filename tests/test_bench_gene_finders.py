"""bench/gene_finders.py helpers: region restriction, Prodigal's bare-CDS GFF, and tiny real peer runs."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from genoformer.evaluate import evaluate
from genoformer.genemodel import EvidenceWeights, GeneModel
from genoformer.genemodel.evidence import WEIGHTS_FILE
from genoformer.genome.annotation import read_annotation
from genoformer.genome.fasta import Genome
from genoformer.genome.intervals import Interval, read_bed_regions

REPO = Path(__file__).parents[1]
_spec = importlib.util.spec_from_file_location("gene_finders", REPO / "bench" / "gene_finders.py")
gene_finders = importlib.util.module_from_spec(_spec)
sys.modules["gene_finders"] = gene_finders  # dataclasses look their module up while the file runs
_spec.loader.exec_module(gene_finders)

needs_prodigal = pytest.mark.skipif(shutil.which("prodigal") is None, reason="prodigal not installed")
needs_augustus = pytest.mark.skipif(shutil.which("augustus") is None, reason="augustus not installed")

# Prodigal 2.6.3 output as written (two spaces in the version line, attributes ending in ';'),
# for two genes of the E. coli reference: thrL (exact) and thrA (start called 3 codons late).
PRODIGAL_GFF = """##gff-version  3
# Sequence Data: seqnum=1;seqlen=4641652;seqhdr="NC_000913.3"
# Model Data: version=Prodigal.v2.6.3;run_type=Single;model="Ab initio";gc_cont=50.79;transl_table=11;uses_sd=1
NC_000913.3\tProdigal_v2.6.3\tCDS\t190\t255\t5.2\t+\t0\tID=1_1;partial=00;start_type=ATG;conf=76.93;
NC_000913.3\tProdigal_v2.6.3\tCDS\t346\t2799\t336.9\t+\t0\tID=1_2;partial=00;start_type=ATG;conf=99.99;
"""
REFERENCE_GFF = """##gff-version 3
NC_000913.3\tRefSeq\tgene\t190\t255\t.\t+\t.\tID=gene-b0001;Name=thrL
NC_000913.3\tRefSeq\tCDS\t190\t255\t.\t+\t0\tID=cds-NP_414542.1;Parent=gene-b0001
NC_000913.3\tRefSeq\tgene\t337\t2799\t.\t+\t.\tID=gene-b0002;Name=thrA
NC_000913.3\tRefSeq\tCDS\t337\t2799\t.\t+\t0\tID=cds-NP_414543.1;Parent=gene-b0002
"""


def test_regions_in_keeps_each_genomes_held_out_records():
    regions = read_bed_regions(REPO / "pipelines" / "regions" / "model_organisms_test.bed")
    athaliana = {"Chr1": 304_276, "Chr5": 269_755}
    celegans = {"I": 150_724, "V": 209_241}
    assert [r.name for r in gene_finders.regions_in(regions, athaliana)] == ["Chr5"]
    assert [r.name for r in gene_finders.regions_in(regions, celegans)] == ["V"]
    assert gene_finders.regions_in(regions, {"NC_000913.3": 4_641_652}) == []
    assert gene_finders.region_label(gene_finders.regions_in(regions, athaliana), athaliana) == "held-out Chr5 (269,755 bp)"
    assert gene_finders.region_label(None, athaliana) == "whole genome (574,031 bp)"


def test_prodigal_bare_cds_rows_score_as_one_exon_genes(tmp_path):
    (tmp_path / "prodigal.gff").write_text(PRODIGAL_GFF)
    (tmp_path / "reference.gff3").write_text(REFERENCE_GFF)
    prediction = read_annotation(tmp_path / "prodigal.gff")
    reference = read_annotation(tmp_path / "reference.gff3")
    assert list(prediction["type"]) == ["CDS", "CDS"] and prediction["parent"].isna().all()
    results = evaluate(reference, prediction, lengths={"NC_000913.3": 4_641_652}, regions=[Interval("NC_000913.3", 0, 3000)])
    assert results["gene"]["predicted"] == 2 and results["gene"]["matched_predicted"] == 1
    assert results["gene_stop"]["matched_reference"] == 2  # the late start still has the right stop
    coding = results["nucleotide"]["coding"]
    assert (coding["tp"], coding["fp"], coding["fn"]) == (66 + 2454, 0, 9)


@needs_prodigal
def test_prodigal_runs_on_lambda_and_each_cds_is_a_gene(lambda_fasta, tmp_path):
    genome = Genome(lambda_fasta)
    whole = [Interval(name, 0, genome.lengths[name]) for name in genome.names]
    prediction, seconds, tool, command = gene_finders.run_peer(gene_finders.DATASETS["ecoli"], genome, whole, tmp_path / "run")
    assert tool.startswith("Prodigal ") and " -p single " in command and min(seconds) > 0
    cds = prediction[prediction["type"] == "CDS"]
    assert len(cds) > 50 and set(cds["seqid"]) == set(genome.names)
    results = evaluate(prediction, prediction, lengths=genome.lengths)
    assert results["gene"]["reference"] == len(cds) and results["gene"]["sensitivity"] == 1.0


@needs_augustus
def test_augustus_finds_genes_in_a_slice_of_chr5(athaliana_fasta, athaliana_gff, tmp_path):
    genome = Genome(athaliana_fasta)
    slice_fasta = tmp_path / "slice.fa"
    slice_fasta.write_text(">Chr5\n" + genome.fetch("Chr5", 0, 20_000) + "\n")
    wall, cpu = gene_finders.run_timed(gene_finders.augustus_argv(slice_fasta, "arabidopsis", tmp_path / "out.gff3"))
    prediction = read_annotation(tmp_path / "out.gff3")
    assert wall > 0 and cpu > 0 and (prediction["type"] == "CDS").any()
    results = evaluate(read_annotation(athaliana_gff), prediction, lengths=genome.lengths, regions=[Interval("Chr5", 0, 20_000)])
    assert results["nucleotide"]["coding"]["f1"] > 0.7


@needs_augustus
def test_augustus_on_a_region_inside_a_record_calls_genes_where_they_are_on_the_record(athaliana_fasta, athaliana_gff, tmp_path):
    genome = Genome(athaliana_fasta)
    region = Interval("Chr5", 20_000, 40_000)
    prediction, seconds, tool, command = gene_finders.run_peer(
        gene_finders.DATASETS["athaliana"], genome, gene_finders.peer_stretches(gene_finders.DATASETS["athaliana"], genome, [region]),
        tmp_path / "run")
    assert set(prediction["seqid"]) == {"Chr5"} and prediction["start"].min() >= 20_000 and prediction["end"].max() <= 40_000
    results = evaluate(read_annotation(athaliana_gff), prediction, lengths=genome.lengths, regions=[region])
    assert results["nucleotide"]["coding"]["f1"] > 0.7  # shifted back: unshifted, nothing would overlap


def test_gene_model_rows_decode_the_held_out_regions_with_a_saved_gene_model(athaliana_fasta, athaliana_gff, tmp_path):
    genome, reference = Genome(athaliana_fasta), read_annotation(athaliana_gff)
    training = [Interval(name, 0, genome.lengths[name]) for name in ("Chr1", "Chr2", "Chr3", "Chr4")]
    GeneModel.fit(genome, reference, training, site_network_steps=3).save(tmp_path / "model")
    held_out = [Interval("Chr5", 0, 60_000)]

    def rows():
        return gene_finders.gene_model_rows(gene_finders.DATASETS["athaliana"], genome, reference, held_out,
                                            tmp_path / "model")

    [row] = rows()  # no evidence weights in the folder: the gene model alone
    assert row["tool"] == "genoformer gene model alone" and row["training_genes"] > 250 and row["seconds"] > 0 and row["cpu_seconds"] > 0
    assert row["results"]["nucleotide"]["coding"]["f1"] > 0.8
    table = gene_finders.format_rows([row])
    assert "| A. thaliana 1% slices | genoformer gene model alone | held-out Chr5 (60,000 bp) |" in table
    EvidenceWeights(sites=0.5, site_offset=2.0).save(tmp_path / "model" / WEIGHTS_FILE)
    alone, with_sites = rows()
    assert with_sites["tool"] == "genoformer gene model + site network" and with_sites["results"] != alone["results"]


def test_the_chromosome_1_data_sets_read_files_given_on_the_command_line(tmp_path):
    with pytest.raises(SystemExit, match=r"athaliana_chr1_test\.bed: no region on the records of .*A\.thaliana\.fa\.gz"):
        gene_finders.bench_dataset("athaliana_chr1_test", run_peers=False, whole_genome=False, genoformer=[],
                                   gene_model=None, files={gene_finders.CHR1_FASTA: str(REPO / "data/model_organisms/A.thaliana.fa.gz"),
                                                           gene_finders.CHR1_ANNOTATION: str(REPO / "data/model_organisms/A.thaliana.gff.gz")})


def test_a_missing_peer_leaves_its_rows_out_and_keeps_genoformers(tmp_path, monkeypatch, capsys):
    """Without Prodigal installed the bench still scores genoformer's predictions, and says what is missing."""
    monkeypatch.setattr(gene_finders.shutil, "which", lambda tool: None)
    (tmp_path / "calls.gff3").write_text(REFERENCE_GFF)
    [row] = gene_finders.bench_dataset("ecoli", run_peers=True, whole_genome=False, genoformer=[tmp_path / "calls.gff3"],
                                       gene_model=None, files={})
    assert row["tool"] == "genoformer"
    assert "prodigal is not installed (Debian: apt-get install prodigal): no prodigal rows for" in capsys.readouterr().err


def test_genoformer_options_name_a_data_set_and_a_file():
    assert gene_finders.parse_genoformer(["ecoli=a.gff3", "ecoli=b.gff3", "celegans=c.gff3"]) == {
        "ecoli": [Path("a.gff3"), Path("b.gff3")],
        "celegans": [Path("c.gff3")],
    }
    for bad in ("a.gff3", "yeast=a.gff3", "ecoli="):
        with pytest.raises(SystemExit, match="DATA=GFF3"):
            gene_finders.parse_genoformer([bad])
