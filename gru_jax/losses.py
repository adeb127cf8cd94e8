r"""GRU4Rec's ranking losses over one session-parallel step's candidate scores.

Follows `hidasib/GRU4Rec_PyTorch_Official:gru4rec_pytorch.py` (``xe_loss_with_softmax``,
``bpr_max_loss_with_elu``, ``softmax_neg``) and the Theano `hidasib/GRU4Rec:gru4rec.py`
(``top1_max``, final activations, logQ).

Layout of one step (B fixed, n shared sampled negatives)::

    scores    (B, B+n)  score of row i for candidate column j
    row_mask  (B,)      bool, active rows (GRU4Rec shrinks the batch at the end of an epoch;
                        we keep B fixed and mask instead)
    log_q     (B+n,)    optional log P0 of each candidate, for the logQ correction

Column j < B is row j's target, columns B.. are the sampled negatives; row i's own target is
column i. The columns of inactive rows are removed from every row's softmax and sums, exactly as
if the batch had shrunk (column mask = concat(row_mask, ones(n))). Other rows' targets are
negatives; a negative equal to the target is NOT removed (no accidental-hit removal).

The step loss is L = (1/B) Σ_{i active} ℓ_i with the FIXED batch size B (the original divides the
sum over the M active rows by ``batch_size``, not by M).

Data parallelism (`gru_jax.train.parallel`): a device holding the B_local rows
``[row_offset, row_offset + B_local)`` of the step passes its scores (B_local, B+n) against ALL
candidates, the GLOBAL ``row_mask`` (B,) and ``row_offset``. Row i's target is then column
``row_offset + i``, the column mask is still built from the global row mask, and the result is
that shard's share (1/B) Σ_{i local, active} ℓ_i, so the shards' values sum to the global loss.

Notation: r_ij = score after the logQ correction and the final activation; V = valid columns of
row i; s_ij = softmax over the negatives only,
s_ij = exp(r_ij)·[j ∈ V, j ≠ i] / Σ_{k ∈ V, k ≠ i} exp(r_ik).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from gru_jax.registry import Registry

# Added inside every log, as in the original, so a vanishing probability gives a finite loss.
LOG_EPS = 1e-24


class LossFn(Protocol):
    """``loss(scores (B, B+n), row_mask (B,), *, log_q=None, row_offset=None, **hyper) -> scalar``.

    The trainer always passes ``log_q`` (the candidates' log sampling probabilities, for the
    logQ correction), so a loss that does not use it still takes it. ``row_offset`` (data
    parallelism): scores hold only the rows from that global row on; a loss without this
    keyword works on one device only.
    """

    def __call__(
        self,
        scores: jax.Array,
        row_mask: jax.Array,
        *,
        log_q: jax.Array | None = None,
        row_offset: jax.Array | int | None = None,
        **hyper,
    ) -> jax.Array: ...


LOSSES: Registry[LossFn] = Registry("loss")


# ----------------------------------------------------------------------------- helpers


def column_mask(row_mask: jax.Array, num_columns: int) -> jax.Array:
    """(B+n,) bool: the B in-batch target columns follow ``row_mask``, the n sampled are valid."""
    num_sampled = num_columns - row_mask.shape[0]
    if num_sampled < 0:
        raise ValueError(f"scores have {num_columns} columns < batch size {row_mask.shape[0]}")
    return jnp.concatenate([row_mask.astype(bool), jnp.ones((num_sampled,), bool)])


def build_log_q(
    supp: jax.Array, targets: jax.Array, samples: jax.Array, sample_alpha: float
) -> jax.Array:
    r"""log P0 of each candidate column, as the original computes it for the logQ correction.

    log_q = concat( log supp[targets],  log(supp[samples]^alpha) )   shape (B+n,)

    ``supp`` (I,) holds raw training-event counts per item. The original uses them unnormalised,
    with exponent 1 for the in-batch targets (their empirical sampling distribution is the data
    popularity) and ``sample_alpha`` for the sampled columns; a common normaliser would only add a
    constant to all columns and cancel in the softmax, so none is applied. Targets of inactive
    rows may give log 0 = -inf; the losses mask those columns before using them.
    """
    supp = jnp.asarray(supp, jnp.float32)
    in_batch = jnp.log(supp[targets])
    sampled = jnp.log(supp[samples] ** sample_alpha)  # power before log, as in the original
    return jnp.concatenate([in_batch, sampled])


def _elu(x: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """The final activation of the PyTorch port: ELU(alpha) when alpha > 0, else linear."""
    if isinstance(alpha, (int, float)):
        return jax.nn.elu(x, alpha) if alpha > 0 else x
    # Traced alpha: ELU with alpha = 0 would be ReLU, not linear, so select explicitly.
    return jnp.where(alpha > 0, jax.nn.elu(x, alpha), x)


def _prepare(
    scores: jax.Array,
    row_mask: jax.Array,
    log_q: jax.Array | None,
    logq: float | jax.Array,
    row_offset: jax.Array | int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Float32 scores with the logQ shift, the valid mask, the target mask and the rows' mask.

    Shapes: scores (R, B+n) with R = B, or R = B_local rows starting at global row ``row_offset``;
    the masks are (R, B+n), (R, B+n) and (R,). Invalid entries are replaced by 0 so garbage
    (inf/NaN) in padded rows or columns can reach neither the forward value nor the gradient.
    """
    if scores.ndim != 2 or row_mask.ndim != 1:
        raise ValueError(
            f"expected scores (B, B+n) and row_mask (B,), got {scores.shape}, {row_mask.shape}"
        )
    rows, num_columns = scores.shape
    if row_offset is None and rows != row_mask.shape[0]:
        raise ValueError(
            f"expected scores (B, B+n) and row_mask (B,), got {scores.shape}, "
            f"{row_mask.shape}; pass row_offset for a shard of the rows"
        )
    row_mask = row_mask.astype(bool)
    cols = column_mask(row_mask, num_columns)
    if row_offset is None:
        mine = row_mask
        diag = jnp.eye(rows, num_columns, dtype=bool)
    else:
        mine = jax.lax.dynamic_slice_in_dim(row_mask, row_offset, rows)
        diag = jnp.arange(num_columns)[None, :] == (jnp.arange(rows) + row_offset)[:, None]
    valid = mine[:, None] & cols[None, :]
    r = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))

    if isinstance(logq, (int, float)) and logq == 0:
        pass
    elif log_q is None:
        raise ValueError("logq != 0 needs log_q, the (B+n,) log-probabilities of the candidates")
    else:
        r = r - logq * jnp.where(cols, log_q, 0.0)[None, :]
    return jnp.where(valid, r, 0.0), valid, diag, mine


def _safe_max(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Row max over ``mask`` (0 for empty rows), without gradient: it only shifts exponents."""
    m = jnp.max(jnp.where(mask, x, -jnp.inf), axis=1, keepdims=True)
    return jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))


def _masked_softmax(r: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax of each row over ``mask`` (zeros elsewhere; all-zero for an empty row)."""
    m = _safe_max(r, mask)
    e = jnp.where(mask, jnp.exp(jnp.where(mask, r, m) - m), 0.0)
    denom = jnp.sum(e, axis=1, keepdims=True)
    return e / jnp.where(denom > 0, denom, 1.0)


def _diag(r: jax.Array, row_offset: jax.Array | int | None = None) -> jax.Array:
    """(R, 1) target scores r_ii (column ``row_offset + i`` for a shard of the rows)."""
    if row_offset is None:
        return jnp.diagonal(r[:, : r.shape[0]])[:, None]
    return jnp.take_along_axis(r, (jnp.arange(r.shape[0]) + row_offset)[:, None], axis=1)


def _reduce(per_row: jax.Array, mine: jax.Array, batch_size: int) -> jax.Array:
    """(1/B) Σ_{i active} ℓ_i with the fixed (global) batch size B."""
    return jnp.sum(jnp.where(mine, per_row, 0.0)) / batch_size


# ----------------------------------------------------------------------------- losses


@LOSSES.register("cross-entropy")
def cross_entropy(
    scores: jax.Array,
    row_mask: jax.Array,
    *,
    log_q: jax.Array | None = None,
    logq: float | jax.Array = 0.0,
    row_offset: jax.Array | int | None = None,
) -> jax.Array:
    r"""Sampled softmax cross-entropy (GRU4Rec ``cross-entropy``, final activation softmax).

    r_ij = scores_ij − logq·log_q_j;   p_ij = exp(r_ij) / Σ_{k ∈ V} exp(r_ik)
    ℓ_i = −log(p_ii + 1e-24);           L = (1/B) Σ_{i active} ℓ_i

    The softmax is taken once, over the sampled candidates only (targets + shared negatives),
    with max-subtraction. Probability-then-log with +1e-24 (not log-softmax) matches the
    original, including its saturation: when p_ii underflows, ℓ_i = −log(1e-24) ≈ 55.3.
    """
    r, valid, diag, mine = _prepare(scores, row_mask, log_q, logq, row_offset)
    p = _masked_softmax(r, valid)
    p_target = jnp.sum(jnp.where(diag, p, 0.0), axis=1)
    return _reduce(-jnp.log(p_target + LOG_EPS), mine, row_mask.shape[0])


@LOSSES.register("bpr-max")
def bpr_max(
    scores: jax.Array,
    row_mask: jax.Array,
    *,
    log_q: jax.Array | None = None,
    logq: float | jax.Array = 0.0,
    bpreg: float | jax.Array = 1.0,
    elu_param: float | jax.Array = 0.5,
    row_offset: jax.Array | int | None = None,
) -> jax.Array:
    r"""BPR-max with score regularisation (GRU4Rec ``bpr-max``), over an ELU final activation.

    r = ELU_{elu_param}(scores − logq·log_q)   (elu_param = 0: linear; logq defaults to 0)
    ℓ_i = −log( Σ_{j ≠ i} s_ij·σ(r_ii − r_ij) + 1e-24 ) + bpreg·Σ_{j ≠ i} s_ij·r_ij²

    ELU is applied to every candidate score (target and negatives) before anything else, as in
    the PyTorch port; the regulariser uses the activated scores. Defaults follow the PyTorch
    port (bpreg 1.0, elu_param 0.5). The PyTorch port ignores logq here; the Theano original
    subtracts it before the final activation, which is what logq != 0 does.
    """
    r, valid, diag, mine = _prepare(scores, row_mask, log_q, logq, row_offset)
    r = jnp.where(valid, _elu(r, elu_param), 0.0)
    s = _masked_softmax(r, valid & ~diag)
    hit = jnp.sum(s * jax.nn.sigmoid(_diag(r, row_offset) - r), axis=1)
    reg = jnp.sum(s * r**2, axis=1)
    return _reduce(-jnp.log(hit + LOG_EPS) + bpreg * reg, mine, row_mask.shape[0])


@LOSSES.register("top1-max")
def top1_max(
    scores: jax.Array,
    row_mask: jax.Array,
    *,
    log_q: jax.Array | None = None,
    logq: float | jax.Array = 0.0,
    final_elu: float | jax.Array = 0.0,
    row_offset: jax.Array | int | None = None,
) -> jax.Array:
    r"""TOP1-max (Theano GRU4Rec ``top1-max``; not in the PyTorch port).

    r = ELU_{final_elu}(scores − logq·log_q)   (final_elu = 0: linear, Theano's default
    ``final_act``)
    ℓ_i = Σ_{j ≠ i} s_ij·( σ(r_ij − r_ii) + σ(r_ij²) )

    The keyword is not ``elu_param``: that config key is BPR-max's (the PyTorch port's), and
    binding its 0.5 default here would change TOP1-max's output layer. The README warns it
    suffers from vanishing gradients; prefer cross-entropy or bpr-max.
    """
    r, valid, diag, mine = _prepare(scores, row_mask, log_q, logq, row_offset)
    r = jnp.where(valid, _elu(r, final_elu), 0.0)
    s = _masked_softmax(r, valid & ~diag)
    per_row = jnp.sum(s * (jax.nn.sigmoid(r - _diag(r, row_offset)) + jax.nn.sigmoid(r**2)), axis=1)
    return _reduce(per_row, mine, row_mask.shape[0])


def takes_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` accepts the keyword argument ``name`` (by name or through ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check_row_offset(fn: Callable[..., Any], name: str) -> None:
    """pmap scores each device's slice of the rows, so its loss needs ``row_offset``."""
    if not takes_keyword(fn, "row_offset"):
        raise ValueError(
            f"loss {name!r} takes no row_offset, which --parallel pmap needs (each device "
            "scores a slice of the rows); use --parallel sharding"
        )


def make_loss(name: str, *, strict: bool = True, **hyper: Any) -> LossFn:
    """Looks ``name`` up in `LOSSES` and binds its hyperparameters.

    Args:
      name: a registered loss name ("cross-entropy", "bpr-max", "top1-max", or user-added).
      strict: if True, a hyperparameter the loss does not take raises TypeError; if False it is
        dropped, so one config dict (logq, bpreg, elu_param) can serve every loss.
      **hyper: keyword hyperparameters of the loss.

    Returns:
      ``fn(scores, row_mask, *, log_q=None) -> scalar``.
    """
    fn = LOSSES.get(name)
    unknown = [k for k in hyper if not takes_keyword(fn, k)]
    if unknown and strict:
        raise TypeError(f"loss {name!r} takes no hyperparameter(s) {unknown}")
    return functools.partial(fn, **{k: v for k, v in hyper.items() if k not in unknown})
