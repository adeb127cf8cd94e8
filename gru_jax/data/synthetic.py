"""Synthetic shop sessions: the embedded default dataset. SYNTHETIC DATA, not a real log.

The generator draws sessions from a small model of browsing in a shop, fully vectorised and
deterministic from a seed:

- items belong to latent topics (categories); item popularity is Zipf-distributed;
- a session starts in a topic drawn by topic popularity and drifts to a new topic with
  probability ``drift`` at each event;
- an event's item is drawn by popularity within the current topic, except that with probability
  ``follow`` the shopper clicks the "related item" of the previous item (a fixed item of the same
  topic), which gives the data sequential structure a next-item model can learn;
- session lengths are geometric (mean ``mean_length``, at least 1); sessions start uniformly over
  ``n_days`` days; events are seconds apart (exponential gaps, mean ``mean_gap`` seconds).

`default_dataset` is the GRU4Rec-preprocessed split used when the user gives no data: about
200k events and 3k items, small enough to train a 100-unit GRU4Rec for a few epochs on a 2-core
CPU within a minute, and structured enough that a next-item model clearly beats popularity.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from gru_jax.data.dataset import Dataset
from gru_jax.data.preprocess import PreprocessConfig, preprocess

START_TIME = 1_704_067_200  # 2024-01-01T00:00:00Z


def _topic_cdf(topic_of: np.ndarray, popularity: np.ndarray, n_topics: int):
    """Items sorted by topic and a global CDF where topic k's items span (k, k + 1]."""
    items = np.lexsort((np.arange(len(topic_of)), topic_of))
    topics = topic_of[items]
    weights = popularity[items]
    cum = np.cumsum(weights)
    topic_start = np.searchsorted(topics, np.arange(n_topics))
    topic_end = np.searchsorted(topics, np.arange(n_topics), side="right")
    base = np.where(topic_start > 0, cum[np.maximum(topic_start - 1, 0)], 0.0)
    total = cum[topic_end - 1] - base
    cdf = topics + (cum - base[topics]) / total[topics]
    cdf[topic_end - 1] = np.arange(n_topics) + 1.0  # exact upper ends
    return items, cdf


def generate_sessions(
    n_sessions: int = 40_000,
    n_items: int = 3_000,
    *,
    n_topics: int = 40,
    mean_length: float = 5.0,
    zipf_exponent: float = 0.8,
    drift: float = 0.1,
    follow: float = 0.3,
    n_days: float = 30.0,
    mean_gap: float = 60.0,
    start_time: int = START_TIME,
    seed: int = 0,
) -> pl.DataFrame:
    """Generates synthetic shop sessions (see the module docstring).

    Returns:
      A polars DataFrame with GRU4Rec's columns ``SessionId`` (int64), ``ItemId`` (int64, 1-based)
      and ``Time`` (int64 Unix seconds), sorted by session and time.
    """
    if n_topics < 1 or n_items < n_topics:
        raise ValueError("need 1 <= n_topics <= n_items")
    rng = np.random.default_rng(seed)

    # Catalogue: Zipf popularity over a random ranking; every topic holds at least one item.
    popularity = 1.0 / np.arange(1, n_items + 1) ** zipf_exponent
    popularity = popularity[rng.permutation(n_items)]
    topic_of = np.concatenate([np.arange(n_topics), rng.integers(0, n_topics, n_items - n_topics)])
    topic_of = topic_of[rng.permutation(n_items)]
    topic_pop = np.bincount(topic_of, weights=popularity, minlength=n_topics)
    by_topic, cdf = _topic_cdf(topic_of, popularity, n_topics)
    # Related item: a popularity-weighted draw from the same topic, other than the item itself
    # where the topic has other items (a few redraws; what is left keeps itself).
    related = np.arange(n_items)
    for _ in range(8):
        again = np.flatnonzero(related == np.arange(n_items))
        draw = np.searchsorted(cdf, topic_of[again] + rng.random(len(again)), side="right")
        related[again] = by_topic[draw.clip(max=n_items - 1)]

    # Sessions and events.
    lengths = rng.geometric(1.0 / mean_length, n_sessions).astype(np.int64)
    n = int(lengths.sum())
    session = np.repeat(np.arange(n_sessions), lengths)
    first = np.zeros(n, dtype=bool)
    first[np.r_[0, np.cumsum(lengths)[:-1]]] = True

    # Topic per event: a new topic at each session start or drift, carried forward.
    new_topic = first | (rng.random(n) < drift)
    topic_draw = np.searchsorted(
        np.cumsum(topic_pop) / topic_pop.sum(), rng.random(n), side="right"
    ).clip(max=n_topics - 1)
    last_change = np.maximum.accumulate(np.where(new_topic, np.arange(n), 0))
    topic = topic_draw[last_change]

    # Items: popularity within the topic, or the previous item's related item. Runs of
    # consecutive follows are resolved one link at a time.
    item = by_topic[np.searchsorted(cdf, topic + rng.random(n), side="right").clip(max=n_items - 1)]
    follows = ~new_topic & (rng.random(n) < follow)
    run_start = np.maximum.accumulate(np.where(~follows, np.arange(n), 0))
    depth = np.arange(n) - run_start  # position within a run of follows (0 = not a follow)
    for d in range(1, int(depth.max()) + 1 if n else 1):
        at = np.flatnonzero(depth == d)
        item[at] = related[item[at - 1]]

    # Times: session starts uniform over n_days, then exponential gaps.
    starts = np.sort(rng.uniform(0, n_days * 86_400, n_sessions))
    gaps = rng.exponential(mean_gap, n)
    gaps[first] = 0.0
    offset = np.cumsum(gaps)
    offset -= np.repeat(offset[first], lengths)
    time = start_time + np.floor(np.repeat(starts, lengths) + offset).astype(np.int64)

    return pl.DataFrame({"SessionId": session + 1, "ItemId": item + 1, "Time": time})


def default_dataset(seed: int = 0) -> Dataset:
    """The built-in dataset: `generate_sessions` preprocessed with GRU4Rec's recipe.

    40k sessions (~200k events) over 30 days and 3k items; the last 2 days are the test set.
    SYNTHETIC: figures on it say nothing about real shops.
    """
    events = generate_sessions(seed=seed).rename(
        {"SessionId": "session", "ItemId": "item", "Time": "time"}
    )
    events = events.with_columns(pl.col("time").cast(pl.Float64))
    dataset = preprocess(events, PreprocessConfig(test_days=2.0))
    dataset.stats["format"] = "synthetic"
    dataset.stats["synthetic_seed"] = seed
    return dataset
