"""Truncated backpropagation through the T steps of a dispatch (config key ``bptt``), against a
transcription written here: a plain reset-after GRU in jnp run over the T steps with the session
resets, the sampled softmax cross-entropy from its formula, autodiff of the mean loss with
respect to the *whole* tables, and one plain SGD update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gru_jax.losses import make_loss
from gru_jax.models import GRU4Rec
from gru_jax.optim import with_dense_gradients
from gru_jax.train.functional import ModelSpec
from gru_jax.train.step import StepData, TrainState, make_train_step

N_ITEMS, HIDDEN, LR = 10, 4, 0.5
# T = 3 steps of B = 3 rows; row 1 starts a new session at t = 2, row 2 is masked at t = 2.
INPUTS = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]], np.int32)
TARGETS = np.array([[3, 4, 5], [6, 7, 8], [9, 0, 1]], np.int32)
RESETS = np.array([[True, True, True], [False, False, False], [False, True, False]])
MASK = np.array([[True, True, True], [True, True, True], [True, True, False]])
NEGATIVES = np.array([[9, 2], [1, 0], [4, 6]], np.int32)


def _sig(a):
    return 1 / (1 + jnp.exp(-a))


def reference_loss(p):
    h = jnp.zeros((3, HIDDEN))
    c = p["cells"][0]
    losses = []
    for t in range(3):
        h = jnp.where(RESETS[t][:, None], 0.0, h)
        gi = p["item_matrix"][INPUTS[t]] @ c["kernel_i"] + c["bias_i"]
        gh = h @ c["kernel_h"] + c["bias_h"]
        r = _sig(gi[:, :HIDDEN] + gh[:, :HIDDEN])
        z = _sig(gi[:, HIDDEN : 2 * HIDDEN] + gh[:, HIDDEN : 2 * HIDDEN])
        n = jnp.tanh(gi[:, 2 * HIDDEN :] + r * gh[:, 2 * HIDDEN :])
        h = (1 - z) * n + z * h
        cands = np.concatenate([TARGETS[t], NEGATIVES[t]])
        s = h @ p["item_matrix"][cands].T + p["item_bias"][cands]
        valid = np.concatenate([MASK[t], [True, True]])[None, :] & MASK[t][:, None]
        e = jnp.where(valid, jnp.exp(s - s.max()), 0.0)
        p_target = jnp.diagonal(e[:, :3]) / jnp.maximum(e.sum(1), 1e-30)
        losses.append(jnp.sum(jnp.where(MASK[t], -jnp.log(p_target + 1e-24), 0.0)) / 3)
    return jnp.mean(jnp.stack(losses))


def _run(bptt, steps=3):
    model = GRU4Rec(N_ITEMS, (HIDDEN,), constrained_embedding=True, rngs=nnx.Rngs(5))
    spec, params = ModelSpec.split(model)
    tx = with_dense_gradients(optax.sgd(LR))
    run = jax.jit(make_train_step(spec, tx, make_loss("cross-entropy"), logq=0.0,
                                  sample_alpha=0.5, dropout_seed=0, bptt=bptt))  # fmt: skip
    state = TrainState(params, tx.init(params), model.initial_carry(3), jnp.zeros((), jnp.int32))
    data = StepData(*(jnp.asarray(a[:steps]) for a in (INPUTS, TARGETS, RESETS, MASK, NEGATIVES)))
    new_state, losses = run(state, data, jnp.ones(N_ITEMS))
    return params, new_state, losses


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_bptt_update_is_sgd_on_the_gradient_through_all_steps():
    params, state, losses = _run(bptt=True)
    grads = jax.grad(reference_loss)(params)
    want = jax.tree.map(lambda p, g: p - LR * g, params, grads)

    assert int(state.step) == 3 and losses.shape == (3,)
    assert float(jnp.mean(losses)) == pytest.approx(float(reference_loss(params)), rel=1e-5)
    for got, expected in zip(_leaves(state.params), _leaves(want), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_bptt_differs_from_one_step_updates_but_agrees_for_one_step():
    _, three_bptt, _ = _run(bptt=True)
    _, three_steps, _ = _run(bptt=False)
    _, one_bptt, _ = _run(bptt=True, steps=1)
    _, one_step, _ = _run(bptt=False, steps=1)

    differ = [
        not np.allclose(a, b)
        for a, b in zip(_leaves(three_bptt.params), _leaves(three_steps.params))
    ]
    assert any(differ)
    for a, b in zip(_leaves(one_bptt.params), _leaves(one_step.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
