r"""Optimizers: GRU4Rec's Adagrad with momentum and row-sparse updates, plus plain optax ones.

Follows `hidasib/GRU4Rec_PyTorch_Official:gru4rec_pytorch.py` (``IndexedAdagradM``) and the
Theano `hidasib/GRU4Rec:gru4rec.py` (``adagrad`` with momentum, ``T.inc_subtensor`` updates).

Per parameter θ with gradient g (A₀ = 0, v₀ = 0, learning rate η, momentum μ, eps inside the
square root)::

    A ← A + g²
    ĝ = g / sqrt(A + eps)
    v ← μ·v − η·ĝ          update u = v        (μ = 0: no velocity is stored, u = −η·ĝ)
    θ ← θ + u

Item tables (input embedding, output matrix, output bias) get row-sparse gradients: a
`RowSparse` holding only the K rows a step touched. For such a leaf only those rows have their
accumulator, velocity and value updated; every other row keeps all three exactly, and in
particular its velocity does NOT decay (that is the original's indexed update, and what makes a
step's cost independent of the catalogue size). Duplicate row indices are summed first, as the
PyTorch port's ``coalesce`` does.

Row-sparse updates come back as `RowSparse` too, so apply them with `apply_updates` here, not
``optax.apply_updates``. Row indices outside [0, N) mark padding: they are ignored everywhere,
which lets a fixed-shape step pad its gathered rows (padding with an in-range row and a zero
gradient would instead decay that row's velocity).

The plain optax optimizers in `OPTIMIZERS` (adam, adamw, adagrad, sgd) densify row-sparse
gradients first: dense semantics (every row's state moves each step) and a full-table cost.
A plain optax transformation chained before `adagrad_momentum` must not see a `RowSparse` leaf
(it would transform the row indices too): `on_row_values` runs a stateless one (clipping,
scaling) on the rows' values, `with_dense_gradients` any one on dense gradients.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gru_jax.registry import Registry

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- row-sparse leaves


class RowSparse(NamedTuple):
    """A gradient (or update) for K rows of an (N, D...) table; a pytree like any NamedTuple.

    Attributes:
      indices: (K,) int32 row indices; may repeat (repeats are summed); entries outside [0, N)
        are padding and ignored.
      values: (K, D...) the rows' values.
    """

    indices: jax.Array
    values: jax.Array


def is_row_sparse(x: Any) -> bool:
    """True for a `RowSparse` leaf (use as ``is_leaf`` in tree maps)."""
    return isinstance(x, RowSparse)


def _clean_indices(indices: jax.Array, num_rows: int) -> jax.Array:
    """int32 indices with everything outside [0, num_rows) mapped to the sentinel num_rows.

    JAX indexing would wrap negative indices like NumPy; mapping them to num_rows makes every
    out-of-range index padding, dropped by ``mode="drop"`` scatters.
    """
    indices = jnp.asarray(indices)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        # A NamedTuple's indices are a pytree leaf: optax.scale(0.5) halves them too.
        raise TypeError(
            f"RowSparse indices have dtype {indices.dtype}: a plain optax transformation ran on "
            "a row-sparse gradient and changed its row indices. Wrap it in "
            "gru_jax.optim.on_row_values (stateless ones: scaling, clipping) or "
            "gru_jax.optim.with_dense_gradients"
        )
    indices = indices.astype(jnp.int32)
    return jnp.where((indices >= 0) & (indices < num_rows), indices, num_rows)


def coalesce(grad: RowSparse, num_rows: int) -> RowSparse:
    """Sums the values of repeated indices, keeping the static shape (K,).

    Returns sorted unique indices, padded at the end with the sentinel ``num_rows`` (out of
    range), and per index the sum of its values; padding rows have zero values.
    """
    idx = _clean_indices(grad.indices, num_rows)
    size = idx.shape[0]
    # One key-only sort, then each index's rank among the distinct ones by binary search.
    # XLA:CPU sorts (key, position) pairs, as jnp.unique(return_inverse=True) does, ~5x slower
    # than keys alone; this way the function takes 0.20 against 0.38 ms at K = 2,208, and a
    # RetailRocket training step 13% less (benchmarks/results/README.md).
    sorted_idx = jnp.sort(idx)
    is_first = jnp.concatenate([jnp.ones((1,), bool), sorted_idx[1:] != sorted_idx[:-1]])
    rank_of_sorted = jnp.cumsum(is_first.astype(jnp.int32)) - 1
    rank = rank_of_sorted[jnp.searchsorted(sorted_idx, idx, method="scan_unrolled")]
    uniq = jnp.full((size,), num_rows, jnp.int32).at[rank_of_sorted].set(sorted_idx)
    values = jax.ops.segment_sum(grad.values, rank, num_segments=size)
    keep = (uniq < num_rows).reshape((size,) + (1,) * (values.ndim - 1))
    return RowSparse(uniq, jnp.where(keep, values, jnp.zeros_like(values)))


def densify(grad: RowSparse, shape: tuple[int, ...]) -> jax.Array:
    """The dense (N, D...) array of ``grad``: zeros with its rows scatter-added (repeats summed)."""
    idx = _clean_indices(grad.indices, shape[0])
    return jnp.zeros(shape, grad.values.dtype).at[idx].add(grad.values, mode="drop")


def densify_tree(tree: Any, like: Any) -> Any:
    """Replaces each `RowSparse` leaf of ``tree`` by a dense array shaped like ``like``'s leaf."""
    treedef = jax.tree.structure(like)
    leaves = treedef.flatten_up_to(tree)
    shapes = [jnp.shape(x) for x in treedef.flatten_up_to(like)]
    return treedef.unflatten(
        [densify(g, s) if is_row_sparse(g) else g for g, s in zip(leaves, shapes)]
    )


def apply_updates(params: Any, updates: Any) -> Any:
    """``optax.apply_updates`` that also takes `RowSparse` updates (scatter-added to their rows).

    Dense leaves: θ + u, cast back to θ's dtype. RowSparse leaves: θ.at[indices].add(values), with
    out-of-range (padding) indices dropped; repeated indices would be summed.
    """
    treedef = jax.tree.structure(params)
    out = []
    for p, u in zip(treedef.flatten_up_to(params), treedef.flatten_up_to(updates)):
        if u is None:
            out.append(p)
        elif is_row_sparse(u):
            idx = _clean_indices(u.indices, p.shape[0])
            out.append(p.at[idx].add(u.values.astype(p.dtype), mode="drop"))
        else:
            out.append(jnp.asarray(p + u).astype(jnp.asarray(p).dtype))
    return treedef.unflatten(out)


# ----------------------------------------------------------------------------- adagrad + momentum


class AdagradMomentumState(NamedTuple):
    """State of `adagrad_momentum`: step count, Σ g² and velocity (None when momentum = 0)."""

    count: jax.Array  # int32 scalar, steps taken (for learning-rate schedules)
    acc: Any  # like params, float32 at least
    velocity: Any  # like params, or None when momentum == 0


def _state_dtype(dtype: Any) -> Any:
    return jnp.promote_types(dtype, jnp.float32)


def adagrad_momentum(
    learning_rate: optax.ScalarOrSchedule, momentum: float = 0.0, eps: float = 1e-6
) -> optax.GradientTransformation:
    r"""GRU4Rec's Adagrad with momentum, with row-sparse semantics for `RowSparse` gradients.

    A ← A + g²;   v ← μ·v − η·g/sqrt(A + eps);   u = v   (A₀ = v₀ = 0; μ = 0: u = −η·g/sqrt(A+eps))

    Dense leaves update every element each step (a zero gradient still lets momentum move the
    parameter, as in the original). `RowSparse` leaves are coalesced (repeats summed) and only
    their rows' A, v and θ change; the update comes back as a `RowSparse` of the unique rows, to
    be applied with `apply_updates`. Accumulator and velocity are kept in at least float32.

    Args:
      learning_rate: η, a float or an optax schedule of the step count.
      momentum: μ ≥ 0 (a Python float: with 0 no velocity is stored, as in the original).
      eps: added to the accumulator inside the square root.
    """
    momentum = float(momentum)
    if not callable(learning_rate) and float(learning_rate) <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if momentum < 0:
        raise ValueError(f"momentum must be >= 0, got {momentum}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")

    def init_fn(params):
        def zeros(p):
            return jnp.zeros(jnp.shape(p), _state_dtype(jnp.result_type(p)))

        acc = jax.tree.map(zeros, params)
        velocity = jax.tree.map(zeros, params) if momentum else None
        return AdagradMomentumState(jnp.zeros([], jnp.int32), acc, velocity)

    def update_fn(updates, state, params=None):
        del params
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        treedef = jax.tree.structure(state.acc)
        grads = treedef.flatten_up_to(updates)
        accs = treedef.flatten_up_to(state.acc)
        vels = treedef.flatten_up_to(state.velocity) if momentum else [None] * len(accs)

        out = [_update_leaf(g, a, v, lr, momentum, eps) for g, a, v in zip(grads, accs, vels)]
        new_updates, new_accs, new_vels = zip(*out) if out else ((), (), ())
        new_state = AdagradMomentumState(
            optax.safe_int32_increment(state.count),
            treedef.unflatten(new_accs),
            treedef.unflatten(new_vels) if momentum else None,
        )
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def _step(g, acc, vel, lr, momentum, eps):
    """One dense Adagrad-momentum step on matching arrays; returns (update, acc, velocity)."""
    acc = acc + g * g
    step = lr * g / jnp.sqrt(acc + eps)
    if not momentum:
        return -step, acc, None
    vel = momentum * vel - step
    return vel, acc, vel


def _update_leaf(g, acc, vel, lr, momentum, eps):
    """`_step` on a dense leaf, or on the gathered rows of a `RowSparse` leaf."""
    if not is_row_sparse(g):
        out_dtype = jnp.result_type(g)
        u, acc, vel = _step(g.astype(acc.dtype), acc, vel, lr, momentum, eps)
        return u.astype(out_dtype), acc, vel

    out_dtype = g.values.dtype
    g = coalesce(g, acc.shape[0])
    idx, rows = g.indices, g.values.astype(acc.dtype)

    def gather(x):
        # Padding rows (index N) read zeros: with a zero gradient their update is exactly 0.
        return None if x is None else x.at[idx].get(mode="fill", fill_value=0)

    u, acc_rows, vel_rows = _step(rows, gather(acc), gather(vel), lr, momentum, eps)
    acc = acc.at[idx].set(acc_rows, mode="drop")
    if vel is not None:
        vel = vel.at[idx].set(vel_rows, mode="drop")
    return RowSparse(idx, u.astype(out_dtype)), acc, vel


# ----------------------------------------------------------------------------- plain optax


def with_dense_gradients(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """Wraps ``tx`` so `RowSparse` gradient leaves are densified (needs ``params`` in update).

    Slower than `adagrad_momentum`'s row-sparse path (full-table work each step) and with dense
    semantics: every row's optimizer state moves each step, including rows with zero gradient.
    """

    def update_fn(updates, state, params=None, **extra):
        if any(is_row_sparse(x) for x in jax.tree.leaves(updates, is_leaf=is_row_sparse)):
            if params is None:
                raise ValueError("RowSparse gradients need params (for the table shapes)")
            updates = densify_tree(updates, params)
        return tx.update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)


def on_row_values(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """Wraps a stateless ``tx`` (scaling, clipping by value or by global norm, a schedule's
    scale) so it sees the values of `RowSparse` gradient leaves and leaves their row indices
    alone; chain it before `adagrad_momentum` to keep the row-sparse update. Needs ``params``
    (for the table sizes) and does not pass them on. A per-leaf statistic sees only the
    gathered rows: ``optax.clip_by_block_rms`` would take the RMS of the touched rows, not of
    the table.

    Each RowSparse leaf is coalesced first (repeated rows summed, padding rows zero), so its
    values are exactly the non-zero rows of the dense gradient: a global norm over them equals
    the dense gradient's. A ``tx`` whose state holds arrays shaped like the parameters (Adam's
    moments) has dense semantics; use `with_dense_gradients` for it.
    """

    def init_fn(params):
        state = tx.init(params)
        if any(jnp.ndim(x) > 0 for x in jax.tree.leaves(state)):
            raise ValueError(
                "on_row_values takes a stateless transformation (its state may hold scalars "
                "only); one with per-parameter state needs with_dense_gradients"
            )
        return state

    def update_fn(updates, state, params=None, **extra):
        treedef = jax.tree.structure(updates, is_leaf=is_row_sparse)
        leaves = treedef.flatten_up_to(updates)
        sparse = [is_row_sparse(g) for g in leaves]
        if any(sparse):
            if params is None:
                raise ValueError("RowSparse gradients need params (for the table shapes)")
            tables = treedef.flatten_up_to(params)
            leaves = [coalesce(g, jnp.shape(p)[0]) if s else g
                      for g, p, s in zip(leaves, tables, sparse)]  # fmt: skip
        values = [g.values if s else g for g, s in zip(leaves, sparse)]
        # No params: a transformation that reads them (weight decay) would pair the tables'
        # N rows with the gathered K; without them it says that it needs them.
        values, state = tx.update(treedef.unflatten(values), state, None, **extra)
        out = [
            RowSparse(g.indices, v) if s else v
            for g, v, s in zip(leaves, treedef.flatten_up_to(values), sparse)
        ]
        return treedef.unflatten(out), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def check_keeps_rows(tx: optax.GradientTransformation, params: dict, tables: Any) -> None:
    """Raises ValueError if ``tx`` moves the rows of a row-sparse gradient.

    A plain optax transformation that sees a `RowSparse` leaf transforms its integer row
    indices too, and an integer result passes every later check: ``optax.scale(2)`` doubles
    them, ``optax.clip(1)`` clips them, and the update lands on other rows. This runs one update
    on a probe (rows 1 and 4 of five-row copies of the ``tables``, zeros elsewhere) and checks
    that every row-sparse update names those two rows.
    """
    probe_rows = jnp.array([1, 4], jnp.int32)
    small, grads = {}, {}
    for key, value in params.items():
        if key in tables:
            small[key] = jnp.zeros((5, *jnp.shape(value)[1:]), jnp.result_type(value))
            grads[key] = RowSparse(
                probe_rows, jnp.ones((2, *jnp.shape(value)[1:]), small[key].dtype)
            )
        else:
            small[key] = value
            grads[key] = jax.tree.map(jnp.zeros_like, value)
    updates, _ = tx.update(grads, tx.init(small), small)
    for key in tables:
        update = updates[key] if key in updates else None
        if is_row_sparse(update):
            rows = np.asarray(update.indices)
            if set(rows[(rows >= 0) & (rows < 5)].tolist()) != {1, 4}:
                raise ValueError(
                    f"the optimizer moved the rows of the {key!r} gradient (rows 1, 4 came back "
                    f"as {rows.tolist()}): a plain optax transformation ran on a RowSparse "
                    "gradient. Wrap it in gru_jax.optim.on_row_values (stateless ones: "
                    "scaling, clipping) or gru_jax.optim.with_dense_gradients"
                )


class OptimizerFactory(Protocol):
    """``factory(learning_rate, momentum=0.0, **hyper) -> optax.GradientTransformation``."""

    def __call__(
        self, learning_rate: optax.ScalarOrSchedule, momentum: float = 0.0, **hyper: Any
    ) -> optax.GradientTransformation: ...


OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
OPTIMIZERS.register("adagrad_momentum", adagrad_momentum)

DEFAULT_OPTIMIZER = "adagrad_momentum"


def _ignore_momentum(name: str, momentum: float) -> None:
    if momentum:
        log.warning("optimizer %r has no momentum; ignoring momentum=%s", name, momentum)


@OPTIMIZERS.register("sgd")
def sgd(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.0, **hyper: Any):
    """``optax.sgd`` (heavy-ball momentum when momentum > 0), on densified gradients."""
    return with_dense_gradients(optax.sgd(learning_rate, momentum=momentum or None, **hyper))


@OPTIMIZERS.register("adagrad")
def adagrad(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.0, **hyper: Any):
    """``optax.adagrad`` (its defaults: initial accumulator 0.1, eps 1e-7 outside the sqrt).

    Not GRU4Rec's optimizer; ``momentum`` is ignored. Densified gradients.
    """
    _ignore_momentum("adagrad", momentum)
    return with_dense_gradients(optax.adagrad(learning_rate, **hyper))


@OPTIMIZERS.register("adam")
def adam(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.0, **hyper: Any):
    """``optax.adam``; ``momentum`` is ignored (set ``b1`` instead). Densified gradients."""
    _ignore_momentum("adam", momentum)
    return with_dense_gradients(optax.adam(learning_rate, **hyper))


@OPTIMIZERS.register("adamw")
def adamw(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.0, **hyper: Any):
    """``optax.adamw``; ``momentum`` is ignored (set ``b1`` instead). Densified gradients."""
    _ignore_momentum("adamw", momentum)
    return with_dense_gradients(optax.adamw(learning_rate, **hyper))


def make_optimizer(name: str = DEFAULT_OPTIMIZER, **hyper: Any) -> optax.GradientTransformation:
    """Looks ``name`` up in `OPTIMIZERS` and calls it with ``hyper`` (learning_rate, momentum, ...).

    Raises:
      UnknownNameError: ``name`` is not registered (the message lists the known names).
    """
    return OPTIMIZERS.get(name)(**hyper)
