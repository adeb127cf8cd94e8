"""Tests for the Pallas GRU kernel (interpret mode on CPU) against the XLA path and NumPy.

The oracle is `functional.sequence(..., hoist=True)`, a `lax.scan` whose gradients come from
autodiff, plus a float64 NumPy loop written from the equations. Shapes are small and B, H are
not powers of two, so the wrapper's padding runs; one case uses two batch programs and two
hidden chunks. The Triton and Mosaic lowerings are checked by exporting for cuda and tpu
(lowering only: no GPU or TPU compiles or runs here).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from gru_jax.kernels import gru_sequence_pallas, gru_sequence_reference
from gru_jax.nn import functional

VARIANTS = functional.VARIANTS
# (T, B, E, H, tiling kwargs): default tiling (one program, one chunk), then 2 batch programs x
# 2 hidden chunks (B=20 -> 32 rows, H=20 -> 32 columns per gate).
CASES = {
    "default_tiling": (5, 5, 7, 12, {}),
    "two_blocks": (4, 20, 6, 20, {"block_b": 16, "block_h": 16}),
}
ATOL = RTOL = 1e-5


def _problem(num_steps, batch, features, hidden, seed=0):
    ks = jax.random.split(jax.random.key(seed), 8)
    params = functional.GRUParams(
        kernel_i=0.4 * jax.random.normal(ks[0], (features, 3 * hidden)),
        bias_i=0.2 * jax.random.normal(ks[1], (3 * hidden,)),
        kernel_h=0.4 * jax.random.normal(ks[2], (hidden, 3 * hidden)),
        bias_h=0.2 * jax.random.normal(ks[3], (3 * hidden,)),
    )
    xs = jax.random.normal(ks[4], (num_steps, batch, features))
    h0 = jax.random.normal(ks[5], (batch, hidden))
    resets = jax.random.bernoulli(ks[6], 0.25, (num_steps, batch))
    mask = jax.random.bernoulli(ks[7], 0.7, (num_steps, batch))
    # A row that is both reset and masked at the same step: its carry becomes 0.
    resets, mask = resets.at[1, 0].set(True), mask.at[1, 0].set(False)
    return params, xs, h0, resets, mask


def _numpy_sequence(params, xs, h0, resets, mask, variant):
    """float64 loop over time, written from the equations in `functional`'s docstring."""
    k_i, b_i, k_h, b_h = (np.asarray(p, np.float64) for p in params)
    hidden = k_h.shape[0]
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))
    h, hs = np.asarray(h0, np.float64), []
    for t in range(xs.shape[0]):
        h = np.where(resets[t][:, None], 0.0, h)
        gi = np.asarray(xs[t], np.float64) @ k_i + b_i
        gi_r, gi_z, gi_n = np.split(gi, 3, axis=-1)
        w_r, w_z, w_n = np.split(k_h, 3, axis=-1)
        c_r, c_z, c_n = np.split(b_h, 3)
        r, z = sig(gi_r + h @ w_r + c_r), sig(gi_z + h @ w_z + c_z)
        if variant == "reset_after":
            n = np.tanh(gi_n + r * (h @ w_n + c_n))
            h_new = (1 - z) * n + z * h
        else:
            cand = np.tanh(gi_n + (r * h) @ w_n + c_n)
            h_new = (1 - z) * h + z * cand
        h = np.where(mask[t][:, None], h_new, h)
        hs.append(h)
    assert h.shape[-1] == hidden
    return np.stack(hs), h


def _pallas(params, xs, h0, resets, mask, variant, **kw):
    # The call pattern of gru_jax.GRU(impl="pallas").
    gi = functional.input_projection(params, xs)
    return gru_sequence_pallas(
        gi, h0, params.kernel_h, params.bias_h, resets, mask, variant=variant, **kw
    )


def _xla(params, xs, h0, resets, mask, variant):
    return functional.sequence(params, xs, h0, resets, mask, variant=variant, hoist=True)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_matches_xla_and_numpy(variant, case):
    # Given a problem with resets and masks, B and H not powers of two.
    num_steps, batch, features, hidden, tiling = CASES[case]
    params, xs, h0, resets, mask = _problem(num_steps, batch, features, hidden)

    # When the kernel runs (jitted).
    run = jax.jit(lambda *a: _pallas(*a, variant=variant, **tiling))
    hs, h_last = run(params, xs, h0, resets, mask)

    # Then it matches the XLA scan and the NumPy loop.
    assert hs.shape == (num_steps, batch, hidden) and h_last.shape == (batch, hidden)
    assert hs.dtype == h_last.dtype == jnp.float32
    ref_hs, ref_h_last = _xla(params, xs, h0, resets, mask, variant)
    np.testing.assert_allclose(hs, ref_hs, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(h_last, ref_h_last, atol=ATOL, rtol=RTOL)
    np_hs, np_h_last = _numpy_sequence(params, xs, h0, resets, mask, variant)
    np.testing.assert_allclose(hs, np_hs, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(h_last, np_h_last, atol=ATOL, rtol=RTOL)
    np.testing.assert_array_equal(hs[1, 0], 0.0)  # reset and masked at once
    gi = functional.input_projection(params, xs)
    ref = gru_sequence_reference(
        gi, h0, params.kernel_h, params.bias_h, resets, mask, variant=variant
    )
    np.testing.assert_allclose(ref[0], np_hs, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(
    "case, flags",
    [
        ("default_tiling", "resets_and_mask"),
        ("default_tiling", "none"),
        ("two_blocks", "resets_and_mask"),
    ],
)
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_match_xla(variant, case, flags):
    # Given gi, h0, W_h, b_h and a random-weighted sum of hs and h_last as the loss.
    num_steps, batch, features, hidden, tiling = CASES[case]
    params, xs, h0, resets, mask = _problem(num_steps, batch, features, hidden, seed=1)
    if flags == "none":
        resets = mask = None
    gi = functional.input_projection(params, xs)
    w_hs, w_last = jax.random.normal(jax.random.key(2), (2, num_steps, batch, hidden))
    w_last = w_last[0]

    def kernel(gi, h0, kernel_h, bias_h):
        return gru_sequence_pallas(
            gi, h0, kernel_h, bias_h, resets, mask, variant=variant, **tiling
        )

    def xla(gi, h0, kernel_h, bias_h):
        # functional.sequence with an identity input kernel: its "xs" is gi, exactly.
        eye = functional.GRUParams(jnp.eye(3 * hidden), jnp.zeros(3 * hidden), kernel_h, bias_h)
        return _xla(eye, gi, h0, resets, mask, variant)

    def grad(run):
        def loss(*args):
            hs, h_last = run(*args)
            return jnp.sum(w_hs * hs) + jnp.sum(w_last * h_last)

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))

    # When both paths are differentiated.
    args = (gi, h0, params.kernel_h, params.bias_h)
    grads, ref_grads = grad(kernel)(*args), grad(xla)(*args)

    # Then every gradient agrees.
    for name, got, want in zip(["gi", "h0", "kernel_h", "bias_h"], grads, ref_grads):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=name)


def test_bfloat16_matmuls_match_xla():
    # Given bfloat16 matmul operands (the carry stays float32).
    params, xs, h0, resets, mask = _problem(5, 5, 7, 12)
    gi = functional.input_projection(params, xs, jnp.bfloat16)

    # When / Then: the kernel matches the XLA path with the same operand dtype.
    hs, _ = gru_sequence_pallas(
        gi, h0, params.kernel_h, params.bias_h, resets, mask, dtype=jnp.bfloat16
    )
    ref_hs, _ = functional.sequence(params, xs, h0, resets, mask, hoist=True, dtype=jnp.bfloat16)
    assert hs.dtype == jnp.float32
    np.testing.assert_allclose(hs, ref_hs, atol=1e-5, rtol=1e-5)


def test_jit_does_not_recompile():
    params, xs, h0, resets, mask = _problem(3, 5, 7, 12)
    gi = functional.input_projection(params, xs)
    traces = []

    @jax.jit
    def run(gi, h0):
        traces.append(1)
        return gru_sequence_pallas(gi, h0, params.kernel_h, params.bias_h, resets, mask)

    jax.block_until_ready(run(gi, h0))
    jax.block_until_ready(run(gi + 1.0, h0 * 2.0))
    assert len(traces) == 1


@pytest.mark.parametrize(
    "change, match",
    [
        ({"gi": jnp.zeros((3, 5, 35))}, "gi must have shape"),
        ({"gi": jnp.zeros((3, 5))}, r"gi must be \(T, B, 3H\)"),
        ({"h0": jnp.zeros((4, 12))}, "h0 must have shape"),
        ({"kernel_h": jnp.zeros((12, 12))}, r"kernel_h must be \(H, 3H\)"),
        ({"bias_h": jnp.zeros((12,))}, "bias_h must have shape"),
        ({"resets": jnp.zeros((3, 4), bool)}, "resets must have shape"),
        ({"mask": jnp.zeros((5, 3), bool)}, "mask must have shape"),
        ({"variant": "lstm"}, "unknown GRU variant"),
        ({"block_b": 24}, "powers of two"),
        ({"block_h": 8}, "powers of two"),
        ({"platform": "tpu", "interpret": True, "block_h": 64}, "multiple of 8"),
        ({"platform": "metal"}, "unsupported platform"),
    ],
)
def test_bad_arguments_raise(change, match):
    args = {
        "gi": jnp.zeros((3, 5, 36)),
        "h0": jnp.zeros((5, 12)),
        "kernel_h": jnp.zeros((12, 36)),
        "bias_h": jnp.zeros((36,)),
        "resets": None,
        "mask": None,
    }
    kwargs = {k: change.pop(k) for k in list(change) if k not in args}
    args.update(change)
    with pytest.raises(ValueError, match=match):
        gru_sequence_pallas(**args, **kwargs)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_lowers_for_accelerators(variant, platform):
    # Given the default tiling of the target platform for H=100 (padded; two chunks on GPU).
    num_steps, batch, hidden = 4, 20, 100
    f32 = jnp.float32
    shapes = [
        ((num_steps, batch, 3 * hidden), f32),
        ((batch, hidden), f32),
        ((hidden, 3 * hidden), f32),
        ((3 * hidden,), f32),
        ((num_steps, batch), jnp.bool_),
        ((num_steps, batch), jnp.bool_),
    ]

    def value_and_grad(gi, h0, kernel_h, bias_h, resets, mask):
        def loss(gi, h0, kernel_h, bias_h):
            hs, h_last = gru_sequence_pallas(
                gi,
                h0,
                kernel_h,
                bias_h,
                resets,
                mask,
                variant=variant,
                platform=platform,
                interpret=False,
            )
            return hs.sum() + h_last.sum()

        return jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(gi, h0, kernel_h, bias_h)

    # When forward and backward are exported (lowered, not compiled) for the platform.
    checks = [
        export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton"),
        export.DisabledSafetyCheck.custom_call("tpu_custom_call"),
    ]
    exported = export.export(jax.jit(value_and_grad), platforms=[platform], disabled_checks=checks)(
        *(jax.ShapeDtypeStruct(s, d) for s, d in shapes)
    )

    # Then both kernels are in the module as Triton / Mosaic custom calls.
    target = "__gpu$xla.gpu.triton" if platform == "cuda" else "tpu_custom_call"
    assert exported.mlir_module().count(target) >= 2


def test_second_derivatives_say_they_are_unsupported():
    # Given the Pallas path's first derivative
    params, xs, h0, resets, mask = _problem(3, 4, 5, 6)

    def loss(kernel_h):
        hs, _ = _pallas(params._replace(kernel_h=kernel_h), xs, h0, resets, mask, "reset_after")
        return jnp.sum(hs**2)

    grad = jax.grad(loss)
    assert bool(jnp.all(jnp.isfinite(grad(params.kernel_h))))
    # When it is differentiated again, in reverse or forward mode, Then the error says so
    for second in (jax.grad(lambda k: jnp.sum(grad(k))), jax.jacfwd(grad)):
        with pytest.raises(NotImplementedError, match="impl='xla' or impl='reference'"):
            second(params.kernel_h)


def test_explicitly_sharded_inputs_are_refused_by_name():
    # The kernel indexes its refs by time step, which JAX refuses on explicitly sharded refs
    # (also on a one-device mesh, which is what this process has).
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    params, xs, h0, _, _ = _problem(3, 4, 5, 6)
    gi = functional.input_projection(params, xs)
    mesh = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Explicit,))
    with jax.set_mesh(mesh):
        gi = jax.device_put(gi, NamedSharding(mesh, PartitionSpec(None, "data")))
        with pytest.raises(ValueError, match=r"gi is sharded as .*use impl='xla'"):
            gru_sequence_pallas(gi, h0, params.kernel_h, params.bias_h)
