"""The registry of recurrent cells GRU4Rec can be built from.

A cell factory is ``factory(in_features, hidden_features, *, variant, dtype, rngs) -> module``
where the module follows Flax's cell contract: ``cell(carry, x) -> (new_carry, y)`` and
``cell.initialize_carry((batch, in_features), rngs) -> carry`` (Flax's signature; GRU4Rec passes
an `nnx.Rngs`, which a cell with a zero carry may ignore). User code adds its own::

    from gru_jax.models import CELLS

    @CELLS.register("my-cell")
    def my_cell(in_features, hidden_features, *, variant, dtype, rngs):
        return MyCell(in_features, hidden_features, rngs=rngs)
"""

from __future__ import annotations

from flax import nnx

from gru_jax.nn import FusedGRUCell
from gru_jax.registry import Registry

CELLS = Registry("cell")


@CELLS.register("fused")
def fused(in_features, hidden_features, *, variant, dtype, rngs):
    """gru_jax's `FusedGRUCell` with GRU4Rec's Glorot-uniform per-gate initialisation."""
    return FusedGRUCell(
        in_features, hidden_features, variant=variant, dtype=dtype, init="glorot", rngs=rngs
    )


@CELLS.register("flax-gru")
def flax_gru(in_features, hidden_features, *, variant, dtype, rngs):
    """`flax.nnx.GRUCell` (reset-after form, no b_hn, Flax's initialisers)."""
    if variant != "reset_after":
        raise ValueError("the flax-gru cell has only the reset_after form")
    return nnx.GRUCell(in_features, hidden_features, dtype=dtype, rngs=rngs)


@CELLS.register("flax-lstm")
def flax_lstm(in_features, hidden_features, *, variant, dtype, rngs):
    """`flax.nnx.LSTMCell`; `variant` does not apply."""
    del variant
    return nnx.LSTMCell(in_features, hidden_features, dtype=dtype, rngs=rngs)
