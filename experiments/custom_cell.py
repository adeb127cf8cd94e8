"""Extending gru_jax from your own code: GRU4Rec with a recurrent cell defined right here.

The cell below, a GRU with layer normalisation on the gate pre-activations, is registered in
`gru_jax.models.CELLS` under a name of our choosing; the config key ``cell`` then selects it, and
the whole training stack (jitted step, row-sparse optimizer, checkpoints, evaluation) uses it
unchanged. The script trains GRU4Rec with it and with gru_jax's fused cell on the same data and
prints both.

    python experiments/custom_cell.py                                # generated data, ~1 minute
    python experiments/custom_cell.py --srgnn ../shared/data/retailrocket_cotrec --preset retailrocket

Any module with Flax's cell contract works: ``cell(carry, x) -> (new_carry, y)`` and
``cell.initialize_carry((batch, in_features), rngs)``. Losses (`gru_jax.losses.LOSSES`) and
optimizers (`gru_jax.optim.OPTIMIZERS`) are registered the same way.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from common import run_script
from flax import nnx

from gru_jax.config import preset
from gru_jax.data import default_dataset, load_dataset
from gru_jax.models import CELLS
from gru_jax.train.loop import train


class LayerNormGRUCell(nnx.Module):
    """Reset-after GRU with LayerNorm on both gate projections (Ba et al. 2016, section 3.3):

    gi = LN(x W_i + b_i),  gh = LN(h W_h)
    r = σ(gi_r + gh_r),  z = σ(gi_z + gh_z),  n = tanh(gi_n + r ⊙ gh_n),  h' = (1 − z) ⊙ n + z ⊙ h
    """

    def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs):
        self.hidden_features = hidden_features
        self.dense_i = nnx.Linear(in_features, 3 * hidden_features, rngs=rngs)
        self.dense_h = nnx.Linear(hidden_features, 3 * hidden_features, use_bias=False, rngs=rngs)
        self.norm_i = nnx.LayerNorm(3 * hidden_features, rngs=rngs)
        self.norm_h = nnx.LayerNorm(3 * hidden_features, rngs=rngs)

    def __call__(self, carry: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        gi = self.norm_i(self.dense_i(x))
        gh = self.norm_h(self.dense_h(carry))
        gi_r, gi_z, gi_n = jnp.split(gi, 3, axis=-1)
        gh_r, gh_z, gh_n = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(gi_r + gh_r)
        z = jax.nn.sigmoid(gi_z + gh_z)
        n = jnp.tanh(gi_n + r * gh_n)
        h = (1.0 - z) * n + z * carry
        return h, h

    def initialize_carry(self, input_shape: tuple[int, ...], rngs=None) -> jax.Array:
        return jnp.zeros((*input_shape[:-1], self.hidden_features), jnp.float32)


@CELLS.register("layernorm-gru")
def layernorm_gru(in_features, hidden_features, *, variant, dtype, rngs):
    """The factory signature every cell in CELLS has; this cell has only one form and dtype."""
    del variant, dtype
    return LayerNormGRUCell(in_features, hidden_features, rngs=rngs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--srgnn", help="a published split folder (default: the generated data)")
    parser.add_argument("--preset", default="synthetic")
    parser.add_argument("--cells", nargs="+", default=("fused", "layernorm-gru"))
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()

    # Everything that can be wrong with the arguments fails here, before the first training.
    base = preset(args.preset).with_overrides(args.overrides)
    for cell in args.cells:
        CELLS.get(cell)  # e.g. a key=value written after --cells, which takes every word
    dataset = load_dataset("srgnn", args.srgnn) if args.srgnn else default_dataset()
    rows = []
    for cell in args.cells:
        results = train(base.replace(cell=cell), dataset, progress=False).results
        rows.append((cell, results))

    print(f"\n{'cell':<16}{'recall@20':>10}{'mrr@20':>10}{'train events/s':>16}{'train s':>9}")
    for cell, r in rows:
        print(
            f"{cell:<16}{r['recall@20']:>10.4f}{r['mrr@20']:>10.4f}"
            f"{r['train_events_per_second']:>16,.0f}{r['train_seconds']:>9.1f}"
        )


if __name__ == "__main__":
    run_script(main)
