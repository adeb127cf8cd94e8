"""Tests for gru_jax.metrics against a NumPy brute-force (sort-based) full ranking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gru_jax.metrics import (
    TIE_MODES,
    accumulate,
    count_ranks,
    count_ranks_chunked,
    finalize,
    metric_sums,
    ranks_from_counts,
)

# ----------------------------------------------------------------------------- NumPy reference


def np_ranks(scores, targets, mode):
    """Sorts each row by descending score and reads the target's 1-based position.

    Ties are ordered by a second key: the target first (standard) or last (conservative);
    median averages the two.
    """
    if mode == "median":
        return (
            np_ranks(scores, targets, "standard") + np_ranks(scores, targets, "conservative")
        ) / 2
    ranks = []
    for row, t in zip(np.asarray(scores, np.float64), targets):
        tie_key = np.ones(len(row))
        tie_key[t] = 0 if mode == "standard" else 2
        order = np.lexsort((tie_key, -row))  # last key is the primary one
        ranks.append(int(np.flatnonzero(order == t)[0]) + 1)
    return np.array(ranks)


def np_metrics(ranks, mask, cutoffs):
    r, out = np.asarray(ranks, np.float64)[mask], {}
    for k in cutoffs:
        hit = r <= k
        out[f"recall@{k}"] = hit.mean()
        out[f"mrr@{k}"] = np.where(hit, 1 / r, 0).mean()
        out[f"ndcg@{k}"] = np.where(hit, 1 / np.log2(r + 1), 0).mean()
    return out


def _tied_scores(rng, batch=16, num_items=30, levels=5):
    # Few distinct integer scores: every row has many ties with its target.
    return rng.integers(0, levels, size=(batch, num_items)).astype(np.float32)


# ----------------------------------------------------------------------------- ranks


@pytest.mark.parametrize("mode", TIE_MODES)
def test_ranks_match_brute_force_with_ties(mode):
    rng = np.random.default_rng(0)
    scores = _tied_scores(rng)
    targets = rng.integers(0, scores.shape[1], size=scores.shape[0])
    n_gt, n_eq = count_ranks(jnp.asarray(scores), jnp.asarray(targets))
    ranks = ranks_from_counts(n_gt, n_eq, mode)
    np.testing.assert_array_equal(ranks, np_ranks(scores, targets, mode))
    assert (n_eq > 0).any(), "the test should contain ties"


def test_tie_modes_on_a_hand_made_row():
    # Target (item 1) scores 2; one item scores more, two others tie with it.
    scores = jnp.array([[1.0, 2.0, 3.0, 2.0, 2.0, 0.0]])
    n_gt, n_eq = count_ranks(scores, jnp.array([1]))
    assert (int(n_gt[0]), int(n_eq[0])) == (1, 2)
    assert int(ranks_from_counts(n_gt, n_eq, "standard")[0]) == 2
    assert int(ranks_from_counts(n_gt, n_eq, "conservative")[0]) == 4
    assert float(ranks_from_counts(n_gt, n_eq, "median")[0]) == 3.0
    assert ranks_from_counts(n_gt, n_eq, "conservative").dtype == jnp.int32


def test_unknown_tie_mode_lists_options():
    with pytest.raises(ValueError, match="conservative, standard, median"):
        ranks_from_counts(jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32), "tiebreaking")


def test_nan_target_gets_the_worst_rank():
    scores = jnp.array([[0.5, jnp.nan, 0.1], [jnp.nan, 1.0, 0.0]])
    n_gt, n_eq = count_ranks(scores, jnp.array([1, 1]))
    np.testing.assert_array_equal(ranks_from_counts(n_gt, n_eq), [3, 1])


# ----------------------------------------------------------------------------- chunked


def _model(rng, batch=9, hidden=4, num_items=23):
    # Small integers: every score is exact in float32, so all summation orders agree.
    h = rng.integers(-2, 3, size=(batch, hidden)).astype(np.float32)
    w = rng.integers(-1, 2, size=(num_items, hidden)).astype(np.float32)
    b = rng.integers(-1, 2, size=(num_items,)).astype(np.float32)
    return h, w, b


@pytest.mark.parametrize("chunk_size", [1, 5, 7, 23, 100])
def test_chunked_equals_unchunked(chunk_size):
    # 23 items: chunk sizes that do not divide I exercise the overlapping last chunk.
    rng = np.random.default_rng(1)
    h, w, b = _model(rng)
    targets = jnp.asarray(rng.integers(0, w.shape[0], size=h.shape[0]))
    want = count_ranks(jnp.asarray(h @ w.T + b), targets)
    got = count_ranks_chunked(jnp.asarray(h), jnp.asarray(w), jnp.asarray(b), targets, chunk_size)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert (want[1] > 0).any(), "the test should contain ties"


def test_chunked_bias_shapes_and_jit():
    rng = np.random.default_rng(2)
    h, w, b = _model(rng)
    targets = jnp.asarray(rng.integers(0, w.shape[0], size=h.shape[0]))
    fn = jax.jit(count_ranks_chunked, static_argnames="chunk_size")
    a = fn(jnp.asarray(h), jnp.asarray(w), jnp.asarray(b[:, None]), targets, chunk_size=6)
    want = count_ranks(jnp.asarray(h @ w.T + b), targets)
    np.testing.assert_array_equal(a[0], want[0])
    no_bias = count_ranks_chunked(jnp.asarray(h), jnp.asarray(w), None, targets, 6)
    np.testing.assert_array_equal(no_bias[0], count_ranks(jnp.asarray(h @ w.T), targets)[0])


def test_chunked_random_float_scores_match_brute_force():
    # Generic float scores (no ties): the target is never counted against itself.
    rng = np.random.default_rng(3)
    h = rng.normal(size=(8, 16)).astype(np.float32)
    w = rng.normal(size=(101, 16)).astype(np.float32)
    b = rng.normal(size=(101,)).astype(np.float32)
    targets = rng.integers(0, 101, size=8)
    n_gt, n_eq = count_ranks_chunked(
        jnp.asarray(h), jnp.asarray(w), jnp.asarray(b), jnp.asarray(targets), 32
    )
    want = np_ranks(h.astype(np.float64) @ w.T.astype(np.float64) + b, targets, "standard")
    np.testing.assert_array_equal(ranks_from_counts(n_gt, n_eq, "standard"), want)


# ----------------------------------------------------------------------------- metric sums


def test_cutoff_boundary_rank_equal_to_k_counts():
    ranks = jnp.array([5, 6, 1, 20, 21])
    mask = jnp.ones(5, bool)
    sums = metric_sums(ranks, mask, cutoffs=(5, 20))
    assert float(sums["recall@5"]) == 2.0  # ranks 5 and 1, not 6
    assert float(sums["recall@20"]) == 4.0  # 21 is out
    np.testing.assert_allclose(float(sums["mrr@5"]), 1 / 5 + 1, rtol=1e-6)
    np.testing.assert_allclose(float(sums["ndcg@5"]), 1 / np.log2(6) + 1, rtol=1e-6)
    assert int(sums["count"]) == 5


@pytest.mark.parametrize("mode", TIE_MODES)
def test_metrics_match_numpy_and_exclude_masked_rows(mode):
    rng = np.random.default_rng(4)
    scores = _tied_scores(rng, batch=40, num_items=60, levels=12)
    targets = rng.integers(0, 60, size=40)
    mask = rng.random(40) < 0.7
    cutoffs = (1, 5, 10, 20)

    ranks = ranks_from_counts(*count_ranks(jnp.asarray(scores), jnp.asarray(targets)), mode)
    total = None
    for lo in range(0, 40, 16):  # three batches, the last one short
        sl = slice(lo, lo + 16)
        total = accumulate(total, metric_sums(ranks[sl], jnp.asarray(mask[sl]), cutoffs))
    got = finalize(total)

    want = np_metrics(np_ranks(scores, targets, mode), mask, cutoffs)
    assert got["n"] == mask.sum()
    assert set(got) == set(want) | {"n"}
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, err_msg=name)


def test_masked_rows_do_not_count_even_when_hits():
    ranks = jnp.array([1, 1, 50])
    sums = metric_sums(ranks, jnp.array([False, True, True]), cutoffs=(20,))
    got = finalize(accumulate(None, sums))
    assert got == {"recall@20": 0.5, "mrr@20": 0.5, "ndcg@20": 0.5, "n": 2}


def test_finalize_without_events_and_bad_cutoffs_raise():
    empty = accumulate(None, metric_sums(jnp.array([1]), jnp.array([False])))
    with pytest.raises(ValueError, match="count = 0"):
        finalize(empty)
    with pytest.raises(ValueError, match="cutoffs"):
        metric_sums(jnp.array([1]), jnp.array([True]), cutoffs=(0,))
