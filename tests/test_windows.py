"""GenomeWindows and BED regions: tiling arithmetic, N filtering, sampling, bad input."""
from __future__ import annotations

import pickle
import random
import time
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genoformer.errors import AnnotationError, ConfigError, RegionError
from genoformer.genome import Genome, GenomeWindows, Interval, read_bed_regions
from genoformer.genome import windows as windows_module
from genoformer.genome.fasta import reverse_complement
from genoformer.genome.intervals import subtract_intervals


def reference_tiling(spans, length, stride):
    """Windows by the definition: step by stride until a window reaches the span end."""
    out = []
    for name, s, e, strand in spans:
        a = s
        while a < e:
            out.append(Interval(name, a, min(a + length, e), strand))
            if a + length >= e:
                break
            a += stride
    return out


def n_fraction(seq: str) -> float:
    return sum(c in "Nn" for c in seq) / len(seq)


@pytest.fixture
def small_genome(write_fasta):
    return Genome(write_fasta({"a": "ACGTACGTAC", "b": "GGCC", "c": "ACGTACGTACG", "d": "T"}, width=3))


@pytest.mark.parametrize("length, stride", [(4, 4), (4, 2), (4, 3), (2, 4), (1, 1), (20, 5), (4, None)])
def test_tiling_matches_definition(small_genome, length, stride):
    windows = GenomeWindows(small_genome, length, stride)
    spans = [(n, 0, small_genome.lengths[n], "+") for n in small_genome.names]
    expected = reference_tiling(spans, length, stride or length)
    assert list(windows) == expected
    assert len(windows) == len(expected)
    assert [windows[i] for i in range(-len(expected), 0)] == expected
    for w in windows:  # never across a record end; last windows are clipped, not padded
        assert 0 <= w.start < w.end <= small_genome.lengths[w.name]
        assert windows.fetch(w) == small_genome.fetch(w.name, w.start, w.end)
    with pytest.raises(IndexError):
        windows[len(expected)]


def test_last_window_is_clipped_and_every_base_covered(small_genome):
    windows = GenomeWindows(small_genome, 4, 3)
    assert [w for w in windows if w.name == "c"] == [
        Interval("c", 0, 4), Interval("c", 3, 7), Interval("c", 6, 10), Interval("c", 9, 11)
    ]
    assert windows.fetch(len(windows) - 1) == "T"  # record "d" is shorter than a window
    for name, length in small_genome.lengths.items():
        covered = np.zeros(length, dtype=bool)
        for w in windows:
            if w.name == name:
                covered[w.start : w.end] = True
        assert covered.all()


@settings(max_examples=60, deadline=None)
@given(
    spans=st.lists(st.integers(1, 200), min_size=1, max_size=5),
    length=st.integers(1, 50),
    stride=st.integers(1, 60),
)
def test_tiling_property(spans, length, stride):
    fake = SimpleNamespace(names=[f"r{i}" for i in range(len(spans))],
                           lengths={f"r{i}": n for i, n in enumerate(spans)})
    windows = GenomeWindows(fake, length, stride)
    expected = reference_tiling([(f"r{i}", 0, n, "+") for i, n in enumerate(spans)], length, stride)
    assert list(windows) == expected


@settings(max_examples=60, deadline=None)
@given(
    spans=st.lists(st.integers(1, 200), min_size=1, max_size=5),
    length=st.integers(1, 50),
    overlap=st.integers(0, 49),
    cut=st.data(),
)
def test_every_base_covered_and_no_window_crosses_a_record_end(spans, length, overlap, cut):
    """The properties themselves (not a reference): with stride <= length every base of every record
    or region is covered, each window lies inside its record (or region), and only the last window
    of a record/region is shorter than ``length``."""
    lengths = {f"r{i}": n for i, n in enumerate(spans)}
    fake = SimpleNamespace(names=list(lengths), lengths=lengths,
                           validate_interval=lambda name, start, end: (start, end))
    stride = max(1, length - overlap)
    regions = None
    if cut.draw(st.booleans()):
        regions = []
        for name, n in lengths.items():
            a = cut.draw(st.integers(0, n - 1))
            regions.append(Interval(name, a, cut.draw(st.integers(a + 1, n))))
    windows = list(GenomeWindows(fake, length, stride, regions=regions))
    expected = regions or [Interval(name, 0, n) for name, n in lengths.items()]
    for span in expected:
        mine = [w for w in windows if w.name == span.name]
        assert all(span.start <= w.start < w.end <= span.end <= lengths[w.name] for w in mine)
        assert all(len(w) == length for w in mine[:-1]) and mine[-1].end == span.end
        covered = np.zeros(lengths[span.name], dtype=np.int64)
        for w in mine:
            covered[w.start:w.end] += 1
        assert (covered[span.start:span.end] >= 1).all()
        assert not covered[:span.start].any() and not covered[span.end:].any()


def test_whole_human_sized_genome_is_arithmetic():
    """3.1 Gb in 1 kb windows: no per-window objects, constant-time indexing."""
    lengths = {f"chr{i}": 248_956_422 - i * 9_000_000 for i in range(1, 23)} | {"chrX": 156_040_895}
    fake = SimpleNamespace(names=list(lengths), lengths=lengths)
    t0 = time.perf_counter()
    windows = GenomeWindows(fake, 1000, 500)
    assert time.perf_counter() - t0 < 0.1
    expected = sum(1 + -(-(n - 1000) // 500) for n in lengths.values())
    assert len(windows) == expected > 6_000_000
    last = windows[-1]
    assert last.name == "chrX" and last.end == 156_040_895 and last.start == 156_040_000
    assert windows[int(1 + -(-(lengths["chr1"] - 1000) // 500))] == Interval("chr2", 0, 1000)
    assert len(pickle.dumps(windows)) < 10_000


def test_regions_from_intervals_keep_strand(small_genome):
    regions = [Interval("a", 2, 9, "-"), Interval("c", 5, 11)]
    windows = GenomeWindows(small_genome, 4, 4, regions=regions)
    assert list(windows) == [
        Interval("a", 2, 6, "-"), Interval("a", 6, 9, "-"), Interval("c", 5, 9), Interval("c", 9, 11)
    ]
    assert windows.fetch(0) == reverse_complement(small_genome.fetch("a", 2, 6))


def test_regions_from_bed_file(small_genome, tmp_path):
    bed = tmp_path / "regions.bed"
    bed.write_text(
        "track name=test\nbrowser position a:1-5\n# comment\n\n"
        "a\t0\t10\tfirst\t0\t-\nc\t3\t8\n"
    )
    assert read_bed_regions(bed) == [Interval("a", 0, 10, "-"), Interval("c", 3, 8, ".")]
    windows = GenomeWindows(small_genome, 5, regions=bed)
    assert list(windows) == [Interval("a", 0, 5, "-"), Interval("a", 5, 10, "-"), Interval("c", 3, 8, ".")]
    assert windows.fetch(2) == small_genome.fetch("c", 3, 8)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("# only a comment\n", r"no regions"),
        ("a\t0\t5\nb\t7\n", r"line 2: a BED line needs at least 3 tab-separated columns"),
        ("a 0 5\n", r"line 1: a BED line needs at least 3 tab-separated columns"),
        ("track x\na\tzero\t5\n", r"line 2: column 2 \(start\) is not an integer"),
        ("a\t0\t5.5\n", r"line 1: column 3 \(end\) is not an integer"),
        ("a\t-1\t5\n", r"line 1: start is negative"),
        ("a\t0\t5\na\t5\t5\n", r"line 2: end is not after start"),
        ("a\t0\t5\tn\t0\tx\n", r"line 1: column 6 \(strand\) must be"),
    ],
)
def test_bad_bed_names_file_and_line(tmp_path, text, expected):
    bed = tmp_path / "bad.bed"
    bed.write_text(text)
    with pytest.raises(AnnotationError, match=expected) as info:
        read_bed_regions(bed)
    assert str(info.value).startswith(str(bed))


def test_regions_outside_the_genome(small_genome, tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("a\t0\t5\nzz\t0\t5\n")
    with pytest.raises(RegionError, match=r"r\.bed: region 2: .*no record named 'zz'"):
        GenomeWindows(small_genome, 4, regions=bed)
    with pytest.raises(RegionError, match=r"record 'b' \(length 4\).*end 9 is beyond"):
        GenomeWindows(small_genome, 4, regions=[Interval("b", 0, 9)])
    with pytest.raises(RegionError, match="start < 0"):
        Interval("a", -1, 3)
    with pytest.raises(AnnotationError, match="no such file"):
        read_bed_regions(tmp_path / "absent.bed")


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"length": 0}, "length must be positive"),
        ({"length": 10, "stride": -1}, "stride must be positive"),
        ({"length": 2.5}, "length must be an integer"),
        ({"length": 10, "max_n_fraction": 1.5}, "max_n_fraction must be between 0 and 1"),
    ],
)
def test_bad_window_settings(small_genome, kwargs, expected):
    with pytest.raises(ConfigError, match=expected):
        GenomeWindows(small_genome, **kwargs)


def test_n_filter_on_real_athaliana_gaps(athaliana_fasta):
    """Chr2 starts with 1,000 N and has 120 N at 28,030; Chr3 starts with 100 N; Chr4 with 1,000 N."""
    genome = Genome(athaliana_fasta)
    regions = [Interval(name, 0, 40_000) for name in ("Chr2", "Chr3", "Chr4")]
    everything = GenomeWindows(genome, 1000, 500, regions=regions)
    kept = GenomeWindows(genome, 1000, 500, regions=regions, max_n_fraction=0.1)
    expected = [w for w in everything if n_fraction(everything.fetch(w)) <= 0.1]
    assert list(kept) == expected
    dropped = set(everything) - set(kept)
    assert dropped == {
        Interval("Chr2", 0, 1000), Interval("Chr2", 500, 1500),
        Interval("Chr2", 27_500, 28_500), Interval("Chr2", 28_000, 29_000),
        Interval("Chr4", 0, 1000), Interval("Chr4", 500, 1500),
    }
    assert Interval("Chr3", 0, 1000) in set(kept)  # exactly 10% N is kept
    assert [kept[i] for i in (-1, 0, 5)] == [expected[-1], expected[0], expected[5]]
    strict = GenomeWindows(genome, 1000, 500, regions=regions, max_n_fraction=0.0)
    assert Interval("Chr3", 0, 1000) not in set(strict)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**16),
    length=st.integers(1, 40),
    stride=st.integers(1, 40),
    limit=st.sampled_from([0.0, 0.25, 0.5, 0.99]),
    chunk=st.integers(1, 50),
)
def test_n_filter_property(write_fasta, monkeypatch, seed, length, stride, limit, chunk):
    """N runs cut by the scan's chunk boundaries; windows kept iff their N fraction is within limit."""
    monkeypatch.setattr(windows_module, "_N_SCAN_CHUNK", chunk)
    rng = random.Random(seed)
    records = {}
    for i in range(rng.randint(1, 3)):
        parts = [rng.choice(["N" * rng.randint(1, 30), "n" * rng.randint(1, 5), "ACGT" * rng.randint(0, 8)])
                 for _ in range(rng.randint(1, 6))]
        records[f"r{i}"] = "".join(parts) or "A"
    genome = Genome(write_fasta(records, f"n{seed}.fa"))
    everything = GenomeWindows(genome, length, stride)
    expected = [w for w in everything if n_fraction(everything.fetch(w)) <= limit]
    kept = GenomeWindows(genome, length, stride, max_n_fraction=limit)
    assert list(kept) == expected
    assert len(kept) == len(expected)


def test_sample_is_reproducible_weighted_and_full_length(write_fasta):
    rng = random.Random(7)
    genome = Genome(write_fasta({
        "big": "".join(rng.choice("ACGT") for _ in range(9000)),
        "small": "".join(rng.choice("ACGT") for _ in range(1000)),
        "tiny": "ACGTA",
    }))
    windows = GenomeWindows(genome, 200)
    first = windows.sample(3000, seed=11)
    assert first == windows.sample(3000, seed=11)
    assert first != windows.sample(3000, seed=12)
    assert len(first) == 3000
    for w in first:
        assert len(w) == (5 if w.name == "tiny" else 200)
        assert 0 <= w.start and w.end <= genome.lengths[w.name]
    share = sum(w.name == "big" for w in first) / len(first)
    assert abs(share - 9000 / 10005) < 0.03
    assert {w for w in first if w.name == "tiny"} <= {Interval("tiny", 0, 5)}
    assert windows.sample(0, seed=1) == []


def test_sample_respects_n_limit_and_regions(write_fasta):
    genome = Genome(write_fasta({"r": "N" * 500 + "ACGT" * 125 + "N" * 500}))
    windows = GenomeWindows(genome, 50, max_n_fraction=0.2)
    picks = windows.sample(200, seed=3)
    assert all(n_fraction(windows.fetch(w)) <= 0.2 for w in picks)
    assert all(490 <= w.start and w.end <= 1010 for w in picks)
    in_region = GenomeWindows(genome, 50, regions=[Interval("r", 600, 700, "-")]).sample(50, seed=1)
    assert all(600 <= w.start and w.end <= 700 and w.strand == "-" for w in in_region)
    all_n = GenomeWindows(genome, 50, regions=[Interval("r", 0, 400)], max_n_fraction=0.5)
    assert len(all_n) == 0
    with pytest.raises(ConfigError, match="almost all N"):
        all_n.sample(5, seed=0)


def test_windows_pickle(small_genome):
    windows = GenomeWindows(small_genome, 4, 2)
    clone = pickle.loads(pickle.dumps(windows))
    assert list(clone) == list(windows)
    assert clone.fetch(3) == windows.fetch(3)


def test_subtract_intervals():
    base = [Interval("a", 0, 100, "-"), Interval("b", 0, 10)]
    holes = [Interval("a", 90, 120), Interval("a", 10, 20), Interval("a", 15, 30), Interval("c", 0, 5)]
    assert subtract_intervals(base, holes) == [
        Interval("a", 0, 10, "-"), Interval("a", 30, 90, "-"), Interval("b", 0, 10)
    ]
    assert subtract_intervals([Interval("a", 10, 20)], [Interval("a", 0, 50)]) == []
