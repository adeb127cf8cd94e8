"""Custom kernels for the GRU recurrence (Pallas; interpret mode on CPU)."""

from gru_jax.kernels.gru_pallas import gru_sequence_pallas, gru_sequence_reference

__all__ = ["gru_sequence_pallas", "gru_sequence_reference"]
