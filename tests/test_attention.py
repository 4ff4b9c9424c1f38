"""Attention layers: LSH against exact references, masking rules, gradients, positions, memory shape."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from genoformer.model import FullSelfAttention, LocalSelfAttention, LSHSelfAttention, ReformerConfig
from genoformer.model.attention import bucket_widths, lsh_sort
from genoformer.model.chunked import MASKED, SELF_PENALTY, ChunkSpec, chunked_attention
from genoformer.model.rotary import apply_rotary, apply_rotary_, rotary_tables
from genoformer.model.runtime import ForwardContext


def tiny(**kw):
    base = dict(vocab_size=8, d_model=16, n_heads=2, depth=1, d_ff=32, chunk_size=8, n_hashes=2)
    return ReformerConfig(**{**base, **kw})


def padded_mask(batch, length, real_lengths):
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b, n in enumerate(real_lengths):
        mask[b, :n] = True
    return mask


# ------------------------------------------------------------------ exact references
@pytest.mark.parametrize("causal", [False, True])
def test_lsh_with_one_bucket_and_one_chunk_equals_full_attention(causal):
    torch.manual_seed(0)
    cfg = tiny(chunk_size=64, n_buckets=1, n_hashes=3, causal=causal)
    lsh = LSHSelfAttention(cfg).eval()
    full = FullSelfAttention(cfg, shared_qk=True).eval()
    full.load_state_dict(lsh.state_dict())
    x = torch.randn(2, 50, 16)
    mask = padded_mask(2, 50, [50, 37])
    a, b = lsh(x, mask), full(x, mask)
    assert torch.allclose(a[mask], b[mask], atol=1e-5, rtol=0)
    # without a mask too (internal padding 50 -> 64 only)
    assert torch.allclose(lsh(x), full(x), atol=1e-5, rtol=0)


def dense_reference(q, k, v, perm, spec, key_real):
    """Softmax over the union (with multiplicity) of every round's look-around keys, built densely."""
    n_rows, length, d = q.shape
    c = spec.chunk
    logits = torch.einsum("nid,njd->nij", q * spec.scale, k)
    count = torch.zeros(n_rows, length, length, dtype=q.dtype)
    for r in range(perm.shape[1]):  # rounds
        where = torch.empty(n_rows, length, dtype=torch.long)
        where.scatter_(1, perm[:, r].long(), torch.arange(length).expand(n_rows, -1))
        chunk = where // c
        diff = chunk[:, None, :] - chunk[:, :, None]  # key chunk - query chunk; no wrap-around
        allowed = torch.zeros_like(diff, dtype=torch.bool)
        for o in spec.offsets:
            allowed |= diff == o
        count += allowed
    eye = torch.eye(length, dtype=q.dtype)
    logits = logits + SELF_PENALTY * eye + torch.where(key_real[:, None, :], 0.0, MASKED)
    weights = count * torch.exp(logits - logits.amax(-1, keepdim=True))
    return torch.einsum("nij,njd->nid", weights / weights.sum(-1, keepdim=True), v)


def test_multi_round_kernel_equals_dense_union_of_rounds():
    torch.manual_seed(1)
    n_rows, length, d, c = 3, 40, 8, 4
    q = torch.randn(n_rows, length, d, dtype=torch.float64)
    k = torch.nn.functional.normalize(q, dim=-1)
    v = torch.randn(n_rows, length, d, dtype=torch.float64)
    perm = torch.stack([torch.stack([torch.randperm(length) for _ in range(3)]) for _ in range(n_rows)]).int()
    key_real = torch.rand(n_rows, length) > 0.2
    spec = ChunkSpec(chunk=c, offsets=(0, -1, 1), causal=False, causal_window=False,
                      self_penalty=True, scale=1.0, dropout=0.0, dropout_seed=0, rows_per_step=16)
    out = chunked_attention(q[None], k[None], v[None], perm, None, key_real[:1], spec)  # batch 1 x 3 heads
    ref = dense_reference(q, k, v, perm, spec, key_real[:1].expand(n_rows, -1))
    assert torch.allclose(out[0], ref, atol=1e-10)


def test_local_attention_equals_banded_full_attention():
    torch.manual_seed(2)
    for causal in (False, True):
        cfg = tiny(chunk_size=4, causal=causal, attention_chunk_tokens=8)
        local = LocalSelfAttention(cfg).double().eval()
        full = FullSelfAttention(cfg).double().eval()
        full.load_state_dict(local.state_dict())
        x = torch.randn(2, 19, 16, dtype=torch.float64)
        mask = padded_mask(2, 19, [19, 13])
        # banded reference: full attention with keys limited to neighbouring chunks via the padding mask
        ref = torch.empty(2, 19, 16, dtype=torch.float64)
        for i in range(19):
            band = mask.clone()
            lo = (i // 4 - 1) * 4
            hi = (i // 4 + (1 if causal else 2)) * 4
            band[:, :max(lo, 0)] = False
            band[:, hi:] = False
            ref[:, i] = full(x, band)[:, i]
        out = local(x, mask)
        assert torch.allclose(out[mask], ref[mask], atol=1e-10)
        # a chunk-multiple length without a mask: only the sequence ends are masked
        x = x[:, :16]
        pos = torch.arange(16)
        bands = [((pos >= (i // 4 - 1) * 4) & (pos < (i // 4 + (1 if causal else 2)) * 4)).expand(2, 16)
                 for i in range(16)]
        ref = torch.stack([full(x, band)[:, i] for i, band in enumerate(bands)], 1)
        assert torch.allclose(local(x), ref, atol=1e-10)


# ------------------------------------------------------------------ masking properties
@pytest.mark.parametrize("kind", [LSHSelfAttention, LocalSelfAttention, FullSelfAttention])
def test_causal_outputs_ignore_later_positions(kind):
    torch.manual_seed(3)
    cfg = tiny(causal=True, n_hashes=3, chunk_size=4, attention_chunk_tokens=16)
    attn = kind(cfg).eval()
    x = torch.randn(2, 37, 16)
    y = x.clone()
    y[:, 21:] = torch.randn(2, 16, 16)
    assert torch.allclose(attn(x)[:, :21], attn(y)[:, :21], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", [LSHSelfAttention, LocalSelfAttention, FullSelfAttention])
def test_padding_does_not_change_real_outputs(kind):
    torch.manual_seed(4)
    cfg = tiny(chunk_size=4, n_hashes=3)
    attn = kind(cfg).eval()
    x = torch.randn(1, 30, 16)
    alone = attn(x)
    for extra in (1, 7, 50):
        padded = torch.cat([x, torch.randn(1, extra, 16)], 1)
        out = attn(padded, padded_mask(1, 30 + extra, [30]))
        assert torch.allclose(out[:, :30], alone, atol=1e-5, rtol=0)


def test_token_attends_to_itself_only_when_nothing_else():
    torch.manual_seed(5)
    cfg = tiny(causal=True, chunk_size=4)
    attn = LSHSelfAttention(cfg).eval()
    x = torch.randn(1, 12, 16)
    v = torch.nn.functional.linear(x, attn.v.weight)
    # position 0 of a causal layer sees only itself: output = out_proj(v_0)
    expected = torch.nn.functional.linear(v[:, 0], attn.out.weight, attn.out.bias)
    assert torch.allclose(attn(x)[:, 0], expected, atol=1e-5)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("kind", [LSHSelfAttention, LocalSelfAttention, FullSelfAttention])
@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(kind, causal):
    torch.manual_seed(6)
    cfg = tiny(d_model=8, chunk_size=4, causal=causal, attention_chunk_tokens=8)
    attn = kind(cfg).double()
    x = torch.randn(2, 13, 8, dtype=torch.float64, requires_grad=True)
    mask = padded_mask(2, 13, [13, 9])
    # fully masked (pad) query rows are excluded: their logits sit at -1e9, where finite differences
    # lose all precision
    assert torch.autograd.gradcheck(lambda t: attn(t, mask)[mask], (x,), eps=1e-6, atol=1e-6)


def test_gradcheck_kernel_with_attention_dropout():
    torch.manual_seed(7)
    q = torch.randn(2, 16, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 16, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 16, 4, dtype=torch.float64, requires_grad=True)
    perm = torch.stack([torch.stack([torch.randperm(16) for _ in range(2)]) for _ in range(2)]).int()
    spec = ChunkSpec(chunk=4, offsets=(0, -1, 1), causal=False, causal_window=False,
                      self_penalty=False, scale=0.5, dropout=0.3, dropout_seed=11, rows_per_step=8)
    f = lambda a, b, c: chunked_attention(a[None], b[None], c[None], perm, None, None, spec)
    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-6)


def test_gradcheck_kernel_with_shared_keys():
    """Keys normalised from the queries inside the kernel: their gradient flows back into q."""
    torch.manual_seed(8)
    q = torch.randn(2, 16, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 16, 4, dtype=torch.float64, requires_grad=True)
    perm = torch.stack([torch.stack([torch.randperm(16) for _ in range(2)]) for _ in range(2)]).int()
    spec = ChunkSpec(chunk=4, offsets=(0, -1, 1), causal=False, causal_window=False, self_penalty=True,
                      scale=1.0, dropout=0.0, dropout_seed=0, rows_per_step=8, shared_keys=True)
    f = lambda a, c: chunked_attention(a[None], None, c[None], perm, None, None, spec)
    assert torch.autograd.gradcheck(f, (q, v), eps=1e-6, atol=1e-6)
    # the same as passing the normalised keys explicitly
    explicit = ChunkSpec(**{**spec.__dict__, "shared_keys": False})
    expected = chunked_attention(q[None], F.normalize(q, dim=-1)[None], v[None], perm, None, None, explicit)
    assert torch.allclose(f(q, v), expected, atol=1e-12)


# ------------------------------------------------------------------ hashing
def test_bucket_count_follows_each_sequence_length():
    cfg = tiny(chunk_size=64)
    widths, _ = bucket_widths(cfg, torch.tensor([64, 128, 1000, 2048]), 2048)
    assert widths.prod(1).tolist() == [2, 4, 32, 64]
    # multi-megabase: factors of at most 128 buckets, product = 2 * next_pow2(L / chunk)
    widths, max_widths = bucket_widths(cfg, torch.tensor([2**22]), 2**22)
    assert widths.prod(1).item() == 2**17 and max(max_widths) <= 128
    fixed, _ = bucket_widths(tiny(n_buckets=6), torch.tensor([10, 5000]), 5000)
    assert fixed.prod(1).tolist() == [6, 6]


def test_lsh_sort_is_stable_int32_and_puts_padding_last():
    torch.manual_seed(8)
    cfg = tiny(chunk_size=4, n_hashes=2, causal=True)  # causal: the sorted bucket ids are returned too
    mask = padded_mask(2, 32, [32, 20])
    ctx = ForwardContext.build(cfg, 2, 32, mask, torch.device("cpu"), training=False, seed=1, hash_seed=1)
    keys = torch.nn.functional.normalize(torch.randn(2, 2, 32, 8), dim=-1)
    perm, buckets = lsh_sort(keys, ctx, cfg, seed=3, heads=slice(0, 2))
    assert perm.dtype == torch.int32 and perm.shape == (4, 2, 32)
    assert torch.equal(perm.sort(-1).values, torch.arange(32).expand(4, 2, 32).int())
    assert bool((buckets[..., 1:] >= buckets[..., :-1]).all())
    same = buckets[..., 1:] == buckets[..., :-1]
    assert bool((perm[..., 1:] > perm[..., :-1])[same].all())  # ties keep position order
    assert set(perm[2:, :, 20:].flatten().tolist()) == set(range(20, 32))  # batch 1's pads sort last
    # identical inputs, same seed -> identical hashing (deterministic replay)
    perm2, _ = lsh_sort(keys, ctx, cfg, seed=3, heads=slice(0, 2))
    assert torch.equal(perm, perm2)


# ------------------------------------------------------------------ positions
def test_rotary_is_exact_and_finite_at_four_megabases():
    far = 2**22 + 5
    cos, sin = rotary_tables(8, 64, 10000.0, torch.device("cpu"), start=far - 4)
    inv_freq = 10000.0 ** (-torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    angle = torch.outer(torch.arange(far - 4, far + 4, dtype=torch.float64), inv_freq)
    assert torch.isfinite(cos).all() and torch.isfinite(sin).all()
    assert torch.allclose(cos.double(), torch.cos(angle), atol=1e-6)
    assert torch.allclose(sin.double(), torch.sin(angle), atol=1e-6)
    # the full-length path (blocks + angle addition) agrees with the offset path
    cos0, sin0 = rotary_tables(3 * 4096 + 17, 64, 10000.0, torch.device("cpu"))
    cos1, sin1 = rotary_tables(9, 64, 10000.0, torch.device("cpu"), start=3 * 4096 + 8)
    assert torch.allclose(cos0[-9:], cos1, atol=1e-6) and torch.allclose(sin0[-9:], sin1, atol=1e-6)
    # relative: q_i . k_j depends only on i - j, also at the far end
    near_cos, near_sin = rotary_tables(8, 64, 10000.0, torch.device("cpu"))
    q, k = torch.randn(64), torch.randn(64)
    near = apply_rotary(q, near_cos[7], near_sin[7]) @ apply_rotary(k, near_cos[3], near_sin[3])
    far_dot = apply_rotary(q, cos[7], sin[7]) @ apply_rotary(k, cos[3], sin[3])
    assert math.isclose(near.item(), far_dot.item(), rel_tol=1e-4, abs_tol=1e-4)
    assert torch.allclose(apply_rotary(q, cos[7], sin[7]).norm(), q.norm(), rtol=1e-5)


# ------------------------------------------------------------------ memory shape
class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("kind", [LSHSelfAttention, LocalSelfAttention])
def test_no_tensor_grows_quadratically(kind):
    length = 8192
    cfg = tiny(chunk_size=64, n_hashes=2, attention_chunk_tokens=1024)
    attn = kind(cfg)
    x = torch.randn(1, length, 16, requires_grad=True)
    with _LargestTensor() as probe:
        attn(x).sum().backward()
    # the largest intermediates are linear in L (hash projections: L x heads x 64); L^2 would be 8192 L
    assert probe.largest <= 128 * length


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place_rotation_equals_the_autograd_one_bit_for_bit(dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 40000, 16).to(dtype)  # more positions than one in-place step
    cos, sin = rotary_tables(40000, 16, 10000.0, torch.device("cpu"))
    expected = apply_rotary(x, cos, sin)
    assert torch.equal(apply_rotary_(x.clone(), cos, sin), expected)
