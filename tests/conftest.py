"""Shared fixtures: real data files, a synthetic FASTA writer, and a private cache folder per session.

Real data come only from the repository, so a fresh clone tests itself: the bundled genomes in ``data/``
and the few small extra files in ``tests/data/`` (phage lambda; E. coli GenBank slices; see its README).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from Bio import bgzf

from genoformer.genome.annotation import read_annotation

REPO = Path(__file__).parents[1]
BUNDLED_DATA = REPO / "data"
TEST_DATA = REPO / "tests" / "data"

ECOLI_FASTA = BUNDLED_DATA / "GCF_000005845.2_ASM584v2_genomic.fna.gz"
ECOLI_GFF = BUNDLED_DATA / "GCF_000005845.2_ASM584v2_genomic.gff.gz"
ATHALIANA_FASTA = BUNDLED_DATA / "model_organisms" / "A.thaliana.fa.gz"
ATHALIANA_GFF = BUNDLED_DATA / "model_organisms" / "A.thaliana.gff.gz"
CELEGANS_FASTA = BUNDLED_DATA / "model_organisms" / "C.elegans.fa.gz"
CELEGANS_GFF = BUNDLED_DATA / "model_organisms" / "C.elegans.gff.gz"
# Slices of E. coli's GenBank record cut by Biopython, which keeps the features lying wholly inside a
# slice and counts their coordinates from its start: (file, its first base, its end) in genome
# coordinates. The first 259,020 bases (thrL .. the crl pseudogene, ending between crl and phoE) and
# the prfB gene alone (its CDS skips one base: a frameshift). The whole record is 3 MB gzipped.
ECOLI_GENBANK_SLICES = (
    (TEST_DATA / "ecoli_k12_0-259020.gbff.gz", 0, 259_020),
    (TEST_DATA / "ecoli_k12_prfB_3035180-3036320.gbff.gz", 3_035_180, 3_036_320),
)

ECOLI_FIRST_70 = "AGCTTTTCATTCTGACTGCAACGGGCAATATGTCTCTGTGTGGATTAAAAAAAGAGTGTCTGATAGCAGC"

# A GenBank record with features but no sequence (CONTIG instead of ORIGIN).
NO_SEQUENCE_GENBANK = """\
LOCUS       chrN                      40 bp    DNA     linear   UNK 01-JAN-1980
DEFINITION  annotation only.
ACCESSION   chrN
VERSION     chrN
FEATURES             Location/Qualifiers
     gene            complement(3..30)
                     /locus_tag="N1"
CONTIG      join(X00001.1:1..40)
//
"""


def _existing(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"test data file missing: {path} (data/ and tests/data/ are part of the repository)")
    return path


def read_genbank_slice(path: Path, first_base: int) -> pd.DataFrame:
    """A GenBank slice's annotation rows (line numbers of its file) placed at their genome coordinates."""
    table = read_annotation(_existing(path))
    return table.assign(start=table["start"] + first_base, end=table["end"] + first_base)


def read_ecoli_genbank() -> pd.DataFrame:
    """The rows of every E. coli GenBank slice, at genome coordinates (line numbers repeat across files)."""
    return pd.concat([read_genbank_slice(path, first) for path, first, _ in ECOLI_GENBANK_SLICES])


@pytest.fixture(scope="session", autouse=True)
def genoformer_cache(tmp_path_factory):
    """Every test session gets an empty cache folder, so tests never read or fill ~/.cache."""
    path = tmp_path_factory.mktemp("genoformer-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENOFORMER_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def ecoli_fasta() -> Path:
    """Bundled E. coli K-12 genome (plain gzip, one record NC_000913.3, 4,641,652 bp)."""
    return _existing(ECOLI_FASTA)


@pytest.fixture(scope="session")
def ecoli_gff() -> Path:
    return _existing(ECOLI_GFF)


@pytest.fixture(scope="session")
def athaliana_fasta() -> Path:
    """A. thaliana 1% slices, 7 records; each sequence is one base shorter than its header says."""
    return _existing(ATHALIANA_FASTA)


@pytest.fixture(scope="session")
def athaliana_gff() -> Path:
    return _existing(ATHALIANA_GFF)


@pytest.fixture(scope="module")
def athaliana(athaliana_fasta, athaliana_gff):
    """The A. thaliana slices read: (Genome, read_annotation table), once per test module."""
    from genoformer.genome import Genome, read_annotation

    return Genome(athaliana_fasta), read_annotation(athaliana_gff)


@pytest.fixture(scope="session")
def celegans_fasta() -> Path:
    return _existing(CELEGANS_FASTA)


@pytest.fixture(scope="session")
def celegans_gff() -> Path:
    return _existing(CELEGANS_GFF)


@pytest.fixture(scope="session")
def lambda_fasta() -> Path:
    return _existing(TEST_DATA / "lambda_virus.fa.gz")


def fasta_bytes(records, *, width: int = 60, newline: str = "\n") -> bytes:
    """FASTA text for ``records`` (a dict or (header, sequence) pairs; duplicates allowed)."""
    items = records.items() if isinstance(records, dict) else records
    out = []
    for header, seq in items:
        out.append(f">{header}{newline}")
        step = width or max(len(seq), 1)
        out.extend(f"{seq[i:i + step]}{newline}" for i in range(0, len(seq), step))
    return "".join(out).encode()


def write_bgzf(path: Path, data: bytes, block: int = 65280) -> None:
    """BGZF with ``block``-byte blocks (65280 like htslib's bgzip; Biopython's default is 65536)."""
    with open(path, "wb") as handle:
        writer = bgzf.BgzfWriter(fileobj=handle, mode="wb")
        for i in range(0, len(data), block):
            writer.write(data[i : i + block])
            writer.flush()  # one block per write
        writer.close()


@pytest.fixture
def write_fasta(tmp_path):
    """``write_fasta(records, name="test.fa", *, width=60, newline="\\n", compression=None)`` -> Path.

    ``compression``: None, "gzip", "bgzf" (htslib-sized blocks) or "bgzf64k" (Biopython's default blocks).
    ``records`` may also be raw ``bytes`` written as they are.
    """

    def write(records, name="test.fa", *, width=60, newline="\n", compression=None) -> Path:
        data = records if isinstance(records, bytes) else fasta_bytes(records, width=width, newline=newline)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if compression is None:
            path.write_bytes(data)
        elif compression == "gzip":
            path.write_bytes(gzip.compress(data))
        elif compression == "bgzf":
            write_bgzf(path, data)
        elif compression == "bgzf64k":
            write_bgzf(path, data, block=65536)
        else:
            raise ValueError(compression)
        return path

    return write


# A tiny Reformer for training tests: seconds per step on a CPU.
TINY = dict(d_model=32, n_heads=2, depth=2, d_ff=64, attention=["local", "lsh"], chunk_size=16, n_hashes=2, dropout=0.1,
            attention_dropout=0.1)
SLICE = 60_000


def ecoli_slice_files(folder: Path, length: int) -> tuple[Path, Path]:
    """The first ``length`` bases of E. coli (``folder``/ecoliNk.fa) and the GFF3 lines that lie inside them."""
    with gzip.open(ECOLI_FASTA, "rt") as handle:
        header = handle.readline()
        seq, n = [], 0
        for line in handle:
            seq.append(line.strip())
            n += len(seq[-1])
            if n >= length:
                break
    name = f"ecoli{length // 1000}k"
    fasta = folder / f"{name}.fa"
    fasta.write_text(header + "".join(seq)[:length] + "\n")
    lines = ["##gff-version 3"]
    with gzip.open(ECOLI_GFF, "rt") as handle:
        for line in handle:
            cols = line.split("\t")
            if len(cols) == 9 and cols[2] != "region" and int(cols[4]) <= length:
                lines.append(line.rstrip("\n"))
    gff = folder / f"{name}.gff3"
    gff.write_text("\n".join(lines) + "\n")
    return fasta, gff


@pytest.fixture(scope="session")
def ecoli_slice(tmp_path_factory) -> tuple[Path, Path]:
    """The first 60 kb of E. coli and the GFF3 lines that lie inside it."""
    return ecoli_slice_files(tmp_path_factory.mktemp("ecoli60k"), SLICE)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of ``scores`` ranking the 1s of ``labels`` (0/1) first."""
    order = np.argsort(-scores)
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())
