"""Extra negative samples shared by all rows of a step (GRU4Rec's scheme).

Items are drawn with probability proportional to ``support ** alpha`` by inverse CDF (uniform
draws searched in the cumulative distribution), from a store of ``store_size`` pre-drawn ids that
is redrawn when used up (``hidasib/GRU4Rec:gru4rec.py``, ``sample_store``). The state saved for a
checkpoint is the generator state that drew the current store plus the read position, so a
restored sampler continues with exactly the same ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NegativeSampler:
    """Draws ``(steps, n_sample)`` item ids per call from a pre-drawn store.

    Args:
      supports: (I,) training events per item.
      alpha: exponent in [0, 1]: 1 samples by popularity, 0 uniformly.
      n_sample: negatives per step, shared by all rows of the step.
      store_size: ids drawn at once (rounded down to whole steps, at least one step).
      seed: seed of the generator.
    """

    def __init__(
        self,
        supports: np.ndarray,
        *,
        alpha: float,
        n_sample: int,
        store_size: int = 10_000_000,
        seed: int = 0,
    ) -> None:
        supports = np.asarray(supports, dtype=np.float64)
        if supports.ndim != 1 or len(supports) == 0 or np.any(supports < 0):
            raise ValueError("supports must be a non-empty 1-D array of counts >= 0")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if n_sample < 0:
            raise ValueError(f"n_sample must be >= 0, got {n_sample}")
        weights = supports**alpha  # 0 ** 0 == 1: alpha = 0 is uniform over all items
        if weights.sum() <= 0:
            raise ValueError("all item supports are zero")
        self.probabilities = weights / weights.sum()
        self._cdf = np.cumsum(self.probabilities)
        self._cdf[-1] = 1.0  # guards against rounding: every uniform draw finds an item
        self.alpha = alpha
        self.n_sample = n_sample
        self.rows = max(1, store_size // max(n_sample, 1))
        self._rng = np.random.default_rng(seed)
        self._store_rng_state: dict | None = None
        self._store = np.empty((0, n_sample), dtype=np.int32)
        self._pos = 0

    def _refill(self) -> None:
        self._store_rng_state = self._rng.bit_generator.state
        draws = self._rng.random(self.rows * self.n_sample)
        ids = np.searchsorted(self._cdf, draws, side="right")
        self._store = np.minimum(ids, len(self._cdf) - 1).astype(np.int32)
        self._store = self._store.reshape(self.rows, self.n_sample)
        self._pos = 0

    def take(self, steps: int = 1) -> np.ndarray:
        """Returns int32 (steps, n_sample) item ids, one row per step."""
        if self.n_sample == 0 or steps == 0:
            return np.zeros((steps, self.n_sample), dtype=np.int32)
        out = []
        need = steps
        while need > 0:
            if self._pos >= len(self._store):
                self._refill()
            n = min(need, len(self._store) - self._pos)
            out.append(self._store[self._pos : self._pos + n])
            self._pos += n
            need -= n
        return out[0].copy() if len(out) == 1 else np.concatenate(out)

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state: the generator state that drew the store and the position."""
        return {
            "rng": self._rng.bit_generator.state
            if self._store_rng_state is None
            else self._store_rng_state,
            "pos": self._pos if self._store_rng_state is not None else None,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continues from a `state()`: redraws that store and moves to the saved position."""
        self._rng.bit_generator.state = state["rng"]
        if state["pos"] is None:  # saved before the first draw
            self._store_rng_state = None
            self._store = np.empty((0, self.n_sample), dtype=np.int32)
            self._pos = 0
        else:
            self._refill()
            self._pos = int(state["pos"])
