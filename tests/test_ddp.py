"""Data-parallel training: DDP over 2 CPU processes (gloo) gives the single-process gradients, and
`genoformer fit --trainer.strategy ddp --trainer.devices 2` the single-process weights; evaluation metrics
pool every rank's windows."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from genoformer.datasets.stitch import ProbabilityStitcher
from genoformer.model import ReformerConfig
from genoformer.model.networks import ReformerForMaskedLM
from genoformer.tasks import TaggingTask
from genoformer.tasks.metrics import ConfusionMatrix, pool_ranks

from .conftest import TINY

CONFIG = dict(vocab_size=10, d_model=32, n_heads=2, depth=2, d_ff=64, attention=["local", "lsh"],
              chunk_size=16, n_hashes=2, dropout=0.0, reversible=True)
BATCH = 4
LENGTH = 96


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(5, 10, (BATCH, LENGTH), generator=g)
    targets = torch.randint(5, 10, (BATCH, LENGTH), generator=g)
    return ids, targets


def _loss(network: torch.nn.Module, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    hidden = network(ids)
    logits = network.module.lm_head(hidden) if isinstance(network, DistributedDataParallel) else network.lm_head(hidden)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    network = ReformerForMaskedLM(ReformerConfig(**CONFIG))
    ddp = DistributedDataParallel(network)
    ids, targets = _batch()
    share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    _loss(ddp, ids[share], targets[share]).backward()
    grads = {k: p.grad.numpy().copy() for k, p in network.named_parameters()}  # plain pickles, no shared fds
    ddp.zero_grad()
    _loss(ddp, ids[share], targets[share]).backward()  # a second step: DDP's hooks survive the reversible backward
    if rank == 0:
        queue.put(grads)
    del ddp  # release the reducer's hold on the process group before destroying it
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("world", [2])
def test_ddp_gradients_match_single_process_on_the_same_global_batch(world):
    torch.manual_seed(0)
    network = ReformerForMaskedLM(ReformerConfig(**CONFIG))
    ids, targets = _batch()
    network.zero_grad()
    _loss(network, ids, targets).backward()
    expected = {k: p.grad.clone() for k, p in network.named_parameters()}

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(rank, world, port, queue)) for rank in range(world)]
    for p in procs:
        p.start()
    got = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got.keys() == expected.keys()
    for key in expected:
        # The mean over ranks of per-shard mean losses equals the full-batch mean (equal shards).
        torch.testing.assert_close(torch.from_numpy(got[key]), expected[key], rtol=1e-4, atol=1e-6, msg=key)


def _windows():
    """Six evaluation windows over two stretches: (stretch key, start, probabilities (2, 3, 40), predicted, labels)."""
    g = torch.Generator().manual_seed(3)
    out = []
    for i in range(6):
        key = (0, "chr", 0) if i < 4 else (1, "plasmid", 100)
        start = key[2] + 20 * (i % 4)
        probs = torch.softmax(torch.randn(2, 3, 40, generator=g), 1).numpy()
        out.append((key, start, probs, torch.randint(0, 3, (2, 40), generator=g), torch.randint(0, 3, (2, 40), generator=g)))
    return out


def _evaluate(windows):
    """Confusion counts and stitched stretches of some windows, as TaggingTask's evaluation collects them."""
    confusion, stitchers = ConfusionMatrix(3), {}
    for key, start, probs, predicted, labels in windows:
        confusion.update(predicted, labels)
        stitchers.setdefault(key, ProbabilityStitcher(120, 3, offset=key[2])).add(start, probs)
    return confusion, stitchers


def _pool_worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    windows = _windows()
    results = []
    for share in (windows[rank::world], windows):  # each rank its own windows; every rank all windows
        confusion, stitchers = _evaluate(share)
        pool_ranks(confusion, stitchers, 3, torch.device("cpu"))
        results.append((confusion.summary("abc"), {key: s.result() for key, s in stitchers.items()}))
    queue.put((rank, results))
    dist.barrier()
    dist.destroy_process_group()


def test_evaluation_metrics_pool_every_rank_windows_under_ddp():
    """Two processes each evaluating part of the windows (or all of them) end with the one-process metrics
    and stitched probabilities, on both ranks: what they log with sync_dist is the whole evaluation's."""
    confusion, stitchers = _evaluate(_windows())
    expected = (confusion.summary("abc"), {key: s.result() for key, s in stitchers.items()})
    assert _evaluate(_windows()[0::2])[0].summary("abc") != expected[0]  # one rank's share alone differs
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_pool_worker, args=(rank, 2, port, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    got = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank in (0, 1):
        for summary, stitched in got[rank]:
            assert summary == pytest.approx(expected[0])
            assert stitched.keys() == expected[1].keys()
            for key in stitched:
                np.testing.assert_allclose(stitched[key], expected[1][key], rtol=1e-6)


def _fit(tmp_path, ecoli_slice, name: str, devices: int, batch_size: int, *flags: str):
    """`genoformer fit` of a tiny tagger for 3 steps; the weights it exports."""
    fasta, gff = ecoli_slice
    folder = tmp_path / name
    config = {
        "seed_everything": 0,
        # No dropout: its masks are drawn per batch shape, so a rank's half-batch would draw others.
        # Plain cross-entropy: every window has the same number of labelled bases, so the mean of the
        # ranks' mean losses is the global batch's mean loss.
        "model": {"class_path": "genoformer.tasks.TaggingTask",
                  "init_args": {"encoder": {**TINY, "dropout": 0.0, "attention_dropout": 0.0}, "loss": "ce",
                                "gene_metrics": False, "lr": 3e-3, "warmup_steps": 1}},
        "data": {"fasta": str(fasta), "annotation": str(gff), "window_length": 256, "batch_size": batch_size,
                 "windows_per_epoch": 12, "val_fraction": 0.1},
        "trainer": {"accelerator": "cpu", "devices": devices, "max_steps": 3, "limit_val_batches": 0,
                    "num_sanity_val_steps": 0, "use_distributed_sampler": False,
                    "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(folder)}},
                    "enable_checkpointing": False, "enable_progress_bar": False, "gradient_clip_val": 1.0,
                    "default_root_dir": str(folder),
                    "callbacks": [{"class_path": "genoformer.tasks.ExportModel",
                                   "init_args": {"folder": str(folder / "model")}}]},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", "fit", "--config", str(path), *flags],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    return load_file(folder / "model" / "model.safetensors")


def test_fit_with_ddp_on_two_cpu_processes_ends_with_the_single_process_weights(tmp_path, ecoli_slice):
    """Rank r of 2 trains on global windows r, r + 2, ... with half the batch: together the global batch
    of one process with the whole batch, so after 3 steps (clipping, AdamW) the weights agree."""
    single = _fit(tmp_path, ecoli_slice, "single", 1, 4)
    ddp = _fit(tmp_path, ecoli_slice, "ddp", 2, 2, "--trainer.strategy", "ddp", "--trainer.devices", "2",
               "--trainer.accelerator", "cpu")
    assert single.keys() == ddp.keys()
    pl.seed_everything(0, verbose=False)  # the weights the CLI's seed_everything starts from
    start = TaggingTask(encoder={**TINY, "dropout": 0.0, "attention_dropout": 0.0}, loss="ce").network.state_dict()
    moved = [key for key in single if not torch.equal(single[key], start[key])]
    assert len(moved) > len(single) // 2  # training changed the weights: the comparison is not vacuous
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-5, msg=key)


def test_pipeline_trains_on_two_cpu_processes_through_its_trainer_section(tmp_path, ecoli_slice):
    """The pipeline hands its `trainer:` section to Lightning: `strategy: ddp_spawn` (workers spawned for
    each fit, the pipeline itself runs once) trains on 2 processes and goes on to export the model."""
    fasta, gff = ecoli_slice
    config = {
        "name": "ddp", "seed": 0,
        "data": {"fasta": [str(fasta)], "annotation": [str(gff)], "organism": "prokaryote"},
        "model": {"tokenizer": "nucleotide", **TINY},
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"},
        "pretrain": {"enabled": False},
        "finetune": {"window_length": 256, "batch_size": 2, "max_steps": 2, "warmup_steps": 1, "loss": "ce"},
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", "pipeline", "--config", str(path), "--out",
                             str(tmp_path / "run"), "--stages", "finetune"], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    # Enough stderr for a failing worker's own traceback, not only the abort it caused in its peer.
    assert result.returncode == 0, result.stderr[-30000:]
    assert "Starting with 2 processes" in result.stderr
    assert (tmp_path / "run" / "finetune" / "model" / "model.safetensors").is_file()
    # The pipeline reads the workers' step count (its own trainer's stays 0 under spawn): it does not
    # take the run for one stopped early and spawn a second pair of workers to validate again.
    assert "stopped by max_minutes" not in result.stderr
    assert result.stderr.count("Initializing distributed: GLOBAL_RANK: 0") == 1
    assert json.loads((tmp_path / "run" / "finetune" / "stage.json").read_text())["steps"] == 2
