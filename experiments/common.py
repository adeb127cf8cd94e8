"""What the experiment scripts share: their result tables, and how they stop on an error."""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Callable, Sequence

from gru_jax.data.dataset import write_text_atomic


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
    ``stem.md`` from all rows. Returns all rows."""
    path = out / f"{stem}.json"
    earlier = json.loads(path.read_text()) if path.exists() else []
    merged = {tuple(r[k] for k in key): r for r in earlier}
    merged.update({tuple(r[k] for k in key): r for r in rows})
    rank = {value: i for i, value in enumerate(order)}
    all_rows = sorted(merged.values(), key=lambda r: rank.get(tuple(r[k] for k in key), len(rank)))
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(all_rows, indent=2, default=str))
    write_text_atomic(out / f"{stem}.md", markdown(all_rows))
    return all_rows


def run_script(main: Callable[[], None]) -> None:
    """Runs an experiment's ``main`` with the exit statuses of ``gru-jax``: a data, config or
    training error is one line naming the file or value, Ctrl-C is 130 (the runs resume)."""
    from gru_jax.cli import EXIT_DATA_ERROR, EXIT_INTERRUPTED, EXIT_TRAINING_ERROR, leave
    from gru_jax.data import DataError
    from gru_jax.train.checkpoint import CheckpointError
    from gru_jax.train.loop import TrainingError

    prog = pathlib.Path(sys.argv[0]).name
    try:
        main()
    except TrainingError as e:
        print(f"{prog}: training stopped: {e}", file=sys.stderr)
        leave(EXIT_TRAINING_ERROR)
    except (DataError, CheckpointError, ValueError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        leave(EXIT_DATA_ERROR)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; the same command resumes each run", file=sys.stderr)
        leave(EXIT_INTERRUPTED)
