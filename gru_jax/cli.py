"""The ``gru-jax`` command line.

One ``_add_<name>_parser(subparsers)`` per subcommand registers its flags and sets
``func`` to the function that runs it; `main` parses and dispatches with ``args.func(args)``.
Data and usage errors print one clear line to stderr and exit with status 2 (no traceback).

    gru-jax train                                   # the generated default data, ~1 minute
    gru-jax train --preset retailrocket --format srgnn --train ../shared/data/retailrocket_cotrec \
        --out runs/rr n_epochs=5
    gru-jax evaluate --run runs/rr                  # its own test set; or --data/--format/--test
    gru-jax recommend --run runs/rr --session 12,45,7 -k 20
    gru-jax presets [--keys]
    gru-jax preprocess --format diginetica --input train-item-views.csv --out prep/ --test-days 7
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import sys
import time
from collections.abc import Sequence

EXIT_DATA_ERROR = 2
EXIT_TRAINING_ERROR = 3
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT
READ_FORMATS = ("gru4rec", "csv", "parquet", "diginetica", "otto", "srgnn", "sequences", "recbole")
TEST_PROTOCOLS = ("pairs", "sessions")
# What `evaluate --run` asks for when a run's recorded data cannot be read again.
GIVE_DATA_FLAGS = "give --data DIR, or --format F and --test PATH"


class UsageError(Exception):
    """A flag combination the parser cannot check by itself (exit status 2, like argparse)."""


class ConfigError(ValueError):
    """A config file, preset or key=value override that does not make a valid `Config`."""


def nonempty_path(text: str) -> pathlib.Path:
    """An argparse type for a path argument: '' is refused (it would mean the current folder).
    The experiments' and benchmarks' scripts use it too."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name a file or folder")
    return pathlib.Path(text)


# ---------------------------------------------------------------------------------------------
# preprocess
# ---------------------------------------------------------------------------------------------


def _add_preprocess_parser(subparsers) -> None:
    from gru_jax.data import FORMATS

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
    p.add_argument(
        "--input",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="input file(s)/folder",
    )
    p.add_argument(
        "--out", required=True, type=nonempty_path, metavar="DIR", help="output directory"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace a dataset already written in OUT"
    )
    _add_recipe_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="synthetic: generator seed")
    _add_column_arguments(p)
    p.set_defaults(func=_run_preprocess)


# The recipe flags (one per PreprocessConfig field) default to None, so that "given" means typed
# on the command line: `_config` fills in each format's defaults, and `_refuse_recipe_flags`
# refuses any flag that was given.
def _recipe_flags() -> tuple[str, ...]:
    from gru_jax.data import PreprocessConfig

    return tuple(f.name for f in dataclasses.fields(PreprocessConfig))


def _add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    from gru_jax.data import PreprocessConfig

    d = PreprocessConfig()
    g = p.add_argument_group("recipe (GRU4Rec's steps)")
    g.add_argument(
        "--event-types",
        help="1. comma-separated event types to keep, or 'all' "
        f"(default: {','.join(d.event_types)})",
    )
    g.add_argument(
        "--session-gap",
        type=float,
        help="2. idle seconds that start a new session when there is no session id "
        f"(default: {d.session_gap})",
    )
    g.add_argument(
        "--dedupe",
        action=argparse.BooleanOptionalAction,
        help=f"4. remove consecutive repeats of an item within a session (default: {d.dedupe}; "
        "sequences: no)",
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
        help=f"5. repeat the filters until nothing changes (default: {d.iterative_filter})",
    )
    g.add_argument(
        "--split",
        choices=("time", "leave_one_out"),
        help="6. (default: time; sequences: leave_one_out)",
    )
    g.add_argument("--test-days", type=float, help=f"6. (default: {d.test_days})")
    g.add_argument(
        "--valid-days",
        type=float,
        help=f"6. days before the test split for validation; 0 = none (default: {d.valid_days})",
    )
    g.add_argument("--split-time", type=float, help="6. fixed test boundary (Unix s)")
    g.add_argument(
        "--drop-unseen-test-items",
        action=argparse.BooleanOptionalAction,
        help=f"7. drop test events whose item is not in train (default: {d.drop_unseen_test_items})",
    )
    g.add_argument(
        "--test-protocol",
        choices=TEST_PROTOCOLS,
        help="srgnn: one test session per published (prefix, target) pair, or the whole "
        "sessions rebuilt from them with every position after the first predicted "
        "(default: pairs)",
    )


def _add_column_arguments(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("columns (csv, parquet, gru4rec, recbole)")
    c.add_argument("--session-col", help="session column (gru4rec: SessionId)")
    c.add_argument("--user-col", help="user column")
    c.add_argument("--item-col", help="item column (gru4rec: ItemId)")
    c.add_argument("--time-col", help="time column (gru4rec: Time)")
    c.add_argument("--type-col", help="event type column")
    c.add_argument("--separator", help="csv field separator (default ',')")
    c.add_argument("--time-unit", choices=("s", "ms", "us", "ns"), help="unit of numeric times")
    c.add_argument("--time-format", help="csv: strptime format of date-string times")


COLUMNS = ("csv", "parquet", "gru4rec", "recbole")
# Which formats read each column flag (the others have fixed columns, or none); one entry per
# flag of `_add_column_arguments`.
COLUMN_FLAGS = {
    "session_col": COLUMNS,
    "user_col": COLUMNS,
    "item_col": COLUMNS,
    "time_col": COLUMNS,
    "time_unit": COLUMNS,
    "type_col": ("csv", "parquet", "gru4rec"),
    "separator": ("csv",),
    "time_format": ("csv",),
}


def _refuse_column_flags(args: argparse.Namespace, fmt: str | None, where: str) -> None:
    """Column flags given for a format (or a saved dataset) that has no use for them."""
    for flag, formats in COLUMN_FLAGS.items():
        if getattr(args, flag, None) is not None and fmt not in formats:
            raise UsageError(
                f"--{flag.replace('_', '-')} applies to {', '.join(formats)}, not {where}"
            )


def _reader_options(args: argparse.Namespace) -> dict:
    fmt = args.format
    _refuse_column_flags(args, fmt, fmt)
    opts: dict = {}
    # Each flag reaches only a format that reads it (`_refuse_column_flags`); the reader's
    # option is the flag's name without "_col" (session_col -> session, separator -> separator).
    for flag in COLUMN_FLAGS:
        if getattr(args, flag) is not None:
            opts[flag.removesuffix("_col")] = getattr(args, flag)
    if fmt in ("csv", "parquet") and ("item" not in opts or "time" not in opts):
        raise UsageError(f"--format {fmt} needs --item-col and --time-col")
    return opts


def _test_protocol(args: argparse.Namespace) -> str:
    """--test-protocol, which only srgnn splits have (pairs unless given)."""
    if args.format != "srgnn" and args.test_protocol is not None:
        raise UsageError(f"--test-protocol applies to srgnn splits, not {args.format}")
    return args.test_protocol or "pairs"


# Recipe flags that a leave-one-out split (one session per user, no time boundary) has no use for.
TIME_FLAGS = ("session_gap", "test_days", "valid_days", "split_time")


def _config(args: argparse.Namespace):
    """The PreprocessConfig of the recipe flags given, with each format's defaults elsewhere."""
    from gru_jax.data import PreprocessConfig
    from gru_jax.data.preprocess import SEQUENCES_AS_GIVEN

    # published sequences: no filtering unless asked
    defaults = SEQUENCES_AS_GIVEN if args.format == "sequences" else PreprocessConfig()
    values = {
        name: getattr(defaults, name) if getattr(args, name) is None else getattr(args, name)
        for name in _recipe_flags()
    }
    if args.event_types is not None:
        types = args.event_types
        values["event_types"] = (
            None
            if types.strip().lower() == "all"
            else tuple(t.strip() for t in types.split(",") if t.strip())
        )
    if args.format == "sequences" and values["split"] != "leave_one_out":
        raise UsageError("sequences have no timestamps: they split leave-one-out only")
    if values["split"] == "leave_one_out":
        timed = [f"--{n.replace('_', '-')}" for n in TIME_FLAGS if getattr(args, n) is not None]
        if timed:
            raise UsageError(f"{', '.join(timed)}: a leave-one-out split has no time boundary")
    try:
        return PreprocessConfig(**values)
    except ValueError as e:  # e.g. a negative --test-days
        raise UsageError(str(e)) from None


DATASET_FILES = ("arrays.npz", "dataset.json", "stats.json")


def _check_dataset_folder(out: pathlib.Path, *, overwrite: bool) -> None:
    """Refuses to write a dataset over a run, or over a dataset unless --overwrite."""
    from gru_jax.train.loop import run_directory_of

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    run = run_directory_of(out)
    if (out / "config.json").exists() or run is not None:
        raise UsageError(
            f"--out {out} is inside the training run {run or out}; give another folder"
        )
    present = [name for name in DATASET_FILES if (out / name).exists()]
    if present and not overwrite:
        raise UsageError(
            f"--out {out} already holds a dataset ({', '.join(present)}); give another folder, "
            "or --overwrite to replace it"
        )


def _describe_test(dataset) -> str:
    if dataset.test is None:
        return "no test split"
    log = dataset.test
    return (
        f"test {log.n_events} events / {log.n_sessions} sessions / {log.n_predictions} predictions"
    )


def _distinct_paths(paths: Sequence[str]) -> list[str]:
    """The input paths, refusing one given twice (its events would count twice, or be both
    trained and tested on)."""
    seen: dict[pathlib.Path, str] = {}
    for path in paths:
        key = pathlib.Path(path).resolve()
        if key in seen:
            raise UsageError(f"{path} is given twice (as {seen[key]})")
        seen[key] = path
    return list(paths)


def _run_preprocess(args: argparse.Namespace) -> int:
    import pathlib

    from gru_jax.data import default_dataset, load_dataset
    from gru_jax.data.dataset import write_json_atomic

    out = pathlib.Path(args.out)
    _check_dataset_folder(out, overwrite=args.overwrite)
    protocol = _test_protocol(args)
    if args.format == "synthetic":
        if args.input:
            raise UsageError("--format synthetic generates its data: leave out --input")
        _refuse_recipe_flags(args, "the synthetic default is generated preprocessed")
        dataset = default_dataset(seed=args.seed)
    elif not args.input:
        raise UsageError(f"--format {args.format} needs --input")
    elif args.format == "srgnn":
        _refuse_recipe_flags(args, "an srgnn split is used as published")
        dataset = load_dataset("srgnn", args.input, test_protocol=protocol)
    else:
        dataset = load_dataset(
            args.format, _distinct_paths(args.input), config=_config(args), **_reader_options(args)
        )

    dataset.stats["input"] = [str(p) for p in args.input]
    dataset.save(out)
    write_json_atomic(out / "stats.json", {**dataset.stats, **dataset.summary()})
    s = dataset.summary()
    print(
        f"wrote {out}: {s['n_items']} items; train {s['n_train_events']} events / "
        f"{s['n_train_sessions']} sessions; {_describe_test(dataset)}"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def _add_train_parser(subparsers) -> None:
    from gru_jax.train.parallel import add_parallel_arguments

    p = subparsers.add_parser(
        "train",
        help="train GRU4Rec, evaluate on the test set, write the run",
        description=(
            "Trains GRU4Rec and evaluates it by full ranking. Without data it trains on the "
            "generated synthetic default (preset 'synthetic'). key=value arguments override "
            "config keys (see `gru-jax presets --keys`), e.g. n_epochs=5 layers=224 "
            "loss=bpr-max. Rerunning with the same --out resumes from its last checkpoint."
        ),
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a named config (see `gru-jax presets`)")
    source.add_argument("--config", metavar="FILE", help="a JSON or TOML file of config keys")
    _add_data_arguments(p, training=True)
    p.add_argument(
        "--out", type=nonempty_path, metavar="DIR", help="run directory (default: runs/NAME-TIME)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    add_parallel_arguments(p)
    _add_recipe_arguments(p)
    _add_column_arguments(p)
    p.set_defaults(func=_run_train)


def _add_data_arguments(p: argparse.ArgumentParser, *, training: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--format",
        choices=READ_FORMATS,
        help="format of --train/--test" if training else "format of --test",
    )
    if training:
        g.add_argument(
            "--train",
            nargs="+",
            action="extend",
            metavar="PATH",
            help="training file(s) (srgnn: the folder holding all_train_seq.txt and test.txt, "
            "which then also gives the test set); without --test the GRU4Rec recipe splits it",
        )
    g.add_argument(
        "--test",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="test file(s), used as given (unseen items are dropped at evaluation)",
    )
    g.add_argument(
        "--data",
        type=nonempty_path,
        metavar="DIR",
        help="a dataset written by `gru-jax preprocess` instead",
    )


def _split_overrides(args: argparse.Namespace) -> None:
    """Moves ``key=value`` tokens that a greedy ``--train``/``--test`` list swallowed."""
    from gru_jax.config import Config

    keys = {name for name, _, _ in Config.describe()}
    for attr in ("train", "test"):
        paths = getattr(args, attr, None) or []
        taken = [t for t in paths if t.partition("=")[0] in keys and "=" in t]
        if taken:
            setattr(args, attr, [t for t in paths if t not in taken])
            args.overrides = taken + list(args.overrides)


def _resolve_config(args: argparse.Namespace, *, have_data: bool):
    from gru_jax.config import Config, preset

    try:
        if args.preset:
            config = preset(args.preset)
        elif args.config:
            config = Config.from_file(args.config)
        else:
            config = Config() if have_data else preset("synthetic")
        config = config.with_overrides(args.overrides)  # in order: a repeated key's last wins
        if getattr(args, "parallel", None):
            config = config.replace(parallel=args.parallel)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _check_names(config)
    return config


def _check_names(config) -> None:
    """Loss, cell and optimizer are looked up in registries user code may extend."""
    from gru_jax.losses import LOSSES, check_row_offset
    from gru_jax.models import CELLS
    from gru_jax.optim import OPTIMIZERS
    from gru_jax.registry import UnknownNameError

    for key, registry in (("loss", LOSSES), ("cell", CELLS), ("optimizer", OPTIMIZERS)):
        try:
            registry.get(getattr(config, key))
        except UnknownNameError as e:
            raise ConfigError(str(e)) from None
    if config.parallel == "pmap":
        try:
            check_row_offset(LOSSES.get(config.loss), config.loss)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _mode_chosen(args: argparse.Namespace) -> bool:
    """Whether --parallel, a parallel= override or the config file names the parallel mode."""
    from gru_jax.config import read_config_file

    return (
        args.parallel is not None
        or any(item.partition("=")[0].strip() == "parallel" for item in args.overrides)
        or (bool(args.config) and "parallel" in read_config_file(args.config))
    )


def _choose_parallel(config, chosen: bool, cpu_devices: int | None, num_processes: int):
    """Several devices (--cpu-devices N > 1) or processes mean using them: the config's
    default mode "none" becomes "auto" unless the user ``chosen`` the mode (`_mode_chosen`)."""
    if config.parallel != "none" or not ((cpu_devices or 1) > 1 or num_processes > 1):
        return config
    if not chosen:
        return config.replace(parallel="auto")
    if num_processes > 1:
        raise ConfigError(
            f"{num_processes} processes train one model together: they need parallel pmap, "
            "sharding or auto, not none"
        )
    return config


def _check_batch_split(config, num_devices: int) -> None:
    """The B rows of a step must split evenly over the devices."""
    from gru_jax.train.parallel import check_batch_split, resolve_mode

    mode = resolve_mode(config.parallel, num_devices)
    if mode != "none":
        try:
            check_batch_split(config.batch_size, num_devices, mode)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _load_training_data(args: argparse.Namespace):
    """(dataset, description) from --data, --format/--train/--test, or the synthetic default."""
    from gru_jax.data import Dataset, dataset_from_files, default_dataset, load_dataset

    if args.data:
        if args.train or args.test:
            raise UsageError("give either --data or --train/--test, not both")
        _check_data_folder(args.data)
        _refuse_with_data(args)
        _refuse_recipe_flags(args, "a dataset written by `gru-jax preprocess` is used as saved")
        return Dataset.load(args.data), {"data": _absolute(args.data)}
    if not args.train:
        if args.test or args.format:
            raise UsageError("--format and --test need --train")
        print(
            "no data given: training on the generated default dataset (SYNTHETIC shop "
            "sessions from gru_jax.data.synthetic, seed 0; figures on it say nothing about "
            "real data)"
        )
        return default_dataset(), {"format": "synthetic", "seed": 0}
    if args.format is None:
        raise UsageError("--train needs --format (one of " + ", ".join(READ_FORMATS) + ")")
    # What `evaluate --run` needs to read this run's test set again: absolute paths, the
    # reader's options and the recipe.
    description = {
        "format": args.format,
        "train": [_absolute(p) for p in args.train],
        "test": [_absolute(p) for p in args.test] if args.test else None,
    }
    if args.format == "srgnn":
        if args.test:
            raise UsageError("srgnn: --train is the split's folder, which holds the test set")
        _refuse_recipe_flags(args, "an srgnn split is used as published")
        description["test_protocol"] = protocol = _test_protocol(args)
        return load_dataset("srgnn", args.train, test_protocol=protocol), description
    _test_protocol(args)  # refuses the flag
    description["reader_options"] = options = _reader_options(args)
    _distinct_paths([*args.train, *(args.test or [])])  # twice, or as train and test
    if args.test:
        _refuse_recipe_flags(
            args,
            "files given with --test are used as they are; to filter them, `gru-jax preprocess` "
            "the raw log and train with --data, or leave out --test",
        )
        return dataset_from_files(args.format, args.train, args.test, **options), description
    recipe = _config(args)
    description["recipe"] = dataclasses.asdict(recipe)
    return load_dataset(args.format, args.train, config=recipe, **options), description


def _absolute(path: str) -> str:
    return str(pathlib.Path(path).absolute())


def _refuse_with_data(args: argparse.Namespace) -> None:
    """--data is a saved dataset: its format, columns and protocol were fixed when written."""
    if args.format is not None:
        raise UsageError("--format applies to --train/--test files, not to --data")
    if args.test_protocol is not None:
        raise UsageError("--test-protocol applies to srgnn splits, not to --data")
    _refuse_column_flags(args, None, "--data")


def _check_data_folder(folder: str) -> None:
    if not pathlib.Path(folder).is_dir():
        raise UsageError(
            f"--data {folder}: no such folder; write a dataset there with `gru-jax preprocess`"
        )


def _refuse_recipe_flags(args: argparse.Namespace, why: str) -> None:
    """The recipe's flags only apply where the recipe runs: refuse them instead of ignoring."""
    given = [
        "--" + name.replace("_", "-") for name in _recipe_flags() if getattr(args, name) is not None
    ]
    if given:
        raise UsageError(f"{', '.join(given)}: the preprocessing recipe does not run here ({why})")


def _new_run_folder(name: str) -> pathlib.Path:
    """runs/NAME-TIME, created here so that two runs started in the same second never share it."""
    import jax

    if jax.process_count() > 1:  # each process would read its own clock
        raise UsageError("several processes need --out: one folder that every process sees")
    stem = pathlib.Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        out = stem if n == 1 else stem.with_name(f"{stem.name}-{n}")
        try:
            out.mkdir()
            return out
        except FileExistsError:
            continue
    raise UsageError(f"{stem}: no free run folder name; give --out")


def _run_train(args: argparse.Namespace) -> int:
    _split_overrides(args)
    from gru_jax.train import parallel

    have_data = bool(args.train or args.data)
    try:
        where = parallel.processes_from(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    refusal, num_processes = None, where.num_processes or 1
    try:  # the config's errors come before the data is read
        config = _resolve_config(args, have_data=have_data)
        chosen = _mode_chosen(args)
        config = _choose_parallel(config, chosen, args.cpu_devices, num_processes)
        if args.cpu_devices:  # the split over the devices asked for, before JAX makes them
            _check_batch_split(config, args.cpu_devices * num_processes)
    except ConfigError as e:
        if where.coordinator is None:
            raise
        # One of several processes stops only once it has joined the others: they then stop
        # at their first exchange (seconds), not after jax.distributed's 5-minute wait for it.
        refusal = e
    try:  # before anything touches a device
        parallel.initialize(cpu_devices=args.cpu_devices, **dataclasses.asdict(where))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if refusal is not None:
        raise refusal
    import jax

    if where.coordinator == "auto":  # the process count is known only now
        config = _choose_parallel(config, chosen, args.cpu_devices, jax.process_count())
    if jax.process_count() > 1:  # different device counts, before they show as a bad split
        from gru_jax.train.processes import check_uniform_devices

        check_uniform_devices()
    _check_batch_split(config, jax.device_count())
    dataset, description = _load_training_data(args)
    name = args.preset or (pathlib.Path(args.config).stem if args.config else None)
    name = name or ("synthetic" if not have_data else "default")
    out = pathlib.Path(args.out) if args.out else _new_run_folder(name)
    summary = dataset.summary()
    print(
        f"data: {summary['n_items']} items; train {summary['n_train_events']} events in "
        f"{summary['n_train_sessions']} sessions; {_describe_test(dataset)}"
    )

    from gru_jax.train.loop import train

    result = train(
        config,
        dataset,
        out,
        progress=not args.no_progress,
        data_description={**description, "preset": args.preset, "config_file": args.config},
    )
    import jax

    if jax.process_index() == 0:
        print(format_results(result.results, config.cutoffs))
        _warn_if_mostly_unseen(result.results)
        print(f"results: {out / 'results.json'}")
    return 0


def _warn_if_mostly_unseen(results: dict) -> None:
    """Metrics over a small remainder of the test set mislead; say so where they are read."""
    kept, dropped = results.get("n_test_events", 0), results.get("n_unseen_test_events", 0)
    if dropped > kept:
        print(
            f"warning: {dropped} test events have items unseen in training and were dropped, "
            f"more than the {kept} prediction events left; is this the test set of this run's "
            "data?",
            file=sys.stderr,
        )


def format_results(results: dict, cutoffs: Sequence[int]) -> str:
    """The metrics as a small table, plus counts and timings."""
    lines = []
    if "n_test_events" in results:
        header = "".join(f"{'@' + str(k):>9}" for k in cutoffs)
        lines.append(f"{'metric':<8}{header}")
        for metric in ("recall", "mrr", "ndcg"):
            row = "".join(f"{results[f'{metric}@{k}']:>9.4f}" for k in cutoffs)
            lines.append(f"{metric:<8}{row}")
        lines.append(
            f"test: {results['n_test_events']} prediction events "
            f"({results.get('n_unseen_test_events', 0)} unseen-item events dropped)"
        )
    if "train_seconds" in results:
        lines.append(
            f"train: {results['train_seconds']:.1f} s, "
            f"{results['train_events_per_second']:,.0f} train events/s"
        )
    if "eval_seconds" in results:
        lines.append(f"eval: {results['eval_seconds']:.1f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def _add_evaluate_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="re-evaluate a saved run on a test set",
        description=(
            "Full-ranking evaluation of the latest checkpoint of a run directory: on the run's "
            "own test set, read again as its config.json records, unless --data or "
            "--format/--test give another."
        ),
    )
    p.add_argument(
        "--run", required=True, type=nonempty_path, metavar="DIR", help="a run directory of `train`"
    )
    _add_data_arguments(p, training=False)
    p.add_argument(
        "--test-protocol",
        choices=TEST_PROTOCOLS,
        help="srgnn: evaluate the published pairs (default), or whole sessions",
    )
    p.add_argument("--tie-mode", choices=("conservative", "standard", "median"), default=None)
    p.add_argument(
        "--out", type=nonempty_path, metavar="FILE", help="also write the metrics as JSON"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_column_arguments(p)
    p.set_defaults(func=_run_evaluate)


def _load_test_log(args: argparse.Namespace, item_ids):
    """The test log of --data or --format/--test or, with none of these, the run's own test
    set read again as its config.json records; indexed by the run's ``item_ids``."""
    from gru_jax.data import Dataset, dataset_from_files, load_dataset
    from gru_jax.data.dataset import reindex_log

    if args.data:
        _check_data_folder(args.data)
        _refuse_with_data(args)
        ds = Dataset.load(args.data)
        if ds.test is None:
            raise UsageError(f"{args.data} has no test split")
    elif not args.test and not args.format:
        ds = _run_test_set(args)
    elif not args.test or not args.format:
        raise UsageError("evaluate needs --format F and --test PATH together (or --data DIR)")
    elif args.format == "srgnn":
        ds = load_dataset("srgnn", args.test, test_protocol=_test_protocol(args))
    else:
        _test_protocol(args)  # refuses the flag
        ds = dataset_from_files(args.format, args.test, **_reader_options(args))
        ds.test = ds.train  # the file is the test set; its own index is mapped below
    return reindex_log(ds.test, ds.item_ids, item_ids)


def _run_test_set(args: argparse.Namespace):
    """The dataset whose test split the run was trained beside, made again from what its
    config.json records. Where the training sessions are made again too, they must match the
    run's fingerprint of them, so changed data (or an older recipe) is refused, not evaluated.
    Runs that recorded too little (older ones, or trained through the Python API) name the
    flags to give instead."""
    from gru_jax.data import Dataset, dataset_from_files, default_dataset, load_dataset
    from gru_jax.train.loop import data_fingerprint

    data, fingerprint = _recorded_data(args.run)
    fmt = data.get("format")
    if fmt != "srgnn" and args.test_protocol is not None:
        raise UsageError(f"--test-protocol applies to srgnn splits, not {fmt or 'this run'}")
    _refuse_column_flags(args, None, "the run's own test set")

    unrecorded = f"{args.run} does not record how its test set was read; {GIVE_DATA_FLAGS}"

    def read(key: str) -> list[str]:
        """The recorded paths under ``key``, which must still be there."""
        paths = _as_list(data.get(key))
        if not paths:
            raise UsageError(unrecorded)
        for path in paths:
            if not pathlib.Path(path).exists():
                raise UsageError(
                    f"the run was trained on {path}, which is not there; {GIVE_DATA_FLAGS}"
                )
        return paths

    options, recipe = data.get("reader_options"), data.get("recipe")
    if fmt == "synthetic":  # nothing was saved to read back: made again from its seed
        source = f"the generated default (seed {data.get('seed', 0)})"
        ds = default_dataset(seed=int(data.get("seed", 0)))
    elif "data" in data:
        source = ", ".join(read("data"))
        ds = Dataset.load(data["data"])
    elif fmt == "srgnn":
        protocol = args.test_protocol or data.get("test_protocol")
        if protocol is None:
            raise UsageError(
                f"{args.run} does not record its srgnn test protocol; give --test-protocol "
                "pairs or sessions"
            )
        source = ", ".join(read("train"))
        ds = load_dataset("srgnn", data["train"], test_protocol=protocol)
    elif fmt is not None and options is not None and data.get("test"):
        # A given test file is read alone: the training sessions are not made again.
        source, fingerprint = ", ".join(read("test")), None
        ds = _as_test_set(dataset_from_files(fmt, data["test"], **options))
    elif fmt is not None and options is not None and recipe is not None:
        source = ", ".join(read("train"))
        ds = load_dataset(fmt, data["train"], config=recipe, **options)
    else:
        raise UsageError(unrecorded)
    if ds.test is None:
        raise UsageError(f"the run's data ({source}) has no test split; {GIVE_DATA_FLAGS}")
    if fingerprint is not None and data_fingerprint(ds.train) != fingerprint:
        raise UsageError(
            f"the training sessions made again from {source} differ from those {args.run} "
            f"was trained on (the data or the recipe changed since); {GIVE_DATA_FLAGS}"
        )
    return ds


def _as_test_set(ds):
    ds.test = ds.train  # the file is the test set; its own index is mapped by the caller
    return ds


def _recorded_data(run: str) -> tuple[dict, str | None]:
    """A run's recorded data description and training-log fingerprint (config.json), checked
    to be what `train` writes (a hand-edited file, or one of a later version, fails here with
    the key it cannot use, not deep in a reader). Its recipe comes back as a PreprocessConfig."""
    from gru_jax.data import DataError, PreprocessConfig
    from gru_jax.train.loop import read_run_json

    saved = read_run_json(pathlib.Path(run))[1]
    data = saved.get("data") or {}
    where = pathlib.Path(run) / "config.json"

    def bad(key: str, why: str) -> DataError:
        return DataError(f"{where}: data.{key} {why}; {GIVE_DATA_FLAGS}")

    if not isinstance(data, dict):
        raise DataError(f"{where}: 'data' is not an object")
    fmt = data.get("format")
    if fmt is not None and fmt not in (*READ_FORMATS, "synthetic"):
        raise bad("format", f"is {fmt!r}, not one of {', '.join(READ_FORMATS)} or synthetic")
    for key in ("data", "train", "test"):
        value = data.get(key)
        paths = isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        if not (value is None or isinstance(value, str) or paths):
            raise bad(key, f"is {value!r}, not a path or a list of paths")
    if fmt == "synthetic" and not isinstance(data.get("seed", 0), int):
        raise bad("seed", f"is {data['seed']!r}, not an integer")
    protocol = data.get("test_protocol")
    if protocol is not None and protocol not in TEST_PROTOCOLS:
        raise bad("test_protocol", f"is {protocol!r}, not one of {', '.join(TEST_PROTOCOLS)}")
    options = data.get("reader_options")
    if options is not None:
        known = {f.removesuffix("_col") for f, formats in COLUMN_FLAGS.items() if fmt in formats}
        if not isinstance(options, dict) or not set(options) <= known:
            raise bad("reader_options", f"{options!r} are not options of the {fmt} reader")
    recipe = data.get("recipe")
    if recipe is not None:
        try:
            data = {**data, "recipe": PreprocessConfig(**recipe)}
        except (TypeError, ValueError) as e:
            raise bad("recipe", f"is not a recipe of this version ({e})") from None
    return data, saved.get("train_fingerprint")


def _recorded_inputs(run: str) -> list[str]:
    """The data files and folders a run's config.json records (none if it cannot be read)."""
    try:
        data = _recorded_data(run)[0]
    except (OSError, ValueError):  # reported by load_run, with its own message
        return []
    return [p for key in ("data", "train", "test") for p in _as_list(data.get(key))]


def _as_list(value) -> list:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _check_metrics_file(out: pathlib.Path, inputs: Sequence[str], overwrite: bool) -> None:
    """Before evaluating: --out must be a new file (or --overwrite), never a file of a run or
    of a dataset, nor one of the inputs being read."""
    from gru_jax.train.loop import RUN_FILES, run_directory_of

    folder = out.absolute().parent.resolve()
    if not folder.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name, e.g. {out / 'eval.json'}")
    run = run_directory_of(folder)
    if run is not None and (folder != run or out.name in RUN_FILES):
        raise UsageError(f"--out {out} is inside the run {run}; give a file outside its files")
    if (folder / "dataset.json").is_file() and out.name in DATASET_FILES:
        raise UsageError(f"--out {out} is a file of the dataset in {folder}; give another name")
    target = out.resolve()
    for given in map(pathlib.Path, inputs):
        if target == given.resolve() or (given.is_dir() and target.is_relative_to(given.resolve())):
            raise UsageError(f"--out {out} is an input of this evaluation, or inside one")
    if out.exists() and not overwrite:
        raise UsageError(f"--out {out} exists; give another file name, or --overwrite")


def _run_evaluate(args: argparse.Namespace) -> int:
    from gru_jax.train.evaluate import evaluate
    from gru_jax.train.loop import load_run

    if args.out:
        inputs = [*(args.test or []), *([args.data] if args.data else [])]
        if not (args.test or args.format or args.data):  # the run's own data is read
            inputs = _recorded_inputs(args.run)
        _check_metrics_file(pathlib.Path(args.out), inputs, args.overwrite)
    if args.format == "sequences":
        raise UsageError(
            "sequences are split leave-one-out: `gru-jax preprocess --format sequences` the file, "
            "then evaluate with --data"
        )
    config, spec, params, item_ids = load_run(args.run)
    log = _load_test_log(args, item_ids)
    t0 = time.perf_counter()
    results = evaluate(
        spec,
        params,
        log,
        batch_size=config.eval_batch_size,
        cutoffs=config.cutoffs,
        tie_mode=args.tie_mode or config.tie_mode,
        chunk_size=config.eval_chunk_size,
    )
    results["eval_seconds"] = time.perf_counter() - t0
    print(format_results(results, config.cutoffs))
    _warn_if_mostly_unseen(results)
    if args.out:
        from gru_jax.data.dataset import write_json_atomic

        write_json_atomic(pathlib.Path(args.out), {**results, "run": str(args.run)})
    return 0


# ---------------------------------------------------------------------------------------------
# recommend
# ---------------------------------------------------------------------------------------------


def _add_recommend_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "recommend",
        help="top-k next items for a session prefix",
        description="Prints the k most likely next items, in raw item ids, after a session.",
    )
    p.add_argument(
        "--run", required=True, type=nonempty_path, metavar="DIR", help="a run directory of `train`"
    )
    p.add_argument(
        "--session", required=True, help="the session so far: raw item ids, comma-separated"
    )
    p.add_argument("-k", type=int, default=20, help="how many items (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--skip-unknown",
        action="store_true",
        help="leave out items the run never saw (as evaluation does) instead of failing",
    )
    p.set_defaults(func=_run_recommend)


def _run_recommend(args: argparse.Namespace) -> int:
    import numpy as np

    from gru_jax.data import DataError
    from gru_jax.data.dataset import map_item_ids
    from gru_jax.train.evaluate import top_k
    from gru_jax.train.loop import load_run

    tokens = [t.strip() for t in args.session.split(",")]
    if not any(tokens):
        raise UsageError("--session is empty; give raw item ids like 12,45,7")
    if not all(tokens):
        raise UsageError(f"--session {args.session!r} has an empty item id; give ids like 12,45,7")
    if args.k < 1:
        raise UsageError(f"-k must be >= 1, got {args.k}")
    _, spec, params, item_ids = load_run(args.run)
    raw = np.asarray(tokens)
    if item_ids.dtype.kind in "iu":
        bad = [t for t in tokens if not t.lstrip("-").isdigit()]
        if bad:
            raise DataError(
                f"item id(s) {bad} are not integers, and this run's catalogue holds integer ids"
            )
        raw = raw.astype(np.int64)
    index = map_item_ids(raw, item_ids)
    unknown = [t for t, i in zip(tokens, index) if i < 0]
    if unknown and not args.skip_unknown:
        raise DataError(
            f"item(s) {unknown} are not in the run's catalogue of {len(item_ids)} items "
            "(--skip-unknown leaves them out)"
        )
    if unknown:
        print(f"left out unknown item(s) {unknown}", file=sys.stderr)
        index = index[index >= 0]
        if not len(index):
            raise DataError("no item of --session is in the run's catalogue")
    k = min(args.k, len(item_ids))
    scores, top = top_k(spec, params, np.asarray(index, np.int32), k)
    top, scores = np.asarray(top), np.asarray(scores)
    rows = [
        {"rank": r + 1, "item": item_ids[i].item(), "score": float(s)}
        for r, (i, s) in enumerate(zip(top, scores))
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{'rank':>4}  {'item':>12}  score")
        for row in rows:
            print(f"{row['rank']:>4}  {row['item']!s:>12}  {row['score']:.4f}")
    return 0


# ---------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------


def _add_presets_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "presets",
        help="list the published best hyperparameters (and, with --keys, every config key)",
    )
    p.add_argument("--keys", action="store_true", help="list every config key instead")
    p.set_defaults(func=_run_presets)


PRESET_COLUMNS = (
    ("loss", "loss"),
    ("layers", "layers"),
    ("batch_size", "batch"),
    ("dropout_p_embed", "drop_emb"),
    ("dropout_p_hidden", "drop_hid"),
    ("learning_rate", "lr"),
    ("momentum", "mom"),
    ("sample_alpha", "alpha"),
    ("bpreg", "bpreg"),
    ("elu_param", "elu"),
    ("logq", "logq"),
)


def _run_presets(args: argparse.Namespace) -> int:
    from gru_jax.config import PRESETS, Config, preset

    if args.keys:
        for key, default, meaning in Config.describe():
            shown = "/".join(map(str, default)) if isinstance(default, tuple) else default
            print(f"{key:<22} {shown!s:<16} {meaning}")
        return 0
    header = f"{'preset':<18}" + "".join(f"{title:>14}" for _, title in PRESET_COLUMNS)
    print(header)
    for name in PRESETS:
        c = preset(name)
        cells = []
        for key, _ in PRESET_COLUMNS:
            value = getattr(c, key)
            cells.append("/".join(map(str, value)) if isinstance(value, tuple) else str(value))
        print(f"{name:<18}" + "".join(f"{v:>14}" for v in cells))
    print("\nsources:")
    for name, values in PRESETS.items():
        print(f"  {name}: {values['source']}")
    return 0


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gru-jax", description="GRU4Rec-style session-based recommendation in JAX."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(subparsers)
    _add_evaluate_parser(subparsers)
    _add_recommend_parser(subparsers)
    _add_presets_parser(subparsers)
    _add_preprocess_parser(subparsers)
    parser.subcommands = subparsers.choices  # name -> subparser, for its own usage errors
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        del value


def _log_to_stderr() -> None:
    """gru_jax's INFO lines (devices, parameters, epochs, resume) to stderr, once.

    Not `logging.basicConfig`: JAX's absl logging may already own the root logger.
    """
    logger = logging.getLogger("gru_jax")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """`parse_args`, also taking train's key=value overrides between flags (argparse takes a
    positional list only in one block, and `parse_intermixed_args` does not do subparsers)."""
    args, extra = parser.parse_known_args(argv)
    overrides = [t for t in extra if "=" in t and not t.startswith("-")]
    if args.command == "train" and overrides:
        args.overrides = list(args.overrides) + overrides
        extra = [t for t in extra if t not in overrides]
    if extra:
        parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gru-jax``; returns the exit status."""
    from gru_jax.data import DataError
    from gru_jax.train.checkpoint import CheckpointError, silence_unfinished_reads
    from gru_jax.train.loop import TrainingError

    args = _parse(build_parser(), argv)
    _log_to_stderr()
    try:
        return int(args.func(args) or 0)
    except (DataError, UsageError, ConfigError, CheckpointError, OSError) as e:  # OSError: files
        print(f"gru-jax {args.command}: error: {e}", file=sys.stderr)
        if isinstance(e, CheckpointError):
            silence_unfinished_reads()  # the process exits next
        return EXIT_DATA_ERROR
    except TrainingError as e:
        print(f"gru-jax {args.command}: training stopped: {e}", file=sys.stderr)
        return EXIT_TRAINING_ERROR
    except KeyboardInterrupt:
        print(
            f"\ngru-jax {args.command}: interrupted; for a training run, the same command "
            "resumes from its last checkpoint",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def leave(status: int) -> None:
    """Exits with ``status``; an interrupted command without the interpreter's shutdown.

    After Ctrl-C the run has already closed its checkpoints and logs (the loop's ``finally``),
    but XLA may still be compiling on a background thread, and the interpreter's shutdown
    around it can crash (a segmentation fault instead of status 130).
    """
    if status == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def console() -> None:
    """The ``gru-jax`` console script."""
    leave(main())


if __name__ == "__main__":
    console()
