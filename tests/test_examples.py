"""The README's code and the experiments' extension example run as documented."""

import importlib.util
import pathlib
import re
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from gru_jax.config import Config
from gru_jax.data import Dataset, SessionLog
from gru_jax.models import GRU4Rec
from gru_jax.train.loop import build_model, train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_python_example_runs_and_gives_the_documented_shapes():
    readme = (ROOT / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    assert code, "README.md has no python example"
    scope: dict = {}

    exec(code[0], scope)  # noqa: S102 - our own README

    assert scope["outputs"].shape == (32, 20, 128) and scope["final"].shape == (2, 32, 128)
    # Row 0 is masked from t = 15: its carry passes through, so its outputs stop changing.
    np.testing.assert_array_equal(scope["outputs"][0, 15:], np.broadcast_to(
        scope["outputs"][0, 14], (5, 128)))  # fmt: skip


def load_experiment(name):
    if str(ROOT / "experiments") not in sys.path:  # as `python experiments/NAME.py` has it
        sys.path.insert(0, str(ROOT / "experiments"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def custom_cell_module():
    return load_experiment("custom_cell")  # registers "layernorm-gru" (once per test process)


@pytest.mark.parametrize(
    "argv, message",
    [
        # A key=value written after --cells (which takes every word) named an unknown cell after
        # the first cell's whole training, which was lost.
        (["--cells", "fused", "n_epochs=1"], "unknown cell 'n_epochs=1'"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["n_epochs=abc"], "config key n_epochs takes an integer, got 'abc'"),
    ],
)
def test_custom_cell_experiment_refuses_bad_arguments_before_training(
    custom_cell_module, monkeypatch, capsys, argv, message
):
    monkeypatch.setattr(sys, "argv", ["custom_cell.py", *argv])
    trained = []
    monkeypatch.setattr(custom_cell_module, "train", lambda *a, **k: trained.append(a))
    with pytest.raises(SystemExit) as exit_:
        custom_cell_module.run_script(custom_cell_module.main)
    assert exit_.value.code == 2 and not trained
    err = capsys.readouterr().err
    assert err.startswith(f"custom_cell.py: error: {message}") and err.count("\n") == 1


def test_experiments_refuse_an_empty_selection_or_output_folder(monkeypatch, capsys):
    datasets = load_experiment("datasets")
    for argv, message in [
        (["--only", ""], "unknown experiment(s) ['']"),  # used to run all nine
        (["--out", ""], "argument --out: an empty path"),  # used to write into the current folder
    ]:
        monkeypatch.setattr(sys, "argv", ["datasets.py", *argv])
        with pytest.raises(SystemExit):
            datasets.main()
        assert message in capsys.readouterr().err


def test_custom_cell_is_numpy_layernorm_gru(custom_cell_module):
    from flax import nnx

    cell = custom_cell_module.LayerNormGRUCell(3, 4, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    h, x = rng.normal(size=(2, 4)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)

    def ln(a):  # LayerNorm with Flax's defaults: eps 1e-6, scale 1, bias 0 at init
        return (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-6)

    def sigmoid(a):
        return 1 / (1 + np.exp(-a))

    gi = ln(x @ np.asarray(cell.dense_i.kernel[...]) + np.asarray(cell.dense_i.bias[...]))
    gh = ln(h @ np.asarray(cell.dense_h.kernel[...]))
    r, z = sigmoid(gi[:, :4] + gh[:, :4]), sigmoid(gi[:, 4:8] + gh[:, 4:8])
    n = np.tanh(gi[:, 8:] + r * gh[:, 8:])
    want = (1 - z) * n + z * h

    got, _ = cell(jnp.asarray(h), jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gru4rec_trains_with_the_example_cell_chosen_by_name(custom_cell_module):
    rng = np.random.default_rng(0)
    sessions = [rng.integers(0, 30, rng.integers(2, 8)) for _ in range(60)]
    log = SessionLog.from_sessions(sessions)
    dataset = Dataset(log, log, None, np.arange(30))
    config = Config(layers=(8,), batch_size=8, n_sample=8, n_epochs=1, steps_per_dispatch=4,
                    sample_store=1024, eval_batch_size=8, cell="layernorm-gru")  # fmt: skip

    model = build_model(config, dataset.n_items)
    result = train(config, dataset, progress=False)

    assert isinstance(model, GRU4Rec)
    assert isinstance(model.cells[0], custom_cell_module.LayerNormGRUCell)
    assert np.isfinite(result.results["recall@20"]) and result.results["n_test_events"] > 0
    # Its LayerNorm scales were trained (moved away from their initial ones).
    scale = np.asarray(result.params["cells"][0]["norm_i"]["scale"])
    assert not np.allclose(scale, 1.0)


def test_every_test_the_readme_names_exists():
    readme = (ROOT / "README.md").read_text()
    checked = 0
    for line in readme.splitlines():
        path = None
        for token in re.findall(r"`([^`]+)`", line):
            file, _, name = token.partition("::")
            if file.startswith("tests/"):
                path = ROOT / file
                assert path.is_file(), file
            if name and path is not None:  # `::name` alone continues the last file
                assert f"def {name}(" in path.read_text(), f"{path.name}::{name}"
                checked += 1
    assert checked >= 10


def test_experiment_tables_merge_the_rows_of_runs_with_only(tmp_path):
    """`--only` used to rewrite an experiment's table with its own rows, dropping the others."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from common import update_table
    finally:
        sys.path.pop(0)

    def markdown(rows):
        return "".join(f"{r['name']} {r['score']}\n" for r in rows)

    kw = {"key": ("name",), "order": [("a",), ("b",), ("c",)], "markdown": markdown}
    update_table(tmp_path, "t", [{"name": "c", "score": 1}, {"name": "a", "score": 2}], **kw)
    rows = update_table(tmp_path, "t", [{"name": "b", "score": 3}, {"name": "a", "score": 4}], **kw)
    want = [{"name": "a", "score": 4}, {"name": "b", "score": 3}, {"name": "c", "score": 1}]
    assert rows == want == json.loads((tmp_path / "t.json").read_text())
    assert (tmp_path / "t.md").read_text() == "a 4\nb 3\nc 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "t.md"]


def test_readme_training_example_runs_and_evaluates_like_the_run(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "load_run" in c)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}

    exec(code, scope)  # noqa: S102 - our own README

    assert (tmp_path / "runs/from-python/results.json").exists()
    # A round trip: the parameters load_run restores score the test split as the trained ones
    # did (the metrics themselves are pinned against brute force in tests/train).
    for k in (10, 20):
        np.testing.assert_allclose(
            scope["metrics"][f"recall@{k}"], scope["result"].results[f"recall@{k}"], rtol=1e-6
        )
        np.testing.assert_allclose(
            scope["metrics"][f"mrr@{k}"], scope["result"].results[f"mrr@{k}"], rtol=1e-6
        )
