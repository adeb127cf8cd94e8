"""The ``gru-jax`` command line.

One ``_add_<name>_parser(subparsers)`` per subcommand registers its flags and sets
``func`` to the function that runs it; `main` parses and dispatches with ``args.func(args)``.
Data errors print one clear line to stderr and exit with status 2 (no traceback).

    gru-jax preprocess --format diginetica --input train-item-views.csv --out prep/ --test-days 7
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_DATA_ERROR = 2


class UsageError(Exception):
    """A flag combination the parser cannot check by itself (exit status 2, like argparse)."""


# ---------------------------------------------------------------------------------------------
# preprocess
# ---------------------------------------------------------------------------------------------


def _add_preprocess_parser(subparsers) -> None:
    from gru_jax.data import FORMATS, PreprocessConfig

    d = PreprocessConfig()
    p = subparsers.add_parser(
        "preprocess",
        help="read a session log, apply GRU4Rec's preprocessing, write a dataset",
        description=(
            "Reads INPUT in FORMAT, applies GRU4Rec's preprocessing recipe (every step below is "
            "a flag) and writes OUT/arrays.npz, OUT/dataset.json and OUT/stats.json. "
            "srgnn and sequences inputs keep their published split. Format 'synthetic' "
            "(no --input) writes the built-in synthetic default dataset."
        ),
    )
    p.add_argument("--format", required=True, choices=(*FORMATS, "synthetic"))
    p.add_argument("--input", nargs="+", default=[], metavar="PATH", help="input file(s)/folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")

    g = p.add_argument_group("recipe (GRU4Rec's steps)")
    g.add_argument(
        "--event-types",
        default=",".join(d.event_types),
        help="1. comma-separated event types to keep, or 'all' (default: %(default)s)",
    )
    g.add_argument(
        "--session-gap",
        type=float,
        default=d.session_gap,
        help="2. idle seconds that start a new session when there is no session id "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--dedupe",
        action=argparse.BooleanOptionalAction,
        default=d.dedupe,
        help="4. remove consecutive repeats of an item within a session",
    )
    g.add_argument(
        "--min-item-support",
        type=int,
        help=f"5. (default: {d.min_item_support}; sequences: 1, i.e. kept as given)",
    )
    g.add_argument(
        "--min-session-length",
        type=int,
        help=f"5./7. (default: {d.min_session_length}; sequences: 1)",
    )
    g.add_argument(
        "--iterative-filter",
        action=argparse.BooleanOptionalAction,
        default=d.iterative_filter,
        help="5. repeat the filters until nothing changes",
    )
    g.add_argument("--split", choices=("time", "leave_one_out"), default=None, help="6.")
    g.add_argument("--test-days", type=float, default=d.test_days, help="6. (default: %(default)s)")
    g.add_argument(
        "--valid-days",
        type=float,
        default=d.valid_days,
        help="6. days before the test split for validation; 0 = none (default: %(default)s)",
    )
    g.add_argument("--split-time", type=float, default=None, help="6. fixed test boundary (Unix s)")
    g.add_argument(
        "--drop-unseen-test-items",
        action=argparse.BooleanOptionalAction,
        default=d.drop_unseen_test_items,
        help="7. drop test events whose item is not in train",
    )
    g.add_argument(
        "--test-protocol",
        choices=("pairs", "sessions"),
        default="pairs",
        help="srgnn: one test session per (prefix, target) pair, or the rebuilt sessions",
    )
    g.add_argument("--seed", type=int, default=0, help="synthetic: generator seed")

    c = p.add_argument_group("columns (csv, parquet, gru4rec, recbole)")
    c.add_argument("--session-col", help="session column (gru4rec: SessionId)")
    c.add_argument("--user-col", help="user column")
    c.add_argument("--item-col", help="item column (gru4rec: ItemId)")
    c.add_argument("--time-col", help="time column (gru4rec: Time)")
    c.add_argument("--type-col", help="event type column")
    c.add_argument("--separator", help="csv field separator (default ',')")
    c.add_argument("--time-unit", choices=("s", "ms", "us", "ns"), help="unit of numeric times")
    c.add_argument("--time-format", help="csv: strptime format of date-string times")
    p.set_defaults(func=_run_preprocess)


def _reader_options(args: argparse.Namespace) -> dict:
    fmt = args.format
    opts: dict = {}
    names = {"session": "session_col", "user": "user_col", "item": "item_col", "time": "time_col"}
    if fmt in ("csv", "parquet", "gru4rec", "recbole"):
        for key, attr in names.items():
            if getattr(args, attr) is not None:
                opts[key] = getattr(args, attr)
        if args.time_unit is not None:
            opts["time_unit"] = args.time_unit
    if fmt in ("csv", "parquet", "gru4rec") and args.type_col is not None:
        opts["type"] = args.type_col
    if fmt == "csv":
        if args.separator is not None:
            opts["separator"] = args.separator
        if args.time_format is not None:
            opts["time_format"] = args.time_format
        if "item" not in opts or "time" not in opts:
            raise UsageError("--format csv needs --item-col and --time-col")
    if fmt == "parquet" and ("item" not in opts or "time" not in opts):
        raise UsageError("--format parquet needs --item-col and --time-col")
    return opts


def _config(args: argparse.Namespace):
    from gru_jax.data import PreprocessConfig

    types = None if args.event_types.strip().lower() == "all" else args.event_types.split(",")
    given = args.format == "sequences"  # published sequences: no filtering unless asked
    d = PreprocessConfig()
    if args.min_item_support is None:
        args.min_item_support = 1 if given else d.min_item_support
    if args.min_session_length is None:
        args.min_session_length = 1 if given else d.min_session_length
    split = args.split or ("leave_one_out" if given else "time")
    return PreprocessConfig(
        event_types=None if types is None else tuple(t.strip() for t in types if t.strip()),
        session_gap=args.session_gap,
        dedupe=args.dedupe,
        min_item_support=args.min_item_support,
        min_session_length=args.min_session_length,
        iterative_filter=args.iterative_filter,
        split=split,
        test_days=args.test_days,
        valid_days=args.valid_days,
        split_time=args.split_time,
        drop_unseen_test_items=args.drop_unseen_test_items,
    )


def _run_preprocess(args: argparse.Namespace) -> int:
    import pathlib

    from gru_jax.data import default_dataset, load_dataset
    from gru_jax.data.dataset import write_json_atomic

    if args.format == "synthetic":
        dataset = default_dataset(seed=args.seed)
    elif not args.input:
        raise UsageError(f"--format {args.format} needs --input")
    elif args.format == "srgnn":
        dataset = load_dataset("srgnn", args.input, test_protocol=args.test_protocol)
    else:
        dataset = load_dataset(
            args.format, args.input, config=_config(args), **_reader_options(args)
        )

    out = pathlib.Path(args.out)
    dataset.stats["input"] = [str(p) for p in args.input]
    dataset.save(out)
    write_json_atomic(out / "stats.json", {**dataset.stats, **dataset.summary()})
    s = dataset.summary()
    print(
        f"wrote {out}: {s['n_items']} items; train {s['n_train_events']} events / "
        f"{s['n_train_sessions']} sessions; test {s['n_test_events']} events / "
        f"{s['n_test_sessions']} sessions"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gru-jax", description="GRU4Rec-style session-based recommendation in JAX."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_preprocess_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gru-jax``; returns the exit status."""
    from gru_jax.data import DataError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DataError, UsageError) as e:
        print(f"gru-jax {args.command}: error: {e}", file=sys.stderr)
        return EXIT_DATA_ERROR


if __name__ == "__main__":
    sys.exit(main())
