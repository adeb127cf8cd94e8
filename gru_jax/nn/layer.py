"""`GRU`: a multi-layer GRU over time built from `FusedGRUCell` parameters.

Three implementations of the recurrence compute the same thing:

- ``"xla"``: `functional.sequence`, a jitted `lax.scan` with one fused (B, H)×(H, 3H) recurrent
  matmul per step; the input projection of all T steps is optionally hoisted out of the loop.
- ``"pallas"``: `gru_jax.kernels.gru_sequence_pallas`, the whole recurrence in one kernel
  launch (interpret mode on CPU, for tests only).
- ``"reference"``: `reference.reference_sequence`, a Python loop, for tests.

``"auto"`` is the XLA path with the arrangement measured fastest on the platform (see
`default_hoist`); benchmarks/results/README.md holds the measurements.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gru_jax.nn import functional as F
from gru_jax.nn.cell import FusedGRUCell
from gru_jax.nn.reference import reference_sequence

IMPLS = ("auto", "xla", "pallas", "reference")


def default_hoist(platform: str | None = None) -> bool:
    """Whether to hoist the input projection out of the scan on `platform`.

    Measured (benchmarks/cell.py): on XLA:CPU hoisting makes the forward 30–50% slower, because
    the loop's gate fusion then reads gate slices of the scanned projection and XLA:CPU runs
    that fusion several times slower (benchmarks/results/README.md). On GPUs/TPUs one large
    matmul keeps the matrix units busy (as cuDNN does); chosen from published behaviour there,
    not yet measured by this project.
    """
    return (platform or jax.default_backend()) != "cpu"


@functools.partial(jax.jit, static_argnames=("variant", "hoist", "unroll", "dtype"))
def _xla_sequence(params, xs, h0, resets, mask, *, variant, hoist, unroll, dtype):
    return F.sequence(
        params, xs, h0, resets, mask, variant=variant, hoist=hoist, unroll=unroll, dtype=dtype
    )


class GRU(nnx.Module):
    """A stack of GRU layers run over time.

    Call: ``layer(x, *, initial_carry=None, resets=None, mask=None, deterministic=None)
    -> (outputs, final_carry)``

    Args of the call:
      x: (B, T, E) inputs, or (T, B, E) when ``time_major``.
      initial_carry: (L, B, H) (or (B, H) for one layer); zeros when None.
      resets: (B, T) bool ((T, B) when time_major); True zeroes the row's carry *before* step t,
        i.e. a new session starts in that row at step t.
      mask: (B, T) bool ((T, B) when time_major); False marks a padded step whose carry passes
        through unchanged (its output is the carried state). The inputs of padded steps are
        never read, so NaN padding leaves outputs and gradients finite. A reset at a padded
        step still applies: the zeroed carry passes through.
      deterministic: disables dropout between layers when True (default: the module's mode,
        see `nnx.Module.eval` / `train`).

    Returns:
      outputs (B, T, H) ((T, B, H) when time_major), the last layer's state after every step, in
      the compute ``dtype`` (float32 when it is None); final_carry (L, B, H) in float32.

    Constructor args:
      in_features, hidden_features, num_layers: E, H, L.
      variant: "reset_after" or "reset_before" (see `FusedGRUCell`).
      dropout: drop rate on each layer's outputs before the next layer (not after the last).
      time_major: layout of x, resets, mask and outputs.
      impl: "auto", "xla", "pallas" or "reference".
      hoist: hoist the input projection out of the loop (None: `default_hoist()`).
      unroll: `lax.scan` unroll factor.
      dtype, param_dtype, init: as for `FusedGRUCell`.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        num_layers: int = 1,
        *,
        variant: str = "reset_after",
        dropout: float = 0.0,
        time_major: bool = False,
        impl: str = "auto",
        hoist: bool | None = None,
        unroll: int = 1,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        init: str = "flax",
        rngs: nnx.Rngs,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; expected one of {IMPLS}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout is a drop rate in [0, 1), got {dropout}")
        if unroll < 1:
            raise ValueError(f"unroll must be >= 1, got {unroll}")
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.num_layers = num_layers
        self.variant = F.check_variant(variant)
        self.time_major = time_major
        self.impl = impl
        self.hoist = hoist
        self.unroll = unroll
        self.dtype = dtype
        self.cells = nnx.List(
            [
                FusedGRUCell(
                    in_features if layer == 0 else hidden_features,
                    hidden_features,
                    variant=variant,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    init=init,
                    rngs=rngs,
                )
                for layer in range(num_layers)
            ]
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        *,
        initial_carry: jax.Array | None = None,
        resets: jax.Array | None = None,
        mask: jax.Array | None = None,
        deterministic: bool | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        x = jnp.asarray(x)  # as resets, mask and initial_carry are: a list or NumPy array works
        self._check_inputs(x)
        xs = x if self.time_major else jnp.swapaxes(x, 0, 1)
        steps, batch = xs.shape[:2]
        resets = self._time_major_flags("resets", resets, steps, batch)
        mask = self._time_major_flags("mask", mask, steps, batch)
        h0s = self._initial_carry(initial_carry, xs)
        if mask is not None:
            # Padding may hold anything; the backward pass multiplies it by zero, and 0·NaN is
            # NaN, so padded inputs are zeroed here, where every impl sees it.
            xs = jnp.where(mask[..., None], xs, jnp.zeros((), xs.dtype))

        finals = []
        for layer, cell in enumerate(self.cells):
            if layer > 0:
                xs = self.dropout(xs, deterministic=deterministic)
            hs, h_last = self._run(cell, xs, h0s[layer], resets, mask)
            finals.append(h_last)
            xs = hs.astype(cell.dtype) if cell.dtype is not None else hs
        outputs = xs if self.time_major else jnp.swapaxes(xs, 0, 1)
        return outputs, jnp.stack(finals)

    def _run(self, cell, xs, h0, resets, mask):
        # The cell's own form and dtype: a cell swapped in (e.g. `FusedGRUCell.from_flax`) may
        # differ from the ones the layer was built with.
        params, variant, dtype = cell.params, cell.variant, cell.dtype
        if self.impl == "reference":
            return reference_sequence(params, xs, h0, resets, mask, variant=variant, dtype=dtype)
        if self.impl == "pallas":
            from gru_jax.kernels import gru_sequence_pallas  # Imported lazily: optional path.

            gi = F.input_projection(params, xs, dtype)
            return gru_sequence_pallas(
                gi, h0, params.kernel_h, params.bias_h, resets, mask, variant=variant, dtype=dtype
            )
        hoist = default_hoist() if self.hoist is None else self.hoist
        return _xla_sequence(
            params, xs, h0, resets, mask,
            variant=variant, hoist=hoist, unroll=self.unroll, dtype=dtype,
        )  # fmt: skip

    # ------------------------------------------------------------------------------ validation

    def _check_inputs(self, x: jax.Array) -> None:
        """Checks x as the caller gave it, so messages show the caller's layout."""
        layout = "(T, B, E)" if self.time_major else "(B, T, E)"
        if x.ndim != 3:
            raise ValueError(f"x must have shape {layout}, got shape {tuple(x.shape)}")
        if 0 in x.shape[:2]:
            raise ValueError(f"x of shape {layout} = {tuple(x.shape)} has no time steps or no rows")
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"x has {x.shape[-1]} features in its last axis, the layer expects "
                f"in_features={self.in_features}"
            )
        F.check_real(x, "x")

    def _time_major_flags(self, name, flags, steps, batch):
        if flags is None:
            return None
        flags = jnp.asarray(flags)
        expected = (steps, batch) if self.time_major else (batch, steps)
        layout = "(T, B)" if self.time_major else "(B, T)"
        if flags.shape != expected:
            raise ValueError(
                f"{name} must have shape {layout} = {expected}, got {tuple(flags.shape)}"
            )
        if flags.dtype != jnp.bool_:
            raise TypeError(f"{name} must be a boolean array, got dtype {flags.dtype}")
        return flags if self.time_major else flags.T

    def _initial_carry(self, carry, xs):
        shape = (self.num_layers, xs.shape[1], self.hidden_features)
        if carry is None:
            # Zeros made from x's rows, so they carry x's batch sharding (explicit sharding)
            # and its device variance (inside shard_map), as the scan's output carry will.
            rows = jnp.zeros_like(xs[0, :, :1], jnp.float32)
            return jnp.broadcast_to(rows[None], shape)
        carry = jnp.asarray(carry)
        F.check_real(carry, "initial_carry")
        given = tuple(carry.shape)
        if carry.ndim == 2 and self.num_layers == 1:
            carry = carry[None]
        if carry.shape != shape:
            one = f" or (B, H) = {shape[1:]}" if self.num_layers == 1 else ""
            raise ValueError(f"initial_carry must have shape (L, B, H) = {shape}{one}, got {given}")
        return carry.astype(jnp.float32)
