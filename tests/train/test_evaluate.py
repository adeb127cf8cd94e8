"""Evaluation against a brute-force NumPy ranking of each test session run alone."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gru_jax.data import SessionLog
from gru_jax.models import GRU4Rec
from gru_jax.train.evaluate import drop_unseen, evaluate
from gru_jax.train.functional import ModelSpec

N_ITEMS = 15


def _brute_force(model, sessions, predict=None, cutoffs=(1, 5, 10, 20), mode="conservative"):
    """Each session from a zero state; rank of the next item among all items by NumPy."""
    sums = {f"{m}@{k}": 0.0 for m in ("recall", "mrr", "ndcg") for k in cutoffs}
    count = 0
    for s, items in enumerate(sessions):
        carry = model.initial_carry(1)
        for j in range(len(items) - 1):
            carry, h = model.step(carry, model.input_rows(jnp.array([items[j]])))
            if predict is not None and not predict[s][j + 1]:
                continue
            scores = np.asarray(model.score_all(h))[0]
            target = items[j + 1]
            others = np.delete(scores, target)
            greater = (others > scores[target]).sum()
            equal = (others == scores[target]).sum()
            rank = {
                "conservative": 1 + greater + equal,
                "standard": 1 + greater,
                "median": 1 + greater + equal / 2,
            }[mode]
            count += 1
            for k in cutoffs:
                hit = rank <= k
                sums[f"recall@{k}"] += hit
                sums[f"mrr@{k}"] += hit / rank
                sums[f"ndcg@{k}"] += hit / np.log2(rank + 1)
    return {k: v / count for k, v in sums.items()}, count


def _model(seed=0):
    return GRU4Rec(N_ITEMS, (8,), rngs=nnx.Rngs(seed))


def _sessions(seed=1, n=9):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, N_ITEMS, rng.integers(2, 7)).tolist() for _ in range(n)]


def _as_log(sessions, predict=None):
    return SessionLog(
        np.concatenate(sessions),
        np.concatenate([[0], np.cumsum([len(s) for s in sessions])]),
        predict=None if predict is None else np.concatenate(predict),
    )


@pytest.mark.parametrize("batch_size", [1, 3, 64])  # 64 > number of test sessions
@pytest.mark.parametrize("mode", ["conservative", "standard"])
def test_matches_brute_force(batch_size, mode):
    model = _model()
    spec, params = ModelSpec.split(model)
    sessions = _sessions()
    want, count = _brute_force(model, sessions, mode=mode)
    got = evaluate(spec, params, _as_log(sessions), batch_size=batch_size, steps=2, tie_mode=mode)
    assert got["n_test_events"] == count
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, err_msg=key)


def test_ties_and_cutoff_boundary_from_biases():
    """W_y = 0 makes every score the item bias: the ranks are then known by hand."""
    model = _model()
    model.item_matrix[...] = jnp.zeros_like(model.item_matrix[...])
    bias = np.arange(N_ITEMS, 0, -1).astype(np.float32)  # item i has rank i + 1
    bias[6] = bias[5]  # items 5 and 6 tie
    model.item_bias[...] = jnp.asarray(bias)
    spec, params = ModelSpec.split(model)
    log = _as_log([[0, 4], [0, 5], [0, 6]])  # targets of rank 5 and the tied pair at 6/7
    results = {
        mode: evaluate(spec, params, log, tie_mode=mode, cutoffs=(4, 5, 6, 7))
        for mode in ("conservative", "standard", "median")
    }
    # Conservative ranks: 5, 7, 7. Standard: 5, 6, 6. Median: 5, 6.5, 6.5.
    assert results["conservative"]["recall@5"] == pytest.approx(1 / 3)  # rank == K counts
    assert results["conservative"]["recall@4"] == 0
    assert results["conservative"]["recall@6"] == pytest.approx(1 / 3)
    assert results["conservative"]["recall@7"] == pytest.approx(1)
    assert results["standard"]["recall@6"] == pytest.approx(1)
    assert results["median"]["recall@6"] == pytest.approx(1 / 3)
    assert results["conservative"]["mrr@7"] == pytest.approx((1 / 5 + 2 / 7) / 3)
    assert results["median"]["mrr@7"] == pytest.approx((1 / 5 + 2 / 6.5) / 3)


def test_unseen_items_are_dropped_before_sessions_are_formed():
    """GRU4Rec's inner join: "a, X, b" becomes "a, b"; a session left with one event goes."""
    model = _model()
    spec, params = ModelSpec.split(model)
    with_unseen = [[1, -1, 2, 3], [4, -1], [5, 6, -1, 7]]
    joined = [[1, 2, 3], [5, 6, 7]]
    want, count = _brute_force(model, joined)
    got = evaluate(spec, params, _as_log(with_unseen), batch_size=2)
    assert got["n_unseen_test_events"] == 3
    assert got["n_dropped_test_sessions"] == 1
    assert got["n_test_events"] == count == 4
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, err_msg=key)


def test_pair_test_sets_predict_only_the_marked_targets():
    model = _model()
    spec, params = ModelSpec.split(model)
    sessions = [[1, 2, 3, 4], [2, 5, 6]]
    predict = [[False, False, False, True], [False, False, True]]
    want, count = _brute_force(model, sessions, predict=predict)
    got = evaluate(spec, params, _as_log(sessions, predict), batch_size=4)
    assert got["n_test_events"] == count == 2
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, err_msg=key)


def test_drop_unseen_keeps_prediction_flags_aligned():
    log = _as_log([[1, -1, 2], [3, 4]], [[False, False, True], [False, True]])
    clean = drop_unseen(log)
    np.testing.assert_array_equal(clean.log.items, [1, 2, 3, 4])
    np.testing.assert_array_equal(clean.log.predict, [False, True, False, True])


@pytest.mark.parametrize("bad", [N_ITEMS, -2])
def test_items_outside_the_catalogue_are_refused_not_clamped(bad):
    """JAX's gathers clamp an out-of-range index to the last row: without the check item N
    would be scored as item N - 1."""
    from gru_jax.data import Dataset
    from gru_jax.train.evaluate import top_k

    model = _model()
    spec, params = ModelSpec.split(model)
    log = _as_log([[1, 2, 3], [4, bad]])
    with pytest.raises(ValueError, match=f"item index {bad} at event 4 .* {N_ITEMS} items"):
        evaluate(spec, params, log)
    with pytest.raises(ValueError, match=f"session: item index {bad} at event 1 "):
        top_k(spec, params, [1, bad], 3)
    items = np.arange(N_ITEMS)
    with pytest.raises(ValueError, match=f"test: item index {bad}"):
        Dataset(_as_log([[1, 2]]), log, None, items)
    with pytest.raises(
        ValueError, match=rf"train: item index -1 .*\(allowed: 0\.\.{N_ITEMS - 1}\)"
    ):
        Dataset(_as_log([[1, -1]]), None, None, items)  # unseen marks only in test splits
    evaluate(spec, params, _as_log([[1, 2, 3], [4, -1, 5]]))  # -1 (unseen) stays allowed


def test_a_log_whose_only_flags_sit_on_session_starts_says_so():
    """An unseen item removed before the flagged target leaves the flag on a session's first
    event, which has nothing before it to predict from (it crashed on an empty sum)."""
    from gru_jax.data import DataError

    spec, params = ModelSpec.split(_model())
    first_only = _as_log([[-1, 5, 7]], predict=[np.array([False, True, False])])
    assert drop_unseen(first_only).log.predict.tolist() == [True, False]  # 5 starts the session
    with pytest.raises(DataError, match="nothing to evaluate"):
        evaluate(spec, params, first_only)
