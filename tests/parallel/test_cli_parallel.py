"""How a user asks for devices and processes: `gru-jax train`'s flags and mode choice (in a
subprocess where JAX must fix its devices at start-up) and the README's Python example."""

import argparse
import json
import re
import subprocess
import sys

import pytest

from gru_jax import cli
from gru_jax.config import Config

from .test_parallel import ROOT, TIMEOUT_S, _env


def test_cli_trains_with_sharding_on_two_virtual_devices(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "gru_jax.cli", "train", "--cpu-devices", "2",
            "--parallel", "sharding", "--out", str(out), "--no-progress", "n_epochs=1",
            "layers=16", "n_sample=32", "sample_store=65536", "batch_size=32"]  # fmt: skip

    done = subprocess.run(
        argv, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S
    )

    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["parallel"]["mode"] == "sharding" and results["parallel"]["num_devices"] == 2
    assert results["versions"]["backend"] == "cpu" and 0 < results["recall@20"] <= 1


def _choose(config, args, processes):
    """The mode `gru-jax train` runs, from the resolved config and the flags."""
    return cli._choose_parallel(config, cli._mode_chosen(args), args.cpu_devices, processes)


@pytest.mark.parametrize(
    "flag, overrides, cpu_devices, processes, want",
    [
        (None, [], None, 1, "none"),  # one device: nothing to split
        (None, [], 4, 1, "auto"),  # asking for devices means using them
        (None, [], None, 2, "auto"),  # and so does starting several processes
        (None, ["parallel=pmap"], 4, 1, "pmap"),  # an override is not replaced by auto
        (None, ["parallel=none"], 4, 1, "none"),  # not even an explicit none
        ("sharding", [], 4, 2, "sharding"),
    ],
)
def test_the_parallel_mode_asked_for_is_kept(flag, overrides, cpu_devices, processes, want):
    args = argparse.Namespace(
        parallel=flag, overrides=overrides, cpu_devices=cpu_devices, config=None
    )
    config = Config().with_overrides(overrides)
    config = config.replace(parallel=flag) if flag else config

    assert _choose(config, args, processes).parallel == want


def test_a_config_file_that_names_the_mode_is_kept(tmp_path):
    for text, want in (('{"parallel": "none"}', "none"), ('{"layers": [32]}', "auto")):
        (tmp_path / "config.json").write_text(text)
        args = argparse.Namespace(
            parallel=None, overrides=[], cpu_devices=4, config=str(tmp_path / "config.json")
        )
        config = Config.from_file(tmp_path / "config.json")

        assert _choose(config, args, 1).parallel == want, text


def test_several_processes_refuse_parallel_none():
    args = argparse.Namespace(
        parallel=None, overrides=["parallel=none"], cpu_devices=None, config=None
    )
    with pytest.raises(cli.ConfigError, match="2 processes train one model together"):
        _choose(Config(), args, 2)


def test_a_batch_that_does_not_split_is_refused_before_jax_makes_the_devices(tmp_path, capsys):
    # Given a process where JAX has started: were the check after the devices were made,
    # setting their count would fail instead (and 4,000 devices would take a while)
    import jax

    jax.devices()
    argv = ["train", "--cpu-devices", "4000", "--out", str(tmp_path / "run"), "batch_size=32"]

    assert cli.main(argv) == cli.EXIT_DATA_ERROR
    assert "batch_size 32 does not split over the 4000 devices" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_coordinator_auto_without_a_cluster_says_so(tmp_path):
    env = {k: v for k, v in _env().items() if not k.startswith(("SLURM_", "OMPI_", "TPU_"))}
    done = subprocess.run(
        [sys.executable, "-m", "gru_jax.cli", "train", "--coordinator", "auto",
         "--out", str(tmp_path / "run")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip

    assert done.returncode == cli.EXIT_DATA_ERROR, done.stderr[-2000:]
    assert "coordinator 'auto' found no cluster that JAX detects" in done.stderr
    assert "Traceback" not in done.stderr


def test_readme_parallel_example_trains_on_four_devices(tmp_path):
    readme = (ROOT / "README.md").read_text()
    code = next(
        c for c in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "initialize(" in c
    )
    script = tmp_path / "example.py"
    script.write_text(code)

    done = subprocess.run(
        [sys.executable, str(script)],
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "runs/sharded/results.json").read_text())
    assert results["parallel"]["mode"] == "sharding" and results["parallel"]["num_devices"] == 4


@pytest.mark.multiprocess
def test_a_config_error_on_one_process_stops_the_other_within_a_minute(tmp_path):
    # Given two processes where only process 1 was given a mistyped key: it must join the
    # others before it stops, or process 0 waits jax.distributed's 5 minutes for it
    from .test_parallel import free_port

    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gru_jax.cli",
                "train",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
                "n_epochs=1",
                "layers=16",
                "batch_size=32",
            ]
            + ["layrs=16"] * i,
            env=_env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]

    # When both run, Then both stop within a minute: process 1 naming the key, process 0
    # saying it could not reach the other
    try:
        outputs = [p.communicate(timeout=90)[0] for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:  # still waiting: stop it and close its pipe
                p.kill()
                p.communicate()
    assert "unknown config key(s) ['layrs']" in outputs[1]
    assert "process 0 could not reach the other processes" in outputs[0], outputs[0][-2000:]
    assert [p.returncode for p in procs] == [cli.EXIT_TRAINING_ERROR, cli.EXIT_DATA_ERROR]
    assert not (tmp_path / "run").exists()
