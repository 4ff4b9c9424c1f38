"""The pipeline report's pieces: reading bedGraph and bigWig tracks back, the network set against the annotations made without it,
and what the start network added."""
from __future__ import annotations

import numpy as np
import pytest

from genoformer.export import write_bedgraph, write_bigwig
from genoformer.genome.intervals import Interval
from genoformer.report import RegionPlot, network_against_others, read_bedgraph_region, read_track_region, write_report


def test_report_reads_bedgraph_records_whose_names_hold_a_t(tmp_path):
    """Read with comment="t", pandas cut every line at its first "t": MtDNA and chrUn_t1 lines were lost."""
    values = {"MtDNA": np.array([0.1, 0.1, 0.7, 0.7, 0.7], dtype=np.float32),
              "chrUn_t1": np.array([0.2, 0.9, 0.9, 0.0], dtype=np.float32)}
    path = write_bedgraph(tmp_path / "p.bedgraph", "track with a t", values, description="the tracks")
    assert np.allclose(read_bedgraph_region(path, "MtDNA", 1, 5), [0.1, 0.7, 0.7, 0.7])
    assert np.allclose(read_bedgraph_region(path, "chrUn_t1", 0, 4), values["chrUn_t1"])


def test_report_reads_bigwig_tracks_as_it_reads_bedgraph(tmp_path):
    """With annotate.bigwig the tracks are .bw files: the plot reads the same values from them."""
    pytest.importorskip("pyBigWig")
    values = {"Chr5": np.array([0.0, 0.25, 0.25, 0.75, 0.5, 0.5], dtype=np.float32),
              "chrUn_t1": np.array([0.125, 0.875], dtype=np.float32)}
    lengths = {name: len(v) for name, v in values.items()}
    bedgraph = write_bedgraph(tmp_path / "p.bedgraph", "p", values)
    bigwig = write_bigwig(tmp_path / "p.bw", values.items(), lengths)
    for name, start, end in (("Chr5", 0, 6), ("Chr5", 2, 5), ("chrUn_t1", 0, 2), ("Chr5", 4, 9), ("absent", 0, 3)):
        from_bigwig = read_track_region(bigwig, name, start, end)
        assert np.allclose(from_bigwig, read_track_region(bedgraph, name, start, end)) and len(from_bigwig) == end - start
    assert np.allclose(read_track_region(bigwig, "Chr5", 2, 5), [0.25, 0.75, 0.5])


NETWORK, ALONE = "genoformer (network + decoder)", "decoder alone (no network)"


def _results(stranded: float, either: float, gene: float, stop: float) -> dict:
    return {"nucleotide": {"coding": {"mcc": stranded}, "coding_unstranded": {"mcc": either}},
            "gene": {"f1": gene}, "gene_stop": {"f1": stop}}


def network_against_decoder(model: dict, alone: dict) -> list[str]:
    return network_against_others(NETWORK, model, {ALONE: alone})


def test_report_says_plainly_when_the_network_did_not_beat_the_decoder_alone():
    lines = network_against_decoder(_results(0.95, 0.85, 0.70, 0.90), _results(0.966, 0.879, 0.807, 0.941))
    assert lines[2] == "| genoformer (network + decoder) | 0.950 | 0.850 | 0.700 | 0.900 |"
    assert lines[3] == "| decoder alone (no network) | 0.966 | 0.879 | 0.807 | 0.941 |"
    assert "**genoformer (network + decoder) did not beat the decoder alone (no network)** on any measure" in "\n".join(lines)


def test_report_names_the_measures_the_network_won_and_lost():
    text = "\n".join(network_against_decoder(_results(0.97, 0.90, 0.80, 0.941), _results(0.966, 0.879, 0.807, 0.941)))
    assert ("**genoformer (network + decoder) beat the decoder alone (no network) only on strand-aware MCC, either-strand MCC**; not on "
            "exact-gene F1, stop-exact gene F1 (equal or worse).") in text
    text = "\n".join(network_against_decoder(_results(0.99, 0.95, 0.9, 0.97), _results(0.966, 0.879, 0.807, 0.941)))
    assert "**genoformer (network + decoder) beat the decoder alone (no network)** on every measure." in text


def test_report_does_not_credit_the_network_with_measures_it_left_undefined():
    """A model that called nothing has no MCC or precision (n/a): that is no win over the decoder alone."""
    lines = network_against_decoder(_results(None, None, None, None), _results(0.966, 0.879, 0.807, 0.941))
    assert lines[2] == "| genoformer (network + decoder) | n/a | n/a | n/a | n/a |"
    assert "**genoformer (network + decoder) did not beat the decoder alone (no network)** on any measure" in "\n".join(lines)


def test_a_eukaryote_report_sets_every_annotation_side_by_side_on_gene_finder_measures():
    def scores(f1: float, exon: float, gene: float) -> dict:
        return {"nucleotide": {"coding": {"mcc": f1 - 0.01, "f1": f1}, "coding_unstranded": {"mcc": f1 - 0.02}},
                "exon": {"f1": exon}, "gene": {"f1": gene}}

    others = {ALONE: scores(0.3, 0.1, 0.0), "gene model alone (no network)": scores(0.95, 0.8, 0.55)}
    lines = network_against_others(NETWORK, scores(0.6, 0.2, 0.05), others, "eukaryote")
    assert lines[0] == ("| annotation | strand-aware MCC | either-strand MCC | nucleotide CDS F1 | CDS exon F1 | "
                        "exact-gene F1 |")
    assert lines[2:5] == ["| genoformer (network + decoder) | 0.590 | 0.580 | 0.600 | 0.200 | 0.050 |",
                          "| decoder alone (no network) | 0.290 | 0.280 | 0.300 | 0.100 | 0.000 |",
                          "| gene model alone (no network) | 0.940 | 0.930 | 0.950 | 0.800 | 0.550 |"]
    assert "**genoformer (network + decoder) beat the decoder alone (no network)** on every measure." in lines
    assert "**genoformer (network + decoder) did not beat the gene model alone (no network)** on any measure." in lines


def test_an_annotation_that_called_no_genes_is_said_to_have_called_none_not_to_have_been_beaten():
    """The fixed eukaryote decoder given no network calls nothing: "beat it on every measure" would flatter."""
    lines = network_against_decoder(_results(0.95, 0.85, 0.70, 0.90), _results(None, None, None, None))
    assert lines[3] == "| decoder alone (no network) | n/a | n/a | n/a | n/a |"
    assert "The decoder alone (no network) called no genes here (every measure n/a): nothing to beat." in lines
    assert not any("beat the decoder alone" in line for line in lines)


def test_report_says_what_the_start_network_added_on_validation(tmp_path):
    starts = {"training genes": 3530, "validation ORFs": 201, "steps": 300, "weight": 1.0,
              "first right by weight": {"0.0": 0.9005, "0.5": 0.9353, "1.0": 0.9403}}
    write_report(tmp_path, name="x", records={"start_network": {"seconds": 1.0, "start network": starts}}, metrics={},
                 label="genoformer", others={}, outputs=[])
    assert ("the annotated start ranks first in 0.940 of 201 validation genes' reading frames at weight 1, against "
            "0.900 for the start model alone") in (tmp_path / "report.md").read_text()


def test_report_says_why_no_start_network_was_trained(tmp_path):
    write_report(tmp_path, name="x", records={"start_network": {"trained": False, "why": "start_network.steps is 0"}},
                 metrics={}, label="genoformer", others={}, outputs=[])
    assert "No start network: start_network.steps is 0." in (tmp_path / "report.md").read_text()


def test_a_held_out_region_without_probability_tracks_is_plotted_with_its_calls_alone(tmp_path):
    """A eukaryote run whose evidence weights leave the tagger out writes no tracks: the report still plots
    the calls (it failed on an empty legend) and says why there are no tracks."""
    gff = "##gff-version 3\nChr5\tx\tCDS\t101\t400\t.\t+\t0\tID=c1\n"
    (tmp_path / "calls.gff3").write_text(gff)
    plot = RegionPlot(Interval("Chr5", 0, 5000), tmp_path / "calls.gff3", tmp_path / "calls.gff3", {})
    paths = write_report(tmp_path, name="x", records={}, metrics={}, label="genoformer", others={}, outputs=[],
                         plot=plot)
    assert (tmp_path / "tracks.png") in paths and (tmp_path / "tracks.png").stat().st_size > 5_000
    assert "No probability tracks: this annotation wrote none" in (tmp_path / "report.md").read_text()


def test_tracks_taken_from_another_annotation_are_plotted_and_named_as_such(tmp_path):
    """Where the run's own annotation wrote no tracks, the pipeline plots the tagger's from another row
    (the network with the decoder): the report says whose they are."""
    (tmp_path / "calls.gff3").write_text("##gff-version 3\nChr5\tx\tCDS\t101\t400\t.\t+\t0\tID=c1\n")
    (tmp_path / "cds.bedgraph").write_text("track type=bedGraph\nChr5\t0\t100\t0.1\nChr5\t100\t400\t0.9\nChr5\t400\t5000\t0.05\n")
    plot = RegionPlot(Interval("Chr5", 0, 5000), tmp_path / "calls.gff3", tmp_path / "calls.gff3",
                      {"P(CDS +)": tmp_path / "cds.bedgraph"}, "genoformer (network + decoder)")
    write_report(tmp_path, name="x", records={}, metrics={}, label="genoformer", others={}, outputs=[], plot=plot)
    text = (tmp_path / "report.md").read_text()
    assert 'the probability tracks are the tagger\'s, from the "genoformer (network + decoder)" annotation' in text
    assert "No probability tracks" not in text and (tmp_path / "tracks.png").stat().st_size > 5_000
