r"""Full-ranking next-item metrics: rank counting (chunked over the catalogue) and their sums.

Follows `hidasib/GRU4Rec_PyTorch_Official:evaluation.py` (``batch_eval``) and the Theano
`hidasib/GRU4Rec:evaluation.py` (``evaluate_gpu``): the target is ranked among ALL items by
score s_i = h·W_y[i] + b_y[i]; items already seen in the session are not filtered out.

For a target t with score s_t, over the other items j ≠ t::

    n_greater = #{j ≠ t : s_j > s_t}        n_equal = #{j ≠ t : s_j = s_t}

    conservative  rank = 1 + n_greater + n_equal      (target below every tie; the default)
    standard      rank = 1 + n_greater                 (target above every tie; optimistic)
    median        rank = 1 + n_greater + n_equal / 2   (float)

and, with a hit meaning rank ≤ K (rank exactly K counts)::

    recall@K = 1[rank ≤ K]    mrr@K = 1[rank ≤ K] / rank    ndcg@K = 1[rank ≤ K] / log2(rank + 1)

each averaged over prediction events (not sessions). A NaN target score gets the worst rank
(n_greater = I − 1), never a hit; NaN scores of other items count as lower than the target.

Typical use, one evaluation batch at a time::

    n_gt, n_eq = count_ranks_chunked(h, W_y, b_y, targets, chunk_size=65536)   # jitted
    sums = metric_sums(ranks_from_counts(n_gt, n_eq, "conservative"), mask)   # jitted
    total = accumulate(total, sums)                                            # host, float64
    results = finalize(total)            # {"recall@20": ..., "mrr@20": ..., "n": ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

TIE_MODES = ("conservative", "standard", "median")
DEFAULT_CUTOFFS = (1, 5, 10, 20)


# ----------------------------------------------------------------------------- rank counting


def _counts(scores, target_scores, items, targets, valid_items=None):
    """(n_greater, n_equal) of one (B, C) score block; ``items`` (C,) are its item ids."""
    others = items[None, :] != targets[:, None]
    if valid_items is not None:
        others = others & valid_items[None, :]
    t = target_scores[:, None]
    n_greater = jnp.sum(others & (scores > t), axis=1, dtype=jnp.int32)
    n_equal = jnp.sum(others & (scores == t), axis=1, dtype=jnp.int32)
    return n_greater, n_equal


def _worst_if_nan(n_greater, n_equal, is_nan, num_items):
    n_greater = jnp.where(is_nan, num_items - 1, n_greater)
    return n_greater, jnp.where(is_nan, 0, n_equal)


def count_ranks(scores: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row, how many other items score above and equal to the target.

    Args:
      scores: (B, I) scores of every item.
      targets: (B,) int target item ids in [0, I).

    Returns:
      ``(n_greater, n_equal)``, both (B,) int32, the target itself excluded from both.
    """
    if scores.ndim != 2 or targets.shape != scores.shape[:1]:
        raise ValueError(
            f"expected scores (B, I) and targets (B,), got {scores.shape}, {targets.shape}"
        )
    num_items = scores.shape[1]
    targets = targets.astype(jnp.int32)
    t = jnp.take_along_axis(scores, targets[:, None], axis=1)[:, 0]
    counts = _counts(scores, t, jnp.arange(num_items, dtype=jnp.int32), targets)
    return _worst_if_nan(*counts, jnp.isnan(t), num_items)


def count_ranks_chunked(
    hidden: jax.Array,
    item_matrix: jax.Array,
    item_bias: jax.Array | None,
    targets: jax.Array,
    chunk_size: int = 65536,
    *,
    precision: jax.lax.PrecisionLike = jax.lax.Precision.HIGHEST,
) -> tuple[jax.Array, jax.Array]:
    """`count_ranks` of s = hidden·item_matrixᵀ + item_bias, never holding more than (B, C) scores.

    Loops over item chunks of C = ``chunk_size`` rows (``lax.fori_loop``), so a catalogue of a
    million items fits in memory. The last chunk is the final C rows (it overlaps the one before,
    and the overlap is masked out), so the item matrix is never padded or copied. Scores are
    float32 (``precision`` HIGHEST by default: GPUs would otherwise use TF32 and blur ranks).

    The target's score comes out of the same matmul as each chunk's items (the target rows are
    appended to the chunk), so a tied item scores bit-for-bit like the target whatever the
    matmul's summation order.

    Args:
      hidden: (B, H) final hidden states.
      item_matrix: (I, H) output item matrix W_y.
      item_bias: (I,) (or (I, 1)) output bias b_y, or None for no bias.
      targets: (B,) int target item ids in [0, I).
      chunk_size: C, items scored at once; clipped to I.

    Returns:
      ``(n_greater, n_equal)``, both (B,) int32.
    """
    num_items = item_matrix.shape[0]
    if item_bias is None:
        item_bias = jnp.zeros((num_items,), jnp.float32)
    item_bias = item_bias.reshape(num_items)
    chunk = min(int(chunk_size), num_items)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    num_chunks = -(-num_items // chunk)

    f32 = jnp.float32
    h = hidden.astype(f32)  # (B, H)
    targets = targets.astype(jnp.int32)
    w_t = jnp.take(item_matrix, targets, axis=0).astype(f32)  # (B, H)
    b_t = jnp.take(item_bias, targets).astype(f32)  # (B,)
    batch = h.shape[0]

    def body(c, carry):
        n_greater, n_equal, is_nan = carry
        nominal = c * chunk
        start = jnp.minimum(nominal, num_items - chunk)
        w = jax.lax.dynamic_slice_in_dim(item_matrix, start, chunk).astype(f32)  # (C, H)
        b = jax.lax.dynamic_slice_in_dim(item_bias, start, chunk).astype(f32)  # (C,)
        s = jnp.dot(h, jnp.concatenate([w, w_t]).T, precision=precision)  # (B, C+B)
        s = s + jnp.concatenate([b, b_t])[None, :]
        t = jnp.diagonal(s[:, chunk:])  # (B,)
        items = start + jnp.arange(chunk, dtype=jnp.int32)
        gt, eq = _counts(s[:, :chunk], t, items, targets, valid_items=items >= nominal)
        return n_greater + gt, n_equal + eq, is_nan | jnp.isnan(t)

    zeros = jnp.zeros((batch,), jnp.int32)
    init = (zeros, zeros, jnp.zeros((batch,), bool))
    n_greater, n_equal, is_nan = jax.lax.fori_loop(0, num_chunks, body, init)
    return _worst_if_nan(n_greater, n_equal, is_nan, num_items)


def ranks_from_counts(
    n_greater: jax.Array, n_equal: jax.Array, mode: str = "conservative"
) -> jax.Array:
    """Ranks (1 = best) from `count_ranks`' counts, with ties broken by ``mode``.

    conservative: 1 + n_greater + n_equal (int32); standard: 1 + n_greater (int32);
    median: 1 + n_greater + n_equal / 2 (float32).
    """
    if mode == "conservative":
        return 1 + n_greater + n_equal
    if mode == "standard":
        return 1 + n_greater
    if mode == "median":
        return 1.0 + n_greater.astype(jnp.float32) + 0.5 * n_equal.astype(jnp.float32)
    raise ValueError(f"unknown tie mode {mode!r}; options: {', '.join(TIE_MODES)}")


# ----------------------------------------------------------------------------- metric sums


def metric_sums(
    ranks: jax.Array, mask: jax.Array, cutoffs: Sequence[int] = DEFAULT_CUTOFFS
) -> dict[str, jax.Array]:
    """Sums over the masked-in rows of recall@K, mrr@K and ndcg@K, plus ``count`` (jittable).

    Args:
      ranks: (B,) ranks, int or float (median mode), 1 = best.
      mask: (B,) bool, rows that are real prediction events.
      cutoffs: the Ks; a hit is rank ≤ K.

    Returns:
      ``{"recall@K", "mrr@K", "ndcg@K" for each K (float32 sums), "count" (int32)}``.
    """
    cutoffs = _check_cutoffs(cutoffs)
    r = ranks.astype(jnp.float32)
    mask = mask.astype(bool)
    inv_rank = 1.0 / jnp.maximum(r, 1.0)
    inv_log = 1.0 / jnp.log2(jnp.maximum(r, 1.0) + 1.0)
    sums = {}
    for k in cutoffs:
        hit = mask & (r <= k)
        sums[f"recall@{k}"] = jnp.sum(hit, dtype=jnp.float32)
        sums[f"mrr@{k}"] = jnp.sum(jnp.where(hit, inv_rank, 0.0))
        sums[f"ndcg@{k}"] = jnp.sum(jnp.where(hit, inv_log, 0.0))
    sums["count"] = jnp.sum(mask, dtype=jnp.int32)
    return sums


def accumulate(
    total: Mapping[str, float] | None, sums: Mapping[str, jax.Array]
) -> dict[str, float]:
    """Adds one batch's `metric_sums` to ``total`` on the host, in float64 (one device read)."""
    sums = jax.device_get(dict(sums))
    total = dict(total or {})
    for name, value in sums.items():
        total[name] = total.get(name, 0.0) + float(np.asarray(value, np.float64))
    return total


def finalize(sums: Mapping[str, float]) -> dict[str, float]:
    """Averages: every metric sum divided by ``count``; ``n`` = count (number of events).

    Raises:
      ValueError: no event was counted (an empty test set would otherwise give NaN metrics).
    """
    count = float(sums["count"])
    if count <= 0:
        raise ValueError("no prediction events were evaluated (count = 0)")
    out = {name: float(v) / count for name, v in sums.items() if name != "count"}
    out["n"] = int(count)
    return out


def _check_cutoffs(cutoffs: Sequence[int]) -> tuple[int, ...]:
    cutoffs = tuple(int(k) for k in cutoffs)
    if not cutoffs or any(k < 1 for k in cutoffs):
        raise ValueError(f"cutoffs must be positive integers, got {cutoffs}")
    return cutoffs
