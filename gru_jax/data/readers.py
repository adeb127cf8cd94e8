"""Readers for session logs in the common public formats, built on polars.

Every reader returns the same event table, one row per event, in file order:

  ``session``  session id (any dtype); absent when the source only has users (sessions are then
               cut by an idle gap during preprocessing),
  ``user``     user id (optional),
  ``item``     raw item id (int64 or string),
  ``time``     event time as float64 Unix seconds, null when the source has no timestamps,
  ``type``     event type (optional string),
  ``split``    "train" / "test" for published benchmark splits (srgnn only).

Malformed input raises `DataError` naming the file, the line where it can be found, and the problem;
so does a session, user or item id that stands for a missing value (empty, ``nan``, ``NA``,
``null``, ``None``, a float NaN), which would otherwise become an ordinary id.
`read_events(format, paths, **options)` dispatches by format name; `FORMATS` lists them.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import pathlib
import pickle
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from gru_jax.data.dataset import DataError, data_error

PathLike = os.PathLike | str
Paths = PathLike | Sequence[PathLike]

_TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
# How users spell a tab: '\t' arrives from a shell as backslash + t, not as a tab.
_SEPARATOR_ALIASES = {"\\t": "\t", "tab": "\t"}
# What pandas and other tools write for a missing value (any case, padded), or a blank field;
# read as an id it would silently become an item or a session.
_MISSING_ID = r"(?i)^\s*(?:nan|na|n/a|#n/a|<na>|null|none)?\s*$"
_PL_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.ComputeError)
_ID_KEYS = ("session", "user", "item")  # event-table columns checked by `_check_ids`


def _as_paths(paths: Paths) -> list[pathlib.Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = [pathlib.Path(p) for p in paths]
    if not out:
        raise DataError("no input paths given")
    for p in out:
        if not p.exists():
            raise data_error(p, "no such file or directory")
    return out


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")


# ---------------------------------------------------------------------------------------------
# Delimited text (GRU4Rec TSV, CSV, Diginetica, RecBole).
# ---------------------------------------------------------------------------------------------


def _field_separator(separator: str) -> str:
    """The separator as polars takes it: one byte, i.e. one ASCII character; '\\t' (as typed in
    a shell) and 'tab' mean a tab. Raises DataError before any file is read."""
    sep = _SEPARATOR_ALIASES.get(separator.lower(), separator) if isinstance(separator, str) else ""
    # A quote or a line break is a single byte too, but it cannot separate fields.
    if len(sep) != 1 or not sep.isascii() or sep in '"\r\n':
        raise DataError(
            f"separator {separator!r} must be one ASCII character other than a quote or a line "
            "break (write '\\t' or 'tab' for a tab)"
        )
    return sep


def _header(path: pathlib.Path, separator: str) -> list[str]:
    try:
        return pl.read_csv(path, separator=separator, n_rows=0).columns
    except pl.exceptions.NoDataError:
        raise data_error(path, "empty file (no header line)") from None
    except _PL_ERRORS as e:
        raise data_error(path, f"unreadable header ({_first_line(e)})") from None


def _require_columns(path: pathlib.Path, header: list[str], needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in header]
    if missing:
        raise data_error(path, f"missing column(s) {missing}; the header has {header}")


def _check_numeric(path: pathlib.Path, df: pl.DataFrame, columns: Sequence[str]) -> None:
    """Raises DataError at the first value of ``columns`` (strings) that is not a number."""
    for col in columns:
        bad = df[col].is_not_null() & df[col].cast(pl.Float64, strict=False).is_null()
        if bad.any():
            row = int(bad.arg_max())
            raise data_error(
                path, f"non-numeric value {df[col][row]!r} in column {col!r}", line=row + 2
            )


def _without_trailing_blank_lines(df: pl.DataFrame) -> pl.DataFrame:
    """Drops the all-null rows that blank lines at the end of a text file read as (an editor's
    extra newline; pandas skips them too). Blank lines elsewhere stay, and are refused with
    their line number by `_check_complete`."""
    if not df.height or any(df[c][-1] is not None for c in df.columns):
        return df  # the usual case, decided by the last row alone
    blank = df.select(pl.all_horizontal(pl.all().is_null())).to_series().to_numpy()
    kept = len(blank) - int(np.argmin(blank[::-1])) if not blank.all() else 0
    return df.head(kept)


def _check_complete(
    path: pathlib.Path, df: pl.DataFrame, columns: Sequence[str], first_line: int, *, text=True
):
    """Raises DataError at the first missing value, saying how a null arises in the format:
    in text a blank line, a truncated line or an empty field; in Parquet a null."""
    for col in columns:
        if df[col].null_count():
            row = int(df[col].is_null().arg_max())
            if not text:
                cause = "null"
            elif all(df[c][row] is None for c in df.columns):
                cause = "blank line, or every field empty"
            else:
                cause = "truncated line or empty field"
            raise data_error(
                path, f"missing value in column {col!r} ({cause})", line=row + first_line
            )


def _check_ids(
    path: pathlib.Path,
    df: pl.DataFrame,
    columns: Sequence[str],
    first_line: int = 0,
    line_column: str | None = None,
):
    """Raises DataError at the first id of ``columns`` that stands for a missing value: a string
    such as 'nan', 'NA', 'null' or 'None' (see `_MISSING_ID`), or a float NaN or infinity.
    Row r is line r + ``first_line``, or the value of ``line_column`` in row r.

    Runs after `_check_complete` (no nulls left). One vectorised pass per string or float
    column; integer columns cannot hold such values and are skipped.
    """
    for col in columns:
        s = df[col]
        if isinstance(s.dtype, (pl.Categorical, pl.Enum)):
            s = s.cast(pl.String)
        if s.dtype == pl.String:
            bad = s.str.contains(_MISSING_ID)
        elif s.dtype.is_float():
            bad = ~s.is_finite()
        else:
            continue
        if bad.any():
            row = int(bad.arg_max())
            value = s[row]
            problem = (
                f"value {value!r} in column {col!r} is not a finite number"
                if isinstance(value, float) and not np.isnan(value)
                else f"missing value {value!r} in column {col!r} (NaN, NA, null, None or blank "
                "is not an id)"
            )
            line = int(df[line_column][row]) if line_column else row + first_line
            raise data_error(path, problem, line=line)


def _check_finite(path: pathlib.Path, df: pl.DataFrame, columns: Sequence[str], first_line: int):
    """Raises DataError at the first NaN or infinite value of the numeric ``columns``."""
    for col in columns:
        if not df[col].dtype.is_float():
            continue
        bad = df[col].is_not_null() & ~df[col].is_finite()
        if bad.any():
            row = int(bad.arg_max())
            raise data_error(
                path,
                f"value {df[col][row]!r} in column {col!r} is not a finite number",
                line=row + first_line,
            )


def _read_delimited(
    path: pathlib.Path,
    separator: str,
    columns: Sequence[str],
    numeric: Sequence[str],
    optional: Sequence[str] = (),
    ids: Sequence[str] = (),
) -> pl.DataFrame:
    """Reads ``columns`` (which must be complete) and ``optional`` columns (which may have empty
    fields) of a headed delimited file in one pass; ``numeric`` ones as float64. The ``ids``
    columns must not hold missing-value markers such as 'nan' (see `_check_ids`).

    The fast path lets polars infer id types; on a parse error the file is read again as text to
    find the offending line (ids of mixed type are then kept as strings).
    """
    header = _header(path, separator)
    _require_columns(path, header, columns)
    wanted = list(dict.fromkeys([*columns, *optional]))
    try:
        df = pl.read_csv(
            path,
            separator=separator,
            columns=wanted,
            schema_overrides={c: pl.Float64 for c in numeric},
            infer_schema_length=10_000,
        )
    except pl.exceptions.NoDataError:
        raise data_error(path, "empty file") from None
    except _PL_ERRORS:
        df = _read_delimited_as_text(path, separator, wanted)
        _check_numeric(path, df, numeric)
        df = df.with_columns(pl.col(c).cast(pl.Float64) for c in numeric)
    df = _without_trailing_blank_lines(df)
    if df.height == 0:
        raise data_error(path, "no data rows after the header")
    _check_complete(path, df, columns, first_line=2)
    _check_finite(path, df, numeric, first_line=2)
    _check_ids(path, df, ids, first_line=2)
    return df


def _locate_field_count_error(path: pathlib.Path, separator: str) -> DataError | None:
    """The first line with more fields than the header (None if there is none)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = csv.reader(f, delimiter=separator)
        width = len(next(rows, []))
        for row in rows:
            if len(row) > width:  # short rows read as nulls, caught by _check_complete
                return data_error(
                    path,
                    f"has {len(row)} fields where the header has {width}",
                    line=rows.line_num,
                )
    return None


def _read_delimited_as_text(path: pathlib.Path, separator: str, columns: Sequence[str]):
    try:
        df = pl.read_csv(
            path,
            separator=separator,
            columns=list(columns),
            infer_schema=False,
        )
    except _PL_ERRORS as e:
        raise _locate_field_count_error(path, separator) or data_error(
            path, f"cannot parse ({_first_line(e)})"
        ) from None
    # Ids that are all integers become int64 again; mixed ids stay strings.
    return df.with_columns(
        pl.col(c).cast(pl.Int64)
        for c in columns
        if df[c].cast(pl.Int64, strict=False).null_count() == df[c].null_count()
    )


def _time_seconds(
    path: pathlib.Path, df: pl.DataFrame, col: str, unit: str, time_format: str | None
) -> pl.Series:
    """The ``col`` column as float64 Unix seconds (its readers have refused NaN and infinity)."""
    if unit not in _TIME_UNITS:
        raise ValueError(f"time_unit must be one of {sorted(_TIME_UNITS)}, got {unit!r}")
    s = df[col]
    if s.dtype == pl.Date:
        s = s.cast(pl.Datetime("ms"))
    if isinstance(s.dtype, pl.Datetime):
        return (s.dt.epoch("us").cast(pl.Float64) / 1e6).alias("time")
    if time_format is not None:
        parsed = s.cast(pl.String).str.to_datetime(time_format, strict=False, time_unit="us")
        bad = parsed.is_null() & s.is_not_null()
        if bad.any():
            row = int(bad.arg_max())
            raise data_error(
                path, f"time {s[row]!r} does not match format {time_format!r}", line=row + 2
            )
        return (parsed.dt.epoch("us").cast(pl.Float64) / 1e6).alias("time")
    if not s.dtype.is_numeric():
        raise data_error(path, f"column {col!r} is not numeric; pass time_format for date strings")
    return (s.cast(pl.Float64) / _TIME_UNITS[unit]).alias("time")


def read_csv(
    paths: Paths,
    *,
    item: str,
    time: str | None,
    session: str | None = None,
    user: str | None = None,
    type: str | None = None,
    separator: str = ",",
    time_unit: str = "s",
    time_format: str | None = None,
) -> pl.DataFrame:
    """Reads delimited text files with a header, mapping their columns onto the event table.

    Args:
      paths: one or more files (read in order and concatenated).
      item, time, session, user, type: names of the source columns; at least one of ``session``
        and ``user`` is required. ``time`` may be None (no timestamps).
      separator: field separator, one ASCII character (``"\\t"`` for TSV; the two characters
        ``\\t`` as typed in a shell, and ``tab``, also mean a tab).
      time_unit: unit of a numeric time column (s, ms, us, ns).
      time_format: strptime format for a time column holding date strings.
    """
    if session is None and user is None:
        raise ValueError("a session or a user column is required")
    separator = _field_separator(separator)
    mapping = {"session": session, "user": user, "item": item, "time": time, "type": type}
    mapping = {k: v for k, v in mapping.items() if v is not None}
    numeric = [time] if time is not None and time_format is None else []
    columns = list(dict.fromkeys(mapping.values()))
    ids = list(dict.fromkeys(v for k, v in mapping.items() if k in _ID_KEYS))
    frames = []
    for path in _as_paths(paths):
        df = _read_delimited(path, separator, columns, numeric, ids=ids)
        out = {k: df[v].alias(k) for k, v in mapping.items() if k not in ("time", "type")}
        if time is not None:
            out["time"] = _time_seconds(path, df, time, time_unit, time_format)
        else:
            out["time"] = pl.Series("time", [None] * df.height, dtype=pl.Float64)
        if type is not None:
            out["type"] = df[type].cast(pl.String).alias("type")
        frames.append(pl.DataFrame(out))
    return _concat(frames)


def read_gru4rec(
    paths: Paths,
    *,
    session: str = "SessionId",
    item: str = "ItemId",
    time: str = "Time",
    type: str | None = None,
    time_unit: str = "s",
) -> pl.DataFrame:
    """Reads GRU4Rec TSV files: header ``SessionId<TAB>ItemId<TAB>Time`` (extra columns allowed),
    Time in Unix seconds."""
    return read_csv(
        paths,
        session=session,
        item=item,
        time=time,
        type=type,
        separator="\t",
        time_unit=time_unit,
    )


def read_diginetica(paths: Paths) -> pl.DataFrame:
    """Reads CIKM Cup 2016 (DIGINETICA) ``train-item-views.csv``.

    ``;``-separated ``session_id;user_id;item_id;timeframe;eventdate`` (the full release writes the
    names in camelCase; both are accepted). ``timeframe`` is milliseconds since the session
    started, so the event time is the session's first ``eventdate`` (UTC midnight) plus
    ``timeframe`` (as in GRU4Rec's ``diginetica_preproc.py``; 2 sessions of the sample cross
    midnight, and adding the later date would move their events a day forward). Rows are not in
    time order within sessions; preprocessing sorts them.
    """
    frames = []
    for path in _as_paths(paths):
        header = _header(path, ";")
        names = {}
        for key, variants in {
            "session": ("session_id", "sessionId"),
            "user": ("user_id", "userId"),
            "item": ("item_id", "itemId"),
            "timeframe": ("timeframe",),
            "eventdate": ("eventdate",),
        }.items():
            found = [v for v in variants if v in header]
            if found:
                names[key] = found[0]
            elif key != "user":
                _require_columns(path, header, variants[:1])
        required = [names[k] for k in names if k != "user"]
        optional = [names["user"]] if "user" in names else []
        ids = [names["session"], names["item"]]  # a user of "NA" is no user (below)
        df = _read_delimited(path, ";", required, ["timeframe"], optional, ids=ids)
        df = df.rename({v: k for k, v in names.items()})
        date = df["eventdate"].cast(pl.String).str.to_date("%Y-%m-%d", strict=False)
        if date.null_count():
            row = int(date.is_null().arg_max())
            raise data_error(
                path, f"eventdate {df['eventdate'][row]!r} is not YYYY-MM-DD", line=row + 2
            )
        day = date.cast(pl.Datetime("ms")).dt.epoch("s").cast(pl.Float64)
        df = df.with_columns(day=day).with_columns(
            time=pl.col("day").min().over("session") + pl.col("timeframe") / 1e3
        )
        cols = [pl.col("session"), pl.col("item"), pl.col("time")]
        if "user" in names:
            user = pl.col("user").cast(pl.String)
            cols.insert(1, pl.when(user != "NA").then(user).alias("user"))
        frames.append(df.select(cols))
    return _concat(frames)


def read_recbole(
    paths: Paths,
    *,
    user: str = "user_id",
    item: str = "item_id",
    time: str | None = "timestamp",
    session: str | None = None,
    time_unit: str = "s",
) -> pl.DataFrame:
    """Reads RecBole atomic ``.inter`` files: tab-separated, header fields typed as
    ``name:token`` / ``name:float``. Field names are given without their type suffix."""
    frames = []
    for path in _as_paths(paths):
        header = _header(path, "\t")
        bare = {h.split(":", 1)[0]: h for h in header}
        want = {"user": user, "item": item, "time": time, "session": session}
        want = {k: v for k, v in want.items() if v is not None}
        _require_columns(path, list(bare), list(want.values()))
        src = {k: bare[v] for k, v in want.items()}
        numeric = [src["time"]] if "time" in src else []
        ids = [v for k, v in src.items() if k in _ID_KEYS]
        df = _read_delimited(path, "\t", list(src.values()), numeric, ids=ids)
        out = {k: df[v].alias(k) for k, v in src.items() if k != "time"}
        out["time"] = (
            _time_seconds(path, df, src["time"], time_unit, None)
            if "time" in src
            else pl.Series("time", [None] * df.height, dtype=pl.Float64)
        )
        frames.append(pl.DataFrame(out))
    return _concat(frames)


def read_parquet(
    paths: Paths,
    *,
    item: str,
    time: str | None,
    session: str | None = None,
    user: str | None = None,
    type: str | None = None,
    time_unit: str = "s",
) -> pl.DataFrame:
    """Reads Parquet files with a column mapping (see `read_csv`); datetime columns are
    converted to Unix seconds."""
    if session is None and user is None:
        raise ValueError("a session or a user column is required")
    mapping = {"session": session, "user": user, "item": item, "time": time, "type": type}
    mapping = {k: v for k, v in mapping.items() if v is not None}
    frames = []
    for path in _as_paths(paths):
        try:
            schema = pl.read_parquet_schema(path)
            _require_columns(path, list(schema), list(mapping.values()))
            df = pl.read_parquet(path, columns=list(dict.fromkeys(mapping.values())))
        except DataError:
            raise
        except (*_PL_ERRORS, OSError) as e:
            raise data_error(path, f"not a readable Parquet file ({_first_line(e)})") from None
        if time is not None and not (
            df[time].dtype.is_numeric()
            or df[time].dtype in (pl.Date,)
            or isinstance(df[time].dtype, pl.Datetime)
        ):
            raise data_error(path, f"column {time!r} has non-numeric type {df[time].dtype}")
        if df.height == 0:
            raise data_error(path, "no rows")
        # Checked under the file's column names; Parquet rows count from 1.
        _check_complete(path, df, df.columns, first_line=1, text=False)
        if time is not None:
            _check_finite(path, df, [time], first_line=1)
        ids = list(dict.fromkeys(v for k, v in mapping.items() if k in _ID_KEYS))
        _check_ids(path, df, ids, first_line=1)
        out = {k: df[v].alias(k) for k, v in mapping.items() if k not in ("time", "type")}
        out["time"] = (
            _time_seconds(path, df, time, time_unit, None)
            if time is not None
            else pl.Series("time", [None] * df.height, dtype=pl.Float64)
        )
        if type is not None:
            out["type"] = df[type].cast(pl.String).alias("type")
        frames.append(pl.DataFrame(out))
    return _concat(frames)


# ---------------------------------------------------------------------------------------------
# OTTO JSON Lines.
# ---------------------------------------------------------------------------------------------

_OTTO_SCHEMA = {
    "session": pl.Int64,
    "events": pl.List(pl.Struct({"aid": pl.Int64, "ts": pl.Int64, "type": pl.String})),
}


def _locate_json_error(path: pathlib.Path) -> DataError:
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                return data_error(path, f"invalid JSON ({e.msg}; truncated line?)", line=i)
            if not isinstance(obj, dict) or "events" not in obj or "session" not in obj:
                return data_error(path, 'expected an object with "session" and "events"', line=i)
            problem = _otto_type_problem(obj)
            if problem:
                return data_error(path, problem, line=i)
    return data_error(path, "cannot parse as OTTO JSON Lines")


def _otto_type_problem(obj: dict) -> str | None:
    """What is wrong with the types of one OTTO record, if anything."""
    if type(obj["session"]) is not int:
        return f'"session" must be an integer, got {obj["session"]!r}'
    if not isinstance(obj["events"], list):
        return f'"events" must be a list, got {type(obj["events"]).__name__}'
    for j, event in enumerate(obj["events"]):
        if not isinstance(event, dict):
            return f"events[{j}] is not an object"
        for key, kind in (("aid", int), ("ts", int), ("type", str)):
            if key in event and type(event[key]) is not kind:
                return f'events[{j}]["{key}"] must be {kind.__name__}, got {event[key]!r}'
    return None


def read_otto(paths: Paths, *, event_types: Sequence[str] | None = None) -> pl.DataFrame:
    """Reads OTTO JSON Lines: ``{"session": int, "events": [{"aid", "ts" (ms), "type"}]}``.

    Args:
      event_types: keep only these types (e.g. ``("clicks",)``); None keeps all.
    """
    frames = []
    for path in _as_paths(paths):
        if path.stat().st_size == 0:
            raise data_error(path, "empty file")
        try:
            df = (
                pl.scan_ndjson(path, schema=_OTTO_SCHEMA)
                .with_row_index("line", offset=1)
                .explode("events")
                .unnest("events")
                .collect()
            )
        except _PL_ERRORS:
            raise _locate_json_error(path) from None
        missing = df.select(pl.any_horizontal(pl.all().is_null()).alias("m"))["m"]
        if missing.any():
            row = int(missing.arg_max())
            cols = [c for c in df.columns if df[c][row] is None]
            if set(cols) >= {"aid", "ts", "type"}:  # no event at all: the list is missing/empty
                cols = ["events (or it is empty)"]
            raise data_error(path, f"missing field(s) {cols}", line=int(df["line"][row]))
        df = df.select(
            pl.col("session"),
            pl.col("aid").alias("item"),
            (pl.col("ts").cast(pl.Float64) / 1e3).alias("time"),
            pl.col("type"),
        )
        if event_types is not None:
            df = df.filter(pl.col("type").is_in(list(event_types)))
        frames.append(df)
    return _concat(frames)


# ---------------------------------------------------------------------------------------------
# Published benchmark splits (SR-GNN / GCE-GNN / COTREC pickles).
# ---------------------------------------------------------------------------------------------


class _ListsAndIntsUnpickler(pickle.Unpickler):
    """Unpickler that can build lists, tuples and ints but no class or function at all."""

    def __init__(self, file, path: pathlib.Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        raise data_error(
            self._path, f"pickle refers to {module}.{name}; only lists, tuples and ints allowed"
        )

    def persistent_load(self, pid):
        raise data_error(self._path, "pickle uses persistent ids; only lists/tuples/ints allowed")


def load_restricted_pickle(path: PathLike) -> object:
    """Loads a pickle that may only hold lists, tuples and ints (others raise DataError)."""
    path = pathlib.Path(path)
    data = path.read_bytes()
    if not data:
        raise data_error(path, "empty file")
    try:
        return _ListsAndIntsUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a data error here
        raise data_error(path, f"not a valid pickle ({type(e).__name__}: {e})") from None


def _is_int(x: object) -> bool:
    return type(x) is int


def _check_sequences(path: pathlib.Path, obj: object, what: str) -> list[list[int]]:
    if not isinstance(obj, (list, tuple)):
        raise data_error(path, f"{what} must be a list of item-id lists, got {type(obj).__name__}")
    if not obj:
        raise data_error(path, f"{what} is empty")
    # One pass over the types in C; the slow loop only runs to name the offending entry.
    if set(map(type, obj)) <= {list, tuple} and set(
        map(type, itertools.chain.from_iterable(obj))
    ) <= {int}:
        _check_id_range(path, itertools.chain.from_iterable(obj), what)
        return obj  # type: ignore[return-value]
    for i, seq in enumerate(obj):
        if not isinstance(seq, (list, tuple)) or not all(map(_is_int, seq)):
            raise data_error(path, f"{what}[{i}] is not a list of ints")
    raise AssertionError("unreachable")


def _check_id_range(path: pathlib.Path, ids, what: str) -> None:
    """Item ids must fit int64 (pickles hold Python ints of any size)."""
    ids = list(ids)
    low, high = min(ids, default=0), max(ids, default=0)
    if low < -(2**63) or high >= 2**63:
        bad = high if high >= 2**63 else low
        raise data_error(path, f"{what} holds item id {bad}, which does not fit in 64 bits")


def read_srgnn_split(
    paths: Paths,
) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Reads an SR-GNN-style split: a folder holding ``all_train_seq.txt`` (pickled list of
    item-id lists) and ``test.txt`` (pickled pair of prefix lists and target ids).

    Returns:
      (train_sessions, test_prefixes, test_targets).
    """
    found = _as_paths(paths)
    if len(found) == 1 and found[0].is_dir():
        train_path, test_path = found[0] / "all_train_seq.txt", found[0] / "test.txt"
    else:
        by_name = {p.name: p for p in found}
        train_path = by_name.get("all_train_seq.txt", found[0].parent / "all_train_seq.txt")
        test_path = by_name.get("test.txt", found[0].parent / "test.txt")
    for p in (train_path, test_path):
        if not p.is_file():
            raise data_error(p, "missing (an srgnn split needs all_train_seq.txt and test.txt)")

    train = _check_sequences(train_path, load_restricted_pickle(train_path), "all_train_seq")
    test = load_restricted_pickle(test_path)
    if not isinstance(test, (list, tuple)) or len(test) != 2:
        raise data_error(test_path, "must hold a pair (list of prefixes, list of targets)")
    prefixes = _check_sequences(test_path, test[0], "prefixes")
    empty = next((i for i, prefix in enumerate(prefixes) if not prefix), None)
    if empty is not None:
        raise data_error(test_path, f"prefixes[{empty}] is empty: nothing to predict from")
    targets = test[1]
    if not isinstance(targets, (list, tuple)) or not all(map(_is_int, targets)):
        raise data_error(test_path, "targets must be a list of ints")
    _check_id_range(test_path, targets, "targets")
    if len(prefixes) != len(targets):
        raise data_error(test_path, f"{len(prefixes)} prefixes but {len(targets)} targets")
    return list(train), list(prefixes), list(targets)


def chain_test_pairs(prefixes: list[list[int]], targets: list[int]) -> np.ndarray:
    """Groups SR-GNN test pairs into the sessions they were cut from.

    SR-GNN writes the pairs of a session of length n longest prefix first: (s[:n-1], s[n-1]),
    (s[:n-2], s[n-2]), ... A pair continues the previous pair's chain when its prefix plus its
    target equals the previous prefix.

    Returns:
      int64 (P,) chain (session) index of every pair, non-decreasing from 0.
    """
    starts = np.ones(len(prefixes), dtype=bool)
    for i in range(1, len(prefixes)):
        prev, cur = prefixes[i - 1], prefixes[i]
        if len(prev) == len(cur) + 1 and prev[-1] == targets[i] and prev[:-1] == cur:
            starts[i] = False
    return np.cumsum(starts) - 1


def read_srgnn(paths: Paths) -> pl.DataFrame:
    """Reads an SR-GNN split as an event table (no timestamps): the training sessions, then the
    test sessions rebuilt from their prefix/target pairs, marked by the ``split`` column."""
    train, prefixes, targets = read_srgnn_split(paths)
    chain = chain_test_pairs(prefixes, targets)
    first = np.flatnonzero(np.r_[True, chain[1:] != chain[:-1]]) if len(chain) else []
    test = [list(prefixes[i]) + [targets[i]] for i in first]
    frames = []
    for split, seqs, start in (("train", train, 0), ("test", test, len(train))):
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        items = np.fromiter((x for s in seqs for x in s), dtype=np.int64, count=int(lengths.sum()))
        frames.append(
            pl.DataFrame(
                {
                    "session": np.repeat(np.arange(start, start + len(seqs)), lengths),
                    "item": items,
                    "time": pl.Series([None] * len(items), dtype=pl.Float64),
                    "split": pl.Series([split] * len(items), dtype=pl.String),
                }
            )
        )
    return pl.concat(frames)


# ---------------------------------------------------------------------------------------------
# Per-user sequence text files.
# ---------------------------------------------------------------------------------------------


def read_sequences(paths: Paths) -> pl.DataFrame:
    """Reads whitespace-separated per-user sequences, no header, chronological.

    Both common layouts are one format here: each line is a user id followed by one or more
    items (``user item`` per line, as SASRec's files, or ``user i1 i2 ...``, as S3-Rec's); the
    lines of a user are concatenated in file order. There are no timestamps (``time`` is null).
    """
    frames = []
    for path in _as_paths(paths):
        if path.stat().st_size == 0:
            raise data_error(path, "empty file")
        try:
            lines = pl.read_csv(
                path,
                has_header=False,
                separator="\x1f",
                quote_char=None,
                schema={"line": pl.String},
            )
        except _PL_ERRORS as e:
            raise data_error(path, f"cannot read ({_first_line(e)})") from None
        tokens = lines.select(
            pl.col("line").fill_null("").str.extract_all(r"\S+").alias("tok")
        ).with_row_index("line", offset=1)
        tokens = tokens.filter(pl.col("tok").list.len() > 0)
        short = tokens["tok"].list.len() < 2
        if short.any():
            row = int(short.arg_max())
            raise data_error(
                path,
                "expected a user id followed by at least one item (truncated line?)",
                line=int(tokens["line"][row]),
            )
        df = tokens.select(
            pl.col("line"),
            pl.col("tok").list.first().alias("user"),
            pl.col("tok").list.slice(1).alias("item"),
        ).explode("item")
        _check_ids(path, df, ("user", "item"), line_column="line")
        df = df.with_columns(
            pl.col(c).cast(pl.Int64)
            for c in ("user", "item")
            if df[c].cast(pl.Int64, strict=False).null_count() == 0
        )
        frames.append(df.select("user", "item", pl.lit(None, dtype=pl.Float64).alias("time")))
    return _concat(frames)


# ---------------------------------------------------------------------------------------------
# Dispatch.
# ---------------------------------------------------------------------------------------------

READERS: dict[str, Callable[..., pl.DataFrame]] = {
    "gru4rec": read_gru4rec,
    "csv": read_csv,
    "parquet": read_parquet,
    "diginetica": read_diginetica,
    "otto": read_otto,
    "srgnn": read_srgnn,
    "sequences": read_sequences,
    "recbole": read_recbole,
}
FORMATS = tuple(READERS)


def read_events(format: str, paths: Paths, **options) -> pl.DataFrame:
    """Reads ``paths`` in ``format`` (one of `FORMATS`) into the event table."""
    if format not in READERS:
        raise ValueError(f"unknown format {format!r}; known formats: {', '.join(FORMATS)}")
    return READERS[format](paths, **options)
