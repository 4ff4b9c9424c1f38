"""GFF3, BED and track writers: lines checked by hand, and round trips through our readers."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genoformer.errors import GenoformerError
from genoformer.export import write_bed, write_bed12, write_bedgraph, write_bigwig, write_class_tracks, write_gff3
from genoformer.export.gff3 import cds_phase
from genoformer.decode import decode_record
from genoformer.genome.annotation import read_annotation
from genoformer.genome.annotation_table import make_annotation
from genoformer.genome.labels import LabelScheme, label_track

COLUMNS = ["seqid", "source", "type", "start", "end", "score", "strand", "phase", "id", "parent",
           "gene_id", "transcript_id", "name", "attributes"]


def table(*rows: dict) -> pd.DataFrame:
    defaults = {"seqid": "chr1", "source": "genoformer", "score": np.nan, "strand": "+", "phase": pd.NA, "id": None,
                "parent": None, "gene_id": None, "transcript_id": None, "name": None}
    frame = pd.DataFrame([{**defaults, "attributes": {}, **row} for row in rows], columns=COLUMNS)
    return frame.astype({"start": "int64", "end": "int64", "score": "float64", "phase": "Int64"})


def feature_lines(path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]


def gene_model(gene: str, strand: str, exons: list[tuple[int, int]], seqid: str = "chr1",
               score: float = np.nan) -> list[dict]:
    """gene -> mRNA -> exon + CDS rows (CDS = exons, no phase given), gene_id/transcript_id filled."""
    start, end = exons[0][0], exons[-1][1]
    common = {"seqid": seqid, "strand": strand, "gene_id": gene}
    rows = [{**common, "type": "gene", "start": start, "end": end, "id": gene, "score": score},
            {**common, "type": "mRNA", "start": start, "end": end, "id": f"{gene}.t1", "parent": gene,
             "transcript_id": f"{gene}.t1"}]
    common["transcript_id"] = f"{gene}.t1"
    for i, (s, e) in enumerate(exons, 1):
        rows.append({**common, "type": "exon", "start": s, "end": e, "id": f"{gene}.t1.exon{i}",
                     "parent": f"{gene}.t1"})
        rows.append({**common, "type": "CDS", "start": s, "end": e, "id": f"{gene}.t1.cds", "parent": f"{gene}.t1"})
    return rows


# --- GFF3 ---------------------------------------------------------------------------------

def test_gff3_header_regions_and_sorting(tmp_path):
    rows = (gene_model("gA2", "+", [(300, 330)]) + gene_model("gB", "-", [(50, 80)], seqid="chrB")
            + gene_model("gA1", "+", [(10, 40)]))
    path = write_gff3(table(*rows), tmp_path / "out.gff3", {"chrB": 500, "chr1": 1000, "chrEmpty": 7})
    lines = path.read_text().splitlines()
    assert lines[:4] == ["##gff-version 3", "##sequence-region chrB 1 500", "##sequence-region chr1 1 1000",
                         "##sequence-region chrEmpty 1 7"]
    features = feature_lines(path)
    assert all(len(f) == 9 for f in features)
    assert [(f[0], f[2], f[3], f[4]) for f in features] == [
        (seqid, kind, first, last)
        for seqid, first, last in (("chrB", "51", "80"), ("chr1", "11", "40"), ("chr1", "301", "330"))
        for kind in ("gene", "mRNA", "exon", "CDS")
    ]
    assert features[1][8] == "ID=gB.t1;Parent=gB"


def test_gff3_attributes_are_encoded_and_tags_cased(tmp_path):
    rows = [{"type": "gene", "start": 0, "end": 10, "id": "g;1", "name": "a=b", "score": 0.93, "seqid": "chr 1",
             "attributes": {"Note": "x;y=z&w,v\tt\nn%", "prob": np.float64(0.93), "Custom": "k"}}]
    path = write_gff3(table(*rows), tmp_path / "out.gff3", {"chr 1": 100})
    (line,) = feature_lines(path)
    assert path.read_text().splitlines()[1] == "##sequence-region chr%201 1 100"
    assert line[0] == "chr%201" and line[5] == "0.93" and line[7] == "."
    assert line[8] == "ID=g%3B1;Name=a%3Db;Note=x%3By%3Dz%26w%2Cv%09t%0An%25;prob=0.93;custom=k"
    back = read_annotation(path).iloc[0]
    assert back["seqid"] == "chr 1" and back["id"] == "g;1" and back["name"] == "a=b" and back["score"] == 0.93
    assert back["attributes"]["Note"] == "x;y=z&w,v\tt\nn%"


def test_cds_phase_on_both_strands():
    plus = [(10, 20), (30, 38), (50, 59)]          # lengths 10, 8, 9
    minus = [(100, 107), (120, 130), (150, 161)]   # 5'->3': 11, 10, 7
    rows = [{"type": "CDS", "start": s, "end": e, "parent": "t+", "strand": "+"} for s, e in plus]
    rows += [{"type": "CDS", "start": s, "end": e, "parent": "t-", "strand": "-"} for s, e in minus]
    rows.append({"type": "exon", "start": 10, "end": 20, "parent": "t+"})
    phase = cds_phase(table(*rows))
    assert phase.tolist()[:6] == [0, 2, 0, 0, 1, 0]
    assert phase.isna().tolist()[6]


def test_gff3_fills_phase_and_ids_only_where_missing(tmp_path):
    rows = [{"type": "mRNA", "start": 10, "end": 59, "id": "t1"},
            {"type": "CDS", "start": 10, "end": 20, "parent": "t1"},
            {"type": "CDS", "start": 30, "end": 38, "parent": "t1", "phase": 1},
            {"type": "exon", "start": 10, "end": 20, "parent": "t1"},
            {"type": "exon", "start": 30, "end": 38, "parent": "t1", "id": "t1.exon1"}]
    path = write_gff3(table(*rows), tmp_path / "out.gff3", {"chr1": 100})
    features = feature_lines(path)
    assert [f[7] for f in features if f[2] == "CDS"] == ["0", "1"]
    ids = [f[8].split(";")[0] for f in features]
    assert len(set(ids)) == len(ids) and "ID=t1.exon1" in ids


def test_gff3_rejects_bad_tables_and_leaves_no_file(tmp_path):
    path = tmp_path / "out.gff3"
    with pytest.raises(GenoformerError, match="chr2"):
        write_gff3(table({"type": "gene", "start": 0, "end": 10, "seqid": "chr2"}), path, {"chr1": 100})
    with pytest.raises(GenoformerError, match="outside"):
        write_gff3(table({"type": "gene", "start": 0, "end": 101}), path, {"chr1": 100})
    assert list(tmp_path.iterdir()) == []


def test_gff3_ids_shared_only_by_lines_of_one_feature(tmp_path):
    rows = [{"type": "gene", "start": 0, "end": 50, "id": "x"},
            {"type": "mRNA", "start": 0, "end": 50, "id": "x-2", "parent": "x"},
            {"type": "CDS", "start": 0, "end": 10, "id": "cds1", "parent": "x-2"},
            {"type": "CDS", "start": 20, "end": 30, "id": "cds1", "parent": "x-2"},
            {"type": "intron", "start": 60, "end": 70, "id": "x"},
            {"type": "intron", "start": 80, "end": 90, "id": "x", "strand": "-"}]
    path = write_gff3(table(*rows), tmp_path / "out.gff3", {"chr1": 100})
    ids = [f[8].split(";")[0] for f in feature_lines(path)]
    assert ids == ["ID=x", "ID=x-2", "ID=cds1", "ID=cds1", "ID=x-3", "ID=x-4"]


def normalised(frame: pd.DataFrame) -> pd.DataFrame:
    """Comparable form: missing values as None, default index, and attributes without the
    ID/Name/Parent keys (the reader keeps them in the dict as well as in their columns)."""
    frame = frame.astype(object).where(frame.notna(), None).reset_index(drop=True)
    frame["attributes"] = [{k: v for k, v in a.items() if k not in ("ID", "Name", "Parent")}
                           for a in frame["attributes"]]
    return frame


def test_gff3_round_trip_through_read_annotation(tmp_path):
    rows = (gene_model("g1", "+", [(10, 20), (30, 38), (50, 59)], score=0.5)
            + gene_model("g2", "-", [(100, 107), (120, 130), (150, 161)]))
    original = table(*rows)
    original["phase"] = original["phase"].fillna(cds_phase(original))
    original.at[0, "attributes"] = {"prob": "0.93", "Note": "a,b;c"}
    path = write_gff3(original, tmp_path / "out.gff3", {"chr1": 200})
    back = read_annotation(path)
    pd.testing.assert_frame_equal(normalised(back), normalised(original))


exon_lists = st.lists(st.tuples(st.integers(1, 40), st.integers(1, 30)), min_size=1, max_size=4)
value_text = st.text(alphabet=st.sampled_from(list("ab1 ;=&,%\t\n.:/é")), min_size=1, max_size=8).filter(
    lambda s: s.strip() == s and s != "."
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(genes=st.lists(st.tuples(st.sampled_from("+-"), st.integers(0, 50), exon_lists, value_text,
                                st.one_of(st.just(np.nan), st.floats(0, 1))), min_size=1, max_size=5))
def test_gff3_round_trip_property(tmp_path, genes):
    rows, cursor = [], 0
    for index, (strand, gap, exons, note, score) in enumerate(genes):
        spans, cursor = [], cursor + gap
        for length, intron in exons:
            spans.append((cursor, cursor + length))
            cursor += length + intron
        model = gene_model(f"g{index}", strand, spans, score=score)
        model[0]["attributes"] = {"note": note}
        rows += model
    original = table(*rows)
    lengths = {"chr1": cursor + 1}
    path = write_gff3(original, tmp_path / "prop.gff3", lengths)
    back = read_annotation(path)
    expected = original.assign(phase=original["phase"].fillna(cds_phase(original)))
    pd.testing.assert_frame_equal(normalised(back), normalised(expected))
    # Writing what was read gives the same file.
    again = write_gff3(back, tmp_path / "again.gff3", lengths)
    assert again.read_text() == path.read_text()


REGION_CLASSES = ("promoter", "enhancer", "insulator")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(features=st.lists(st.tuples(st.sampled_from(REGION_CLASSES), st.sampled_from("+-."), st.integers(0, 150),
                                   st.integers(1, 60)), max_size=8),
       length=st.integers(1, 220))
def test_annotation_to_labels_to_gff3_to_annotation_property(tmp_path, features, length):
    """Labels painted from an annotation, decoded into features, written as GFF3 and read back paint the same labels
    (overlaps resolved by the scheme's priority, unstranded features on both strands, features clipped to the record)."""
    scheme = LabelScheme.from_names(REGION_CLASSES)
    kept = [(kind, strand, start, min(start + size, length)) for kind, strand, start, size in features if start < length]
    original = make_annotation({"seqid": ["r"] * len(kept), "type": [f[0] for f in kept], "strand": [f[1] for f in kept],
                                "start": [f[2] for f in kept], "end": [f[3] for f in kept]})
    labels = label_track(original, "r", 0, length, scheme)  # (2 strands, length)
    probs = (labels[:, None, :] == np.arange(scheme.n_classes)[None, :, None]).astype(np.float32)  # one-hot
    decoded = decode_record("A" * length, probs, "r", scheme)
    back = read_annotation(write_gff3(decoded, tmp_path / "regions.gff3", {"r": length}))
    assert np.array_equal(label_track(back, "r", 0, length, scheme), labels)
    assert list(zip(back["type"], back["strand"], back["start"], back["end"])) == \
        list(zip(decoded["type"], decoded["strand"], decoded["start"], decoded["end"]))


# --- BED ----------------------------------------------------------------------------------

def test_bed6_lines(tmp_path):
    rows = [{"type": "CDS", "start": 50, "end": 80, "strand": "-", "score": 0.8766},
            {"type": "promoter", "start": 5, "end": 9, "strand": ".", "name": "TATA box"},
            {"type": "CDS", "start": 1, "end": 4, "seqid": "chr0", "score": 1.2}]
    path = write_bed(table(*rows), tmp_path / "out.bed", sequence_lengths={"chr1": 100, "chr0": 10})
    assert path.read_text().splitlines() == [
        "chr1\t5\t9\tpromoter\t0\t.", "chr1\t50\t80\tCDS\t877\t-", "chr0\t1\t4\tCDS\t1000\t+"]
    path = write_bed(table(*rows), tmp_path / "named.bed", name="name", types=["promoter"])
    assert path.read_text() == "chr1\t5\t9\tTATA_box\t0\t.\n"


def test_bed12_lines(tmp_path):
    rows = [{"type": "mRNA", "start": 100, "end": 300, "id": "t1", "strand": "-", "score": 0.25},
            {"type": "exon", "start": 250, "end": 300, "parent": "t1", "strand": "-"},
            {"type": "exon", "start": 100, "end": 150, "parent": "t1", "strand": "-"},
            {"type": "CDS", "start": 120, "end": 150, "parent": "t1", "strand": "-"},
            {"type": "CDS", "start": 250, "end": 270, "parent": "t1", "strand": "-"},
            # Prokaryotic style: CDS straight under the gene, no exon rows.
            {"type": "gene", "start": 10, "end": 40, "id": "g2"},
            {"type": "CDS", "start": 10, "end": 40, "parent": "g2"}]
    path = write_bed12(table(*rows), tmp_path / "out.bed", sequence_lengths={"chr1": 1000})
    assert path.read_text().splitlines() == [
        "chr1\t10\t40\tg2\t0\t+\t10\t40\t0\t1\t30,\t0,",
        "chr1\t100\t300\tt1\t250\t-\t120\t270\t0\t2\t50,50,\t0,150,",
    ]


# --- tracks -------------------------------------------------------------------------------

def test_bedgraph_merges_runs(tmp_path):
    values = {"chr1": np.array([0, 0, 0.5, 0.5004, 0.9, np.nan, np.nan, 0.9], dtype=np.float32),
              "chr2": np.full(3, 0.25)}
    path = write_bedgraph(tmp_path / "p.bedgraph", "CDS +", values, sequence_lengths={"chr1": 8, "chr2": 3},
                          description='say "hi"')
    assert path.read_text().splitlines() == [
        "track type=bedGraph name=\"CDS +\" description=\"say 'hi'\"",
        "chr1\t0\t2\t0.0", "chr1\t2\t4\t0.5", "chr1\t4\t5\t0.9", "chr1\t7\t8\t0.9", "chr2\t0\t3\t0.25",
    ]
    with pytest.raises(GenoformerError, match="cover 3 bases"):
        write_bedgraph(tmp_path / "bad.bedgraph", "x", {"chr1": np.zeros(3)}, sequence_lengths={"chr1": 8})
    assert not (tmp_path / "bad.bedgraph").exists()


def test_bigwig_reads_back(tmp_path):
    pyBigWig = pytest.importorskip("pyBigWig")
    rng = np.random.default_rng(0)
    lengths = {"chrB": 5000, "chrA": 300}
    values = {name: np.repeat(rng.random(length // 10), 10) for name, length in lengths.items()}
    path = write_bigwig(tmp_path / "p.bw", values.items(), lengths)
    with pyBigWig.open(str(path)) as bw:
        assert bw.chroms() == lengths
        for name, track in values.items():
            np.testing.assert_allclose(bw.values(name, 0, lengths[name], numpy=True), np.round(track, 3), atol=1e-6)
        assert len(bw.intervals("chrA")) == 30
    with pytest.raises(GenoformerError, match="order"):
        write_bigwig(tmp_path / "q.bw", [("chrA", values["chrA"]), ("chrB", values["chrB"])], lengths)
    assert not (tmp_path / "q.bw").exists()


def test_bigwig_without_pybigwig_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyBigWig", None)
    with pytest.raises(GenoformerError, match="pyBigWig"):
        write_bigwig(tmp_path / "p.bw", {"chr1": np.zeros(4)}, {"chr1": 4})
    assert list(tmp_path.iterdir()) == []


def test_class_tracks_per_class_and_strand(tmp_path):
    probabilities = np.zeros((2, 3, 6), dtype=np.float32)
    probabilities[0, 2, 2:4] = 0.75  # CDS on +
    probabilities[1, 0] = 1.0        # all intergenic on -
    paths = write_class_tracks(tmp_path / "run", [("chr1", probabilities)], ["intergenic", "UTR", "CDS"],
                               sequence_lengths={"chr1": 6})
    assert [p.name for p in paths] == [
        f"run.{c}.{s}.bedgraph" for c in ("intergenic", "UTR", "CDS") for s in ("plus", "minus")]
    assert (tmp_path / "run.CDS.plus.bedgraph").read_text().splitlines()[1:] == [
        "chr1\t0\t2\t0.0", "chr1\t2\t4\t0.75", "chr1\t4\t6\t0.0"]
    assert (tmp_path / "run.intergenic.minus.bedgraph").read_text().splitlines()[1:] == ["chr1\t0\t6\t1.0"]
    with pytest.raises(GenoformerError, match="shape"):
        write_class_tracks(tmp_path / "bad", [("chr1", probabilities[:, :2])], ["a", "b", "c"],
                           sequence_lengths={"chr1": 6})
    assert not list(tmp_path.glob("bad*"))
