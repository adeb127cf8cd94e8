"""Tests for gru_jax.data.preprocess and Dataset persistence.

The main check re-implements GRU4Rec's recipe independently with pandas (written from
``hidasib/gru4rec_third_party_comparison:diginetica_preproc.py``) and compares the count removed
by every step and the resulting arrays on ../shared/data/diginetica_sample.
"""

import itertools
import re

import numpy as np
import pandas as pd
import polars as pl
import pytest

from gru_jax.data import (
    DataError,
    Dataset,
    PreprocessConfig,
    SessionLog,
    dataset_from_files,
    dataset_from_pairs,
    load_dataset,
    preprocess,
)

DIGINETICA = "diginetica_sample/sample_train-item-views.csv"
DAY = 86_400


def _size(frame: pd.DataFrame, key: str) -> pd.Series:
    return frame.groupby(key)[key].transform("size")


def _pandas_recipe(path, *, test_days, valid_days=0, min_support=5, min_length=2, dedupe=True):
    """GRU4Rec's recipe on the Diginetica views file, step by step in pandas."""
    df = pd.read_csv(path, sep=";")
    date = pd.to_datetime(df["eventdate"], format="%Y-%m-%d")
    day = (date - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    df = pd.DataFrame(
        {
            "session": df["session_id"],
            "item": df["item_id"],
            # timeframe counts from the session start: add it to the session's first date.
            "time": day.groupby(df["session_id"]).transform("min") + df["timeframe"] / 1000,
        }
    ).sort_values(["session", "time"], kind="stable")
    stats = {"removed_consecutive_repeats": 0}
    if dedupe:
        repeat = (df.session == df.session.shift()) & (df.item == df.item.shift())
        stats["removed_consecutive_repeats"] = int(repeat.sum())
        df = df[~repeat]

    removed_items = removed_sessions = 0
    while True:
        before = len(df)
        rare = _size(df, "item") < min_support
        removed_items += int(rare.sum())
        df = df[~rare]
        short = _size(df, "session") < min_length
        removed_sessions += int(short.sum())
        df = df[~short]
        if len(df) == before:
            break
    stats.update(removed_item_support=removed_items, removed_short_sessions=removed_sessions)

    def cut(frame, t_split):
        start = frame.groupby("session")["time"].transform("min")
        held = frame[start >= t_split]
        kept = frame[frame["time"] < t_split]
        n_cut = int(((frame["time"] >= t_split) & (start < t_split)).sum())
        short = _size(kept, "session") < min_length
        return kept[~short], held, n_cut, int(short.sum())

    def clean(held, train):
        unseen = ~held["item"].isin(train["item"])
        held = held[~unseen]
        short = _size(held, "session") < min_length
        return held[~short], int(unseen.sum()), int(short.sum())

    t_split = df["time"].max() - test_days * DAY
    train, test, n_cut, n_short = cut(df, t_split)
    stats.update(removed_train_cut_at_split=n_cut, removed_train_short_sessions=n_short)
    full = train
    items = np.sort(full["item"].unique())
    valid = None
    if valid_days:
        train, valid, n_cut, n_short = cut(train, t_split - valid_days * DAY)
        valid, n_unseen, n_short_valid = clean(valid, train)
        stats.update(
            removed_train_cut_at_valid_split=n_cut,
            removed_train_short_sessions_valid=n_short,
            removed_valid_unseen_items=n_unseen,
            removed_valid_short_sessions=n_short_valid,
        )
    test, n_unseen, n_short = clean(test, full)  # the item index is train_full's
    stats.update(removed_test_unseen_items=n_unseen, removed_test_short_sessions=n_short)
    return stats, items, {"train": train, "test": test, "valid": valid}


def _assert_log_equals(log: SessionLog, item_ids: np.ndarray, frame: pd.DataFrame):
    np.testing.assert_array_equal(item_ids[log.items], frame["item"].to_numpy())
    np.testing.assert_allclose(log.times, frame["time"].to_numpy())
    np.testing.assert_array_equal(log.lengths, frame.groupby("session", sort=True).size())


@pytest.mark.parametrize(
    "options",
    [
        {"test_days": 7},
        {"test_days": 7, "dedupe": False, "min_item_support": 2},
        {"test_days": 20, "valid_days": 20, "min_item_support": 3},
        {"test_days": 7, "min_item_support": 2, "min_session_length": 3},
    ],
    ids=["defaults", "no-dedupe", "valid", "min-length-3"],
)
def test_diginetica_counts_match_independent_pandas_recipe(shared_data, options):
    path = shared_data / DIGINETICA
    config = PreprocessConfig(**options)

    ds = load_dataset("diginetica", path, config=config)
    stats, items, frames = _pandas_recipe(
        path,
        test_days=config.test_days,
        valid_days=config.valid_days,
        min_support=config.min_item_support,
        min_length=config.min_session_length,
        dedupe=config.dedupe,
    )

    assert {k: ds.stats[k] for k in stats} == stats
    np.testing.assert_array_equal(ds.item_ids, items)
    for name in ("train", "test", "valid"):
        if frames[name] is None:
            assert getattr(ds, name) is None
        else:
            _assert_log_equals(getattr(ds, name), ds.item_ids, frames[name])
    assert ds.stats["n_train_events"] == len(frames["train"]) > 0
    assert ds.stats["n_test_sessions"] == frames["test"]["session"].nunique() > 0


def test_sessions_cut_by_idle_gap_when_only_users():
    events = pl.DataFrame(
        {
            "user": [1, 1, 2, 1, 1, 2, 2],
            "item": [1, 2, 1, 1, 2, 2, 1],
            "time": [0.0, 100.0, 50.0, 3801.0, 3900.0, 60.0, 3700.0],
        }
    )
    config = PreprocessConfig(min_item_support=1, min_session_length=1, split_time=3700.0)
    ds = preprocess(events, config)
    # user 1: [0, 100] | [3801, 3900] (gap 3701 > 3600); user 2: [50, 60] | [3700].
    assert ds.stats["n_sessions_from_gap"] == 4
    assert ds.train.times.tolist() == [0.0, 100.0, 50.0, 60.0]
    assert ds.test.times.tolist() == [3801.0, 3900.0, 3700.0]
    np.testing.assert_array_equal(ds.test.lengths, [2, 1])


def test_event_types_filter(shared_data):
    path = shared_data / "otto_fixture/train.jsonl"
    config = PreprocessConfig(min_item_support=1, test_days=3)
    ds = load_dataset("otto", path, config=config)
    assert ds.stats["removed_event_type"] == 62  # carts and orders
    with pytest.raises(DataError, match="no events of types"):
        load_dataset("otto", path, config=PreprocessConfig(event_types=("purchase",)))


def test_event_types_asked_for_on_events_without_types_are_refused():
    events = pl.DataFrame({"session": [1, 1], "item": [1, 2], "time": [0.0, 1.0]})
    with pytest.raises(DataError, match=r"event_types \['purchase'\] asked for.*no type column"):
        preprocess(events, PreprocessConfig(event_types=("purchase",)))


def test_given_sequence_files_make_one_session_per_user(tmp_path):
    # Per-user sequences have no timestamps: each line (user) is one session, in file order.
    (tmp_path / "train.txt").write_text("1 10 11 12\n2 11 12\n3 12 10 13\n")
    (tmp_path / "test.txt").write_text("4 10 12\n")

    ds = dataset_from_files("sequences", tmp_path / "train.txt", tmp_path / "test.txt")

    def raw(log):
        return [ds.item_ids[log.session(s)].tolist() for s in range(log.n_sessions)]

    assert raw(ds.train) == [[10, 11, 12], [11, 12], [12, 10, 13]]
    assert raw(ds.test) == [[10, 12]]


def test_the_recipe_removes_consecutive_repeats_by_default_as_the_authors_scripts():
    # hidasib/gru4rec_third_party_comparison's scripts drop an event that repeats the item
    # before it in the same session; a repeat after another item stays.
    events = pl.DataFrame(
        {"session": [1, 1, 1, 1, 2, 2, 2], "item": list("AABACCD"), "time": range(7)}
    ).with_columns(pl.col("time").cast(pl.Float64))
    common = {"min_item_support": 1, "test_days": 0}

    ds = preprocess(events, PreprocessConfig(**common))
    kept = preprocess(events, PreprocessConfig(dedupe=False, **common))

    def sessions(log, ids):
        return [ids[log.items[a:b]].tolist() for a, b in itertools.pairwise(log.offsets)]

    assert sessions(ds.train, ds.item_ids) == [list("ABA"), list("CD")]
    assert ds.stats["removed_consecutive_repeats"] == 2
    assert sessions(kept.train, kept.item_ids) == [list("AABA"), list("CCD")]


def test_iterative_filter_runs_until_nothing_changes():
    # Round 1 drops item C (support 1), which leaves [A] too short; dropping it leaves A with
    # support 1, so round 2 drops A and then [B]; round 3 finds nothing to drop.
    events = pl.DataFrame(
        {"session": [1, 1, 2, 2, 3, 3], "item": list("ACABBB"), "time": range(6)}
    ).with_columns(pl.col("time").cast(pl.Float64))
    common = {"min_item_support": 2, "test_days": 0, "dedupe": False}  # [B, B] stays; all train

    once = preprocess(events, PreprocessConfig(iterative_filter=False, **common))
    until_stable = preprocess(events, PreprocessConfig(**common))

    assert once.stats["filter_rounds"] == 1 and once.item_ids.tolist() == ["A", "B"]
    assert until_stable.stats["filter_rounds"] == 3 and until_stable.item_ids.tolist() == ["B"]
    assert until_stable.stats["removed_item_support"] == 2
    assert until_stable.stats["removed_short_sessions"] == 2
    assert until_stable.train.n_sessions == 1 and until_stable.test is None


def test_split_time_and_unseen_test_items_kept():
    events = pl.DataFrame(
        {"session": [1, 1, 2, 2, 3, 3], "item": [1, 2, 1, 2, 1, 9], "time": [0, 1, 2, 3, 10, 11]}
    ).with_columns(pl.col("time").cast(pl.Float64))
    keep = PreprocessConfig(min_item_support=1, split_time=10.0, drop_unseen_test_items=False)
    ds = preprocess(events, keep)
    assert ds.test.items.tolist() == [0, -1] and ds.stats["removed_test_unseen_items"] == 0
    # Dropping item 9 leaves [1], too short: no test session is left, and the error says why.
    drop = PreprocessConfig(min_item_support=1, split_time=10.0)
    with pytest.raises(
        DataError,
        match=r"^the test split is empty: step 7 removed all 2 events of its 1 session\(s\) "
        r"\(1 of items unseen in training, then 1 of sessions shorter than "
        r"min_session_length=2\)$",
    ):
        preprocess(events, drop)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("test_days", -3, "test_days must be >= 0, got -3"),
        ("valid_days", -0.5, "valid_days must be >= 0, got -0.5"),
        ("valid_days", float("nan"), "valid_days must be >= 0, got nan"),
        ("session_gap", 0, "session_gap must be > 0, got 0"),
        ("min_item_support", 0, "min_item_support must be >= 1, got 0"),
        ("min_session_length", 0, "min_session_length must be >= 1, got 0"),
        ("min_session_length", -2, "min_session_length must be >= 1, got -2"),
    ],
)
def test_config_names_the_field_and_value_out_of_range(field, value, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        PreprocessConfig(**{field: value})
    PreprocessConfig(min_item_support=1, min_session_length=1)  # 1 keeps everything: legal


def _three_sessions(last_length: float = 5.0) -> pl.DataFrame:
    """Sessions [1, 2] on day 0, [1, 2, 3] on day 1, [1, 2] on day 2 (``last_length`` s long)."""
    return pl.DataFrame(
        {
            "session": [1, 1, 2, 2, 2, 3, 3],
            "item": [1, 2, 1, 2, 3, 1, 2],
            "time": [0.0, 100.0, DAY, DAY + 10, DAY + 20, 2 * DAY, 2 * DAY + last_length],
        }
    )


def test_test_days_zero_means_no_test_split():
    # Given the three sessions; when test_days is 0 (as valid_days=0 means no validation),
    ds = preprocess(_three_sessions(), PreprocessConfig(min_item_support=1, test_days=0))

    # then every event is in train and there is no test set.
    assert ds.test is None and ds.valid is None
    assert ds.item_ids[ds.train.items].tolist() == [1, 2, 1, 2, 3, 1, 2]
    assert ds.train.lengths.tolist() == [2, 3, 2]
    assert ds.stats["split_time"] is None and ds.stats["n_test_sessions"] == 0

    # With valid_days the validation boundary is one day before the last event (DAY + 5):
    # day 2's session is validation, day 1's is cut to one event and dropped.
    ds = preprocess(
        _three_sessions(), PreprocessConfig(min_item_support=1, test_days=0, valid_days=1)
    )
    assert ds.test is None and ds.stats["valid_split_time"] == DAY + 5
    assert ds.item_ids[ds.valid.items].tolist() == [1, 2]
    assert ds.item_ids[ds.train.items].tolist() == [1, 2]


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"split_time": 3 * DAY},
            (
                "the test split is empty: no session starts at or after split_time=259200; "
                "the last session starts at 172800.0"
            ),
        ),
        (
            # The last session lasts 30000 s, longer than the 21600 s of test_days=0.25.
            {"test_days": 0.25},
            (
                "the test split is empty: no session starts at or after 181200.0 (max time "
                "202800.0 - test_days=0.25); the last session starts at 172800.0"
            ),
        ),
        (
            # Test from 202800 - DAY = 116400; validation from 21600 s before: day 1's session
            # starts at 86400, before it.
            {"valid_days": 0.25},
            (
                "the validation split is empty: no session starts at or after 94800.0 (test split "
                "116400.0 - valid_days=0.25); the last session starts at 86400.0"
            ),
        ),
        (
            # No test split: validation from 21600 s before the last event.
            {"test_days": 0, "valid_days": 0.25},
            (
                "the validation split is empty: no session starts at or after 181200.0 (max "
                "time 202800.0 - valid_days=0.25); the last session starts at 172800.0"
            ),
        ),
        (
            {"split_time": -1},
            (
                "the training split is empty: no session of 2+ events before the test split at "
                "-1; check test_days/split_time"
            ),
        ),
    ],
    ids=[
        "split-time-after-the-last-session",
        "test-days-within-the-last-session",
        "valid",
        "valid-without-test",
        "train",
    ],
)
def test_an_empty_split_says_why(options, message):
    config = PreprocessConfig(min_item_support=1, **options)
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        preprocess(_three_sessions(last_length=30_000.0), config)


def test_leave_one_out():
    events = pl.DataFrame(
        {"user": ["a"] * 4 + ["b"] * 2, "item": [1, 2, 3, 4, 5, 1], "time": [None] * 6},
        schema_overrides={"time": pl.Float64},
    )
    config = PreprocessConfig(
        split="leave_one_out", min_item_support=1, min_session_length=1, event_types=None
    )
    ds = preprocess(events, config)
    ids = {raw: i for i, raw in enumerate(ds.item_ids)}
    assert ds.item_ids.tolist() == [1, 2, 5]  # items seen in training
    assert ds.train.items.tolist() == [ids[1], ids[2], ids[5], ids[1]]
    assert ds.valid.items.tolist() == [ids[1], ids[2], -1]  # item 3 is unseen in training
    assert ds.test.items.tolist() == [ids[1], ids[2], -1, -1]
    assert ds.test.predict.tolist() == [False, False, False, True]
    assert ds.test.times is None and ds.stats["n_test_unseen_targets"] == 1
    with pytest.raises(DataError, match="timestamps"):
        preprocess(events, PreprocessConfig(event_types=None))


def test_sequences_format_is_leave_one_out_without_filtering(shared_data):
    ds = load_dataset("sequences", shared_data / "amazon_beauty_s3rec/Beauty.txt")
    assert ds.test.n_sessions == ds.valid.n_sessions == 22_363  # every user has >= 5 items
    assert ds.train.n_events + 2 * 22_363 == 198_502
    assert ds.test.n_predictions == 22_363


def test_pairs_and_sessions_protocols():
    # Test sessions [7, 8, 9] and [8, 42] (42 unseen in training), written as SR-GNN pairs.
    train = [[7, 8], [8, 9, 7]]
    prefixes, targets = [[7, 8], [7], [8]], [9, 8, 42]

    pairs = dataset_from_pairs(train, prefixes, targets)
    sessions = dataset_from_pairs(train, prefixes, targets, test_protocol="sessions")

    assert pairs.item_ids.tolist() == [7, 8, 9]
    assert pairs.test.items.tolist() == [0, 1, 2, 0, 1, 1, -1]
    np.testing.assert_array_equal(pairs.test.lengths, [3, 2, 2])
    assert pairs.test.predict.tolist() == [0, 0, 1, 0, 1, 0, 1]
    assert sessions.test.n_sessions == 2
    assert sessions.test.items.tolist() == [0, 1, 2, 1, -1]
    # Whole sessions: every position after the first is a prediction point.
    assert sessions.test.prediction_mask().tolist() == [0, 1, 1, 0, 1]
    assert pairs.test.n_predictions == sessions.test.n_predictions == 3
    assert pairs.stats["n_test_unseen_targets"] == sessions.stats["n_test_unseen_targets"] == 1


def test_sessions_protocol_predicts_positions_the_pairs_left_out():
    # COTREC-style pairs without the length-1 prefix: session [5, 6, 7, 8] gives only
    # ([5, 6, 7], 8) and ([5, 6], 7); the sessions protocol also predicts 6 from [5].
    train = [[5, 6, 7, 8]]
    prefixes, targets = [[5, 6, 7], [5, 6]], [8, 7]

    pairs = dataset_from_pairs(train, prefixes, targets)
    sessions = dataset_from_pairs(train, prefixes, targets, test_protocol="sessions")

    assert pairs.test.n_predictions == 2
    assert sessions.test.items.tolist() == [0, 1, 2, 3]
    assert sessions.test.prediction_mask().tolist() == [0, 1, 1, 1]


def test_srgnn_sessions_protocol_on_shared_split(shared_data):
    ds = load_dataset("srgnn", shared_data / "retailrocket_cotrec", test_protocol="sessions")
    # COTREC prefixes have length >= 2, so each of the 4,735 sessions adds its second item to
    # the 15,132 published targets (SOURCE.md counts).
    assert ds.test.n_sessions == 4_735 and ds.test.n_predictions == 15_132 + 4_735
    assert not ds.test.prediction_mask()[ds.test.offsets[:-1]].any()
    assert ds.stats["n_test_unseen_targets"] == 0 and ds.n_items == 36_968


def test_save_load_roundtrip(tmp_path):
    log = SessionLog.from_sessions([[0, 1], [1, 2, 0]], times=[1.0, 2.0, 3.0, 4.0, 5.0])
    test = SessionLog.from_sessions([[2, -1]], predict=[False, True])
    ds = Dataset(log, test, None, np.array(["a", "b", "c"], dtype=object), {"k": np.int64(3)})

    ds.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")

    assert back.item_ids.tolist() == ["a", "b", "c"] and back.valid is None
    for name in ("items", "offsets", "times"):
        np.testing.assert_array_equal(getattr(back.train, name), getattr(log, name))
    np.testing.assert_array_equal(back.test.predict, test.predict)
    assert back.test.times is None and back.stats == {"k": 3}
    np.testing.assert_array_equal(back.item_supports(), [2, 2, 1])


def test_failed_save_keeps_the_previous_files(tmp_path, monkeypatch):
    good = Dataset(SessionLog.from_sessions([[0, 1]]), None, None, np.array([5, 6]))
    good.save(tmp_path)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        Dataset(SessionLog.from_sessions([[0]]), None, None, np.array([9])).save(tmp_path)
    assert Dataset.load(tmp_path).item_ids.tolist() == [5, 6]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz", "dataset.json"]


def test_saved_published_split_reloads_identically(shared_data, tmp_path):
    # How much faster the reload is belongs to benchmarks/data_pipeline.py, not to a test.
    ds = load_dataset("srgnn", shared_data / "diginetica_srgnn_processed")
    ds.save(tmp_path)
    back = Dataset.load(tmp_path)
    assert back.train.n_events == 906_140
    for split in ("train", "test"):
        a, b = getattr(ds, split), getattr(back, split)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_array_equal(a.offsets, b.offsets)
        np.testing.assert_array_equal(a.prediction_mask(), b.prediction_mask())
    np.testing.assert_array_equal(ds.item_ids, back.item_ids)


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="arrays.npz: missing"):
        Dataset.load(tmp_path)
    (tmp_path / "arrays.npz").write_bytes(b"not a zip")
    (tmp_path / "dataset.json").write_text('{"format_version": 1}')
    with pytest.raises(DataError, match="arrays.npz: unreadable"):
        Dataset.load(tmp_path)


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    import os

    from gru_jax.data.dataset import write_text_atomic

    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777
    assert mode("a.txt") == mode("b.txt") == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no temp file left
