"""Tests for `gru-jax preprocess` (gru_jax.cli)."""

import json

import numpy as np
import pytest

from gru_jax import cli
from gru_jax.data import Dataset, PreprocessConfig, load_dataset

REQUIRED_STATS = (
    "n_train_events",
    "n_test_events",
    "n_items",
    "n_train_sessions",
    "n_test_sessions",
    "removed_event_type",
    "removed_consecutive_repeats",
    "removed_item_support",
    "removed_short_sessions",
    "removed_test_unseen_items",
)


def test_preprocess_diginetica_writes_dataset_and_stats(shared_data, tmp_path, capsys):
    path = shared_data / "diginetica_sample/sample_train-item-views.csv"
    out = tmp_path / "prep"

    status = cli.main(
        ["preprocess", "--format", "diginetica", "--input", str(path), "--out", str(out),
         "--test-days", "7", "--min-item-support", "3", "--dedupe"]
    )  # fmt: skip

    assert status == 0 and "wrote" in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert all(k in stats for k in REQUIRED_STATS)
    want = load_dataset(
        "diginetica", path, config=PreprocessConfig(test_days=7, min_item_support=3, dedupe=True)
    )
    got = Dataset.load(out)
    np.testing.assert_array_equal(got.train.items, want.train.items)
    np.testing.assert_array_equal(got.test.offsets, want.test.offsets)
    assert stats["n_train_events"] == want.train.n_events > 0
    assert stats["removed_consecutive_repeats"] == want.stats["removed_consecutive_repeats"] > 0


def test_preprocess_csv_with_columns_and_event_types(tmp_path):
    src = tmp_path / "log.csv"
    rows = [f"{s},{i},{100 * s + k},{'view' if k else 'buy'}" for s in range(1, 30)
            for k, i in enumerate([1, 2, 3, 1])]  # fmt: skip
    src.write_text("sid,item,ts,kind\n" + "\n".join(rows) + "\n")

    status = cli.main(
        ["preprocess", "--format", "csv", "--input", str(src), "--out", str(tmp_path / "o"),
         "--session-col", "sid", "--item-col", "item", "--time-col", "ts", "--type-col", "kind",
         "--event-types", "view", "--split-time", "2500"]
    )  # fmt: skip

    stats = json.loads((tmp_path / "o/stats.json").read_text())
    assert status == 0 and stats["removed_event_type"] == 29
    assert stats["n_train_sessions"] == 24 and stats["n_test_sessions"] == 5


def test_preprocess_srgnn_and_synthetic(shared_data, tmp_path):
    out = tmp_path / "tmall"
    args = ["preprocess", "--format", "srgnn", "--input", str(shared_data / "tmall_gcegnn")]
    assert cli.main([*args, "--out", str(out), "--test-protocol", "sessions"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["n_test_sessions"] == 1_027 and stats["n_test_predictions"] == 25_898

    assert cli.main(["preprocess", "--format", "synthetic", "--out", str(tmp_path / "s")]) == 0
    assert Dataset.load(tmp_path / "s").stats["format"] == "synthetic"


@pytest.mark.parametrize(
    "content, message",
    [
        ("SessionId\tItemId\n1\t2\n", "missing column(s) ['Time']"),
        ("SessionId\tItemId\tTime\n1\t2\tnoon\n", "non-numeric value 'noon'"),
    ],
)
def test_data_errors_exit_2_without_traceback(tmp_path, capsys, content, message):
    src = tmp_path / "bad.tsv"
    src.write_text(content)
    out = tmp_path / "out"

    status = cli.main(["preprocess", "--format", "gru4rec", "--input", str(src), "--out", str(out)])

    err = capsys.readouterr().err
    assert status == 2 and message in err and str(src) in err
    assert "Traceback" not in err and not out.exists()


def test_usage_errors(tmp_path, capsys):
    assert cli.main(["preprocess", "--format", "otto", "--out", str(tmp_path)]) == 2
    assert "needs --input" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["preprocess", "--format", "xml", "--out", str(tmp_path)])
    assert info.value.code == 2


def test_preprocess_replaces_a_dataset_only_with_overwrite_and_never_a_run(tmp_path, capsys):
    out = tmp_path / "prep"
    args = ["preprocess", "--format", "synthetic", "--out", str(out)]
    assert cli.main([*args, "--seed", "1"]) == 0
    first = (out / "arrays.npz").read_bytes()

    assert cli.main([*args, "--seed", "2"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err
    assert (out / "arrays.npz").read_bytes() == first

    assert cli.main([*args, "--seed", "2", "--overwrite"]) == 0
    assert (out / "arrays.npz").read_bytes() != first

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert cli.main(["preprocess", "--format", "synthetic", "--out", str(run), "--overwrite"]) == 2
    assert "inside the training run" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]

    # nor anywhere inside a run folder, such as its checkpoints
    (run / "items.npy").write_bytes(b"")
    (run / "checkpoints").mkdir()
    inside = run / "checkpoints" / "prep"
    assert cli.main(["preprocess", "--format", "synthetic", "--out", str(inside)]) == 2
    assert "inside the training run" in capsys.readouterr().err and not inside.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "synthetic", "--input", "x.csv"], "leave out --input"),
        (["--format", "synthetic", "--dedupe"], "--dedupe: the preprocessing recipe does not run"),
        (["--format", "srgnn", "--input", "d", "--test-days", "3"], "an srgnn split is used"),
        (
            ["--format", "gru4rec", "--input", "a.tsv", "--test-protocol", "sessions"],
            "--test-protocol applies to srgnn",
        ),  # fmt: skip
        (
            ["--format", "gru4rec", "--input", "a.tsv", "--min-session-length", "0"],
            "min_session_length must be >= 1, got 0",
        ),  # fmt: skip
    ],
)
def test_flags_that_do_not_apply_are_refused(tmp_path, capsys, extra, message):
    out = tmp_path / "o"
    assert cli.main(["preprocess", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not out.exists()
