"""The benchmarks run end to end on tiny inputs and write what they say they write."""

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_benchmark(name):
    if str(ROOT / "benchmarks") not in sys.path:  # as `python benchmarks/NAME.py` has it
        sys.path.insert(0, str(ROOT / "benchmarks"))
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_cell_benchmark():
    return load_benchmark("cell")


def test_cell_benchmark_writes_a_row_per_implementation_and_mode(tmp_path, capsys):
    cell = load_cell_benchmark()
    stale_plot = tmp_path / "cell_cpu.png"
    stale_plot.write_bytes(b"a plot of an earlier run")
    impls = ["gru_jax", "gru_jax[autodiff]", "nnx", "linen", "matmuls"]
    cell.main(
        ["--batch", "4", "--hidden", "8", "--steps", "3", "--dtypes", "float32",
         "--impls", *impls, "--repeats", "1", "--min-time", "0.001",
         "--threads", "0", "--out", str(tmp_path), "--no-plot"]
    )  # fmt: skip
    payload = json.loads((tmp_path / "cell_cpu.json").read_text())
    rows = payload["rows"]
    assert {(r["impl"], r["mode"]) for r in rows} == {
        (impl, mode) for impl in impls for mode in ("fwd", "fwd+bwd")
    }
    for row in rows:
        assert row["seconds"] > 0
        # events/s and FLOP/s follow from the shape and the time, as documented.
        assert np.isclose(row["events_per_second"], 4 * 3 / row["seconds"])
        forward_flops = 2.0 * 3 * 4 * (8 + 8) * 3 * 8
        flops = forward_flops * (1 if row["mode"] == "fwd" else 3)
        assert np.isclose(row["flops_per_second"], flops / row["seconds"])
    nnx_rows = [r for r in rows if r["impl"] == "nnx"]
    assert all(np.isclose(r["speed_vs_nnx"], 1.0) for r in nnx_rows)
    assert "gru_jax fwd+bwd float32" in payload["summary"]
    assert "vs linen" in capsys.readouterr().out
    assert not stale_plot.exists()  # --no-plot: no earlier run's plot beside the new JSON


def test_cell_benchmark_without_the_nnx_reference_plots_against_linen(tmp_path, capsys):
    # A subset without nnx used to crash on the missing ratio after measuring.
    cell = load_cell_benchmark()
    cell.main(
        ["--batch", "4", "--hidden", "8", "--steps", "3", "--dtypes", "float32",
         "--modes", "fwd", "--impls", "gru_jax", "linen", "--repeats", "1",
         "--min-time", "0.001", "--threads", "0", "--out", str(tmp_path)]
    )  # fmt: skip
    rows = json.loads((tmp_path / "cell_cpu.json").read_text())["rows"]
    assert all("speed_vs_nnx" not in r for r in rows)
    linen = next(r for r in rows if r["impl"] == "linen")
    assert np.isclose(linen["speed_vs_linen"], 1.0)
    assert (tmp_path / "cell_cpu.png").stat().st_size > 0
    assert "and .png" in capsys.readouterr().out


def test_matmul_floor_computes_the_layers_matmuls():
    """The floor must do the same matmul work as the layer: check its outputs by hand."""
    import jax

    cell = load_cell_benchmark()
    steps, batch, hidden = 3, 4, 5
    run = cell.build_matmuls("fwd+bwd", (steps, batch, hidden), "float32")
    d_h, d_w_i, d_w_h, d_x = jax.device_get(run())

    x, _ = cell.jax_inputs((steps, batch, hidden), "float32")
    keys = jax.random.split(jax.random.key(1), 2)
    w_i = np.asarray(0.05 * jax.random.normal(keys[0], (hidden, 3 * hidden)))
    w_h = np.asarray(0.05 * jax.random.normal(keys[1], (hidden, 3 * hidden)))
    x = np.asarray(x, np.float64)
    h = np.zeros((batch, hidden))
    h_in, g = [], []
    for t in range(steps):
        g_t = x[t] @ w_i + h @ w_h
        h_in.append(h)
        g.append(g_t)
        h = g_t[:, :hidden]
    d = np.zeros((batch, hidden))
    for t in reversed(range(steps)):
        d = g[t] @ w_h.T + d
    rows_g = np.concatenate(g)
    np.testing.assert_allclose(d_h, d, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d_w_i, x.reshape(-1, hidden).T @ rows_g, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d_w_h, np.concatenate(h_in).T @ rows_g, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d_x, rows_g @ w_i.T, rtol=1e-4, atol=1e-5)


def test_train_throughput_benchmark_on_the_generated_dataset(tmp_path, capsys, monkeypatch):
    bench = load_benchmark("train_throughput")
    # An official figure for this data, to check the printed ratio is the fused cell's even when
    # it is not the first cell.
    monkeypatch.setitem(bench.OFFICIAL_CPU_EVENTS_PER_SECOND, "synthetic", 1000)
    bench.main(
        ["--synthetic", "--preset", "synthetic", "--warmup", "1", "--dispatches", "1",
         "--repeats", "2", "--cells", "flax-gru", "fused", "--out", str(tmp_path),
         "steps_per_dispatch=4"]
    )  # fmt: skip
    record = json.loads((tmp_path / "train_throughput_cpu_synthetic.json").read_text())
    assert record["official_cpu_events_per_second"] == 1000
    assert [r["cell"] for r in record["rows"]] == ["flax-gru", "fused"]
    fused = record["rows"][1]["train_events_per_second"]
    for row in record["rows"]:
        assert len(row["train_rounds_events_per_second"]) == 2
        assert row["train_events_per_second"] > 0 and row["eval_events_per_second"] > 0
        assert np.isclose(
            row["cell_share_of_step"], row["cell_ms_per_minibatch"] / row["train_ms_per_minibatch"]
        )
    out = capsys.readouterr().out
    assert "| fused |" in out
    assert f"gru_jax fused: {fused / 1000:.2f}×" in out


def test_train_throughput_rounds_go_on_past_an_epoch():
    """A dataset smaller than the timed rounds: the clock starts the next epoch (it stopped
    with a bare StopIteration after all the work, writing nothing)."""
    from gru_jax.config import Config
    from gru_jax.data import Dataset, SessionLog

    bench = load_benchmark("train_throughput")
    rng = np.random.default_rng(0)
    sessions = [rng.integers(0, 12, rng.integers(2, 5)).tolist() for _ in range(12)]
    log = SessionLog.from_sessions(sessions)
    dataset = Dataset(log, log, None, np.arange(12))
    config = Config(layers=(4,), batch_size=2, n_sample=3, steps_per_dispatch=4, n_epochs=1)
    clock = bench.TrainingClock(config, dataset, warmup=0)
    clock.round(20)  # 12 sessions of 1-3 steps in 2 rows: a few dispatches per epoch
    assert clock.epoch >= 2 and clock.rates[0] > 0


def test_benchmark_arguments_are_checked_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("kept")
    for name, argv, message in [
        ("cell", ["--repeats", "0"], "must be >= 1, got 0"),
        ("cell", ["--batch", "-3"], "must be >= 1, got -3"),
        ("cell", ["--modes", "bwd"], "invalid choice: 'bwd'"),
        ("cell", ["--dtypes", "fp32"], "invalid choice: 'fp32'"),
        ("cell", ["--threads", "-1"], "must be >= 0, got -1"),
        ("cell", ["--tag", "a/b"], "cannot hold a folder"),
        ("cell", ["--out", str(a_file)], f"cannot use {a_file} as a folder"),
        ("cell", ["--out", ""], "an empty path"),
        ("train_throughput", ["--dispatches", "0"], "must be >= 1, got 0"),
        ("train_throughput", ["--repeats", "x"], "invalid int value: 'x'"),
        # the compile would be timed
        ("train_throughput", ["--warmup", "0"], "must be >= 1, got 0"),
        # a key=value after --cells, which takes every word, is not taken for a cell
        ("train_throughput", ["--cells", "fused", "n_epochs=1"], "unknown cell 'n_epochs=1'"),
        ("scaling", ["--warmup", "0"], "must be >= 1, got 0"),
        ("scaling", ["--out", str(a_file / "sub")], "as a folder"),
    ]:
        with pytest.raises(SystemExit):
            load_benchmark(name).parse_args(argv)
        assert message in capsys.readouterr().err, (name, argv)
    pipeline = load_benchmark("data_pipeline")
    for argv, message in [
        (["--events", "1e6"], "invalid int value: '1e6'"),
        (["--events", "100"], "must be >= 10000"),
        (["--out", str(tmp_path)], "is not a file name"),
        (["--out", str(a_file / "table.md")], "as a folder"),
    ]:
        with pytest.raises(SystemExit):
            pipeline.main(argv)
        assert message in capsys.readouterr().err, argv
    assert a_file.read_text() == "kept"


def test_train_throughput_bad_config_or_data_is_one_line(tmp_path, capsys):
    bench = load_benchmark("train_throughput")
    for argv, message in [
        (["--synthetic", "--preset", "nope"], "unknown preset 'nope'"),
        (["--synthetic", "n_epochs=abc"], "config key n_epochs takes an integer, got 'abc'"),
        (["--data-root", str(tmp_path), "--dataset", "nope"], f"{tmp_path / 'nope'}"),
    ]:
        with pytest.raises(SystemExit, match=message):
            bench.load(bench.parse_args([*argv, "--out", str(tmp_path)]))


def test_a_cut_short_cell_run_never_replaces_a_complete_file(tmp_path):
    cell = load_cell_benchmark()
    args = cell.parse_args(["--out", str(tmp_path)])
    env = {"device_kind": "cpu"}
    complete = cell.write_results(args, env, [{"impl": "a"}], complete=True)
    before = complete.read_text()
    cell.write_results(args, env, [{"impl": "b"}], complete=False)  # then the run is killed
    assert complete.read_text() == before
    partial = json.loads((tmp_path / "cell_cpu.partial.json").read_text())
    assert partial["complete"] is False and partial["rows"] == [{"impl": "b"}]
    cell.write_results(args, env, [{"impl": "b"}], complete=True)
    assert not (tmp_path / "cell_cpu.partial.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell_cpu.json"]
