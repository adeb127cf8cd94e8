"""A Pallas GRU kernel: the whole recurrence in one launch, weights resident across time steps.

The input projection gi = x W_i + b_i is hoisted out of the recurrence (one big matmul the
caller does); the kernel runs the time loop with the recurrent weights (H, 3H) resident on chip,
the carry h in registers, and writes h_t every step. The equations and the `resets`/`mask`
semantics are those of `gru_jax.nn.functional` (see its module docstring): `resets[t]` zeroes a
row's carry *before* step t, and where `mask[t]` is False the carry passes through unchanged and
hs[t] is that carried h.

Layout, read top to bottom: tiling helpers, the cell maths on hidden-column chunks, the forward
kernel, the backward kernel, their `pallas_call` wrappers, the `custom_vjp`, and the public entry
`gru_sequence_pallas` last, with `gru_sequence_reference` (a plain `lax.scan`) beside it.

Design:
    * Grid over batch blocks of `block_b` rows ("parallel"); each program runs the whole time
      loop (`lax.fori_loop` over T) for its rows, so one launch covers the sequence.
    * kernel_h and bias_h are one BlockSpec each covering the whole array (index map constant),
      so they are fetched once per program and stay resident (VMEM on TPU; L1/L2 on GPU).
    * Hidden columns are processed in chunks of `block_h`, and h is carried as a tuple of
      (block_b, block_h) chunks. Triton cannot slice a register tensor, and one (H, H) fp32
      operand of a `tl.dot` must fit in shared memory, so every matmul is a sum of
      (block_b, block_h) x (block_h, block_h) dots on statically sliced refs.
    * Backward (`jax.custom_vjp`): a second kernel runs the recurrence in reverse carrying only
      dh (B, H). The forward saves its gate activations (r, z, n and W_hn h + b_hn for
      reset_after; r, z, h̃ for reset_before) as residuals, as cuDNN's reserve space does, so the
      backward step needs one dependent matmul (d_gh Wᵀ) instead of two (recomputing h W first):
      the serial chain, not memory, bounds a recurrence. The weight gradients are computed after
      the loop as one (H, T·B) x (T·B, 3H) matmul (two for reset_before, whose candidate matmul
      sees r ⊙ h).
    * Padding happens in the wrapper, so any (B, H) works: H is padded per gate to a multiple
      of `block_h` (zero weights keep padded hidden units at exactly 0), B to a multiple of
      `block_b`; results are sliced back. Defaults per platform: GPU (Triton) blocks are powers
      of two >= 16 (Triton needs power-of-two tensors and `tl.dot` needs dims >= 16); TPU
      (Mosaic) blocks are multiples of (8, 128). On CPU the kernel runs in interpret mode with
      the GPU tiling, so tests exercise the same padding.

Verified: outputs and gradients in interpret mode on CPU (tests/test_kernel_pallas.py), and that
both kernels lower to Triton (TTIR) and Mosaic TPU MLIR via `jax.export`. Not yet compiled or run
on a GPU or TPU, so resource limits (registers, shared memory, VMEM) and speed are unmeasured.

Notation: T time, B batch, H hidden (Hp padded), bb = block_b, bh = block_h. Gates (r, z, n)
are stacked along the last axis; in padded arrays gate g occupies columns [g·Hp, (g+1)·Hp).
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from gru_jax.nn import functional

__all__ = ["gru_sequence_pallas", "gru_sequence_reference"]

_log = logging.getLogger(__name__)

# Saved gate activations per step, in units of Hp columns.
_NUM_SAVED = {"reset_after": 4, "reset_before": 3}  # (r, z, n, W_hn h + b_hn) / (r, z, h̃)
# TPU budget for the double-buffered per-row blocks (gi, hs, gates), under the 16 MiB scoped
# VMEM default of the smallest chips.
_TPU_VMEM_BUDGET = 12 * 2**20


# ----------------------------------------------------------------------------------------------
# Tiling.


@dataclasses.dataclass(frozen=True)
class _Tiling:
    """Static block sizes and padded extents of one call."""

    platform: str  # "gpu", "tpu" or "cpu" (interpret mode, tiled like "gpu")
    batch: int
    hidden: int
    block_b: int
    block_h: int
    batch_p: int  # B padded to a multiple of block_b
    hidden_p: int  # H padded to a multiple of block_h

    @property
    def num_chunks(self) -> int:
        return self.hidden_p // self.block_h


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _is_power_of_2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def _make_tiling(
    num_steps: int,
    batch: int,
    hidden: int,
    platform: str,
    block_b: int | None,
    block_h: int | None,
) -> _Tiling:
    """Chooses (block_b, block_h) for the platform, or checks the given ones, and pads to them."""
    if platform == "tpu":
        # TODO(gru_jax): the whole-T blocks of gi/hs/gates must fit VMEM; long sequences need a
        # second, "arbitrary" grid axis over time chunks with h carried in VMEM scratch, and the
        # resident weights want pipeline_mode=pl.Buffered(1) instead of double buffering.
        if block_h is None:
            block_h = _round_up(hidden, 128)
        if block_b is None:
            # Double-buffered per-row bytes of the gi, hs and saved-gates blocks.
            row_bytes = 2 * 4 * num_steps * (3 + 1 + 4) * _round_up(hidden, 128)
            block_b = max(8, min(256, _TPU_VMEM_BUDGET // row_bytes) // 8 * 8)
            block_b = min(block_b, _round_up(batch, 8))
        if block_b % 8 or block_h % 128:
            raise ValueError(
                f"on TPU block_b must be a multiple of 8 and block_h of 128; "
                f"got block_b={block_b}, block_h={block_h}"
            )
    else:
        # TODO(gru_jax): tune block_b/block_h and num_warps on a GPU; unmeasured defaults.
        if block_h is None:
            block_h = min(64, max(16, pl.next_power_of_2(hidden)))
        if block_b is None:
            block_b = min(32, max(16, pl.next_power_of_2(batch)))
        if not (_is_power_of_2(block_b) and _is_power_of_2(block_h)) or min(block_b, block_h) < 16:
            raise ValueError(
                f"on {platform} block_b and block_h must be powers of two >= 16 (Triton); "
                f"got block_b={block_b}, block_h={block_h}"
            )
    return _Tiling(
        platform=platform,
        batch=batch,
        hidden=hidden,
        block_b=block_b,
        block_h=block_h,
        batch_p=_round_up(batch, block_b),
        hidden_p=_round_up(hidden, block_h),
    )


def _pad_gates(x: jax.Array, hidden: int, hidden_p: int) -> jax.Array:
    """(..., 3H) -> (..., 3Hp), each gate zero-padded on its own."""
    x = x.reshape(*x.shape[:-1], 3, hidden)
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, hidden_p - hidden)])
    return x.reshape(*x.shape[:-2], 3 * hidden_p)


def _pad_axis(x: jax.Array, axis: int, size: int, value=0) -> jax.Array:
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


# ----------------------------------------------------------------------------------------------
# Cell maths on chunks. `chunks` is a tuple of (bb, bh) arrays covering Hp columns; refs are
# sliced statically, so every load is a (bb, bh) or (bh, bh) power-of-two tile on GPU.


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything static about one call: hashable, so it can be a `custom_vjp` nondiff arg."""

    variant: str
    tiling: _Tiling
    interpret: bool
    dtype: jnp.dtype | None
    has_resets: bool
    has_mask: bool


def _cols(g: int, j: int, st: _Static) -> slice:
    """Columns of chunk j of gate g in a (.., 3Hp)-wide array."""
    start = g * st.tiling.hidden_p + j * st.tiling.block_h
    return slice(start, start + st.tiling.block_h)


def _rows(k: int, st: _Static) -> slice:
    return slice(k * st.tiling.block_h, (k + 1) * st.tiling.block_h)


def _dot(a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    if dtype is not None:
        a, b = a.astype(dtype), b.astype(dtype)
    return jnp.dot(a, b, preferred_element_type=jnp.float32)


def _matmul_chunk(chunks, w_ref, g: int, j: int, st: _Static) -> jax.Array:
    """Chunk j of (concat(chunks) @ W[:, gate g]) for W = w_ref, (Hp, 3Hp)."""
    acc = _dot(chunks[0], w_ref[_rows(0, st), _cols(g, j, st)], st.dtype)
    for k in range(1, len(chunks)):
        acc += _dot(chunks[k], w_ref[_rows(k, st), _cols(g, j, st)], st.dtype)
    return acc


def _matmul_t_chunk(chunks, wt_ref, g: int, j: int, st: _Static) -> jax.Array:
    """Chunk j of (concat(chunks) @ W[:, gate g]ᵀ) for Wᵀ = wt_ref, (3Hp, Hp)."""
    cols = _rows(j, st)
    acc = _dot(chunks[0], wt_ref[_cols(g, 0, st), cols], st.dtype)
    for k in range(1, len(chunks)):
        acc += _dot(chunks[k], wt_ref[_cols(g, k, st), cols], st.dtype)
    return acc


def _cell_forward(h, gi, k_ref, b_ref, st: _Static):
    """One step on chunks. h: tuple of (bb, bh); gi(g, j) loads chunk j of gate g.

    Returns (h_new chunks, saved gate chunks as a tuple per saved gate).
    """
    nc = st.tiling.num_chunks
    bias = lambda g, j: b_ref[:, _cols(g, j, st)]  # (1, bh)
    r, z = [
        [
            jax.nn.sigmoid(gi(g, j) + _matmul_chunk(h, k_ref, g, j, st) + bias(g, j))
            for j in range(nc)
        ]
        for g in (0, 1)
    ]
    if st.variant == "reset_after":
        gh_n = [_matmul_chunk(h, k_ref, 2, j, st) + bias(2, j) for j in range(nc)]
        n = [jnp.tanh(gi(2, j) + r[j] * gh_n[j]) for j in range(nc)]
        h_new = tuple((1.0 - z[j]) * n[j] + z[j] * h[j] for j in range(nc))
        return h_new, (r, z, n, gh_n)
    # reset_before: the candidate's matmul sees r ⊙ h, so it waits for every chunk of r.
    q = tuple(r[j] * h[j] for j in range(nc))
    cand = [jnp.tanh(gi(2, j) + _matmul_chunk(q, k_ref, 2, j, st) + bias(2, j)) for j in range(nc)]
    h_new = tuple((1.0 - z[j]) * h[j] + z[j] * cand[j] for j in range(nc))
    return h_new, (r, z, cand)


def _cell_backward(g_new, d_pass, hp, saved, kt_ref, st: _Static):
    """Backward of one step on chunks.

    g_new: dL/dh_new (already masked); d_pass: the pass-through part of dL/dh_prev; hp: the
    (reset-applied) h_prev; saved(s, j) loads chunk j of saved gate s.
    Returns (dL/dh_prev chunks, d_gi chunks per gate).
    """
    nc = st.tiling.num_chunks
    r = [saved(0, j) for j in range(nc)]
    z = [saved(1, j) for j in range(nc)]
    if st.variant == "reset_after":
        n = [saved(2, j) for j in range(nc)]
        gh_n = [saved(3, j) for j in range(nc)]
        da_n = [g_new[j] * (1.0 - z[j]) * (1.0 - n[j] * n[j]) for j in range(nc)]
        da_z = [g_new[j] * (hp[j] - n[j]) * z[j] * (1.0 - z[j]) for j in range(nc)]
        da_r = [da_n[j] * gh_n[j] * r[j] * (1.0 - r[j]) for j in range(nc)]
        d_gh = (tuple(da_r), tuple(da_z), tuple(da_n[j] * r[j] for j in range(nc)))
        dh = [d_pass[j] + g_new[j] * z[j] for j in range(nc)]
        d_gi = (da_r, da_z, da_n)
    else:
        cand = [saved(2, j) for j in range(nc)]
        da_c = tuple(g_new[j] * z[j] * (1.0 - cand[j] * cand[j]) for j in range(nc))
        da_z = [g_new[j] * (cand[j] - hp[j]) * z[j] * (1.0 - z[j]) for j in range(nc)]
        dq = [_matmul_t_chunk(da_c, kt_ref, 2, j, st) for j in range(nc)]
        da_r = [dq[j] * hp[j] * r[j] * (1.0 - r[j]) for j in range(nc)]
        d_gh = (tuple(da_r), tuple(da_z))
        dh = [d_pass[j] + g_new[j] * (1.0 - z[j]) + dq[j] * r[j] for j in range(nc)]
        d_gi = (da_r, da_z, list(da_c))
    for g, d in enumerate(d_gh):
        dh = [dh[j] + _matmul_t_chunk(d, kt_ref, g, j, st) for j in range(nc)]
    return tuple(dh), d_gi


# ----------------------------------------------------------------------------------------------
# Kernels.


def _forward_kernel(*refs, st: _Static, save_gates: bool):
    refs = list(refs)
    gi_ref, h0_ref, k_ref, b_ref = refs[:4]
    del refs[:4]
    resets_ref = refs.pop(0) if st.has_resets else None
    mask_ref = refs.pop(0) if st.has_mask else None
    hs_ref, h_last_ref = refs[:2]
    gates_ref = refs[2] if save_gates else None
    nc, num_steps = st.tiling.num_chunks, gi_ref.shape[0]

    def body(t, h):
        if resets_ref is not None:
            keep = resets_ref[t] == 0.0  # (bb, 1)
            h = tuple(jnp.where(keep, c, 0.0) for c in h)
        h_new, saved = _cell_forward(
            h, lambda g, j: gi_ref[t, :, _cols(g, j, st)], k_ref, b_ref, st
        )
        if mask_ref is not None:
            valid = mask_ref[t] != 0.0
            h_new = tuple(jnp.where(valid, h_new[j], h[j]) for j in range(nc))
        for j in range(nc):
            hs_ref[t, :, _rows(j, st)] = h_new[j]
            if gates_ref is not None:
                for s, gate in enumerate(saved):
                    gates_ref[t, :, _cols(s, j, st)] = gate[j]
        return h_new

    h0 = tuple(h0_ref[:, _rows(j, st)].astype(jnp.float32) for j in range(nc))
    h_last = jax.lax.fori_loop(0, num_steps, body, h0)
    for j in range(nc):
        h_last_ref[:, _rows(j, st)] = h_last[j]


def _backward_kernel(*refs, st: _Static):
    refs = list(refs)
    gates_ref, hp_ref, kt_ref, d_hs_ref, d_h_last_ref = refs[:5]
    del refs[:5]
    resets_ref = refs.pop(0) if st.has_resets else None
    mask_ref = refs.pop(0) if st.has_mask else None
    d_gi_ref, d_h0_ref = refs
    nc, num_steps = st.tiling.num_chunks, d_hs_ref.shape[0]

    def body(i, dh):
        t = num_steps - 1 - i
        g = tuple(dh[j] + d_hs_ref[t, :, _rows(j, st)] for j in range(nc))
        if mask_ref is not None:
            valid = mask_ref[t] != 0.0
            g_new = tuple(jnp.where(valid, c, 0.0) for c in g)
            d_pass = tuple(jnp.where(valid, 0.0, c) for c in g)
        else:
            g_new, d_pass = g, tuple(jnp.zeros_like(c) for c in g)
        hp = tuple(hp_ref[t, :, _rows(j, st)] for j in range(nc))
        saved = lambda s, j: gates_ref[t, :, _cols(s, j, st)]
        dh, d_gi = _cell_backward(g_new, d_pass, hp, saved, kt_ref, st)
        for gate, d in enumerate(d_gi):
            for j in range(nc):
                d_gi_ref[t, :, _cols(gate, j, st)] = d[j]
        if resets_ref is not None:  # no gradient flows into the carry across a reset
            keep = resets_ref[t] == 0.0
            dh = tuple(jnp.where(keep, c, 0.0) for c in dh)
        return dh

    dh = tuple(d_h_last_ref[:, _rows(j, st)] for j in range(nc))
    dh = jax.lax.fori_loop(0, num_steps, body, dh)
    for j in range(nc):
        d_h0_ref[:, _rows(j, st)] = dh[j]


# ----------------------------------------------------------------------------------------------
# pallas_call wrappers. All arrays here are padded: (T, Bp, ·Hp) time-major, flags (T, Bp, 1).


def _compiler_params(st: _Static):
    if st.interpret:
        return None
    if st.tiling.platform == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        return pltpu.CompilerParams(dimension_semantics=("parallel",))
    # pallas_call defaults to Mosaic GPU on NVIDIA, which has no plain dot; ask for Triton.
    # TODO(gru_jax): JAX 0.11 deprecates the Triton backend; port to Mosaic GPU (warpgroup
    # matmuls) once a GPU is at hand to check and time it.
    from jax.experimental.pallas import triton as pltriton

    # TODO(gru_jax): num_warps/num_stages unmeasured; tune on a GPU.
    return pltriton.CompilerParams(num_warps=4, num_stages=1)


def _specs(st: _Static, num_steps: int):
    """BlockSpec factories: per-row blocks follow the batch program id; weights are whole."""
    bb = st.tiling.block_b
    seq = lambda width: pl.BlockSpec((num_steps, bb, width), lambda i: (0, i, 0))
    rows = lambda width: pl.BlockSpec((bb, width), lambda i: (i, 0))
    whole = lambda shape: pl.BlockSpec(shape, lambda i: (0,) * len(shape))
    return seq, rows, whole


def _flag_specs_and_args(st: _Static, seq, resets, mask):
    specs, args = [], []
    for present, flags in ((st.has_resets, resets), (st.has_mask, mask)):
        if present:
            specs.append(seq(1))
            args.append(flags)
    return specs, args


def _forward_call(st: _Static, gi, h0, kernel_h, bias_h, resets, mask, *, save_gates: bool):
    num_steps, hp = gi.shape[0], st.tiling.hidden_p
    seq, rows, whole = _specs(st, num_steps)
    flag_specs, flag_args = _flag_specs_and_args(st, seq, resets, mask)
    f32 = jnp.float32
    out_shape = [
        jax.ShapeDtypeStruct((num_steps, st.tiling.batch_p, hp), f32),
        jax.ShapeDtypeStruct((st.tiling.batch_p, hp), f32),
    ]
    out_specs = [seq(hp), rows(hp)]
    if save_gates:
        width = _NUM_SAVED[st.variant] * hp
        out_shape.append(jax.ShapeDtypeStruct((num_steps, st.tiling.batch_p, width), f32))
        out_specs.append(seq(width))
    kernel_h = kernel_h if st.dtype is None else kernel_h.astype(st.dtype)
    return pl.pallas_call(
        functools.partial(_forward_kernel, st=st, save_gates=save_gates),
        out_shape=out_shape,
        grid=(st.tiling.batch_p // st.tiling.block_b,),
        in_specs=[seq(3 * hp), rows(hp), whole((hp, 3 * hp)), whole((1, 3 * hp)), *flag_specs],
        out_specs=out_specs,
        interpret=st.interpret,
        compiler_params=_compiler_params(st),
        name=f"gru_forward_{st.variant}",
    )(gi, h0, kernel_h, bias_h, *flag_args)


def _backward_call(st: _Static, gates, h_prev, kernel_h_t, d_hs, d_h_last, resets, mask):
    num_steps, hp = d_hs.shape[0], st.tiling.hidden_p
    seq, rows, whole = _specs(st, num_steps)
    flag_specs, flag_args = _flag_specs_and_args(st, seq, resets, mask)
    kernel_h_t = kernel_h_t if st.dtype is None else kernel_h_t.astype(st.dtype)
    in_specs = [
        seq(gates.shape[-1]),
        seq(hp),
        whole((3 * hp, hp)),
        seq(hp),
        rows(hp),
        *flag_specs,
    ]
    return pl.pallas_call(
        functools.partial(_backward_kernel, st=st),
        out_shape=[
            jax.ShapeDtypeStruct((num_steps, st.tiling.batch_p, 3 * hp), jnp.float32),
            jax.ShapeDtypeStruct((st.tiling.batch_p, hp), jnp.float32),
        ],
        grid=(st.tiling.batch_p // st.tiling.block_b,),
        in_specs=in_specs,
        out_specs=[seq(3 * hp), rows(hp)],
        interpret=st.interpret,
        compiler_params=_compiler_params(st),
        name=f"gru_backward_{st.variant}",
    )(gates, h_prev, kernel_h_t, d_hs, d_h_last, *flag_args)


def _first_order_only(call):
    """`call(st, static, *arrays)` with a JVP rule that says what is unsupported.

    The kernels have no derivative of their own, so a second derivative (grad of grad, jacfwd of
    grad), which differentiates the custom VJP's forward and backward calls, stops here with a
    message instead of failing deep inside Pallas.
    """
    wrapped = jax.custom_jvp(call, nondiff_argnums=(0, 1))

    def no_jvp(st, static, primals, tangents):
        raise NotImplementedError(
            "impl='pallas' has first derivatives only (its kernels have no derivative of their "
            "own); for second derivatives use impl='xla' or impl='reference'"
        )

    wrapped.defjvp(no_jvp)
    return wrapped


_forward_once = _first_order_only(
    lambda st, save_gates, *arrays: _forward_call(st, *arrays, save_gates=save_gates)
)
_backward_once = _first_order_only(lambda st, _, *arrays: _backward_call(st, *arrays))


# ----------------------------------------------------------------------------------------------
# custom_vjp on padded arrays. resets/mask are float (T, Bp, 1) flags or None.


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gru_padded(st: _Static, gi, h0, kernel_h, bias_h, resets, mask):
    hs, h_last = _forward_once(st, False, gi, h0, kernel_h, bias_h, resets, mask)
    return hs, h_last


def _gru_padded_fwd(st: _Static, gi, h0, kernel_h, bias_h, resets, mask):
    hs, h_last, gates = _forward_once(st, True, gi, h0, kernel_h, bias_h, resets, mask)
    return (hs, h_last), (gates, hs, h0, kernel_h, resets, mask)


def _gru_padded_bwd(st: _Static, residuals, cotangents):
    gates, hs, h0, kernel_h, resets, mask = residuals
    d_hs, d_h_last = cotangents
    hp = st.tiling.hidden_p

    # h_prev[t] is the carry step t saw: h_{t-1}, zeroed where reset.
    h_prev = jnp.concatenate([h0[None].astype(jnp.float32), hs[:-1]], axis=0)
    if resets is not None:
        h_prev = jnp.where(resets != 0.0, 0.0, h_prev)
    d_gi, d_h0 = _backward_once(st, None, gates, h_prev, kernel_h.T, d_hs, d_h_last, resets, mask)

    # Weight gradients after the loop: sum_t h_prev_tᵀ d_gh_t as matmuls over T·Bp rows.
    wgrad = functools.partial(jnp.einsum, "tbh,tbg->hg", preferred_element_type=jnp.float32)
    r = gates[..., :hp]
    if st.variant == "reset_after":
        d_gh = jnp.concatenate([d_gi[..., : 2 * hp], d_gi[..., 2 * hp :] * r], axis=-1)
        d_kernel_h = wgrad(h_prev, d_gh)
    else:
        d_gh = d_gi
        d_kernel_h = jnp.concatenate(
            [wgrad(h_prev, d_gi[..., : 2 * hp]), wgrad(r * h_prev, d_gi[..., 2 * hp :])], axis=-1
        )
    d_bias_h = d_gh.sum(axis=(0, 1))[None]
    d_h0 = d_h0.astype(h0.dtype)
    return d_gi, d_h0, d_kernel_h.astype(kernel_h.dtype), d_bias_h, None, None


_gru_padded.defvjp(_gru_padded_fwd, _gru_padded_bwd)


# ----------------------------------------------------------------------------------------------
# Public entry points.


def _check_args(gi, h0, kernel_h, bias_h, resets, mask) -> tuple[int, int, int]:
    if gi.ndim != 3:
        raise ValueError(f"gi must be (T, B, 3H); got shape {gi.shape}")
    num_steps, batch = gi.shape[:2]
    if kernel_h.ndim != 2 or kernel_h.shape[1] != 3 * kernel_h.shape[0]:
        raise ValueError(f"kernel_h must be (H, 3H); got shape {kernel_h.shape}")
    hidden = kernel_h.shape[0]
    expected = {
        "gi": (gi.shape, (num_steps, batch, 3 * hidden)),
        "h0": (h0.shape, (batch, hidden)),
        "bias_h": (bias_h.shape, (3 * hidden,)),
    }
    for name, flags in (("resets", resets), ("mask", mask)):
        if flags is not None:
            expected[name] = (flags.shape, (num_steps, batch))
    for name, (got, want) in expected.items():
        if tuple(got) != want:
            raise ValueError(
                f"{name} must have shape {want} (T={num_steps}, B={batch}, H={hidden}); got {got}"
            )
    if num_steps == 0:
        raise ValueError("gi has no time steps (T = 0)")
    return num_steps, batch, hidden


def _check_not_explicitly_sharded(**arrays) -> None:
    """Refuses arrays split over explicit mesh axes, which the kernel cannot index."""
    for name, array in arrays.items():
        spec = (
            getattr(getattr(jax.typeof(array), "sharding", None), "spec", ())
            if array is not None
            else ()
        )
        if any(axis is not None for axis in spec):
            raise ValueError(
                f"impl='pallas' does not run on arrays split over explicit mesh axes ({name} is "
                f"sharded as {spec}); use impl='xla', or call the layer inside jax.shard_map "
                "(check_vma=False)"
            )


def _normalize_platform(platform: str | None) -> str:
    platform = (platform or jax.default_backend()).lower()
    if platform in ("cuda", "rocm", "gpu"):
        return "gpu"
    if platform not in ("cpu", "tpu"):
        raise ValueError(f"unsupported platform {platform!r}; expected 'cpu', 'gpu' or 'tpu'")
    return platform


def gru_sequence_pallas(
    gi: jax.Array,
    h0: jax.Array,
    kernel_h: jax.Array,
    bias_h: jax.Array,
    resets: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    variant: str = "reset_after",
    interpret: bool | None = None,
    block_b: int | None = None,
    block_h: int | None = None,
    dtype=None,
    platform: str | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Runs the GRU recurrence over time in one Pallas kernel; differentiable (custom VJP).

    Computes what `functional.sequence(params, xs, h0, resets, mask, variant=variant,
    hoist=True, dtype=dtype)` computes, given gi = `functional.input_projection(params, xs)`.

    Args:
        gi: (T, B, 3H) hoisted input projection x W_i + b_i, gates (r, z, n); float32.
        h0: (B, H) initial carry.
        kernel_h: (H, 3H) recurrent kernel.
        bias_h: (3H,) recurrent bias.
        resets: (T, B) bool or None; True zeroes the row's carry *before* step t.
        mask: (T, B) bool or None; False marks a padded step whose carry passes through.
        variant: "reset_after" or "reset_before" (see `gru_jax.nn.functional`).
        interpret: run in Pallas interpret mode; None means True on CPU.
        block_b: batch rows per program (grid axis); None picks a platform default.
        block_h: hidden columns per matmul tile; None picks a platform default.
        dtype: matmul operand dtype (None: float32); the carry and gate maths stay float32.
        platform: "cpu", "gpu" or "tpu" tiling; None means `jax.default_backend()`.

    Returns:
        (hs, h_last): hs (T, B, H) the carry after each step; h_last (B, H). Both float32.
    """
    functional.check_variant(variant)
    num_steps, batch, hidden = _check_args(gi, h0, kernel_h, bias_h, resets, mask)
    _check_not_explicitly_sharded(gi=gi, h0=h0, resets=resets, mask=mask)
    platform = _normalize_platform(platform)
    if interpret is None:
        interpret = platform == "cpu"
    tiling = _make_tiling(num_steps, batch, hidden, platform, block_b, block_h)
    st = _Static(
        variant=variant,
        tiling=tiling,
        interpret=bool(interpret),
        dtype=None if dtype is None else jnp.dtype(dtype),
        has_resets=resets is not None,
        has_mask=mask is not None,
    )
    _log.debug("gru_sequence_pallas: %s", st)

    bp, hp = tiling.batch_p, tiling.hidden_p
    gi_p = _pad_axis(_pad_gates(gi.astype(jnp.float32), hidden, hp), 1, bp)
    h0_p = _pad_axis(_pad_axis(h0.astype(jnp.float32), 1, hp), 0, bp)
    kernel_p = _pad_axis(_pad_gates(kernel_h.astype(jnp.float32), hidden, hp), 0, hp)
    bias_p = _pad_gates(bias_h.astype(jnp.float32), hidden, hp)[None]
    # Flags as float (T, Bp, 1): Pallas refs of bool are not portable. Padded rows: no reset,
    # valid, so they run like any row and are sliced away.
    resets_p = None if resets is None else _pad_axis(resets.astype(jnp.float32), 1, bp)[..., None]
    mask_p = None if mask is None else _pad_axis(mask.astype(jnp.float32), 1, bp, 1)[..., None]

    hs, h_last = _gru_padded(st, gi_p, h0_p, kernel_p, bias_p, resets_p, mask_p)
    return hs[:, :batch, :hidden], h_last[:batch, :hidden]


def gru_sequence_reference(
    gi: jax.Array,
    h0: jax.Array,
    kernel_h: jax.Array,
    bias_h: jax.Array,
    resets: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    variant: str = "reset_after",
    dtype=None,
) -> tuple[jax.Array, jax.Array]:
    """Plain `lax.scan` of `functional.step_from_projection` over gi: the kernel's oracle."""
    functional.check_variant(variant)
    _check_args(gi, h0, kernel_h, bias_h, resets, mask)
    hidden = kernel_h.shape[0]
    params = functional.GRUParams(
        kernel_i=jnp.zeros((0, 3 * hidden), kernel_h.dtype),  # unused: gi is given
        bias_i=jnp.zeros((3 * hidden,), bias_h.dtype),
        kernel_h=kernel_h,
        bias_h=bias_h,
    )

    def body(h, inputs):
        gi_t, reset_t, mask_t = inputs
        if reset_t is not None:
            h = jnp.where(reset_t[:, None], 0.0, h)
        h_new = functional.step_from_projection(params, h, gi_t, variant, dtype)
        if mask_t is not None:
            h_new = jnp.where(mask_t[:, None], h_new, h)
        return h_new, h_new

    h_last, hs = jax.lax.scan(body, h0.astype(jnp.float32), (gi, resets, mask))
    return hs, h_last
