"""Random access to FASTA genomes: plain, BGZF or plain gzip; validated once; one handle per process.

Coordinates: every ``start``/``end`` in genoformer is **0-based and half-open** — ``fetch("chr1", 0, 10)``
is the first ten bases, ``end - start`` is the length. Only file edges (GFF/GTF, 1-based closed) convert.

Opening a file for the first time (or after it changed: size or mtime differ) costs one streaming pass:

* the bytes are validated in 4 MiB blocks with numpy (first non-blank line is a ``>`` header; every record
  has a name, a unique one, and some sequence; sequence lines hold only IUPAC nucleotide codes in either
  case or ``-``), and each problem is reported with file, record, line and column;
* the ``.fai`` rows (and for BGZF the ``.gzi`` block table) are computed during that pass and written
  beside the FASTA, or in the cache folder (``genoformer.files.cache_dir()``, ``$GENOFORMER_CACHE``) when
  the FASTA's folder is not writable. An index that disagrees with the file is rewritten, never trusted;
* files pyfaidx cannot read at random positions — plain gzip, BGZF with 64 KiB blocks (pyfaidx 0.9 fails
  on seeks that land exactly on such a block's start), lines of unequal length — are rewritten once into
  the cache as BGZF with 60-base lines, saying so on stderr.

The result is remembered in the cache keyed on the file's resolved path, size and mtime, so the next
open only stats the file and compares the small index files. Windows (CRLF) line endings are read as
they are: pyfaidx's offsets account for the two-byte line end.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import operator
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyfaidx

from ..errors import FastaError, RegionError
from ..files import atomic_path, atomic_write, cache_dir
from .fasta_scan import Rewrapper, Scanner, bgzf_blocks, gzi_bytes, scan, sniff_compression

# Bump when the scan or the cache layout changes: cached results of older versions are then ignored.
_FORMAT_VERSION = 1
_COMPLEMENT = str.maketrans("ACGTURYSWKMBDHVNacgturyswkmbdhvn", "TGCAAYRSWMKVHDBNtgcaayrswmkvhdbn")


def reverse_complement(seq: str) -> str:
    """IUPAC-aware reverse complement that keeps case (soft-masking survives) and gaps."""
    return seq.translate(_COMPLEMENT)[::-1]


# ----------------------------------------------------------------------------------------------------
# Preparing a file: validation record, converted copy, indexes


@dataclass(frozen=True)
class _Source:
    reader: str  # file pyfaidx opens (the FASTA itself, a cached copy, or a suffix-fixing link)
    fai: str
    gzi: str | None
    records: tuple[tuple[str, int, int, int, int], ...]  # .fai rows: name, length, offset, lenc, lenb


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def _check_file(path: Path) -> os.stat_result:
    if not path.exists():
        raise FastaError(path, "no such file")
    if path.is_dir():
        raise FastaError(path, "is a directory, not a FASTA file")
    if not os.access(path, os.R_OK):
        raise FastaError(path, "permission denied")
    st = path.stat()
    if st.st_size == 0:
        raise FastaError(path, "empty file")
    return st


def _open_stream(path: Path, kind: str) -> BinaryIO:
    return open(path, "rb") if kind == "plain" else gzip.open(path, "rb")


def _examine(path: Path, real: Path, st: os.stat_result, folder: Path, key: str) -> dict:
    """Validate the file and decide what pyfaidx reads; returns the record kept in the cache."""
    kind = sniff_compression(real)
    blocks = None
    reason = None
    if kind == "bgzf":
        try:
            blocks = bgzf_blocks(real)
        except ValueError:
            kind, reason = "gzip", "its gzip members are not all BGZF blocks"
        else:
            if blocks.shape[0] == 0 or blocks[-1, 2] != 0:
                raise FastaError(path, "BGZF file ends without its end-of-file block: it is truncated")
            if blocks[:, 2].max(initial=0) >= 65536:
                kind, reason = "gzip", "its BGZF blocks hold 64 KiB, which pyfaidx cannot seek reliably"
    if kind == "gzip":
        reason = reason or "plain gzip cannot be read at random positions"
    else:
        with _open_stream(real, kind) as stream:
            scanner = scan(path, stream)
        if scanner.irregular is not None:
            reason = f"record {scanner.irregular!r} has sequence lines of unequal length or inner blank lines"
    if reason is None:
        source, records = real, scanner.records
    else:
        version = hashlib.sha1(f"{real}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:24]
        source = folder / f"{version}.fa.gz"
        print(
            f"genoformer: {path}: {reason}; converting it once into an indexed BGZF copy at {source}",
            file=sys.stderr,
        )
        with atomic_path(source) as tmp, open(tmp, "wb") as handle, _open_stream(real, kind) as stream:
            writer = Rewrapper(handle)
            scanner = scan(path, stream, writer)
            writer.close()
        records, kind, blocks = writer.records, "bgzf", bgzf_blocks(source)
    _note_rna_and_gaps(path, scanner)
    src_st = source.stat()
    return {
        "version": _FORMAT_VERSION,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "source": str(source),
        "source_size": src_st.st_size,
        "source_mtime_ns": src_st.st_mtime_ns,
        "bgzf": kind == "bgzf",
        "gzi_hex": None if blocks is None else gzi_bytes(blocks).hex(),
        "records": [list(r) for r in records],
    }


def _note_rna_and_gaps(path: Path, scanner: Scanner) -> None:
    """Say once per file (when it is indexed) how bases the tokenizers read differently are taken."""
    if scanner.rna is not None:
        print(f"genoformer: {path}: record {scanner.rna!r} (and maybe others) holds RNA bases (U); "
              "they are read as T", file=sys.stderr)
    if scanner.gaps is not None:
        print(f"genoformer: {path}: record {scanner.gaps!r} (and maybe others) holds gaps ('-'); "
              "they are read as N (unknown base), keeping every position", file=sys.stderr)


def _load_record(record_path: Path, st: os.stat_result) -> dict | None:
    try:
        info = json.loads(record_path.read_text())
        src_st = Path(info["source"]).stat()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    current = (
        info.get("version") == _FORMAT_VERSION
        and info.get("size") == st.st_size
        and info.get("mtime_ns") == st.st_mtime_ns
        and info.get("source_size") == src_st.st_size
        and info.get("source_mtime_ns") == src_st.st_mtime_ns
    )
    return info if current else None


def _place_index(source: Path, suffix: str, content: bytes, fallback: Path) -> Path:
    """Where an up-to-date index lives: beside the source if possible, else in the cache; written if needed."""
    source_mtime = source.stat().st_mtime_ns
    candidates = [Path(f"{source}{suffix}"), fallback]
    for cand in candidates:
        try:
            if cand.stat().st_mtime_ns >= source_mtime and cand.read_bytes() == content:
                return cand
        except OSError:
            continue
    for cand in candidates:
        if not _writable(cand.parent):
            continue
        try:
            with atomic_path(cand) as tmp:
                tmp.write_bytes(content)
                tmp.chmod(0o644)  # readable like a samtools index, whatever the umask
                if tmp.stat().st_mtime_ns < source_mtime:  # a FASTA dated in the future
                    os.utime(tmp, ns=(source_mtime, source_mtime))
            return cand
        except OSError:
            continue
    raise FastaError(source, f"cannot write the {suffix} index beside the file or in {fallback.parent}")


def _pyfaidx_reader(source: Path, bgzf_file: bool, folder: Path, key: str) -> Path:
    """pyfaidx picks BGZF by suffix: give it a link with the right suffix when the name misleads."""
    named_bgzf = source.name.lower().endswith((".gz", ".bgz"))
    if named_bgzf == bgzf_file and not source.name.lower().endswith((".bz2", ".zip")):
        return source
    link = folder / (f"{key}.fa.gz" if bgzf_file else f"{key}.fa")
    if not (link.is_symlink() and os.readlink(link) == str(source)):
        tmp = folder / f".{link.name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(source, tmp)
        os.replace(tmp, link)
    return link


def _prepare(path: Path) -> _Source:
    st = _check_file(path)
    real = path.resolve()
    key = hashlib.sha1(str(real).encode()).hexdigest()[:24]
    folder = cache_dir() / "fasta"
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / f"{key}.json"
    info = _load_record(record_path, st)
    if info is None:
        try:
            old_source = Path(json.loads(record_path.read_text())["source"])
        except (OSError, ValueError, KeyError, TypeError):
            old_source = None
        info = _examine(path, real, st, folder, key)
        with atomic_write(record_path) as handle:
            json.dump(info, handle)
        if old_source is not None and old_source.parent == folder and str(old_source) != info["source"]:
            for stale in (old_source, Path(f"{old_source}.fai"), Path(f"{old_source}.gzi")):
                stale.unlink(missing_ok=True)
    source = Path(info["source"])
    records = tuple((r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in info["records"])
    fai_text = "".join("\t".join(map(str, r)) + "\n" for r in records).encode()
    index_folder = cache_dir() / "index"
    index_folder.mkdir(parents=True, exist_ok=True)
    fai = _place_index(source, ".fai", fai_text, index_folder / f"{key}.fai")
    gzi = None
    if info["bgzf"]:
        gzi = _place_index(source, ".gzi", bytes.fromhex(info["gzi_hex"]), index_folder / f"{key}.gzi")
    reader = _pyfaidx_reader(source, info["bgzf"], folder, key)
    return _Source(str(reader), str(fai), None if gzi is None else str(gzi), records)


# ----------------------------------------------------------------------------------------------------


class Genome:
    """A FASTA genome with random access by 0-based half-open coordinates.

    ``Genome(path)`` validates and indexes the file on first use (see the module docstring) and is cheap
    afterwards. Sequences keep the file's case (lower case = soft-masked) unless ``uppercase=True``;
    :meth:`soft_mask` always reads the case from the file. Picklable: each process opens its own pyfaidx
    handle on first fetch, so DataLoader workers never share a file position.
    """

    def __init__(self, path: str | os.PathLike, *, uppercase: bool = False, read_ahead: int = 65536):
        self.path = Path(path).expanduser()
        self.uppercase = uppercase
        # pyfaidx keeps the last fetch plus ``read_ahead`` bases in memory, so neighbouring and
        # overlapping windows read sequentially cost one file read; random windows pay at most 64 KiB.
        self.read_ahead = read_ahead
        self._source = _prepare(self.path)
        self.names: list[str] = [r[0] for r in self._source.records]
        self.lengths: dict[str, int] = {r[0]: r[1] for r in self._source.records}
        self._faidx: pyfaidx.Faidx | None = None
        self._pid: int | None = None
        self._handle()  # surface index problems here rather than in a worker

    def _handle(self) -> pyfaidx.Faidx:
        if self._faidx is None or self._pid != os.getpid():
            src = self._source
            with warnings.catch_warnings():
                # indexes were checked against the file's content above; pyfaidx's mtime test adds nothing
                warnings.simplefilter("ignore", RuntimeWarning)
                self._faidx = pyfaidx.Faidx(
                    src.reader,
                    indexname=src.fai,
                    gzi_indexname=src.gzi,
                    as_raw=True,
                    strict_bounds=True,
                    read_ahead=self.read_ahead or None,
                    rebuild=False,
                    build_index=False,
                )
            self._pid = os.getpid()
        return self._faidx

    def validate_interval(self, name: str, start: int, end: int) -> tuple[int, int]:
        """Check ``[start, end)`` lies inside record ``name``; returns them as ints or raises RegionError."""
        if name not in self.lengths:
            shown = ", ".join(self.names[:5]) + (", ..." if len(self.names) > 5 else "")
            raise RegionError(f"{self.path}: no record named {name!r} (records: {shown})")
        try:
            start, end = operator.index(start), operator.index(end)
        except TypeError:
            raise RegionError(
                f"{self.path}: record {name!r}: start and end must be integers, got {start!r}, {end!r}"
            ) from None
        length = self.lengths[name]
        if start < 0:
            problem = f"start {start} is negative"
        elif end > length:
            problem = f"end {end:,} is beyond the record's end"
        elif start >= end:
            problem = f"start {start:,} is not before end {end:,}"
        else:
            return start, end
        raise RegionError(
            f"{self.path}: record {name!r} (length {length:,}): interval [{start:,}, {end:,}): {problem} "
            "(coordinates are 0-based, end exclusive)"
        )

    def _raw(self, name: str, start: int, end: int) -> str:
        start, end = self.validate_interval(name, start, end)
        seq = self._handle().fetch(name, start + 1, end)
        if len(seq) != end - start:
            raise FastaError(
                self.path,
                f"read {len(seq)} bases for [{start}, {end}); the file changed after it was opened",
                record=name,
            )
        return seq

    def fetch(self, name: str, start: int, end: int, strand: str = "+") -> str:
        """Bases ``[start, end)`` of ``name``; ``strand="-"`` gives the reverse complement."""
        if strand not in ("+", "-", "."):
            raise RegionError(f"{self.path}: record {name!r}: strand must be '+', '-' or '.', got {strand!r}")
        seq = self._raw(name, start, end)
        if self.uppercase:
            seq = seq.upper()
        return reverse_complement(seq) if strand == "-" else seq

    def soft_mask(self, name: str, start: int, end: int, strand: str = "+") -> np.ndarray:
        """Boolean array, True where the file has a lower-case (soft-masked) base; reversed for ``"-"``."""
        if strand not in ("+", "-", "."):
            raise RegionError(f"{self.path}: record {name!r}: strand must be '+', '-' or '.', got {strand!r}")
        mask = np.frombuffer(self._raw(name, start, end).encode("ascii"), dtype=np.uint8) >= ord("a")
        return mask[::-1].copy() if strand == "-" else mask

    def __contains__(self, name: object) -> bool:
        return name in self.lengths

    def close(self) -> None:
        if self._faidx is not None and self._pid == os.getpid():
            self._faidx.close()
        self._faidx = None

    def __enter__(self) -> "Genome":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_faidx"] = None
        state["_pid"] = None
        return state

    def __repr__(self) -> str:
        return f"Genome({str(self.path)!r}, {len(self.names)} records, {sum(self.lengths.values()):,} bp)"
