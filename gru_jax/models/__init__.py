"""Recommendation models built from gru_jax's GRU cells."""

from gru_jax.models.cells import CELLS
from gru_jax.models.gru4rec import EMBEDDING_MODES, GRU4Rec, ItemTable

__all__ = ["CELLS", "EMBEDDING_MODES", "GRU4Rec", "ItemTable"]
