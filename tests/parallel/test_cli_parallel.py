"""`gru-jax train` wires the device flags through to JAX (a subprocess: devices are fixed at
start-up)."""

import json
import subprocess
import sys

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
