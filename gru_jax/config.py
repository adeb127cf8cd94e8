"""The run configuration: GRU4Rec's own parameter names plus gru_jax's, and the published presets.

Keys and defaults of the first block are those of the official PyTorch GRU4Rec
(`hidasib/GRU4Rec_PyTorch_Official:gru4rec_pytorch.py`, class `GRU4Rec`), so a config written
for it reads the same here. `Config.with_overrides` parses ``key=value`` strings as the CLI passes
them; `PRESETS` holds the published best hyperparameters.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import pathlib
import tomllib
from typing import Any

import numpy as np

from gru_jax.nn.functional import VARIANTS


def _field(default: Any, help: str, **kw: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a training run; ``gru-jax presets --keys`` prints this table."""

    # --- GRU4Rec's parameters (same names and defaults as the official PyTorch port) ---------
    layers: tuple[int, ...] = _field((100,), "hidden sizes of the stacked GRU layers")
    loss: str = _field("cross-entropy", "cross-entropy, bpr-max or top1-max (or a user loss)")
    batch_size: int = _field(64, "session-parallel rows per step (also the in-batch negatives)")
    dropout_p_embed: float = _field(
        0.0, "drop rate on the input embedding rows (one-hot mode: on the first layer's output)"
    )
    dropout_p_hidden: float = _field(0.0, "drop rate on each GRU layer's output (carried too)")
    learning_rate: float = _field(0.05, "learning rate")
    momentum: float = _field(0.0, "momentum of Adagrad (velocity v <- mu*v - lr*g/sqrt(A+eps))")
    sample_alpha: float = _field(0.5, "negatives drawn with probability ~ support^alpha")
    n_sample: int = _field(
        2048,
        "extra negatives shared by the whole step (0: in-batch only, and an epoch ends once "
        "fewer than 2 sessions play, as the original)",
    )
    embedding: int = _field(0, "size of a separate input embedding (0: none)")
    constrained_embedding: bool = _field(True, "share the output item matrix as input embedding")
    n_epochs: int = _field(10, "passes over the training sessions")
    bpreg: float = _field(1.0, "BPR-max score regularisation")
    elu_param: float = _field(0.5, "ELU final activation of BPR-max (0: linear)")
    logq: float = _field(0.0, "logQ correction strength of cross-entropy (1.0 is usual)")

    # --- gru_jax's own -----------------------------------------------------------------------
    variant: str = _field("reset_after", "GRU form: reset_after (PyTorch port) or reset_before")
    cell: str = _field("fused", "recurrent cell, by name in gru_jax.models.CELLS")
    optimizer: str = _field("adagrad_momentum", "optimizer, by name in gru_jax.optim.OPTIMIZERS")
    steps_per_dispatch: int = _field(32, "mini-batches per jitted call (one lax.scan)")
    bptt: bool = _field(
        False, "backpropagate through a dispatch's steps, one update each (False: GRU4Rec's)"
    )
    seed: int = _field(42, "seed of initialisation, dropout and negative sampling")
    dtype: str = _field("float32", "matmul operand dtype: float32 or bfloat16")
    session_order: str = _field("time", "session order per epoch: time (GRU4Rec) or shuffle")
    sample_store: int = _field(10_000_000, "pre-drawn negative ids, refreshed when used up")
    eval_batch_size: int = _field(512, "session-parallel rows during evaluation")
    eval_chunk_size: int = _field(65536, "items scored at once during full ranking")
    cutoffs: tuple[int, ...] = _field((1, 5, 10, 20), "K of Recall@K, MRR@K, NDCG@K")
    tie_mode: str = _field("conservative", "rank of tied scores: conservative, standard, median")
    checkpoint_every: int = _field(0, "save a checkpoint every N dispatches (0: epoch ends only)")
    log_every: int = _field(50, "write a metrics line every N dispatches")
    tensorboard: bool = _field(False, "also write TensorBoard event files")
    parallel: str = _field(
        "none", "data parallelism: none, pmap, sharding (jit + NamedSharding) or auto"
    )

    def __post_init__(self) -> None:
        # Every way of making a Config (constructor, replace, file, overrides) passes here, so
        # Config(layers=[8]) equals the (8,) its config.json reads back, and 2.5 rows are refused.
        for key in ("layers", *(f.name for f in dataclasses.fields(self) if f.name != "layers")):
            object.__setattr__(self, key, _coerce(self, key, getattr(self, key)))
        checks = {
            "batch_size": self.batch_size >= 1,
            "n_sample": self.n_sample >= 0,
            "n_epochs": self.n_epochs >= 1,
            "seed": 0 <= self.seed < 2**32,
            "steps_per_dispatch": self.steps_per_dispatch >= 1,
            "learning_rate": self.learning_rate > 0,
            "momentum": 0 <= self.momentum < 1,
            "sample_alpha": 0 <= self.sample_alpha <= 1,
            "dropout_p_embed": 0 <= self.dropout_p_embed < 1,
            "dropout_p_hidden": 0 <= self.dropout_p_hidden < 1,
            "layers": len(self.layers) > 0 and min(self.layers) > 0,
            "embedding": self.embedding >= 0,
            "eval_batch_size": self.eval_batch_size >= 1,
            "dtype": self.dtype in ("float32", "bfloat16"),
            "session_order": self.session_order in ("time", "shuffle"),
            "tie_mode": self.tie_mode in ("conservative", "standard", "median"),
            "parallel": self.parallel in ("none", "pmap", "sharding", "auto"),
            "variant": self.variant in VARIANTS,
            "cutoffs": len(self.cutoffs) > 0 and min(self.cutoffs) >= 1,
            "eval_chunk_size": self.eval_chunk_size >= 1,
            "sample_store": self.sample_store >= 1,
            "checkpoint_every": self.checkpoint_every >= 0,
            "log_every": self.log_every >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                "invalid config value(s): "
                + ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            )
        if self.n_sample == 0 and self.batch_size < 2:
            # The other rows are then the only negatives: one row would train on a zero loss
            # (GRU4Rec's fit would end every epoch before its first step).
            raise ValueError(
                "n_sample=0 needs batch_size >= 2: without sampled negatives the other rows of "
                f"the mini-batch are the only negatives (batch_size={self.batch_size})"
            )

    # ------------------------------------------------------------------------------ building

    def replace(self, **changes: Any) -> Config:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; see `gru-jax presets --keys`")
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: list[str]) -> Config:
        """Applies ``key=value`` strings (CLI style: layers=224 or layers=100/100, loss=bpr-max)."""
        changes = {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"override {item!r} is not of the form key=value")
            changes[key.strip()] = value.strip()
        return self.replace(**changes)

    @classmethod
    def from_file(cls, path: str | pathlib.Path) -> Config:
        """Reads a JSON or TOML file holding a flat mapping of config keys.

        A ``preset = "NAME"`` entry starts from that preset; the other keys override it.
        """
        path = pathlib.Path(path)
        mapping = read_config_file(path)
        try:
            base = preset(mapping.pop("preset")) if "preset" in mapping else cls()
            return base.replace(**mapping)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def describe() -> list[tuple[str, Any, str]]:
        """(key, default, meaning) for every key."""
        return [(f.name, f.default, f.metadata["help"]) for f in dataclasses.fields(Config)]


def read_config_file(path: str | pathlib.Path) -> dict[str, Any]:
    """The mapping of keys a JSON or TOML config file holds, as written (see `Config.from_file`)."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the config file ({e.strerror})") from None
    if path.suffix not in (".toml", ".json"):
        raise ValueError(f"{path}: config files are .toml or .json, not {path.suffix!r}")
    try:
        mapping = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: not a valid {path.suffix[1:]} config: {e}") from e
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: a config file holds a mapping of config keys")
    return mapping


def _coerce(config: Config, key: str, value: Any) -> Any:
    """Converts a string (or JSON or Python value) to the type of the field's default; reads
    ``config.layers`` for ``embedding=layersize``."""
    default = _DEFAULTS[key]
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace(",", "/").split("/") if v]
        elif isinstance(value, numbers.Integral):
            value = [value]
        try:
            return tuple(_integer(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(
                f"config key {key} takes integers like 100/100, got {value!r}"
            ) from None
    if isinstance(default, bool):
        if isinstance(value, str):
            lowered = value.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"config key {key} takes true/false, got {value!r}")
            return lowered in ("true", "1", "yes")
        if isinstance(value, (bool, np.bool_)) or (
            isinstance(value, numbers.Integral) and value in (0, 1)
        ):
            return bool(value)
        raise ValueError(f"config key {key} takes true/false, got {value!r}")
    if key == "embedding" and value == "layersize":
        return int(config.layers[0])
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"config key {key} takes a string, got {value!r}")
        return value
    if isinstance(default, float):
        number = None if isinstance(value, bool) else _number(value)
        if number is None or not math.isfinite(number):
            raise ValueError(f"config key {key} takes a finite number, got {value!r}")
        return number
    try:
        return _integer(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key {key} takes an integer, got {value!r}") from None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _integer(value: Any) -> int:
    """An int from an int, an integer-valued float or a digit string; anything else is refused
    (a file's 1.7 or true must not become 1)."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value} is not an integer")
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, numbers.Integral):  # NumPy integers too
        return int(value)
    raise TypeError(f"{value!r} is not an integer")


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}


# Published best hyperparameters. Sources: the README table of hidasib/GRU4Rec (identical in the
# PyTorch and TF ports) and its paramfiles/; the other-loss rows from
# hidasib/gru4rec_third_party_comparison (site_sphinx, docs/data_sources/exp_res_all.csv).
# All use the shared embedding and 2048 extra negatives.
_README = "hidasib/GRU4Rec README, best hyperparameters table"
_OTHER = "hidasib/gru4rec_third_party_comparison exp_res_all.csv, 'GRU4Rec Official / Best params'"
PRESETS: dict[str, dict[str, Any]] = {
    "rsc15": dict(
        source=_README,
        loss="cross-entropy",
        constrained_embedding=True,
        elu_param=0.0,
        layers=(100,),
        batch_size=32,
        dropout_p_embed=0.1,
        dropout_p_hidden=0.0,
        learning_rate=0.1,
        momentum=0.0,
        n_sample=2048,
        sample_alpha=0.75,
        bpreg=0.0,
        logq=1.0,
    ),
    "rsc15-paramfile": dict(
        source="hidasib/GRU4Rec_PyTorch_Official paramfiles/rsc15_xe_shared_100_best.py",
        loss="cross-entropy",
        constrained_embedding=True,
        layers=(100,),
        batch_size=32,
        dropout_p_embed=0.0,
        dropout_p_hidden=0.4,
        learning_rate=0.2,
        momentum=0.2,
        n_sample=2048,
        sample_alpha=0.5,
        logq=1.0,
        n_epochs=10,
    ),
    "yoochoose": dict(
        source=_README,
        loss="cross-entropy",
        constrained_embedding=True,
        elu_param=0.0,
        layers=(480,),
        batch_size=48,
        dropout_p_embed=0.0,
        dropout_p_hidden=0.2,
        learning_rate=0.07,
        momentum=0.0,
        n_sample=2048,
        sample_alpha=0.2,
        bpreg=0.0,
        logq=1.0,
    ),
    "rees46": dict(
        source=_README,
        loss="cross-entropy",
        constrained_embedding=True,
        elu_param=0.0,
        layers=(512,),
        batch_size=240,
        dropout_p_embed=0.45,
        dropout_p_hidden=0.0,
        learning_rate=0.065,
        momentum=0.0,
        n_sample=2048,
        sample_alpha=0.5,
        bpreg=0.0,
        logq=1.0,
    ),
    "coveo": dict(
        source=_README,
        loss="bpr-max",
        constrained_embedding=True,
        elu_param=1.0,
        layers=(512,),
        batch_size=144,
        dropout_p_embed=0.35,
        dropout_p_hidden=0.0,
        learning_rate=0.05,
        momentum=0.4,
        n_sample=2048,
        sample_alpha=0.2,
        bpreg=1.85,
        logq=0.0,
    ),
    "retailrocket": dict(
        source=_README,
        loss="bpr-max",
        constrained_embedding=True,
        elu_param=0.5,
        layers=(224,),
        batch_size=80,
        dropout_p_embed=0.5,
        dropout_p_hidden=0.05,
        learning_rate=0.05,
        momentum=0.4,
        n_sample=2048,
        sample_alpha=0.4,
        bpreg=1.95,
        logq=0.0,
    ),
    "diginetica": dict(
        source=_README,
        loss="bpr-max",
        constrained_embedding=True,
        elu_param=1.0,
        layers=(512,),
        batch_size=128,
        dropout_p_embed=0.5,
        dropout_p_hidden=0.3,
        learning_rate=0.05,
        momentum=0.15,
        n_sample=2048,
        sample_alpha=0.3,
        bpreg=0.9,
        logq=0.0,
    ),
    "rees46-bprmax": dict(
        source=_OTHER,
        loss="bpr-max",
        constrained_embedding=True,
        elu_param=0.5,
        layers=(512,),
        batch_size=32,
        dropout_p_embed=0.1,
        dropout_p_hidden=0.0,
        learning_rate=0.03,
        momentum=0.55,
        n_sample=2048,
        sample_alpha=0.2,
        bpreg=0.75,
        logq=0.0,
    ),
    "yoochoose-bprmax": dict(
        source=_OTHER,
        loss="bpr-max",
        constrained_embedding=True,
        elu_param=0.0,
        layers=(448,),
        batch_size=48,
        dropout_p_embed=0.25,
        dropout_p_hidden=0.0,
        learning_rate=0.075,
        momentum=0.1,
        n_sample=2048,
        sample_alpha=0.2,
        bpreg=0.5,
        logq=0.0,
    ),
    "coveo-xe": dict(
        source=_OTHER,
        loss="cross-entropy",
        constrained_embedding=True,
        layers=(512,),
        batch_size=32,
        dropout_p_embed=0.4,
        dropout_p_hidden=0.15,
        learning_rate=0.03,
        momentum=0.0,
        n_sample=2048,
        sample_alpha=0.0,
        logq=1.0,
    ),
    "retailrocket-xe": dict(
        source=_OTHER,
        loss="cross-entropy",
        constrained_embedding=True,
        layers=(192,),
        batch_size=240,
        dropout_p_embed=0.5,
        dropout_p_hidden=0.05,
        learning_rate=0.085,
        momentum=0.3,
        n_sample=2048,
        sample_alpha=0.3,
        logq=1.0,
    ),
    "diginetica-xe": dict(
        source=_OTHER,
        loss="cross-entropy",
        constrained_embedding=True,
        layers=(192,),
        batch_size=128,
        dropout_p_embed=0.45,
        dropout_p_hidden=0.15,
        learning_rate=0.1,
        momentum=0.0,
        n_sample=2048,
        sample_alpha=0.0,
        logq=1.0,
    ),
    # The main job's default on the generated data: small and quick, GRU4Rec's usual settings.
    "synthetic": dict(
        source="gru_jax: quick run on the generated default data",
        loss="cross-entropy",
        constrained_embedding=True,
        layers=(100,),
        batch_size=64,
        dropout_p_embed=0.0,
        dropout_p_hidden=0.0,
        learning_rate=0.05,
        momentum=0.0,
        n_sample=512,
        sample_alpha=0.5,
        logq=1.0,
        n_epochs=3,
    ),
}


def preset(name: str) -> Config:
    """The Config of a named preset (see `PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    values = {k: v for k, v in PRESETS[name].items() if k != "source"}
    return Config().replace(**values)
