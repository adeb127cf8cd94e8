"""Session logs and preprocessed datasets: the arrays training and evaluation consume.

A `SessionLog` stores one split as flat arrays in CSR layout (sessions one after another, events in
time order inside each session); a `Dataset` holds the train/test/validation logs, the item index
(dense id -> raw id) and the preprocessing statistics, and saves itself as ``.npz`` + JSON.

Shape letters: S sessions, N events, I items.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import secrets
import zipfile
from typing import Any

import numpy as np

FORMAT_VERSION = 1
_ARRAYS_FILE = "arrays.npz"
_META_FILE = "dataset.json"
_SPLITS = ("train", "test", "valid")


class DataError(ValueError):
    """Malformed or unusable input data. The message names the file, the line where known, and
    what is wrong."""


def _where(path: os.PathLike | str | None, line: int | None = None) -> str:
    if path is None:
        return ""
    return f"{path}:{line}: " if line is not None else f"{path}: "


def data_error(path: os.PathLike | str | None, problem: str, line: int | None = None) -> DataError:
    """Builds a `DataError` whose message reads ``file[:line]: problem``."""
    return DataError(_where(path, line) + problem)


@dataclasses.dataclass
class SessionLog:
    """Sessions as flat arrays.

    Attributes:
      items: int32 (N,) dense item index of each event; -1 marks a test item unseen in training
        (kept so that it can be counted as a miss).
      offsets: int64 (S + 1,) session boundaries: session s is ``items[offsets[s]:offsets[s+1]]``.
      times: float64 (N,) event time in Unix seconds, or None when the source has no timestamps.
      predict: bool (N,) whether event n is a prediction target (its item is to be predicted from
        the events before it), or None meaning every event but the first of each session.
    """

    items: np.ndarray
    offsets: np.ndarray
    times: np.ndarray | None = None
    predict: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.items = np.ascontiguousarray(self.items, dtype=np.int32)
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        if self.times is not None:
            self.times = np.ascontiguousarray(self.times, dtype=np.float64)
        if self.predict is not None:
            self.predict = np.ascontiguousarray(self.predict, dtype=bool)
        self.validate()

    def validate(self) -> None:
        """Raises ValueError if the arrays are inconsistent."""
        n = len(self.items)
        if self.items.ndim != 1 or self.offsets.ndim != 1 or len(self.offsets) < 1:
            raise ValueError("items and offsets must be 1-D, offsets of length S + 1 >= 1")
        if self.offsets[0] != 0 or self.offsets[-1] != n or np.any(np.diff(self.offsets) < 0):
            raise ValueError(f"offsets must rise from 0 to len(items) = {n}")
        for name in ("times", "predict"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != (n,):
                raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")

    def check_items(self, n_items: int, name: str = "log", *, unseen: bool = True) -> None:
        """Raises ValueError unless every item is a dense index below ``n_items`` (or -1, an
        unseen item, when ``unseen``): an index outside the tables would be clamped by JAX's
        gathers, silently scoring another item."""
        low = -1 if unseen else 0
        bad = np.flatnonzero((self.items < low) | (self.items >= n_items))
        if bad.size:
            allowed = f"{low}..{n_items - 1}" if n_items else "none: the catalogue is empty"
            raise ValueError(
                f"{name}: item index {self.items[bad[0]]} at event {bad[0]} is outside the "
                f"catalogue of {n_items} items (allowed: {allowed}); {bad.size} such events"
            )

    @property
    def n_sessions(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        """int64 (S,) number of events per session."""
        return np.diff(self.offsets)

    def session_ids(self) -> np.ndarray:
        """int64 (N,) the session index of every event."""
        return np.repeat(np.arange(self.n_sessions, dtype=np.int64), self.lengths)

    def prediction_mask(self) -> np.ndarray:
        """bool (N,) the prediction targets: `predict` (all events when None), never a session's
        first event, which has nothing before it to predict from."""
        mask = np.ones(self.n_events, dtype=bool) if self.predict is None else self.predict.copy()
        mask[self.offsets[:-1][self.lengths > 0]] = False
        return mask

    @property
    def n_predictions(self) -> int:
        """Number of prediction points (unseen targets included)."""
        return int(self.prediction_mask().sum())

    def session(self, s: int) -> np.ndarray:
        return self.items[self.offsets[s] : self.offsets[s + 1]]

    @classmethod
    def from_sessions(
        cls, sessions: list[list[int]] | list[np.ndarray], times=None, predict=None
    ) -> SessionLog:
        """Builds a log from a list of item sequences (handy in tests)."""
        lengths = np.array([len(s) for s in sessions], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        items = np.concatenate([np.asarray(s, dtype=np.int32) for s in sessions] or [[]])
        return cls(items, offsets, times, predict)

    def _arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.items": self.items, f"{prefix}.offsets": self.offsets}
        if self.times is not None:
            out[f"{prefix}.times"] = self.times
        if self.predict is not None:
            out[f"{prefix}.predict"] = self.predict
        return out

    @classmethod
    def _from_arrays(cls, arrays: Any, prefix: str) -> SessionLog | None:
        if f"{prefix}.items" not in arrays:
            return None
        opt = {k: arrays.get(f"{prefix}.{k}") for k in ("times", "predict")}
        return cls(arrays[f"{prefix}.items"], arrays[f"{prefix}.offsets"], **opt)


def map_item_ids(raw: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """int32 dense index of each raw id in ``item_ids`` (-1 where absent).

    Integer ids match integers; otherwise both sides are compared as strings, so ids read
    back from text ("42") find the integer id 42 of a run's catalogue.
    """
    raw, item_ids = np.asarray(raw), np.asarray(item_ids)
    if not (raw.dtype.kind in "iu" and item_ids.dtype.kind in "iu"):
        raw, item_ids = raw.astype(str), item_ids.astype(str)
    order = np.argsort(item_ids, kind="stable")
    sorted_ids = item_ids[order]
    pos = np.minimum(np.searchsorted(sorted_ids, raw), max(len(sorted_ids) - 1, 0))
    found = (sorted_ids[pos] == raw) if len(sorted_ids) else np.zeros(raw.shape, bool)
    return np.where(found, order[pos], -1).astype(np.int32)


def reindex_log(log: SessionLog, from_ids: np.ndarray, to_ids: np.ndarray) -> SessionLog:
    """``log`` (indexed by ``from_ids``) re-indexed by ``to_ids``; unknown items become -1."""
    known = log.items >= 0
    items = np.full(log.n_events, -1, np.int32)
    items[known] = map_item_ids(np.asarray(from_ids)[log.items[known]], to_ids)
    return SessionLog(items, log.offsets, log.times, log.predict)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_atomic(path: os.PathLike | str, write: Any, mode: str) -> None:
    """Writes through ``write(file)`` to a temporary file beside ``path``, then renames it over
    ``path``: an error never leaves a half-written file in place of a good one."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a file to write")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}"
    # 0o666 through os.open: the kernel applies the current umask, as open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: os.PathLike | str, obj: Any) -> None:
    """Writes JSON to a temporary file beside ``path``, then renames it over ``path``."""

    def write(f):
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")

    _write_atomic(path, write, "w")


def write_text_atomic(path: os.PathLike | str, text: str) -> None:
    """Text through a temporary file (see `write_json_atomic`)."""
    _write_atomic(path, lambda f: f.write(text), "w")


def save_array_atomic(path: os.PathLike | str, array: np.ndarray) -> None:
    """`np.save` through a temporary file (see `write_json_atomic`); no pickled objects."""
    _write_atomic(path, lambda f: np.save(f, array, allow_pickle=False), "wb")


def item_ids_for_saving(item_ids: np.ndarray) -> np.ndarray:
    """Raw ids as a non-object array (so the file loads with allow_pickle=False): object
    arrays (mixed or string ids) become strings."""
    item_ids = np.asarray(item_ids)
    if item_ids.dtype == object:
        item_ids = item_ids.astype(str)
    return item_ids


@dataclasses.dataclass
class Dataset:
    """A preprocessed dataset.

    Attributes:
      train, test, valid: the splits; test/valid may be None.
      item_ids: (I,) raw item ids; the dense item index of an item is its position here.
      stats: preprocessing statistics (counts per step, sizes), JSON-serialisable.
    """

    train: SessionLog
    test: SessionLog | None
    valid: SessionLog | None
    item_ids: np.ndarray
    stats: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.train.check_items(self.n_items, "train", unseen=False)
        for name in ("test", "valid"):
            log = getattr(self, name)
            if log is not None:
                log.check_items(self.n_items, name)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_supports(self) -> np.ndarray:
        """int64 (I,) number of training events of every item."""
        items = self.train.items
        return np.bincount(items[items >= 0], minlength=self.n_items).astype(np.int64)

    def summary(self) -> dict[str, Any]:
        """Sizes of every split (the ``n_*`` keys of stats.json)."""
        out: dict[str, Any] = {"n_items": self.n_items}
        for name in _SPLITS:
            log = getattr(self, name)
            out[f"n_{name}_events"] = 0 if log is None else log.n_events
            out[f"n_{name}_sessions"] = 0 if log is None else log.n_sessions
            out[f"n_{name}_predictions"] = 0 if log is None else log.n_predictions
        return out

    def save(self, directory: os.PathLike | str) -> None:
        """Writes ``arrays.npz`` and ``dataset.json`` into ``directory`` (created if missing).

        Each file is written under a temporary name and renamed, so an error never leaves a
        half-written file in place of a good one.
        """
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"item_ids": item_ids_for_saving(self.item_ids)}
        for name in _SPLITS:
            log = getattr(self, name)
            if log is not None:
                arrays.update(log._arrays(name))

        _write_atomic(directory / _ARRAYS_FILE, lambda f: np.savez(f, **arrays), "wb")
        meta = {"format_version": FORMAT_VERSION, "stats": self.stats, **self.summary()}
        write_json_atomic(directory / _META_FILE, meta)

    @classmethod
    def load(cls, directory: os.PathLike | str) -> Dataset:
        """Reads a dataset written by `save`."""
        directory = pathlib.Path(directory)
        arrays_path, meta_path = directory / _ARRAYS_FILE, directory / _META_FILE
        for path in (arrays_path, meta_path):
            if not path.is_file():
                raise data_error(path, "missing; not a dataset saved by Dataset.save")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise data_error(meta_path, f"invalid JSON ({e})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise data_error(meta_path, f"unsupported format_version {meta.get('format_version')}")
        try:
            with np.load(arrays_path, allow_pickle=False) as arrays:
                arrays = dict(arrays)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise data_error(arrays_path, f"unreadable ({e})") from None
        logs = {name: SessionLog._from_arrays(arrays, name) for name in _SPLITS}
        if logs["train"] is None:
            raise data_error(arrays_path, "has no train split")
        return cls(
            train=logs["train"],
            test=logs["test"],
            valid=logs["valid"],
            item_ids=arrays["item_ids"],
            stats=meta.get("stats", {}),
        )
