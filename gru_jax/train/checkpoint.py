"""Checkpoints with orbax: the train state as a pytree, the loop's position as JSON.

A checkpoint is taken at a dispatch boundary and holds everything the rest of the run depends
on: parameters, optimizer state, the carried hidden states, the step counter (dropout keys), the
negative sampler's state and the (epoch, dispatch) position, so a resumed run continues exactly
where the interrupted one stopped.
"""

from __future__ import annotations

import pathlib
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
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise CheckpointError(
                f"checkpoint {number} in {self.directory} cannot be read ({reason}); delete "
                f"{self.directory / str(number)} to go back to an earlier checkpoint, if any"
            ) from e
        return restored.state, restored.meta

    def close(self) -> None:
        self._manager.close()
