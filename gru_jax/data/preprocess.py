"""GRU4Rec's preprocessing recipe: event table -> `Dataset`.

Follows ``hidasib/gru4rec_third_party_comparison:*_preproc.py`` (summarised in
``../shared/reference/gru4rec.md`` section 9); each step is an option of `PreprocessConfig`:

1. keep the chosen event types (views/clicks by default; only when the table has a ``type``);
2. where there is no session id, cut each user's events into sessions at idle gaps (1 hour);
3. sort by (session, time), ties kept in file order (the authors' Diginetica script breaks them
   by item id, which matters only for events of one session at the same time);
4. remove consecutive repeats of an item within a session (``dedupe``; the authors' scripts do,
   the older RSC15 script does not);
5. until nothing changes: drop items with fewer than 5 events, then sessions with fewer than 2;
6. time split: sessions starting at or after ``t_split = max_time - test_days`` are the test set;
   train keeps the events before ``t_split`` (sessions crossing it are cut), then drops sessions
   shorter than 2. With ``valid_days`` the same split inside train gives train/validation;
   ``test_days=0`` (without ``split_time``) means no test set, as ``valid_days=0`` means no
   validation set;
7. drop test (validation) events whose item is not in train, then sessions shorter than 2.
   A test (validation) set left empty by steps 6-7 is an error that says why.

``split="leave_one_out"`` replaces steps 6-7 by the per-user protocol of SASRec/S3-Rec: last item
test, second last validation, the rest train (sequences shorter than 3 all go to train).

`load_dataset(format, paths, ...)` reads and preprocesses in one call; the published benchmark
splits (``srgnn``) and per-user ``sequences`` keep their given split.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from gru_jax.data.dataset import DataError, Dataset, SessionLog, map_item_ids
from gru_jax.data.readers import Paths, chain_test_pairs, read_events, read_srgnn_split

DAY = 86_400.0
DEFAULT_EVENT_TYPES = ("click", "clicks", "view", "views", "detail", "pageview")


@dataclasses.dataclass
class PreprocessConfig:
    """Options of the preprocessing recipe (step numbers as in the module docstring)."""

    # 1. Event types to keep; None keeps all. The default is ignored when the event table has no
    # `type` column; other types are then refused.
    event_types: tuple[str, ...] | None = DEFAULT_EVENT_TYPES
    # 2. Idle gap in seconds that starts a new session when the source has users but no sessions.
    session_gap: float = 3600.0
    # 4. Remove consecutive repeats of the same item within a session, as the authors' scripts
    #    do (the older RSC15 script does not, one reason its figures differ from Yoochoose's).
    dedupe: bool = True
    # 5. Minimum number of events of an item, and of a session (test sessions too, step 7);
    #    1 keeps every item (session).
    min_item_support: int = 5
    min_session_length: int = 2
    # 5. Repeat the two filters until nothing changes (False: one pass, items then sessions).
    iterative_filter: bool = True
    # 6. "time" (GRU4Rec) or "leave_one_out" (per-user: last item test, second last validation).
    split: str = "time"
    # 6. Days at the end of the log that form the test set; 7 for RetailRocket and Diginetica.
    #    0 means no test split (test is None): every event goes to train (and validation).
    test_days: float = 1.0
    # 6. Days before the test boundary that form the validation set; 0 means no validation split.
    valid_days: float = 0.0
    # 6. Fixed test boundary (Unix seconds) instead of max_time - test_days (test_days is then
    #    ignored, 0 included).
    split_time: float | None = None
    # 7. Drop test/validation events whose item is not in train (False keeps them as item -1).
    drop_unseen_test_items: bool = True

    def __post_init__(self) -> None:
        if self.split not in ("time", "leave_one_out"):
            raise ValueError(f"split must be 'time' or 'leave_one_out', got {self.split!r}")
        if self.event_types is not None:
            self.event_types = tuple(self.event_types)
        # `not x >= 0` also refuses NaN, which `x < 0` lets through.
        for name in ("test_days", "valid_days"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.session_gap > 0:
            raise ValueError(f"session_gap must be > 0, got {self.session_gap!r}")
        # 0 or less would silently filter as 1 does (nothing); no session has 0 events.
        for name in ("min_item_support", "min_session_length"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


# ---------------------------------------------------------------------------------------------
# Steps 1-3 on the polars table, then integer codes in NumPy.
# ---------------------------------------------------------------------------------------------


def _check_table(events: pl.DataFrame) -> None:
    missing = [c for c in ("item", "time") if c not in events.columns]
    if "session" not in events.columns and "user" not in events.columns:
        missing.append("session or user")
    if missing:
        raise DataError(f"event table lacks column(s) {missing}; has {events.columns}")


def _filter_types(events: pl.DataFrame, config: PreprocessConfig, stats: dict) -> pl.DataFrame:
    if "type" not in events.columns and config.event_types not in (None, DEFAULT_EVENT_TYPES):
        # Asked for by name, so ignoring it would silently keep events the user meant to drop.
        raise DataError(
            f"event_types {list(config.event_types)} asked for, but these events have no type "
            "column (give a type column, or leave event_types at its default)"
        )
    if "type" not in events.columns or config.event_types is None:
        stats["removed_event_type"] = 0
        return events
    kept = events.filter(pl.col("type").is_in(list(config.event_types)))
    stats["removed_event_type"] = events.height - kept.height
    if kept.height == 0 and events.height:
        present = events["type"].unique().sort().to_list()[:20]
        raise DataError(
            f"no events of types {list(config.event_types)} (types present: {present}); "
            "set event_types"
        )
    return kept


def _sessionise(events: pl.DataFrame, config: PreprocessConfig, stats: dict) -> pl.DataFrame:
    """Step 2: gives every event a session id (run id over (user, idle gap))."""
    if "session" in events.columns:
        stats["n_sessions_from_gap"] = 0
        return events
    events = events.sort(["user", "time"], maintain_order=True, nulls_last=True)
    if config.split == "leave_one_out":
        new = pl.col("user") != pl.col("user").shift(1)
    else:
        if events["time"].null_count():
            raise DataError("cannot cut sessions by idle gap: the events have no timestamps")
        gap = pl.col("time") - pl.col("time").shift(1)
        new = (pl.col("user") != pl.col("user").shift(1)) | (gap > config.session_gap)
    events = events.with_columns(session=new.fill_null(True).cum_sum())
    stats["n_sessions_from_gap"] = int(events["session"][-1]) if events.height else 0
    return events


def _is_sorted(events: pl.DataFrame) -> bool:
    """Whether the table is already sorted by (session, time) (GRU4Rec files usually are)."""
    if events["time"].null_count() or events.height < 2:
        return False
    session, time = pl.col("session"), pl.col("time")
    prev_session, prev_time = session.shift(1), time.shift(1)
    in_order = (session > prev_session) | ((session == prev_session) & (time >= prev_time))
    return bool(events.select(in_order.slice(1).all()).item())


def _item_codes(items: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(code of every event, sorted raw ids): code = position of the raw id in the sorted ids."""
    if items.dtype.is_integer():
        raw = items.to_numpy()
        lo, hi = int(raw.min()), int(raw.max())
        if hi - lo <= 4 * len(raw) + 1_000_000:  # a lookup table beats sorting 10M ids
            shifted = raw - lo
            present = np.zeros(hi - lo + 1, dtype=bool)
            present[shifted] = True
            lut = np.cumsum(present, dtype=np.int64) - 1
            return lut[shifted], np.flatnonzero(present) + lo
    codes = (items.rank("dense").cast(pl.Int64) - 1).to_numpy()
    return codes, items.unique().sort().to_numpy()


def _codes(events: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Step 3: sorts by (session, time) stably; returns (session run ids, item codes, times,
    raw item ids sorted) with item code = position in the sorted raw ids."""
    if not _is_sorted(events):
        has_nulls = events["time"].null_count() > 0
        events = events.sort(["session", "time"], maintain_order=True, nulls_last=has_nulls)
    sid = events.select(pl.col("session").rle_id().cast(pl.Int64))["session"].to_numpy()
    codes, raw_items = _item_codes(events["item"])
    times = None if events["time"].null_count() else events["time"].to_numpy()
    return sid, codes, times, raw_items


# ---------------------------------------------------------------------------------------------
# Steps 4-7 on sorted integer arrays.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Events:
    """Events sorted by (session, time): session ids non-decreasing, item codes, times."""

    sid: np.ndarray
    item: np.ndarray
    time: np.ndarray | None

    def take(self, keep: np.ndarray) -> _Events:
        return _Events(
            self.sid[keep], self.item[keep], None if self.time is None else self.time[keep]
        )

    def __len__(self) -> int:
        return len(self.sid)

    def session_lengths_per_event(self) -> np.ndarray:
        starts = np.flatnonzero(np.r_[True, self.sid[1:] != self.sid[:-1]]) if len(self) else []
        lengths = np.diff(np.r_[starts, len(self)])
        return np.repeat(lengths, lengths)

    def session_start_times(self) -> np.ndarray:
        """float64 (N,) the time of the first event of each event's session."""
        starts = np.flatnonzero(np.r_[True, self.sid[1:] != self.sid[:-1]]) if len(self) else []
        lengths = np.diff(np.r_[starts, len(self)])
        return np.repeat(self.time[starts], lengths)


def _dedupe(ev: _Events, stats: dict) -> _Events:
    repeat = np.zeros(len(ev), dtype=bool)
    repeat[1:] = (ev.sid[1:] == ev.sid[:-1]) & (ev.item[1:] == ev.item[:-1])
    stats["removed_consecutive_repeats"] = int(repeat.sum())
    return ev.take(~repeat)


def _filter_support_and_length(ev: _Events, config: PreprocessConfig, stats: dict) -> _Events:
    """Step 5: items below min_item_support, then sessions below min_session_length, repeated.

    Works on a keep-mask (counts by weighted bincount) and compacts once at the end.
    """
    keep = np.ones(len(ev), dtype=bool)
    n_items = int(ev.item.max()) + 1 if len(ev) else 0
    n_sessions = int(ev.sid.max()) + 1 if len(ev) else 0
    removed_items = removed_sessions = rounds = 0
    while True:
        rounds += 1
        dropped = 0
        if config.min_item_support > 1:
            support = np.bincount(ev.item, weights=keep, minlength=n_items)
            drop = keep & (support[ev.item] < config.min_item_support)
            n = int(drop.sum())
            keep &= ~drop
            removed_items, dropped = removed_items + n, dropped + n
        if config.min_session_length > 1:
            length = np.bincount(ev.sid, weights=keep, minlength=n_sessions)
            drop = keep & (length[ev.sid] < config.min_session_length)
            n = int(drop.sum())
            keep &= ~drop
            removed_sessions, dropped = removed_sessions + n, dropped + n
        if not dropped or not config.iterative_filter:
            break
    stats.update(
        removed_item_support=removed_items,
        removed_short_sessions=removed_sessions,
        filter_rounds=rounds,
    )
    return ev.take(keep)


def _drop_short(ev: _Events, min_length: int) -> tuple[_Events, int]:
    if min_length <= 1 or not len(ev):
        return ev, 0
    keep = ev.session_lengths_per_event() >= min_length
    return ev.take(keep), int((~keep).sum())


def _time_cut(ev: _Events, t_split: float, min_length: int) -> tuple[_Events, _Events, dict]:
    """Sessions starting at or after t_split -> held out; events before t_split -> kept."""
    held = ev.session_start_times() >= t_split
    before = ev.time < t_split
    kept, removed_short = _drop_short(ev.take(before), min_length)
    counts = {"removed_cut_at_split": int((~before & ~held).sum()), "removed_short": removed_short}
    return kept, ev.take(held), counts


def _drop_unseen(ev: _Events, known: np.ndarray, config: PreprocessConfig) -> tuple[_Events, dict]:
    """Step 7 for a held-out split: unseen items, then short sessions."""
    seen = known[ev.item]
    if config.drop_unseen_test_items:
        ev = ev.take(seen)
    ev, removed_short = _drop_short(ev, config.min_session_length)
    removed_unseen = int((~seen).sum()) if config.drop_unseen_test_items else 0
    return ev, {"removed_unseen_items": removed_unseen, "removed_short": removed_short}


def _to_log(ev: _Events, dense: np.ndarray, predict: np.ndarray | None = None) -> SessionLog:
    """Events with item codes -> SessionLog with dense item ids (-1 where not in the index)."""
    starts = np.flatnonzero(np.r_[True, ev.sid[1:] != ev.sid[:-1]]) if len(ev) else np.zeros(0)
    offsets = np.r_[starts, len(ev)].astype(np.int64)
    return SessionLog(dense[ev.item], offsets, ev.time, predict)


def _present(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """The distinct codes, sorted (np.unique without sorting every event)."""
    return np.flatnonzero(np.bincount(codes, minlength=n_codes))


def _index(items_in_train: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """(known mask over codes, dense id per code with -1 for codes not in train)."""
    known = np.zeros(n_codes, dtype=bool)
    known[items_in_train] = True
    dense = np.full(n_codes, -1, dtype=np.int64)
    dense[known] = np.arange(int(known.sum()))
    return known, dense


def _check_held_out(
    name: str, held: _Events, kept: _Events, counts: dict, config: PreprocessConfig
) -> None:
    """Raises DataError when step 7 removed every event of the held-out split ``name``."""
    if len(kept):
        return
    n_sessions = int(np.count_nonzero(np.r_[True, held.sid[1:] != held.sid[:-1]]))
    unseen = f"{counts['removed_unseen_items']} of items unseen in training, then "
    raise DataError(
        f"the {name} split is empty: step 7 removed all {len(held)} events of its {n_sessions} "
        f"session(s) ({unseen if config.drop_unseen_test_items else ''}"
        f"{counts['removed_short']} of sessions shorter than "
        f"min_session_length={config.min_session_length})"
    )


def _no_session_after(name: str, boundary: str, ev: _Events) -> DataError:
    """The error for a held-out split that no session starts in."""
    last_start = float(ev.session_start_times().max())
    return DataError(
        f"the {name} split is empty: no session starts at or after {boundary}; the last session "
        f"starts at {last_start!r}"
    )


def _split_by_time(ev: _Events, raw_items: np.ndarray, config: PreprocessConfig, stats: dict):
    if ev.time is None:
        raise DataError("a time split needs timestamps; use split='leave_one_out'")
    t_max = float(ev.time.max())
    t_split = config.split_time if config.split_time is not None else t_max - config.test_days * DAY
    has_test = config.split_time is not None or config.test_days > 0  # test_days=0: no test
    if has_test:
        train, test, counts = _time_cut(ev, t_split, config.min_session_length)
        if not len(test):
            raise _no_session_after(
                "test",
                f"split_time={t_split!r}"
                if config.split_time is not None
                else f"{t_split!r} (max time {t_max!r} - test_days={config.test_days!r})",
                ev,
            )
        if not len(train):  # also before the validation split looks for sessions in it
            raise DataError(
                f"the training split is empty: no session of {config.min_session_length}+ "
                f"events before the test split at {t_split!r}; check test_days/split_time"
            )
    else:
        train, test, counts = ev, None, {"removed_cut_at_split": 0, "removed_short": 0}
    stats.update(
        split_time=t_split if has_test else None,
        removed_train_cut_at_split=counts["removed_cut_at_split"],
        removed_train_short_sessions=counts["removed_short"],
    )

    valid = None
    known_full, dense = _index(_present(train.item, len(raw_items)), len(raw_items))
    if config.valid_days > 0:
        v_split = t_split - config.valid_days * DAY
        before_valid = train
        train, held, counts = _time_cut(train, v_split, config.min_session_length)
        if not len(held):
            base = "test split" if has_test else "max time"
            boundary = f"{v_split!r} ({base} {t_split!r} - valid_days={config.valid_days!r})"
            raise _no_session_after("validation", boundary, before_valid)
        stats.update(
            valid_split_time=v_split,
            removed_train_cut_at_valid_split=counts["removed_cut_at_split"],
            removed_train_short_sessions_valid=counts["removed_short"],
        )
        known_tr = np.zeros(len(raw_items), dtype=bool)
        known_tr[train.item] = True
        valid, counts = _drop_unseen(held, known_tr, config)
        _check_held_out("validation", held, valid, counts, config)
        stats.update(
            removed_valid_unseen_items=counts["removed_unseen_items"],
            removed_valid_short_sessions=counts["removed_short"],
        )
    counts = {"removed_unseen_items": 0, "removed_short": 0}
    if test is not None:
        held = test
        test, counts = _drop_unseen(held, known_full, config)
        _check_held_out("test", held, test, counts, config)
    stats.update(
        removed_test_unseen_items=counts["removed_unseen_items"],
        removed_test_short_sessions=counts["removed_short"],
    )
    return Dataset(
        train=_to_log(train, dense),
        test=None if test is None else _to_log(test, dense),
        valid=None if valid is None else _to_log(valid, dense),
        item_ids=raw_items[known_full],
        stats=stats,
    )


def _split_leave_one_out(ev: _Events, raw_items: np.ndarray, stats: dict) -> Dataset:
    n_per_event = ev.session_lengths_per_event()
    starts = np.flatnonzero(np.r_[True, ev.sid[1:] != ev.sid[:-1]]) if len(ev) else np.zeros(0, int)
    pos = np.arange(len(ev)) - np.repeat(starts, np.diff(np.r_[starts, len(ev)]))
    held = n_per_event >= 3
    in_train = ~held | (pos < n_per_event - 2)
    in_valid = held & (pos < n_per_event - 1)
    known, dense = _index(_present(ev.item[in_train], len(raw_items)), len(raw_items))

    def held_out(mask: np.ndarray) -> SessionLog:
        sub = ev.take(mask)
        last = np.r_[sub.sid[1:] != sub.sid[:-1], True] if len(sub) else np.zeros(0, bool)
        return _to_log(sub, dense, predict=last)

    test, valid = held_out(held), held_out(in_valid)
    stats.update(
        n_users_too_short_for_holdout=int((np.diff(np.r_[starts, len(ev)]) < 3).sum()),
        n_test_unseen_targets=int((test.items[test.predict] < 0).sum()),
        n_valid_unseen_targets=int((valid.items[valid.predict] < 0).sum()),
    )
    return Dataset(
        train=_to_log(ev.take(in_train), dense),
        test=test,
        valid=valid,
        item_ids=raw_items[known],
        stats=stats,
    )


def preprocess(events: pl.DataFrame, config: PreprocessConfig | None = None) -> Dataset:
    """Runs the recipe on an event table (see `gru_jax.data.readers`) and returns the dataset.

    ``stats`` records the events each step removed (``removed_*``), the split times, and the
    final sizes (``n_train_events``, ``n_test_sessions``, ``n_items``, ...).
    """
    config = config or PreprocessConfig()
    _check_table(events)
    stats: dict[str, Any] = {"config": dataclasses.asdict(config), "n_events_read": events.height}
    if events.height == 0:
        raise DataError("the event table is empty")

    events = _filter_types(events, config, stats)
    events = _sessionise(events, config, stats)
    sid, item, time, raw_items = _codes(events)
    ev = _Events(sid, item, time)
    if config.dedupe:
        ev = _dedupe(ev, stats)
    else:
        stats["removed_consecutive_repeats"] = 0
    ev = _filter_support_and_length(ev, config, stats)
    if not len(ev):
        raise DataError(
            "no events left after the item-support and session-length filters "
            f"(min_item_support={config.min_item_support}, "
            f"min_session_length={config.min_session_length})"
        )
    stats["n_events_filtered"] = len(ev)

    if config.split == "time":
        dataset = _split_by_time(ev, raw_items, config, stats)
    else:
        dataset = _split_leave_one_out(ev, raw_items, stats)
    if dataset.train.n_events == 0:
        raise DataError("the training split is empty; check test_days/valid_days/split_time")
    stats.update(dataset.summary())
    return dataset


# ---------------------------------------------------------------------------------------------
# Given splits.
# ---------------------------------------------------------------------------------------------


def _concat_sessions(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter(itertools.chain.from_iterable(seqs), np.int64, count=int(lengths.sum()))
    return flat, np.r_[0, np.cumsum(lengths)].astype(np.int64)


def _append_targets(
    prefixes: Sequence[Sequence[int]], targets: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Sessions ``prefixes[i] + [targets[i]]`` as (flat items, offsets)."""
    flat, offsets = _concat_sessions(prefixes)
    flat = np.insert(flat, offsets[1:], np.asarray(targets, dtype=np.int64))
    return flat, offsets + np.arange(len(offsets))


def dataset_from_pairs(
    train: Sequence[Sequence[int]],
    prefixes: Sequence[Sequence[int]],
    targets: Sequence[int],
    *,
    test_protocol: str = "pairs",
) -> Dataset:
    """Builds a dataset from a published split (SR-GNN/GCE-GNN/COTREC).

    Args:
      train: training sessions (raw item ids).
      prefixes, targets: the test pairs.
      test_protocol: "pairs": every (prefix, target) pair is one test session ``prefix + [target]``
        predicted only at its last event, exactly the published protocol. "sessions": the pairs
        cut from one session are merged back into that session (see `chain_test_pairs`: the
        longest prefix plus its target) and, as GRU4Rec evaluates, every position after the
        first is predicted. Where a split left out some positions (COTREC's RetailRocket has
        no prefix of length 1) this predicts more events than "pairs".
    """
    if test_protocol not in ("pairs", "sessions"):
        raise ValueError(f"test_protocol must be 'pairs' or 'sessions', got {test_protocol!r}")
    train_flat, train_offsets = _concat_sessions(train)
    if not len(train_flat):
        raise DataError("the training sessions of the split hold no items")
    item_ids, train_items = np.unique(train_flat, return_inverse=True)

    if test_protocol == "pairs":
        flat, offsets = _append_targets(prefixes, targets)
        predict = np.zeros(len(flat), dtype=bool)
        predict[offsets[1:] - 1] = True
    else:
        chain = chain_test_pairs(list(prefixes), list(targets))
        first = np.flatnonzero(np.r_[True, chain[1:] != chain[:-1]]) if len(chain) else []
        flat, offsets = _append_targets([prefixes[i] for i in first], [targets[i] for i in first])
        predict = None  # every event but each session's first

    test = SessionLog(map_item_ids(flat, item_ids), offsets, None, predict)
    stats = {
        "test_protocol": test_protocol,
        "n_test_pairs": len(targets),
        "n_test_unseen_targets": int((test.items[test.prediction_mask()] < 0).sum()),
        "n_test_unseen_events": int((test.items < 0).sum()),
    }
    dataset = Dataset(
        train=SessionLog(train_items.astype(np.int32), train_offsets),
        test=test,
        valid=None,
        item_ids=item_ids,
        stats=stats,
    )
    stats.update(dataset.summary())
    return dataset


def _sorted_sessions(events: pl.DataFrame, config: PreprocessConfig) -> pl.DataFrame:
    """Steps 2-3 only: session ids (idle gap where there are none), sorted by (session, time)."""
    _check_table(events)
    events = _sessionise(events, config, {})
    if not _is_sorted(events):
        events = events.sort(["session", "time"], maintain_order=True)
    return events.select(pl.col("session").rle_id().cast(pl.Int64), "item", "time")


def dataset_from_files(
    format: str, train: Paths, test: Paths | None = None, **reader_options
) -> Dataset:
    """A dataset from files that are already preprocessed and split (the official GRU4Rec's
    input: a train file and a test file), used exactly as given: no event is filtered.

    The item index is built from the training events; a test item unseen in training gets
    index -1 and is dropped at evaluation time, as the original's inner join does.
    """
    config = PreprocessConfig(**AS_GIVEN)
    logs = {"train": read_events(format, train, **reader_options)}
    if test is not None:
        logs["test"] = read_events(format, test, **reader_options)
    frames = {}
    for name, events in logs.items():
        paths = test if name == "test" else train
        if events.height == 0:
            raise DataError(f"the {name} file(s) {paths} hold no events")
        # Without timestamps (per-user sequences) each user's events, in file order, are one
        # session: there is no idle gap to cut at.
        untimed = events["time"].null_count() == events.height
        try:
            frames[name] = _sorted_sessions(
                events, dataclasses.replace(config, split="leave_one_out") if untimed else config
            )
        except DataError as e:
            raise DataError(f"the {name} file(s) {paths}: {e}") from None
    columns = [f["item"] for f in frames.values()]
    common = pl.Int64 if all(c.dtype.is_integer() for c in columns) else pl.String
    items = pl.concat([c.cast(common) for c in columns])
    codes, raw_items = _item_codes(items)
    n_train = frames["train"].height
    known, dense = _index(_present(codes[:n_train], len(raw_items)), len(raw_items))

    def to_log(frame: pl.DataFrame, item_codes: np.ndarray) -> SessionLog:
        time = None if frame["time"].null_count() else frame["time"].to_numpy()
        ev = _Events(frame["session"].to_numpy(), item_codes, time)
        return _to_log(ev, dense)

    train_log = to_log(frames["train"], codes[:n_train])
    test_log = to_log(frames["test"], codes[n_train:]) if "test" in frames else None
    stats: dict[str, Any] = {"format": format, "given_split": True}
    if test_log is not None:
        stats["n_test_unseen_events"] = int((test_log.items < 0).sum())
    dataset = Dataset(train_log, test_log, None, raw_items[known], stats)
    stats.update(dataset.summary())
    return dataset


# The recipe's settings that keep every event, for files used as given.
AS_GIVEN = {"event_types": None, "min_item_support": 1, "min_session_length": 1, "dedupe": False}
# Published per-user sequences (already 5-core filtered): kept as given, split leave-one-out.
SEQUENCES_AS_GIVEN = PreprocessConfig(**AS_GIVEN, split="leave_one_out")


def load_dataset(
    format: str,
    paths: Paths,
    *,
    config: PreprocessConfig | None = None,
    test_protocol: str = "pairs",
    **reader_options,
) -> Dataset:
    """Reads ``paths`` in ``format`` and preprocesses them.

    - ``srgnn``: the published split is used as given (``config`` must be None); see
      `dataset_from_pairs` for ``test_protocol``.
    - ``sequences``: leave-one-out per user; without a config no event is filtered (the public
      files are already 5-core filtered).
    - every other format: `preprocess` with ``config`` (default `PreprocessConfig()`).
    """
    if format == "srgnn":
        if config is not None:
            raise ValueError("srgnn splits are used as given; config is not supported")
        train, prefixes, targets = read_srgnn_split(paths)
        dataset = dataset_from_pairs(train, prefixes, targets, test_protocol=test_protocol)
        dataset.stats["format"] = format
        return dataset
    events = read_events(format, paths, **reader_options)
    if format == "sequences":
        config = config or SEQUENCES_AS_GIVEN
        if config.split != "leave_one_out":
            raise ValueError("sequences have no timestamps; use split='leave_one_out'")
    dataset = preprocess(events, config)
    dataset.stats["format"] = format
    return dataset
