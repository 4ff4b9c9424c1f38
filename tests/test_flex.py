"""FlexAttention kernel (flex.py) against the chunked kernel it replaces on a GPU.

FlexAttention's backward and fused kernel need CUDA; on the CPU its eager form (dense scores) computes
the same function, so the forward is checked here at float64 on every mask the Reformer uses, and the
gradients of everything around it (sorting, blending the rounds) with a dense stand-in for it. The
compiled kernel's gradients are checked on a GPU by `python bench/gpu.py` (and by the CUDA test below
where one is present)."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch.nn.attention.flex_attention import BlockMask

from genoformer.errors import ConfigError
from genoformer.model import Reformer, ReformerConfig
from genoformer.model.chunked import ChunkSpec, chunked_attention
from genoformer.model.flex import band_block_mask, flex_chunked_attention

BATCH, HEADS, DIM = 2, 2, 16
SHAPES = [(640, 32), (192, 64), (208, 16), (384, 128)]  # lengths x chunks: 5 key blocks of 128, 1.5, one chunk a block


def _inputs(length: int, shared: bool, rounds: int, causal_window: bool, padded: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(BATCH, HEADS, length, DIM, dtype=torch.float64, generator=g)
    k = None if shared else torch.randn(q.shape, dtype=torch.float64, generator=g)
    v = torch.randn(q.shape, dtype=torch.float64, generator=g)
    perm = sorted_buckets = None
    if shared:  # few buckets, so sorted chunks mix positions from all over the sequence
        buckets = torch.randint(0, 6, (BATCH * HEADS, rounds, length), generator=g)
        values, order = torch.sort(buckets, dim=-1, stable=True)
        perm, sorted_buckets = order.to(torch.int32), values.to(torch.int32) if causal_window else None
    real = None
    if padded:  # each sequence ends early by its own amount (not a chunk multiple)
        real = torch.ones(BATCH, length, dtype=torch.bool)
        real[0, length - 70:] = False
        real[1, length - 9:] = False
    return q, k, v, perm, sorted_buckets, real


CASES = {  # name: (shared keys (LSH), rounds, causal, causal LSH window, padded)
    "lsh": (True, 1, False, False, False),
    "lsh 3 rounds padded": (True, 3, False, False, True),
    "causal lsh 3 rounds padded": (True, 3, False, True, True),
    "local padded": (False, 1, False, False, True),
    "causal local padded": (False, 1, True, False, True),
}


@pytest.mark.parametrize("length, chunk", SHAPES)
@pytest.mark.parametrize("name", list(CASES))
def test_flex_forward_equals_the_chunked_kernel(name, length, chunk):
    shared, rounds, causal, causal_window, padded = CASES[name]
    q, k, v, perm, sorted_buckets, real = _inputs(length, shared, rounds, causal_window, padded, seed=len(name))
    one_way = causal or causal_window
    spec = ChunkSpec(chunk=chunk, offsets=(0, -1) if one_way else (0, -1, 1), causal=causal,
                     causal_window=causal_window, self_penalty=shared, scale=1.0 if shared else DIM ** -0.5,
                     dropout=0.0, dropout_seed=0, rows_per_step=256, shared_keys=shared)
    expected = chunked_attention(q, k, v, perm, sorted_buckets, real, spec)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*eager")  # FlexAttention's note that eager mode is a slow reference
        got = flex_chunked_attention(q, k, v, perm, sorted_buckets, real, spec, compiled=False)
    # padding queries' rows differ by design (see flex_chunked_attention); every real row must agree
    rows = torch.ones(BATCH, length, dtype=torch.bool) if real is None else real
    rows = rows[:, None].expand(-1, HEADS, -1)
    assert torch.allclose(got[rows], expected[rows], rtol=0, atol=1e-12)


def _dense_flex(q, k, v, score_mod, block_mask, scale, return_lse):
    """FlexAttention written out densely and differentiably (its own eager form has no CPU backward):
    the stand-in that lets the CPU check flex.py's gradients, i.e. its sorting and blending around it."""
    b, h, qi, ki = (torch.arange(n).view(*(-1 if i == j else 1 for j in range(4)))
                    for i, n in enumerate((q.shape[0], q.shape[1], q.shape[2], k.shape[2])))
    scores = score_mod(q @ k.transpose(-1, -2) * scale, b, h, qi, ki)
    scores = scores.masked_fill(~block_mask.mask_mod(b, h, qi, ki), float("-inf"))
    lse = scores.logsumexp(-1)
    return (scores - lse[..., None]).exp() @ v, lse


@pytest.mark.parametrize("name", list(CASES))
def test_flex_gradients_equal_the_chunked_kernel(name, monkeypatch):
    """The sorting's backward (a scatter by the permutation, summed over rounds), the unsorting's (a gather) and the
    rounds' blend give the chunked kernel's gradients (FlexAttention itself: a dense stand-in)."""
    import genoformer.model.flex as flex

    monkeypatch.setattr(flex, "flex_attention", _dense_flex)
    shared, rounds, causal, causal_window, padded = CASES[name]
    q, k, v, perm, sorted_buckets, real = _inputs(320, shared, rounds, causal_window, padded, seed=len(name))
    spec = ChunkSpec(chunk=32, offsets=(0, -1) if causal or causal_window else (0, -1, 1), causal=causal,
                     causal_window=causal_window, self_penalty=shared, scale=1.0 if shared else DIM ** -0.5,
                     dropout=0.0, dropout_seed=0, rows_per_step=256, shared_keys=shared)
    rows = torch.ones(BATCH, 320, dtype=torch.bool) if real is None else real
    weights = torch.randn(q.shape, dtype=q.dtype, generator=torch.Generator().manual_seed(1)) * rows[:, None, :, None]
    grads = []
    for kernel in (chunked_attention, functools.partial(flex.flex_chunked_attention, compiled=False)):
        inputs = [None if t is None else t.clone().requires_grad_() for t in (q, k, v)]
        (kernel(*inputs, perm, sorted_buckets, real, spec) * weights).sum().backward()  # real queries' rows only
        grads.append([t.grad for t in inputs if t is not None])
    for got, expected in zip(grads[1], grads[0]):
        assert torch.allclose(got, expected, rtol=0, atol=1e-10)


def test_compiled_variants_stay_compiled(monkeypatch):
    """Every mask variant, round count and (after the first) length is a compiled graph of its own; past
    Dynamo's recompile limit FlexAttention would run eagerly (dense, out of memory at Mb lengths)."""
    from torch._dynamo.utils import counters

    import genoformer.model.flex as flex

    compiled = flex._compiled_flex
    monkeypatch.setattr(flex, "_compiled_flex", lambda: compiled("eager"))
    torch._dynamo.reset()
    counters.clear()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*eager")
        for length in (256, 320, 384):
            for name in CASES:
                shared, rounds, causal, causal_window, padded = CASES[name]
                q, k, v, perm, sorted_buckets, real = _inputs(length, shared, rounds, causal_window, padded, seed=0)
                spec = ChunkSpec(chunk=32, offsets=(0, -1) if causal or causal_window else (0, -1, 1), causal=causal,
                                 causal_window=causal_window, self_penalty=shared, scale=1.0, dropout=0.0,
                                 dropout_seed=0, rows_per_step=256, shared_keys=shared)
                flex.flex_chunked_attention(q.float(), None if k is None else k.float(), v.float(), perm,
                                            sorted_buckets, real, spec)
    frames = counters["frames"]
    assert frames["total"] == frames["ok"] > 8  # more graphs than Dynamo's default limit, every one compiled


def _block_pairs(counts: torch.Tensor, indices: torch.Tensor) -> set[tuple[int, int]]:
    counts, indices = counts[0, 0].tolist(), indices[0, 0].tolist()
    return {(row, indices[row][i]) for row in range(len(counts)) for i in range(counts[row])}


@pytest.mark.parametrize("length, chunk", [(64, 64), (320, 32), (1088, 64), (4224, 128), (4160, 16)])
@pytest.mark.parametrize("offsets", [(0,), (0, -1), (0, -1, 1)])
def test_compact_block_mask_lists_the_band_both_ways(length, chunk, offsets):
    """The compact mask (the GPU's; linear in length) lists exactly the blocks that hold a query's
    neighbouring chunks, for each query block and, for backward, for each key block."""
    spec = ChunkSpec(chunk=chunk, offsets=offsets, causal=False, causal_window=False, self_penalty=False,
                     scale=1.0, dropout=0.0, dropout_seed=0, rows_per_step=1)
    compact = band_block_mask(length, spec, None, "cpu")
    position = torch.arange(length)
    apart = position[None, :] // chunk - position[:, None] // chunk
    band = {(q // 128, k // 128) for q, k in ((apart >= min(offsets)) & (apart <= max(offsets))).nonzero().tolist()}
    assert _block_pairs(compact.kv_num_blocks, compact.kv_indices) == band
    assert _block_pairs(compact.q_num_blocks, compact.q_indices) == {(k, q) for q, k in band}
    # PyTorch's own transposition of the same key lists, written out at full width as it wants them
    n_blocks = compact.kv_num_blocks.shape[-1]
    full = torch.full((1, 1, n_blocks, n_blocks), n_blocks - 1, dtype=torch.int32)
    full[..., :compact.kv_indices.shape[-1]] = compact.kv_indices
    reference = BlockMask.from_kv_blocks(compact.kv_num_blocks, full, BLOCK_SIZE=128, seq_lengths=(length, length))
    assert _block_pairs(reference.q_num_blocks, reference.q_indices) == {(k, q) for q, k in band}


def test_attention_kernel_setting_is_checked():
    with pytest.raises(ConfigError, match="attention_kernel='fast'"):
        ReformerConfig(vocab_size=8, attention_kernel="fast")
    with pytest.raises(ConfigError, match="no attention dropout"):
        ReformerConfig(vocab_size=8, attention_kernel="flex", attention_dropout=0.1)
    config = ReformerConfig(vocab_size=8, attention_dropout=0.1)
    assert not config.uses_flex_attention("cpu", training=True)
    assert not config.uses_flex_attention("cuda", training=True)  # auto never picks flex under attention dropout


def test_auto_picks_flex_on_a_gpu_only_where_it_can(monkeypatch):
    import genoformer.model.config as config_module

    config = ReformerConfig(vocab_size=8)
    for triton in (True, False):
        monkeypatch.setattr(config_module, "_triton_installed", lambda: triton)
        assert config.uses_flex_attention("cuda", training=True) is triton  # Triton compiles FlexAttention's kernel
        assert not config.uses_flex_attention("cpu", training=True)
    assert not ReformerConfig(vocab_size=8, attention_kernel="chunked").uses_flex_attention("cuda", training=False)


def test_flex_on_a_cpu_warns_and_computes_with_the_chunked_kernel():
    """A model trained with attention_kernel 'flex' on a GPU still annotates on a CPU."""
    fields = dict(vocab_size=8, d_model=32, n_heads=2, depth=2, d_ff=64, chunk_size=16, attention=["local", "lsh"])
    ids = torch.randint(1, 8, (1, 64))
    outputs = []
    for kernel in ("chunked", "flex"):
        torch.manual_seed(0)
        model = Reformer(ReformerConfig(**fields, attention_kernel=kernel)).eval()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outputs.append(model(ids))
        assert any("runs on CUDA devices only" in str(w.message) for w in caught) == (kernel == "flex")
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's kernel and backward need CUDA")
def test_flex_reformer_gradients_equal_the_chunked_kernel_on_cuda():
    fields = dict(vocab_size=8, d_model=64, n_heads=4, depth=4, d_ff=128, chunk_size=32, n_hashes=2,
                  attention=["local", "lsh"], reversible=True)
    ids = torch.randint(1, 8, (2, 1000), device="cuda")
    grads = []
    for kernel in ("chunked", "flex"):
        torch.manual_seed(0)
        model = Reformer(ReformerConfig(**fields, attention_kernel=kernel)).cuda()
        model(ids).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert ((grads[1] - grads[0]).norm() / grads[0].norm()) < 1e-4
