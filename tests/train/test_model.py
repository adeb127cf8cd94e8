"""GRU4Rec's model pieces: dropout as a drop rate per layer and carried, embedding modes,
initialisation, cells from the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gru_jax import FusedGRUCell
from gru_jax.models import CELLS, GRU4Rec
from gru_jax.models.gru4rec import dropout


def test_dropout_is_a_drop_rate_with_inverted_scaling():
    x = jnp.ones((400, 500))
    y = np.asarray(dropout(x, 0.3, jax.random.key(0)))
    assert abs((y == 0).mean() - 0.3) < 0.01  # 0.3 is the fraction dropped, not kept
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(dropout(x, 0.3, None), x)  # evaluation: identity


def test_hidden_dropout_applies_per_layer_and_is_carried():
    model = GRU4Rec(20, (30, 30), dropout_p_hidden=0.5, dropout_p_embed=0.0, rngs=nnx.Rngs(0))
    carry = model.initial_carry(64)
    rows = model.input_rows(jnp.arange(64) % 20)
    new_carry, out = model.step(carry, rows, dropout_key=jax.random.key(1))
    for layer in new_carry:  # each layer's stored state has its own dropout mask applied
        assert 0.4 < float(jnp.mean(layer == 0)) < 0.6
    np.testing.assert_array_equal(new_carry[-1], out)  # the dropped-out output is carried
    assert not np.array_equal(new_carry[0] == 0, new_carry[1] == 0)
    clean, _ = model.step(carry, rows)
    assert float(jnp.mean(clean[0] == 0)) < 0.01


def test_embedding_dropout_hits_the_input_rows():
    model = GRU4Rec(10, (4,), dropout_p_embed=0.99, rngs=nnx.Rngs(0))
    carry = model.initial_carry(8)
    rows = model.input_rows(jnp.arange(8))
    dropped, _ = model.step(carry, rows, dropout_key=jax.random.key(0))
    zero_input, _ = model.step(carry, jnp.zeros_like(rows))
    # With nearly every input dropped, the step sees (almost) zero inputs.
    assert np.mean(np.isclose(dropped[0], zero_input[0], atol=1e-6)) > 0.9


def test_onehot_mode_equals_a_cell_on_one_hot_vectors():
    """In the no-embedding mode the item selects a row of the first layer's input kernel."""
    # ... of a reset-before cell with one bias, as the PyTorch port's GRUEmbedding, even
    # where the later layers are reset-after (the default)
    model = GRU4Rec(7, (5,), constrained_embedding=False, embedding=0, rngs=nnx.Rngs(0))
    cell = FusedGRUCell(7, 5, variant="reset_before", rngs=nnx.Rngs(1))
    cell.kernel_i[...] = model.input_table[...]
    for name in ("bias_i", "kernel_h"):
        getattr(cell, name)[...] = jnp.ones_like(getattr(cell, name)[...]) * 0.1
        getattr(model.cells[0], name)[...] = getattr(cell, name)[...]
    items = jnp.array([3, 0, 6])
    h0 = jax.random.normal(jax.random.key(2), (3, 5))
    (got,), _ = model.step((h0,), model.input_rows(items))
    want, _ = cell(h0, jax.nn.one_hot(items, 7))
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, table, width",
    [
        ({"constrained_embedding": True}, "item_matrix", 16),
        ({"constrained_embedding": False, "embedding": 9}, "input_table", 9),
        ({"constrained_embedding": False}, "input_table", 3 * 12),
    ],
)
def test_embedding_modes_and_glorot_tables(kwargs, table, width):
    model = GRU4Rec(300, (12, 16), rngs=nnx.Rngs(0), **kwargs)
    assert model.input_table_name == table
    assert model.input_rows(jnp.array([0, 1])).shape == (2, width)
    bound = np.sqrt(6 / (300 + 16))
    w = np.asarray(model.item_matrix[...])
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert not np.any(model.item_bias[...])


@pytest.mark.parametrize("cell", ["flax-gru", "flax-lstm"])
def test_cells_from_the_registry(cell):
    model = GRU4Rec(10, (6,), cell=cell, rngs=nnx.Rngs(0))
    carry = model.initial_carry(3)
    carry, out = model.step(carry, model.input_rows(jnp.array([1, 2, 3])))
    assert out.shape == (3, 6)
    assert np.all(np.isfinite(out))


def test_user_cells_can_be_registered():
    name = "test-scaled-gru"

    def scaled(in_features, hidden_features, *, variant, dtype, rngs):
        return nnx.GRUCell(in_features, hidden_features, rngs=rngs)

    CELLS.register(name, scaled, overwrite=True)
    model = GRU4Rec(10, (6,), cell=name, rngs=nnx.Rngs(0))
    assert isinstance(model.cells[0], nnx.GRUCell)
    with pytest.raises(ValueError, match="unknown cell 'nope'"):
        GRU4Rec(10, (6,), cell="nope", rngs=nnx.Rngs(0))


def test_cells_with_state_besides_parameters_are_refused_for_training():
    """The trainer rebuilds the model from its parameters at every step: a cell's own dropout
    RNG would give the same mask at every step, BatchNorm statistics would never move."""
    from gru_jax.train.functional import ModelSpec

    class DroppingCell(nnx.Module):
        def __init__(self, in_features, hidden_features, *, variant, dtype, rngs):
            self.cell = nnx.GRUCell(in_features, hidden_features, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=1))

        def __call__(self, carry, x):
            return self.cell(carry, self.drop(x))

        def initialize_carry(self, shape, rngs=None):
            return self.cell.initialize_carry(shape, rngs)

    CELLS.register("test-dropping-gru", DroppingCell, overwrite=True)
    model = GRU4Rec(10, (6,), cell="test-dropping-gru", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"cells/0/drop/rngs/\w+ \(Rng\w+\).*dropout_p_hidden"):
        ModelSpec.split(model)
    spec, params = ModelSpec.split(GRU4Rec(10, (6,), cell="flax-gru", rngs=nnx.Rngs(0)))
    assert set(params) >= {"cells", "item_matrix"}  # stateless cells still split and rebuild
    assert spec.build(params).n_items == 10


def test_onehot_mode_drops_the_embedding_layers_output_as_the_pytorch_port():
    """gru4rec_pytorch.py, one-hot mode: E = GRUEmbedding(X, H[0]); E = dropout_p_embed(E);
    H[0] = E; the hidden dropouts apply from the second layer on. So the first layer's input
    rows are not dropped: its pre-dropout output equals the evaluation output exactly."""
    p = 0.5
    model = GRU4Rec(20, (40, 30), constrained_embedding=False, embedding=0,
                    dropout_p_embed=p, dropout_p_hidden=0.0, rngs=nnx.Rngs(0))  # fmt: skip
    carry = model.initial_carry(64)
    rows = model.input_rows(jnp.arange(64) % 20)
    (first, second), _ = model.step(carry, rows, dropout_key=jax.random.key(1))
    (clean_first, _), _ = model.step(carry, rows)
    first, clean_first = np.asarray(first), np.asarray(clean_first)
    kept = first != 0
    assert 0.4 < 1 - kept.mean() < 0.6  # p_embed on the first layer's carried output
    np.testing.assert_allclose(first[kept], clean_first[kept] / (1 - p), rtol=1e-5)
    # p_hidden = 0: the second layer's output is not dropped.
    assert np.mean(np.asarray(second) == 0) < 0.01
    # ... and p_hidden does not reach the embedding layer.
    only_hidden = GRU4Rec(20, (40,), constrained_embedding=False, embedding=0,
                          dropout_p_embed=0.0, dropout_p_hidden=p, rngs=nnx.Rngs(0))  # fmt: skip
    (dropped,), _ = only_hidden.step(
        only_hidden.initial_carry(64), rows, dropout_key=jax.random.key(1)
    )
    (clean,), _ = only_hidden.step(only_hidden.initial_carry(64), rows)
    np.testing.assert_array_equal(dropped, clean)
