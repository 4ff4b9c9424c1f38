"""One streaming pass over FASTA bytes: validation with positioned errors, the .fai rows, and an optional
rewrite as BGZF with 60-base lines; plus what the file's first bytes and BGZF block headers say.

:mod:`genoformer.genome.fasta` decides when a file needs this pass and keeps its result in the cache.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from Bio import bgzf

from ..errors import FastaError

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
_OTHER_COMPRESSION = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
}


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


class Scanner:
    """Validates FASTA bytes block by block; computes .fai rows; optionally feeds a rewriting sink.

    A line may span blocks: ``col`` counts its bytes already seen, so memory stays one block even for
    unwrapped chromosomes.
    """

    def __init__(self, path: Path, sink: "Rewrapper | None" = None):
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


class Rewrapper:
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


def scan(path: Path, stream: BinaryIO, sink: Rewrapper | None = None) -> Scanner:
    """Run the validator over a byte stream (already decompressed); errors name ``path``."""
    scanner = Scanner(path, sink)
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


def sniff_compression(path: Path) -> str:
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


def bgzf_blocks(path: Path) -> np.ndarray:
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


def gzi_bytes(blocks: np.ndarray) -> bytes:
    """htslib .gzi: count, then (compressed, uncompressed) starts of every non-empty block but the first."""
    rows = blocks[1:][blocks[1:, 2] > 0, :2]
    return struct.pack("<Q", len(rows)) + rows.astype("<u8").tobytes()
