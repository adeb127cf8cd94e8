"""Data-parallel training equals single-device training for the same global batch.

JAX fixes its device count when it starts, so every run here happens in a subprocess
(`worker.py`) with its own virtual CPU devices; the rest of the suite keeps one device. All
comparisons use dropout 0 except where said: pmap folds the device index into the dropout key,
so its masks differ from one device's by design (the sharding mode draws the same masks).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).with_name("worker.py")
ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT_S = 300
TOLERANCE = 1e-5  # float32, 20 steps of Adagrad


def _env() -> dict[str, str]:
    # The user's JAX and XLA settings are left out, but not the run's compilation cache
    # (tests/conftest.py), which changes no result.
    cache = ("JAX_COMPILATION_CACHE_", "JAX_PERSISTENT_CACHE_")
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(cache) or not k.startswith(("JAX_", "XLA_"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _spec(tmp_path: pathlib.Path, name: str, runs: list[dict], **devices) -> pathlib.Path:
    path = tmp_path / f"{name}.spec.json"
    path.write_text(json.dumps({"output": str(tmp_path), "runs": runs, **devices}))
    return path


def _start(spec: pathlib.Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(spec)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(*procs: subprocess.Popen) -> None:
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            tails = [p.communicate()[0][-2000:] for p in procs]  # reaps them, no stray Popen
            raise AssertionError(
                f"workers still running after {TIMEOUT_S} s:\n" + "\n".join(tails)
            ) from None
        outputs.append((proc.returncode, out))
    failed = [out for code, out in outputs if code != 0]
    assert not failed, "worker failed:\n" + "\n".join(out[-4000:] for out in failed)


def run_worker(tmp_path: pathlib.Path, name: str, runs: list[dict], **devices) -> None:
    _wait(_start(_spec(tmp_path, name, runs, **devices)))


def params(tmp_path: pathlib.Path, name: str) -> dict[str, np.ndarray]:
    with np.load(tmp_path / f"{name}.npz") as f:
        return dict(f)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# One process, 4 devices: pmap and sharding against none
# ---------------------------------------------------------------------------------------------

CASES = {
    # cross-entropy with logQ, shared embedding, no momentum
    "cross-entropy": {"loss": "cross-entropy", "logq": 1.0},
    # bpr-max with momentum, ELU and score regularisation
    "bpr-max": {"loss": "bpr-max", "momentum": 0.3, "bpreg": 0.5, "elu_param": 0.5},
    # top1-max with a separate input embedding table and momentum
    "top1-max": {
        "loss": "top1-max",
        "momentum": 0.1,
        "elu_param": 0.0,
        "constrained_embedding": False,
        "embedding": 8,
    },
}
DROPOUT = {"dropout_p_embed": 0.2, "dropout_p_hidden": 0.1}


@pytest.mark.parametrize("case", sorted(CASES))
def test_four_devices_match_one_device_after_20_steps(tmp_path, case):
    # Given the same config and data, run for 5 dispatches of 4 steps in each mode
    config = CASES[case]
    runs = [
        {"name": mode, "config": {**config, "parallel": mode}, "stop_after_dispatches": 5}
        for mode in ("none", "pmap", "sharding")
    ]
    with_dropout = case == "top1-max"
    if with_dropout:
        runs += [
            {
                "name": f"{mode}-dropout{i}",
                "config": {**config, **DROPOUT, "parallel": mode},
                "stop_after_dispatches": 5,
            }
            for mode, i in (("none", 0), ("sharding", 0), ("pmap", 0))
        ]

    # When the runs finish on 4 virtual CPU devices
    run_worker(tmp_path, case, runs, cpu_devices=4)

    # Then both parallel modes give the single-device parameters
    reference = params(tmp_path, "none")
    initial_gap = max(float(np.max(np.abs(v))) for v in reference.values())
    assert initial_gap > 0.1
    for mode in ("pmap", "sharding"):
        assert max_diff(params(tmp_path, mode), reference) < TOLERANCE, mode
    if with_dropout:
        # sharding draws the single-device masks; pmap its own (the device index is folded in)
        none, sharding = params(tmp_path, "none-dropout0"), params(tmp_path, "sharding-dropout0")
        pmap = params(tmp_path, "pmap-dropout0")
        assert max_diff(sharding, none) < TOLERANCE
        assert max_diff(pmap, none) > 1e-3
        assert all(np.all(np.isfinite(v)) for v in pmap.values())


# ---------------------------------------------------------------------------------------------
# Two processes (jax.distributed, gloo) against one
# ---------------------------------------------------------------------------------------------


SMALL = {"n_train": 48, "n_test": 16}  # 7 dispatches: collectives between processes are slow


def _start_processes(tmp_path, runs_of, cpu_devices: int | tuple[int, ...], n: int = 2):
    """Processes 0 .. n-1, coordinated on localhost; process i runs ``runs_of(i)`` on
    ``cpu_devices`` devices (or ``cpu_devices[i]``)."""
    port = free_port()
    devices = (cpu_devices,) * n if isinstance(cpu_devices, int) else cpu_devices
    return [
        _start(
            _spec(
                tmp_path,
                f"process{i}",
                runs_of(i),
                cpu_devices=devices[i],
                coordinator=f"127.0.0.1:{port}",
                num_processes=n,
                process_id=i,
                dataset=SMALL,
            )
        )
        for i in range(n)
    ]


@pytest.mark.multiprocess
def test_two_processes_match_one_process(tmp_path):
    # Given two processes of 2 CPU devices each, coordinated on localhost
    config = {"loss": "bpr-max", "momentum": 0.3, "checkpoint_every": 4}
    runs = [
        {
            "name": mode,
            "config": {**config, "parallel": mode},
            "out_dir": str(tmp_path / f"run-{mode}"),
            "evaluate": True,
        }
        for mode in ("sharding", "pmap")
    ]
    procs = _start_processes(tmp_path, lambda i: runs, cpu_devices=2)
    # and one process of one device on the same data
    single = [{**runs[0], "name": "none", "config": config, "out_dir": str(tmp_path / "run-none")}]
    run_worker(tmp_path, "single", single, cpu_devices=1, dataset=SMALL)
    _wait(*procs)

    # Then parameters, logged losses and test metrics agree; process 0 wrote the run
    reference = params(tmp_path, "none")
    metrics = json.loads((tmp_path / "none.json").read_text())
    losses = _losses(tmp_path / "run-none")
    for mode in ("sharding", "pmap"):
        assert max_diff(params(tmp_path, mode), reference) < TOLERANCE, mode
        results = json.loads((tmp_path / f"{mode}.json").read_text())
        assert results["parallel"] == {
            "mode": mode,
            "num_devices": 4,
            "num_processes": 2,
            "rows_per_device": 2,
        }
        for key in ("recall@20", "mrr@20", "ndcg@20", "n_test_events"):
            assert results[key] == pytest.approx(metrics[key], abs=1e-6), (mode, key)
        # Only process 0 logs: a second writer would double the lines of the shared file.
        np.testing.assert_allclose(_losses(tmp_path / f"run-{mode}"), losses, rtol=1e-5)


def _losses(run_dir: pathlib.Path) -> np.ndarray:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return np.array([json.loads(line)["loss"] for line in lines])


# ---------------------------------------------------------------------------------------------
# Checkpoints: written with 4 devices, restored with 1 and with 2
# ---------------------------------------------------------------------------------------------


def test_checkpoint_from_four_devices_resumes_on_one_and_two(tmp_path):
    # Given an uninterrupted 2-epoch run, and runs stopped mid-epoch on 4 devices
    config = {"loss": "cross-entropy", "logq": 1.0, "momentum": 0.2, "n_epochs": 2}

    def run(name, mode, out, stop=None):
        return {
            "name": name,
            "config": {**config, "parallel": mode},
            "out_dir": str(tmp_path / out),
            "stop_after_dispatches": stop,
        }

    run_worker(
        tmp_path,
        "four",
        [
            run("full", "none", "full"),
            run("stopped-sharding", "sharding", "from-sharding", stop=7),
            run("stopped-pmap", "pmap", "from-pmap", stop=7),
        ],
        cpu_devices=4,
    )
    shutil.copytree(tmp_path / "from-sharding", tmp_path / "from-sharding-2")

    # When they resume on one device, and on two in the other mode
    one = _start(_spec(tmp_path, "one", [run("one", "none", "from-sharding")], cpu_devices=1))
    two = _start(
        _spec(
            tmp_path,
            "two",
            [
                run("two-sharding", "sharding", "from-pmap"),
                run("two-pmap", "pmap", "from-sharding-2"),
            ],
            cpu_devices=2,
        )
    )
    _wait(one, two)

    # Then each ends where the uninterrupted run ends
    full = params(tmp_path, "full")
    assert max_diff(params(tmp_path, "stopped-sharding"), full) > 1e-3  # it did stop early
    for name in ("one", "two-sharding", "two-pmap"):
        assert max_diff(params(tmp_path, name), full) < TOLERANCE, name


# ---------------------------------------------------------------------------------------------
# The NaN guard and dropout reproducibility under both modes
# ---------------------------------------------------------------------------------------------


def test_nan_guard_and_reproducible_dropout_under_both_modes(tmp_path):
    # Given finished 1-epoch runs in each mode, then a second epoch whose loss is NaN,
    # and two pmap runs with dropout and the same seed
    finish = [
        {"name": f"clean-{m}", "config": {"parallel": m, "loss": "test-nan"},
         "out_dir": str(tmp_path / m)}
        for m in ("pmap", "sharding")
    ]  # fmt: skip
    poison = [
        {
            "name": f"nan-{m}",
            "config": {"parallel": m, "loss": "test-nan", "n_epochs": 2},
            "out_dir": str(tmp_path / m),
            "poison": True,
        }
        for m in ("pmap", "sharding")
    ]
    dropout = [
        {"name": f"pmap-dropout-{i}", "config": {**DROPOUT, "parallel": "pmap"}} for i in ("a", "b")
    ]

    # When they run on 2 virtual CPU devices
    run_worker(tmp_path, "guard", finish + poison + dropout, cpu_devices=2)

    # Then the NaN stops each run naming epoch 2, and the epoch-1 checkpoint stays the latest
    for mode in ("pmap", "sharding"):
        message = (tmp_path / f"nan-{mode}.error").read_text()
        assert "non-finite loss nan at epoch 2, dispatch 1" in message, mode
        lines = (tmp_path / mode / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        epoch_end = [r["step"] for r in records if r.get("epoch_end")]
        steps = sorted(int(p.name) for p in (tmp_path / mode / "checkpoints").iterdir())
        assert len(epoch_end) == 1 and steps[-1] == epoch_end[0], mode
        assert not (tmp_path / f"nan-{mode}.npz").exists()
    # and the same seed gives the same pmap dropout masks, hence the same parameters
    assert max_diff(params(tmp_path, "pmap-dropout-a"), params(tmp_path, "pmap-dropout-b")) == 0.0


@pytest.mark.multiprocess
def test_a_run_folder_refused_on_one_process_stops_every_process(tmp_path):
    # Given two processes whose run folders differ: process 0's holds another tool's results
    foreign = tmp_path / "p0"
    foreign.mkdir()
    (foreign / "results.json").write_text('{"mine": 1}')
    procs = _start_processes(
        tmp_path,
        lambda i: [
            {
                "name": f"p{i}",
                "out_dir": str(tmp_path / f"p{i}"),
                "config": {"parallel": "sharding"},
            }
        ],
        cpu_devices=1,
    )

    # When both start, Then both stop with an error (neither waits for the other in a
    # collective), and the foreign file is kept
    _wait(*procs)
    assert "results.json but no config.json" in (tmp_path / "p0.error").read_text()
    assert "process 0 refused the run directory" in (tmp_path / "p1.error").read_text()
    assert (foreign / "results.json").read_text() == '{"mine": 1}'
    assert not (tmp_path / "p1" / "config.json").exists()


@pytest.mark.multiprocess
def test_processes_that_differ_in_config_data_or_folder_all_stop_naming_it(tmp_path):
    # Given two processes that run four trainings one after the other, each time differing in
    # one thing: a config key, the training data, the run folder (one per process, as on two
    # hosts without a shared file system), and last a run folder process 0 cannot make.
    # Without the checks the first trains silently another model than either asked for, the
    # next two wait in a collective.
    def runs_of(i):
        return [
            {"name": f"config{i}", "config": {"learning_rate": [0.05, 0.5][i]}},
            {"name": f"data{i}", "dataset": {"seed": i}, "out_dir": str(tmp_path / "data")},
            {"name": f"folder{i}", "out_dir": str(tmp_path / f"folder{i}" / "run")},
            {"name": f"unwritable{i}", "out_dir": str(tmp_path / "a-file" / "run")},
        ]

    (tmp_path / "a-file").write_text("not a folder")

    procs = _start_processes(
        tmp_path, lambda i: [{**r, "config": {"parallel": "sharding", **r.get("config", {})}}
                             for r in runs_of(i)], cpu_devices=1,
    )  # fmt: skip

    # When both start, Then every training stops on both processes, saying what differs
    _wait(*procs)
    for i in range(2):
        config = (tmp_path / f"config{i}.error").read_text()
        assert "differ in config key learning_rate" in config
        assert f"process {i} has config key learning_rate = {[0.05, 0.5][i]}" in config
        data = (tmp_path / f"data{i}.error").read_text()
        assert "they differ in training sessions (process" in data  # same items, no test set
    assert "does not see the run folder of process 0" in (tmp_path / "folder1.error").read_text()
    assert "process 1 refused the run folder" in (tmp_path / "folder0.error").read_text()
    # A folder process 0 cannot make stops process 0 with why, and process 1 names process 0
    assert "cannot write into the run folder" in (tmp_path / "unwritable0.error").read_text()
    assert "process 0 refused the run folder" in (tmp_path / "unwritable1.error").read_text()
    # and nothing was written: no run in the data folder, no folders left by process 0
    assert not (tmp_path / "data" / "config.json").exists()
    assert not (tmp_path / "folder0").exists() and not (tmp_path / "folder1").exists()


@pytest.mark.multiprocess
def test_processes_with_different_device_counts_all_stop_saying_so(tmp_path):
    # Given three processes of 1, 2 and 3 devices: 6 in all, so process 1 (2 devices) sees
    # the average locally and only finds out when JAX refuses the layout of the first gather
    counts = (1, 2, 3)
    procs = _start_processes(
        tmp_path,
        lambda i: [{"name": f"p{i}", "config": {"parallel": "sharding", "batch_size": 6}}],
        cpu_devices=counts,
        n=3,
    )

    # When they start, Then all stop with an error about the devices (none in a collective)
    _wait(*procs)
    for i in (0, 2):
        error = (tmp_path / f"p{i}.error").read_text()
        assert f"this one (process {i}) has {counts[i]} of the 6 in all" in error
    error = (tmp_path / "p1.error").read_text()
    assert "could not reach the other processes to check that they run the same" in error
    assert "drive different numbers of devices?" in error
