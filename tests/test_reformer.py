"""The Reformer model: configuration, any length, causality, padding, determinism, heads."""
import json
import time

import pytest
import torch
import torch.nn.functional as F

from genoformer.errors import ConfigError
from genoformer.model import MaskedLMHead, Reformer, ReformerConfig, TaggingHead, masked_lm_loss


def config(**kw):
    base = dict(vocab_size=10, d_model=16, n_heads=2, depth=2, d_ff=32, chunk_size=8, n_hashes=2,
                attention=["local", "lsh"])
    return ReformerConfig(**{**base, **kw})


# ------------------------------------------------------------------ configuration
def test_config_round_trips_through_json():
    cfg = config(attention=["local", "lsh"], depth=4, n_buckets=64, eval_n_hashes=8, head_group_size=1)
    again = ReformerConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.layer_types == ("local", "lsh", "local", "lsh")
    assert ReformerConfig(vocab_size=5).layer_types == ("lsh",) * 6


def test_reversible_defaults_to_auto_and_null_means_auto():
    assert ReformerConfig(vocab_size=5).reversible == "auto"
    assert ReformerConfig(vocab_size=5, reversible=None).reversible == "auto"
    assert ReformerConfig.setting_defaults()["reversible"] is None  # the pipeline then takes true, false, "auto" or a block count


@pytest.mark.parametrize("changes, words", [
    (dict(d_model=30, n_heads=4), "divisible"),
    (dict(d_model=12, n_heads=4), "even"),
    (dict(attention="sparse"), "unknown kind"),
    (dict(attention=["lsh", "local", "full"], depth=2), "divide"),
    (dict(attention=[]), "empty"),
    (dict(n_buckets=6), None),  # valid: even and <= 128
    (dict(n_buckets=130), "n_buckets"),
    (dict(n_buckets=3), "n_buckets"),
    (dict(dropout=1.0), "dropout"),
    (dict(depth=True), "integer"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(pad_token_id=10), "pad_token_id"),
    (dict(head_group_size=3), "head_group_size"),
    (dict(causal="yes"), "true or false"),
    (dict(reversible="sometimes"), "number of blocks from 0 to depth"),
    (dict(reversible=7), "number of blocks from 0 to depth"),
])
def test_config_validation(changes, words):
    if words is None:
        config(**changes)
        return
    with pytest.raises(ConfigError, match=words):
        config(**changes)


def test_config_from_dict_rejects_unknown_and_missing_keys():
    data = config().to_dict()
    with pytest.raises(ConfigError, match="unknown"):
        ReformerConfig.from_dict({**data, "n_layers": 3})
    del data["vocab_size"]
    with pytest.raises(ConfigError, match="vocab_size"):
        ReformerConfig.from_dict(data)


# ------------------------------------------------------------------ any length
@pytest.mark.parametrize("length", [1, 63, 64, 65, 1000, 4097])
def test_any_length_runs_forward_and_backward(length):
    torch.manual_seed(0)
    model = Reformer(config(chunk_size=64, attention=["lsh", "local"], dropout=0.1)).train()
    ids = torch.randint(0, 10, (1, length))
    out = model(ids)
    assert out.shape == (1, length, 16) and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_quarter_megabase_forward_is_linear_and_quick():
    torch.manual_seed(1)
    model = Reformer(ReformerConfig(vocab_size=6, d_model=32, n_heads=2, depth=1, d_ff=64, n_hashes=1)).eval()
    ids = torch.randint(0, 6, (1, 262_144))
    start = time.perf_counter()
    with torch.no_grad():
        out = model(ids)
    assert out.shape == (1, 262_144, 32) and torch.isfinite(out).all()
    assert time.perf_counter() - start < 60  # a 262k x 262k score matrix alone would be 256 GiB


# ------------------------------------------------------------------ masking semantics
def test_causal_model_outputs_ignore_later_tokens():
    torch.manual_seed(2)
    model = Reformer(config(causal=True, attention=["lsh", "local"], n_hashes=3)).eval()
    ids = torch.randint(0, 10, (2, 45))
    changed = ids.clone()
    changed[:, 30:] = torch.randint(0, 10, (2, 15))
    assert torch.allclose(model(ids)[:, :30], model(changed)[:, :30], atol=1e-5)


def test_outputs_at_real_positions_ignore_trailing_padding():
    torch.manual_seed(3)
    model = Reformer(config(attention=["lsh", "local", "full", "lsh"], depth=4, n_hashes=3)).eval()
    ids = torch.randint(1, 10, (1, 37))
    alone = model(ids)
    for extra in (3, 11, 100):
        padded = torch.cat([ids, torch.randint(0, 10, (1, extra))], 1)
        mask = torch.zeros(1, 37 + extra, dtype=torch.bool)
        mask[:, :37] = True
        assert torch.allclose(model(padded, mask)[:, :37], alone, atol=1e-5)
    # in a batch next to a longer sequence (each sequence hashes into buckets for its own length)
    other = torch.randint(1, 10, (1, 300))
    both = torch.cat([F.pad(ids, (0, 263)), other])
    mask = torch.ones(2, 300, dtype=torch.bool)
    mask[0, 37:] = False
    assert torch.allclose(model(both, mask)[:1, :37], alone, atol=1e-5)


# ------------------------------------------------------------------ randomness
def test_seeded_runs_are_identical_and_leave_the_global_rng_alone():
    def step():
        torch.manual_seed(4)
        model = Reformer(config(dropout=0.2, attention_dropout=0.1)).train()
        ids = torch.randint(0, 10, (2, 50))
        state = torch.get_rng_state()
        out = model(ids)
        out.pow(2).sum().backward()
        assert torch.equal(torch.get_rng_state(), state)
        return out.detach(), [p.grad for p in model.parameters()]

    (a, grads_a), (b, grads_b) = step(), step()
    assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(grads_a, grads_b))


def test_training_calls_draw_fresh_rotations_evaluation_is_fixed():
    torch.manual_seed(5)
    model = Reformer(config(attention="lsh", depth=1, dropout=0.0)).train()
    ids = torch.randint(0, 10, (1, 200))
    with torch.no_grad():
        first, second = model(ids), model(ids)
        assert not torch.allclose(first, second)
        model.eval()
        assert torch.equal(model(ids), model(ids))
        # evaluation may use more hash rounds than training
        model.config.eval_n_hashes = 8
        assert not torch.allclose(model(ids), first)


# ------------------------------------------------------------------ heads
def test_masked_lm_head_ties_the_embedding_and_chunked_loss_matches_plain_loss():
    torch.manual_seed(6)
    cfg = config()
    model = Reformer(cfg)
    head = MaskedLMHead(cfg, model.embedding)
    assert head.decoder_weight is model.embedding.weight
    assert "decoder" not in dict(head.named_parameters()) and len(head.state_dict()) == 5
    ids = torch.randint(0, 10, (2, 40))
    labels = torch.full((2, 40), -100)
    labels[:, ::3] = ids[:, ::3]
    hidden = model(ids).detach().requires_grad_()
    loss = masked_lm_loss(hidden, head, labels, chunk=5)
    plain = F.cross_entropy(head(hidden).flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert torch.allclose(loss, plain, atol=1e-6)
    wrt = [hidden, model.embedding.weight, head.dense.weight]
    for a, b in zip(torch.autograd.grad(loss, wrt), torch.autograd.grad(plain, wrt)):
        assert torch.allclose(a, b, atol=1e-6)
    untied = MaskedLMHead(config(tie_word_embeddings=False), model.embedding)
    assert untied.decoder_weight is not model.embedding.weight
    assert masked_lm_loss(hidden, head, torch.full((2, 40), -100)).item() == 0.0


@pytest.mark.parametrize("k, stride", [(1, 1), (3, 1), (3, 3), (4, 2)])
def test_tagging_head_folds_kmer_predictions_to_bases(k, stride):
    torch.manual_seed(7)
    head = TaggingHead(16, n_classes=3, k=k, stride=stride)
    n_tokens, n_bases = 9, (9 - 1) * stride + k + 2  # two trailing bases no token covers
    hidden = torch.randn(2, n_tokens, 16)
    out = head(hidden, n_bases)
    assert out.shape == (2, 2, 3, n_bases)
    per_token = head.proj(hidden).view(2, n_tokens, k, 2, 3)  # (B, T, offset, strand, class)
    expected = torch.zeros(2, 2, 3, n_bases)
    for base in range(n_bases):  # reference: mean over the tokens covering each base
        covering = [(t, base - t * stride) for t in range(n_tokens) if 0 <= base - t * stride < k]
        if covering:
            expected[..., base] = torch.stack([per_token[:, t, j] for t, j in covering]).mean(0)
    assert torch.allclose(out, expected, atol=1e-6)


def test_head_groups_follow_the_call_size():
    cfg = config(n_heads=4)
    assert cfg.head_groups(8 * 2048) == [slice(0, 4)]  # a training batch: all heads at once
    assert cfg.head_groups(1 << 16) == [slice(0, 2), slice(2, 4)]
    assert cfg.head_groups(1 << 22) == [slice(h, h + 1) for h in range(4)]  # long windows: a head at a time
    assert config(n_heads=4, head_group_size=2).head_groups(1 << 22) == [slice(0, 2), slice(2, 4)]
    # A GPU takes few, large steps: a 32 x 8,192 training batch keeps all heads together.
    assert cfg.head_groups(32 * 8192, "cuda") == [slice(0, 4)]
    assert cfg.head_groups(32 * 8192) == [slice(h, h + 1) for h in range(4)]
    assert (cfg.attention_rows("cpu"), cfg.attention_rows("cuda")) == (8192, 1 << 20)
    assert config(attention_chunk_tokens=64).attention_rows("cuda") == 64
    # Position-wise steps: small on a CPU, a 1 Mb window's worth on a GPU (a few launches per layer).
    assert (cfg.ff_positions("cpu"), cfg.ff_positions("cuda")) == (8192, 1 << 20)
    assert config(ff_chunk_size=40).ff_positions("cuda") == 40


def test_memory_knobs_do_not_change_results():
    torch.manual_seed(8)
    ids = torch.randint(0, 10, (2, 150))
    mask = torch.ones(2, 150, dtype=torch.bool)
    mask[1, 120:] = False
    results = []
    for knobs in (dict(), dict(head_group_size=1, attention_chunk_tokens=32, ff_chunk_size=40)):
        torch.manual_seed(9)
        model = Reformer(config(n_heads=4, attention=["local", "lsh"], dropout=0.1, **knobs)).double().train()
        out = model(ids, mask)
        out.pow(2).sum().backward()
        results.append((out.detach(), [p.grad for p in model.parameters()]))
    (a, grads_a), (b, grads_b) = results
    assert torch.allclose(a, b, atol=1e-12)
    assert all(torch.allclose(x, y, atol=1e-10) for x, y in zip(grads_a, grads_b))
