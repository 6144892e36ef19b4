import numpy as np
import pytest

from conclave.local_models.sampling import choose, logsumexp, top_k


def softmax(x, t=1.0):
    z = np.asarray(x, dtype=np.float64) / t
    z -= z.max()
    p = np.exp(z)
    return p / p.sum()


def test_logsumexp_matches_float64_reference():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(49152) * 8).astype(np.float32)
    ref = np.log(np.exp(x.astype(np.float64) - x.max()).sum()) + x.max()
    assert abs(logsumexp(x) - ref) < 1e-4


def test_greedy_is_argmax_and_top_k_is_sorted():
    x = np.array([0.1, 3.0, -1.0, 2.0], dtype=np.float32)
    assert choose(x, 0.0, 1.0, np.random.default_rng(0)) == 1
    assert list(top_k(x, 3)) == [1, 3, 0]


def test_same_seed_same_choices():
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    a = [choose(x, 1.0, 0.9, np.random.default_rng(7)) for _ in range(5)]
    b = [choose(x, 1.0, 0.9, np.random.default_rng(7)) for _ in range(5)]
    assert a == b


@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.999])
def test_nucleus_sampling_draws_only_from_the_exact_nucleus(top_p):
    # a flat distribution puts the nucleus far outside the top-64 fast path for top_p=0.999
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(5000) * (3.0 if top_p < 0.99 else 0.1)).astype(np.float32)
    p = softmax(x)
    order = np.argsort(p)[::-1]
    cut = int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1
    nucleus = set(order[:cut].tolist())
    draws = [choose(x, 1.0, top_p, rng) for _ in range(2000)]
    assert set(draws) <= nucleus
    if top_p == 0.3:  # frequencies follow the renormalised nucleus
        q = p[order[:cut]] / p[order[:cut]].sum()
        freq = np.array([draws.count(t) for t in order[:cut]]) / len(draws)
        assert np.abs(freq - q).max() < 0.05


def test_temperature_sharpens():
    x = np.array([1.0, 0.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    cold = sum(choose(x, 0.2, 1.0, rng) == 0 for _ in range(500)) / 500
    hot = sum(choose(x, 2.0, 1.0, rng) == 0 for _ in range(500)) / 500
    assert cold > 0.95 and 0.5 < hot < 0.75


@pytest.mark.parametrize("temperature", [2.2250738585e-313, 1e-300, 1e-12])
def test_a_vanishing_temperature_is_greedy_not_nan(temperature):
    # the server's fuzzer sent a denormal temperature; logits/T overflowed to inf - inf = NaN
    x = np.random.default_rng(2).standard_normal(500).astype(np.float32) * 5
    rng = np.random.default_rng(0)
    assert {choose(x, temperature, p, rng) for p in (1.0, 0.9) for _ in range(20)} == {int(x.argmax())}
