"""Bad input, through the Python API and the command line: each case gets one specific message.

Every case of issue 8's list runs twice: through the API a user would call (which raises a
GenoformerError naming the file and line/record) and through ``genoformer.cli.main``, the code behind
the ``genoformer`` command (exit status 2, one line on stderr, nothing left in the output folder).
``main`` runs in this process, so the matrix costs no interpreter start-ups; one test runs the real
``python -m genoformer.cli`` to check the process's exit status, stderr and ``--debug``.
Inputs that must work (Windows line endings, a stale ``.fai``) and an all-padding batch row in
bf16/fp16 close the file.
"""
from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from genoformer import cli
from genoformer.annotate import annotate_genome
from genoformer.errors import AnnotationError, ConfigError, FastaError, GenoformerError, ModelFileError, RegionError
from genoformer.evaluate import evaluate
from genoformer.genome import Genome, genbank_to_fasta, read_annotation
from genoformer.model import Reformer, ReformerConfig
from genoformer.model.networks import load_network
from genoformer.pipeline_config import load_config

from .conftest import NO_SEQUENCE_GENBANK, TINY, fasta_bytes

SEQUENCE = ("ATGGCTAAAGCTTGA" * 14)[:200]  # c1, 200 bases
GFF_HEAD = "##gff-version 3\n"
GENE = "c1\tt\tgene\t11\t70\t.\t+\t.\tID=g1\nc1\tt\tCDS\t11\t70\t.\t+\t0\tParent=g1\n"

INPUTS: dict[str, bytes] = {
    "ok.fa": fasta_bytes({"c1 test record": SEQUENCE}),
    "ok.gff3": (GFF_HEAD + GENE).encode(),
    "empty.fa": b"",
    "empty.gff3": b"",
    "no_sequence.fa": b">a\nACGT\n>b\n>c\nAC\n",
    "duplicate.fa": b">a\nACGT\n>b\nAC\n>a\nGG\n",
    "digit.fa": b">a\nACGT\nAC7T\n",
    "star.fa": b">a\nACGTAC*T\n",
    "space.fa": b">a\nACGT\nAC GT\n",
    "no_sequence.gbk": NO_SEQUENCE_GENBANK.encode(),
    "absent_seqid.gff3": (GFF_HEAD + "c9\tt\tgene\t1\t50\t.\t+\t.\tID=g9\n").encode(),
    "beyond_end.gff3": (GFF_HEAD + "c1\tt\tgene\t1\t1000\t.\t+\t.\tID=g1\n").encode(),
    "start_after_end.gff3": (GFF_HEAD + "c1\tt\tgene\t50\t10\t.\t+\t.\tID=g1\n").encode(),
    "columns.gff3": (GFF_HEAD + "c1\tt\tgene\t1\t50\t.\t+\n").encode(),
    "not_integer.gff3": (GFF_HEAD + "c1\tt\tgene\t1\t5O\t.\t+\t.\tID=g1\n").encode(),
    "strand.gff3": (GFF_HEAD + "c1\tt\tgene\t1\t50\t.\tW\t.\tID=g1\n").encode(),
    "outside.bed": b"c1\t100\t500\n",
    "tabs.yaml": b"data:\n\tfasta: x.fa\n",
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Every input file of the matrix, and model folders: good ones and broken copies."""
    from genoformer.tasks import TaggingTask

    d = tmp_path_factory.mktemp("bad_input")
    for name, data in INPUTS.items():
        (d / name).write_bytes(data)
    (d / "a_folder").mkdir()
    genome = gzip.compress(fasta_bytes({"long": SEQUENCE * 400}))
    (d / "truncated.fa.gz").write_bytes(genome[: len(genome) // 2])
    annotation = gzip.compress((GFF_HEAD + GENE * 300).encode())
    (d / "truncated.gff3.gz").write_bytes(annotation[:-40])
    TaggingTask(encoder=TINY).export(d / "model")
    TaggingTask(encoder=TINY, tokenizer="kmer6").export(d / "kmer_model")
    broken = {
        "no_tokenizer": lambda m: (m / "tokenizer.json").unlink(),
        "wrong_tokenizer": lambda m: shutil.copy(d / "kmer_model" / "tokenizer.json", m / "tokenizer.json"),
        "wrong_weights": lambda m: shutil.copy(d / "kmer_model" / "model.safetensors", m / "model.safetensors"),
        "unknown_key": lambda m: _edit_config(m, lambda c: c["model"].update(d_modle=3)),
        "wrong_type": lambda m: _edit_config(m, lambda c: c["model"].update(d_model="many")),
    }
    for name, damage in broken.items():
        shutil.copytree(d / "model", d / name)
        damage(d / name)
    return d


def _edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


@dataclass
class Case:
    """One bad input: what the API call and the command line are, and the message both must give."""

    id: str
    error: type[GenoformerError]
    message: str  # regex both the exception and the CLI's stderr line match
    argv: list[str]  # {d}: the inputs folder, {out}: this case's output folder
    api: Callable[[Path, Path], object] | None  # (inputs, out) -> the API call; None: the CLI is the API
    names: str | None  # the file the message must name
    cli_message: str | None = None  # when the command reaches the input through another reader
    notes: int = 0  # informational stderr lines printed before the error (the gzip conversion notice)


def annotate(fasta: str, model: str = "model", *more: str) -> list[str]:
    return ["annotate", "--model", f"{{d}}/{model}", "--fasta", f"{{d}}/{fasta}", "--out", "{out}/pred",
            "--window-length", "64", *more]


def score(reference: str) -> list[str]:
    return ["evaluate", "--reference", f"{{d}}/{reference}", "--prediction", "{d}/ok.gff3",
            "--fasta", "{d}/ok.fa", "--json", "{out}/metrics.json"]


def genome(name: str):
    return lambda d, out: Genome(d / name)


def annotation(name: str):
    return lambda d, out: read_annotation(d / name)


def against_genome(name: str):
    return lambda d, out: evaluate(read_annotation(d / name), read_annotation(d / "ok.gff3"),
                                   lengths=Genome(d / "ok.fa").lengths)


def network(name: str):
    return lambda d, out: load_network(d / name)


CASES = [
    # FASTA
    Case("fasta-missing", FastaError, r"missing\.fa: no such file", annotate("missing.fa"), genome("missing.fa"), "missing.fa"),
    Case("fasta-empty", FastaError, r"empty\.fa: empty file", annotate("empty.fa"), genome("empty.fa"), "empty.fa"),
    Case("fasta-directory", FastaError, r"a_folder: is a directory, not a FASTA file", annotate("a_folder"),
         genome("a_folder"), "a_folder"),
    Case("fasta-is-gff", FastaError, r"ok\.gff3, line 1: not a FASTA file: expected a '>' header line, found '##gff",
         annotate("ok.gff3"), genome("ok.gff3"), "ok.gff3"),
    Case("fasta-header-without-sequence", FastaError, r"record 'b', line 3: header has no sequence",
         annotate("no_sequence.fa"), genome("no_sequence.fa"), "no_sequence.fa"),
    Case("fasta-duplicate-names", FastaError, r"record 'a', line 5: duplicate record name \(first used on line 1\)",
         annotate("duplicate.fa"), genome("duplicate.fa"), "duplicate.fa"),
    Case("fasta-digit", FastaError, r"record 'a', line 3: invalid character '7' at column 3 of a sequence line",
         annotate("digit.fa"), genome("digit.fa"), "digit.fa"),
    Case("fasta-star", FastaError, r"record 'a', line 2: invalid character '\*' at column 7",
         annotate("star.fa"), genome("star.fa"), "star.fa"),
    Case("fasta-space", FastaError, r"record 'a', line 3: invalid character a space at column 3",
         annotate("space.fa"), genome("space.fa"), "space.fa"),
    Case("fasta-truncated-gzip", FastaError, r"truncated\.fa\.gz: compressed data ends early: the gzip file is truncated",
         annotate("truncated.fa.gz"), genome("truncated.fa.gz"), "truncated.fa.gz", notes=1),
    Case("genbank-without-sequence", AnnotationError, r"record 'chrN': GenBank record has no sequence",
         annotate("no_sequence.gbk"), lambda d, out: genbank_to_fasta(d / "no_sequence.gbk", out / "genome.fa"),
         "no_sequence.gbk", cli_message=r"line 1: not a FASTA file: .*\(a GenBank file: give the genome as FASTA"),
    Case("region-outside-record", RegionError, r"record 'c1' \(length 200\): interval \[100, 500\): end 500 is beyond",
         annotate("ok.fa", "model", "--regions", "{d}/outside.bed"),
         lambda d, out: annotate_genome(d / "model", d / "ok.fa", out / "pred", regions=d / "outside.bed",
                                        window_length=64), "ok.fa"),
    # annotations
    Case("annotation-missing", AnnotationError, r"missing\.gff3: no such file", score("missing.gff3"),
         annotation("missing.gff3"), "missing.gff3"),
    Case("annotation-empty", AnnotationError, r"empty\.gff3: file is empty", score("empty.gff3"),
         annotation("empty.gff3"), "empty.gff3"),
    Case("annotation-directory", AnnotationError, r"a_folder: is a directory, not an annotation file",
         score("a_folder"), annotation("a_folder"), "a_folder"),
    Case("annotation-truncated-gzip", AnnotationError, r"truncated\.gff3\.gz: corrupt or truncated gzip file",
         score("truncated.gff3.gz"), annotation("truncated.gff3.gz"), "truncated.gff3.gz"),
    Case("annotation-seqid-not-in-fasta", AnnotationError, r"line 2: seqid 'c9' is not in the genome",
         score("absent_seqid.gff3"), against_genome("absent_seqid.gff3"), "absent_seqid.gff3"),
    Case("annotation-end-beyond-record", AnnotationError,
         r"line 2: feature ends at 1000 \(1-based\), beyond the end of record 'c1' \(length 200\)",
         score("beyond_end.gff3"), against_genome("beyond_end.gff3"), "beyond_end.gff3"),
    Case("annotation-start-after-end", AnnotationError, r"line 2: start 50 is greater than end 10",
         score("start_after_end.gff3"), annotation("start_after_end.gff3"), "start_after_end.gff3"),
    Case("gff3-column-count", AnnotationError, r"line 2: expected 9 tab-separated columns, found 7",
         score("columns.gff3"), annotation("columns.gff3"), "columns.gff3"),
    Case("gff3-non-integer-coordinate", AnnotationError, r"line 2: end coordinate '5O' is not a non-negative integer",
         score("not_integer.gff3"), annotation("not_integer.gff3"), "not_integer.gff3"),
    Case("gff3-bad-strand", AnnotationError, r"line 2: strand 'W' is not '\+', '-' or '\.'",
         score("strand.gff3"), annotation("strand.gff3"), "strand.gff3"),
    # configs (unknown keys and wrong types of a pipeline config: tests/test_pipeline.py)
    Case("pipeline-config-not-yaml", GenoformerError, r"tabs\.yaml: not valid YAML \(while scanning",
         ["pipeline", "--config", "{d}/tabs.yaml", "--out", "{out}/run"], lambda d, out: load_config(d / "tabs.yaml"),
         "tabs.yaml"),
    Case("model-config-unknown-key", ModelFileError,
         r"config\.json: invalid model settings: unknown model config key\(s\) \['d_modle'\]",
         annotate("ok.fa", "unknown_key"), network("unknown_key"), "unknown_key/config.json"),
    Case("model-config-wrong-type", ModelFileError, r"config\.json: invalid model settings: .*'d_model' must be an integer",
         annotate("ok.fa", "wrong_type"), network("wrong_type"), "wrong_type/config.json"),
    # model folders and checkpoints
    Case("model-folder-missing", ModelFileError, r"no_model: model folder not found", annotate("ok.fa", "no_model"),
         network("no_model"), "no_model"),
    Case("model-folder-is-a-file", ModelFileError, r"ok\.fa: not a folder", annotate("ok.fa", "ok.fa"),
         network("ok.fa"), "ok.fa"),
    Case("model-tokenizer-missing", ModelFileError, r"tokenizer\.json: missing from the model folder",
         annotate("ok.fa", "no_tokenizer"), network("no_tokenizer"), "no_tokenizer/tokenizer.json"),
    Case("model-tokenizer-mismatch", ModelFileError, r"tokenizer\.json: tokenizer has 4102 tokens, config\.json says 10",
         annotate("ok.fa", "wrong_tokenizer"), network("wrong_tokenizer"), "wrong_tokenizer/tokenizer.json"),
    Case("model-weights-mismatch", ModelFileError,
         r"model\.safetensors: weights do not match config\.json: .*has shape \(4102, 32\), model expects \(10, 32\)",
         annotate("ok.fa", "wrong_weights"), network("wrong_weights"), "wrong_weights/model.safetensors"),
    Case("checkpoint-not-a-checkpoint", GenoformerError, r"ok\.gff3: cannot load checkpoint safely",
         ["export", "--checkpoint", "{d}/ok.gff3", "--out", "{out}/model"], None, "ok.gff3"),
    Case("window-below-model-minimum", ConfigError, r"window length 4 is below the model's minimum \(6 bases\)",
         annotate("ok.fa", "kmer_model", "--window-length", "4"),
         lambda d, out: annotate_genome(d / "kmer_model", d / "ok.fa", out / "pred", window_length=4), None),
    Case("gene-cost-for-eukaryote", ConfigError, r"gene_cost applies to the prokaryote gene decoder only",
         annotate("ok.fa", "model", "--organism", "eukaryote", "--gene-cost", "10"),
         lambda d, out: annotate_genome(d / "model", d / "ok.fa", out / "pred", organism="eukaryote", gene_cost=10.0,
                                        window_length=64), None),
]


def _argv(case: Case, d: Path, out: Path) -> list[str]:
    return [arg.format(d=d, out=out) for arg in case.argv]


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_specific_message(case, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    if case.api is not None:
        with pytest.raises(case.error, match=case.message) as info:
            case.api(inputs, out)
        message = str(info.value)
        assert "\n" not in message
        if case.names:
            assert str(inputs / case.names) in message
        capsys.readouterr()

    status = cli.main(_argv(case, inputs, out))
    stderr = capsys.readouterr().err
    lines = stderr.splitlines()
    assert status == 2, stderr
    assert len(lines) == 1 + case.notes and "Traceback" not in stderr, stderr
    assert lines[-1].startswith("genoformer: error: ")
    assert re.search(case.cli_message or case.message, lines[-1]), lines[-1]
    if case.names:
        assert str(inputs / case.names) in lines[-1]
    assert _files_under(out) == []  # nothing partial in the output folder


def test_the_command_exits_2_with_one_line_and_debug_shows_the_traceback(inputs, tmp_path):
    """The real process: status 2 and one stderr line; --debug adds the traceback."""
    case = {c.id: c for c in CASES}
    runs = {"plain": _argv(case["fasta-digit"], inputs, tmp_path / "a"),
            "debug": ["--debug", *_argv(case["gff3-column-count"], inputs, tmp_path / "b")]}
    processes = {name: subprocess.Popen([sys.executable, "-m", "genoformer.cli", *argv], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for name, argv in runs.items()}
    results = {name: (p.wait(timeout=120), p.stderr.read()) for name, p in processes.items()}
    status, stderr = results["plain"]
    assert status == 2 and stderr.count("\n") == 1
    assert stderr.startswith(f"genoformer: error: {inputs / 'digit.fa'}, record 'a', line 3: invalid character '7'")
    status, stderr = results["debug"]
    assert status == 2 and stderr.startswith("Traceback (most recent call last):")
    assert "AnnotationError" in stderr
    assert stderr.splitlines()[-1].startswith(f"genoformer: error: {inputs / 'columns.gff3'}, line 2: expected 9")
    assert _files_under(tmp_path) == []


def test_gene_cost_must_be_a_number(inputs, tmp_path):
    """Python callers' gene_cost is checked before any work (the CLI's argparse and the pipeline's
    config reader check their own)."""
    with pytest.raises(ConfigError, match=r"gene_cost must be a number, got 'high'"):
        annotate_genome(inputs / "model", inputs / "ok.fa", tmp_path / "pred", gene_cost="high", window_length=64)
    with pytest.raises(ConfigError, match=r"codon_weight must be >= 0, got -1"):
        annotate_genome(inputs / "model", inputs / "ok.fa", tmp_path / "pred", codon_weight=-1, window_length=64)
    assert not list(tmp_path.iterdir())


def test_windows_line_endings_and_a_stale_index_work(inputs, tmp_path, capsys):
    """CRLF FASTA and GFF3 give the same results as LF; a .fai left from an older FASTA is rebuilt."""
    crlf = tmp_path / "crlf"
    crlf.mkdir()
    (crlf / "genome.fa").write_bytes(fasta_bytes({"c1 test record": SEQUENCE}, newline="\r\n"))
    (crlf / "genes.gff3").write_bytes((GFF_HEAD + GENE).replace("\n", "\r\n").encode())
    lf = {name: read_annotation(inputs / "ok.gff3")[name] for name in ("seqid", "type", "start", "end", "id")}
    table = read_annotation(crlf / "genes.gff3")
    assert all(table[name].tolist() == values.tolist() for name, values in lf.items())
    assert Genome(crlf / "genome.fa").fetch("c1", 0, 200) == SEQUENCE
    for folder, fasta in ((tmp_path / "pred_lf", inputs / "ok.fa"), (tmp_path / "pred_crlf", crlf / "genome.fa")):
        assert cli.main(["annotate", "--model", str(inputs / "model"), "--fasta", str(fasta),
                         "--out", str(folder / "pred"), "--window-length", "64"]) == 0
    for path in _files_under(tmp_path / "pred_lf"):
        assert path.read_bytes() == (tmp_path / "pred_crlf" / path.name).read_bytes(), path.name

    # The FASTA grows after its index was written: the old .fai says c1 has 20 bases.
    stale = tmp_path / "stale.fa"
    stale.write_bytes(fasta_bytes({"c1": SEQUENCE[:20]}))
    Genome(stale)
    old_index = Path(f"{stale}.fai").read_text()
    stale.write_bytes(fasta_bytes({"c1": SEQUENCE}, width=50))
    capsys.readouterr()
    assert cli.main(["evaluate", "--reference", str(crlf / "genes.gff3"), "--prediction", str(inputs / "ok.gff3"),
                     "--fasta", str(stale), "--json", str(tmp_path / "metrics.json")]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["gene"]["f1"] == 1.0
    assert Path(f"{stale}.fai").read_text() != old_index
    assert Genome(stale).fetch("c1", 150, 200) == SEQUENCE[150:]


@pytest.mark.parametrize("attention", ["lsh", "local", "full"])
def test_all_padding_row_stays_finite_in_bf16_and_fp16(attention):
    """A batch row that is all padding (every key masked) must give finite outputs and gradients."""
    torch.manual_seed(0)
    config = ReformerConfig(vocab_size=10, d_model=TINY["d_model"], n_heads=TINY["n_heads"], depth=2, d_ff=TINY["d_ff"],
                            attention=attention, chunk_size=16, n_hashes=2, dropout=0.0, attention_dropout=0.0,
                            pad_token_id=0)
    model = Reformer(config)
    ids = torch.randint(5, 10, (3, 64))
    mask = torch.ones(3, 64, dtype=torch.bool)
    mask[1], ids[1] = False, 0  # all padding
    mask[2, 10:], ids[2, 10:] = False, 0  # mostly padding: whole chunks without a real token
    for dtype in (torch.bfloat16, torch.float16):
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            assert torch.isfinite(model(ids, mask)).all(), dtype
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model(ids, mask)  # (batch, length, d_model)
    assert torch.isfinite(hidden).all()
    hidden.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
