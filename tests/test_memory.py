"""The memory planner predicts from two probes; it refuses a step that cannot fit, with a reason."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
import yaml

from genoformer.errors import MemoryPlanError
from genoformer.model import ReformerConfig
from genoformer.model.activations import kept_activation_bytes
from genoformer.model.memory import _probe, _TensorBytes, plan
from genoformer.model.networks import ReformerForMaskedLM

# Wide enough that activations, not the interpreter, dominate the probes' peak memory.
SETTINGS = dict(d_model=128, n_heads=4, depth=2, d_ff=256, attention=["local", "lsh"], chunk_size=64, n_hashes=2)
CONFIG = ReformerConfig(vocab_size=10, **SETTINGS)


@pytest.fixture(scope="module")
def predicted():
    return plan(CONFIG, 65536, probe_lengths=(8192, 32768), device="cpu")


def test_prediction_extrapolates_linearly_and_matches_a_measured_step(predicted):
    assert predicted.bytes_per_token > 0 and predicted.fixed_bytes > 0 and predicted.seconds > 0
    measured_peak = _probe(CONFIG, 65536, 1, "32", False, torch.device("cpu")).peak_bytes
    assert abs(predicted.peak_bytes - measured_peak) / measured_peak < 0.25


def test_tensor_count_follows_storages_not_views_and_sees_backward():
    with _TensorBytes() as counted:
        big = torch.empty(1_000_000, dtype=torch.uint8)
        halves = big.view(2, -1).unbind(0)  # views: no new storage
        del big, halves
        assert counted.live == 0 and counted.peak == 1_000_000
        weight = torch.ones(250, 250, requires_grad=True)  # 250,000 bytes
        (weight * 2).sum().backward()  # the product and the loss are freed; the gradient made in backward stays
        assert counted.live == 2 * 250_000


def test_a_step_that_cannot_fit_is_refused_with_the_numbers(predicted):
    starved = dataclasses.replace(predicted, available_bytes=predicted.peak_bytes / 4)
    with pytest.raises(MemoryPlanError, match=r"needs about .* GiB, .* GiB available: lower --length"):
        starved.check()
    assert predicted.check() is predicted


def test_plan_command_prints_the_prediction(tmp_path):
    config = tmp_path / "model.yaml"
    config.write_text(yaml.safe_dump({"model": SETTINGS}))
    result = subprocess.run([sys.executable, "-m", "genoformer.cli", "plan", "--config", str(config),
                             "--length", "8192"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "training step at 8,192 tokens" in result.stdout and "bytes/token" in result.stdout


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
@pytest.mark.parametrize("settings", [
    dict(SETTINGS, dropout=0.05, attention_dropout=0.05),  # the recipes' model
    dict(SETTINGS, d_model=64, n_heads=2, d_ff=512, n_hashes=8, chunk_size=32, dropout=0.1, attention_dropout=0.1),
    dict(SETTINGS, d_model=256, d_ff=1024, attention="lsh"),  # the long-window bench's model
])
def test_kept_activation_estimate_bounds_what_an_ordinary_training_step_keeps(settings, precision):
    """reversible="auto" keeps activations by this estimate: it must not under-state them (nor be loose)."""
    config = ReformerConfig(vocab_size=10, reversible=False, **settings)
    network = ReformerForMaskedLM(config).train()
    ids = torch.randint(0, 10, (2, 1024))
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    with torch.autocast("cpu", dtype=dtype, enabled=precision == "bf16-mixed"), _TensorBytes() as counted:
        hidden = network(ids)  # what autograd keeps for backward, and the output
        kept = counted.live
    del hidden
    estimate = kept_activation_bytes(config, ids.numel(), dtype)
    assert 0.6 * estimate <= kept <= estimate
