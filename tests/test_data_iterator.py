"""Tests for gru_jax.data.iterator: exact session-parallel rows, sharding, resume, shuffling."""

import numpy as np
import pytest

from gru_jax.data import Batch, SessionLog, SessionParallelIterator


def _stack(batches: list[Batch]) -> Batch:
    return Batch(*(np.concatenate(a) for a in zip(*batches, strict=True)))


def _rows(batch: Batch) -> list[tuple]:
    """(inputs, targets, resets, mask) of every step as plain lists."""
    return [
        (
            batch.inputs[t].tolist(),
            batch.targets[t].tolist(),
            batch.resets[t].astype(int).tolist(),
            batch.mask[t].astype(int).tolist(),
        )
        for t in range(len(batch.inputs))
    ]


def _reference(log: SessionLog, batch_size: int, order: np.ndarray, min_rows: int = 1) -> Batch:
    """GRU4Rec's loop written plainly: one step at a time; after a step, the rows whose session
    ended take the next sessions in increasing row order; rows with nothing left are masked;
    once fewer than ``min_rows`` rows play, the epoch ends (the official code with n_sample=0
    breaks when n_valid < 2)."""
    queue = [int(s) for s in order if log.lengths[s] >= 2]
    rows: list[list[int] | None] = [None] * batch_size  # [session, position]
    for r in range(batch_size):
        if queue:
            rows[r] = [queue.pop(0), 0]
    out = []
    while sum(cur is not None for cur in rows) >= max(min_rows, 1):
        step = np.zeros((5, batch_size), dtype=np.int64)
        for r, cur in enumerate(rows):
            if cur is None:
                continue
            s, j = cur
            e = log.offsets[s] + j
            target_ok = log.prediction_mask()[e + 1] and log.items[e + 1] >= 0
            step[:, r] = log.items[e], log.items[e + 1], j == 0, 1, target_ok
        out.append(step)
        for r, cur in enumerate(rows):
            if cur is None:
                continue
            cur[1] += 1
            if cur[1] == log.lengths[cur[0]] - 1:
                rows[r] = [queue.pop(0), 0] if queue else None
    arr = np.stack(out, axis=1) if out else np.zeros((5, 0, batch_size), np.int64)
    return Batch(arr[0], arr[1], arr[2].astype(bool), arr[3].astype(bool), arr[4].astype(bool))


def _random_log(rng, n_sessions=40, n_items=30, with_times=True) -> SessionLog:
    lengths = rng.integers(1, 7, n_sessions)
    times = None
    if with_times:
        starts = rng.permutation(n_sessions).astype(float) * 100
        times = np.repeat(starts, lengths) + np.concatenate([np.arange(n) for n in lengths])
    offsets = np.r_[0, np.cumsum(lengths)]
    return SessionLog(rng.integers(0, n_items, lengths.sum()), offsets, times)


def test_exact_rows_with_length_two_sessions_and_epoch_end():
    # Given four sessions (two of length 2) and B = 2.
    log = SessionLog.from_sessions([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11]])
    it = SessionParallelIterator(log, 2)

    # When iterating one step at a time.
    rows = _rows(_stack(list(it.epoch(0))))

    # Then row 1 moves to session 2 after one step, row 0 to session 3 after two, and at the
    # end of the epoch the finished row 0 is masked with zeros.
    assert rows == [
        ([1, 4], [2, 5], [1, 1], [1, 1]),
        ([2, 6], [3, 7], [0, 1], [1, 1]),
        ([10, 7], [11, 8], [1, 0], [1, 1]),
        ([0, 8], [0, 9], [0, 0], [0, 1]),
    ]
    assert len(it) == 4 and it.num_steps == 4 and it.num_targets == 7


def test_without_sampled_negatives_the_epoch_ends_when_one_row_is_left():
    # The sessions of the test above: from step 3 on only row 1 (session 2) plays.
    log = SessionLog.from_sessions([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11]])
    it = SessionParallelIterator(log, 2, min_rows=2)

    rows = _rows(_stack(list(it.epoch(0))))

    assert rows == [
        ([1, 4], [2, 5], [1, 1], [1, 1]),
        ([2, 6], [3, 7], [0, 1], [1, 1]),
        ([10, 7], [11, 8], [1, 0], [1, 1]),
    ]
    assert it.num_steps == 3 and it.num_targets == 6  # of the 7 pairs, 6 played
    with pytest.raises(ValueError, match="min_rows"):
        SessionParallelIterator(log, 2, min_rows=3)


@pytest.mark.parametrize("batch_size, steps", [(2, 1), (3, 4), (8, 3)])
def test_min_rows_matches_the_plain_loop_on_random_logs(batch_size, steps):
    rng = np.random.default_rng(batch_size + 100)
    log = _random_log(rng)
    order = np.argsort(log.times[log.offsets[:-1]], kind="stable")
    want = _reference(log, batch_size, order, min_rows=2)

    it = SessionParallelIterator(log, batch_size, steps=steps, min_rows=2)
    got = _stack(list(it.epoch(0)))

    n = len(want.inputs)
    assert it.num_steps == n <= len(_reference(log, batch_size, order).inputs)
    assert it.num_targets == int(want.mask.sum())
    assert not got.mask[n:].any()  # padding of the last dispatch only
    for name, g, w in zip(Batch._fields, got, want, strict=True):
        np.testing.assert_array_equal(g[:n], w, err_msg=name)


def test_several_steps_per_dispatch_pad_the_last_one():
    log = SessionLog.from_sessions([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11]])
    it = SessionParallelIterator(log, 2, steps=3)

    batches = list(it.epoch(0))

    assert len(it) == len(batches) == 2
    assert all(b.inputs.shape == (3, 2) and b.inputs.dtype == np.int32 for b in batches)
    assert _rows(batches[1]) == [
        ([0, 8], [0, 9], [0, 0], [0, 1]),
        ([0, 0], [0, 0], [0, 0], [0, 0]),
        ([0, 0], [0, 0], [0, 0], [0, 0]),
    ]
    # drop_last removes the partial dispatch.
    assert len(SessionParallelIterator(log, 2, steps=3, drop_last=True)) == 1


def test_batch_larger_than_number_of_sessions_and_short_sessions_skipped():
    # Given 3 playable sessions, one of length 1 (no target) and B = 5.
    log = SessionLog.from_sessions([[1, 2], [3], [4, 5, 6], [7, 8]])
    it = SessionParallelIterator(log, 5)

    rows = _rows(_stack(list(it.epoch(0))))

    # Then rows 3 and 4 never play and the length-1 session is skipped.
    assert rows == [
        ([1, 4, 7, 0, 0], [2, 5, 8, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]),
        ([0, 5, 0, 0, 0], [0, 6, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0]),
    ]


def test_sessions_play_in_first_event_time_order():
    # Session 1 starts first in time although it is second in the log.
    log = SessionLog.from_sessions([[1, 2], [3, 4]], times=[20.0, 21.0, 10.0, 11.0])
    first = next(iter(SessionParallelIterator(log, 1).epoch(0)))
    assert first.inputs.tolist() == [[3]] and first.targets.tolist() == [[4]]


@pytest.mark.parametrize("batch_size", [1, 3, 8, 64])
def test_matches_plain_gru4rec_loop_on_random_logs(batch_size):
    rng = np.random.default_rng(batch_size)
    log = _random_log(rng)
    order = np.argsort(log.times[log.offsets[:-1]], kind="stable")

    got = _stack(list(SessionParallelIterator(log, batch_size).epoch(0)))
    want = _reference(log, batch_size, order)

    for name, g, w in zip(Batch._fields, got, want, strict=True):
        np.testing.assert_array_equal(g, w, err_msg=name)


def test_predict_follows_log_and_unseen_targets():
    # Pair-style test sessions: only the last event is predicted; -1 marks an unseen item.
    predict = np.array([0, 0, 1, 0, 1], dtype=bool)
    log = SessionLog.from_sessions([[1, 2, 3], [4, -1]], predict=predict)
    b = _stack(list(SessionParallelIterator(log, 2).epoch(0)))
    assert b.predict.astype(int).tolist() == [[0, 0], [1, 0]]
    assert b.targets.tolist() == [[2, -1], [3, 0]] and b.mask[0].all()


@pytest.mark.parametrize("num_shards", [2, 4])
def test_shards_are_contiguous_row_slices_of_the_global_plan(num_shards):
    log = _random_log(np.random.default_rng(7), n_sessions=60)
    full = _stack(list(SessionParallelIterator(log, 8, steps=4).epoch(0)))
    width = 8 // num_shards
    for k in range(num_shards):
        shard = SessionParallelIterator(log, 8, steps=4, shard_index=k, num_shards=num_shards)
        got = _stack(list(shard.epoch(0)))
        assert len(shard) == len(full.inputs) // 4  # every shard runs the same number of steps
        for g, f in zip(got, full, strict=True):
            np.testing.assert_array_equal(g, f[:, k * width : (k + 1) * width])


def test_shuffle_is_seeded_per_epoch_and_covers_every_pair_once():
    log = _random_log(np.random.default_rng(3), n_sessions=50, n_items=1000)
    it = SessionParallelIterator(log, 4, order="shuffle", seed=5)

    def pairs(epoch):
        b = _stack(list(it.epoch(epoch)))
        return sorted(zip(b.inputs[b.mask].tolist(), b.targets[b.mask].tolist(), strict=True))

    e0, e1 = _stack(list(it.epoch(0))), _stack(list(it.epoch(1)))
    again = _stack(list(SessionParallelIterator(log, 4, order="shuffle", seed=5).epoch(0)))
    np.testing.assert_array_equal(e0.inputs, again.inputs)
    assert e0.inputs.shape != e1.inputs.shape or not np.array_equal(e0.inputs, e1.inputs)
    expected = sorted(
        (int(log.items[e - 1]), int(log.items[e])) for e in np.flatnonzero(log.prediction_mask())
    )
    assert pairs(0) == pairs(1) == expected


def test_resume_skips_dispatches():
    log = _random_log(np.random.default_rng(1))
    it = SessionParallelIterator(log, 3, steps=2)
    full = list(it.epoch(0))
    resumed = list(it.epoch(0, start=3))
    assert len(resumed) == len(full) - 3
    for a, b in zip(full[3:], resumed, strict=True):
        np.testing.assert_array_equal(a.inputs, b.inputs)


def test_batches_are_read_only_and_bad_arguments_raise():
    log = SessionLog.from_sessions([[1, 2]])
    batch = next(iter(SessionParallelIterator(log, 2).epoch(0)))
    with pytest.raises(ValueError):
        batch.inputs[0, 0] = 5
    with pytest.raises(ValueError, match="divisible"):
        SessionParallelIterator(log, 3, num_shards=2)
    with pytest.raises(ValueError, match="order"):
        SessionParallelIterator(log, 2, order="random")


def test_empty_log_yields_nothing():
    log = SessionLog.from_sessions([[1], [2]])
    it = SessionParallelIterator(log, 4)
    assert len(it) == 0 and list(it.epoch(0)) == []


def test_longest_order_plays_long_sessions_first():
    log = SessionLog.from_sessions(
        [[0, 1], [2, 3, 4, 5], [6, 7, 8], [9], [1, 2, 3, 4, 5], [7, 8, 9]]
    )
    # Eligible sessions (>= 2 events) by length, ties in file order: 4 (5), 1 (4), 2 (3),
    # 5 (3, after 2), 0 (2).
    it = SessionParallelIterator(log, batch_size=1, steps=1, order="longest")
    inputs = [int(b.inputs[0, 0]) for b in it.epoch(0) if b.mask[0, 0]]
    assert inputs == [1, 2, 3, 4, 2, 3, 4, 6, 7, 7, 8, 0]
