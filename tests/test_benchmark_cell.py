"""benchmarks/cell.py runs end to end on a tiny grid and writes what it says it writes."""

import importlib.util
import json
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_cell_benchmark():
    spec = importlib.util.spec_from_file_location("bench_cell", ROOT / "benchmarks" / "cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cell_benchmark_writes_a_row_per_implementation_and_mode(tmp_path, capsys):
    cell = load_cell_benchmark()
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
