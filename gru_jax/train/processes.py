"""Agreement between the processes of one multi-host run, checked before training starts.

``jax.distributed`` runs one copy of the program per process, and nothing makes the copies run
the same training. Processes that differ in a config key or in their data either train a model
nobody asked for (the collectives only need matching shapes) or wait in a collective whose
shapes differ until JAX's heartbeat aborts them; run folders that are not one shared folder
hang in orbax's first save. Each check here turns such a case into a refusal that every process
raises, naming what differs, so that none is left waiting.

Only the first check, `check_uniform_devices`, runs without communication: the gathers of the
others assume that every process drives the same number of devices.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib

import jax
import numpy as np

from gru_jax.train.errors import TrainingError

SHARED_FOLDER_TOKEN = ".gru-jax-processes"  # written by process 0, read back by the others


def gather(row: np.ndarray, purpose: str) -> np.ndarray:
    """Every process's ``row`` (same shape and dtype everywhere), stacked: (P, *row.shape).

    ``purpose`` completes "could not reach the other processes to ..." in the error raised when
    the gather fails: a peer stopped before it (JAX's ~30 s timeout), or a device layout JAX
    refuses (processes driving different numbers of devices pass the local check of
    `check_uniform_devices` where the counts average out, e.g. 1, 2 and 3).
    """
    from jax.experimental import multihost_utils

    try:
        return np.asarray(multihost_utils.process_allgather(row))
    except (jax.errors.JaxRuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainingError(
            f"process {jax.process_index()} could not reach the other processes to {purpose}; "
            "did one of them stop with an error, or do they drive different numbers of "
            f"devices? ({first[:300]})"
        ) from None


def refuse_together(error: Exception | None, what: str) -> None:
    """Raises ``error`` here, or a `TrainingError` naming the process that refused ``what``:
    a process that stopped alone would leave the others waiting in their next collective.
    With one process it raises ``error``, if any."""
    if jax.process_count() == 1:
        refused = np.array([error is not None])
    else:
        refused = gather(np.int32(error is not None), f"agree on {what}")
    if error is None and refused.any():
        error = TrainingError(f"process {int(np.argmax(refused))} refused {what}; see its error")
    if error is not None:
        raise error


def check_uniform_devices() -> None:
    """Every process drives as many devices as the others (seen locally: D = P · L)."""
    total, local, processes = jax.device_count(), jax.local_device_count(), jax.process_count()
    if total != processes * local:
        raise TrainingError(
            f"the {processes} processes drive different numbers of devices: this one (process "
            f"{jax.process_index()}) has {local} of the {total} in all; give every process the "
            "same --cpu-devices, or as many accelerators"
        )


def _digest(value: str) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(value.encode()).digest()[:8], np.uint32)


def check_same_run(facts: dict[str, str]) -> None:
    """Refuses, on every process, a run whose processes differ in any of ``facts``.

    ``facts`` maps a name ("config key learning_rate", "training sessions", ...) to this
    process's value as text; the processes exchange one short hash per name. Every process
    computes the same list of differences, so all of them stop.
    """
    names = sorted(facts)
    rows = gather(
        np.stack([_digest(f"{name}={facts[name]}") for name in names]),
        "check that they run the same training",
    )
    differing = [name for k, name in enumerate(names) if (rows[:, k] != rows[0, k]).any()]
    if differing:

        def shown(value: str) -> str:
            return value if len(value) <= 80 else value[:77] + "..."

        here = "; ".join(f"{name} = {shown(facts[name])}" for name in differing)
        raise TrainingError(
            f"the {jax.process_count()} processes do not run the same training: they differ in "
            f"{', '.join(differing)} (process {jax.process_index()} has {here}); start every "
            "process with the same command, config and data"
        )


def check_shared_folder(folder: pathlib.Path) -> None:
    """Makes the run folder (process 0) and refuses, on every process, one that is not one
    folder all processes see.

    Process 0 writes a random token into ``folder``; every other process reads it back. Orbax
    writes checkpoints collectively into that folder, so separate local folders (another path
    on each process, or one path on hosts without a shared file system) would hang there. The
    folders process 0 made for a run refused here are removed again.
    """
    path = folder / SHARED_FOLDER_TOKEN
    error, made = None, []
    # The token's last word says whether process 0 could write it (1: it could not).
    token = np.append(np.frombuffer(os.urandom(16), np.uint32), np.uint32(0))
    if jax.process_index() == 0:
        made = [p for p in (folder, *folder.parents) if not p.exists()]
        try:  # a failure here is decided with the others', not raised alone
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(token.tobytes().hex())
        except OSError as e:
            error = TrainingError(f"cannot write into the run folder {folder}: {e}")
            token[-1] = 1
    tokens = gather(token, "check the run folder")  # a barrier: process 0 has written by now
    if jax.process_index() != 0 and not tokens[0, -1]:
        try:
            seen = path.read_text().strip()
        except OSError:
            seen = None
        if seen != tokens[0].tobytes().hex():
            error = TrainingError(
                f"process {jax.process_index()} does not see the run folder of process 0: "
                f"{folder} here holds no token of process 0 ({SHARED_FOLDER_TOKEN}); several "
                "processes need one --out folder that all of them see, e.g. on a shared file "
                "system"
            )
    refused = True
    try:
        refuse_together(error, f"the run folder {folder}")
        refused = False
    finally:
        if jax.process_index() == 0:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
                for empty in made if refused else []:  # innermost first
                    empty.rmdir()
