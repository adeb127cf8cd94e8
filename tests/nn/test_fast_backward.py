"""The hand-written VJP of `functional.sequence` against JAX autodiff of plain implementations.

Oracles: autodiff of `reference.reference_sequence` (a Python loop over the textbook equations,
no shared code) and autodiff of the same forward scan (``backward="autodiff"``). Every input
gets a gradient: the four parameter arrays, the inputs and the initial carry, under resets and
masks, for both GRU forms and every loop arrangement.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gru_jax.nn import functional as F
from gru_jax.nn.reference import reference_sequence

TOL = {"rtol": 1e-5, "atol": 1e-5}
VARIANTS = ["reset_after", "reset_before"]


def _problem(steps=7, batch=5, features=6, hidden=8, seed=0, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 10)
    params = F.GRUParams(
        0.4 * jax.random.normal(keys[0], (features, 3 * hidden), dtype),
        0.3 * jax.random.normal(keys[1], (3 * hidden,), dtype),
        0.4 * jax.random.normal(keys[2], (hidden, 3 * hidden), dtype),
        0.3 * jax.random.normal(keys[3], (3 * hidden,), dtype),
    )
    xs = jax.random.normal(keys[4], (steps, batch, features))
    h0 = 0.5 * jax.random.normal(keys[5], (batch, hidden))
    resets = jax.random.bernoulli(keys[6], 0.25, (steps, batch))
    mask = jax.random.bernoulli(keys[7], 0.75, (steps, batch))
    # Random weights on every output make each element of hs and h_last matter.
    w_hs = jax.random.normal(keys[8], (steps, batch, hidden))
    w_last = jax.random.normal(keys[9], (batch, hidden))
    return params, xs, h0, resets, mask, w_hs, w_last


def _grads(run, params, xs, h0, w_hs, w_last):
    def objective(params, xs, h0):
        hs, h_last = run(params, xs, h0)
        return jnp.sum(hs * w_hs) + jnp.sum(h_last * w_last)

    return jax.grad(objective, argnums=(0, 1, 2))(params, xs, h0)


def _assert_trees_close(got, want, **tol):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **tol), got, want)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("hoist", [False, True])
@pytest.mark.parametrize("flags", ["none", "resets", "mask", "both"])
def test_gradients_match_autodiff_of_reference(variant, hoist, flags):
    # Given a random problem with some rows reset and some steps masked
    params, xs, h0, resets, mask, w_hs, w_last = _problem()
    resets = resets if flags in ("resets", "both") else None
    mask = mask if flags in ("mask", "both") else None

    # When both are differentiated
    def fused(p, x, h):
        return F.sequence(p, x, h, resets, mask, variant=variant, hoist=hoist)

    def reference(p, x, h):
        return reference_sequence(p, x, h, resets, mask, variant=variant)

    got = _grads(fused, params, xs, h0, w_hs, w_last)
    want = _grads(reference, params, xs, h0, w_hs, w_last)

    # Then every gradient agrees
    _assert_trees_close(got, want, **TOL)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("unroll", [1, 2, 3])
def test_gradients_match_autodiff_of_the_same_scan(variant, unroll):
    params, xs, h0, resets, mask, w_hs, w_last = _problem(steps=9, seed=1)
    runs = {
        backward: lambda p, x, h, backward=backward: F.sequence(
            p, x, h, resets, mask, variant=variant, unroll=unroll, backward=backward
        )
        for backward in F.BACKWARDS
    }
    got = _grads(runs["fused"], params, xs, h0, w_hs, w_last)
    want = _grads(runs["autodiff"], params, xs, h0, w_hs, w_last)
    _assert_trees_close(got, want, **TOL)


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_of_the_custom_vjp_path_is_the_reference_forward(variant):
    params, xs, h0, resets, mask, _, _ = _problem(seed=2)
    got = F.sequence(params, xs, h0, resets, mask, variant=variant)
    want = reference_sequence(params, xs, h0, resets, mask, variant=variant)
    _assert_trees_close(got, want, **TOL)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bfloat16_operands_close_to_autodiff(variant):
    """bfloat16 matmul operands, float32 carry: the VJP's weight gradients are single
    (T·B)-row matmuls accumulated in float32, autodiff sums per-step bfloat16 products, so the
    two differ by bfloat16 rounding; stated tolerance 2e-2 relative to the gradient's scale."""
    params, xs, h0, resets, mask, w_hs, w_last = _problem(steps=10, batch=8, seed=3)

    def run(backward):
        def f(p, x, h):
            return F.sequence(
                p, x, h, resets, mask, variant=variant, dtype=jnp.bfloat16, backward=backward
            )

        return f

    got = _grads(run("fused"), params, xs, h0, w_hs, w_last)
    want = _grads(run("autodiff"), params, xs, h0, w_hs, w_last)
    exact = _grads(
        lambda p, x, h: reference_sequence(p, x, h, resets, mask, variant=variant),
        params,
        xs,
        h0,
        w_hs,
        w_last,
    )
    for g, w, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(exact)):
        assert g.dtype == w.dtype
        scale = float(jnp.abs(e).max())
        assert float(jnp.abs(g - w).max()) <= 2e-2 * scale
        # The fused backward is no further from the float32 gradients than autodiff is.
        assert float(jnp.abs(g - e).max()) <= 1.5 * float(jnp.abs(w - e).max()) + 1e-6


def test_bfloat16_matmul_rounds_the_operands_and_sums_in_float32():
    # Given float32 operands whose bfloat16 rounding changes the product
    keys = jax.random.split(jax.random.key(7), 2)
    a = jax.random.normal(keys[0], (16, 40))
    b = jax.random.normal(keys[1], (40, 24))

    # When they are multiplied with bfloat16 operands (on XLA:CPU: widened again after rounding)
    got = np.asarray(F.matmul(a, b, jnp.bfloat16))

    # Then the result is NumPy's float32 product of the rounded operands, in float32
    rounded = [np.asarray(v).astype(jnp.bfloat16).astype(np.float32) for v in (a, b)]
    want = rounded[0] @ rounded[1]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(want - np.asarray(a) @ np.asarray(b)).max() > 1e-3  # the rounding shows


def test_parameter_dtype_is_kept():
    params, xs, h0, _, _, w_hs, w_last = _problem(seed=4)
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    grads = _grads(lambda p, x, h: F.sequence(p, x, h), params, xs, h0, w_hs, w_last)
    assert [g.dtype for g in grads[0]] == [jnp.bfloat16] * 4
    assert grads[1].dtype == xs.dtype and grads[2].dtype == h0.dtype


def test_jitted_gradient_with_masked_rows_and_resets_at_the_start():
    """Under jit, with all-masked rows and a reset at t = 0, gradients stay finite."""
    params, xs, h0, resets, mask, w_hs, w_last = _problem(seed=5)
    mask = mask.at[:, 0].set(False)
    resets = resets.at[0].set(True)
    grads = jax.jit(
        lambda p, x, h: _grads(lambda *a: F.sequence(*a, resets, mask), p, x, h, w_hs, w_last)
    )(params, xs, h0)
    for g in jax.tree.leaves(grads):
        assert bool(jnp.all(jnp.isfinite(g)))
    # Row 0 is masked at every step: its input gradients are zero, its carry passes through.
    np.testing.assert_array_equal(grads[1][:, 0], 0.0)
    # Every row is reset at t = 0, so nothing flows back into the initial carry.
    np.testing.assert_array_equal(grads[2], 0.0)


def test_unknown_backward_is_rejected():
    params, xs, h0, *_ = _problem()
    with pytest.raises(ValueError, match="unknown backward"):
        F.sequence(params, xs, h0, backward="cudnn")
