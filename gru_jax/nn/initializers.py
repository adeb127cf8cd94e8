"""Initialisers for fused GRU kernels, applied per gate block.

A fused kernel (fan_in, 3H) is three (fan_in, H) gate blocks side by side. Initialising the blocks
separately keeps each gate's statistics what an unfused cell would give: Flax's recurrent kernel
is orthogonal per gate, and GRU4Rec's Glorot-uniform bound is sqrt(6 / (fan_in + H)) per gate,
not sqrt(6 / (fan_in + 3H)).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]

lecun_normal: Initializer = jax.nn.initializers.lecun_normal()
orthogonal: Initializer = jax.nn.initializers.orthogonal()
glorot_uniform: Initializer = jax.nn.initializers.glorot_uniform()
zeros: Initializer = jax.nn.initializers.zeros


def per_gate(initializer: Initializer, num_gates: int = 3) -> Initializer:
    """Wraps `initializer` so it fills each (fan_in, H) block of a (fan_in, num_gates·H) kernel."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        *lead, width = shape
        if width % num_gates:
            raise ValueError(f"last axis {width} is not divisible by {num_gates} gates")
        block = (*lead, width // num_gates)
        keys = jax.random.split(key, num_gates)
        return jnp.concatenate([initializer(k, block, dtype) for k in keys], axis=-1)

    return init
