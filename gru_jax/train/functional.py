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
    abstract_state: Any  # ShapeDtypeStructs of the parameters (no arrays: nothing is embedded)
    input_table: str  # "item_matrix" (shared embedding) or "input_table"
    n_items: int

    @classmethod
    def split(cls, model: GRU4Rec) -> tuple[ModelSpec, dict]:
        """(spec, params) with params the pure dict of every `nnx.Param` (tables included).

        Refuses a model with any other state (a user cell's `nnx.Dropout` RNG, `nnx.BatchNorm`
        statistics): `build` makes the model from parameters alone inside every traced step,
        so such state could never change (the same dropout mask at every step)."""
        rest = nnx.state(model, nnx.Not(nnx.Param))
        if jax.tree.leaves(rest):
            paths = [
                "/".join(map(str, path)) + f" ({type(var).__name__})"
                for path, var in nnx.to_flat_state(rest)
            ]
            raise ValueError(
                f"the model holds state other than parameters: {', '.join(paths[:4])}"
                + (", ..." if len(paths) > 4 else "")
                + ". The trainer rebuilds the model from its parameters at every step, so this "
                "state would never change; a cell's dropout comes from the config keys "
                "dropout_p_embed and dropout_p_hidden, and a cell's own arrays must be nnx.Param"
            )
        graphdef, state = nnx.split(model)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        params = nnx.to_pure_dict(state)
        spec = cls(graphdef, abstract, model.input_table_name, model.n_items)
        return spec, params

    def build(self, params: dict) -> GRU4Rec:
        state = jax.tree.map(lambda x: x, self.abstract_state)
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(self.graphdef, state)

    def table_names(self, params: dict) -> tuple[str, ...]:
        return tuple(name for name in TABLES if name in params)


def split_tables(params: dict) -> tuple[dict, dict]:
    """(tables, dense): the item tables and every other parameter."""
    tables = {k: v for k, v in params.items() if k in TABLES}
    dense = {k: v for k, v in params.items() if k not in TABLES}
    return tables, dense


def is_item_table(variable: Any) -> bool:
    return isinstance(variable, ItemTable)
