r"""GRU4Rec: a session-based next-item model over item tables and a stack of GRU cells.

One step, for B session-parallel rows (`GRU4Rec.step` then `GRU4Rec.score`)::

    x     = input rows of the step's items, dropout p_embed           (B, E)
    h_l'  = dropout_{p_hidden}( cell_l(h_l, x_l) ),  x_{l+1} = h_l'    per layer l
    score = h_L' · W_y[c] + b_y[c]                                     for the candidates c

The dropped-out output h_l' is also what is carried to the next step, as in the original.

Embedding modes (GRU4Rec's names):
  ``constrained_embedding=True`` ("shared"): the input rows are rows of the output item
    matrix W_y, so the last layer size is also the embedding size;
  ``embedding=X`` ("embedding"): a separate (N, X) input table;
  neither ("onehot"): the item id selects a row of the first layer's input kernel, a (N, 3H)
    table, to which the first cell's input bias is added. The first layer is then the
    embedding, as in the official PyTorch port (``GRUEmbedding``): a reset-before GRU with
    its one bias on the input side, whatever ``variant`` the later layers have (the Theano
    original's layers are all of that form); p_embed applies to its output (carried), not to
    its input rows, and p_hidden to the layers after it. (The Theano original applies
    p_hidden to that output and has no embedding dropout in this mode.)

The item tables (W_y, b_y and the input table) are `ItemTable` parameters: the trainer gathers
the rows a step needs, differentiates with respect to those rows only and updates them
row-sparsely. Initialisation as the original: Glorot-uniform per gate block (the "fused" cell),
W_y and the input tables Glorot-uniform over (N, width), zero biases.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gru_jax.models.cells import CELLS
from gru_jax.nn import functional as F
from gru_jax.nn import initializers

EMBEDDING_MODES = ("shared", "embedding", "onehot")


class ItemTable(nnx.Param):
    """A parameter whose rows are items: gathered per step and updated row-sparsely."""


def embedding_mode(embedding: int, constrained_embedding: bool) -> str:
    if constrained_embedding:
        return "shared"
    return "embedding" if embedding else "onehot"


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout with a drop *rate* (kept values scaled by 1/(1 − rate)); off without key."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class GRU4Rec(nnx.Module):
    """The GRU4Rec network. See the module docstring for the equations.

    Args:
      n_items: N, the number of items (rows of every item table).
      layers: hidden sizes of the stacked cells.
      embedding: X for a separate input embedding (0: none).
      constrained_embedding: share W_y as the input embedding (overrides ``embedding``).
      dropout_p_embed, dropout_p_hidden: drop rates on the input rows and on each layer's output
        (in the onehot mode, on the first layer's output and on each later layer's output).
      variant: GRU form for the fused cell, "reset_after" or "reset_before".
      cell: a name in `gru_jax.models.CELLS` ("fused", "flax-gru", "flax-lstm", or user-added).
      dtype: matmul operand dtype of the cells and the scores (None: float32).
      rngs: NNX random streams; the "params" stream initialises the weights.
    """

    def __init__(
        self,
        n_items: int,
        layers: tuple[int, ...] = (100,),
        *,
        embedding: int = 0,
        constrained_embedding: bool = True,
        dropout_p_embed: float = 0.0,
        dropout_p_hidden: float = 0.0,
        variant: str = "reset_after",
        cell: str = "fused",
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        layers = tuple(int(h) for h in layers)
        if n_items < 1 or not layers or min(layers) < 1:
            raise ValueError(f"need n_items >= 1 and positive layer sizes, got {n_items}, {layers}")
        for name, rate in (
            ("dropout_p_embed", dropout_p_embed),
            ("dropout_p_hidden", dropout_p_hidden),
        ):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} is a drop rate in [0, 1), got {rate}")
        self.n_items = n_items
        self.layers = layers
        self.mode = embedding_mode(embedding, constrained_embedding)
        self.dropout_p_embed = float(dropout_p_embed)
        self.dropout_p_hidden = float(dropout_p_hidden)
        self.variant = F.check_variant(variant)
        self.dtype = dtype
        glorot = initializers.glorot_uniform

        if self.mode == "shared":
            n_input = layers[-1]
        elif self.mode == "embedding":
            n_input = int(embedding)
            self.input_table = ItemTable(glorot(rngs.params(), (n_items, n_input), jnp.float32))
        else:
            if cell != "fused":
                raise ValueError(
                    "the onehot embedding mode needs the fused cell (its input "
                    "kernel is the item table); use embedding > 0 for other cells"
                )
            n_input = n_items

        factory = CELLS.get(cell)
        cells = []
        for i, hidden in enumerate(layers):
            in_features = n_input if i == 0 else layers[i - 1]
            if i == 0 and self.mode == "onehot":
                # The (N, 3H) input kernel becomes an item table; the cell keeps its recurrent
                # weights and its bias. Each gate block is Glorot over (N, H), as the original.
                first = factory(1, hidden, variant="reset_before", dtype=dtype, rngs=rngs)
                del first.kernel_i
                table = initializers.per_gate(glorot)(rngs.params(), (n_items, 3 * hidden))
                self.input_table = ItemTable(table)
                cells.append(first)
            else:
                cells.append(factory(in_features, hidden, variant=variant, dtype=dtype, rngs=rngs))
        self.cells = nnx.List(cells)
        self.n_input = n_input
        self.item_matrix = ItemTable(glorot(rngs.params(), (n_items, layers[-1]), jnp.float32))
        self.item_bias = ItemTable(jnp.zeros((n_items,), jnp.float32))

    # ---------------------------------------------------------------------------------- tables

    @property
    def input_table_name(self) -> str:
        """The table whose rows are the step's inputs: "item_matrix" or "input_table"."""
        return "item_matrix" if self.mode == "shared" else "input_table"

    def input_rows(self, items: jax.Array) -> jax.Array:
        return getattr(self, self.input_table_name)[...][items]

    # ------------------------------------------------------------------------------- recurrence

    def initial_carry(self, batch: int) -> tuple[Any, ...]:
        """Zero carries, one per layer."""
        carries = []
        for i, cell in enumerate(self.cells):
            in_features = (
                1
                if (i == 0 and self.mode == "onehot")
                else (self.n_input if i == 0 else self.layers[i - 1])
            )
            # Flax's cells insist on RNGs even for their zero carry.
            carries.append(cell.initialize_carry((batch, in_features), nnx.Rngs(0)))
        return tuple(jax.tree_util.tree_map(lambda c: c.astype(jnp.float32), carries))

    def step(
        self, carry: tuple[Any, ...], input_rows: jax.Array, *, dropout_key: jax.Array | None = None
    ) -> tuple[tuple[Any, ...], jax.Array]:
        """One time step from the gathered input rows. Returns (new_carry, output (B, H_L)).

        With ``dropout_key`` (training) dropout is applied to the input rows and to each
        layer's output; the dropped-out output is carried when the carry is the output (GRUs).
        """
        keys = (None,) * (len(self.cells) + 1)
        if dropout_key is not None:
            keys = tuple(jax.random.split(dropout_key, len(self.cells) + 1))
        onehot = self.mode == "onehot"
        x = input_rows if onehot else dropout(input_rows, self.dropout_p_embed, keys[0])
        new_carry = []
        for i, (cell, c) in enumerate(zip(self.cells, carry)):
            rate = self.dropout_p_hidden
            if i == 0 and onehot:  # the embedding layer: its output takes p_embed (PyTorch port)
                params = F.GRUParams(
                    None, cell.bias_i[...], cell.kernel_h[...], cell.recurrent_bias
                )
                gi = x.astype(jnp.float32) + params.bias_i
                c_new = F.step_from_projection(params, c, gi, "reset_before", self.dtype)
                y, rate = c_new, self.dropout_p_embed
            else:
                c_new, y = cell(c, x)
            y = dropout(y, rate, keys[i + 1])
            if isinstance(c_new, jax.Array) and c_new.shape == y.shape:
                c_new = y.astype(c_new.dtype)  # GRU4Rec carries the dropped-out state
            new_carry.append(c_new)
            x = y
        return tuple(new_carry), x

    def score(self, hidden: jax.Array, rows: jax.Array, bias: jax.Array) -> jax.Array:
        """Scores h · W_y[c] + b_y[c] for gathered candidate rows (K, H) and biases (K,)."""
        return F.matmul(hidden, rows.T, self.dtype) + bias.astype(jnp.float32)

    def score_all(self, hidden: jax.Array) -> jax.Array:
        """Scores against the whole catalogue (B, N): for recommending, not for training."""
        return self.score(hidden, self.item_matrix[...], self.item_bias[...])
