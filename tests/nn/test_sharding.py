"""The GRU layer under JAX's sharding modes, on 4 virtual CPU devices (in a subprocess: JAX
fixes its device count when it starts). References: the same layer unsharded, for the
outputs, and `impl="reference"` (plain JAX autodiff) for the gradients."""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import functools
    import json
    import jax
    jax.config.update("jax_platforms", "cpu")  # the virtual devices, also beside a GPU
    jax.config.update("jax_num_cpu_devices", 4)
    jax.config.update("jax_default_matmul_precision", "highest")
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import gru_jax

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 5, 3)), jnp.float32)  # (B, T, E), B split over 4
    out = {}
    for variant in ("reset_after", "reset_before"):
        layers = {
            impl: gru_jax.GRU(3, 6, 2, variant=variant, impl=impl, rngs=nnx.Rngs(0))
            for impl in ("xla", "reference")
        }
        def loss(params, x, impl):
            graph, _, rest = nnx.split(layers[impl], nnx.Param, ...)
            return jnp.sum(nnx.merge(graph, params, rest)(x)[0] ** 2)  # default zero carry
        params = nnx.state(layers["xla"], nnx.Param)
        want_y = layers["xla"](x)[0]
        want_g = jax.grad(loss)(params, x, "reference")

        explicit = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Explicit,))
        with jax.set_mesh(explicit):
            xs = jax.device_put(x, NamedSharding(explicit, P("data")))
            grad = jax.jit(jax.grad(loss), static_argnums=2)(params, xs, "xla")
        out[variant + " explicit grad"] = max(
            float(jnp.abs(a - b).max())
            for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(want_g), strict=True)
        )

        auto = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
        graph, _, rest = nnx.split(layers["xla"], nnx.Param, ...)
        mapped = jax.shard_map(
            lambda p, x: nnx.merge(graph, p, rest)(x)[0],
            mesh=auto, in_specs=(P(), P("data")), out_specs=P("data"),
        )
        out[variant + " shard_map"] = float(jnp.abs(jax.jit(mapped)(params, x) - want_y).max())

        # Gradients inside shard_map: each shard's, summed over the shards by JAX (the
        # weights are replicated), against the whole batch's
        def local(p, x, impl):
            return jax.grad(loss)(p, x, impl)
        grads = {
            impl: jax.jit(jax.shard_map(
                functools.partial(local, impl=impl),
                mesh=auto, in_specs=(P(), P("data")), out_specs=P(),
            ))(params, x)
            for impl in ("xla", "reference")
        }
        for impl, grad in grads.items():
            out[f"{variant} shard_map grad {impl}"] = max(
                float(jnp.abs(a - b).max())
                for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(want_g), strict=True)
            )
    print(json.dumps(out))
    """
)


def test_xla_path_under_explicit_sharding_and_shard_map():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, timeout=280
    )
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(errors) == 8
    for name, error in errors.items():
        assert error < 1e-5, (name, error)
