"""What the experiment scripts share: their result tables, and how they stop on an error."""

from __future__ import annotations

import json
import os
import pathlib
import sys
from collections.abc import Callable, Sequence


def update_table(
    out: pathlib.Path,
    stem: str,
    rows: list[dict],
    *,
    key: Sequence[str],
    order: Sequence,
    markdown: Callable[[list[dict]], str],
) -> list[dict]:
    """Merges ``rows`` into ``out/stem.json`` (a row replaces the earlier one with the same
    ``key`` values, so a run with ``--only`` keeps the other experiments' rows), sorted by
    ``order`` (the key values in the scripts' listing order), then writes ``stem.json`` and
    ``stem.md`` from all rows, each through a temporary file. Returns all rows."""
    path = out / f"{stem}.json"
    earlier = json.loads(path.read_text()) if path.exists() else []
    merged = {tuple(r[k] for k in key): r for r in earlier}
    merged.update({tuple(r[k] for k in key): r for r in rows})
    rank = {value: i for i, value in enumerate(order)}
    all_rows = sorted(merged.values(), key=lambda r: rank.get(tuple(r[k] for k in key), len(rank)))
    out.mkdir(parents=True, exist_ok=True)
    for name, text in ((path, json.dumps(all_rows, indent=2, default=str)),
                       (out / f"{stem}.md", markdown(all_rows))):  # fmt: skip
        tmp = name.with_name(name.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, name)
    return all_rows


def run_script(main: Callable[[], None]) -> None:
    """Runs an experiment's ``main``: a data, config or training error is one line naming the
    file or value (status 2, or 3 for training), Ctrl-C is status 130 (the runs resume)."""
    from gru_jax.data import DataError
    from gru_jax.train.checkpoint import CheckpointError
    from gru_jax.train.loop import TrainingError

    prog = pathlib.Path(sys.argv[0]).name
    try:
        main()
    except TrainingError as e:
        print(f"{prog}: training stopped: {e}", file=sys.stderr)
        sys.exit(3)
    except (DataError, CheckpointError, ValueError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; the same command resumes each run", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # see gru_jax.cli.console: no interpreter shutdown around XLA threads
