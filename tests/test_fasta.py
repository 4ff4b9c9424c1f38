"""Genome: real genomes, compression variants, indexes, bad input, processes."""
from __future__ import annotations

import gzip
import os
import pickle
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import ECOLI_FIRST_70, fasta_bytes, write_bgzf
from genoformer.errors import FastaError, RegionError
from genoformer.genome import Genome
from genoformer.genome import fasta as fasta_module
from genoformer.genome import fasta_scan
from genoformer.genome.fasta import reverse_complement


def read_fasta(path: Path) -> dict[str, str]:
    """Reference parser: slow and obvious."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    records, name = {}, None
    with opener(path, "rt", newline="") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if line.startswith(">"):
                name = line[1:].split()[0]
                records[name] = []
            elif name is not None:
                records[name].append(line)
    return {k: "".join(v) for k, v in records.items()}


def random_seq(rng: random.Random, n: int, alphabet: str = "ACGTacgtN") -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GENOFORMER_CACHE", str(cache))
    return cache


# ---------------------------------------------------------------------------------------------- real data


def test_ecoli_bundled_genome(ecoli_fasta):
    genome = Genome(ecoli_fasta)
    assert genome.names == ["NC_000913.3"]
    assert genome.lengths == {"NC_000913.3": 4_641_652}
    assert genome.fetch("NC_000913.3", 0, 70) == ECOLI_FIRST_70
    # thrL, the first gene (GFF 190..255, + strand) starts with ATG
    assert genome.fetch("NC_000913.3", 189, 192) == "ATG"
    tail = genome.fetch("NC_000913.3", 4_641_552, 4_641_652)
    assert genome.fetch("NC_000913.3", 4_641_552, 4_641_652, strand="-") == reverse_complement(tail)
    assert len(tail) == 100


def test_ecoli_second_open_is_fast_and_quiet(ecoli_fasta, fresh_cache, capsys):
    Genome(ecoli_fasta)
    assert "plain gzip" in capsys.readouterr().err  # converted once, and says so
    t0 = time.perf_counter()
    genome = Genome(ecoli_fasta)
    elapsed = time.perf_counter() - t0
    assert capsys.readouterr().err == ""
    assert elapsed < 0.5, f"second open took {elapsed:.2f} s"
    assert genome.fetch("NC_000913.3", 0, 70) == ECOLI_FIRST_70


def test_athaliana_slices_trust_sequence_not_header(athaliana_fasta):
    genome = Genome(athaliana_fasta)
    assert genome.names == ["Chr1", "Chr2", "Chr3", "Chr4", "Chr5", "ChrM", "ChrC"]
    assert genome.lengths["Chr1"] == 304_276  # header says 1..304277
    truth = read_fasta(athaliana_fasta)
    assert genome.lengths == {k: len(v) for k, v in truth.items()}
    rng = random.Random(1)
    for name, seq in truth.items():
        assert genome.fetch(name, len(seq) - 50, len(seq)) == seq[-50:]
        for _ in range(20):
            a = rng.randrange(len(seq))
            b = rng.randrange(a + 1, min(len(seq), a + 3000) + 1)
            assert genome.fetch(name, a, b) == seq[a:b]
    assert genome.fetch("Chr2", 0, 1000) == "N" * 1000  # the slice starts in a gap
    with pytest.raises(RegionError, match="304,276"):
        genome.fetch("Chr1", 304_000, 304_277)


def test_lambda_and_celegans(lambda_fasta, celegans_fasta):
    phage = Genome(lambda_fasta)
    assert phage.lengths == {"gi|9626243|ref|NC_001416.1|": 48_502}
    truth = read_fasta(lambda_fasta)["gi|9626243|ref|NC_001416.1|"]
    assert phage.fetch(phage.names[0], 0, 48_502) == truth
    worm = Genome(celegans_fasta)
    assert worm.names == ["I", "II", "III", "IV", "V", "X", "MtDNA"]
    assert worm.lengths["MtDNA"] == 137


# ------------------------------------------------------------------------------------------ compression


def test_plain_gzip_bgzf_give_identical_sequence(athaliana_fasta, write_fasta, capsys):
    truth = read_fasta(athaliana_fasta)
    subset = {k: truth[k] for k in ("Chr2", "ChrM", "ChrC")}
    variants = {}
    for compression in (None, "gzip", "bgzf", "bgzf64k"):
        path = write_fasta(subset, f"{compression}.fa.gz" if compression else "plain.fa", width=79,
                           compression=compression)
        variants[compression] = Genome(path)
        notes = capsys.readouterr().err
        # plain and htslib-style BGZF are read in place; the others are converted once
        assert ("converting it once into an indexed BGZF copy" in notes) == (compression in ("gzip", "bgzf64k"))
    rng = random.Random(2)
    for name, seq in subset.items():
        starts = [rng.randrange(len(seq)) for _ in range(40)]
        # around the starts of 64 KiB blocks, where pyfaidx alone fails on Biopython-written BGZF
        starts += [p for k in range(1, 4) for p in range(k * 64_350, k * 64_350 + 40) if p < len(seq)]
        for a in starts:
            b = min(len(seq), a + rng.randrange(1, 500))
            fetched = {c: g.fetch(name, a, b) for c, g in variants.items()}
            assert set(fetched.values()) == {seq[a:b]}, (name, a, b)


def test_bgzf_at_every_block_boundary(write_fasta):
    rng = random.Random(3)
    seq = random_seq(rng, 400_000, "ACGT")
    header_bytes = len(">r\n")
    for compression, block in (("bgzf", 65280), ("bgzf64k", 65536)):
        genome = Genome(write_fasta({"r": seq}, f"{compression}.fa.gz", compression=compression))
        for k in range(1, 6):
            u = k * block - header_bytes  # uncompressed offset within the record's bytes
            base = u - u // 61
            for a in range(base - 2, base + 3):
                assert genome.fetch("r", a, a + 5) == seq[a : a + 5]


def test_gzip_detected_by_content_not_suffix(write_fasta, capsys):
    records = {"a": "ACGTACGTAC", "b": "GGGCCC"}
    gz_named_plain = write_fasta(records, "genome.fa", compression="gzip")
    plain_named_gz = write_fasta(records, "plain.fa.gz")
    bgzf_named_plain = write_fasta(records, "blocks.fasta", compression="bgzf")
    for path in (gz_named_plain, plain_named_gz, bgzf_named_plain):
        genome = Genome(path)
        assert genome.fetch("a", 2, 8) == "GTACGT"
        assert genome.fetch("b", 0, 6) == "GGGCCC"
    assert capsys.readouterr().err.count("converting it once into an indexed BGZF copy") == 1  # only real plain gzip


def test_crlf_line_endings_work(write_fasta):
    rng = random.Random(4)
    records = {f"r{i}": random_seq(rng, n) for i, n in enumerate((1000, 61, 60, 7))}
    for compression in (None, "gzip"):
        name = "crlf.fa.gz" if compression else "crlf.fa"
        genome = Genome(write_fasta(records, name, newline="\r\n", compression=compression))
        assert genome.lengths == {k: len(v) for k, v in records.items()}
        for k, seq in records.items():
            assert genome.fetch(k, 0, len(seq)) == seq
            for a in range(0, len(seq), 13):
                assert genome.fetch(k, a, min(len(seq), a + 71)) == seq[a : a + 71]


def test_unequal_lines_and_unwrapped_records_are_rewrapped(write_fasta, capsys):
    rng = random.Random(5)
    seqs = {"wrapped": random_seq(rng, 300), "single": random_seq(rng, 5000), "last": random_seq(rng, 10)}
    ragged = ">wrapped\n" + "\n".join([seqs["wrapped"][:70], seqs["wrapped"][70:100], seqs["wrapped"][100:]])
    text = ragged + "\n>single desc\n" + seqs["single"] + "\n>last\n" + seqs["last"]  # no final newline
    genome = Genome(write_fasta(text.encode(), "ragged.fa"))
    assert "'wrapped' has sequence lines of unequal length" in capsys.readouterr().err
    for name, seq in seqs.items():
        assert genome.fetch(name, 0, len(seq)) == seq
        assert genome.fetch(name, 3, 9) == seq[3:9]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=4),
    width=st.integers(1, 90),
    newline=st.sampled_from(["\n", "\r\n"]),
    block=st.integers(1, 97),
    seed=st.integers(0, 2**16),
)
def test_scan_is_independent_of_block_size(tmp_path, monkeypatch, lengths, width, newline, block, seed):
    """Lines and CRLF pairs split across scan blocks of any size give the same index and sequence."""
    monkeypatch.setattr(fasta_scan, "_SCAN_BLOCK", block)
    monkeypatch.setenv("GENOFORMER_CACHE", str(tmp_path / f"cache{seed}-{block}"))
    rng = random.Random(seed)
    records = {f"s{i} description {i}": random_seq(rng, n) for i, n in enumerate(lengths)}
    path = tmp_path / f"t{seed}-{block}-{width}.fa"
    path.write_bytes(fasta_bytes(records, width=width, newline=newline))
    genome = Genome(path)
    for header, seq in records.items():
        name = header.split()[0]
        assert genome.lengths[name] == len(seq)
        assert genome.fetch(name, 0, len(seq)) == seq


# ---------------------------------------------------------------------------------------- case, strand


def test_case_soft_mask_and_iupac_reverse_complement(write_fasta):
    path = write_fasta({"m": "ACGTacgtNNnnRYKMBVDHSW-acgu"}, width=7)
    genome = Genome(path)
    assert genome.fetch("m", 0, 12) == "ACGTacgtNNnn"
    assert genome.fetch("m", 4, 8, strand="-") == "acgt"
    assert genome.fetch("m", 12, 27, strand="-") == "acgt-WSDHBVKMRY"
    np.testing.assert_array_equal(genome.soft_mask("m", 2, 12), [0, 0, 1, 1, 1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(genome.soft_mask("m", 2, 6, strand="-"), [1, 1, 0, 0])
    upper = Genome(path, uppercase=True)
    assert upper.fetch("m", 0, 12) == "ACGTACGTNNNN"
    assert upper.fetch("m", 4, 8, strand="-") == "ACGT"
    # the mask still comes from the file's case
    np.testing.assert_array_equal(upper.soft_mask("m", 2, 6), [0, 0, 1, 1])


def test_reverse_complement_twice_is_identity():
    seq = "ACGTRYSWKMBDHVNacgtryswkmbdhvn-"
    assert reverse_complement(reverse_complement(seq)) == seq


@pytest.mark.parametrize(
    "name, start, end, expected",
    [
        ("nope", 0, 5, r"no record named 'nope' \(records: chr1, chr2\)"),
        ("chr1", -1, 5, r"record 'chr1' \(length 100\).*start -1 is negative"),
        ("chr1", 90, 101, r"record 'chr1' \(length 100\).*end 101 is beyond"),
        ("chr1", 50, 50, r"record 'chr1' \(length 100\).*start 50 is not before end 50"),
        ("chr1", 60, 10, r"start 60 is not before end 10"),
        ("chr1", 1.5, 10, r"must be integers"),
    ],
)
def test_intervals_outside_records_raise(write_fasta, name, start, end, expected):
    path = write_fasta({"chr1": "A" * 100, "chr2": "C" * 10})
    genome = Genome(path)
    with pytest.raises(RegionError, match=expected) as info:
        genome.fetch(name, start, end)
    assert str(path) in str(info.value)
    assert genome.validate_interval("chr1", np.int64(0), 100) == (0, 100)


# ------------------------------------------------------------------------------------------- indexes


def test_fai_written_beside_writable_fasta(write_fasta):
    path = write_fasta({"a": "ACGT" * 30, "b": "GG"}, width=50)
    Genome(path)
    assert Path(f"{path}.fai").read_text() == "a\t120\t3\t50\t51\nb\t2\t129\t2\t3\n"


def test_read_only_folder_puts_index_in_cache(write_fasta, fresh_cache, monkeypatch):
    real_writable = fasta_module._writable
    for compression, name in ((None, "ro-plain/genome.fa"), ("bgzf", "ro-bgzf/genome.fa.gz")):
        path = write_fasta({"a": "ACGTN" * 100}, name, compression=compression)
        ro = path.parent
        # tests run as root, where chmod does not stop writes: the check itself is what is tested
        monkeypatch.setattr(
            fasta_module, "_writable", lambda folder: folder != ro.resolve() and real_writable(folder)
        )
        os.chmod(ro, 0o555)
        try:
            genome = Genome(path)
            assert genome.fetch("a", 3, 8) == "TNACG"
            assert sorted(p.name for p in ro.iterdir()) == [path.name]  # nothing written beside it
            assert {p.suffix for p in (fresh_cache / "index").iterdir()} >= {".fai"}
        finally:
            os.chmod(ro, 0o755)
    assert {p.suffix for p in (fresh_cache / "index").iterdir()} == {".fai", ".gzi"}


def test_stale_fai_is_rebuilt_never_trusted(write_fasta):
    path = write_fasta({"a": "AAAACCCCGG", "b": "TTTT"}, width=4)
    assert Genome(path).fetch("b", 0, 4) == "TTTT"
    fai = Path(f"{path}.fai")
    old_fai = fai.read_text()

    # the FASTA changes after its index was written: new lengths and offsets
    write_fasta({"a": "GGGG", "b": "CCCCAAAATTTT"}, width=3)
    later = fai.stat().st_mtime + 5
    os.utime(path, (later, later))
    genome = Genome(path)
    assert genome.lengths == {"a": 4, "b": 12}
    assert genome.fetch("b", 0, 12) == "CCCCAAAATTTT"
    assert fai.read_text() != old_fai

    # an index that is newer than the FASTA but wrong (copied from elsewhere) is not trusted either
    fai.write_text(old_fai)
    os.utime(fai, (later + 10, later + 10))
    genome = Genome(path)
    assert genome.fetch("b", 4, 8) == "AAAA"
    assert fai.read_text() == "a\t4\t3\t3\t4\nb\t12\t12\t3\t4\n"


# ------------------------------------------------------------------------------------------- bad input


def test_missing_directory_empty(tmp_path):
    with pytest.raises(FastaError, match="no such file") as info:
        Genome(tmp_path / "absent.fa")
    assert "absent.fa" in str(info.value)
    with pytest.raises(FastaError, match="is a directory"):
        Genome(tmp_path)
    empty = tmp_path / "empty.fa"
    empty.touch()
    with pytest.raises(FastaError, match=r"empty\.fa: empty file"):
        Genome(empty)


def test_gff_passed_as_fasta(ecoli_gff):
    with pytest.raises(FastaError) as info:
        Genome(ecoli_gff)
    message = str(info.value)
    assert ecoli_gff.name in message and "line 1" in message
    assert "not a FASTA file" in message and "##gff-version 3" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"\n\n>a\nACGT\n>b\n>c\nAC\n", r"record 'b', line 5: header has no sequence"),
        (b">a\nACGT\n>b desc\n\n", r"record 'b', line 3: header has no sequence"),
        (b">a\nACGT\n>b\nAC\n>a again\nGG\n", r"record 'a', line 5: duplicate record name \(first used on line 1\)"),
        (b">a\nACGT\nAC1T\n", r"record 'a', line 3: invalid character '1' at column 3"),
        (b">a\nACGT\n>b\nACGTACGT\nAC*\n", r"record 'b', line 5: invalid character '\*' at column 3"),
        (b">a\nACGT\nAC GT\n", r"record 'a', line 3: invalid character a space at column 3"),
        (b">a\nACGT\nACGT\t\n", r"record 'a', line 3: invalid character a tab at column 5"),
        (b">a\rACGT\rACGT\r", r"line 1: carriage return inside a header line"),
        (b">\nACGT\n", r"line 1: header line has no record name"),
        (b"> a\nACGT\n", r"line 1: header line has no record name"),
        (b"ACGT\n>a\nACGT\n", r"line 1: not a FASTA file: expected a '>' header line, found 'ACGT'"),
        (b"\n  \n", r"no '>' header line"),
        (b">a\nAC\xc3\xa9T\n", r"record 'a', line 2: invalid character byte 0xc3 at column 3"),
    ],
)
def test_malformed_fasta_names_file_record_and_line(write_fasta, text, expected):
    for compression in (None, "gzip"):
        path = write_fasta(text, "bad.fa.gz" if compression else "bad.fa", compression=compression)
        with pytest.raises(FastaError, match=expected) as info:
            Genome(path)
        assert str(info.value).startswith(str(path))


def test_invalid_character_in_a_line_spanning_scan_blocks(write_fasta, monkeypatch):
    monkeypatch.setattr(fasta_scan, "_SCAN_BLOCK", 16)
    path = write_fasta(b">first\nACGT\n>long\n" + b"A" * 100 + b"*" + b"C" * 50 + b"\n")
    with pytest.raises(FastaError, match=r"record 'long', line 4: invalid character '\*' at column 101"):
        Genome(path)


def test_truncated_and_foreign_compression(lambda_fasta, tmp_path):
    data = lambda_fasta.read_bytes()
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FastaError, match=r"cut\.fa\.gz: compressed data ends early"):
        Genome(cut)
    blocks = tmp_path / "blocks.fa.gz"
    write_bgzf(blocks, fasta_bytes({"r": "ACGT" * 50_000}))
    cut_at_block = tmp_path / "cut_at_block.fa.gz"
    cut_at_block.write_bytes(blocks.read_bytes()[: int(fasta_scan.bgzf_blocks(blocks)[2, 0])])
    with pytest.raises(FastaError, match=r"cut_at_block\.fa\.gz: BGZF file ends without its end-of-file block"):
        Genome(cut_at_block)
    bz = tmp_path / "genome.fa.bz2"
    bz.write_bytes(b"BZh91AY&SY" + b"\0" * 20)
    with pytest.raises(FastaError, match=r"genome\.fa\.bz2: compressed with bzip2"):
        Genome(bz)


# ------------------------------------------------------------------------------------------ processes


class _Windows(torch.utils.data.Dataset):
    def __init__(self, genome: Genome, spans):
        self.genome, self.spans = genome, spans

    def __len__(self):
        return len(self.spans)

    def __getitem__(self, i):
        name, a, b, strand = self.spans[i]
        seq = self.genome.fetch(name, a, b, strand)
        return seq, os.getpid(), self.genome._pid  # the handle used was opened by this process


def test_pickle_drops_handle_and_workers_get_correct_sequence(athaliana_fasta):
    genome = Genome(athaliana_fasta)
    state = genome.__getstate__()
    assert state["_faidx"] is None
    clone = pickle.loads(pickle.dumps(genome))
    assert clone.fetch("Chr3", 1000, 1100) == genome.fetch("Chr3", 1000, 1100)

    rng = random.Random(6)
    spans = []
    for _ in range(64):
        name = rng.choice(genome.names[:5])
        a = rng.randrange(genome.lengths[name] - 2000)
        spans.append((name, a, a + rng.randrange(1, 2000), rng.choice("+-")))
    expected = [genome.fetch(*s) for s in spans]
    loader = torch.utils.data.DataLoader(
        _Windows(genome, spans), batch_size=4, num_workers=2, collate_fn=lambda batch: batch
    )
    got, pids = [], set()
    for batch in loader:
        got.extend(seq for seq, _, _ in batch)
        pids.update(pid for _, pid, _ in batch)
        assert all(pid == handle_pid for _, pid, handle_pid in batch)
    assert got == expected
    assert os.getpid() not in pids and len(pids) == 2


def test_context_manager_closes(write_fasta):
    with Genome(write_fasta({"a": "ACGT"})) as genome:
        assert genome.fetch("a", 1, 3) == "CG"
        assert "a" in genome and "b" not in genome
    assert genome._faidx is None
    assert genome.fetch("a", 0, 2) == "AC"  # reopened lazily
