"""Tests for `gru-jax train`, `evaluate`, `recommend` and `presets` (gru_jax.cli)."""

import itertools
import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest

from gru_jax import cli
from gru_jax.config import PRESETS
from gru_jax.data import dataset_from_files, generate_sessions
from gru_jax.data.dataset import map_item_ids
from gru_jax.train.loop import load_run

TINY = ["layers=16", "batch_size=8", "n_sample=16", "steps_per_dispatch=4", "n_epochs=1",
        "eval_batch_size=16", "sample_store=2048"]  # fmt: skip


@pytest.fixture(scope="module")
def split_files(tmp_path_factory):
    """A GRU4Rec train TSV and a test TSV; the test file holds one item unseen in training."""
    folder = tmp_path_factory.mktemp("tsv")
    events = generate_sessions(n_sessions=300, n_items=60, n_topics=4, seed=3)
    cut = int(events["SessionId"].quantile(0.8))
    train = events.filter(events["SessionId"] <= cut)
    test = events.filter(events["SessionId"] > cut)
    unseen = 10_000 + int(test["ItemId"].max())
    test = test.with_columns(
        ItemId=test["ItemId"].scatter(0, unseen)  # first test event: an item unseen in training
    )
    train.write_csv(folder / "train.tsv", separator="\t")
    test.write_csv(folder / "test.tsv", separator="\t")
    return folder / "train.tsv", folder / "test.tsv", unseen


@pytest.fixture(scope="module")
def trained_run(split_files, tmp_path_factory):
    train, test, _ = split_files
    out = tmp_path_factory.mktemp("run") / "run"
    argv = ["train", "--format", "gru4rec", "--train", str(train), "--test", str(test),
            "--out", str(out), "--no-progress", *TINY]  # fmt: skip
    assert cli.main(argv) == 0
    return out


def test_train_writes_results_with_every_metric_and_timing(trained_run, split_files):
    results = json.loads((trained_run / "results.json").read_text())

    for k in (1, 5, 10, 20):
        for metric in ("recall", "mrr", "ndcg"):
            assert 0.0 <= results[f"{metric}@{k}"] <= 1.0
        assert results[f"mrr@{k}"] <= results[f"recall@{k}"]
    for key in ("train_seconds", "train_events_per_second", "eval_seconds"):
        assert results[key] > 0
    assert {"jax", "flax", "optax"} <= set(results["versions"])
    assert results["config"]["layers"] == [16] and results["config"]["n_epochs"] == 1


def test_train_counts_the_test_events_of_the_given_file(trained_run, split_files):
    train, test, unseen = split_files
    results = json.loads((trained_run / "results.json").read_text())

    # Independent count with pandas: drop test events of items unseen in training (the
    # original's inner join), then every event after a session's first, in sessions of >= 2.
    tr, te = pd.read_csv(train, sep="\t"), pd.read_csv(test, sep="\t")
    known = te[te.ItemId.isin(set(tr.ItemId))]
    lengths = known.groupby("SessionId").size()
    assert results["n_test_events"] == int((lengths[lengths >= 2] - 1).sum())
    assert results["n_unseen_test_events"] == len(te) - len(known) >= 1
    ds = dataset_from_files("gru4rec", train, test)
    assert ds.test.items[0] == -1 and unseen not in ds.item_ids


def _brute_force_metrics(run_dir, test_file):
    """Recall@20 and MRR@20 over the test file, from the run's saved parameters: each session
    from a zero carry, step by step in Python, every item scored, the target ranked below all
    equal scores (conservative), unseen items dropped first: nothing of gru_jax's evaluator."""
    _, spec, params, item_ids = load_run(run_dir)
    model = spec.build(params)
    table, bias = np.asarray(params["item_matrix"]), np.asarray(params["item_bias"])
    index = {int(raw): i for i, raw in enumerate(item_ids)}
    te = pd.read_csv(test_file, sep="\t")
    hits, rr, n = 0.0, 0.0, 0
    for _, session in te[te.ItemId.isin(index)].groupby("SessionId", sort=False):
        items = [index[int(i)] for i in session.sort_values("Time", kind="stable").ItemId]
        carry = model.initial_carry(1)
        for current, target in itertools.pairwise(items):
            carry, hidden = model.step(carry, table[[current]])
            scores = np.asarray(hidden)[0] @ table.T + bias
            others = np.delete(scores, target)
            rank = 1 + int(np.sum(others >= scores[target]))
            hits, rr, n = hits + (rank <= 20), rr + (1 / rank if rank <= 20 else 0.0), n + 1
    return hits / n, rr / n, n


def test_evaluate_matches_a_brute_force_ranking_of_the_test_file(trained_run, split_files,
                                                                 tmp_path):  # fmt: skip
    _, test, _ = split_files
    out = tmp_path / "eval.json"

    status = cli.main(["evaluate", "--run", str(trained_run), "--format", "gru4rec",
                       "--test", str(test), "--out", str(out)])  # fmt: skip

    assert status == 0
    got = json.loads(out.read_text())
    recall, mrr, n = _brute_force_metrics(trained_run, test)
    assert got["n_test_events"] == n
    assert got["recall@20"] == pytest.approx(recall, abs=1e-6)
    assert got["mrr@20"] == pytest.approx(mrr, abs=1e-5)
    # and training's own evaluation of the same file said the same
    assert json.loads((trained_run / "results.json").read_text())["recall@20"] == pytest.approx(
        recall, abs=1e-6
    )


def test_evaluate_without_data_flags_reads_the_runs_own_test_file(
    trained_run, split_files, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the run recorded absolute paths, not the training's cwd
    out = tmp_path / "eval.json"

    assert cli.main(["evaluate", "--run", str(trained_run), "--out", str(out)]) == 0

    recall, mrr, n = _brute_force_metrics(trained_run, split_files[1])
    got = json.loads(out.read_text())
    assert got["n_test_events"] == n
    assert got["recall@20"] == pytest.approx(recall, abs=1e-6)
    assert got["mrr@20"] == pytest.approx(mrr, abs=1e-5)


def test_evaluate_without_data_flags_names_what_is_missing(trained_run, split_files, tmp_path,
                                                           capsys):  # fmt: skip
    train, test, _ = split_files
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    saved = json.loads((run / "config.json").read_text())

    # The test file moved away since training
    moved = tmp_path / "gone.tsv"
    saved["data"]["test"] = [str(moved)]
    (run / "config.json").write_text(json.dumps(saved))
    assert cli.main(["evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert str(moved) in err and "--format F and --test PATH" in err

    # A run that recorded no reader options (written before they were, or by the Python API)
    saved["data"]["test"] = [str(test)]
    del saved["data"]["reader_options"]
    (run / "config.json").write_text(json.dumps(saved))
    assert cli.main(["evaluate", "--run", str(run)]) == 2
    assert "does not record how its test set was read" in capsys.readouterr().err

    # --out never replaces the data the run's test set is read from, even with --overwrite
    assert cli.main(["evaluate", "--run", str(run), "--out", str(train), "--overwrite"]) == 2
    assert "is an input of this evaluation" in capsys.readouterr().err

    # Flags that only a given test file has use for
    assert cli.main(["evaluate", "--run", str(trained_run), "--test-protocol", "sessions"]) == 2
    assert "--test-protocol applies to srgnn splits" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(reader_options={"bogus": 1}), "data.reader_options"),
        (lambda d: d.update(format="tsv"), "data.format is 'tsv'"),
        (lambda d: d.update(test=5), "data.test is 5"),
        (lambda d: d.update(test_protocol="all"), "data.test_protocol is 'all'"),
        # a recipe of a later version (a step this one lacks), or an impossible one
        (lambda d: d.update(test=None, recipe={"new_step": 1}), "data.recipe"),
        (lambda d: d.update(test=None, recipe={"test_days": -1}), "test_days must be >= 0"),
        (lambda d: d.update(test=None, recipe={}, train=None), "does not record how its test"),
    ],
)
def test_evaluate_without_data_flags_on_a_damaged_data_record_says_so(edit, message, trained_run,
                                                                      tmp_path, capsys):  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    saved = json.loads((run / "config.json").read_text())
    edit(saved["data"])
    (run / "config.json").write_text(json.dumps(saved))

    assert cli.main(["evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_evaluate_without_data_flags_repeats_the_recipes_split(tmp_path):
    events = generate_sessions(n_sessions=400, n_items=50, n_topics=4, seed=5)
    raw = tmp_path / "raw.tsv"
    events.write_csv(raw, separator="\t")
    run = tmp_path / "run"
    argv = ["train", "--format", "gru4rec", "--train", str(raw), "--event-types", "all",
            "--min-item-support", "2", "--test-days", "2", "--out", str(run), "--no-progress",
            *TINY]  # fmt: skip
    assert cli.main(argv) == 0
    trained = json.loads((run / "results.json").read_text())

    assert cli.main(["evaluate", "--run", str(run), "--out", str(tmp_path / "e.json")]) == 0

    # The same test split as training's: its counts and metrics
    got = json.loads((tmp_path / "e.json").read_text())
    assert got["n_test_events"] == trained["n_test_events"] > 0
    assert got["recall@20"] == pytest.approx(trained["recall@20"], abs=1e-6)


def test_evaluate_without_data_flags_reads_a_preprocessed_dataset(tmp_path, capsys):
    events = generate_sessions(n_sessions=400, n_items=50, n_topics=4, seed=6)
    raw = tmp_path / "raw.tsv"
    events.write_csv(raw, separator="\t")
    prep, run = tmp_path / "prep", tmp_path / "run"
    assert cli.main(["preprocess", "--format", "gru4rec", "--input", str(raw), "--out", str(prep),
                     "--event-types", "all", "--min-item-support", "2", "--test-days", "2"]) == 0  # fmt: skip
    assert cli.main(["train", "--data", str(prep), "--out", str(run), "--no-progress", *TINY]) == 0
    trained = json.loads((run / "results.json").read_text())

    assert cli.main(["evaluate", "--run", str(run), "--out", str(tmp_path / "e.json")]) == 0
    got = json.loads((tmp_path / "e.json").read_text())
    assert got["n_test_events"] == trained["n_test_events"] > 0
    assert got["recall@20"] == pytest.approx(trained["recall@20"], abs=1e-6)

    # The dataset written again from other sessions is not the run's
    capsys.readouterr()
    assert cli.main(["preprocess", "--format", "gru4rec", "--input", str(raw), "--out", str(prep),
                     "--event-types", "all", "--min-item-support", "2", "--test-days", "3",
                     "--overwrite"]) == 0  # fmt: skip
    assert cli.main(["evaluate", "--run", str(run)]) == 2
    assert "differ from those" in capsys.readouterr().err


def test_evaluate_without_data_flags_reads_an_srgnn_runs_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    train = [rng.integers(1, 40, size=rng.integers(2, 7)).tolist() for _ in range(300)]
    prefixes = [rng.integers(1, 40, size=rng.integers(1, 5)).tolist() for _ in range(60)]
    targets = rng.integers(1, 40, size=60).tolist()
    split = tmp_path / "split"
    split.mkdir()
    (split / "all_train_seq.txt").write_bytes(pickle.dumps(train))
    (split / "test.txt").write_bytes(pickle.dumps((prefixes, targets)))
    run = tmp_path / "run"
    argv = ["train", "--format", "srgnn", "--train", str(split), "--out", str(run),
            "--no-progress", *TINY]  # fmt: skip
    assert cli.main(argv) == 0
    trained = json.loads((run / "results.json").read_text())

    # Nothing inside the split's folder is replaced, even with --overwrite
    before = (split / "test.txt").read_bytes()
    argv = ["evaluate", "--run", str(run), "--out", str(split / "test.txt"), "--overwrite"]
    assert cli.main(argv) == 2 and (split / "test.txt").read_bytes() == before

    for protocol in ("pairs", "sessions"):
        flags = ["--test-protocol", protocol] if protocol == "sessions" else []
        implicit, explicit = tmp_path / f"{protocol}-run.json", tmp_path / f"{protocol}-test.json"
        assert cli.main(["evaluate", "--run", str(run), *flags, "--out", str(implicit)]) == 0
        assert cli.main(["evaluate", "--run", str(run), "--format", "srgnn", "--test",
                         str(split), *flags, "--out", str(explicit)]) == 0  # fmt: skip
        a, b = json.loads(implicit.read_text()), json.loads(explicit.read_text())
        assert (a["n_test_events"], a["recall@20"]) == (b["n_test_events"], b["recall@20"])
    # Pairs, as in training: each target whose items were all seen in training is one event
    pairs = json.loads((tmp_path / "pairs-run.json").read_text())
    assert pairs["n_test_events"] == trained["n_test_events"]
    assert pairs["recall@20"] == pytest.approx(trained["recall@20"], abs=1e-6)
    sessions = json.loads((tmp_path / "sessions-run.json").read_text())
    assert sessions["n_test_events"] > pairs["n_test_events"]

    # A run that recorded no protocol (trained through the Python API) is not guessed at
    saved = json.loads((run / "config.json").read_text())
    del saved["data"]["test_protocol"]
    (run / "config.json").write_text(json.dumps(saved))
    assert cli.main(["evaluate", "--run", str(run)]) == 2
    assert "does not record its srgnn test protocol" in capsys.readouterr().err

    # Training sessions that differ from the run's (the split's file changed since)
    saved["data"]["test_protocol"] = "pairs"
    (run / "config.json").write_text(json.dumps(saved))
    (split / "all_train_seq.txt").write_bytes(pickle.dumps(train[:-1]))
    assert cli.main(["evaluate", "--run", str(run)]) == 2
    assert "differ from those" in capsys.readouterr().err


def test_recommend_matches_a_brute_force_ranking(trained_run, capsys):
    _, spec, params, item_ids = load_run(trained_run)
    session = [int(item_ids[3]), int(item_ids[7]), int(item_ids[1])]
    model = spec.build(params)
    carry = model.initial_carry(1)
    for i in map_item_ids(np.asarray(session), item_ids):  # Python loop over the model's steps
        carry, hidden = model.step(carry, np.asarray(params["item_matrix"])[[i]])
    scores = np.asarray(hidden)[0] @ np.asarray(params["item_matrix"]).T + params["item_bias"]
    want = item_ids[np.argsort(-scores, kind="stable")[:5]].tolist()
    capsys.readouterr()

    status = cli.main(["recommend", "--run", str(trained_run), "--session",
                       ",".join(map(str, session)), "-k", "5", "--json"])  # fmt: skip

    rows = json.loads(capsys.readouterr().out)
    assert status == 0 and [r["item"] for r in rows] == want
    assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(rows))


def test_recommend_names_an_unknown_item(trained_run, capsys):
    status = cli.main(["recommend", "--run", str(trained_run), "--session", "123456789"])
    err = capsys.readouterr().err
    assert status == 2 and "123456789" in err and "catalogue" in err


def test_rerun_with_the_same_directory_resumes_and_keeps_the_results(trained_run, split_files):
    train, test, _ = split_files
    before = json.loads((trained_run / "results.json").read_text())

    argv = ["train", "--format", "gru4rec", "--train", str(train), "--test", str(test),
            "--out", str(trained_run), "--no-progress", *TINY]  # fmt: skip
    assert cli.main(argv) == 0

    after = json.loads((trained_run / "results.json").read_text())
    assert after["n_epochs_run"] == 0  # the finished run is restored, not retrained
    assert after["recall@20"] == pytest.approx(before["recall@20"], abs=1e-6)
    # The training time of the first call is kept, not replaced by this call's zero.
    assert after["train_seconds"] == pytest.approx(before["train_seconds"])
    assert after["train_events_per_second"] == pytest.approx(before["train_events_per_second"])


def test_main_job_without_data_says_it_trains_on_the_synthetic_default(tmp_path, capsys):
    status = cli.main(["train", "--out", str(tmp_path / "syn"), "--no-progress", "n_epochs=1",
                       "layers=32", "n_sample=64", "sample_store=65536"])  # fmt: skip

    out = capsys.readouterr().out
    results = json.loads((tmp_path / "syn/results.json").read_text())
    assert status == 0 and "SYNTHETIC" in out and "recall" in out
    # The generated sessions follow "related items"; popularity alone gets far less.
    assert results["recall@20"] > 0.3

    # The run evaluates again without data: its test split is generated again from the seed
    again = tmp_path / "again.json"
    assert cli.main(["evaluate", "--run", str(tmp_path / "syn"), "--out", str(again)]) == 0
    evaluated = json.loads(again.read_text())
    assert evaluated["n_test_events"] == results["n_test_events"]
    assert evaluated["recall@20"] == pytest.approx(results["recall@20"], abs=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "no_such_key=1"], "no_such_key"),
        (["train", "n_epochs=many"], "n_epochs"),
        (["train", "--preset", "no-such-preset"], "no-such-preset"),
        (["train", "--format", "gru4rec", "--train", "/no/such/file.tsv"], "/no/such/file.tsv"),
        (["train", "--test", "x.tsv"], "--train"),
        (["evaluate", "--run", "/no/such/run"], "/no/such/run"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_presets_lists_every_preset_with_its_source(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    for name, values in PRESETS.items():
        assert name in out and values["source"] in out
    # The README's RetailRocket row: BPR-max, 224 units, batch 80, lr 0.05, bpreg 1.95.
    row = next(line for line in out.splitlines() if line.startswith("retailrocket "))
    assert row.split()[1:4] == ["bpr-max", "224", "80"] and "1.95" in row


def test_presets_keys_lists_the_original_parameter_names(capsys):
    assert cli.main(["presets", "--keys"]) == 0
    keys = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    original = {"layers", "loss", "batch_size", "dropout_p_embed", "dropout_p_hidden",
                "learning_rate", "momentum", "sample_alpha", "n_sample", "embedding",
                "constrained_embedding", "n_epochs", "bpreg", "elu_param", "logq"}  # fmt: skip
    assert original <= keys


def test_resuming_with_another_model_config_is_refused_and_keeps_the_run(trained_run, split_files,
                                                                           capsys):  # fmt: skip
    train, test, _ = split_files
    before = {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()}
    argv = ["train", "--format", "gru4rec", "--train", str(train), "--test", str(test),
            "--out", str(trained_run), "--no-progress", *TINY, "layers=24"]  # fmt: skip

    status = cli.main(argv)

    err = capsys.readouterr().err
    assert status == 3 and "layers: (16,) -> (24,)" in err and "new output directory" in err
    after = {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()}
    assert after == before  # nothing of the earlier run was overwritten


def test_recommend_can_skip_unknown_items(trained_run, capsys):
    _, _, _, item_ids = load_run(trained_run)
    known = str(int(item_ids[2]))
    assert cli.main(["recommend", "--run", str(trained_run), "--session", known, "-k", "3",
                     "--json"]) == 0  # fmt: skip
    alone = json.loads(capsys.readouterr().out)

    status = cli.main(["recommend", "--run", str(trained_run), "--session", f"987654,{known}",
                       "-k", "3", "--json", "--skip-unknown"])  # fmt: skip

    captured = capsys.readouterr()
    assert status == 0 and json.loads(captured.out) == alone and "987654" in captured.err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "loss=bpr"], "unknown loss 'bpr'"),
        (["train", "cell=lstm"], "unknown cell 'lstm'"),
        (["train", "cutoffs=0"], "cutoffs"),
        (["train", "eval_chunk_size=0"], "eval_chunk_size"),
        (["train", "variant=x"], "variant"),
    ],
)
def test_bad_config_values_fail_before_any_data_is_read(argv, message, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "SYNTHETIC" not in captured.out


def test_a_test_set_with_nothing_to_evaluate_fails_before_training(split_files, tmp_path, capsys):
    train, _, _ = split_files
    unseen = tmp_path / "unseen.tsv"
    unseen.write_text("SessionId\tItemId\tTime\n1\t999001\t100\n1\t999002\t160\n")

    status = cli.main(["train", "--format", "gru4rec", "--train", str(train), "--test",
                       str(unseen), "--out", str(tmp_path / "run"), "--no-progress", *TINY])  # fmt: skip

    assert status == 2 and "nothing to evaluate" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_recipe_flags_with_given_test_files_are_refused(split_files, tmp_path, capsys):
    train, test, _ = split_files
    status = cli.main(["train", "--format", "gru4rec", "--train", str(train), "--test",
                       str(test), "--dedupe", "--out", str(tmp_path / "r"), *TINY])  # fmt: skip
    assert status == 2 and "--dedupe" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("fmt", ["sequences", "gru4rec", "srgnn"])
def test_only_recipe_flags_typed_on_the_command_line_are_refused(fmt):
    # The refusal must not depend on a format's own defaults (sequences keep every item and
    # session by default), and a flag typed at its default value is still a flag typed.
    parser = cli.build_parser()
    plain = parser.parse_args(["train", "--format", fmt, "--train", "a", "--test", "b"])
    cli._refuse_recipe_flags(plain, "test")  # nothing typed: nothing refused

    typed = parser.parse_args(["train", "--format", fmt, "--train", "a", "--test", "b",
                               "--test-days", "1", "--no-dedupe"])  # fmt: skip
    with pytest.raises(cli.UsageError, match="--dedupe, --test-days"):
        cli._refuse_recipe_flags(typed, "test")


def test_sequences_default_to_keeping_what_was_published():
    parser = cli.build_parser()
    config = cli._config(parser.parse_args(["train", "--format", "sequences", "--train", "a"]))
    assert (config.min_item_support, config.min_session_length, config.split) == (
        1, 1, "leave_one_out",
    )  # fmt: skip
    config = cli._config(parser.parse_args(["train", "--format", "gru4rec", "--train", "a",
                                            "--event-types", "all", "--min-item-support", "3"]))  # fmt: skip
    assert config.event_types is None and config.min_item_support == 3 and config.split == "time"


def test_overrides_may_come_between_flags(split_files, tmp_path):
    train, test, _ = split_files
    out = tmp_path / "run"
    argv = ["train", "n_epochs=1", "--format", "gru4rec", "--train", str(train), "--test",
            str(test), "--no-progress", *TINY[:-1], "--out", str(out), "layers=12"]  # fmt: skip

    assert cli.main(argv) == 0
    assert json.loads((out / "config.json").read_text())["config"]["layers"] == [12]


def _unchanged(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_evaluate_out_never_replaces_a_file_and_is_checked_first(trained_run, split_files,
                                                                  tmp_path, capsys):  # fmt: skip
    _, test, _ = split_files
    before = _unchanged(trained_run)
    mine = tmp_path / "mine.json"
    mine.write_text("keep me")

    def evaluate(out, *extra):
        return cli.main(["evaluate", "--run", str(trained_run), "--format", "gru4rec", "--test",
                         str(test), "--out", str(out), *extra])  # fmt: skip

    # The run's own results, even with --overwrite; an existing file; a folder
    assert evaluate(trained_run / "results.json", "--overwrite") == 2
    assert "is inside the run" in capsys.readouterr().err
    assert evaluate(mine) == 2 and "exists" in capsys.readouterr().err
    assert evaluate(tmp_path) == 2
    captured = capsys.readouterr()
    assert "is a folder" in captured.err and "recall" not in captured.out  # refused before
    assert mine.read_text() == "keep me" and _unchanged(trained_run) == before

    assert evaluate(mine, "--overwrite") == 0
    assert json.loads(mine.read_text())["n_test_events"] > 0


def test_evaluating_on_mostly_unseen_items_warns(trained_run, tmp_path, capsys):
    _, _, _, item_ids = load_run(trained_run)
    a, b = int(item_ids[0]), int(item_ids[1])
    rows = [(1, a, 1), (1, b, 2)] + [(2 + s, 900_000 + s * 10 + i, i) for s in range(3)
                                     for i in range(3)]  # fmt: skip
    test = tmp_path / "test.tsv"
    test.write_text("SessionId\tItemId\tTime\n" + "".join(f"{s}\t{i}\t{t}\n" for s, i, t in rows))

    status = cli.main(["evaluate", "--run", str(trained_run), "--format", "gru4rec", "--test",
                       str(test)])  # fmt: skip

    # 9 of the 11 events have unseen items: the metrics rest on the one remaining pair
    err = capsys.readouterr().err
    assert status == 0 and "warning: 9 test events" in err and "the 1 prediction events" in err


def test_a_damaged_run_is_reported_without_a_traceback(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    latest = max((p for p in (run / "checkpoints").iterdir() if p.name.isdigit()),
                 key=lambda p: int(p.name))  # fmt: skip
    for f in (latest / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[:10])

    known = str(int(np.load(run / "items.npy")[0]))
    status = cli.main(["recommend", "--run", str(run), "--session", known])

    err = capsys.readouterr().err
    assert status == 2 and f"checkpoint {latest.name}" in err and "cannot be read" in err
    assert "Traceback" not in err

    (run / "config.json").write_text("{not json")
    assert cli.main(["recommend", "--run", str(run), "--session", "1"]) == 2
    err = capsys.readouterr().err
    assert "config.json is not a gru-jax run config" in err and "training stopped" not in err
    (run / "items.npy").unlink()
    shutil.copy(trained_run / "config.json", run / "config.json")
    assert cli.main(["recommend", "--run", str(run), "--session", "1"]) == 2
    assert "has no items.npy" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "/no/such/folder"], "no such folder; write a dataset there"),
        (["train", "--process-id", "1"], "process id 1 needs a coordinator"),
        (
            ["train", "--format", "gru4rec", "--train", "a.tsv", "--test-protocol", "sessions"],
            "--test-protocol applies to srgnn",
        ),
        (["train", "--format", "gru4rec", "--train", "a.tsv", "./a.tsv"], "given twice"),
        (
            ["train", "--format", "diginetica", "--train", "a.csv", "--test-days", "-3"],
            "test_days",
        ),
        (
            [
                "train",
                "--format",
                "gru4rec",
                "--train",
                "a.tsv",
                "--split",
                "leave_one_out",
                "--test-days",
                "7",
            ],
            "--test-days: a leave-one-out split has no time boundary",
        ),
        (["recommend", "--run", "r", "--session", "5,,7"], "has an empty item id"),
        (
            [
                "evaluate",
                "--run",
                "r",
                "--format",
                "gru4rec",
                "--test",
                "t.tsv",
                "--out",
                "/no/such/dir/e.json",
            ],
            "does not exist",
        ),
    ],
)
def test_contradictory_or_impossible_flags_are_refused(argv, message, capsys, monkeypatch,
                                                       tmp_path):  # fmt: skip
    monkeypatch.chdir(tmp_path)  # relative names (a.tsv, r) name nothing that exists
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err


def test_repeated_path_flags_add_up():
    args = cli.build_parser().parse_args(["train", "--train", "a", "--train", "b", "c"])
    assert args.train == ["a", "b", "c"]


def test_two_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.time, "strftime", lambda _: "20261204-000000")
    first, second = cli._new_run_folder("syn"), cli._new_run_folder("syn")
    assert first != second and first.is_dir() and second.is_dir()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "syn-20261204-000000", "syn-20261204-000000-2",
    ]  # fmt: skip


def test_evaluate_out_stays_clear_of_other_runs_datasets_and_inputs(trained_run, split_files,
                                                                     tmp_path, capsys):  # fmt: skip
    _, test, _ = split_files
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "dataset.json").write_text("{}")
    before = _unchanged(tmp_path)

    for out, message in [
        (other / "config.json", "is inside the run"),
        (trained_run / "checkpoints" / "7", "is inside the run"),
        (tmp_path / "prep" / "dataset.json", "a file of the dataset"),
        (test, "an input of this evaluation"),
    ]:
        status = cli.main(["evaluate", "--run", str(trained_run), "--format", "gru4rec",
                           "--test", str(test), "--out", str(out), "--overwrite"])  # fmt: skip
        assert status == 2 and message in capsys.readouterr().err, out
    assert _unchanged(tmp_path) == before and not (trained_run / "checkpoints" / "7").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--format", "diginetica", "--train", "a.csv", "--separator", ","],
            "--separator applies to csv, not diginetica",
        ),
        (["--format", "otto", "--train", "a.jsonl", "--time-unit", "s"], "--time-unit applies"),
        (["--format", "gru4rec", "--train", "a.tsv", "--separator", ","], "applies to csv,"),
        (
            ["--format", "sequences", "--train", "a.txt", "--split", "time"],
            "sequences have no timestamps",
        ),
        (
            ["--format", "sequences", "--train", "a.txt", "--session-gap", "10"],
            "--session-gap: a leave-one-out split",
        ),
    ],
)
def test_flags_a_format_does_not_read_are_refused(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "gru4rec"], "--format applies"),
        (["--test-days", "2"], "--test-days"),
        (["--item-col", "x"], "--item-col applies"),
        (["--test-protocol", "sessions"], "--test-protocol"),
    ],
)
def test_flags_a_saved_dataset_fixed_are_refused_with_data(extra, message, capsys, tmp_path):
    assert cli.main(["train", "--data", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_several_processes_need_an_explicit_run_folder(monkeypatch, tmp_path):
    import jax

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(cli.UsageError, match="several processes need --out"):
        cli._new_run_folder("syn")
    assert not (tmp_path / "runs").exists()


def test_an_interrupted_command_exits_130_without_the_interpreters_shutdown(monkeypatch, capsys):
    """After Ctrl-C, XLA may still compile on a background thread; Python's shutdown around it
    crashed in about a third of tries (status -11). The console script leaves with os._exit."""
    from gru_jax import cli

    exits = []
    monkeypatch.setattr(cli.os, "_exit", lambda status: exits.append(status))  # would not return
    monkeypatch.setattr(cli, "main", lambda: cli.EXIT_INTERRUPTED)
    with pytest.raises(SystemExit):
        cli.console()
    assert exits == [130]
    monkeypatch.setattr(cli, "main", lambda: 0)
    with pytest.raises(SystemExit) as done:
        cli.console()
    assert done.value.code == 0 and exits == [130]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--out", ""],  # used to fall back to runs/NAME-TIME
        ["preprocess", "--format", "otto", "--input", "x.jsonl", "--out", " "],  # wrote to .
        ["evaluate", "--run", ""],
        ["recommend", "--run", "", "--session", "1"],
    ],
)
def test_an_empty_path_is_refused_by_name(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "an empty path" in capsys.readouterr().err
