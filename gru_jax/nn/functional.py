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

reset_before (GRU4Rec's Theano original; the notation of Chung et al. 2014 and the GRU4Rec
paper, in which Cho et al. 2014's z is 1 − z):
    z  = σ(W_z·[h, x] + b_z),  r = σ(W_r·[h, x] + b_r)
    h̃  = tanh(W_h·[r ⊙ h, x] + b_h)
    h' = (1 − z) ⊙ h + z ⊙ h̃        (z weights the candidate)
    with W_h·[r ⊙ h, x] = (r ⊙ h) W_hn + x W_in and b_z = b_iz + b_hz (likewise for r and h);
    `FusedGRUCell` keeps one bias per gate in this form (bias_i; its bias_h is zero).
    The candidate's matmul depends on r, so a step is a (H, 2H) matmul then a (H, H) one.

The carry and the gate arithmetic stay in float32 whatever the compute dtype; only the matmul
operands are cast to `dtype` (bfloat16 activations, float32 state, as recurrentgemma does).
"""

from __future__ import annotations

import functools
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


def check_real(x: jax.Array, name: str) -> None:
    """Refuses complex inputs, whose imaginary part the float32 matmuls would drop."""
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real (float or integer), got dtype {x.dtype}")


def matmul(a: jax.Array, b: jax.Array, dtype=None) -> jax.Array:
    """a @ b with operands in `dtype` (None: as given) and a float32 result."""
    a, b = _operands(a, b, dtype=dtype)
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _operands(*arrays, dtype):
    """The matmul operands rounded to `dtype` (None: as given).

    On XLA:CPU a narrower dtype is widened back to float32 after the rounding: XLA:CPU runs a
    bfloat16 dot with a float32 result about 1.5x slower than the float32 dot of the same
    values (4.8 against 3.1 ms for (512, 256)x(256, 768)), and a product of two bfloat16
    values is exact in float32, so the result is the same up to the order of summation.
    """
    if dtype is None:
        return arrays
    arrays = tuple(a.astype(dtype) for a in arrays)
    if jnp.dtype(dtype).itemsize < 4 and jax.default_backend() == "cpu":
        arrays = tuple(a.astype(jnp.float32) for a in arrays)
    return arrays


def input_projection(params: GRUParams, x: jax.Array, dtype=None) -> jax.Array:
    """x W_i + b_i for any leading shape: (..., E) -> (..., 3H) in float32."""
    return matmul(x, params.kernel_i, dtype) + params.bias_i.astype(jnp.float32)


def step_from_projection(
    params: GRUParams, h: jax.Array, gi: jax.Array, variant: str, dtype=None
) -> jax.Array:
    """One GRU step given the input projection gi = x W_i + b_i, (B, 3H). Returns h' (B, H)."""
    return step_and_gates(params, h, gi, variant, dtype)[0]


def step_and_gates(params: GRUParams, h: jax.Array, gi: jax.Array, variant: str, dtype=None):
    """`step_from_projection`, also returning the activations the backward pass reads, (B, H)
    each: (r, z, n, gh_n) for reset_after, (r, z, candidate) for reset_before.

    The gate blocks are taken with `jnp.split`, not slices: the transpose of a split is one
    concatenate, that of three slices three pads summed in one fusion, which XLA:CPU runs
    slowly (a GRU4Rec training step took 5.6 against 6.6 ms; benchmarks/results/README.md).
    """
    hidden = h.shape[-1]
    gi_r, gi_z, gi_n = jnp.split(gi, 3, axis=-1)
    b_h = params.bias_h.astype(jnp.float32)
    if variant == "reset_after":
        gh_r, gh_z, gh_n = jnp.split(matmul(h, params.kernel_h, dtype) + b_h, 3, axis=-1)
        r = jax.nn.sigmoid(gi_r + gh_r)
        z = jax.nn.sigmoid(gi_z + gh_z)
        n = jnp.tanh(gi_n + r * gh_n)
        return (1.0 - z) * n + z * h, (r, z, n, gh_n)
    # reset_before: the candidate's recurrent matmul sees r ⊙ h, so it waits for r.
    w_rz, w_n = jnp.split(params.kernel_h, [2 * hidden], axis=-1)
    b_rz, b_n = jnp.split(b_h, [2 * hidden])
    gh_r, gh_z = jnp.split(matmul(h, w_rz, dtype) + b_rz, 2, axis=-1)
    r = jax.nn.sigmoid(gi_r + gh_r)
    z = jax.nn.sigmoid(gi_z + gh_z)
    gh_n = matmul(r * h, w_n, dtype) + b_n
    candidate = jnp.tanh(gi_n + gh_n)
    return (1.0 - z) * h + z * candidate, (r, z, candidate)


def step(params: GRUParams, h: jax.Array, x: jax.Array, variant: str, dtype=None) -> jax.Array:
    """One GRU step from the raw input x (B, E). Returns h' (B, H) in float32."""
    return step_from_projection(params, h, input_projection(params, x, dtype), variant, dtype)


BACKWARDS = ("fused", "autodiff")


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
    backward: str = "fused",
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
            (meant for GPU/TPU; on XLA:CPU the loop's gate fusion then reads gate slices of the
            scanned projection, which XLA:CPU runs several times slower, so forward loses
            30–50%; benchmarks/results/README.md).
        unroll: `lax.scan` unroll factor (forward and backward loops).
        dtype: matmul operand dtype (None: the operands as they are, promoted together, e.g.
            bfloat16 parameters with the float32 carry multiply in float32); the carry and the
            gate arithmetic are float32 either way.
        backward: "fused" (default), the hand-written VJP of `_fused_sequence`: a reverse scan
            that carries only dh, with every weight gradient one (T·B)-row matmul after the
            loop; or "autodiff", JAX's transpose of the forward scan (kept for tests and
            benchmarks).

    Returns:
        (hs, h_last): hs (T, B, H) is the carry after each step (the passed-through carry at
        masked steps); h_last (B, H) the final carry. Both float32.
    """
    check_variant(variant)
    check_real(xs, "xs")
    check_real(h0, "h0")
    if backward == "autodiff":
        hs, h_last, _ = _forward_scan(params, xs, h0, resets, mask, variant, hoist, unroll, dtype)
        return hs, h_last
    if backward != "fused":
        raise ValueError(f"unknown backward {backward!r}; expected one of {BACKWARDS}")
    params, h0 = _varying_like(xs, params, h0)
    return _fused_sequence(params, xs, h0, resets, mask, variant, hoist, unroll, dtype)


def _varying_like(xs, *trees):
    """Inside `jax.shard_map`, the weights (replicated) made varying over the mesh axes that
    the rows of xs vary over, before the custom VJP: its backward returns per-shard weight
    gradients, which must match its inputs' type; JAX then sums them over the shards outside
    it. Unchanged outside shard_map."""
    kind = getattr(jax.typeof(xs), "manual_axis_type", None)
    varying = set(kind.varying) if kind is not None else set()
    if not varying:
        return trees

    def cast(a):
        missing = tuple(sorted(varying - set(jax.typeof(a).manual_axis_type.varying)))
        return jax.lax.pcast(a, missing, to="varying") if missing else a

    return tuple(jax.tree.map(cast, tree) for tree in trees)


# ---------------------------------------------------------------------------------------------
# The forward scan, optionally saving the gates the backward pass needs.
# ---------------------------------------------------------------------------------------------


def _forward_scan(params, xs, h0, resets, mask, variant, hoist, unroll, dtype, save=False):
    """The scan of `sequence`. With ``save``, also returns per-step gate activations (T, B, H)
    each: (r, z, n, gh_n) for reset_after, (r, z, candidate) for reset_before."""
    h0 = h0.astype(jnp.float32)
    gis = input_projection(params, xs, dtype) if hoist else xs

    def body(h, inputs):
        gi_or_x, reset_t, mask_t = inputs
        if reset_t is not None:
            h = jnp.where(reset_t[:, None], 0.0, h)
        gi = gi_or_x if hoist else input_projection(params, gi_or_x, dtype)
        h_new, gates = step_and_gates(params, h, gi, variant, dtype)
        if not save:
            gates = ()
        if mask_t is not None:
            h_new = jnp.where(mask_t[:, None], h_new, h)
        return h_new, (h_new, gates)

    h_last, (hs, gates) = jax.lax.scan(body, h0, (gis, resets, mask), unroll=unroll)
    return hs, h_last, gates


# ---------------------------------------------------------------------------------------------
# The hand-written backward pass (the cuDNN arrangement).
#
# The reverse scan carries dh (B, H) only. Per step it forms the gate-preactivation gradients
# dg = (da_r, da_z, da_n) (B, 3H), which are also the input-side gradients, and the one matmul
# the recurrence needs, dh_prev = dg_h W_hᵀ (+ the direct terms), where dg_h is dg with the
# candidate block scaled by r (reset_after) or the candidate matmul applied separately
# (reset_before). Only dg leaves the loop, one (T, B, 3H) slab: the weight gradients are sums
# over all T·B rows, so they wait until after the loop and become one large 2-D matmul each:
#     dW_i = Xᵀ DG,  db_i = Σ DG,  dX = DG W_iᵀ,
#     dW_h = [H_inᵀ DG_rz, Aᵀ D_n],  db_h = [Σ DG_rz, Σ D_n],
# where H_in (T, B, H) is the carry entering each step (after resets), and (A, D_n) is
# (H_in, r ⊙ DG_n) for reset_after and (r ⊙ H_in, DG_n) for reset_before. Autodiff instead
# accumulates dW_h inside the loop, a (H, B)×(B, 3H) matmul per step (and dW_i too, unless the
# input projection was hoisted out of the loop).
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _fused_sequence(params, xs, h0, resets, mask, variant, hoist, unroll, dtype):
    hs, h_last, _ = _forward_scan(params, xs, h0, resets, mask, variant, hoist, unroll, dtype)
    return hs, h_last


def _fused_sequence_fwd(params, xs, h0, resets, mask, variant, hoist, unroll, dtype):
    hs, h_last, gates = _forward_scan(
        params, xs, h0, resets, mask, variant, hoist, unroll, dtype, save=True
    )
    return (hs, h_last), (params, xs, h0, resets, mask, hs, gates)


def _fused_sequence_bwd(variant, hoist, unroll, dtype, residuals, cotangents):
    del hoist  # The backward pass is the same whether the forward hoisted or not.
    params, xs, h0, resets, mask, hs, gates = residuals
    d_hs, d_h_last = cotangents
    hidden = h0.shape[-1]
    # The carry entering step t, before its reset: h0, then the outputs of steps 0..T-2.
    h_prev = jnp.concatenate([h0.astype(jnp.float32)[None], hs[:-1]], axis=0)
    (w_h,) = _operands(params.kernel_h, dtype=dtype)
    back = _back_step_reset_after if variant == "reset_after" else _back_step_reset_before

    def body(dh, inputs):
        d_out, h, reset_t, mask_t, gates_t = inputs
        if reset_t is not None:
            h = jnp.where(reset_t[:, None], 0.0, h)
        dh = dh + d_out
        dh_step = dh if mask_t is None else jnp.where(mask_t[:, None], dh, 0.0)
        dh_prev, dg = back(dh_step, h, gates_t, w_h, hidden, dtype)
        if mask_t is not None:
            dh_prev = dh_prev + jnp.where(mask_t[:, None], 0.0, dh)
        if reset_t is not None:
            dh_prev = jnp.where(reset_t[:, None], 0.0, dh_prev)
        return dh_prev, dg

    dh0, dgs = jax.lax.scan(
        body,
        d_h_last.astype(jnp.float32),
        (d_hs.astype(jnp.float32), h_prev, resets, mask, gates),
        reverse=True,
        unroll=unroll,
    )

    h_in = h_prev if resets is None else jnp.where(resets[..., None], 0.0, h_prev)
    r = gates[0]
    dg_rz, dg_n = dgs[..., : 2 * hidden], dgs[..., 2 * hidden :]
    if variant == "reset_after":  # gh_n = h W_hn + b_hn enters the candidate scaled by r.
        n_operand, d_n = h_in, dg_n * r
    else:  # The candidate's recurrent matmul sees r ⊙ h.
        n_operand, d_n = r * h_in, dg_n
    d_kernel_h = jnp.concatenate(
        [
            _sum_outer(h_in, dg_rz, dtype, params.kernel_h),
            _sum_outer(n_operand, d_n, dtype, params.kernel_h),
        ],
        axis=-1,
    )
    d_bias_i = dgs.sum((0, 1))
    # The r and z biases see the same preactivation gradient on both sides.
    d_bias_h = jnp.concatenate([d_bias_i[: 2 * hidden], d_n.sum((0, 1))])
    d_params = GRUParams(
        kernel_i=_sum_outer(xs, dgs, dtype, params.kernel_i).astype(params.kernel_i.dtype),
        bias_i=d_bias_i.astype(params.bias_i.dtype),
        kernel_h=d_kernel_h.astype(params.kernel_h.dtype),
        bias_h=d_bias_h.astype(params.bias_h.dtype),
    )
    d_xs = matmul(dgs, params.kernel_i.T, dtype).astype(xs.dtype)
    return d_params, d_xs, dh0.astype(h0.dtype), None, None


def _back_step_reset_after(dh, h, gates, w_h, hidden, dtype):
    """One reverse step of reset_after: (dh_prev, dg) from dh = ∂L/∂h' at this step."""
    r, z, n, gh_n = gates
    da_n = dh * (1.0 - z) * (1.0 - n * n)
    da_r = da_n * gh_n * r * (1.0 - r)
    da_z = dh * (h - n) * z * (1.0 - z)
    dg_h = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)
    dh_prev = dh * z + _matmul_t(dg_h, w_h, dtype)
    return dh_prev, jnp.concatenate([da_r, da_z, da_n], axis=-1)


def _back_step_reset_before(dh, h, gates, w_h, hidden, dtype):
    """One reverse step of reset_before: (dh_prev, dg) from dh = ∂L/∂h' at this step."""
    r, z, c = gates
    da_c = dh * z * (1.0 - c * c)
    d_rh = _matmul_t(da_c, w_h[:, 2 * hidden :], dtype)
    da_r = d_rh * h * r * (1.0 - r)
    da_z = dh * (c - h) * z * (1.0 - z)
    d_rz = jnp.concatenate([da_r, da_z], axis=-1)
    dh_prev = dh * (1.0 - z) + d_rh * r + _matmul_t(d_rz, w_h[:, : 2 * hidden], dtype)
    return dh_prev, jnp.concatenate([d_rz, da_c], axis=-1)


def _matmul_t(a, w, dtype):
    """a wᵀ for a (B, K) and w (H, K) already in the operand dtype, float32 result, without
    materialising wᵀ."""
    (a,) = _operands(a, dtype=dtype)
    return jax.lax.dot_general(a, w, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _sum_outer(a, b, dtype, like):
    """Σ_{t,b} a[t,b]ᵀ b[t,b]: (T, B, K), (T, B, G) -> (K, G), the gradient of parameter
    ``like``.

    Written as one 2-D (K, T·B)×(T·B, G) matmul: on its own, XLA:CPU ran the contraction over
    two axes up to 1.7x slower (B=512, H=100); inside this backward pass the two forms measured
    the same (benchmarks/results/README.md). Under explicit sharding the rows may be split over
    devices, which that reshape cannot express: the two-axis contraction then reduces over
    them into the parameter's own sharding."""
    if _explicit_spec(a) is not None or _explicit_spec(b) is not None:
        spec = _explicit_spec(like)  # a parameter given outside the mesh: replicated
        return jnp.einsum(
            "tbk,tbg->kg",
            *_operands(a, b, dtype=dtype),
            preferred_element_type=jnp.float32,
            out_sharding=jax.sharding.PartitionSpec() if spec is None else spec,
        )
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return matmul(a2.T, b2, dtype)


def _explicit_spec(x):
    """x's PartitionSpec when it is traced under a mesh with explicit axes, else None."""
    sharding = jax.typeof(x).sharding
    mesh = getattr(sharding, "mesh", None)
    explicit = getattr(jax.sharding.AxisType, "Explicit", None)
    if mesh is None or explicit is None or explicit not in getattr(mesh, "axis_types", ()):
        return None
    return sharding.spec


_fused_sequence.defvjp(_fused_sequence_fwd, _fused_sequence_bwd)
