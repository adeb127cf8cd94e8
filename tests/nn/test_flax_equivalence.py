"""The fused cell and layer against Flax's own GRU cells (nnx and linen), forward and gradients.

Flax's cells are the independent reference: its parameters are converted with `from_flax` /
`from_linen`, and the gradients are mapped back gate by gate, so a mix-up of gate order, bias
placement or the reset-after form shows up as a mismatch.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gru_jax import GRU, FusedGRUCell

SHAPES = [(1, 1, 3, 4), (3, 7, 5, 6), (8, 20, 16, 32), (5, 4, 12, 7)]  # (B, T, E, H)
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _inputs(batch, steps, features, hidden, time_major, seed=0):
    kx, kh, kw, kc = jax.random.split(jax.random.key(seed), 4)
    shape = (steps, batch, features) if time_major else (batch, steps, features)
    x = jax.random.normal(kx, shape)
    h0 = 0.5 * jax.random.normal(kh, (batch, hidden))
    out_shape = (steps, batch, hidden) if time_major else (batch, steps, hidden)
    # Random weights on outputs and final carry make every output element matter for the grads.
    w_out = jax.random.normal(kw, out_shape)
    w_carry = jax.random.normal(kc, (batch, hidden))
    return x, h0, w_out, w_carry


def _objective(outputs, carry, w_out, w_carry):
    return jnp.sum(outputs * w_out) + jnp.sum(carry * w_carry)


def _fused_layer(cell: FusedGRUCell, time_major: bool) -> GRU:
    layer = GRU(cell.in_features, cell.hidden_features, time_major=time_major, rngs=nnx.Rngs(1))
    for name in ("kernel_i", "bias_i", "kernel_h", "bias_h"):
        getattr(layer.cells[0], name)[...] = getattr(cell, name)[...]
    return layer


def _fused_value_and_grads(layer, x, h0, w_out, w_carry):
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def f(params, x, h0):
        outputs, carry = nnx.merge(graphdef, params, rest)(x, initial_carry=h0)
        return _objective(outputs, carry[0], w_out, w_carry), (outputs, carry[0])

    (_, aux), grads = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(params, x, h0)
    g_params = nnx.to_pure_dict(grads[0])["cells"][0]
    return aux, g_params, grads[1], grads[2]


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_nnx_gru_cell_with_nnx_rnn(shape, time_major):
    _batch, _steps, features, hidden = shape
    x, h0, w_out, w_carry = _inputs(*shape, time_major)
    flax_cell = nnx.GRUCell(features, hidden, rngs=nnx.Rngs(0))
    # Non-zero input biases, so their placement is checked too (Flax initialises them to 0).
    bias = flax_cell.dense_i.bias
    bias[...] = 0.3 * jax.random.normal(jax.random.key(7), bias.shape)
    rnn = nnx.RNN(flax_cell, time_major=time_major)
    graphdef, params, rest = nnx.split(rnn, nnx.Param, ...)

    def f(params, x, h0):
        carry, outputs = nnx.merge(graphdef, params, rest)(x, initial_carry=h0, return_carry=True)
        return _objective(outputs, carry, w_out, w_carry), (outputs, carry)

    (_, (want_out, want_carry)), grads = jax.value_and_grad(f, (0, 1, 2), has_aux=True)(
        params, x, h0
    )
    want = nnx.to_pure_dict(grads[0])["cell"]

    layer = _fused_layer(FusedGRUCell.from_flax(flax_cell), time_major)
    (out, carry), got, g_x, g_h0 = _fused_value_and_grads(layer, x, h0, w_out, w_carry)

    np.testing.assert_allclose(out, want_out, **TOL)
    np.testing.assert_allclose(carry, want_carry, **TOL)
    np.testing.assert_allclose(g_x, grads[1], **TOL)
    np.testing.assert_allclose(g_h0, grads[2], **TOL)
    np.testing.assert_allclose(got["kernel_i"], want["dense_i"]["kernel"], **TOL)
    np.testing.assert_allclose(got["bias_i"], want["dense_i"]["bias"], **TOL)
    np.testing.assert_allclose(got["kernel_h"], want["dense_h"]["kernel"], **TOL)
    # nnx has no b_hn; the r and z parts of bias_h enter exactly where bias_i's do.
    np.testing.assert_allclose(
        got["bias_h"][: 2 * hidden], want["dense_i"]["bias"][: 2 * hidden], **TOL
    )


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_linen_gru_cell_with_linen_rnn(shape, time_major):
    _batch, _steps, _features, hidden = shape
    x, h0, w_out, w_carry = _inputs(*shape, time_major, seed=3)
    rnn = nn.RNN(nn.GRUCell(features=hidden), time_major=time_major, return_carry=True)
    variables = rnn.init(jax.random.key(7), x)
    # Linen's biases start at zero; randomise them so bias placement is tested too.
    variables = jax.tree_util.tree_map_with_path(
        lambda path, v: (
            v + 0.1 * jax.random.normal(jax.random.key(len(str(path))), v.shape)
            if "bias" in str(path)
            else v
        ),
        variables,
    )

    def f(variables, x, h0):
        carry, outputs = rnn.apply(variables, x, initial_carry=h0)
        return _objective(outputs, carry, w_out, w_carry), (outputs, carry)

    (_, (want_out, want_carry)), grads = jax.value_and_grad(f, (0, 1, 2), has_aux=True)(
        variables, x, h0
    )
    want = grads[0]["params"]["cell"]

    cell = FusedGRUCell.from_linen(variables["params"]["cell"])
    layer = _fused_layer(cell, time_major)
    (out, carry), got, g_x, g_h0 = _fused_value_and_grads(layer, x, h0, w_out, w_carry)

    np.testing.assert_allclose(out, want_out, **TOL)
    np.testing.assert_allclose(carry, want_carry, **TOL)
    np.testing.assert_allclose(g_x, grads[1], **TOL)
    np.testing.assert_allclose(g_h0, grads[2], **TOL)
    cat = lambda names, key: jnp.concatenate([want[n][key] for n in names], axis=-1)
    np.testing.assert_allclose(got["kernel_i"], cat(("ir", "iz", "in"), "kernel"), **TOL)
    np.testing.assert_allclose(got["bias_i"], cat(("ir", "iz", "in"), "bias"), **TOL)
    np.testing.assert_allclose(got["kernel_h"], cat(("hr", "hz", "hn"), "kernel"), **TOL)
    np.testing.assert_allclose(got["bias_h"][2 * hidden :], want["hn"]["bias"], **TOL)


def test_cell_step_drops_into_nnx_rnn():
    """The fused cell honours the Flax cell contract, so nnx.RNN can drive it directly."""
    flax_cell = nnx.GRUCell(5, 6, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (3, 4, 5))
    want = nnx.RNN(flax_cell)(x)
    got = nnx.RNN(FusedGRUCell.from_flax(flax_cell))(x)
    np.testing.assert_allclose(got, want, **TOL)


def test_shared_initial_state_broadcasts_over_rows_as_in_flax():
    # A learned (H,) initial state that every row starts from, as Flax's cells accept it.
    flax_cell = nnx.GRUCell(4, 5, rngs=nnx.Rngs(0))
    h0 = jnp.linspace(-0.5, 0.5, 5)
    x = jax.random.normal(jax.random.key(1), (8, 4))
    want, _ = flax_cell(h0, x)
    got, _ = FusedGRUCell.from_flax(flax_cell)(h0, x)
    assert got.shape == want.shape == (8, 5)
    np.testing.assert_allclose(got, want, **TOL)


def test_from_linen_rejects_other_dicts():
    with pytest.raises(ValueError, match="missing"):
        FusedGRUCell.from_linen({"params": {"ir": {}}})


def test_converters_keep_the_compute_dtype():
    flax_cell = nnx.GRUCell(3, 4, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    linen_params = nn.GRUCell(4).init(jax.random.key(0), jnp.zeros((1, 4)), jnp.zeros((1, 3)))

    fused = FusedGRUCell.from_flax(flax_cell)
    from_linen = FusedGRUCell.from_linen(linen_params, dtype=jnp.bfloat16)

    assert fused.dtype == from_linen.dtype == jnp.bfloat16
    h, x = jnp.zeros((2, 4)), jnp.ones((2, 3))
    want, _ = flax_cell(h, x)
    got, _ = fused(h, x)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=2e-2)
