"""The training run: outputs, determinism, resume after an interruption, the NaN guard."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest

from gru_jax.config import Config
from gru_jax.data import PreprocessConfig, generate_sessions, preprocess
from gru_jax.losses import LOSSES
from gru_jax.train.loop import TrainingError, load_run, train


@pytest.fixture(scope="module")
def dataset():
    events = generate_sessions(n_sessions=600, n_items=80, n_days=10, seed=3)
    events = events.rename({"SessionId": "session", "ItemId": "item", "Time": "time"})
    events = events.with_columns(pl.col("time").cast(pl.Float64))
    return preprocess(events, PreprocessConfig(test_days=2.0))


CONFIG = Config(
    layers=(12,),
    batch_size=16,
    n_sample=24,
    n_epochs=2,
    steps_per_dispatch=4,
    momentum=0.3,
    dropout_p_embed=0.1,
    dropout_p_hidden=0.2,
    loss="bpr-max",
    eval_batch_size=32,
    log_every=1,
)


def _assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_run_writes_results_config_and_metrics(dataset, tmp_path):
    result = train(CONFIG, dataset, tmp_path, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    for key in (
        "recall@20",
        "mrr@20",
        "ndcg@10",
        "recall@1",
        "n_test_events",
        "train_seconds",
        "train_events_per_second",
        "eval_seconds",
    ):
        assert key in saved, key
    assert saved["versions"]["jax"] == jax.__version__
    assert saved["config"]["layers"] == [12]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r.get("epoch_end")] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in lines)
    # The saved run reloads to the same parameters.
    config, _, params, item_ids = load_run(tmp_path)
    assert config == CONFIG
    np.testing.assert_array_equal(item_ids, dataset.item_ids)
    _assert_same_params(params, result.params)
    # A trained model beats chance by far (80 items: recall@20 by chance is 0.25).
    assert saved["recall@20"] > 0.35


def test_same_seed_same_result_and_other_seed_differs(dataset):
    a = train(CONFIG, dataset, progress=False)
    b = train(CONFIG, dataset, progress=False)
    c = train(CONFIG.replace(seed=7), dataset, progress=False)
    _assert_same_params(a.params, b.params)
    assert a.results["mrr@20"] == b.results["mrr@20"]
    assert not np.array_equal(a.params["item_matrix"], c.params["item_matrix"])


def test_resume_matches_an_uninterrupted_run(dataset, tmp_path):
    config = CONFIG.replace(checkpoint_every=2)
    whole = train(config, dataset, tmp_path / "whole", progress=False)
    first = train(config, dataset, tmp_path / "run", progress=False, stop_after_dispatches=5)
    assert first.results == {"interrupted": True}
    resumed = train(config, dataset, tmp_path / "run", progress=False)
    _assert_same_params(resumed.params, whole.params)
    assert resumed.results["mrr@20"] == whole.results["mrr@20"]

    # The metrics log reads as one run: the lines logged after the checkpoint are not doubled.
    def logged(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [
            (r["epoch"], r.get("dispatch"), r["step"], r["loss"]) for r in map(json.loads, lines)
        ]

    assert logged("run") == logged("whole")


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(dataset, tmp_path):
    # Given one clean epoch under a loss name that turns NaN afterwards
    LOSSES.register("test-nan", LOSSES.get(CONFIG.loss), overwrite=True)
    config = CONFIG.replace(loss="test-nan")
    train(config.replace(n_epochs=1), dataset, tmp_path, progress=False)
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())

    def poisoned(scores, row_mask, *, log_q=None, **hyper):
        return jnp.sum(scores) * jnp.nan

    LOSSES.register("test-nan", poisoned, overwrite=True)

    # When the run goes on, Then it stops naming the step and keeps the epoch-1 checkpoint
    with pytest.raises(TrainingError, match=r"non-finite loss nan at epoch 2, dispatch 1, step"):
        train(config, dataset, tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == checkpoints


def test_non_finite_loss_before_any_checkpoint_says_so(dataset, tmp_path):
    def poisoned(scores, row_mask, *, log_q=None, **hyper):
        return jnp.sum(scores) * jnp.nan

    LOSSES.register("test-nan-now", poisoned, overwrite=True)
    with pytest.raises(TrainingError, match="no checkpoint had been written yet"):
        train(CONFIG.replace(loss="test-nan-now"), dataset, tmp_path, progress=False)


def test_asking_for_fewer_epochs_than_a_run_already_trained_is_refused(dataset, tmp_path):
    train(CONFIG.replace(n_epochs=2), dataset, tmp_path, progress=False)
    kept = {name: (tmp_path / name).read_bytes() for name in ("results.json", "metrics.jsonl")}
    with pytest.raises(TrainingError, match="already trained past epoch 1"):
        train(CONFIG.replace(n_epochs=1), dataset, tmp_path, progress=False)
    assert {name: (tmp_path / name).read_bytes() for name in kept} == kept


def test_a_training_split_without_pairs_is_refused(tmp_path):
    from gru_jax.data import DataError, Dataset, SessionLog

    singles = SessionLog.from_sessions([[0], [1], [2]])
    with pytest.raises(DataError, match="nothing to learn from"):
        train(CONFIG, Dataset(singles, None, None, np.arange(3)), tmp_path, progress=False)


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resuming_on_other_sessions_of_the_same_items_is_refused(dataset, tmp_path):
    # Given a run with checkpoints, and the same catalogue with its sessions' items shuffled
    config = CONFIG.replace(n_epochs=1)
    train(config, dataset, tmp_path, progress=False)
    before = _files(tmp_path)
    rng = np.random.default_rng(0)
    shuffled = dataclasses.replace(
        dataset,
        train=dataclasses.replace(dataset.train, items=rng.permutation(dataset.train.items)),
    )
    assert np.array_equal(shuffled.item_ids, dataset.item_ids)

    # When it is trained into the same directory, Then it is refused and nothing changes
    with pytest.raises(TrainingError, match="other training data.*sessions differ"):
        train(config.replace(n_epochs=2), shuffled, tmp_path, progress=False)
    assert _files(tmp_path) == before


@pytest.mark.parametrize(
    "damage, message",
    [
        ("checkpoints", "results of a finished run but no checkpoint"),
        ("items.npy", "no items.npy"),
        ("config.json", "no config.json"),
    ],
)
def test_a_damaged_run_directory_is_refused_and_kept(dataset, tmp_path, damage, message):
    config = CONFIG.replace(n_epochs=1)
    train(config, dataset, tmp_path, progress=False)
    shutil.rmtree(tmp_path / damage) if damage == "checkpoints" else (tmp_path / damage).unlink()
    before = _files(tmp_path)

    with pytest.raises(TrainingError, match=message):
        train(config, dataset, tmp_path, progress=False)
    assert _files(tmp_path) == before


def test_a_folder_of_other_files_with_a_run_file_name_is_refused(dataset, tmp_path):
    (tmp_path / "results.json").write_text('{"mine": 1}')
    with pytest.raises(TrainingError, match="results.json but no config.json"):
        train(CONFIG, dataset, tmp_path, progress=False)
    assert (tmp_path / "results.json").read_text() == '{"mine": 1}'


def _logged(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["epoch"], r.get("dispatch"), r["step"], r["loss"]) for r in map(json.loads, lines)]


@pytest.mark.parametrize("change", [{}, {"layers": (8,), "learning_rate": 0.01}])
def test_a_run_stopped_before_its_first_checkpoint_starts_over_with_one_log(dataset, tmp_path,
                                                                            change):  # fmt: skip
    # Given a run folder as a run stopped before any checkpoint leaves it (no checkpoint, no
    # results, the metrics lines it logged)
    config = CONFIG.replace(n_epochs=1)
    train(config, dataset, tmp_path / "run", progress=False)
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    (tmp_path / "run" / "results.json").unlink()

    # When the same command, or one with a fixed config, runs again, Then it trains from the
    # start, and the folder reads as that run alone
    again = config.replace(**change)
    train(again, dataset, tmp_path / "fresh", progress=False)
    train(again, dataset, tmp_path / "run", progress=False)

    assert _logged(tmp_path / "run") == _logged(tmp_path / "fresh")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["layers"] == list(again.layers)


def test_a_metrics_line_cut_short_by_a_crash_does_not_block_the_resume(dataset, tmp_path):
    config = CONFIG.replace(n_epochs=1)
    train(config, dataset, tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "dispatch": 3, "st')

    train(config.replace(n_epochs=2), dataset, tmp_path / "run", progress=False)

    train(config.replace(n_epochs=2), dataset, tmp_path / "whole", progress=False)
    assert _logged(tmp_path / "run") == _logged(tmp_path / "whole")


def test_without_sampled_negatives_the_epoch_stops_at_one_row_left(dataset):
    """GRU4Rec ends an n_sample=0 epoch once fewer than 2 sessions play (a lone row has no
    negative); with sampled negatives every session is played."""
    from gru_jax.train.loop import setup

    def steps_with_one_row(config):
        mask = np.concatenate([b.mask for b in setup(config, dataset).iterator.epoch(0)])
        return int((mask.sum(axis=1) == 1).sum())

    assert steps_with_one_row(dataclasses.replace(CONFIG, n_sample=24)) > 0
    assert steps_with_one_row(dataclasses.replace(CONFIG, n_sample=0)) == 0
