"""The bridge between the NNX model and jitted pure functions: parameters as a plain dict.

The trainer keeps the model's parameters as a nested dict of arrays (`nnx.to_pure_dict`), so
optax, orbax and `RowSparse` gradients all see ordinary pytrees; `ModelSpec.build` turns such a
dict back into a model inside a traced function.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import nnx

from gru_jax.models import GRU4Rec, ItemTable

TABLES = ("item_matrix", "item_bias", "input_table")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a traced function needs to rebuild a `GRU4Rec` from its parameter dict."""

    graphdef: Any
    abstract_state: Any  # ShapeDtypeStructs of the full state (no arrays: nothing is embedded)
    rest: dict  # non-parameter state (e.g. RNG counters of user cells), as a pure dict
    input_table: str  # "item_matrix" (shared embedding) or "input_table"
    n_items: int

    @classmethod
    def split(cls, model: GRU4Rec) -> tuple[ModelSpec, dict]:
        """(spec, params) with params the pure dict of every `nnx.Param` (tables included)."""
        graphdef, state = nnx.split(model)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        rest = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))
        spec = cls(graphdef, abstract, rest, model.input_table_name, model.n_items)
        return spec, params

    def build(self, params: dict) -> GRU4Rec:
        state = jax.tree.map(lambda x: x, self.abstract_state)
        nnx.replace_by_pure_dict(state, _merge(params, self.rest))
        return nnx.merge(self.graphdef, state)

    def table_names(self, params: dict) -> tuple[str, ...]:
        return tuple(name for name in TABLES if name in params)


def split_tables(params: dict) -> tuple[dict, dict]:
    """(tables, dense): the item tables and every other parameter."""
    tables = {k: v for k, v in params.items() if k in TABLES}
    dense = {k: v for k, v in params.items() if k not in TABLES}
    return tables, dense


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if key in out and isinstance(value, dict) else value
    return out


def is_item_table(variable: Any) -> bool:
    return isinstance(variable, ItemTable)
