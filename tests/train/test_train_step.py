"""One GRU4Rec update against a transcription written here: a plain GRU in jnp, the losses from
GRU4Rec's formulas, gradients of the *whole* tables by autodiff, and the original's indexed
Adagrad-momentum in NumPy applied to exactly the rows the step touched."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gru_jax.losses import make_loss
from gru_jax.models import GRU4Rec
from gru_jax.optim import adagrad_momentum
from gru_jax.train.functional import ModelSpec
from gru_jax.train.step import StepData, TrainState, make_train_step

N_ITEMS, HIDDEN, LR, EPS = 12, 6, 0.1, 1e-6


def _sig(a):
    return 1 / (1 + jnp.exp(-a))


def reference_loss(p, mode, inputs, targets, negatives, mask, loss, supports, hyper):
    """GRU4Rec's step from its equations (reset-after GRU as the PyTorch port, zero carry)."""
    h = jnp.zeros((len(inputs), HIDDEN))
    x = (p["item_matrix"] if mode == "shared" else p["input_table"])[inputs]
    c = p["cells"][0]
    gi = x @ c["kernel_i"] + c["bias_i"]
    gh = h @ c["kernel_h"] + c["bias_h"]
    H = HIDDEN
    r = _sig(gi[:, :H] + gh[:, :H])
    z = _sig(gi[:, H : 2 * H] + gh[:, H : 2 * H])
    n = jnp.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
    h = (1 - z) * n + z * h
    cands = jnp.concatenate([targets, negatives])
    s = h @ p["item_matrix"][cands].T + p["item_bias"][cands]
    batch = len(inputs)
    valid = np.concatenate([mask, np.ones(len(negatives), bool)])[None, :] & mask[:, None]
    eye = np.eye(batch, s.shape[1], dtype=bool)
    if loss == "cross-entropy":
        logq = jnp.log(jnp.concatenate([supports[targets], supports[negatives] ** hyper["alpha"]]))
        s = s - hyper["logq"] * logq
        e = jnp.where(valid, jnp.exp(s - s.max()), 0)
        p_target = jnp.sum(jnp.where(eye, e, 0), 1) / jnp.maximum(e.sum(1), 1e-30)
        per_row = -jnp.log(p_target + 1e-24)
    else:  # bpr-max over ELU(1)
        s = jnp.where(s > 0, s, jnp.exp(s) - 1)
        neg = valid & ~eye
        e = jnp.where(neg, jnp.exp(s - s.max()), 0)
        soft = e / jnp.maximum(e.sum(1, keepdims=True), 1e-30)  # masked rows: 0/0
        target = jnp.sum(jnp.where(eye, s, 0), 1, keepdims=True)
        per_row = -jnp.log(jnp.sum(soft * _sig(target - s), 1) + 1e-24) + hyper["bpreg"] * jnp.sum(
            soft * s**2, 1
        )
    return jnp.sum(jnp.where(mask, per_row, 0)) / batch


def numpy_adagrad(params, grads, acc, vel, touched, momentum):
    """A += g², v = μv − η g/sqrt(A+eps), θ += v, only on touched rows of item tables."""
    out, out_acc, out_vel = {}, {}, {}
    for name, g in grads.items():
        p, a, v = np.array(params[name]), np.array(acc[name]), np.array(vel[name])
        rows = touched.get(name, slice(None))
        a[rows] += g[rows] ** 2
        v[rows] = momentum * v[rows] - LR * g[rows] / np.sqrt(a[rows] + EPS)
        p[rows] += v[rows]
        out[name], out_acc[name], out_vel[name] = p, a, v
    return out, out_acc, out_vel


def _flat(tree):
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_leaves_with_path(tree)
    }


@pytest.mark.parametrize(
    "mode, loss",
    [("shared", "cross-entropy"), ("shared", "bpr-max"), ("embedding", "cross-entropy")],
)
def test_two_updates_match_transcription(mode, loss):
    hyper = {"alpha": 0.5, "logq": 1.0 if loss == "cross-entropy" else 0.0, "bpreg": 0.7}
    model = GRU4Rec(
        N_ITEMS, (HIDDEN,), embedding=5, constrained_embedding=mode == "shared", rngs=nnx.Rngs(3)
    )
    spec, params = ModelSpec.split(model)
    momentum = 0.4
    tx = adagrad_momentum(LR, momentum)
    loss_fn = make_loss(loss, strict=False, logq=hyper["logq"], bpreg=hyper["bpreg"], elu_param=1.0)
    run = jax.jit(
        make_train_step(spec, tx, loss_fn, logq=hyper["logq"], sample_alpha=0.5, dropout_seed=0)
    )
    supports = jnp.arange(1.0, N_ITEMS + 1)
    # Step 1 touches items {0..6}; step 2 touches {7..11} only, with the middle row masked:
    # rows of step 1 must not move in step 2 (no momentum on untouched rows).
    steps = [
        (np.array([0, 1, 2]), np.array([3, 4, 5]), np.array([True, True, True]), [6, 6, 0]),
        (np.array([7, 11, 8]), np.array([9, 11, 10]), np.array([True, False, True]), [11, 7, 9]),
    ]
    state = TrainState(params, tx.init(params), model.initial_carry(3), jnp.int32(0))
    ref = _flat(params)
    ref_acc = {k: np.zeros_like(v) for k, v in ref.items()}
    ref_vel = {k: np.zeros_like(v) for k, v in ref.items()}
    for inputs, targets, mask, negatives in steps:
        negatives = np.array(negatives)
        data = StepData(
            inputs[None], targets[None], np.ones((1, 3), bool), mask[None], negatives[None]
        )
        state, losses = run(state, data, supports)

        nested = jax.tree.map(jnp.asarray, _unflat(ref))
        args = (mode, inputs, targets, negatives, mask, loss, supports, hyper)
        want_loss, grads = jax.value_and_grad(reference_loss)(nested, *args)
        np.testing.assert_allclose(losses[0], want_loss, rtol=1e-5)
        in_table = "item_matrix" if mode == "shared" else "input_table"
        out_rows = np.concatenate([targets[mask], negatives])
        touched = {"item_matrix": np.unique(out_rows), "item_bias": np.unique(out_rows)}
        in_rows = inputs[mask]
        touched[in_table] = np.unique(np.concatenate([touched.get(in_table, []), in_rows]))
        touched = {k: v.astype(int) for k, v in touched.items()}
        ref, ref_acc, ref_vel = numpy_adagrad(
            ref, _flat(grads), ref_acc, ref_vel, touched, momentum
        )
        got = _flat(state.params)
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _unflat(flat):
    out = {}
    for key, value in flat.items():
        parts = key.split("/")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(int(part) if part.isdigit() else part, {})
        node[parts[-1]] = value
    return out


def test_fully_masked_step_changes_nothing():
    model = GRU4Rec(N_ITEMS, (HIDDEN,), rngs=nnx.Rngs(0))
    spec, params = ModelSpec.split(model)
    tx = adagrad_momentum(LR, 0.5)
    run = jax.jit(
        make_train_step(
            spec, tx, make_loss("cross-entropy"), logq=0.0, sample_alpha=0.5, dropout_seed=0
        )
    )
    state = TrainState(params, tx.init(params), model.initial_carry(2), jnp.int32(0))
    live = StepData(
        np.array([[1, 2]]),
        np.array([[3, 4]]),
        np.ones((1, 2), bool),
        np.ones((1, 2), bool),
        np.array([[5, 6]]),
    )
    state, _ = run(state, live, jnp.ones(N_ITEMS))  # momentum is now non-zero
    before = jax.tree.map(np.asarray, state)
    dead = live._replace(mask=np.zeros((1, 2), bool))
    after, losses = run(state, dead, jnp.ones(N_ITEMS))
    assert float(losses[0]) == 0.0
    for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(before.opt_state), jax.tree.leaves(after.opt_state)):
        if np.asarray(a).ndim:  # the step counter of the optimizer may advance
            np.testing.assert_array_equal(a, b)
