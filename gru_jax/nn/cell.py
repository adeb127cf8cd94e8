"""`FusedGRUCell`: a GRU step as a Flax NNX module with the three gates fused.

The cell follows the `flax.nnx.GRUCell` contract, `cell(carry, x) -> (new_carry, y)` with y = the
new carry, so it drops into `nnx.RNN` and into any code written for Flax's cells. The equations of
both variants are in `gru_jax.nn.functional` and in the class docstring below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gru_jax.nn import functional as F
from gru_jax.nn import initializers

INITS = ("flax", "glorot")


class FusedGRUCell(nnx.Module):
    r"""GRU cell with the gates (r, z, n) fused into one input and one recurrent kernel.

    Parameters: ``kernel_i`` (E, 3H), ``bias_i`` (3H,), ``kernel_h`` (H, 3H), and for
    reset_after also ``bias_h`` (3H,).

    ``variant="reset_after"`` (cuDNN, PyTorch, Flax)::

        r  = σ(x W_ir + b_ir + h W_hr + b_hr)
        z  = σ(x W_iz + b_iz + h W_hz + b_hz)
        n  = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
        h' = (1 − z) ⊙ n + z ⊙ h

    ``variant="reset_before"`` (GRU4Rec's original, in the notation of Chung et al. 2014 and the
    GRU4Rec paper)::

        z  = σ(W_z·[h, x] + b_z),  r = σ(W_r·[h, x] + b_r)
        h̃  = tanh(W_h·[r ⊙ h, x] + b_h)
        h' = (1 − z) ⊙ h + z ⊙ h̃

    with W_h·[r ⊙ h, x] = (r ⊙ h) W_hn + x W_in and one bias per gate, ``bias_i`` = (b_r, b_z,
    b_h), as in the Theano original and the paper. (A second, recurrent bias would add outside
    every product here: the same model, with each bias learning at twice the rate.) Note the
    mirrored z convention: here z weights the candidate. Cho et al. 2014, who introduced the
    cell, write h' = z ⊙ h + (1 − z) ⊙ h̃: their z is 1 − z here, so weights ported from that
    convention need W_z and b_z negated.

    Args:
      in_features: E.
      hidden_features: H.
      variant: "reset_after" or "reset_before".
      dtype: matmul operand dtype (e.g. jnp.bfloat16); the gate arithmetic runs in float32
        and the new carry has the given carry's dtype (float32 for an integer carry).
      param_dtype: parameter dtype; also that of `initialize_carry`'s zeros, as in Flax, so
        under `nnx.RNN` a bfloat16 cell carries a bfloat16 state (`gru_jax.GRU` keeps float32).
      init: "flax" (`flax.linen.GRUCell`'s defaults: lecun-normal input kernel, an orthogonal
        recurrent kernel per gate, zero biases; `flax.nnx.GRUCell` draws one orthogonal (H, 3H)
        matrix instead) or "glorot" (GRU4Rec's: Glorot-uniform per gate block, zero biases).
      rngs: NNX random streams (the "params" stream initialises the kernels).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        variant: str = "reset_after",
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        init: str = "flax",
        rngs: nnx.Rngs,
    ):
        if in_features <= 0 or hidden_features <= 0:
            raise ValueError(
                f"in_features and hidden_features must be positive, got {in_features}, "
                f"{hidden_features}"
            )
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        for name, value in (("dtype", dtype), ("param_dtype", param_dtype)):
            # An integer dtype would round the weights to zero (and the outputs with them).
            if value is not None and not jnp.issubdtype(value, jnp.floating):
                raise TypeError(f"{name} must be a floating dtype, got {jnp.dtype(value)}")
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.variant = F.check_variant(variant)
        self.dtype = dtype
        self.param_dtype = param_dtype
        key_i, key_h = rngs.params(), rngs.params()
        shape_i, shape_h = (
            (in_features, 3 * hidden_features),
            (hidden_features, 3 * hidden_features),
        )
        # Drawn in float32, then cast: the orthogonal init's QR has no bfloat16 kernel.
        f32 = jnp.float32
        if init == "flax":
            kernel_i = initializers.lecun_normal(key_i, shape_i, f32)
            kernel_h = initializers.per_gate(initializers.orthogonal)(key_h, shape_h, f32)
        else:
            kernel_i = initializers.per_gate(initializers.glorot_uniform)(key_i, shape_i, f32)
            kernel_h = initializers.per_gate(initializers.glorot_uniform)(key_h, shape_h, f32)
        kernel_i, kernel_h = kernel_i.astype(param_dtype), kernel_h.astype(param_dtype)
        self.kernel_i = nnx.Param(kernel_i)
        self.bias_i = nnx.Param(jnp.zeros((3 * hidden_features,), param_dtype))
        self.kernel_h = nnx.Param(kernel_h)
        if self.variant == "reset_after":  # b_hn sits inside r ⊙ (h W_hn + b_hn)
            self.bias_h = nnx.Param(jnp.zeros((3 * hidden_features,), param_dtype))

    @property
    def params(self) -> F.GRUParams:
        """The parameters as plain arrays, for the functional core (whose recurrent bias is
        zero in the reset_before form)."""
        return F.GRUParams(
            self.kernel_i[...], self.bias_i[...], self.kernel_h[...], self.recurrent_bias
        )

    @property
    def recurrent_bias(self) -> jax.Array:
        """``bias_h``, or zeros for reset_before, which has none."""
        if self.variant == "reset_after":
            return self.bias_h[...]
        return jnp.zeros((3 * self.hidden_features,), self.param_dtype)

    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step: carry (..., H), inputs (..., E) -> (new_carry, new_carry)."""
        if inputs.shape[-1] != self.in_features:
            raise ValueError(
                f"inputs have {inputs.shape[-1]} features, the cell expects {self.in_features}"
            )
        if carry.shape[-1] != self.hidden_features:
            raise ValueError(
                f"carry has {carry.shape[-1]} features, the cell expects {self.hidden_features}"
            )
        F.check_real(inputs, "inputs")
        F.check_real(carry, "carry")
        # Leading (batch) axes broadcast, as in Flax's cells: e.g. a learned (H,) initial state
        # shared by every row.
        try:
            lead = jnp.broadcast_shapes(carry.shape[:-1], inputs.shape[:-1])
        except ValueError:
            raise ValueError(
                f"carry {tuple(carry.shape)} and inputs {tuple(inputs.shape)} have leading "
                "(batch) axes that do not broadcast"
            ) from None
        carry = jnp.broadcast_to(carry, (*lead, self.hidden_features))
        inputs = jnp.broadcast_to(inputs, (*lead, self.in_features))
        new_h = F.step(self.params, carry.astype(jnp.float32), inputs, self.variant, self.dtype)
        floating = jnp.issubdtype(carry.dtype, jnp.floating)
        new_h = new_h.astype(carry.dtype if floating else jnp.float32)
        return new_h, new_h

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None) -> jax.Array:
        """Zeros of shape input_shape[:-1] + (H,), like `nnx.GRUCell.initialize_carry`."""
        del rngs  # The carry starts at zero; kept for signature compatibility with Flax.
        return jnp.zeros((*input_shape[:-1], self.hidden_features), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1  # Read by `nnx.RNN`.

    # ----------------------------------------------------------------------------------------
    # Converters from Flax's cells.
    # ----------------------------------------------------------------------------------------

    @classmethod
    def from_flax(cls, cell: nnx.GRUCell, *, rngs: nnx.Rngs | None = None) -> FusedGRUCell:
        """The fused cell computing what `cell` (a `flax.nnx.GRUCell`) computes.

        nnx's cell is already fused (dense_i: E→3H with bias, dense_h: H→3H without bias, gates
        r, z, n), but has no b_hn (google/flax#5594), so bias_h is zero here.
        """
        _check_default_activations(cell)
        kernel_i = cell.dense_i.kernel[...]
        in_features, hidden3 = kernel_i.shape
        hidden = hidden3 // 3
        bias_i = cell.dense_i.bias[...] if cell.dense_i.bias is not None else None
        bias_h = cell.dense_h.bias[...] if cell.dense_h.bias is not None else None
        return cls._from_arrays(
            kernel_i,
            _zeros_if_none(bias_i, hidden3, kernel_i.dtype),
            cell.dense_h.kernel[...],
            _zeros_if_none(bias_h, hidden3, kernel_i.dtype),
            in_features,
            hidden,
            rngs,
            dtype=cell.dtype,
        )

    @classmethod
    def from_linen(
        cls, params: Mapping[str, Any], *, dtype: Any = None, rngs: nnx.Rngs | None = None
    ) -> FusedGRUCell:
        """The fused cell computing what a `flax.linen.GRUCell` with `params` computes.

        Linen keeps six Dense layers: ir, iz, in (kernel + bias), hr, hz (kernel), hn (kernel +
        bias). Accepts the cell's variables or their "params" collection. ``dtype``: the linen
        cell's compute dtype (a parameter dict does not carry it).
        """
        if "params" in params:
            params = params["params"]
        missing = [name for name in ("ir", "iz", "in", "hr", "hz", "hn") if name not in params]
        if missing:
            raise ValueError(f"not a flax.linen.GRUCell parameter dict: missing {missing}")
        kernel_i = jnp.concatenate([params[g]["kernel"] for g in ("ir", "iz", "in")], axis=-1)
        kernel_h = jnp.concatenate([params[g]["kernel"] for g in ("hr", "hz", "hn")], axis=-1)
        in_features, hidden = params["ir"]["kernel"].shape
        zeros = jnp.zeros((hidden,), kernel_i.dtype)
        bias_i = jnp.concatenate([params[g]["bias"] for g in ("ir", "iz", "in")])
        bias_h = jnp.concatenate([zeros, zeros, params["hn"]["bias"]])
        return cls._from_arrays(
            kernel_i, bias_i, kernel_h, bias_h, in_features, hidden, rngs, dtype=dtype
        )

    @classmethod
    def _from_arrays(cls, kernel_i, bias_i, kernel_h, bias_h, in_features, hidden, rngs, dtype):
        cell = cls(
            in_features,
            hidden,
            variant="reset_after",  # Flax's cells are the reset-after form.
            dtype=dtype,
            param_dtype=kernel_i.dtype,
            rngs=rngs if rngs is not None else nnx.Rngs(0),
        )
        cell.kernel_i[...] = kernel_i
        cell.bias_i[...] = bias_i
        cell.kernel_h[...] = kernel_h
        cell.bias_h[...] = bias_h
        return cell


def _zeros_if_none(bias, size, dtype):
    return jnp.zeros((size,), dtype) if bias is None else bias


def _check_default_activations(cell: nnx.GRUCell) -> None:
    if cell.gate_fn is not jax.nn.sigmoid or cell.activation_fn is not jnp.tanh:
        raise ValueError(
            "FusedGRUCell.from_flax supports only the default gate_fn=sigmoid and "
            "activation_fn=tanh"
        )
