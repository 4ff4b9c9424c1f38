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


def test_evaluate_json_through_dev_stdout_reaches_the_pipe_and_leaves_the_node_alone(gff):
    """Standard output is a pipe here: the JSON must arrive through it (an atomic rename would
    have replaced /dev/stdout's target and printed nothing)."""
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", *evaluate_argv(gff, "--json", "/dev/stdout")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"nucleotide"' in result.stdout and os.path.islink("/dev/stdout")


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


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line_and_leaves_nothing(gff, tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
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
    (["plan", "--length", "64", "--batch-size", "2.5"], "argument --batch-size: '2.5' is not a whole number"),
    (["export", "--checkpoint", "c", "--out", " "], "argument --out: an empty name; give a file name or prefix"),
])
def test_numeric_and_path_options_are_range_checked_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].endswith(message), err
