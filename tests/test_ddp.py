"""Data-parallel training: DDP over 2 CPU processes (gloo) gives the single-process gradients."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from genoformer.model import ReformerConfig
from genoformer.model.networks import ReformerForMaskedLM

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
