r"""The jitted training step: `lax.scan` over T session-parallel mini-batches.

Each of the T mini-batches is one GRU4Rec update, exactly as the original:

1. rows whose session starts now get a zero carry;
2. the rows of the item tables that the step needs are gathered: inputs (B), then the targets
   (B) and the n shared negatives, drawn before any scoring;
3. forward one step, score the B × (B + n) candidates, loss (masked rows count as absent);
4. gradients with respect to the dense weights and to the *gathered rows* (never a whole
   table), the latter passed to the optimizer as `RowSparse` (rows of masked slots are padded
   out with the index N, so they are not touched);
5. optimizer update; the new carry is kept as data (no gradient flows into the next step).

A mini-batch whose rows are all masked (padding at the end of an epoch) changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gru_jax.losses import build_log_q
from gru_jax.optim import RowSparse, apply_updates
from gru_jax.train.functional import ModelSpec, split_tables


class TrainState(NamedTuple):
    params: dict  # pure dict of all parameters, item tables included
    opt_state: Any
    carry: tuple  # per-layer hidden states (B, H_l)
    step: jax.Array  # int32, mini-batches taken so far (seeds the dropout keys)


class StepData(NamedTuple):
    """T mini-batches: items (T, B) and flags (T, B) from the iterator, negatives (T, n)."""

    inputs: jax.Array
    targets: jax.Array
    resets: jax.Array
    mask: jax.Array
    negatives: jax.Array


def reset_carry(carry: tuple, resets: jax.Array) -> tuple:
    """Zeroes the carry of rows whose session starts at this step."""
    return jax.tree.map(lambda c: jnp.where(resets[:, None], jnp.zeros_like(c), c), carry)


def make_train_step(
    spec: ModelSpec,
    tx: optax.GradientTransformation,
    loss_fn: Callable[..., jax.Array],
    *,
    logq: float,
    sample_alpha: float,
    dropout_seed: int,
    axis_name: str | None = None,
) -> Callable[[TrainState, StepData, jax.Array], tuple[TrainState, jax.Array]]:
    """Returns ``run(state, data, supports) -> (state, losses (T,))``, not yet jitted.

    ``supports`` (N,) are the training-event counts per item (for the logQ correction).
    ``axis_name``: when set (pmap), gradients are averaged over that axis — see
    `gru_jax.train.parallel`.
    """
    n_items = spec.n_items
    base_key = jax.random.key(dropout_seed)

    def one_step(supports, state: TrainState, batch) -> tuple[TrainState, jax.Array]:
        inputs, targets, resets, mask, negatives = batch
        carry = reset_carry(state.carry, resets)
        tables, dense = split_tables(state.params)
        candidates = jnp.concatenate([targets, negatives])
        rows_in = tables[spec.input_table][inputs]
        rows_out = tables["item_matrix"][candidates]
        bias_out = tables["item_bias"][candidates]
        log_q = build_log_q(supports, targets, negatives, sample_alpha) if logq else None
        key = jax.random.fold_in(base_key, state.step)

        def objective(dense, rows_in, rows_out, bias_out):
            model = spec.build({**tables, **dense})
            new_carry, hidden = model.step(carry, rows_in, dropout_key=key)
            scores = model.score(hidden, rows_out, bias_out)
            return loss_fn(scores, mask, log_q=log_q), new_carry

        (loss, new_carry), grads = jax.value_and_grad(objective, (0, 1, 2, 3), has_aux=True)(
            dense, rows_in, rows_out, bias_out
        )
        g_dense, g_in, g_out, g_bias = grads
        # Rows of masked slots are padded out (index N): their state must not move at all.
        in_idx = jnp.where(mask, inputs, n_items)
        out_idx = jnp.concatenate([jnp.where(mask, targets, n_items), negatives])
        table_grads = {
            "item_matrix": RowSparse(out_idx, g_out),
            "item_bias": RowSparse(out_idx, g_bias),
        }
        if spec.input_table == "item_matrix":  # shared embedding: one table, both uses
            table_grads["item_matrix"] = RowSparse(
                jnp.concatenate([in_idx, out_idx]), jnp.concatenate([g_in, g_out])
            )
        else:
            table_grads[spec.input_table] = RowSparse(in_idx, g_in)
        grads = {**table_grads, **g_dense}
        if axis_name is not None:
            grads, loss = _average_over(axis_name, grads, loss)

        def update(_):
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            return apply_updates(state.params, updates), opt_state

        def skip(_):
            return state.params, state.opt_state

        active = jnp.any(mask)
        if axis_name is not None:
            active = jax.lax.pmax(active.astype(jnp.int32), axis_name) > 0
        params, opt_state = jax.lax.cond(active, update, skip, None)
        new_carry = jax.lax.stop_gradient(new_carry)
        return TrainState(params, opt_state, new_carry, state.step + 1), loss

    def run(state: TrainState, data: StepData, supports: jax.Array):
        xs = (data.inputs, data.targets, data.resets, data.mask, data.negatives)
        return jax.lax.scan(functools.partial(one_step, supports), state, xs)

    return run


def _average_over(axis_name: str, grads: dict, loss: jax.Array):
    """Data-parallel mean: dense gradients by pmean, row-sparse ones by gathering every
    device's rows (values / number of devices), so the sum over devices is the mean."""
    n = jax.lax.psum(1, axis_name)

    def average(g):
        if isinstance(g, RowSparse):
            idx = jax.lax.all_gather(g.indices, axis_name, tiled=True)
            val = jax.lax.all_gather(g.values, axis_name, tiled=True)
            return RowSparse(idx, val / n)
        return jax.lax.pmean(g, axis_name)

    grads = jax.tree.map(average, grads, is_leaf=lambda x: isinstance(x, RowSparse))
    return grads, jax.lax.pmean(loss, axis_name)
