"""Shared fixtures: real data files, a synthetic FASTA writer, and a private cache folder per session.

Real data lives in ``shared/data`` beside the repository (here ``/work/shared/data``; on CI beside the
clone) plus the bundled copies in ``data/``.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from Bio import bgzf

REPO = Path(__file__).parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BUNDLED_DATA = REPO / "data"

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
        pytest.fail(f"test data file missing: {path} (shared/data must sit beside the repository)")
    return path


@pytest.fixture(scope="session", autouse=True)
def genoformer_cache(tmp_path_factory):
    """Every test session gets an empty cache folder, so tests never read or fill ~/.cache."""
    path = tmp_path_factory.mktemp("genoformer-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENOFORMER_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder missing: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ecoli_fasta() -> Path:
    """Bundled E. coli K-12 genome (plain gzip, one record NC_000913.3, 4,641,652 bp)."""
    return _existing(BUNDLED_DATA / "GCF_000005845.2_ASM584v2_genomic.fna.gz")


@pytest.fixture(scope="session")
def ecoli_gff() -> Path:
    return _existing(BUNDLED_DATA / "GCF_000005845.2_ASM584v2_genomic.gff.gz")


@pytest.fixture(scope="session")
def ecoli_gbff(shared_data) -> Path:
    return _existing(shared_data / "ecoli_k12" / "GCF_000005845.2_ASM584v2_genomic.gbff.gz")


@pytest.fixture(scope="session")
def athaliana_fasta(shared_data) -> Path:
    """A. thaliana 1% slices, 7 records; each sequence is one base shorter than its header says."""
    return _existing(shared_data / "model_organisms" / "A.thaliana.fa.gz")


@pytest.fixture(scope="session")
def athaliana_gff(shared_data) -> Path:
    return _existing(shared_data / "model_organisms" / "A.thaliana.gff.gz")


@pytest.fixture(scope="session")
def celegans_fasta(shared_data) -> Path:
    return _existing(shared_data / "model_organisms" / "C.elegans.fa.gz")


@pytest.fixture(scope="session")
def celegans_gff(shared_data) -> Path:
    return _existing(shared_data / "model_organisms" / "C.elegans.gff.gz")


@pytest.fixture(scope="session")
def lambda_fasta(shared_data) -> Path:
    return _existing(shared_data / "lambda_phage" / "lambda_virus.fa.gz")


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


@pytest.fixture(scope="session")
def ecoli_slice(tmp_path_factory) -> tuple[Path, Path]:
    """The first 60 kb of E. coli and the GFF3 lines that lie inside it."""
    folder = tmp_path_factory.mktemp("ecoli60k")
    with gzip.open(SHARED_DATA / "ecoli_k12" / "GCF_000005845.2_ASM584v2_genomic.fna.gz", "rt") as handle:
        header = handle.readline()
        seq, n = [], 0
        for line in handle:
            seq.append(line.strip())
            n += len(seq[-1])
            if n >= SLICE:
                break
    fasta = folder / "ecoli60k.fa"
    fasta.write_text(header + "".join(seq)[:SLICE] + "\n")
    lines = ["##gff-version 3"]
    with gzip.open(SHARED_DATA / "ecoli_k12" / "GCF_000005845.2_ASM584v2_genomic.gff.gz", "rt") as handle:
        for line in handle:
            cols = line.split("\t")
            if len(cols) == 9 and cols[2] != "region" and int(cols[4]) <= SLICE:
                lines.append(line.rstrip("\n"))
    gff = folder / "ecoli60k.gff3"
    gff.write_text("\n".join(lines) + "\n")
    return fasta, gff
