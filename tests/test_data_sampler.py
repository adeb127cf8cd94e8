"""Tests for gru_jax.data.sampler.NegativeSampler."""

import json

import numpy as np
import pytest

from gru_jax.data import NegativeSampler


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.75, 1.0])
def test_empirical_frequencies_match_support_power_alpha(alpha):
    # Given supports 1..40 (one item with support 0).
    supports = np.r_[0, np.arange(1, 41)]
    sampler = NegativeSampler(supports, alpha=alpha, n_sample=100, store_size=50_000, seed=1)

    # When drawing 400k ids (8 store refills).
    draws = sampler.take(4_000).ravel()

    # Then each item's frequency is within 5 binomial standard deviations of support^alpha
    # (normalised); the zero-support item is never drawn unless alpha = 0 (uniform).
    want = supports.astype(float) ** alpha
    want /= want.sum()
    np.testing.assert_allclose(sampler.probabilities, want, rtol=1e-12)
    freq = np.bincount(draws, minlength=len(supports)) / len(draws)
    tol = 5 * np.sqrt(want * (1 - want) / len(draws)) + 1e-12
    assert np.all(np.abs(freq - want) <= tol), np.max(np.abs(freq - want) / tol)
    assert (freq[0] == 0) == (alpha > 0)


def test_store_is_refilled_and_shapes_are_fixed():
    sampler = NegativeSampler(np.ones(10), alpha=1.0, n_sample=7, store_size=100, seed=0)
    assert sampler.rows == 14
    first = sampler.take(10)
    second = sampler.take(10)  # spans the end of the first store
    assert first.shape == second.shape == (10, 7) and first.dtype == np.int32
    assert first.min() >= 0 and max(first.max(), second.max()) < 10
    assert sampler.take(0).shape == (0, 7)


def test_state_restore_continues_identically():
    supports = np.arange(1, 200)
    a = NegativeSampler(supports, alpha=0.5, n_sample=16, store_size=160, seed=3)
    a.take(7)
    state = json.loads(json.dumps(a.state()))  # checkpoints store it as JSON
    expected = a.take(25)

    b = NegativeSampler(supports, alpha=0.5, n_sample=16, store_size=160, seed=99)
    b.restore(state)
    np.testing.assert_array_equal(b.take(25), expected)


def test_state_before_first_draw_and_seed_reproducibility():
    supports = np.arange(1, 50)
    a = NegativeSampler(supports, alpha=0.3, n_sample=8, store_size=80, seed=5)
    state = a.state()
    expected = a.take(30)
    b = NegativeSampler(supports, alpha=0.3, n_sample=8, store_size=80, seed=6)
    b.restore(state)
    np.testing.assert_array_equal(b.take(30), expected)
    c = NegativeSampler(supports, alpha=0.3, n_sample=8, store_size=80, seed=5)
    np.testing.assert_array_equal(c.take(30), expected)


def test_no_samples_and_invalid_arguments():
    assert NegativeSampler(np.ones(3), alpha=0.5, n_sample=0).take(4).shape == (4, 0)
    with pytest.raises(ValueError, match="alpha"):
        NegativeSampler(np.ones(3), alpha=1.5, n_sample=4)
    with pytest.raises(ValueError, match="zero"):
        NegativeSampler(np.zeros(3), alpha=1.0, n_sample=4)
