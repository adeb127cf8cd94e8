"""gru_jax: fused GRU kernels and GRU4Rec-style session recommendation in JAX."""

from gru_jax.nn import GRU, VARIANTS, FusedGRUCell

__version__ = "0.1.0"

__all__ = ["GRU", "VARIANTS", "FusedGRUCell", "__version__"]
