"""Tests for gru_jax.train.checkpoint: what a checkpoint of another model says."""

import jax.numpy as jnp
import numpy as np
import pytest

from gru_jax.train.checkpoint import CheckpointError, Checkpoints


def test_restores_what_was_saved(tmp_path):
    state = {"params": {"a": jnp.arange(3.0), "b": (jnp.ones(2), jnp.int32(7))}}
    checkpoints = Checkpoints(tmp_path / "c")
    checkpoints.save(5, state, {"epoch": 1})

    restored, meta = checkpoints.restore(state)

    np.testing.assert_array_equal(restored["params"]["a"], [0.0, 1.0, 2.0])
    assert int(restored["params"]["b"][1]) == 7 and meta == {"epoch": 1}
    checkpoints.close()


def test_a_checkpoint_of_another_model_names_the_parameters_that_differ(tmp_path):
    # e.g. a reset_before cell saved when it still had a recurrent bias
    saved = {"params": {"cells": [{"bias_i": jnp.zeros(6), "bias_h": jnp.zeros(6)}]}}
    checkpoints = Checkpoints(tmp_path / "c")
    checkpoints.save(3, saved, {})

    with pytest.raises(CheckpointError) as error:
        checkpoints.restore({"params": {"cells": [{"bias_i": jnp.zeros(6)}]}})

    message = str(error.value)
    assert "another model" in message and "params/cells/0/bias_h [6] (saved)" in message
    assert "delete" not in message  # the checkpoint is sound: deleting it would not help
    checkpoints.close()


def test_a_checkpoint_of_other_sizes_names_the_shapes_that_differ(tmp_path):
    checkpoints = Checkpoints(tmp_path / "c")
    checkpoints.save(1, {"params": {"kernel": jnp.zeros((4, 24)), "bias": jnp.zeros(24)}}, {})

    with pytest.raises(CheckpointError) as error:
        checkpoints.restore({"params": {"kernel": jnp.zeros((4, 48)), "bias": jnp.zeros(24)}})

    message = str(error.value)
    assert "params/kernel [4, 24] (saved)" in message
    assert "params/kernel [4, 48] (expected)" in message and "bias" not in message
    checkpoints.close()
