"""What the benchmark scripts share: argument types checked when parsing, before any work."""

from __future__ import annotations

import argparse


def at_least(low: float, kind: type = int):
    """An argparse type: a number of ``kind`` that is at least ``low``."""

    def parse(text: str):
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value

    return parse
