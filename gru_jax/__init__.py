"""gru_jax: fused GRU kernels and GRU4Rec-style session recommendation in JAX."""

__version__ = "0.1.0"
