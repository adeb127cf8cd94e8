"""The losses on a shard of the rows (``row_offset``) sum to the loss of the whole step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gru_jax.losses import make_loss

B, N_SAMPLED = 8, 5
HYPER = {
    "cross-entropy": {"logq": 1.0},
    "bpr-max": {"bpreg": 0.7, "elu_param": 0.5, "logq": 0.5},
    "top1-max": {"final_elu": 0.5},
}


def _case(seed):
    rng = np.random.default_rng(seed)
    scores = jnp.asarray(rng.normal(size=(B, B + N_SAMPLED)) * 2, jnp.float32)
    mask = jnp.asarray(rng.random(B) < 0.7).at[0].set(True)
    log_q = jnp.asarray(np.log(rng.uniform(0.01, 1.0, B + N_SAMPLED)), jnp.float32)
    return scores, mask, log_q


@pytest.mark.parametrize("name", sorted(HYPER))
@pytest.mark.parametrize("num_shards", [4])
def test_shards_sum_to_the_global_loss_and_gradient(name, num_shards):
    # Given a step's scores and a loss
    scores, mask, log_q = _case(num_shards)
    loss = make_loss(name, **HYPER[name])
    rows = B // num_shards

    # When each shard scores its rows with the global mask and its row offset
    def sharded(scores):
        parts = [
            loss(scores[k * rows : (k + 1) * rows], mask, log_q=log_q, row_offset=k * rows)
            for k in range(num_shards)
        ]
        return sum(parts)

    def whole(scores):
        return loss(scores, mask, log_q=log_q)

    # Then value and gradient match the whole step's
    value, grad = jax.jit(jax.value_and_grad(sharded))(scores)
    want, want_grad = jax.jit(jax.value_and_grad(whole))(scores)
    np.testing.assert_allclose(value, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-7)


def test_traced_offset_under_jit():
    scores, mask, log_q = _case(0)
    loss = make_loss("cross-entropy", logq=1.0)
    fn = jax.jit(lambda s, o: loss(s, mask, log_q=log_q, row_offset=o))
    total = fn(scores[:4], 0) + fn(scores[4:], 4)
    np.testing.assert_allclose(total, loss(scores, mask, log_q=log_q), rtol=1e-6)


def test_shard_without_offset_raises():
    scores, mask, _ = _case(0)
    with pytest.raises(ValueError, match="row_offset"):
        make_loss("top1-max")(scores[:4], mask)
