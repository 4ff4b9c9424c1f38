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
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyfaidx
from Bio import bgzf

from ..errors import FastaError, RegionError
from ..files import atomic_path, atomic_write, cache_dir

# Bump when the scan or the cache layout changes: cached results of older versions are then ignored.
_FORMAT_VERSION = 1
_SCAN_BLOCK = 1 << 22
_WRAP = 60
# htslib's block size. pyfaidx 0.9 computes an in-block offset of 65536 (rejected by Bio.bgzf) when a
# fetch starts exactly at the first byte of a block that follows a full 65536-byte block.
_BGZF_BLOCK = 65280

_IUPAC = b"ACGTUNRYSWKMBDHV"
_VALID = np.zeros(256, dtype=bool)
_VALID[list(_IUPAC + _IUPAC.lower() + b"-\n")] = True
_BLANK = np.zeros(256, dtype=bool)
_BLANK[list(b" \t\r\n")] = True
_COMPLEMENT = str.maketrans("ACGTURYSWKMBDHVNacgturyswkmbdhvn", "TGCAAYRSWMKVHDBNtgcaayrswmkvhdbn")
_OTHER_COMPRESSION = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
}


def reverse_complement(seq: str) -> str:
    """IUPAC-aware reverse complement that keeps case (soft-masking survives) and gaps."""
    return seq.translate(_COMPLEMENT)[::-1]


# ----------------------------------------------------------------------------------------------------
# Streaming validation


class _Record:
    __slots__ = ("name", "line", "offset", "length", "lenc", "lenb", "short")

    def __init__(self, name: str, line: int, offset: int):
        self.name = name
        self.line = line  # header line number, for messages
        self.offset = offset  # byte offset of the first sequence byte (uncompressed)
        self.length = 0
        self.lenc = None  # bases per full line
        self.lenb = None  # bytes per full line, line end included
        self.short = False  # a line shorter than lenc was seen: only blank lines may follow


class _Scanner:
    """Validates FASTA bytes block by block; computes .fai rows; optionally feeds a rewriting sink.

    A line may span blocks: ``col`` counts its bytes already seen, so memory stays one block even for
    unwrapped chromosomes.
    """

    def __init__(self, path: Path, sink: "_Rewrapper | None" = None):
        self.path = path
        self.sink = sink
        self.offset = 0  # absolute offset of the current block
        self.line = 1  # number of the line the current block starts in
        self.col = 0  # bytes of that line seen in earlier blocks
        self.in_header = False  # whether that carried line is a header
        self.header = bytearray()
        self.rec: _Record | None = None
        self.records: list[tuple[str, int, int, int, int]] = []
        self.seen: dict[str, int] = {}
        self.irregular: str | None = None  # first record whose line lengths pyfaidx cannot index
        self.rna: str | None = None  # first record holding U bases (read as T)
        self.gaps: str | None = None  # first record holding '-' gaps (read as N)

    def feed(self, block: bytes) -> None:
        a = np.frombuffer(block, dtype=np.uint8)
        n = a.size
        nl = np.flatnonzero(a == 10)
        starts = np.empty(nl.size + 1, dtype=np.int64)  # line starts; the first may lie in an earlier block
        starts[0] = -self.col
        starts[1:] = nl + 1
        ends = np.append(nl, n)  # the last piece is unterminated (possibly empty)
        local = (starts >= 0) & (starts < n)
        is_header = np.zeros(starts.size, dtype=bool)
        is_header[local] = a[starts[local]] == ord(">")
        if self.col:
            is_header[0] = self.in_header
        cr = np.zeros(nl.size, dtype=bool)  # '\r' right before '\n' is a Windows line end, not sequence
        cr[nl > 0] = a[nl[nl > 0] - 1] == ord("\r")

        bad = ~_VALID[a]
        bad[nl[cr] - 1] = False
        headers = np.flatnonzero(is_header)
        for h in headers:
            bad[max(starts[h], 0) : ends[h]] = False
        if self.rec is None:  # before the first header only blank lines may appear
            lead_end = n if headers.size == 0 else max(int(starts[headers[0]]), 0)
            lead = np.flatnonzero(~_BLANK[a[:lead_end]])
            if lead.size:
                raise self._not_fasta(block, nl, starts, int(lead[0]))
            bad[:lead_end] = False
        bad_at = np.flatnonzero(bad)
        first_bad = int(bad_at[0]) if bad_at.size else n

        complete = nl.size
        bases = ends[:complete] - starts[:complete] - cr
        nbytes = ends[:complete] + 1 - starts[:complete]
        line_idx, seg_start = 0, 0
        for h in headers:
            hs = max(int(starts[h]), 0)
            if first_bad < hs:
                raise self._bad_char(block, nl, starts, first_bad)
            self._sequence(block, seg_start, hs, bases[line_idx:h], nbytes[line_idx:h])
            if h == complete:  # header continues in the next block
                self.header += block[hs:n]
                break
            text = bytes(self.header) + block[hs : ends[h]]
            self.header.clear()
            self._start_record(text, self.line + int(h), self.offset + int(ends[h]) + 1)
            line_idx, seg_start = int(h) + 1, int(ends[h]) + 1
        else:
            if first_bad < n:
                raise self._bad_char(block, nl, starts, first_bad)
            self._sequence(block, seg_start, n, bases[line_idx:], nbytes[line_idx:])

        self.col = n - int(starts[complete])
        self.in_header = bool(self.col and is_header[complete])
        self.line += complete
        self.offset += n

    def finish(self) -> None:
        self._end_record()
        if not self.records:
            raise FastaError(self.path, "no '>' header line: not a FASTA file")

    def _sequence(self, block: bytes, lo: int, hi: int, bases: np.ndarray, nbytes: np.ndarray) -> None:
        """Account for the complete sequence lines of the current record in ``block[lo:hi]``."""
        rec = self.rec
        if rec is None:
            return
        if self.sink is not None and hi > lo:
            self.sink.sequence(block[lo:hi].translate(None, b"\r\n"))
        if self.rna is None and (block.find(b"U", lo, hi) >= 0 or block.find(b"u", lo, hi) >= 0):
            self.rna = rec.name
        if self.gaps is None and block.find(b"-", lo, hi) >= 0:
            self.gaps = rec.name
        if not bases.size:
            return
        rec.length += int(bases.sum())
        if self.irregular is not None:
            return
        if rec.lenc is None:
            if bases[0] == 0:
                rec.short = True
            else:
                rec.lenc, rec.lenb = int(bases[0]), int(nbytes[0])
        if rec.short:
            if (bases > 0).any():
                self.irregular = rec.name
            return
        off = (bases != rec.lenc) | (nbytes != rec.lenb)
        if off.any():
            k = int(np.argmax(off))
            if bases[k] > rec.lenc or (bases[k + 1 :] > 0).any():
                self.irregular = rec.name
            rec.short = True

    def _start_record(self, text: bytes, line: int, offset: int) -> None:
        self._end_record()
        try:
            header = text[1:].rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            raise FastaError(self.path, "header line is not UTF-8 text", line=line) from None
        if "\r" in header:
            raise FastaError(
                self.path,
                "carriage return inside a header line: old Mac (CR-only) line endings; convert them to LF",
                line=line,
            )
        fields = header.split()
        if not fields or header[:1].isspace():
            raise FastaError(self.path, "header line has no record name right after '>'", line=line)
        name = fields[0]
        if name in self.seen:
            raise FastaError(
                self.path,
                f"duplicate record name (first used on line {self.seen[name]})",
                record=name,
                line=line,
            )
        self.seen[name] = line
        self.rec = _Record(name, line, offset)
        if self.sink is not None:
            self.sink.header(name, header.encode())

    def _end_record(self) -> None:
        rec = self.rec
        if rec is None:
            return
        if rec.length == 0:
            raise FastaError(self.path, "header has no sequence", record=rec.name, line=rec.line)
        lenc = rec.lenc or rec.length
        self.records.append((rec.name, rec.length, rec.offset, lenc, rec.lenb or lenc + 1))
        self.rec = None

    def _where(self, block: bytes, nl: np.ndarray, starts: np.ndarray, pos: int) -> tuple[int, int, bytes]:
        idx = int(np.searchsorted(nl, pos))
        line_end = int(nl[idx]) if idx < nl.size else len(block)
        return self.line + idx, pos - int(starts[idx]) + 1, block[max(int(starts[idx]), 0) : line_end]

    def _not_fasta(self, block, nl, starts, pos) -> FastaError:
        line, _, text = self._where(block, nl, starts, pos)
        shown = text[:50].decode("utf-8", "replace").rstrip("\r")
        hint = ""
        if text.startswith(b"LOCUS"):
            hint = (" (a GenBank file: give the genome as FASTA; genoformer.genome.genbank_to_fasta converts "
                    "one that carries its sequence)")
        return FastaError(
            self.path, f"not a FASTA file: expected a '>' header line, found {shown!r}{hint}", line=line
        )

    def _bad_char(self, block, nl, starts, pos) -> FastaError:
        line, column, _ = self._where(block, nl, starts, pos)
        byte = block[pos]
        if byte == ord("\r"):
            what = "a carriage return not followed by a line feed"
        elif byte == ord(" "):
            what = "a space"
        elif byte == ord("\t"):
            what = "a tab"
        elif 32 < byte < 127:
            what = repr(chr(byte))
        else:
            what = f"byte 0x{byte:02x}"
        return FastaError(
            self.path,
            f"invalid character {what} at column {column} of a sequence line "
            "(allowed: IUPAC nucleotide codes ACGTUNRYSWKMBDHV in either case, and '-')",
            record=self.rec.name if self.rec else None,
            line=line,
        )


class _Rewrapper:
    """Writes validated records as BGZF with 60-base LF lines, recording the copy's .fai rows."""

    def __init__(self, handle: BinaryIO):
        self.out = bgzf.BgzfWriter(fileobj=handle, mode="wb")
        self.pending = bytearray()  # uncompressed bytes not yet written as a block
        self.written = 0
        self.tail = b""  # bases of the unfinished output line
        self.records: list[tuple[str, int, int, int, int]] = []
        self.name: str | None = None
        self.length = 0
        self.start = 0

    def header(self, name: str, text: bytes) -> None:
        self._end_record()
        self._emit(b">" + text + b"\n")
        self.name, self.length, self.start = name, 0, self.written

    def sequence(self, data: bytes) -> None:
        self.length += len(data)
        buf = self.tail + data
        full = len(buf) // _WRAP
        if full:
            lines = np.empty((full, _WRAP + 1), dtype=np.uint8)  # (lines, bases + '\n')
            lines[:, :_WRAP] = np.frombuffer(buf, dtype=np.uint8, count=full * _WRAP).reshape(full, _WRAP)
            lines[:, _WRAP] = ord("\n")
            self._emit(lines.tobytes())
        self.tail = buf[full * _WRAP :]

    def close(self) -> None:
        self._end_record()
        for i in range(0, len(self.pending), _BGZF_BLOCK):
            self.out.write(bytes(self.pending[i : i + _BGZF_BLOCK]))
            self.out.flush()
        self.out.close()

    def _end_record(self) -> None:
        if self.name is None:
            return
        if self.tail:
            self._emit(self.tail + b"\n")
            self.tail = b""
        self.records.append((self.name, self.length, self.start, _WRAP, _WRAP + 1))
        self.name = None

    def _emit(self, data: bytes) -> None:
        self.pending += data
        self.written += len(data)
        if len(self.pending) >= _BGZF_BLOCK:
            cut = len(self.pending) - len(self.pending) % _BGZF_BLOCK
            view = memoryview(self.pending)
            for i in range(0, cut, _BGZF_BLOCK):
                # one write + flush per block: BgzfWriter would otherwise cut 65536-byte blocks
                self.out.write(bytes(view[i : i + _BGZF_BLOCK]))
                self.out.flush()
            view.release()
            del self.pending[:cut]


def _scan(path: Path, stream: BinaryIO, sink: _Rewrapper | None = None) -> _Scanner:
    """Run the validator over a byte stream (already decompressed); errors name ``path``."""
    scanner = _Scanner(path, sink)
    carry = b""
    last = b"\n"
    try:
        while chunk := stream.read(_SCAN_BLOCK):
            data = carry + chunk if carry else chunk
            # hold back a trailing '\r' so a CRLF split between blocks is seen whole
            carry = b"\r" if data.endswith(b"\r") else b""
            if carry:
                data = data[:-1]
            if data:
                scanner.feed(data)
                last = data[-1:]
        if carry or last != b"\n":
            scanner.feed(carry + b"\n")
    except EOFError:
        raise FastaError(path, "compressed data ends early: the gzip file is truncated") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise FastaError(path, f"corrupt gzip data ({exc})") from None
    scanner.finish()
    return scanner


# ----------------------------------------------------------------------------------------------------
# Compression


def _sniff(path: Path) -> str:
    """'plain', 'gzip' or 'bgzf' from the first bytes (never from the suffix)."""
    with open(path, "rb") as handle:
        head = handle.read(18)
    if head[:2] != b"\x1f\x8b":
        for magic, name in _OTHER_COMPRESSION.items():
            if head.startswith(magic):
                raise FastaError(
                    path, f"compressed with {name}; genoformer reads plain, gzip or BGZF FASTA"
                )
        return "plain"
    if len(head) >= 18 and head[3] & 4 and b"BC\x02\x00" in head[12:18]:
        return "bgzf"
    return "gzip"


def _bgzf_blocks(path: Path) -> np.ndarray:
    """(blocks, 3) int64 table of compressed start, uncompressed start, uncompressed length.

    Reads only block headers and trailers. Raises ValueError if any member is not a BGZF block.
    """
    rows = []
    cstart = ustart = 0
    with open(path, "rb") as handle:
        while head := handle.read(12):
            if len(head) < 12 or head[:4] != b"\x1f\x8b\x08\x04":
                raise ValueError("not a BGZF block")
            (xlen,) = struct.unpack("<H", head[10:12])
            extra = handle.read(xlen)
            bsize = None
            i = 0
            while i + 4 <= len(extra):
                (slen,) = struct.unpack("<H", extra[i + 2 : i + 4])
                if extra[i : i + 2] == b"BC" and slen == 2:
                    (bsize,) = struct.unpack("<H", extra[i + 4 : i + 6])
                i += 4 + slen
            if bsize is None:
                raise ValueError("gzip member without BGZF block size")
            handle.seek(cstart + bsize + 1 - 4)
            trailer = handle.read(4)
            if len(trailer) < 4:
                raise ValueError("truncated BGZF block")
            (ulen,) = struct.unpack("<I", trailer)
            rows.append((cstart, ustart, ulen))
            cstart += bsize + 1
            ustart += ulen
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _gzi_bytes(blocks: np.ndarray) -> bytes:
    """htslib .gzi: count, then (compressed, uncompressed) starts of every non-empty block but the first."""
    rows = blocks[1:][blocks[1:, 2] > 0, :2]
    return struct.pack("<Q", len(rows)) + rows.astype("<u8").tobytes()


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
    kind = _sniff(real)
    blocks = None
    reason = None
    if kind == "bgzf":
        try:
            blocks = _bgzf_blocks(real)
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
            scanner = _scan(path, stream)
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
            writer = _Rewrapper(handle)
            scanner = _scan(path, stream, writer)
            writer.close()
        records, kind, blocks = writer.records, "bgzf", _bgzf_blocks(source)
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
        "gzi_hex": None if blocks is None else _gzi_bytes(blocks).hex(),
        "records": [list(r) for r in records],
    }


def _note_rna_and_gaps(path: Path, scanner: _Scanner) -> None:
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
