"""Read GFF3, GTF, BED and GenBank annotations into one pandas table.

Every reader returns the same table (:mod:`genoformer.genome.annotation_table`: its columns, its
``line`` index and how ``gene_id``/``transcript_id`` follow the ``id``/``parent`` links), with 0-based
half-open coordinates: GFF/GTF/GenBank 1-based closed positions are converted here, at the file edge,
and nowhere else.

How each format fills the hierarchy columns:

* ``id``/``parent``: GFF3 ``ID``/``Parent`` (several parents stay comma-joined); GTF gene rows
  get ``id = gene_id``, transcript rows ``id = transcript_id, parent = gene_id``, all other GTF
  rows ``parent = transcript_id``; BED12 lines become a transcript row (``id`` = the name, made
  unique with ``:line`` when names repeat) with ``exon`` and ``CDS`` children; GenBank features
  link to their gene through ``locus_tag`` (see :func:`_genbank_rows`).

Format rules decided here:

* BED3-BED9: one row per line; ``type`` is the name column when there is one (not ``.``), else
  ``"region"``, so a BED whose names are classes (promoter, enhancer, ...) feeds
  ``LabelScheme.from_names`` directly. thickStart/thickEnd/itemRgb of BED7-9 are kept in
  ``attributes`` only (ChromHMM-style BED9 files set them to the whole region).
* BED12: a transcript model: ``mRNA`` row (``ncRNA`` when thickStart == thickEnd), one ``exon``
  row per block and ``CDS`` rows for the blocks' parts inside [thickStart, thickEnd).
* GenBank: mirrors NCBI's own GenBank -> GFF3 conversion: ``gene`` (``pseudogene`` when
  /pseudo), RNA features (mRNA, tRNA, rRNA, ncRNA, ...) with one ``exon`` row per location
  part, and one ``CDS`` row per part of a ``join(...)`` with GFF3 phases from /codon_start.
  A CDS's parent is the latest preceding mRNA of its locus when the record has mRNAs, else its
  gene, so introns between CDS parts are derived by the labels, as for NCBI's GFF3.
"""
from __future__ import annotations

import gzip
import io
import re
import warnings
import zlib
from os import PathLike
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd

from genoformer.errors import AnnotationError
from genoformer.files import atomic_write
from genoformer.genome.annotation_table import ANNOTATION_COLUMNS, gene_and_transcript_ids, make_annotation

FORMATS = ("gff3", "gtf", "bed", "genbank")
_FORMAT_ALIASES = {"gff": "gff3", "gff3": "gff3", "gtf": "gtf", "gff2": "gtf", "bed": "bed",
                   "genbank": "genbank", "gb": "genbank", "gbk": "genbank", "gbff": "genbank"}
_GTF_PAIR = re.compile(r'\s*([^\s";]+)\s+(?:"([^"]*)"|([^\s";]+))\s*(?:;|$)')
_GTF_ATTRIBUTES = re.compile(r'^\s*[^\s=;"]+\s+("|[^\s=;"]+\s*(;|$))')
_DIGITS = r"[0-9]+"
_BED_COUNTS = (3, 4, 5, 6, 7, 8, 9, 12)
_SIGNED = re.compile(r"-?[0-9]+")
_SEQUENCE_REGION = re.compile(r"^##sequence-region[ \t]+(\S+)[ \t]+([0-9]+)[ \t]+([0-9]+)[ \t]*$", re.MULTILINE)


# --------------------------------------------------------------------------- public API

def read_annotation(path: str | PathLike, format: str | None = None) -> pd.DataFrame:
    """Read a GFF3, GTF, BED (3-9 or 12 columns) or GenBank file, plain or gzip.

    The format is detected from the content (not the file name) unless ``format`` is one of
    ``"gff3"``, ``"gtf"``, ``"bed"``, ``"genbank"``. Malformed input raises
    :class:`~genoformer.errors.AnnotationError` naming the file and line. The table's
    ``attrs["path"]`` is the file it came from.
    """
    path = Path(path)
    text = _read_text(path)
    if format is None:
        fmt = detect_format(text, path)
    else:
        fmt = _FORMAT_ALIASES.get(str(format).lower())
        if fmt is None:
            raise AnnotationError(path, f"unknown annotation format {format!r}; use one of {', '.join(FORMATS)}")
    if fmt == "genbank":
        table = _parse_genbank(text, path)
    elif fmt == "bed":
        table = _parse_bed(text.split("\n"), path)
    else:
        table = _parse_gff_like(text, path, gtf=fmt == "gtf")
    # Later checks against a genome (check_against_genome, the evaluator) name this file and line.
    table.attrs["path"] = str(path)
    table.attrs["format"] = fmt
    if fmt == "gff3":
        table.attrs["sequence_lengths"] = _sequence_regions(text)
    return table


def detect_format(text: str, path: str | PathLike | None = None) -> str:
    """Guess ``"gff3"``, ``"gtf"``, ``"bed"`` or ``"genbank"`` from the first data lines."""
    for number, line in enumerate(io.StringIO(text), 1):
        if number > 2000:
            break
        line = line.rstrip("\r\n")
        if line.startswith("LOCUS"):
            return "genbank"
        if line.startswith("##gff-version"):
            return "gff3" if line.split()[-1].startswith("3") else "gtf"
        if not line.strip() or line.startswith("#") or _is_bed_header(line):
            continue
        fields = line.split("\t")
        if len(fields) in (8, 9) and fields[3].isdigit() and fields[4].isdigit():
            attributes = fields[8] if len(fields) == 9 else ""
            return "gtf" if _GTF_ATTRIBUTES.match(attributes) else "gff3"
        fields = fields if len(fields) > 1 else line.split()
        # Signed, so a negative start is reported by the BED reader with its line, not as an unknown format.
        if len(fields) >= 3 and _SIGNED.fullmatch(fields[1]) and _SIGNED.fullmatch(fields[2]):  # columns checked later
            return "bed"
        raise AnnotationError(
            path, "unrecognised annotation format (expected GFF3, GTF, BED or GenBank)", line=number)
    raise AnnotationError(path, "no annotation lines found (only comments or blank lines)")


def genbank_to_fasta(path: str | PathLike, out: str | PathLike) -> Path:
    """Write the sequences of a GenBank file as FASTA (atomically) so it can serve as a genome.

    A record without sequence (no ORIGIN section, e.g. an annotation-only or CON record)
    raises AnnotationError naming the file and record: the annotation alone cannot be a genome.
    """
    from Bio.Seq import UndefinedSequenceError

    path, out = Path(path), Path(out)
    text = _read_text(path)
    with atomic_write(out) as handle:
        for record in _genbank_records(text, path):
            try:
                sequence = str(record.seq)
            except UndefinedSequenceError:
                raise AnnotationError(
                    path, "GenBank record has no sequence (no ORIGIN section); give the genome as FASTA",
                    record=_genbank_seqid(record)) from None
            if not sequence:
                raise AnnotationError(path, "GenBank record has an empty sequence", record=_genbank_seqid(record))
            handle.write(f">{_genbank_seqid(record)}\n")
            handle.writelines(sequence[i:i + 80] + "\n" for i in range(0, len(sequence), 80))
    return out


# --------------------------------------------------------------------------- file edge

def _read_text(path: Path) -> str:
    if not path.exists():
        raise AnnotationError(path, "no such file")
    if path.is_dir():
        raise AnnotationError(path, "is a directory, not an annotation file")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise AnnotationError(path, f"cannot read file: {error.strerror or error}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise AnnotationError(path, f"corrupt or truncated gzip file ({error})") from None
    if not raw.strip():
        raise AnnotationError(path, "file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise AnnotationError(path, "not a text file (invalid UTF-8)", line=line) from None
    if "\r" in text:  # Windows (and old Mac) line endings are fine, not an error
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _is_bed_header(line: str) -> bool:
    word = line.split(None, 1)[0] if line.strip() else ""
    return word in ("track", "browser")


def _first_bad(path: Path, line_numbers: np.ndarray, bad: np.ndarray, message) -> None:
    """Raise for the first True in ``bad``; ``message(i)`` words the problem of row i."""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AnnotationError(path, message(i), line=int(line_numbers[i]))


def _integers(path: Path, line_numbers: np.ndarray, column: pd.Series, what: str) -> np.ndarray:
    ok = column.str.fullmatch(_DIGITS).to_numpy(dtype=bool)
    _first_bad(path, line_numbers, ~ok, lambda i: f"{what} {column.iloc[i]!r} is not a non-negative integer")
    return column.to_numpy(dtype=object).astype(np.int64)


def _scores(path: Path, line_numbers: np.ndarray, column: pd.Series) -> np.ndarray:
    dot = (column == ".").to_numpy(dtype=bool)
    score = pd.to_numeric(column.where(~dot), errors="coerce").to_numpy(dtype=np.float64)
    _first_bad(path, line_numbers, ~dot & np.isnan(score), lambda i: f"score {column.iloc[i]!r} is not a number or '.'")
    return score


def _data_lines(lines: list[str]) -> tuple[np.ndarray, list[str]]:
    numbered = [(number, line) for number, line in enumerate(lines, 1)
                if line and not line.startswith("#") and not line.isspace()]
    numbers = np.fromiter((n for n, _ in numbered), dtype=np.int64, count=len(numbered))
    return numbers, [line for _, line in numbered]


def _table(lines: list[str], n_columns: int, separator: str = "\t") -> pd.DataFrame:
    return pd.read_csv(io.StringIO("\n".join(lines)), sep=separator, header=None, names=range(n_columns),
                       dtype=str, na_filter=False, quoting=3, engine="c" if separator == "\t" else "python")


# --------------------------------------------------------------------------- GFF3 / GTF

def _parse_gff_like(text: str, path: Path, *, gtf: bool) -> pd.DataFrame:
    fasta = text.find("\n##FASTA")  # GFF3 may end with embedded sequences: not annotation
    if fasta >= 0:
        text = text[:fasta]
    line_numbers, lines = _data_lines(text.split("\n"))
    if not lines:
        if not gtf and text.lstrip().startswith("##gff-version"):
            # A declared GFF3 without features is valid: e.g. a gene finder that called no gene.
            return make_annotation({"seqid": [], "type": [], "start": [], "end": []})
        raise AnnotationError(path, "no feature lines (only comments or blank lines)")
    n_fields = np.fromiter((line.count("\t") + 1 for line in lines), dtype=np.int64, count=len(lines))
    _first_bad(path, line_numbers, (n_fields < 8) | (n_fields > 9),
               lambda i: f"expected 9 tab-separated columns, found {n_fields[i]}")
    table = _table(lines, 9)

    for column, what in ((0, "seqid"), (2, "type")):
        _first_bad(path, line_numbers, (table[column] == "").to_numpy(), lambda i, what=what: f"empty {what} column")
    start = _integers(path, line_numbers, table[3], "start coordinate")
    end = _integers(path, line_numbers, table[4], "end coordinate")
    _first_bad(path, line_numbers, start < 1, lambda i: "start coordinate 0 is below 1 (coordinates are 1-based)")
    _first_bad(path, line_numbers, start > end, lambda i: f"start {start[i]} is greater than end {end[i]}")
    strand = table[6]
    _first_bad(path, line_numbers, ~strand.isin(["+", "-", ".", "?"]).to_numpy(),
               lambda i: f"strand {strand.iloc[i]!r} is not '+', '-' or '.'")
    phase = table[7]
    _first_bad(path, line_numbers, ~phase.isin(["0", "1", "2", "."]).to_numpy(),
               lambda i: f"phase {phase.iloc[i]!r} is not 0, 1, 2 or '.'")
    score = _scores(path, line_numbers, table[5])

    if gtf:
        attributes = _gtf_attributes(table[8].tolist(), line_numbers, path)
        hierarchy = _gtf_hierarchy(table[2].tolist(), attributes)
    else:
        attributes = _gff3_attributes(table[8].tolist(), line_numbers, path)
        ids = [a.get("ID") for a in attributes]
        parents = [a.get("Parent") for a in attributes]
        gene_ids, transcript_ids = gene_and_transcript_ids(ids, parents)
        hierarchy = {"id": ids, "parent": parents, "gene_id": gene_ids, "transcript_id": transcript_ids,
                     "name": [a.get("Name") for a in attributes]}
    seqid = table[0] if gtf else table[0].map(_unescape)
    return make_annotation({
        "seqid": seqid.to_numpy(dtype=object), "source": table[1].to_numpy(dtype=object),
        "type": table[2].to_numpy(dtype=object), "start": start - 1, "end": end, "score": score,
        "strand": strand.replace("?", ".").to_numpy(dtype=object),
        "phase": pd.to_numeric(phase.where(phase != "."), errors="coerce").astype("Int64"),
        "attributes": attributes, **hierarchy,
    }, index=line_numbers)


def _sequence_regions(text: str) -> dict[str, int]:
    """Record lengths the ``##sequence-region`` lines declare (the end of each; starts are 1)."""
    return {_unescape(name): int(end) for name, _, end in _SEQUENCE_REGION.findall(text)}


def _unescape(value: str) -> str:
    return unquote(value) if "%" in value else value


def _gff3_attributes(column: list[str], line_numbers: np.ndarray, path: Path) -> list[dict[str, str]]:
    parsed = []
    for row, text in enumerate(column):
        attributes: dict[str, str] = {}
        if text not in ("", "."):
            for item in text.split(";"):
                key, equals, value = item.strip().partition("=")
                if not equals or not key:
                    if not item.strip():
                        continue
                    raise AnnotationError(path, f"attribute {item.strip()!r} is not key=value",
                                          line=int(line_numbers[row]))
                key, value = _unescape(key), _unescape(value)
                attributes[key] = f"{attributes[key]},{value}" if key in attributes else value
        parsed.append(attributes)
    return parsed


def _gtf_attributes(column: list[str], line_numbers: np.ndarray, path: Path) -> list[dict[str, str]]:
    parsed = []
    for row, text in enumerate(column):
        attributes: dict[str, str] = {}
        position, stop = 0, len(text.rstrip())
        while position < stop:
            match = _GTF_PAIR.match(text, position)
            if match is None:
                raise AnnotationError(path, f'cannot parse GTF attributes at {text[position:position + 40]!r} '
                                      '(expected key "value";)', line=int(line_numbers[row]))
            key, value = match[1], match[2] if match[2] is not None else match[3]
            attributes[key] = f"{attributes[key]},{value}" if key in attributes else value
            position = match.end()
        parsed.append(attributes)
    return parsed


def _gtf_hierarchy(types: list[str], attributes: list[dict[str, str]]) -> dict[str, list]:
    gene_ids = [a.get("gene_id") for a in attributes]
    transcript_ids = [a.get("transcript_id") for a in attributes]
    ids, parents, names = [], [], []
    for kind, gene, transcript, a in zip(types, gene_ids, transcript_ids, attributes):
        if kind == "gene":
            ids.append(gene), parents.append(None), names.append(a.get("gene_name"))
        elif kind in ("transcript", "mRNA"):
            ids.append(transcript), parents.append(gene), names.append(a.get("transcript_name"))
        else:
            ids.append(None), parents.append(transcript or gene), names.append(None)
    transcript_ids = [None if kind == "gene" else t for kind, t in zip(types, transcript_ids)]
    return {"id": ids, "parent": parents, "gene_id": gene_ids, "transcript_id": transcript_ids, "name": names}


# --------------------------------------------------------------------------- BED

def _parse_bed(lines: list[str], path: Path) -> pd.DataFrame:
    numbered = [(number, line) for number, line in enumerate(lines, 1)
                if line.strip() and not line.startswith("#") and not _is_bed_header(line)]
    if not numbered:
        raise AnnotationError(path, "no BED lines (only comments, headers or blank lines)")
    line_numbers = np.fromiter((n for n, _ in numbered), dtype=np.int64, count=len(numbered))
    lines = [line for _, line in numbered]
    tabs = any("\t" in line for line in lines)
    n_fields = np.fromiter(((line.count("\t") + 1) if tabs else len(line.split()) for line in lines),
                           dtype=np.int64, count=len(lines))
    n = int(n_fields[0])
    _first_bad(path, line_numbers, ~np.isin(n_fields, _BED_COUNTS),
               lambda i: f"a BED line has 3-9 or 12 columns, found {n_fields[i]}")
    _first_bad(path, line_numbers, n_fields != n,
               lambda i: f"found {n_fields[i]} columns where the first BED line has {n}")
    table = _table(lines, n, "\t" if tabs else r"\s+")

    start = _integers(path, line_numbers, table[1], "start coordinate")
    end = _integers(path, line_numbers, table[2], "end coordinate")
    _first_bad(path, line_numbers, start > end, lambda i: f"start {start[i]} is greater than end {end[i]}")
    name = table[3].where(table[3] != ".", "") if n >= 4 else pd.Series([""] * len(table))
    score = _scores(path, line_numbers, table[4]) if n >= 5 else np.full(len(table), np.nan)
    strand = table[5] if n >= 6 else pd.Series(["."] * len(table))
    _first_bad(path, line_numbers, ~strand.isin(["+", "-", "."]).to_numpy(),
               lambda i: f"strand {strand.iloc[i]!r} is not '+', '-' or '.'")
    columns = {"seqid": table[0].to_numpy(dtype=object), "start": start, "end": end, "score": score,
               "strand": strand.to_numpy(dtype=object), "name": name.to_numpy(dtype=object)}
    if n == 12:
        return _bed12_rows(table, columns, line_numbers, path)
    extra = ("thickStart", "thickEnd", "itemRgb")[:max(0, n - 6)]
    attributes = [dict(zip(extra, values)) for values in zip(*(table[6 + k] for k in range(len(extra))))] \
        if extra else None
    kind = name.where(name != "", "region").to_numpy(dtype=object)
    return make_annotation({**columns, "type": kind, "attributes": attributes}, index=line_numbers)


def _bed12_rows(table: pd.DataFrame, columns: dict, line_numbers: np.ndarray, path: Path) -> pd.DataFrame:
    start, end = columns["start"], columns["end"]
    thick_start = _integers(path, line_numbers, table[6], "thickStart")
    thick_end = _integers(path, line_numbers, table[7], "thickEnd")
    coding = thick_start < thick_end
    _first_bad(path, line_numbers, coding & ((thick_start < start) | (thick_end > end)),
               lambda i: f"thickStart..thickEnd {thick_start[i]}..{thick_end[i]} lies outside {start[i]}..{end[i]}")
    count = _integers(path, line_numbers, table[9], "blockCount")
    sizes = table[10].str.rstrip(",").str.split(",")
    offsets = table[11].str.rstrip(",").str.split(",")
    for lists, what in ((sizes, "blockSizes"), (offsets, "blockStarts")):
        _first_bad(path, line_numbers, (lists.str.len().to_numpy() != count) | (count == 0),
                   lambda i, what=what: f"{what} lists {len(lists.iloc[i])} value(s) but blockCount is {count[i]}")
    row = np.repeat(np.arange(len(table)), count)  # (n_blocks,) line of each block
    block_lines = line_numbers[row]
    size = _integers(path, block_lines, sizes.explode().reset_index(drop=True), "block size")
    block_start = start[row] + _integers(path, block_lines, offsets.explode().reset_index(drop=True), "block start")
    block_end = block_start + size
    _first_bad(path, block_lines, (size == 0) | (block_end > end[row]),
               lambda i: f"block {block_start[i]}..{block_end[i]} is empty or ends past the line's end {end[row[i]]}")
    later = np.r_[False, row[1:] == row[:-1]]
    _first_bad(path, block_lines, later & (block_start < np.r_[0, block_end[:-1]]),
               lambda i: "blocks overlap or are not sorted by position")

    names = pd.Series(columns["name"])
    ids = np.where(names.duplicated(keep=False) | (names == ""),
                   names + ":" + pd.Series(line_numbers).astype(str), names).astype(object)
    cds_start = np.maximum(block_start, thick_start[row])
    cds_end = np.minimum(block_end, thick_end[row])
    is_cds = coding[row] & (cds_start < cds_end)
    cds_row = row[is_cds]
    cds_length = (cds_end - cds_start)[is_cds]
    # phase = bases of this part before the first whole codon: from cumulative coding length
    # upstream of it, which runs right to left on the minus strand
    upstream = pd.Series(cds_length).groupby(cds_row).cumsum().to_numpy() - cds_length
    total = np.bincount(cds_row, weights=cds_length, minlength=len(table)).astype(np.int64)[cds_row]
    minus = columns["strand"][cds_row] == "-"
    upstream = np.where(minus, total - upstream - cds_length, upstream)

    parts = [  # (rows of the table each output row comes from, type, start, end, phase, order within line)
        (np.arange(len(table)), np.where(coding, "mRNA", "ncRNA"), start, end, None, 0),
        (row, np.full(len(row), "exon"), block_start, block_end, None, 1),
        (cds_row, np.full(len(cds_row), "CDS"), cds_start[is_cds], cds_end[is_cds], (-upstream) % 3, 2),
    ]
    source = np.concatenate([p[0] for p in parts])
    order = np.lexsort((np.concatenate([p[2] for p in parts]),
                        np.concatenate([np.full(len(p[0]), p[5]) for p in parts]), source))
    source = source[order]
    is_transcript = np.concatenate([np.full(len(p[0]), p[5] == 0) for p in parts])[order]
    phase = np.concatenate([np.full(len(p[0]), -1) if p[4] is None else p[4] for p in parts])[order]
    parent_id = ids[source]
    attributes = [{"thickStart": str(thick_start[r]), "thickEnd": str(thick_end[r]), "itemRgb": table[8].iloc[r]}
                  if t else {} for r, t in zip(source, is_transcript)]
    return make_annotation({
        "seqid": columns["seqid"][source], "type": np.concatenate([p[1] for p in parts])[order],
        "start": np.concatenate([p[2] for p in parts])[order], "end": np.concatenate([p[3] for p in parts])[order],
        "score": columns["score"][source], "strand": columns["strand"][source],
        "phase": pd.array(np.where(phase < 0, None, phase).tolist(), dtype="Int64"),
        "id": np.where(is_transcript, parent_id, None), "parent": np.where(is_transcript, None, parent_id),
        "gene_id": parent_id, "transcript_id": parent_id, "name": columns["name"][source],
        "attributes": attributes,
    }, index=line_numbers[source])


# --------------------------------------------------------------------------- GenBank

_GENBANK_TYPES = {
    "source": "region", "precursor_RNA": "primary_transcript", "5'UTR": "five_prime_UTR",
    "3'UTR": "three_prime_UTR", "mobile_element": "mobile_genetic_element", "rep_origin": "origin_of_replication",
    "misc_feature": "sequence_feature",
}
_GENBANK_RNAS = frozenset({"mRNA", "tRNA", "rRNA", "ncRNA", "tmRNA", "misc_RNA", "precursor_RNA"})
_GENBANK_CHILDREN = frozenset({"exon", "intron", "5'UTR", "3'UTR"})


def _genbank_records(text: str, path: Path):
    from Bio import SeqIO

    records = SeqIO.parse(io.StringIO(text), "genbank")
    number = 0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Biopython warns on harmless quirks (e.g. long LOCUS lines)
                record = next(records)
        except StopIteration:
            return
        except (ValueError, TypeError, IndexError, AssertionError) as error:
            raise AnnotationError(path, f"cannot parse GenBank record #{number + 1}: {error}") from None
        number += 1
        yield record


def _genbank_seqid(record) -> str:
    return record.id if record.id and record.id != "<unknown id>" else record.name


def _genbank_feature_lines(lines: list[str]) -> list[list[int]]:
    """Line number of each feature key, per record (Biopython keeps no line numbers)."""
    records: list[list[int]] = []
    in_features = False
    for number, line in enumerate(lines, 1):
        if line.startswith("LOCUS"):
            records.append([])
            in_features = False
        elif line.startswith("FEATURES"):
            in_features = True
        elif in_features:
            if line[:1] not in ("", " "):
                in_features = False
            elif line[:5] == "     " and line[5:6] not in ("", " "):
                records[-1].append(number)
    return records


def _parse_genbank(text: str, path: Path) -> pd.DataFrame:
    lines = text.split("\n")
    feature_lines = _genbank_feature_lines(lines)
    locus_lines = [number for number, line in enumerate(lines, 1) if line.startswith("LOCUS")]
    rows: dict[str, list] = {name: [] for name in ANNOTATION_COLUMNS if name not in ("gene_id", "transcript_id")}
    index: list[int] = []
    n_records = 0
    for r, record in enumerate(_genbank_records(text, path)):
        n_records += 1
        numbers = feature_lines[r] if r < len(feature_lines) else []
        if len(numbers) != len(record.features):  # unusual layout: point at the record instead
            numbers = [locus_lines[r] if r < len(locus_lines) else 1] * len(record.features)
        for feature, number in zip(record.features, numbers):
            if feature.location is None:  # Biopython only warns about a location it cannot read
                raise AnnotationError(path, f"cannot parse the location of this {feature.type} feature",
                                      record=_genbank_seqid(record), line=number)
        for row in _genbank_rows(record):
            feature = row.pop("feature")
            for name, value in row.items():
                rows[name].append(value)
            index.append(numbers[feature])
    if n_records == 0:
        raise AnnotationError(path, "no GenBank records found (missing LOCUS line?)")
    gene_ids, transcript_ids = gene_and_transcript_ids(rows["id"], rows["parent"])
    return make_annotation({**rows, "gene_id": gene_ids, "transcript_id": transcript_ids}, index=index)


def _genbank_rows(record):
    """Rows (dicts) for one GenBank record, each with the index of the feature it came from."""
    seqid = _genbank_seqid(record)
    used: dict[str, int] = {}

    def unique(identifier: str) -> str:
        used[identifier] = used.get(identifier, 0) + 1
        return identifier if used[identifier] == 1 else f"{identifier}-{used[identifier]}"

    def locus(feature) -> str | None:
        q = feature.qualifiers
        return (q.get("locus_tag") or q.get("gene") or [None])[0]

    genes = {locus(f): f"gene-{locus(f)}" for f in record.features if f.type == "gene" and locus(f)}
    for identifier in genes.values():
        used[identifier] = 1
    latest_rna: dict[str, str] = {}  # locus -> id of its latest RNA: the parent of later exon/UTR features
    latest_mrna: dict[str, str] = {}  # locus -> id of its latest mRNA: the parent of the CDS that follows it
    for k, feature in enumerate(record.features):
        key, q = feature.type, feature.qualifiers
        tag = locus(feature)
        attributes = {name: ",".join(v if v else "true" for v in values)
                      for name, values in q.items() if name != "translation"}
        kind = _GENBANK_TYPES.get(key, key)
        if key == "gene" and ("pseudo" in q or "pseudogene" in q):
            kind = "pseudogene"
        name = (q.get("protein_id") if key == "CDS" else None) or q.get("gene") or q.get("locus_tag") or [None]
        base = {"feature": k, "seqid": seqid, "source": "GenBank", "score": np.nan,
                "name": name[0], "attributes": attributes}
        parts = [(int(p.start), int(p.end), {1: "+", -1: "-"}.get(p.strand, ".")) for p in feature.location.parts]

        if key == "gene":
            identifier, parent = genes.get(tag) or unique(f"gene-{k}"), None
        elif key == "CDS":
            identifier = unique(f"cds-{(q.get('protein_id') or [tag or k])[0]}")
            parent = latest_mrna.get(tag) or genes.get(tag)
        elif key in _GENBANK_RNAS:
            identifier, parent = unique(f"rna-{tag or k}"), genes.get(tag)
            latest_rna[tag] = identifier
            if key == "mRNA":
                latest_mrna[tag] = identifier
        elif key in _GENBANK_CHILDREN:
            identifier, parent = None, latest_rna.get(tag) or genes.get(tag)
        else:
            identifier, parent = None, None

        if key == "CDS":
            codon_start = int((q.get("codon_start") or ["1"])[0])
            upstream = 0
            for start, end, strand in parts:
                yield {**base, "type": "CDS", "start": start, "end": end, "strand": strand,
                       "phase": (codon_start - 1 - upstream) % 3, "id": identifier, "parent": parent}
                upstream += end - start
            continue
        spans = _spans(parts)
        for start, end, strand in spans:
            yield {**base, "type": kind, "start": start, "end": end, "strand": strand, "phase": None,
                   "id": identifier, "parent": parent}
        if key in _GENBANK_RNAS:
            for n, (start, end, strand) in enumerate(parts, 1):
                yield {**base, "type": "exon", "start": start, "end": end, "strand": strand, "phase": None,
                       "id": f"exon-{identifier[4:]}-{n}", "parent": identifier, "attributes": {}}


def _spans(parts: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """One span for a feature whose parts run in order; the parts themselves when they wrap the
    origin of a circular record or mix strands (one GFF3 row per part, sharing the ID)."""
    strands = {strand for _, _, strand in parts}
    starts = [start for start, _, _ in parts]
    ordered = starts == sorted(starts, reverse=strands == {"-"})
    if len(parts) == 1 or (len(strands) == 1 and ordered):
        return [(min(starts), max(end for _, end, _ in parts), parts[0][2])]
    return parts
