"""Session-parallel mini-batches (GRU4Rec's scheme) with fixed shapes.

Each of the B rows of a batch walks one session: at every step a row yields the session's current
item (input) and its next item (target). When a row's session ends, the row takes the next
session in order; when several rows finish at the same step they take the next sessions in
increasing row order (``hidasib/GRU4Rec_PyTorch_Official:gru4rec_pytorch.py:SessionDataIterator``).
When no session is left, finished rows are masked rather than removed, so every batch has the same
shape and a jitted step never recompiles; the loss divides by B as GRU4Rec divides its shrunken
batch by the fixed batch size.

The plan (which row plays which session from which step) is built for all B rows at once with
NumPy and is the same on every data-parallel shard; shard k materialises its contiguous rows
``[k * B / num_shards, (k + 1) * B / num_shards)``.

Shapes: T steps per dispatch, B rows (B_local = B / num_shards on one shard).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from gru_jax.data.dataset import SessionLog


class Batch(NamedTuple):
    """One dispatch of T session-parallel steps; all arrays are (T, B_local).

    Attributes:
      inputs: int32 current item of each row (0 where masked; -1 for an item unseen in training).
      targets: int32 next item (0 where masked; -1 for an unseen item).
      resets: bool, True at the first step of every session a row starts (the very first
        included): the row's hidden state must be zeroed before this step.
      mask: bool, the step is a real (input, target) pair; False for rows with no session left
        and for the padding steps of the last dispatch.
      predict: bool, mask & the target is a prediction point of the log & target >= 0.
    """

    inputs: np.ndarray
    targets: np.ndarray
    resets: np.ndarray
    mask: np.ndarray
    predict: np.ndarray


class _Plan(NamedTuple):
    grid: Batch  # arrays (T_pad, B_local), read-only
    num_steps: int  # global number of steps (before padding)
    num_pairs: int  # (input, target) pairs played over all shards


ORDERS = ("time", "shuffle", "longest")


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    return order


def session_order(log: SessionLog, order: str, seed: int, epoch: int) -> np.ndarray:
    """Indices of the sessions with at least one (input, target) pair, in play order."""
    eligible = np.flatnonzero(log.lengths >= 2)
    if order == "time":
        if log.times is None:
            return eligible
        first_times = log.times[log.offsets[eligible]]
        return eligible[np.argsort(first_times, kind="stable")]
    if order == "shuffle":
        return np.random.default_rng(seed + epoch).permutation(eligible)
    check_order(order)  # "longest", for evaluation: long sessions first, so rows finish together
    return eligible[np.argsort(-log.lengths[eligible], kind="stable")]


def assign_rows(steps: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """GRU4Rec's row assignment for sessions of ``steps`` steps each, in play order.

    Returns:
      (row, start): int64 (S,) the row that plays each session and the step it starts at.
    """
    n = len(steps)
    row = np.empty(n, dtype=np.int64)
    start = np.empty(n, dtype=np.int64)
    k = min(batch_size, n)
    row[:k], start[:k] = np.arange(k), 0
    free_at = np.full(batch_size, np.iinfo(np.int64).max, dtype=np.int64)
    free_at[:k] = steps[:k]
    nxt = k
    # One iteration per step at which some rows finish (vectorised over those rows).
    while nxt < n:
        t = free_at.min()
        rows = np.flatnonzero(free_at == t)[: n - nxt]
        taken = slice(nxt, nxt + len(rows))
        row[taken], start[taken] = rows, t
        free_at[rows] = t + steps[taken]
        nxt += len(rows)
    return row, start


class SessionParallelIterator:
    """Fixed-shape session-parallel batches over a `SessionLog`.

    Args:
      log: the sessions; sessions shorter than 2 have no target and are skipped.
      batch_size: B, the global number of rows (over all shards).
      steps: T, steps per dispatch (arrays are (T, B_local), e.g. for a `lax.scan`).
      order: "time" (by first-event time, GRU4Rec's default; file order without timestamps),
        "shuffle" (a permutation drawn per epoch from ``seed + epoch``) or "longest" (longest
        sessions first; for evaluation, where sessions are independent).
      seed: seed of the shuffle.
      shard_index, num_shards: this shard takes rows
        ``[shard_index * B / num_shards, (shard_index + 1) * B / num_shards)``.
      drop_last: drop the last dispatch when it is partial (otherwise padded with masked steps).
      min_rows: the epoch ends at the first step with fewer rows still playing a session (the
        rest of the sessions left are not played). GRU4Rec stops at 2 when it samples no extra
        negatives (``n_sample=0``), where a lone row would have no negative at all.
    """

    def __init__(
        self,
        log: SessionLog,
        batch_size: int,
        *,
        steps: int = 1,
        order: str = "time",
        seed: int = 0,
        shard_index: int = 0,
        num_shards: int = 1,
        drop_last: bool = False,
        min_rows: int = 1,
    ) -> None:
        if batch_size < 1 or steps < 1:
            raise ValueError(f"batch_size and steps must be >= 1, got {batch_size}, {steps}")
        if not 1 <= min_rows <= batch_size:
            raise ValueError(f"min_rows must be in [1, batch_size={batch_size}], got {min_rows}")
        if num_shards < 1 or batch_size % num_shards:
            raise ValueError(f"batch_size {batch_size} is not divisible by {num_shards} shards")
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index {shard_index} not in [0, {num_shards})")
        check_order(order)
        self.log = log
        self.batch_size = batch_size
        self.local_batch_size = batch_size // num_shards
        self.steps = steps
        self.order = order
        self.seed = seed
        self.shard_index = shard_index
        self.num_shards = num_shards
        self.drop_last = drop_last
        self.min_rows = min_rows
        self._cache: tuple[int, _Plan] | None = None

    # -- plan ---------------------------------------------------------------------------------

    def _plan(self, epoch: int) -> _Plan:
        key = epoch if self.order == "shuffle" else 0
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._build(epoch))
        return self._cache[1]

    def _build(self, epoch: int) -> _Plan:
        log, b_local = self.log, self.local_batch_size
        sessions = session_order(log, self.order, self.seed, epoch)
        steps = log.lengths[sessions] - 1
        row, start = assign_rows(steps, self.batch_size)
        num_steps = int((start + steps).max()) if len(steps) else 0
        if self.min_rows > 1 and num_steps:
            # Rows refill at once, so the number playing only falls, once no session is left.
            change = np.zeros(num_steps + 1, np.int64)
            np.add.at(change, start, 1)
            np.add.at(change, start + steps, -1)
            short = np.flatnonzero(np.cumsum(change)[:num_steps] < self.min_rows)
            num_steps = int(short[0]) if len(short) else num_steps
        n_disp = num_steps // self.steps if self.drop_last else -(-num_steps // self.steps)
        t_pad = n_disp * self.steps
        played = int(np.minimum(steps, np.maximum(min(t_pad, num_steps) - start, 0)).sum())

        # This shard's sessions, then one entry per (input, target) pair they contain.
        lo = self.shard_index * b_local
        mine = (row >= lo) & (row < lo + b_local)
        sessions, steps, row, start = sessions[mine], steps[mine], row[mine] - lo, start[mine]
        # Pair j of session s (j = 0 .. steps[s] - 1) reads event offsets[s] + j and lands at step
        # start[s] + j of the row, so both indices are a per-session base plus a running index.
        first_pair = np.cumsum(steps) - steps
        n_pairs, size = int(steps.sum()), t_pad * b_local
        # int32 indices halve the memory traffic whenever they fit.
        idx = np.int32 if max(log.n_events, size, n_pairs) < 2**31 - 1 else np.int64
        run = np.arange(n_pairs, dtype=idx)
        src = np.repeat((log.offsets[sessions] - first_pair).astype(idx), steps)
        src += run  # input event of every pair
        t = np.repeat((start - first_pair).astype(idx), steps)
        t += run  # step of every pair
        del run
        base = start * b_local + row  # grid position of each session's first pair
        pos = np.repeat(row.astype(np.int64), steps)
        pos += t.astype(np.int64) * b_local
        del t
        cut = min(t_pad, num_steps) * b_local  # the pairs after the last step played go
        if cut < (int(pos.max()) + 1 if len(pos) else 0):
            keep = pos < cut
            src, pos, base = src[keep], pos[keep], base[base < cut]

        inputs = np.zeros(size, dtype=np.int32)
        targets = np.zeros(size, dtype=np.int32)
        resets = np.zeros(size, dtype=bool)
        mask = np.zeros(size, dtype=bool)
        predict = np.zeros(size, dtype=bool)
        inputs[pos] = log.items[src]
        target_items = log.items[1:][src]
        targets[pos] = target_items
        resets[base] = True
        mask[pos] = True
        predict[pos] = log.prediction_mask()[1:][src] & (target_items >= 0)

        grid = Batch(inputs, targets, resets, mask, predict)
        grid = Batch(*(a.reshape(t_pad, b_local) for a in grid))
        for a in grid:
            a.flags.writeable = False
        return _Plan(grid, num_steps, played)

    # -- public -------------------------------------------------------------------------------

    def num_dispatches(self, epoch: int = 0) -> int:
        """Dispatches in ``epoch`` (the same for every epoch unless order="shuffle")."""
        return len(self._plan(epoch).grid.mask) // self.steps

    def __len__(self) -> int:
        """Dispatches per epoch (of epoch 0, or of the last epoch built with order="shuffle")."""
        return self.num_dispatches(self._cache[0] if self._cache else 0)

    @property
    def num_steps(self) -> int:
        """Single steps per epoch before padding (epoch 0, or the last one built)."""
        return self._plan(self._cache[0] if self._cache else 0).num_steps

    @property
    def num_targets(self) -> int:
        """(input, target) pairs played per epoch over all shards (epoch 0, or the last one
        built): events minus sessions (length >= 2), less those cut by drop_last or min_rows."""
        return self._plan(self._cache[0] if self._cache else 0).num_pairs

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Yields the batches of ``epoch``, skipping the first ``start`` dispatches (to resume).

        The arrays are read-only views into the epoch's plan.
        """
        grid = self._plan(epoch).grid
        t = self.steps
        for d in range(start, len(grid.mask) // t):
            yield Batch(*(a[d * t : (d + 1) * t] for a in grid))
