"""Tests for gru_jax.losses against a NumPy transcription of GRU4Rec's shrinking-batch losses."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gru_jax import losses
from gru_jax.losses import LOSSES, bpr_max, build_log_q, cross_entropy, make_loss, top1_max

# ----------------------------------------------------------------------------- NumPy reference
# The original shrinks the batch: O is (M, M+n) over the active rows only, its diagonal holds the
# targets, and the summed loss is divided by the fixed batch size B.


def _shrink(scores, row_mask, log_q=None):
    act = np.flatnonzero(row_mask)
    b = len(row_mask)
    cols = np.concatenate([act, np.arange(b, scores.shape[1])])
    o = np.asarray(scores, np.float64)[np.ix_(act, cols)]
    lq = None if log_q is None else np.asarray(log_q, np.float64)[cols]
    return o, lq


def _np_softmax_neg(x):
    hm = 1.0 - np.eye(*x.shape)
    x = x * hm
    e = np.exp(x - x.max(axis=1, keepdims=True)) * hm
    return e / e.sum(axis=1, keepdims=True)


def _np_elu(x, alpha):
    return np.where(x > 0, x, alpha * (np.exp(x) - 1)) if alpha > 0 else x


def np_xe(scores, row_mask, log_q=None, logq=0.0):
    o, lq = _shrink(scores, row_mask, log_q)
    if logq:
        o = o - logq * lq
    x = np.exp(o - o.max(axis=1, keepdims=True))
    x = x / x.sum(axis=1, keepdims=True)
    return -np.sum(np.log(np.diag(x) + 1e-24)) / len(row_mask)


def np_bpr_max(scores, row_mask, bpreg=1.0, elu_param=0.5, log_q=None, logq=0.0):
    o, lq = _shrink(scores, row_mask, log_q)
    if logq:
        o = o - logq * lq
    o = _np_elu(o, elu_param)
    s = _np_softmax_neg(o)
    t = np.diag(o)[:, None]
    per_row = -np.log(np.sum(1 / (1 + np.exp(-(t - o))) * s, axis=1) + 1e-24)
    per_row += bpreg * np.sum(o**2 * s, axis=1)
    return per_row.sum() / len(row_mask)


def np_top1_max(scores, row_mask, elu_param=0.0):
    o, _ = _shrink(scores, row_mask)
    o = _np_elu(o, elu_param)
    s = _np_softmax_neg(o)
    t = np.diag(o)[:, None]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    return np.sum(s * (sig(o - t) + sig(o**2))) / len(row_mask)


def _case(seed=0, b=6, n=5, scale=2.0):
    rng = np.random.default_rng(seed)
    scores = (rng.normal(size=(b, b + n)) * scale).astype(np.float32)
    row_mask = np.array([1, 1, 0, 1, 0, 1][:b], bool)
    log_q = np.log(rng.integers(1, 50, size=b + n)).astype(np.float32)
    return scores, row_mask, log_q


# ----------------------------------------------------------------------------- against NumPy


@pytest.mark.parametrize("logq", [0.0, 1.0, 0.5])
def test_xe_matches_numpy(logq):
    scores, row_mask, log_q = _case(1)
    got = cross_entropy(jnp.asarray(scores), jnp.asarray(row_mask), log_q=log_q, logq=logq)
    np.testing.assert_allclose(got, np_xe(scores, row_mask, log_q, logq), rtol=1e-5)


@pytest.mark.parametrize(
    "bpreg,elu_param,logq", [(1.0, 0.5, 0.0), (1.95, 1.0, 0.0), (0.3, 0.0, 0.0), (1.0, 0.5, 1.0)]
)
def test_bpr_max_matches_numpy(bpreg, elu_param, logq):
    scores, row_mask, log_q = _case(2)
    got = bpr_max(
        jnp.asarray(scores),
        jnp.asarray(row_mask),
        log_q=log_q,
        logq=logq,
        bpreg=bpreg,
        elu_param=elu_param,
    )
    want = np_bpr_max(scores, row_mask, bpreg, elu_param, log_q, logq)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("elu", [0.0, 1.0])
def test_top1_max_matches_numpy(elu):
    scores, row_mask, _ = _case(3)
    got = top1_max(jnp.asarray(scores), jnp.asarray(row_mask), final_elu=elu)
    np.testing.assert_allclose(got, np_top1_max(scores, row_mask, elu), rtol=1e-5)


def test_top1_max_from_the_config_keys_has_a_linear_output_as_theano():
    # The trainer binds every config hyperparameter a loss takes; elu_param (0.5 by default)
    # is BPR-max's, and Theano's top1-max output is linear unless final_act says otherwise.
    scores, row_mask, _ = _case(3)
    fn = make_loss("top1-max", strict=False, bpreg=1.0, elu_param=0.5, logq=0.0)
    got = fn(jnp.asarray(scores), jnp.asarray(row_mask))
    np.testing.assert_allclose(got, np_top1_max(scores, row_mask, 0.0), rtol=1e-5)


def test_all_rows_active_and_no_samples():
    scores, _, _ = _case(4, b=5, n=0)
    mask = np.ones(5, bool)
    np.testing.assert_allclose(cross_entropy(scores, mask), np_xe(scores, mask), rtol=1e-5)
    np.testing.assert_allclose(bpr_max(scores, mask), np_bpr_max(scores, mask), rtol=1e-5)


# ----------------------------------------------------------------------------- hand-computed


def test_bpr_max_hand_computed():
    # B = 2, n = 1, linear activation, bpreg = 0.5. Row 0: target 1.0, negatives 0.0 and 2.0.
    scores = jnp.array([[1.0, 0.0, 2.0], [0.5, 1.0, -1.0]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    # Row 0: s = softmax(0, 2) = (1, e²)/(1+e²).
    s0 = [1 / (1 + math.e**2), math.e**2 / (1 + math.e**2)]
    l0 = -math.log(s0[0] * sig(1.0) + s0[1] * sig(-1.0) + 1e-24) + 0.5 * (s0[1] * 4.0)
    # Row 1: target 1.0; negatives 0.5 and -1.0.
    s1 = [
        math.exp(0.5) / (math.exp(0.5) + math.exp(-1)),
        math.exp(-1) / (math.exp(0.5) + math.exp(-1)),
    ]
    l1 = -math.log(s1[0] * sig(0.5) + s1[1] * sig(2.0)) + 0.5 * (s1[0] * 0.25 + s1[1] * 1.0)
    got = bpr_max(scores, jnp.array([True, True]), bpreg=0.5, elu_param=0.0)
    np.testing.assert_allclose(got, (l0 + l1) / 2, rtol=1e-6)

    # Row 1 inactive: its target column disappears from row 0, which keeps only the sample 2.0;
    # the sum is still divided by B = 2.
    l0_shrunk = -math.log(sig(-1.0)) + 0.5 * 4.0
    got = bpr_max(scores, jnp.array([True, False]), bpreg=0.5, elu_param=0.0)
    np.testing.assert_allclose(got, l0_shrunk / 2, rtol=1e-6)


def test_xe_softmax_once_value_and_gradient():
    # A single softmax: ℓ = −log p_target and ∂L/∂scores = (p − onehot)/B. Softmax applied twice
    # (a common reimplementation bug) gives a different value and a much smaller gradient.
    scores = jnp.array([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]])
    mask = jnp.array([True, True])
    p = np.exp(np.asarray(scores)) / np.exp(np.asarray(scores)).sum(1, keepdims=True)
    want = -(np.log(p[0, 0]) + np.log(p[1, 1])) / 2
    np.testing.assert_allclose(cross_entropy(scores, mask), want, rtol=1e-6)

    grad = jax.grad(cross_entropy)(scores, mask)
    np.testing.assert_allclose(grad, (p - np.eye(2, 3)) / 2, atol=1e-6)


def test_equal_scores_closed_forms():
    b, n, c = 4, 3, 0.7
    scores = jnp.full((b, b + n), c)
    mask = jnp.array([True, True, True, False])
    valid_cols = 3 + n  # one target column removed with the inactive row
    np.testing.assert_allclose(cross_entropy(scores, mask), 3 * math.log(valid_cols) / b, rtol=1e-6)
    np.testing.assert_allclose(
        bpr_max(scores, mask, bpreg=2.0, elu_param=0.5),
        3 * (math.log(2.0) + 2.0 * c**2) / b,
        rtol=1e-6,
    )
    sig = 1 / (1 + math.exp(-(c**2)))
    np.testing.assert_allclose(top1_max(scores, mask), 3 * (0.5 + sig) / b, rtol=1e-6)


def test_negative_equal_to_target_is_not_removed():
    # The sampled column duplicates row 0's target score (same item drawn): it stays a negative.
    scores = jnp.array([[1.0, 1.0]])
    got = bpr_max(scores, jnp.array([True]), bpreg=0.0, elu_param=0.0)
    # Negatives of row 0: only the sampled column (B = 1): −log σ(0) = log 2.
    np.testing.assert_allclose(got, math.log(2.0), rtol=1e-6)


def test_build_log_q():
    supp = jnp.array([1.0, 4.0, 9.0, 16.0])
    got = build_log_q(supp, jnp.array([1, 3]), jnp.array([2, 2, 0]), 0.5)
    want = np.log([4.0, 16.0, 3.0, 3.0, 1.0])
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ----------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("name", ["cross-entropy", "bpr-max", "top1-max"])
@pytest.mark.parametrize("scale", [1e2, 1e4])
def test_huge_scores_finite(name, scale):
    scores, row_mask, log_q = _case(5)
    scores = scores * scale  # exp() would overflow float32 without max-subtraction
    fn = make_loss(name)
    value, grad = jax.value_and_grad(fn)(jnp.asarray(scores), jnp.asarray(row_mask))
    assert np.isfinite(value) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", ["cross-entropy", "bpr-max", "top1-max"])
def test_inactive_rows_and_columns_are_ignored(name):
    scores, row_mask, log_q = _case(6)
    fn = make_loss(name, strict=False, logq=1.0)
    garbage = scores.copy()
    garbage[~row_mask, :] = np.nan  # inactive rows
    garbage[:, :6][:, ~row_mask] = np.inf  # their target columns
    log_q_garbage = log_q.copy()
    log_q_garbage[:6][~row_mask] = -np.inf  # log 0 for padded targets

    clean, grad_clean = jax.value_and_grad(fn)(jnp.asarray(scores), row_mask, log_q=log_q)
    dirty, grad_dirty = jax.value_and_grad(fn)(jnp.asarray(garbage), row_mask, log_q=log_q_garbage)
    np.testing.assert_allclose(dirty, clean, rtol=1e-6)
    np.testing.assert_allclose(grad_dirty, grad_clean, rtol=1e-5, atol=1e-8)
    assert np.all(np.asarray(grad_clean)[~row_mask] == 0)
    assert np.all(np.asarray(grad_clean)[:, :6][:, ~row_mask] == 0)


def test_single_active_row_without_negatives_is_finite():
    # The original stops training here (n_sample = 0 and one row left); we must not emit NaN.
    scores = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    mask = jnp.array([True, False])
    for name in LOSSES.names():
        value, grad = jax.value_and_grad(LOSSES.get(name))(scores, mask)
        assert np.isfinite(value) and np.all(np.isfinite(grad)), name


# ----------------------------------------------------------------------------- API


def test_registry_and_make_loss():
    assert {"cross-entropy", "bpr-max", "top1-max"} <= set(LOSSES.names())
    with pytest.raises(TypeError, match="bpreg"):
        make_loss("cross-entropy", bpreg=1.0)
    fn = make_loss("cross-entropy", strict=False, bpreg=1.0, logq=0.0)
    scores, row_mask, _ = _case(7)
    np.testing.assert_allclose(fn(scores, row_mask), np_xe(scores, row_mask), rtol=1e-5)
    with pytest.raises(KeyError, match="bpr-max"):
        make_loss("bpr")


def test_logq_without_log_q_raises():
    scores, row_mask, _ = _case(8)
    with pytest.raises(ValueError, match="log_q"):
        cross_entropy(scores, row_mask, logq=1.0)


def test_jit_with_traced_hyperparameters():
    scores, row_mask, log_q = _case(9)
    fn = jax.jit(lambda s, m, q, a, r: bpr_max(s, m, log_q=q, logq=1.0, elu_param=a, bpreg=r))
    for alpha in (0.0, 0.5):
        np.testing.assert_allclose(
            fn(scores, row_mask, log_q, alpha, 1.5),
            np_bpr_max(scores, row_mask, 1.5, alpha, log_q, 1.0),
            rtol=1e-5,
        )
    assert losses.LOG_EPS == 1e-24


def test_pmap_needs_a_loss_that_takes_row_offset():
    from gru_jax.losses import check_row_offset

    def plain(scores, row_mask, *, log_q=None):
        return scores.sum()

    def open_ended(scores, row_mask, *, log_q=None, **hyper):
        return scores.sum()

    check_row_offset(open_ended, "open")  # **kwargs takes row_offset too
    check_row_offset(LOSSES.get("bpr-max"), "bpr-max")
    with pytest.raises(ValueError, match="loss 'plain' takes no row_offset"):
        check_row_offset(plain, "plain")
