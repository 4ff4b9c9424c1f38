"""Tokenizer throughput on the bundled E. coli genome, one core.

    .venv/bin/python bench/tokenizers.py [--repeats 5] [--window 65536]

The genome is read into memory once before timing; each row is the best of ``--repeats`` runs,
in MB/s = bases processed per second / 1e6. "whole genome" rows tokenize the 4.6 Mb chromosome in
one call (their int64 output is fresh memory, so page faults are part of the cost); "windows" rows
tokenize it as consecutive ``--window``-base slices, the way a dataset feeds a model.
numpy runs these operations on one thread, so the figures are single-core.
"""
from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np

from genoformer.tokenize import KmerTokenizer, NucleotideTokenizer

ROOT = Path(__file__).resolve().parents[1]
GENOME_NAME = "GCF_000005845.2_ASM584v2_genomic.fna.gz"
CANDIDATES = (ROOT / "data" / GENOME_NAME, ROOT.parent / "shared" / "data" / "ecoli_k12" / GENOME_NAME)
TARGETS = {"nucleotide encode": 1000.0, "6-mer stride 1 encode": 100.0}


def read_genome() -> tuple[Path, str]:
    """All sequence lines of the first FASTA file found, concatenated (E. coli: one record)."""
    path = next((p for p in CANDIDATES if p.exists()), None)
    if path is None:
        raise SystemExit(f"E. coli genome not found at any of: {', '.join(map(str, CANDIDATES))}")
    with gzip.open(path, "rt") as handle:
        return path, "".join(line.strip() for line in handle if not line.startswith(">"))


def each_window(function, windows: list[str]):
    """Tokenize window by window, dropping each result as a data loader would (memory is reused)."""

    def run() -> None:
        for window in windows:
            function(window)

    return run


def best_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--window", type=int, default=65536, help="bases per call in the 'windows' rows")
    args = parser.parse_args()
    path, genome = read_genome()
    windows = [genome[i : i + args.window] for i in range(0, len(genome), args.window)]
    nucleotide = NucleotideTokenizer()
    nucleotide_ids = nucleotide.encode(genome)
    kmer6 = KmerTokenizer(6)
    kmer6_ids = kmer6.encode(genome)

    cases = [
        # Not a tokenizer: writing a fresh int64 array of one id per base, the ceiling for one call.
        ("int64 output alone", "whole genome", lambda: np.ones(len(genome), dtype=np.int64)),
        ("nucleotide encode", "whole genome", lambda: nucleotide.encode(genome)),
        ("nucleotide encode", "windows", each_window(nucleotide.encode, windows)),
        ("nucleotide decode", "whole genome", lambda: nucleotide.decode(nucleotide_ids)),
        ("6-mer stride 1 encode", "whole genome", lambda: kmer6.encode(genome)),
        ("6-mer stride 1 encode", "windows", each_window(kmer6.encode, windows)),
        ("6-mer stride 6 encode", "whole genome", lambda: KmerTokenizer(6, 6).encode(genome)),
        ("3-mer stride 1 encode", "whole genome", lambda: KmerTokenizer(3).encode(genome)),
        ("6-mer stride 1 decode", "whole genome", lambda: kmer6.decode(kmer6_ids)),
        ("6-mer reverse complement", "whole genome", lambda: kmer6.reverse_complement(kmer6_ids)),
    ]
    print(f"genome: {path} ({len(genome):,} bases), best of {args.repeats}, window {args.window:,} bases")
    print(f"{'operation':<26} {'input':<13} {'MB/s':>8} {'target':>8}")
    for name, scope, function in cases:
        rate = len(genome) / best_seconds(function, args.repeats) / 1e6
        target = TARGETS.get(name)
        mark = "" if target is None else f"{target:>6.0f} {'ok' if rate >= target else 'MISSED'}"
        print(f"{name:<26} {scope:<13} {rate:>8.0f} {mark:>8}")


if __name__ == "__main__":
    main()
