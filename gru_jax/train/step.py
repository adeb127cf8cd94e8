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

With ``bptt=True`` (config key ``bptt``) the T mini-batches of a dispatch are instead one update
through time: the same gathers and losses for all T steps, gradients of their mean through the
carried state back to the dispatch's first step, one optimizer update per dispatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gru_jax.losses import build_log_q, check_row_offset
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
    bptt: bool = False,
) -> Callable[[TrainState, StepData, jax.Array], tuple[TrainState, jax.Array]]:
    """Returns ``run(state, data, supports) -> (state, losses (T,))``, not yet jitted.

    ``supports`` (N,) are the training-event counts per item (for the logQ correction).
    ``axis_name``: when set, ``run`` is the per-device body of a ``pmap`` (or ``shard_map``) over
    that axis, each device holding B_local = B / devices rows of the step: the targets and masks
    are gathered, the loss is each device's share of the global loss and the gradients are
    summed, so every device applies the single-device update (see `gru_jax.train.parallel`).
    Dropout keys also fold in the device index, so masks differ from a single-device run.
    ``bptt``: truncated backpropagation through time: the T mini-batches of a dispatch are one
    update, whose loss is the mean of their T losses and whose gradients flow through the
    carried state from the dispatch's first step to its last (truncated there). False is
    GRU4Rec's own training: an update per mini-batch, gradients through that step only.
    """
    n_items = spec.n_items
    base_key = jax.random.key(dropout_seed)
    if axis_name is not None:
        check_row_offset(loss_fn, getattr(getattr(loss_fn, "func", loss_fn), "__name__", "?"))

    def update(supports, state: TrainState, chunk) -> tuple[TrainState, jax.Array]:
        """One optimizer update from K consecutive mini-batches, arrays (K, ...)."""
        inputs, targets, resets, mask, negatives = chunk
        num = inputs.shape[0]
        tables, dense = split_tables(state.params)
        keys = jax.vmap(lambda t: jax.random.fold_in(base_key, state.step + t))(jnp.arange(num))
        loss_kw = {}
        all_targets, all_mask = targets, mask
        if axis_name is not None:
            # This device holds rows [offset, offset + B_local) of the step; every row is scored
            # against all B targets of the step (in-batch negatives) plus the shared negatives.
            shard = jax.lax.axis_index(axis_name)
            all_targets = jax.lax.all_gather(targets, axis_name, axis=1, tiled=True)
            all_mask = jax.lax.all_gather(mask, axis_name, axis=1, tiled=True)
            loss_kw = {"row_offset": shard * targets.shape[1]}
            keys = jax.vmap(lambda k: jax.random.fold_in(k, shard))(keys)  # per-device masks
        candidates = jnp.concatenate([all_targets, negatives], axis=1)  # (K, B+n)
        rows_in = tables[spec.input_table][inputs]
        rows_out = tables["item_matrix"][candidates]
        bias_out = tables["item_bias"][candidates]
        log_q = None
        if logq:
            log_q = jax.vmap(lambda t, n: build_log_q(supports, t, n, sample_alpha))(
                all_targets, negatives
            )

        def objective(dense, rows_in, rows_out, bias_out):
            model = spec.build({**tables, **dense})

            def forward(carry, xs):
                rows_in, rows_out, bias_out, resets, all_mask, log_q, key = xs
                carry = reset_carry(carry, resets)
                new_carry, hidden = model.step(carry, rows_in, dropout_key=key)
                scores = model.score(hidden, rows_out, bias_out)
                return new_carry, loss_fn(scores, all_mask, log_q=log_q, **loss_kw)

            xs = (rows_in, rows_out, bias_out, resets, all_mask, log_q, keys)
            if num == 1:  # GRU4Rec's step: no loop, the carry enters as data
                new_carry, loss = forward(state.carry, jax.tree.map(lambda x: x[0], xs))
                losses = loss[None]
            else:
                new_carry, losses = jax.lax.scan(forward, state.carry, xs)
            return jnp.mean(losses), (new_carry, losses)

        (_, (new_carry, losses)), grads = jax.value_and_grad(objective, (0, 1, 2, 3), has_aux=True)(
            dense, rows_in, rows_out, bias_out
        )
        g_dense, g_in, g_out, g_bias = grads
        # Rows of masked slots are padded out (index N): their state must not move at all.
        in_idx = jnp.where(mask, inputs, n_items)
        out_idx = jnp.concatenate([jnp.where(all_mask, all_targets, n_items), negatives], axis=1)
        if axis_name is not None:
            # Each device's loss is its rows' share of the global loss (divided by the global B),
            # so sums over devices give the single-device loss and gradients exactly.
            losses, g_dense, g_out, g_bias = jax.lax.psum(
                (losses, g_dense, g_out, g_bias), axis_name
            )
            in_idx = jax.lax.all_gather(in_idx, axis_name, axis=1, tiled=True)
            g_in = jax.lax.all_gather(g_in, axis_name, axis=1, tiled=True)

        def flat(x):  # the K mini-batches' rows as one list of rows (repeats are summed)
            return x.reshape(-1, *x.shape[2:])

        in_idx, g_in, out_idx, g_out, g_bias = map(flat, (in_idx, g_in, out_idx, g_out, g_bias))
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

        def apply(_):
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            return apply_updates(state.params, updates), opt_state

        def skip(_):
            return state.params, state.opt_state

        params, opt_state = jax.lax.cond(jnp.any(all_mask), apply, skip, None)
        new_carry = jax.lax.stop_gradient(new_carry)
        return TrainState(params, opt_state, new_carry, state.step + num), losses

    def run(state: TrainState, data: StepData, supports: jax.Array):
        xs = (data.inputs, data.targets, data.resets, data.mask, data.negatives)
        if bptt:
            return update(supports, state, xs)

        def one_step(state, batch):
            state, losses = update(supports, state, jax.tree.map(lambda x: x[None], batch))
            return state, losses[0]

        return jax.lax.scan(one_step, state, xs)

    return run
