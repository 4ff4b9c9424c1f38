"""Robustness, second pass (issue 20): odd output paths, option ranges, hostile record names,
mismatched inputs and model folders that would exhaust memory. Every case goes through the
command line (``genoformer.cli.main``) and ends in a result or one line and exit status 2.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from genoformer import cli

GFF = ("##gff-version 3\n##sequence-region c1 1 300\n"
       "c1\tt\tgene\t11\t70\t.\t+\t.\tID=g1\nc1\tt\tCDS\t11\t70\t.\t+\t0\tParent=g1\n")


@pytest.fixture
def gff(tmp_path) -> Path:
    path = tmp_path / "genes.gff3"
    path.write_text(GFF)
    return path


def evaluate_argv(gff: Path, *more: str) -> list[str]:
    return ["evaluate", "--reference", str(gff), "--prediction", str(gff), *more]


def one_error_line(capsys, status: int) -> str:
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("genoformer: error: ")
    return err.strip()


# --------------------------------------------------------------------------- where outputs go

def test_evaluate_writes_json_to_standard_output_for_a_dash(gff, capsys):
    assert cli.main(evaluate_argv(gff, "--json", "-")) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["nucleotide"]


@pytest.mark.parametrize("into", ["pipe", "file"])
def test_evaluate_json_through_dev_stdout_follows_the_table_and_leaves_the_node_alone(gff, tmp_path, into):
    """/dev/stdout -> /proc/self/fd/1 -> a pipe or the file standard output is redirected to: the JSON
    must follow the table there (an atomic rename replaced that file, or printed nothing)."""
    argv = [sys.executable, "-m", "genoformer.cli", *evaluate_argv(gff, "--json", "/dev/stdout")]
    if into == "pipe":
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        out = result.stdout
    else:
        with open(tmp_path / "log.txt", "w") as log:
            result = subprocess.run(argv, stdout=log, stderr=subprocess.PIPE, text=True, timeout=120)
        out = (tmp_path / "log.txt").read_text()
    assert result.returncode == 0, result.stderr
    assert out.startswith("| level |") and json.loads(out[out.index("{"):])["nucleotide"]
    assert os.path.islink("/dev/stdout")


def test_evaluate_json_into_a_fifo_writes_through_it(gff, tmp_path):
    fifo = tmp_path / "metrics.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    assert cli.main(evaluate_argv(gff, "--json", str(fifo))) == 0
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert received and json.loads(received[0])["nucleotide"]


def test_evaluate_json_through_a_symlink_replaces_its_target_and_keeps_the_link(gff, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "metrics.json"
    target.write_text("old")
    link = tmp_path / "metrics.json"
    link.symlink_to(target)
    assert cli.main(evaluate_argv(gff, "--json", str(link))) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["nucleotide"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_a_full_device_is_an_error_naming_it(gff, capsys):
    status = cli.main(evaluate_argv(gff, "--json", "/dev/full"))
    assert one_error_line(capsys, status) == "genoformer: error: /dev/full: No space left on device"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_json_naming_a_folder_is_one_line(gff, tmp_path, capsys):
    status = cli.main(evaluate_argv(gff, "--json", str(tmp_path)))
    assert one_error_line(capsys, status) == f"genoformer: error: {tmp_path}: is a folder, not a file to write"


def test_json_below_a_file_is_one_line_naming_the_path(gff, tmp_path, capsys):
    status = cli.main(evaluate_argv(gff, "--json", str(gff / "metrics.json")))
    assert one_error_line(capsys, status) == f"genoformer: error: {gff / 'metrics.json'}: Not a directory"
    assert gff.read_text() == GFF


def test_a_read_only_output_folder_is_one_line_and_leaves_nothing(gff, tmp_path, capsys, monkeypatch):
    import errno

    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes into read-only folders: refuse as the kernel would for others
        create = os.open

        def refuse(path, *args, **kwargs):
            if str(path).startswith(str(folder)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return create(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
    try:
        status = cli.main(evaluate_argv(gff, "--json", str(folder / "metrics.json")))
        assert one_error_line(capsys, status) == f"genoformer: error: {folder / 'metrics.json'}: Permission denied"
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_an_os_error_about_no_path_of_the_user_stays_a_traceback(gff, monkeypatch):
    from genoformer import commands

    def broken(args):
        raise FileNotFoundError(2, "No such file or directory", "/nonexistent/genoformer/internal.dat")

    monkeypatch.setattr(commands, "evaluate", broken)
    with pytest.raises(FileNotFoundError):
        cli.main(evaluate_argv(gff))


# --------------------------------------------------------------------------- option ranges

@pytest.mark.parametrize("argv, message", [
    (["annotate", "--model", "m", "--fasta", "f", "--out", "o", "--batch-size=-1"],
     "argument --batch-size: -1 is not a positive number (1 or more)"),
    (["annotate", "--model", "m", "--fasta", "f", "--out", "o", "--batch-size=0"],
     "argument --batch-size: 0 is not a positive number (1 or more)"),
    (["annotate", "--model", "m", "--fasta", "f", "--out", "o", "--window-length", "0"],
     "argument --window-length: 0 is not a positive number (1 or more)"),
    (["annotate", "--model", "m", "--fasta", "f", "--out", "o", "--threads", "0"],
     "argument --threads: 0 is not a positive number (1 or more)"),
    (["evaluate", "--reference", "r", "--prediction", "p", "--threads=-3"],
     "argument --threads: -3 is not a positive number (1 or more)"),
    (["annotate", "--model", "m", "--fasta", "f", "--out", "o", "--gene-cost", "nan"],
     "argument --gene-cost: nan is not a finite number of 0 or more"),
    (["annotate", "--model", "m", "--fasta", "f", "--out", "o", "--codon-weight=-1"],
     "argument --codon-weight: -1 is not a finite number of 0 or more"),
    (["annotate", "--model", "m", "--fasta", "f", "--out", "o", "--start-weight", "inf"],
     "argument --start-weight: inf is not a finite number of 0 or more"),
    (["annotate", "--model", "m", "--fasta", "f", "--out", ""],
     "argument --out: an empty name; give a file name or prefix"),
    (["evaluate", "--reference", "r", "--prediction", "p", "--json", ""],
     "argument --json: an empty name; give a file name or prefix"),
    (["plan", "--length", "0"], "argument --length: 0 is not a positive number (1 or more)"),
    (["annotate", "--model", "m", "--fasta", "f", "--out", "o", "--device", "gpu"],
     "argument --device: 'gpu' is not a device; use auto, cpu, cuda, cuda:N or mps"),
    (["annotate", "--model", "m", "--fasta", "f", "--out", "o", "--device", "cuda:x"],
     "argument --device: 'cuda:x' is not a device; use auto, cpu, cuda, cuda:N or mps"),
    (["plan", "--length", "64", "--batch-size", "2.5"], "argument --batch-size: '2.5' is not a whole number"),
    (["export", "--checkpoint", "c", "--out", " "], "argument --out: an empty name; give a file name or prefix"),
])
def test_numeric_and_path_options_are_range_checked_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].endswith(message), err


# --------------------------------------------------------------------------- model folders

SEQUENCE = ("ATGGCTAAAGCTTGA" * 200)[:3000]  # record c1, 3 kb


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from genoformer.tasks import TaggingTask

    from .conftest import TINY

    folder = tmp_path_factory.mktemp("robust_model") / "model"
    TaggingTask(encoder=TINY).export(folder)
    return folder


@pytest.fixture
def fasta(tmp_path) -> Path:
    path = tmp_path / "c1.fa"
    path.write_text(f">c1\n{SEQUENCE}\n")
    return path


def annotate_argv(model: Path, fasta: Path, out: Path, *more: str) -> list[str]:
    return ["annotate", "--model", str(model), "--fasta", str(fasta), "--out", str(out), *more]


def damaged_copy(model: Path, tmp_path: Path, change) -> Path:
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(model, copy)
    config = json.loads((copy / "config.json").read_text())
    change(config)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("change, message", [
    (lambda c: c["head"].update(classes=[]), "head.classes must be a list of at least 2 distinct class names, got []"),
    (lambda c: c["head"].pop("scheme"), "head.scheme (the label scheme of a tagging model) is missing"),
    (lambda c: c["head"].update(scheme={"classes": ["intergenic", "CDS"]}),
     "head.scheme is invalid: label scheme needs keys 'classes' and 'kind' (and optional 'mapping'); "
     "got ['classes']"),
    (lambda c: c["head"].update(window_length="2k"),
     "head.window_length must be a whole number of bases from 1 to 268,435,456 (0: not recorded), got '2k'"),
    (lambda c: c["head"].update(window_length=1e12),
     "head.window_length must be a whole number of bases from 1 to 268,435,456 (0: not recorded), "
     "got 1000000000000.0"),
    (lambda c: c["head"].update(window_length=10**12),
     "head.window_length must be a whole number of bases from 1 to 268,435,456 (0: not recorded), got 1000000000000"),
    (lambda c: c["head"].update(organism="fungus"),
     "head.organism must be one of 'prokaryote', 'eukaryote', got 'fungus'"),
])
def test_a_model_config_head_is_validated_naming_file_and_field(model, fasta, tmp_path, capsys, change, message):
    damaged = damaged_copy(model, tmp_path, change)
    status = cli.main(annotate_argv(damaged, fasta, tmp_path / "out" / "pred", "--window-length", "64"))
    assert one_error_line(capsys, status) == f"genoformer: error: {damaged / 'config.json'}: {message}"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_config_far_larger_than_its_weights_is_refused_before_building_the_network(model, fasta, tmp_path, capsys):
    """d_model 65536, d_ff 2^20, depth 64 would be terabytes of parameters; the 100 KB weight file
    shows it is not that model, and the shapes say so without allocating anything."""
    damaged = damaged_copy(model, tmp_path, lambda c: c["model"].update(d_model=65536, d_ff=1048576, depth=64))
    status = cli.main(annotate_argv(damaged, fasta, tmp_path / "pred", "--window-length", "64"))
    line = one_error_line(capsys, status)
    assert line.startswith(f"genoformer: error: {damaged / 'model.safetensors'}: weights do not match config.json: "
                           "missing tensors ['encoder.blocks.10.")
    assert "encoder.embedding.weight has shape (10, 32), model expects (10, 65536)" in line
    assert line.endswith("config.json describes 9,758,259,544,076 parameters, model.safetensors holds 16,652")


def test_a_window_longer_than_the_record_is_clipped_to_it(model, fasta, tmp_path, capsys):
    """--window-length 50,000,000 on a 3 kb record: one 3 kb window, not 50 Mb of padding."""
    import tracemalloc

    tracemalloc.start()
    assert cli.main(annotate_argv(model, fasta, tmp_path / "pred", "--window-length", "50000000",
                                  "--single-strand")) == 0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 * 2**20
    lines = (tmp_path / "pred.CDS.plus.bedgraph").read_text().splitlines()
    assert lines[-1].split("\t")[:3][0] == "c1" and int(lines[-1].split("\t")[2]) == 3000


# --------------------------------------------------------------------------- RNA and gaps

@pytest.mark.parametrize("tokenizer", ["nucleotide", "kmer3"])
def test_the_tokenizer_encodes_exactly_the_characters_the_fasta_check_accepts(tokenizer):
    from genoformer.genome.fasta_scan import _VALID
    from genoformer.tokenize import KmerTokenizer, NucleotideTokenizer

    tok = NucleotideTokenizer() if tokenizer == "nucleotide" else KmerTokenizer(3)
    accepted = set()
    for byte in range(256):
        try:
            tok.encode(bytes([byte]) * 3)
        except ValueError:
            continue
        accepted.add(byte)
    assert accepted == set(np.flatnonzero(_VALID).tolist()) - {ord("\n")}
    assert list(tok.encode("ACGU")) == list(tok.encode("ACGT"))
    assert list(tok.encode("AC-TA")) == list(tok.encode("ACNTA"))


def test_annotate_reads_rna_as_dna_and_gaps_as_unknown_bases_with_a_notice(model, tmp_path, capsys):
    rna = tmp_path / "rna.fa"
    rna.write_text(f">c1\n{SEQUENCE.replace('T', 'U')[:1500]}{'-' * 30}{SEQUENCE[1530:]}\n")
    dna = tmp_path / "dna.fa"
    dna.write_text(f">c1\n{SEQUENCE[:1500]}{'N' * 30}{SEQUENCE[1530:]}\n")
    assert cli.main(annotate_argv(model, rna, tmp_path / "rna", "--window-length", "512")) == 0
    err = capsys.readouterr().err
    assert f"genoformer: {rna}: record 'c1' (and maybe others) holds RNA bases (U); they are read as T" in err
    assert (f"genoformer: {rna}: record 'c1' (and maybe others) holds gaps ('-'); they are read as N "
            "(unknown base), keeping every position") in err
    assert cli.main(annotate_argv(model, dna, tmp_path / "dna", "--window-length", "512")) == 0
    for suffix in ("CDS.plus.bedgraph", "CDS.minus.bedgraph", "gff3"):
        rna_lines = (tmp_path / f"rna.{suffix}").read_text().splitlines()[1:]
        assert rna_lines == (tmp_path / f"dna.{suffix}").read_text().splitlines()[1:]


# --------------------------------------------------------------------------- names in BED files

def test_a_regions_line_for_a_record_named_track_something_is_a_region(tmp_path, capsys):
    gff = tmp_path / "genes.gff3"
    gff.write_text(GFF.replace("c1", "trackA"))
    regions = tmp_path / "regions.bed"
    regions.write_text("track name=held_out\nbrowser position trackA:1-300\ntrackA\t0\t300\n")
    assert cli.main(evaluate_argv(gff, "--regions", str(regions), "--json", "-")) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["nucleotide"]["coding"]["tp"] == 60


@pytest.mark.parametrize("name, reason", [
    ("#c1", "starts with '#': BED and bedGraph readers take its lines for comments"),
    ("browser", "is a header word: BED and bedGraph readers take its lines for track/browser lines"),
])
def test_annotate_warns_once_about_a_record_name_bed_readers_would_skip(model, tmp_path, capsys, name, reason):
    fasta = tmp_path / "odd.fa"
    fasta.write_text(f">{name}\n{SEQUENCE}\n")
    assert cli.main(annotate_argv(model, fasta, tmp_path / "pred", "--window-length", "512")) == 0
    err = capsys.readouterr().err
    warning = f"genoformer: warning: record {name!r} {reason}; rename the record to read these files back"
    assert err.count(warning) == 1, err


# --------------------------------------------------------------------------- what evaluate compares

def scores(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def test_evaluate_sizes_records_by_their_sequence_region_lines(gff, tmp_path, capsys):
    """The help text's example: regions past the last feature are scored (all of c1's 300 bases)."""
    regions = tmp_path / "held_out.bed"
    regions.write_text("c1\t0\t300\n")
    assert cli.main(evaluate_argv(gff, "--regions", str(regions), "--json", "-")) == 0
    coding = scores(capsys)["nucleotide"]["coding"]
    assert (coding["tp"], coding["tn"]) == (60, 2 * 300 - 60)


def test_evaluate_refuses_a_prediction_on_other_records(gff, tmp_path, capsys):
    other = tmp_path / "other.gff3"
    other.write_text(GFF.replace("c1", "chr1"))
    status = cli.main(["evaluate", "--reference", str(gff), "--prediction", str(other)])
    assert one_error_line(capsys, status) == (
        f"genoformer: error: {other}: no record name in common with the reference {gff} (reference: 'c1'; "
        "prediction: 'chr1'), so nothing could match; rename one side's records")


@pytest.mark.parametrize("lines, message", [
    ("c1\t10\t70\tgene\t0\t+\nc1\t100\t160\tgene\t0\t-\n",
     "no CDS feature, so no base or gene of the reference counts: read 2 'gene' (a BED line's name column is "
     "its type); the scores compare CDS features (BED: name 'CDS', or BED12)"),
    ("# held out\nc1\t-5\t70\tCDS\t0\t+\n", "line 2: start coordinate '-5' is not a non-negative integer"),
], ids=["a reference of genes counts nothing", "a negative start names its line"])
def test_evaluate_says_what_is_wrong_with_a_bed_reference(gff, tmp_path, capsys, lines, message):
    bed = tmp_path / "reference.bed"
    bed.write_text(lines)
    status = cli.main(["evaluate", "--reference", str(bed), "--prediction", str(gff)])
    sep = ", " if message.startswith("line") else ": "
    assert one_error_line(capsys, status) == f"genoformer: error: {bed}{sep}{message}"


# --------------------------------------------------------------------------- names in GFF3 files

HOSTILE_NAMES = ["a,b", "x;y=z", "p%q&r%2C", "tab\there", "ünïcödé", "#lead", "sp ace", "new\nline"]


def genes_on(names: list[str]):
    """Two genes per record, IDs built from the record name as the decoder builds them."""
    from genoformer.genome import make_annotation

    rows = []
    for name in names:
        for g, (start, end) in enumerate(((10, 70), (100, 160)), 1):
            gene = f"{name}.g{g}"
            rows += [(name, "gene", start, end, gene, None), (name, "mRNA", start, end, f"{gene}.t1", gene),
                     (name, "CDS", start, end, f"{gene}.t1.cds", f"{gene}.t1")]
    columns = list(zip(*rows))
    return make_annotation({"seqid": list(columns[0]), "type": list(columns[1]), "start": list(columns[2]),
                            "end": list(columns[3]), "strand": ["+"] * len(rows), "id": list(columns[4]),
                            "parent": list(columns[5])})


def test_hostile_record_names_survive_a_gff3_round_trip(tmp_path):
    from genoformer.export import write_gff3
    from genoformer.genome import read_annotation

    table = genes_on(HOSTILE_NAMES)
    path = write_gff3(table, tmp_path / "hostile.gff3", {name: 300 for name in HOSTILE_NAMES})
    back = read_annotation(path)
    assert back.attrs["sequence_lengths"] == {name: 300 for name in HOSTILE_NAMES}
    columns = ["seqid", "type", "start", "end", "id", "parent"]
    assert back[columns].astype(object).where(back[columns].notna(), None).values.tolist() == \
        table[columns].astype(object).where(table[columns].notna(), None).values.tolist()
    cds = back[back["type"] == "CDS"]
    assert cds["gene_id"].tolist() == [f"{name}.g{g}" for name in HOSTILE_NAMES for g in (1, 2)]
    assert cds["transcript_id"].tolist() == [f"{name}.g{g}.t1" for name in HOSTILE_NAMES for g in (1, 2)]


def test_evaluate_counts_each_gene_of_a_record_with_a_comma_in_its_name(tmp_path, capsys):
    """Re-reading genoformer's own GFF3 must not merge a,b.g1 and a,b.g2 (Parent split at the comma)."""
    from genoformer.export import write_gff3

    path = write_gff3(genes_on(["a,b"]), tmp_path / "comma.gff3", {"a,b": 300})
    assert "ID=a%2Cb.g1.t1;Parent=a%2Cb.g1\n" in path.read_text()
    assert cli.main(["evaluate", "--reference", str(path), "--prediction", str(path), "--json", "-"]) == 0
    gene = scores(capsys)["gene"]
    assert (gene["reference"], gene["predicted"], gene["sensitivity"]) == (2, 2, 1.0)


def test_a_full_cache_disk_is_one_line_naming_the_cache_file(gff, fasta, tmp_path, capsys, monkeypatch):
    import errno

    monkeypatch.setenv("GENOFORMER_CACHE", str(tmp_path / "cache"))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    status = cli.main(evaluate_argv(gff, "--fasta", str(fasta)))
    line = one_error_line(capsys, status)
    assert line.startswith(f"genoformer: error: {tmp_path / 'cache'}/") and line.endswith(": No space left on device")


def test_a_full_disk_during_annotate_is_one_line_and_leaves_no_file(model, fasta, tmp_path, capsys, monkeypatch):
    import errno

    out = tmp_path / "out"
    fsync = os.fsync

    def full(fd):  # the output folder's disk is full (the cache's is not)
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(out)):
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    status = cli.main(annotate_argv(model, fasta, out / "pred", "--window-length", "512"))
    assert one_error_line(capsys, status) == f"genoformer: error: {out / 'pred.gff3'}: No space left on device"
    assert list(out.iterdir()) == []


def test_predict_refuses_a_batch_size_below_one(model, fasta):
    from genoformer.errors import ConfigError
    from genoformer.genome import Genome
    from genoformer.model.networks import load_network
    from genoformer.predict import predict_record

    network, pretrained = load_network(model)
    with pytest.raises(ConfigError, match="batch_size must be a whole number of at least 1, got -1"):
        predict_record(network, Genome(fasta), "c1", pretrained.tokenizer, 6, window_length=512, batch_size=-1)
