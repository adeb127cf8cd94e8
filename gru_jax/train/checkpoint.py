"""Checkpoints with orbax: the train state as a pytree, the loop's position as JSON.

A checkpoint is taken at a dispatch boundary and holds everything the rest of the run depends
on: parameters, optimizer state, the carried hidden states, the step counter (dropout keys), the
negative sampler's state and the (epoch, dispatch) position, so a resumed run continues exactly
where the interrupted one stopped.
"""

from __future__ import annotations

import inspect
import logging
import pathlib
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read back (truncated, deleted in part, not orbax's)."""


class Checkpoints:
    """Numbered checkpoints under ``directory`` (the global step count is the number)."""

    def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 2):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest(self) -> int | None:
        return self._manager.latest_step()

    def save(self, number: int, state: Any, meta: dict) -> None:
        self._manager.save(
            number,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore(self, like: Any, number: int | None = None) -> tuple[Any, dict]:
        """Restores into the structure (and shardings) of ``like``; the latest when no number."""
        number = self.latest() if number is None else number
        if number is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            restored = self._manager.restore(
                number,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # orbax and TensorStore raise many types for a damaged file
            reason = _first_sentence(e)
        else:
            return restored.state, restored.meta
        raise CheckpointError(
            f"checkpoint {number} in {self.directory} cannot be read ({reason}); delete "
            f"{self.directory / str(number)} to go back to an earlier checkpoint, if any"
        )

    def close(self) -> None:
        self._manager.close()


def _first_sentence(error: Exception) -> str:
    """The readable head of an orbax/TensorStore error (they append a long spec repr)."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text.split(" See full TensorStore details")[0][:300]


def silence_unfinished_reads() -> None:
    """After a `CheckpointError`, keeps the reads orbax left unfinished from printing an
    "Exception ignored" traceback each when they are finalised (at exit, or later on its
    thread), which would bury the one-line error. For a process that is about to exit: it
    replaces ``sys.unraisablehook`` for coroutines, and mutes asyncio's logger, from then on."""
    hook = sys.unraisablehook

    def quiet(unraisable):
        if not inspect.iscoroutine(unraisable.object):
            hook(unraisable)

    sys.unraisablehook = quiet
    # ...and asyncio's "exception was never retrieved" for the reads' gathered future.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
