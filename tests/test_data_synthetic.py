"""Tests for gru_jax.data.synthetic: determinism, the generative model, the default dataset."""

import numpy as np
import polars as pl
import pytest

from gru_jax.data import SessionParallelIterator, default_dataset, generate_sessions
from gru_jax.data.synthetic import START_TIME


def test_deterministic_from_seed():
    a = generate_sessions(2_000, 300, seed=1)
    b = generate_sessions(2_000, 300, seed=1)
    c = generate_sessions(2_000, 300, seed=2)
    assert a.equals(b) and not a.equals(c)
    assert a.schema == pl.Schema({"SessionId": pl.Int64, "ItemId": pl.Int64, "Time": pl.Int64})


def test_shape_of_the_generated_log():
    n_sessions, n_days = 20_000, 10
    df = generate_sessions(n_sessions, 1_000, mean_length=4.0, n_days=n_days, seed=0)

    lengths = df.group_by("SessionId").len()["len"].to_numpy()
    assert df["SessionId"].n_unique() == n_sessions
    assert lengths.min() >= 1 and lengths.mean() == pytest.approx(4.0, rel=0.05)  # geometric
    assert df["ItemId"].min() >= 1 and df["ItemId"].max() <= 1_000
    # Sorted by session then time; all times inside the window (plus the last sessions' tails).
    assert df.equals(df.sort(["SessionId", "Time"], maintain_order=True))
    assert df["Time"].min() >= START_TIME
    assert df["Time"].max() < START_TIME + n_days * 86_400 + 6 * 3600
    # Zipf-like popularity: the top 1% of items get far more than 1% of the events.
    counts = np.sort(df["ItemId"].value_counts()["count"].to_numpy())[::-1]
    assert counts[:10].sum() > 0.05 * counts.sum()


def test_default_dataset_size_and_learnability():
    ds = default_dataset()

    assert 150_000 <= ds.train.n_events <= 250_000 and 2_000 <= ds.n_items <= 5_000
    assert ds.test.n_predictions > 5_000 and ds.stats["format"] == "synthetic"

    # A first-order Markov model (next-item counts on train) must clearly beat popularity on
    # test recall@20: the data has sequential structure to learn.
    n = ds.n_items
    it = SessionParallelIterator(ds.train, 256)
    transitions = np.zeros((n, n))
    for b in it.epoch(0):
        np.add.at(transitions, (b.inputs[b.mask], b.targets[b.mask]), 1.0)
    support = ds.item_supports()
    transitions += 1e-6 * support  # ties broken by popularity
    target_idx = np.flatnonzero(ds.test.prediction_mask())
    prev, target = ds.test.items[target_idx - 1], ds.test.items[target_idx]
    rank = (transitions[prev] > transitions[prev, target][:, None]).sum(1)
    markov = (rank < 20).mean()
    popular = np.isin(target, np.argsort(-support)[:20]).mean()
    assert markov > 2 * popular and markov > 0.4, (markov, popular)
