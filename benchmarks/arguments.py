"""What the benchmark scripts share: argument types checked when parsing, before any work."""

from __future__ import annotations

import argparse
import pathlib

from gru_jax.cli import nonempty_path


def at_least(low: float, kind: type = int):
    """An argparse type: a number of ``kind`` that is at least ``low``."""

    def parse(text: str):
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names it in "invalid int value: 'x'"
    return parse


def folder(text: str) -> pathlib.Path:
    """An argparse type: a folder for results, made now, so that a path that cannot be one fails
    before the measuring rather than after it."""
    path = nonempty_path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file of that name, or no permission
        raise argparse.ArgumentTypeError(f"cannot use {text} as a folder: {e.strerror}") from e
    return path


def file_in_folder(text: str) -> pathlib.Path:
    """An argparse type: a file to write, whose folder is made now (see `folder`)."""
    path = pathlib.Path(text)
    if not text.strip() or path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file name")
    folder(str(path.parent))
    return path


def file_suffix(text: str) -> str:
    """An argparse type: a suffix for output file names (no folder separators)."""
    if "/" in text or "\\" in text:
        raise argparse.ArgumentTypeError(f"a file name suffix cannot hold a folder: {text!r}")
    return text
