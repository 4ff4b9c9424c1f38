"""Runs killed with SIGKILL (no clean-up code runs): training resumes exactly, annotation leaves no partial output.

tests/test_training.py covers an exception mid-run inside one process; here a separate process is
killed outright, as by the out-of-memory killer or a cluster's time limit.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from genoformer.genome import read_annotation

from .conftest import REPO, TINY

TRAIN = """
import json, sys, time
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from genoformer.tasks import GenomeDataModule, MaskedLMTask

run = json.loads(sys.argv[1])
pl.seed_everything(3, workers=True, verbose=False)
task = MaskedLMTask(encoder=run["model"], lr=3e-3, warmup_steps=2, seed=3)
data = GenomeDataModule(fasta=run["fasta"], window_length=128, batch_size=2, windows_per_epoch=6, val_fraction=0.1,
                        seed=3)


class Pause(pl.Callback):  # gives the test time to kill the run between steps; changes no numbers
    def on_train_batch_end(self, *args):
        time.sleep(run["pause"])


callbacks = [Pause()]
if run["checkpoints"]:
    callbacks.append(ModelCheckpoint(dirpath=run["checkpoints"], every_n_train_steps=1, save_last=True))
trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=run["max_steps"], default_root_dir=run["root"],
                     logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, callbacks=callbacks)
torch.manual_seed(run["seed_before_fit"])  # a resumed run must take its random streams from the checkpoint
trainer.fit(task, datamodule=data, ckpt_path=run["resume"], weights_only=True)
torch.save(task.state_dict(), run["weights"])
"""
MAX_STEPS = 8  # three steps per epoch: the kill lands mid-way through the second epoch


def _train(tmp_path: Path, name: str, fasta: Path, *, checkpoints: Path | None = None, resume: Path | None = None,
           pause: float = 0.0, seed_before_fit: int = 3) -> subprocess.Popen:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    run = {"model": TINY, "fasta": str(fasta), "max_steps": MAX_STEPS, "root": str(tmp_path / name),
           "checkpoints": checkpoints and str(checkpoints), "resume": resume and str(resume), "pause": pause,
           "seed_before_fit": seed_before_fit, "weights": str(tmp_path / f"{name}.pt")}
    return subprocess.Popen([sys.executable, str(script), json.dumps(run)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(process: subprocess.Popen, ready, timeout: float = 120, poll: float = 0.05) -> None:
    """Return as soon as ``ready()`` is true; fail if ``process`` ends (or times out) first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"the run ended before it could be signalled: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(poll)


def _kill_when(process: subprocess.Popen, ready, timeout: float = 120, poll: float = 0.05) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` is true; fail if it ends (or times out) first."""
    _wait_for(process, ready, timeout, poll)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def _step(checkpoint: Path) -> int:
    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):  # not written yet
        return -1


def test_training_killed_mid_run_resumes_to_the_same_weights(ecoli_slice, tmp_path):
    fasta, _ = ecoli_slice
    checkpoints = tmp_path / "checkpoints"
    straight = _train(tmp_path, "straight", fasta)
    killed = _train(tmp_path, "killed", fasta, checkpoints=checkpoints, pause=0.3)
    _kill_when(killed, lambda: _step(checkpoints / "last.ckpt") >= 4)
    killed_at = _step(checkpoints / "last.ckpt")
    assert 4 <= killed_at < MAX_STEPS and not (tmp_path / "killed.pt").exists()

    resumed = _train(tmp_path, "resumed", fasta, checkpoints=checkpoints, resume=checkpoints / "last.ckpt",
                     seed_before_fit=12345)
    for process in (straight, resumed):
        assert process.wait(timeout=300) == 0, process.stderr.read()[-3000:]
    assert _step(checkpoints / "last.ckpt") == MAX_STEPS
    expected = torch.load(tmp_path / "straight.pt", weights_only=True)
    got = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert expected.keys() == got.keys()
    different = [key for key in expected if not torch.equal(expected[key], got[key])]
    assert different == [], f"resumed from step {killed_at}: {different}"


def _annotation_run(tmp_path: Path, repeats: int = 160) -> tuple[list[str], Path]:
    """An annotate command over two records of ``repeats`` x 24 bases, slow enough (``repeats`` 160: about
    240 windows, one per batch) to signal while it writes, and its output folder."""
    from genoformer.tasks import TaggingTask

    model = TaggingTask(encoder=TINY).export(tmp_path / "model")
    fasta = tmp_path / "genome.fa"
    bases = "ACGTTGCAAGGCTTAACCGGTTAA" * repeats
    fasta.write_text(f">one\n{bases}\n>two\n{bases[::-1]}\n")
    out = tmp_path / "out"
    return [sys.executable, "-m", "genoformer.cli", "annotate", "--model", str(model), "--fasta", str(fasta),
            "--out", str(out / "pred"), "--window-length", "128", "--batch-size", "1"], out


def _writing(out: Path) -> bool:
    """Whether the outputs are open (as hidden temporary files)."""
    return out.is_dir() and any(p.name.endswith(".tmp") for p in out.iterdir())


def test_annotation_killed_mid_run_leaves_no_partial_output_and_completes_on_rerun(tmp_path):
    command, out = _annotation_run(tmp_path)
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _kill_when(run, lambda: _writing(out), poll=0.01)
    left = sorted(p.name for p in out.iterdir())
    assert ".pred.lock" in left, left
    left.remove(".pred.lock")  # the killed run's lock: the kernel released it, the rerun takes it over
    assert left and all(name.startswith(".pred.") and name.endswith(".tmp") for name in left), left

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    written = sorted(Path(line).name for line in rerun.stdout.split())
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == written
    assert {"pred.gff3", "pred.bed", "pred.CDS.plus.bedgraph", "pred.CDS.minus.bedgraph"} <= set(written)
    # Each output is whole: the GFF3 reads back, every track covers both records to their last base.
    assert (out / "pred.gff3").read_text().startswith("##gff-version 3\n##sequence-region one 1 3840\n")
    read_annotation(out / "pred.gff3")
    for name in written:
        if name.endswith(".bedgraph"):
            track = pd.read_csv(out / name, sep="\t", skiprows=1, header=None)
            assert track.groupby(0)[2].max().to_dict() == {"one": 3840, "two": 3840}, name
    # The killed run's hidden temporary files are left as they were: the rerun neither read nor renamed them.
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == left


def test_annotation_stopped_by_sigterm_cleans_up_as_on_ctrl_c(tmp_path):
    """Batch schedulers stop a job with SIGTERM: no hidden temporary files, probabilities folder or lock stay."""
    command, out = _annotation_run(tmp_path)
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The two records' probabilities wait in a hidden folder for the decoder's pooled statistics.
    _wait_for(run, lambda: _writing(out) and any(p.name.startswith(".pred.probs-") for p in out.iterdir()), poll=0.01)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 130
    assert "genoformer: interrupted" in run.stderr.read()
    assert list(out.iterdir()) == []


def test_a_second_annotation_to_the_same_outputs_is_refused_while_the_first_runs(tmp_path):
    # Four times the usual run: the first must still be writing when the second has started up
    # (importing torch on a loaded machine can take longer than 240 windows of the tiny model).
    command, out = _annotation_run(tmp_path, repeats=640)
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(first, lambda: _writing(out), poll=0.01)
        second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert f"genoformer: error: {out / '.pred.lock'}: another run is writing the outputs {out / 'pred'}.*" in \
            second.stderr
        assert first.poll() is None  # the refused run touched nothing of the first's
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)


def test_atomic_writes_leave_the_old_file_or_none_and_normal_permissions(tmp_path):
    """An exception inside the write removes the temporary file and keeps the old content; new files get
    the permissions a plain open() would (umask applied), not mkstemp's owner-only 0600."""
    from genoformer.files import atomic_path, atomic_write

    umask = os.umask(0o022)
    try:
        target = tmp_path / "result.gff3"
        target.write_text("old\n")
        with pytest.raises(RuntimeError), atomic_write(target) as handle:
            handle.write("half a file")
            raise RuntimeError("interrupted")
        with pytest.raises(RuntimeError), atomic_path(target) as tmp:
            tmp.write_text("half a file")
            raise RuntimeError("interrupted")
        assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["result.gff3"]
        with atomic_write(tmp_path / "new.bed") as handle:
            handle.write("c1\t0\t5\n")
        assert (tmp_path / "new.bed").stat().st_mode & 0o777 == 0o644
        from genoformer.tasks import MaskedLMTask

        folder = MaskedLMTask(encoder=TINY).export(tmp_path / "model")
        assert folder.stat().st_mode & 0o777 == 0o755
        assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o644}
    finally:
        os.umask(umask)
