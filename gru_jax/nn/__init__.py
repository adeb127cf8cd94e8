"""GRU building blocks: the functional core, the fused cell, the multi-layer layer."""

from gru_jax.nn.cell import FusedGRUCell
from gru_jax.nn.functional import VARIANTS, GRUParams
from gru_jax.nn.layer import GRU

__all__ = ["GRU", "VARIANTS", "FusedGRUCell", "GRUParams"]
