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
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
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
        # Another model's checkpoint is told apart before any array is read (a failed read
        # leaves orbax's reads unfinished): by its metadata's leaf paths and shapes.
        saved, wanted = self._saved_layout(number), _layout(like)
        if saved is not None and saved != wanted:
            differ = sorted(set(saved.items()) ^ set(wanted.items()))
            shown = [
                f"{path} {list(shape)} ({'saved' if saved.get(path) == shape else 'expected'})"
                for path, shape in differ[:4]
            ]
            more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
            raise CheckpointError(
                f"checkpoint {number} in {self.directory} holds another model's state: "
                f"{', '.join(shown)}{more}. It was written by another model config or another "
                "version of gru_jax; train into a new folder (or use that version to read it)"
            )
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

    def _saved_layout(self, number: int) -> dict[str, tuple] | None:
        """Path -> shape of a saved state's leaves, from its metadata (None if unreadable)."""
        try:
            return _layout(self._manager.item_metadata(number)["state"])
        except Exception:  # noqa: BLE001 - a damaged checkpoint: the caller's message says so
            return None


def _layout(tree: Any) -> dict[str, tuple]:
    """Leaf path ("params/cells/0/bias_h", the same for the saved metadata's dicts and for the
    live state's dataclasses, tuples and NNX containers) -> the leaf's shape."""
    return {
        "/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", ()))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


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
