"""Dropout masks: the rate they realise, the expectation they preserve, reproducibility from the seed,
and the attention kernel's dropout against its dropout-free output."""
import pytest
import torch

from genoformer.model.chunked import ChunkSpec, chunked_attention
from genoformer.model.runtime import apply_dropout, draw_keeps, drop_rate, keep_scale, kept_positions, seeded_generator

N_DRAWS = 1 << 22


def drops(p, seed, shape=(N_DRAWS,)):
    """True where dropout drops."""
    return draw_keeps(shape, p, seeded_generator(seed, torch.device("cpu")), torch.device("cpu")) == 0


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3])
def test_the_dropped_fraction_is_the_rate_within_sampling_noise(p):
    assert abs(drop_rate(p) - p) <= 2 ** -17  # the rate is p rounded to 16 bits
    fraction = drops(p, seed=1).float().mean().item()
    sigma = (p * (1 - p) / N_DRAWS) ** 0.5
    assert abs(fraction - drop_rate(p)) < 5 * sigma


def test_neighbouring_drops_are_independent():
    """Four draws come from each 64-bit word: neighbours (same word or not) drop together at rate p^2."""
    p = 0.3
    d = drops(p, seed=2).view(-1, 4)
    for a, b in [(0, 1), (1, 2), (2, 3)]:
        both = (d[:, a] & d[:, b]).float().mean().item()
        assert abs(both - p * p) < 5 * (p * p / d.shape[0]) ** 0.5
    across_words = (d[:-1, 3] & d[1:, 0]).float().mean().item()
    assert abs(across_words - p * p) < 5 * (p * p / d.shape[0]) ** 0.5


def test_inverted_dropout_preserves_the_expectation():
    p = 0.1
    x = torch.ones(N_DRAWS)
    out = apply_dropout(x, (~drops(p, seed=3)).to(torch.uint8), p)
    assert torch.equal(out.unique(), torch.tensor([0.0, keep_scale(p)]))
    assert (1 - drop_rate(p)) * keep_scale(p) == pytest.approx(1.0, abs=1e-15)
    assert abs(out.mean().item() - 1.0) < 5 * (p / (1 - p) / N_DRAWS) ** 0.5


def test_masks_repeat_for_a_seed_and_differ_between_seeds():
    assert torch.equal(drops(0.2, seed=4, shape=(3, 50, 7)), drops(0.2, seed=4, shape=(3, 50, 7)))
    assert not torch.equal(drops(0.2, seed=4, shape=(3, 50, 7)), drops(0.2, seed=5, shape=(3, 50, 7)))


def test_a_position_drops_the_same_however_the_length_is_cut():
    whole = kept_positions(6, 2, 0, 3000, 8, 0.2, torch.device("cpu"))
    for start, end in [(0, 1), (1000, 1030), (1020, 2100), (2999, 3000)]:
        assert torch.equal(kept_positions(6, 2, start, end, 8, 0.2, torch.device("cpu")), whole[:, start:end])


def kernel(spec, q, k, v, perm):
    return chunked_attention(q[None], k[None], v[None], perm, None, None, spec)[0]


def test_attention_dropout_averages_to_the_dropout_free_output():
    """E[dropout output] = dropout-free output: the kept probabilities' 1/(1-p) is applied exactly once."""
    torch.manual_seed(9)
    q, k, v = (torch.randn(2, 32, 4, dtype=torch.float64) for _ in range(3))
    perm = torch.stack([torch.stack([torch.randperm(32) for _ in range(2)]) for _ in range(2)]).int()
    base = dict(chunk=8, offsets=(0, -1, 1), causal=False, causal_window=False, self_penalty=False, scale=0.5,
                rows_per_step=16)
    exact = kernel(ChunkSpec(**base, dropout=0.0, dropout_seed=0), q, k, v, perm)
    samples = torch.stack([kernel(ChunkSpec(**base, dropout=0.3, dropout_seed=s), q, k, v, perm) for s in range(400)])
    assert not torch.allclose(samples[0], exact, atol=1e-3)  # dropout did something
    assert not torch.equal(samples[0], samples[1])  # and differs with the seed
    standard_error = samples.std(0) / len(samples) ** 0.5
    assert ((samples.mean(0) - exact).abs() < 5 * standard_error + 1e-12).all()
