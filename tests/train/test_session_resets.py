"""Pitfalls 1, 2 and 9 of the third-party reimplementations: the hidden state must be reset
exactly when a row starts a new session (not a step late, not on every step), in training and in
evaluation, and the end of an epoch must not drop sessions."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gru_jax.data import SessionLog, SessionParallelIterator
from gru_jax.losses import make_loss
from gru_jax.models import GRU4Rec
from gru_jax.optim import adagrad_momentum
from gru_jax.train.functional import ModelSpec
from gru_jax.train.step import StepData, TrainState, make_train_step

LENGTHS = [3, 2, 5, 2, 4, 3, 2]


def _log(n_items=10, seed=0):
    rng = np.random.default_rng(seed)
    items = rng.integers(0, n_items, sum(LENGTHS))
    return SessionLog(items, np.concatenate([[0], np.cumsum(LENGTHS)]))


def _alone(model, prefix):
    """The model's state after the items of `prefix`, from a zero state (one row)."""
    carry = model.initial_carry(1)
    for item in prefix:
        carry, _ = model.step(carry, model.input_rows(jnp.array([item])))
    return np.asarray(carry[0][0])


def test_training_carry_equals_each_session_run_alone():
    log = _log()
    sessions = [
        log.items[log.offsets[s] : log.offsets[s + 1]].tolist() for s in range(len(LENGTHS))
    ]
    model = GRU4Rec(10, (8,), rngs=nnx.Rngs(0))
    spec, params = ModelSpec.split(model)
    tx = adagrad_momentum(1e-30)  # the weights stay put; only the carry is under test
    run = jax.jit(
        make_train_step(
            spec, tx, make_loss("cross-entropy"), logq=0.0, sample_alpha=0.5, dropout_seed=0
        )
    )
    batch_size = 2
    state = TrainState(params, tx.init(params), model.initial_carry(batch_size), jnp.int32(0))
    iterator = SessionParallelIterator(log, batch_size, steps=1)
    prefixes: list[list[int]] = [[] for _ in range(batch_size)]
    seen_rows = 0
    for batch in iterator.epoch(0):
        negatives = np.zeros((1, 3), np.int32)
        state, _ = run(state, StepData(*batch[:4], negatives), jnp.ones(10))
        for r in range(batch_size):
            if not batch.mask[0, r]:
                continue
            seen_rows += 1
            if batch.resets[0, r]:
                prefixes[r] = []
            prefixes[r].append(int(batch.inputs[0, r]))
            # The tracked prefix must be a real session prefix: a reset on every step or a late
            # reset would make it something else.
            assert any(s[: len(prefixes[r])] == prefixes[r] for s in sessions)
            np.testing.assert_allclose(state.carry[0][r], _alone(model, prefixes[r]), atol=1e-5)
    # Every (input, target) pair of every session was trained on: nothing dropped at the end.
    assert seen_rows == sum(n - 1 for n in LENGTHS)
    assert max(len(p) for p in prefixes) >= 1
