"""Tests for gru_jax.optim against a NumPy transcription of GRU4Rec's indexed Adagrad-momentum."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gru_jax import optim
from gru_jax.optim import (
    OPTIMIZERS,
    RowSparse,
    adagrad_momentum,
    apply_updates,
    coalesce,
    densify,
    make_optimizer,
)
from gru_jax.registry import UnknownNameError

LR, MOM, EPS = 0.1, 0.5, 1e-6

# ----------------------------------------------------------------------------- NumPy reference


def np_step(theta, acc, vel, g, lr=LR, mom=MOM, eps=EPS):
    """A ← A + g²;  v ← μ·v − η·g/sqrt(A + eps);  θ ← θ + v  (float64)."""
    acc = acc + g**2
    vel = mom * vel - lr * g / np.sqrt(acc + eps)
    return theta + vel, acc, vel


def np_indexed_step(theta, acc, vel, rows, g_rows, **kw):
    """The original's indexed update: sum repeated rows, then step only the touched rows."""
    theta, acc, vel = theta.copy(), acc.copy(), vel.copy()
    g = {}
    for r, gr in zip(rows, g_rows):
        g[r] = g.get(r, 0.0) + gr
    for r, gr in g.items():
        theta[r], acc[r], vel[r] = np_step(theta[r], acc[r], vel[r], gr, **kw)
    return theta, acc, vel


def _table():
    return np.arange(12, dtype=np.float64).reshape(4, 3) / 10 - 0.4


# ----------------------------------------------------------------------------- row-sparse


def test_hand_made_row_sparse_two_steps():
    # Given a 4-row table and gradients on rows [2, 0, 2] (row 2 twice), then on rows [1, 2, 1]
    theta0 = _table()
    g1 = np.array([[1.0, -2.0, 0.5], [0.3, 0.0, -1.0], [2.0, 1.0, 0.5]])
    g2 = np.array([[-0.5, 0.25, 1.0], [1.5, -1.0, 0.0], [0.5, 0.5, 0.5]])
    tx = adagrad_momentum(LR, momentum=MOM, eps=EPS)
    params = {"table": jnp.asarray(theta0, jnp.float32)}
    state = tx.init(params)

    # When two steps are taken
    u1, state = tx.update({"table": RowSparse(jnp.array([2, 0, 2]), jnp.asarray(g1))}, state)
    params = apply_updates(params, u1)
    after1 = (np.asarray(params["table"]), np.asarray(state.acc["table"]))
    u2, state = tx.update({"table": RowSparse(jnp.array([1, 2, 1]), jnp.asarray(g2))}, state)
    params = apply_updates(params, u2)

    # Then every row matches the hand-written formula, row by row
    z = np.zeros((4, 3))
    # step 1: row 2 gets g1[0] + g1[2], row 0 gets g1[1]; rows 1 and 3 untouched
    a2 = (g1[0] + g1[2]) ** 2
    v2 = -LR * (g1[0] + g1[2]) / np.sqrt(a2 + EPS)
    a0 = g1[1] ** 2
    v0 = -LR * g1[1] / np.sqrt(a0 + EPS)
    np.testing.assert_allclose(after1[0][2], theta0[2] + v2, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(after1[0][0], theta0[0] + v0, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(after1[0][[1, 3]], theta0[[1, 3]].astype(np.float32))
    np.testing.assert_allclose(after1[1][2], a2, rtol=1e-6)
    # step 2: row 1 gets g2[0] + g2[2] (fresh), row 2 gets g2[1] on top of its step-1 state
    a1 = (g2[0] + g2[2]) ** 2
    v1 = -LR * (g2[0] + g2[2]) / np.sqrt(a1 + EPS)
    a2b = a2 + g2[1] ** 2
    v2b = MOM * v2 - LR * g2[1] / np.sqrt(a2b + EPS)
    want_theta = np.stack([theta0[0] + v0, theta0[1] + v1, theta0[2] + v2 + v2b, theta0[3]])
    want_acc = np.stack([a0, a1, a2b, z[3]])
    want_vel = np.stack([v0, v1, v2b, z[3]])
    np.testing.assert_allclose(params["table"], want_theta, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(state.acc["table"], want_acc, rtol=1e-6)
    np.testing.assert_allclose(state.velocity["table"], want_vel, rtol=1e-6, atol=1e-7)
    # row 0 was absent in step 2: value, accumulator and velocity are kept exactly (no decay)
    np.testing.assert_array_equal(params["table"][0], after1[0][0])
    np.testing.assert_array_equal(state.acc["table"][0], after1[1][0])
    np.testing.assert_array_equal(params["table"][3], np.float32(theta0[3]))
    np.testing.assert_array_equal(state.acc["table"][3], 0.0)
    np.testing.assert_array_equal(state.velocity["table"][3], 0.0)


def test_row_sparse_matches_numpy_over_many_steps():
    rng = np.random.default_rng(0)
    n, d, k = 7, 2, 5
    theta = rng.normal(size=(n, d))
    acc, vel = np.zeros((n, d)), np.zeros((n, d))
    tx = adagrad_momentum(LR, momentum=MOM)
    params = jnp.asarray(theta, jnp.float32)
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: _apply(tx, p, s, g))
    for _ in range(6):
        rows = rng.integers(0, n, size=k)
        g_rows = rng.normal(size=(k, d))
        theta, acc, vel = np_indexed_step(theta, acc, vel, rows, g_rows)
        params, state = step(params, state, RowSparse(jnp.asarray(rows), jnp.asarray(g_rows)))
    np.testing.assert_allclose(params, theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.acc, acc, rtol=1e-5)
    np.testing.assert_allclose(state.velocity, vel, rtol=1e-5, atol=1e-6)


def _apply(tx, params, state, grads):
    updates, state = tx.update(grads, state, params)
    return apply_updates(params, updates), state


def test_duplicate_indices_are_summed():
    # Given the same gradient split over repeated indices, and given coalesced
    split = RowSparse(jnp.array([1, 1, 3, 1]), jnp.array([[1.0], [2.0], [5.0], [-0.5]]))
    summed = RowSparse(jnp.array([1, 3]), jnp.array([[2.5], [5.0]]))
    tx = adagrad_momentum(LR, momentum=MOM)
    params = jnp.zeros((4, 1))

    # When one step is taken with each
    p_split, s_split = _apply(tx, params, tx.init(params), split)
    p_sum, s_sum = _apply(tx, params, tx.init(params), summed)

    # Then the results agree, and coalesce has sorted unique rows padded with the sentinel N
    np.testing.assert_allclose(p_split, p_sum, rtol=1e-6)
    np.testing.assert_allclose(s_split.acc, s_sum.acc, rtol=1e-6)
    c = coalesce(split, 4)
    np.testing.assert_array_equal(c.indices, [1, 3, 4, 4])
    np.testing.assert_allclose(c.values, [[2.5], [5.0], [0.0], [0.0]])


def test_global_norm_clipping_before_the_row_sparse_update_matches_numpy():
    """on_row_values(clip_by_global_norm) + adagrad_momentum: the norm is the dense gradient's
    (repeated rows summed first), and only the touched rows move."""
    max_norm = 1.0
    table = _table()
    dense = np.array([0.3, -0.2])
    rows, g_rows = [2, 0, 2, 4], np.array([[1.0, 2, 0], [0, 1, 1], [0.5, 0, -1], [9, 9, 9]])
    tx = optax.chain(optim.on_row_values(optax.clip_by_global_norm(max_norm)),
                     adagrad_momentum(LR, momentum=MOM))  # fmt: skip
    params = {"t": jnp.asarray(table, jnp.float32), "w": jnp.zeros(2)}
    grads = {"t": RowSparse(jnp.array(rows), jnp.asarray(g_rows, jnp.float32)),
             "w": jnp.asarray(dense, jnp.float32)}  # fmt: skip
    got, _ = _apply(tx, params, tx.init(params), grads)

    # NumPy: dense table gradient (row 4 is out of range: padding), one global norm, scale.
    g_table = np.zeros_like(table)
    for r, gr in zip(rows[:3], g_rows[:3]):
        g_table[r] += gr
    scale = min(1.0, max_norm / np.sqrt((g_table**2).sum() + (dense**2).sum()))
    assert scale < 0.5  # the clipping is really exercised
    zeros = np.zeros_like(table)
    want_t, _, _ = np_indexed_step(table, zeros, zeros, rows[:3], g_rows[:3] * scale)
    want_w, _, _ = np_step(np.zeros(2), np.zeros(2), np.zeros(2), dense * scale)
    np.testing.assert_allclose(got["t"], want_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["w"], want_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got["t"])[[1, 3]], table[[1, 3]].astype(np.float32))


def test_plain_optax_before_the_row_sparse_update_is_refused():
    # optax.scale also scales a NamedTuple's integer indices: rows [2, 3] became [1, 1] silently.
    params = {"t": jnp.zeros((6, 2))}
    grads = {"t": RowSparse(jnp.array([2, 3]), jnp.ones((2, 2)))}
    tx = optax.chain(optax.scale(0.5), adagrad_momentum(LR))
    with pytest.raises(TypeError, match="changed its row indices.*on_row_values"):
        tx.update(grads, tx.init(params), params)
    with pytest.raises(ValueError, match="stateless"):
        optim.on_row_values(optax.adam(0.1)).init(params)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coalesce_matches_numpy_on_random_repeats_and_padding(seed):
    # Skewed repeats (as sampled negatives have), padding (N), and out-of-range indices.
    rng = np.random.default_rng(seed)
    n_rows, size = 50, 300
    idx = rng.zipf(1.5, size) % (n_rows + 10) - rng.integers(0, 2, size) * 3
    values = rng.normal(size=(size, 2, 3)).astype(np.float32)
    c = coalesce(RowSparse(jnp.asarray(idx, jnp.int32), jnp.asarray(values)), n_rows)

    valid = (idx >= 0) & (idx < n_rows)
    expected_idx = np.unique(idx[valid])
    expected = np.zeros((len(expected_idx), 2, 3), np.float64)
    np.add.at(expected, np.searchsorted(expected_idx, idx[valid]), values[valid])
    k = len(expected_idx)
    np.testing.assert_array_equal(c.indices[:k], expected_idx)
    np.testing.assert_array_equal(c.indices[k:], n_rows)
    np.testing.assert_allclose(c.values[:k], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(c.values[k:], 0.0)


def test_out_of_range_indices_are_padding():
    # Indices outside [0, N), negative ones included, are ignored (not wrapped around).
    tx = adagrad_momentum(LR, momentum=MOM)
    params = jnp.ones((3, 2))
    grads = RowSparse(jnp.array([0, -1, 3, 7]), jnp.ones((4, 2)))
    new, state = _apply(tx, params, tx.init(params), grads)
    np.testing.assert_array_equal(new[1:], 1.0)
    np.testing.assert_array_equal(state.acc[1:], 0.0)
    assert float(new[0, 0]) < 1.0
    np.testing.assert_array_equal(densify(grads, (3, 2)), [[1, 1], [0, 0], [0, 0]])


def test_densify_sums_repeats():
    g = RowSparse(jnp.array([2, 0, 2]), jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    np.testing.assert_array_equal(densify(g, (4, 2)), [[3, 4], [0, 0], [6, 8], [0, 0]])


# ----------------------------------------------------------------------------- dense


@pytest.mark.parametrize("momentum", [0.0, MOM])
def test_dense_leaf_matches_numpy(momentum):
    rng = np.random.default_rng(1)
    theta = rng.normal(size=(3, 4))
    acc, vel = np.zeros_like(theta), np.zeros_like(theta)
    tx = adagrad_momentum(LR, momentum=momentum)
    params = {"w": jnp.asarray(theta, jnp.float32)}
    state = tx.init(params)
    for t in range(4):
        # a zero gradient on the last step: momentum still moves a dense parameter
        g = rng.normal(size=theta.shape) if t < 3 else np.zeros_like(theta)
        theta, acc, vel = np_step(theta, acc, vel, g, mom=momentum)
        params, state = _apply(tx, params, state, {"w": jnp.asarray(g, jnp.float32)})
    np.testing.assert_allclose(params["w"], theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.acc["w"], acc, rtol=1e-5)
    assert (state.velocity is None) == (momentum == 0)


def test_first_step_from_zero_accumulator():
    # A₀ = 0 (not optax's 0.1): the first step is η·g/sqrt(g² + eps), about η·sign(g).
    g = jnp.array([3.0, -0.01, 0.0])
    tx = adagrad_momentum(LR, momentum=MOM, eps=EPS)
    updates, _ = tx.update(g, tx.init(jnp.zeros(3)))
    want = -LR * np.array([3.0, -0.01, 0.0]) / np.sqrt(np.array([9.0, 1e-4, 0.0]) + EPS)
    np.testing.assert_allclose(updates, want, rtol=1e-6)


def test_mixed_tree_and_learning_rate_schedule():
    # Dense and row-sparse leaves in one tree; a schedule is evaluated at the step count.
    tx = adagrad_momentum(optax.constant_schedule(LR), momentum=0.0)
    params = {"table": jnp.zeros((3, 2)), "bias": jnp.zeros((2,))}
    grads = {"table": RowSparse(jnp.array([1]), jnp.ones((1, 2))), "bias": jnp.ones((2,))}
    new, state = _apply(tx, params, tx.init(params), grads)
    step = -LR / np.sqrt(1 + EPS)
    np.testing.assert_allclose(new["bias"], [step, step], rtol=1e-6)
    np.testing.assert_allclose(new["table"], [[0, 0], [step, step], [0, 0]], rtol=1e-6)
    assert int(state.count) == 1


def test_jit_compiles_once_with_fixed_shapes():
    tx = adagrad_momentum(LR, momentum=MOM)
    params = {"table": jnp.zeros((10, 3)), "w": jnp.zeros((3,))}
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(params, state, idx, rows, gw):
        traces.append(1)
        return _apply(tx, params, state, {"table": RowSparse(idx, rows), "w": gw})

    for i in range(3):
        idx = jnp.array([i, i, 9 - i, 2], jnp.int32)
        params, state = step(params, state, idx, jnp.ones((4, 3)), jnp.ones((3,)))
    assert len(traces) == 1
    assert np.isfinite(np.asarray(params["table"])).all()


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_unknown_name():
    assert set(OPTIMIZERS.names()) >= {"adagrad_momentum", "adam", "adamw", "adagrad", "sgd"}
    assert optim.DEFAULT_OPTIMIZER == "adagrad_momentum"
    with pytest.raises(UnknownNameError, match="adagrad_momentum"):
        make_optimizer("rmsprop-typo", learning_rate=0.1)


def test_invalid_hyperparameters():
    with pytest.raises(ValueError, match="momentum"):
        adagrad_momentum(0.1, momentum=-0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        adagrad_momentum(0.0)


@pytest.mark.parametrize("name", ["adagrad_momentum", "adam", "adamw", "adagrad", "sgd"])
def test_every_optimizer_takes_row_sparse_and_descends(name):
    # Minimise ½‖θ‖² on a table whose gradient arrives row-sparse (rows 0 and 2 only).
    tx = make_optimizer(name, learning_rate=0.05, momentum=0.3)
    params = {"table": jnp.ones((4, 2)), "w": jnp.ones((2,))}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        idx = jnp.array([0, 2])
        grads = {"table": RowSparse(idx, params["table"][idx]), "w": params["w"]}
        return _apply(tx, params, state, grads)

    for _ in range(20):
        params, state = step(params, state)
    table = np.asarray(params["table"])
    assert np.all(np.abs(table[[0, 2]]) < 0.9) and np.all(np.abs(params["w"]) < 0.9)
    if name == "adagrad_momentum":  # untouched rows keep their value exactly
        np.testing.assert_array_equal(table[[1, 3]], 1.0)


def test_plain_optax_matches_dense_gradient():
    tx = make_optimizer("adam", learning_rate=0.1)
    params = jnp.arange(6.0).reshape(3, 2)
    g = RowSparse(jnp.array([2, 0, 2]), jnp.ones((3, 2)))
    u_sparse, _ = tx.update(g, tx.init(params), params)
    u_dense, _ = optax.adam(0.1).update(densify(g, (3, 2)), tx.init(params), params)
    np.testing.assert_allclose(u_sparse, u_dense)
    with pytest.raises(ValueError, match="params"):
        tx.update(g, tx.init(params))


@pytest.mark.parametrize("bad", [optax.scale(2), optax.clip(1), optax.scale(-1)])
def test_integer_preserving_transformations_that_move_rows_are_caught(bad):
    """scale(2) doubles the int32 indices and clip(1) clips them; both stay integers, so only
    a probe update shows that the update would land on other rows."""
    params = {"item_matrix": jnp.zeros((30, 3)), "w": jnp.zeros((2,))}
    with pytest.raises(ValueError, match="moved the rows of the 'item_matrix' gradient"):
        optim.check_keeps_rows(optax.chain(bad, adagrad_momentum(LR)), params, ["item_matrix"])
    for name in OPTIMIZERS.names():
        optim.check_keeps_rows(make_optimizer(name, learning_rate=LR), params, ["item_matrix"])
    wrapped = optax.chain(optim.on_row_values(optax.clip(1)), adagrad_momentum(LR))
    optim.check_keeps_rows(wrapped, params, ["item_matrix"])
    with pytest.raises(ValueError, match="requires the current value of parameters"):
        decay = optax.chain(
            optim.on_row_values(optax.add_decayed_weights(0.1)), adagrad_momentum(LR)
        )
        optim.check_keeps_rows(decay, params, ["item_matrix"])
