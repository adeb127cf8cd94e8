"""The GRU recurrence as pure functions: one step, and a whole sequence under `lax.scan`.

Shape vocabulary (used in every file of `gru_jax.nn`):
    B batch rows, T time steps, E input features, H hidden features, L layers.
Gates are stacked along the last axis in the order (r, z, n), so a fused kernel is (E, 3H) or
(H, 3H) and a fused bias is (3H,).

Both GRU forms are here; `variant` picks one:

reset_after (cuDNN, PyTorch, Flax):
    r  = σ(x W_ir + b_ir + h W_hr + b_hr)
    z  = σ(x W_iz + b_iz + h W_hz + b_hz)
    n  = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
    h' = (1 − z) ⊙ n + z ⊙ h
    One fused (B, H)×(H, 3H) matmul per step.

reset_before (Cho et al. 2014, GRU4Rec's Theano original):
    z  = σ(W_z·[h, x] + b_z),  r = σ(W_r·[h, x] + b_r)
    h̃  = tanh(W_h·[r ⊙ h, x] + b_h)
    h' = (1 − z) ⊙ h + z ⊙ h̃        (z weights the candidate)
    with W_h·[r ⊙ h, x] = (r ⊙ h) W_hn + x W_in and b_z = b_iz + b_hz (likewise for r and h).
    The candidate's matmul depends on r, so a step is a (H, 2H) matmul then a (H, H) one.

The carry and the gate arithmetic stay in float32 whatever the compute dtype; only the matmul
operands are cast to `dtype` (bfloat16 activations, float32 state, as recurrentgemma does).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

VARIANTS = ("reset_after", "reset_before")


class GRUParams(NamedTuple):
    """Fused parameters of one GRU layer, gates (r, z, n) along the last axis."""

    kernel_i: jax.Array  # (E, 3H)
    bias_i: jax.Array  # (3H,)
    kernel_h: jax.Array  # (H, 3H)
    bias_h: jax.Array  # (3H,)


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown GRU variant {variant!r}; expected one of {VARIANTS}")
    return variant


def matmul(a: jax.Array, b: jax.Array, dtype=None) -> jax.Array:
    """a @ b with operands in `dtype` (None: as given) and a float32 result."""
    if dtype is not None:
        a, b = a.astype(dtype), b.astype(dtype)
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def input_projection(params: GRUParams, x: jax.Array, dtype=None) -> jax.Array:
    """x W_i + b_i for any leading shape: (..., E) -> (..., 3H) in float32."""
    return matmul(x, params.kernel_i, dtype) + params.bias_i.astype(jnp.float32)


def step_from_projection(
    params: GRUParams, h: jax.Array, gi: jax.Array, variant: str, dtype=None
) -> jax.Array:
    """One GRU step given the input projection gi = x W_i + b_i, (B, 3H). Returns h' (B, H)."""
    hidden = h.shape[-1]
    gi_r, gi_z, gi_n = gi[..., :hidden], gi[..., hidden : 2 * hidden], gi[..., 2 * hidden :]
    b_h = params.bias_h.astype(jnp.float32)
    if variant == "reset_after":
        gh = matmul(h, params.kernel_h, dtype) + b_h
        r = jax.nn.sigmoid(gi_r + gh[..., :hidden])
        z = jax.nn.sigmoid(gi_z + gh[..., hidden : 2 * hidden])
        n = jnp.tanh(gi_n + r * gh[..., 2 * hidden :])
        return (1.0 - z) * n + z * h
    # reset_before: the candidate's recurrent matmul sees r ⊙ h, so it waits for r.
    gh_rz = matmul(h, params.kernel_h[:, : 2 * hidden], dtype) + b_h[: 2 * hidden]
    r = jax.nn.sigmoid(gi_r + gh_rz[..., :hidden])
    z = jax.nn.sigmoid(gi_z + gh_rz[..., hidden:])
    gh_n = matmul(r * h, params.kernel_h[:, 2 * hidden :], dtype) + b_h[2 * hidden :]
    candidate = jnp.tanh(gi_n + gh_n)
    return (1.0 - z) * h + z * candidate


def step(params: GRUParams, h: jax.Array, x: jax.Array, variant: str, dtype=None) -> jax.Array:
    """One GRU step from the raw input x (B, E). Returns h' (B, H) in float32."""
    return step_from_projection(params, h, input_projection(params, x, dtype), variant, dtype)


def sequence(
    params: GRUParams,
    xs: jax.Array,
    h0: jax.Array,
    resets: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    variant: str = "reset_after",
    hoist: bool = False,
    unroll: int = 1,
    dtype=None,
) -> tuple[jax.Array, jax.Array]:
    """Runs the GRU over time with `lax.scan`. Time-major.

    Args:
        params: the layer's fused parameters.
        xs: (T, B, E) inputs.
        h0: (B, H) initial carry.
        resets: (T, B) bool or None; True zeroes the row's carry *before* step t.
        mask: (T, B) bool or None; False marks a padded step whose carry passes through.
        variant: "reset_after" or "reset_before".
        hoist: compute x W_i for all T steps as one (T·B, E)×(E, 3H) matmul before the loop
            (pays on GPU/TPU; on XLA:CPU the per-step matmul is as efficient and hoisting costs
            memory traffic).
        unroll: `lax.scan` unroll factor.
        dtype: matmul operand dtype (None: the parameters' dtype).

    Returns:
        (hs, h_last): hs (T, B, H) is the carry after each step (the passed-through carry at
        masked steps); h_last (B, H) the final carry. Both float32.
    """
    h0 = h0.astype(jnp.float32)
    gis = input_projection(params, xs, dtype) if hoist else xs

    def body(h, inputs):
        gi_or_x, reset_t, mask_t = inputs
        if reset_t is not None:
            h = jnp.where(reset_t[:, None], 0.0, h)
        gi = gi_or_x if hoist else input_projection(params, gi_or_x, dtype)
        h_new = step_from_projection(params, h, gi, variant, dtype)
        if mask_t is not None:
            h_new = jnp.where(mask_t[:, None], h_new, h)
        return h_new, h_new

    h_last, hs = jax.lax.scan(body, h0, (gis, resets, mask), unroll=unroll)
    return hs, h_last
