"""A plain, step-by-step GRU: a Python loop over time with the gates written out one by one.

Slow on purpose and shares no code with `functional.sequence` beyond the parameter layout, so the
tests can hold the fast paths against it. `gru_jax.GRU(impl="reference")` runs it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gru_jax.nn.functional import GRUParams


def _gates(w: jax.Array, hidden: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    return w[..., :hidden], w[..., hidden : 2 * hidden], w[..., 2 * hidden :]


def reference_step(
    params: GRUParams, h: jax.Array, x: jax.Array, variant: str, dtype=None
) -> jax.Array:
    """One step from the textbook equations of `variant`: matmul operands rounded to `dtype`
    (None: float32), every sum and gate in float32."""
    hidden = h.shape[-1]
    low = jnp.float32 if dtype is None else dtype

    def mm(a, w):
        return jnp.matmul(a.astype(low), w.astype(low), preferred_element_type=jnp.float32)

    w_ir, w_iz, w_in = _gates(params.kernel_i, hidden)
    w_hr, w_hz, w_hn = _gates(params.kernel_h, hidden)
    b_ir, b_iz, b_in = _gates(params.bias_i.astype(jnp.float32), hidden)
    b_hr, b_hz, b_hn = _gates(params.bias_h.astype(jnp.float32), hidden)
    r = jax.nn.sigmoid(mm(x, w_ir) + b_ir + mm(h, w_hr) + b_hr)
    z = jax.nn.sigmoid(mm(x, w_iz) + b_iz + mm(h, w_hz) + b_hz)
    if variant == "reset_after":
        n = jnp.tanh(mm(x, w_in) + b_in + r * (mm(h, w_hn) + b_hn))
        return (1 - z) * n + z * h
    if variant == "reset_before":
        candidate = jnp.tanh(mm(r * h, w_hn) + mm(x, w_in) + b_in + b_hn)
        return (1 - z) * h + z * candidate
    raise ValueError(f"unknown GRU variant {variant!r}")


def reference_sequence(
    params: GRUParams,
    xs: jax.Array,
    h0: jax.Array,
    resets: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    variant: str = "reset_after",
    dtype=None,
) -> tuple[jax.Array, jax.Array]:
    """Time-major (T, B, E) inputs -> (hs (T, B, H), h_last (B, H)), same contract as `sequence`."""
    h = h0.astype(jnp.float32)
    outputs = []
    for t in range(xs.shape[0]):
        if resets is not None:
            h = jnp.where(resets[t][:, None], 0.0, h)
        h_new = reference_step(params, h, xs[t], variant, dtype)
        if mask is not None:
            h_new = jnp.where(mask[t][:, None], h_new, h)
        h = h_new
        outputs.append(h)
    return jnp.stack(outputs), h
