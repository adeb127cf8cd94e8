"""Runs `gru_jax.train.loop.train` in a fresh process with its own devices, for the tests.

The number of virtual CPU devices is fixed when JAX starts, so every multi-device test runs
this script in a subprocess::

    python tests/parallel/worker.py SPEC.json

SPEC holds ``cpu_devices``, optionally ``coordinator``/``num_processes``/``process_id`` and
``dataset`` (keyword arguments of `tiny_dataset`), and
``runs``: a list of {"name", "config" (overrides), "out_dir", "stop_after_dispatches",
"evaluate", "dataset" (changes to the spec's)}. Each run writes NAME.npz (the final parameters, flattened) and NAME.json (its
results) into ``SPEC["output"]``, on process 0 only; a run stopped by a `TrainingError` writes
NAME.error (its message) instead. The loss "test-nan" is cross-entropy, or NaN at every step in
runs with ``"poison": true``.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np


def tiny_dataset(seed: int = 0, n_items: int = 40, n_train: int = 96, n_test: int = 24):
    """A small random session log (sessions of 2..9 events) with a test split."""
    from gru_jax.data import Dataset, SessionLog

    rng = np.random.default_rng(seed)

    def log(n):
        sessions = [rng.integers(0, n_items, rng.integers(2, 10)) for _ in range(n)]
        return SessionLog.from_sessions(sessions)

    return Dataset(log(n_train), log(n_test), None, np.arange(n_items))


TINY = {
    "layers": (16,),
    "batch_size": 8,
    "n_sample": 32,
    "steps_per_dispatch": 4,
    "n_epochs": 1,
    "eval_batch_size": 8,
    "log_every": 1,
    "sample_store": 4096,
}


def flatten(tree) -> dict[str, np.ndarray]:
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def main(spec_path: str) -> None:
    spec = json.loads(pathlib.Path(spec_path).read_text())
    from gru_jax.train import parallel

    parallel.initialize(
        cpu_devices=spec.get("cpu_devices"),
        coordinator=spec.get("coordinator"),
        num_processes=spec.get("num_processes"),
        process_id=spec.get("process_id"),
    )
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py

    import jax.numpy as jnp

    from gru_jax.config import Config
    from gru_jax.losses import LOSSES
    from gru_jax.train.loop import TrainingError, train

    def poisoned(scores, row_mask, *, log_q=None, row_offset=None, **hyper):
        return jnp.sum(scores) * jnp.nan

    clean = LOSSES.get("cross-entropy")

    output = pathlib.Path(spec["output"])
    for run in spec["runs"]:
        dataset = tiny_dataset(**{**spec.get("dataset", {}), **run.get("dataset", {})})
        # "test-nan" is cross-entropy until a run asks for it poisoned (NaN at every step).
        LOSSES.register("test-nan", poisoned if run.get("poison") else clean, overwrite=True)
        config = Config().replace(**{**TINY, **run.get("config", {})})
        try:
            result = train(
                config,
                dataset,
                run.get("out_dir"),
                progress=False,
                evaluate_test=run.get("evaluate", False),
                stop_after_dispatches=run.get("stop_after_dispatches"),
            )
        except TrainingError as e:  # the test reads the message
            (output / f"{run['name']}.error").write_text(str(e))
            continue
        if jax.process_index() == 0:
            np.savez(output / f"{run['name']}.npz", **flatten(result.params))
            results = {k: v for k, v in result.results.items() if k not in ("config", "versions")}
            (output / f"{run['name']}.json").write_text(json.dumps(results, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
