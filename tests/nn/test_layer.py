"""`gru_jax.GRU` and `FusedGRUCell` against NumPy transcriptions and against themselves run
session by session."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gru_jax import GRU, FusedGRUCell
from gru_jax.nn import functional, initializers
from gru_jax.nn.layer import _xla_sequence

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_reset_before(kernel_i, bias, kernel_h, xs, h0):
    """The original GRU paper's equations, with W_·[h, x] split into its h and x parts:
    z = σ(W_z·[h,x] + b_z), r = σ(W_r·[h,x] + b_r), h̃ = tanh(W_h·[r⊙h, x] + b_h),
    h' = (1 − z)⊙h + z⊙h̃.   xs: (B, T, E) -> (B, T, H)."""
    hidden = h0.shape[-1]
    split = lambda a: (a[..., :hidden], a[..., hidden : 2 * hidden], a[..., 2 * hidden :])
    wx_r, wx_z, wx_h = split(kernel_i)
    wh_r, wh_z, wh_h = split(kernel_h)
    b_r, b_z, b_h = split(bias)  # one bias per gate
    h, outputs = h0, []
    for t in range(xs.shape[1]):
        x = xs[:, t]
        z = _sigmoid(h @ wh_z + x @ wx_z + b_z)
        r = _sigmoid(h @ wh_r + x @ wx_r + b_r)
        h_tilde = np.tanh((r * h) @ wh_h + x @ wx_h + b_h)
        h = (1 - z) * h + z * h_tilde
        outputs.append(h)
    return np.stack(outputs, axis=1)


def _randomise(layer, seed=0, scale=0.3):
    """Non-zero biases everywhere, so every bias term is exercised."""
    keys = iter(jax.random.split(jax.random.key(seed), 4 * len(layer.cells)))
    for cell in layer.cells:
        for name in ("bias_i", "bias_h") if cell.variant == "reset_after" else ("bias_i",):
            param = getattr(cell, name)
            param[...] = scale * jax.random.normal(next(keys), param.shape)


@pytest.mark.parametrize("impl", ["xla", "reference"])
@pytest.mark.parametrize("hoist", [False, True])
def test_reset_before_matches_numpy(impl, hoist):
    layer = GRU(5, 7, variant="reset_before", impl=impl, hoist=hoist, rngs=nnx.Rngs(0))
    _randomise(layer)
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, 6, 5)), np.float64)
    h0 = np.asarray(0.5 * jax.random.normal(jax.random.key(2), (3, 7)), np.float64)
    cell = layer.cells[0]
    weights = (cell.kernel_i[...], cell.bias_i[...], cell.kernel_h[...])
    want = numpy_reset_before(*(np.asarray(p, np.float64) for p in weights), x, h0)
    out, carry = layer(jnp.asarray(x, jnp.float32), initial_carry=jnp.asarray(h0, jnp.float32))
    np.testing.assert_allclose(out, want, **TOL)
    np.testing.assert_allclose(carry[0], want[:, -1], **TOL)


def test_reset_before_has_one_bias_per_gate_and_reset_after_two():
    """The paper's (and the Theano original's) form has one bias per gate; reset_after keeps
    cuDNN/PyTorch's second, recurrent bias, whose candidate part sits inside r ⊙ (·)."""

    def shapes(cell):
        return {".".join(map(str, k)): v.shape for k, v in nnx.state(cell, nnx.Param).flat_state()}

    before = FusedGRUCell(4, 3, variant="reset_before", rngs=nnx.Rngs(0))
    after = FusedGRUCell(4, 3, variant="reset_after", rngs=nnx.Rngs(0))
    assert shapes(before) == {"kernel_i": (4, 9), "bias_i": (9,), "kernel_h": (3, 9)}
    assert shapes(after) == {**shapes(before), "bias_h": (9,)}


def test_reset_before_cell_step_matches_numpy():
    cell = FusedGRUCell(4, 3, variant="reset_before", init="glorot", rngs=nnx.Rngs(0))
    cell.bias_i[...] = jnp.arange(9.0) / 10
    x = np.random.default_rng(0).normal(size=(2, 4))
    h = np.random.default_rng(1).normal(size=(2, 3))
    weights = (cell.kernel_i[...], cell.bias_i[...], cell.kernel_h[...])
    want = numpy_reset_before(*(np.asarray(p, np.float64) for p in weights), x[:, None], h)
    new_h, y = cell(jnp.asarray(h, jnp.float32), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(new_h, want[:, 0], **TOL)
    np.testing.assert_array_equal(new_h, y)


@pytest.mark.parametrize("variant", ["reset_after", "reset_before"])
@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_resets_equal_separate_sessions(variant, impl):
    """Row 0 runs session A (3 events) then B (4); row 1 runs C (7). Each must equal the session
    run alone from a zero carry, although the batch starts from a non-zero initial carry."""
    layer = GRU(4, 5, num_layers=2, variant=variant, impl=impl, rngs=nnx.Rngs(0))
    _randomise(layer)
    x = jax.random.normal(jax.random.key(3), (2, 7, 4))
    resets = np.zeros((2, 7), bool)
    resets[0, [0, 3]] = True
    resets[1, 0] = True
    h0 = jnp.ones((2, 2, 5))
    out, carry = layer(x, initial_carry=h0, resets=jnp.asarray(resets))

    alone = lambda seq: layer(seq[None])
    out_a, _ = alone(x[0, :3])
    out_b, carry_b = alone(x[0, 3:])
    out_c, carry_c = alone(x[1])
    np.testing.assert_allclose(out[0, :3], out_a[0], **TOL)
    np.testing.assert_allclose(out[0, 3:], out_b[0], **TOL)
    np.testing.assert_allclose(out[1], out_c[0], **TOL)
    np.testing.assert_allclose(carry[:, 0], carry_b[:, 0], **TOL)
    np.testing.assert_allclose(carry[:, 1], carry_c[:, 0], **TOL)


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_mask_passes_carry_through(impl):
    """Masked steps leave the carry unchanged: a row with steps [v, -, v, -] equals the two valid
    steps run back to back, and its outputs at masked steps repeat the carried state."""
    layer = GRU(3, 4, num_layers=2, impl=impl, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(4), (2, 4, 3))
    mask = jnp.array([[True, False, True, False], [True, True, True, True]])
    out, carry = layer(x, mask=mask)
    want, want_carry = layer(x[:1, jnp.array([0, 2])])
    np.testing.assert_allclose(out[0, 0], want[0, 0], **TOL)
    np.testing.assert_array_equal(out[0, 1], out[0, 0])
    np.testing.assert_allclose(out[0, 2], want[0, 1], **TOL)
    np.testing.assert_array_equal(out[0, 3], out[0, 2])
    np.testing.assert_allclose(carry[:, 0], want_carry[:, 0], **TOL)
    full, _ = layer(x[1:])
    np.testing.assert_allclose(out[1], full[0], **TOL)


@pytest.mark.parametrize(
    "impl, hoist", [("xla", False), ("xla", True), ("reference", None), ("pallas", None)]
)
def test_nan_padding_leaves_outputs_and_gradients_finite(impl, hoist):
    """Padded inputs are never read: NaN there gives the outputs and every gradient of the same
    inputs padded with zeros (whose values the NumPy and Flax tests pin), in every impl."""
    layer = GRU(3, 5, num_layers=2, impl=impl, hoist=hoist, rngs=nnx.Rngs(0))
    _randomise(layer)
    graph, state, rest = nnx.split(layer, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(8), (2, 4, 3))
    mask = jnp.array([[True, True, False, False], [True, False, True, True]])
    resets = jnp.array([[False, False, False, True], [False, False, True, False]])
    padded = ~mask[..., None]

    def loss(state, x):
        out, carry = nnx.merge(graph, state, rest)(x, resets=resets, mask=mask)
        return jnp.sum(out**2) + jnp.sum(carry**3)

    want = jax.value_and_grad(loss, argnums=(0, 1))(state, jnp.where(padded, 0.0, x))
    got = jax.value_and_grad(loss, argnums=(0, 1))(state, jnp.where(padded, jnp.nan, x))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, **TOL)
    np.testing.assert_array_equal(np.asarray(got[1][1])[np.asarray(padded[..., 0])], 0.0)


@pytest.mark.parametrize("variant", ["reset_after", "reset_before"])
def test_xla_arrangements_agree_with_reference(variant):
    x = jax.random.normal(jax.random.key(5), (6, 9, 8))
    resets = jax.random.bernoulli(jax.random.key(6), 0.2, (6, 9))
    mask = jax.random.bernoulli(jax.random.key(7), 0.8, (6, 9))
    ref = GRU(8, 10, 2, variant=variant, impl="reference", rngs=nnx.Rngs(0))
    _randomise(ref)
    want = ref(x, resets=resets, mask=mask)
    for hoist in (False, True):
        for unroll in (1, 3):
            layer = GRU(8, 10, 2, variant=variant, hoist=hoist, unroll=unroll, rngs=nnx.Rngs(0))
            _randomise(layer)
            got = layer(x, resets=resets, mask=mask)
            jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), got, want)


def test_dropout_between_layers_only_in_training():
    layer = GRU(4, 6, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(8), (3, 5, 4))
    eval_out, _ = layer(x, deterministic=True)
    train_out, _ = layer(x, deterministic=False)
    assert not np.allclose(eval_out, train_out)
    # Without dropout the stack equals its two layers run one after the other.
    first = GRU(4, 6, rngs=nnx.Rngs(1))
    second = GRU(6, 6, rngs=nnx.Rngs(1))
    for dst, src in ((first.cells[0], layer.cells[0]), (second.cells[0], layer.cells[1])):
        for name in ("kernel_i", "bias_i", "kernel_h", "bias_h"):
            getattr(dst, name)[...] = getattr(src, name)[...]
    np.testing.assert_allclose(eval_out, second(first(x)[0])[0], **TOL)


def test_jitted_layer_does_not_recompile():
    layer = GRU(4, 6, rngs=nnx.Rngs(0))
    traces = []

    @nnx.jit
    def run(layer, x, resets):
        traces.append(1)
        return layer(x, resets=resets)

    x = jnp.ones((2, 5, 4))
    resets = jnp.zeros((2, 5), bool)
    run(layer, x, resets)
    run(layer, x + 1, resets)
    assert len(traces) == 1
    before = _xla_sequence._cache_size()
    layer(x, resets=resets)
    layer(x * 2, resets=~resets)
    assert _xla_sequence._cache_size() == before + 1


def test_bfloat16_compute_within_tolerance():
    """bfloat16 matmul operands, float32 carry: stated tolerance 3e-2 absolute over 20 steps."""
    x = jax.random.normal(jax.random.key(9), (16, 20, 32))
    f32 = GRU(32, 64, rngs=nnx.Rngs(0))
    bf16 = GRU(32, 64, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    want, want_carry = f32(x)
    got, carry = bf16(x)
    assert got.dtype == jnp.bfloat16 and carry.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=3e-2)
    np.testing.assert_allclose(carry, want_carry, atol=3e-2)
    assert np.abs(np.asarray(got, np.float32) - want).max() > 0  # bfloat16 really used


@pytest.mark.parametrize(
    "make, call, message",
    [
        ({}, {"x": jnp.ones((2, 3))}, r"shape \(B, T, E\)"),
        ({}, {"x": jnp.ones((2, 3, 5))}, "in_features=4"),
        ({}, {"x": jnp.ones((2, 0, 4))}, r"\(B, T, E\) = \(2, 0, 4\) has no time steps"),
        ({"impl": "reference"}, {"x": jnp.ones((2, 0, 4))}, "no time steps or no rows"),
        ({"impl": "pallas"}, {"x": jnp.ones((0, 3, 4))}, "no time steps or no rows"),
        ({}, {"resets": jnp.zeros((3, 2), bool)}, r"resets must have shape \(B, T\)"),
        ({}, {"resets": jnp.zeros((2, 3), jnp.int32)}, "resets must be a boolean"),
        ({}, {"mask": jnp.zeros((2, 3))}, "mask must be a boolean"),
        (
            {"time_major": True},
            {"mask": jnp.ones((3, 2), bool)},
            r"mask must have shape \(T, B\)",
        ),
        ({}, {"initial_carry": jnp.zeros((3, 2, 6))}, "initial_carry must have shape"),
        # the shape as given, not as reshaped for one layer
        ({}, {"initial_carry": jnp.zeros((3, 2))}, r"or \(B, H\) = \(2, 6\), got \(3, 2\)$"),
    ],
)
def test_bad_call_arguments_say_what_is_wrong(make, call, message):
    layer = GRU(4, 6, rngs=nnx.Rngs(0), **make)
    x = call.pop("x", jnp.ones((2, 3, 4)))
    with pytest.raises((ValueError, TypeError), match=message):
        layer(x, **call)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "lstm"}, "unknown GRU variant 'lstm'"),
        ({"impl": "cuda"}, "unknown impl 'cuda'"),
        ({"num_layers": 0}, "num_layers must be >= 1"),
        ({"dropout": 1.5}, "drop rate"),
        ({"init": "he"}, "unknown init 'he'"),
    ],
)
def test_bad_constructor_arguments_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GRU(4, 6, rngs=nnx.Rngs(0), **kwargs)


@pytest.mark.parametrize("kwargs", [{"dtype": jnp.int8}, {"param_dtype": jnp.int32}])
def test_integer_dtypes_are_refused(kwargs):
    # An integer matmul or parameter dtype would round the weights to zero.
    name = next(iter(kwargs))
    with pytest.raises(TypeError, match=f"{name} must be a floating dtype"):
        GRU(4, 6, rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises(TypeError, match=f"{name} must be a floating dtype"):
        FusedGRUCell(4, 6, rngs=nnx.Rngs(0), **kwargs)


def test_inputs_given_as_nested_lists():
    layer = GRU(2, 3, rngs=nnx.Rngs(0))
    x = np.linspace(-1, 1, 12).reshape(2, 3, 2)
    out, carry = layer(x.tolist(), resets=[[True, False, True], [False, True, False]])
    want, want_carry = layer(
        jnp.asarray(x, jnp.float32), resets=jnp.asarray([[1, 0, 1], [0, 1, 0]], bool)
    )
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(carry, want_carry)


def test_cell_rejects_wrong_feature_sizes():
    cell = FusedGRUCell(4, 6, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="expects 4"):
        cell(jnp.zeros((2, 6)), jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match="expects 6"):
        cell(jnp.zeros((2, 5)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"carry \(3, 6\) and inputs \(2, 4\) have leading"):
        cell(jnp.zeros((3, 6)), jnp.zeros((2, 4)))
    # An integer carry is a float32 state from the first step on, as in nnx.GRUCell.
    new, _ = cell(jnp.zeros((2, 6), jnp.int32), jnp.ones((2, 4)))
    flax_new, _ = nnx.GRUCell(4, 6, rngs=nnx.Rngs(0))(
        jnp.zeros((2, 6), jnp.int32), jnp.ones((2, 4))
    )
    assert new.dtype == flax_new.dtype == jnp.float32 and np.abs(new).max() > 0


def test_default_initialisation_matches_flax_statistics():
    """Input kernel lecun-normal (std 1/sqrt(E)), recurrent kernel orthogonal per gate block,
    zero biases."""
    cell = FusedGRUCell(400, 64, rngs=nnx.Rngs(0))
    assert abs(float(jnp.std(cell.kernel_i[...])) * np.sqrt(400) - 1) < 0.05
    for g in range(3):
        block = np.asarray(cell.kernel_h[...][:, g * 64 : (g + 1) * 64])
        np.testing.assert_allclose(block.T @ block, np.eye(64), atol=1e-5)
    assert not np.any(cell.bias_i[...]) and not np.any(cell.bias_h[...])


def test_glorot_initialisation_is_per_gate_block():
    """GRU4Rec's bound sqrt(6/(fan_in + H)) per gate: larger than the fused sqrt(6/(fan_in+3H))."""
    cell = FusedGRUCell(50, 100, init="glorot", rngs=nnx.Rngs(0))
    for kernel, fan_in in ((cell.kernel_i[...], 50), (cell.kernel_h[...], 100)):
        bound = np.sqrt(6 / (fan_in + 100))
        assert np.abs(kernel).max() <= bound
        assert np.abs(kernel).max() > np.sqrt(6 / (fan_in + 300))
        # Uniform on [-b, b] has standard deviation b/sqrt(3).
        assert abs(float(jnp.std(kernel)) / (bound / np.sqrt(3)) - 1) < 0.05


def test_per_gate_rejects_indivisible_width():
    with pytest.raises(ValueError, match="divisible"):
        initializers.per_gate(initializers.glorot_uniform)(jax.random.key(0), (4, 7))


def test_bfloat16_parameters_initialise_and_run():
    # Flax's orthogonal init has no bfloat16 QR; the cell draws in float32 and casts.
    layer = GRU(8, 16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    f32 = GRU(8, 16, rngs=nnx.Rngs(0))
    kernel_h = layer.cells[0].kernel_h[...]

    assert kernel_h.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(kernel_h, np.float32), f32.cells[0].kernel_h[...], atol=1e-2
    )
    out, _ = layer(jnp.ones((2, 3, 8)))
    assert np.isfinite(np.asarray(out, np.float32)).all()


def test_reference_impl_honours_the_compute_dtype():
    x = jax.random.normal(jax.random.key(4), (4, 6, 8))
    xla = GRU(8, 16, dtype=jnp.bfloat16, impl="xla", hoist=False, rngs=nnx.Rngs(0))
    ref = GRU(8, 16, dtype=jnp.bfloat16, impl="reference", rngs=nnx.Rngs(0))
    ref_f32 = GRU(8, 16, impl="reference", rngs=nnx.Rngs(0))

    got, want, full = xla(x)[0], ref(x)[0], ref_f32(x)[0]
    # Same bfloat16 roundings: much closer to each other than to the float32 reference.
    close = np.abs(np.asarray(got, np.float32) - np.asarray(want, np.float32)).max()
    far = np.abs(np.asarray(want, np.float32) - np.asarray(full, np.float32)).max()
    assert want.dtype == jnp.bfloat16 and close < far


@pytest.mark.parametrize("variant", ["reset_after", "reset_before"])
def test_pallas_layer_matches_xla_layer_with_resets_and_mask(variant):
    # impl="pallas" runs the kernel in interpret mode on CPU: the layer's wiring (projection,
    # two layers, flags) must give what the XLA layer gives.
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    resets = jnp.asarray(rng.random((3, 5)) < 0.3)
    mask = jnp.asarray(rng.random((3, 5)) < 0.8)
    xla = GRU(4, 6, num_layers=2, variant=variant, impl="xla", rngs=nnx.Rngs(1))
    pallas = GRU(4, 6, num_layers=2, variant=variant, impl="pallas", rngs=nnx.Rngs(1))
    _randomise(xla, seed=1)
    _randomise(pallas, seed=1)

    want, want_carry = xla(x, resets=resets, mask=mask)
    got, carry = pallas(x, resets=resets, mask=mask)

    np.testing.assert_allclose(got, want, **TOL)
    np.testing.assert_allclose(carry, want_carry, **TOL)


def test_each_layer_runs_its_own_cells_form():
    """A cell swapped in (here Flax's reset-after cell, converted) keeps its equations even in
    a layer built reset-before: the output equals nnx.RNN over the Flax cell."""
    flax_cell = nnx.GRUCell(3, 5, rngs=nnx.Rngs(4))
    layer = GRU(3, 5, variant="reset_before", rngs=nnx.Rngs(0))
    layer.cells[0] = FusedGRUCell.from_flax(flax_cell)
    x = jax.random.normal(jax.random.key(5), (2, 6, 3))

    want = nnx.RNN(flax_cell)(x)
    for impl in ("xla", "reference"):
        layer.impl = impl
        np.testing.assert_allclose(layer(x)[0], want, **TOL)


def test_complex_inputs_are_refused():
    layer = GRU(3, 5, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 4, 3), jnp.complex64)
    with pytest.raises(TypeError, match="x must be real"):
        layer(x)
    with pytest.raises(TypeError, match="inputs must be real"):
        layer.cells[0](jnp.zeros((2, 5)), x[:, 0])
    with pytest.raises(TypeError, match="initial_carry must be real"):
        layer(x.real, initial_carry=jnp.zeros((2, 5), jnp.complex64))
    with pytest.raises(TypeError, match="xs must be real"):
        functional.sequence(layer.cells[0].params, jnp.swapaxes(x, 0, 1), jnp.zeros((2, 5)))
