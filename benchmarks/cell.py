"""One GRU layer over time, forward and forward+backward, across implementations.

Implementations (each run in the same process, its rounds interleaved with the others'):

  gru_jax             `gru_jax.GRU(impl="auto")`: the default arrangement for the platform
  gru_jax[hoist=F]    the XLA path with the input projection inside the loop
  gru_jax[hoist=T]    the XLA path with the input projection hoisted out of the loop
  gru_jax[autodiff]   the default arrangement with JAX's autodiff backward instead of the
                      hand-written VJP (shows what the VJP buys)
  gru_jax[pallas]     the Pallas kernel, only where the platform runs it natively (not CPU)
  nnx                 `flax.nnx.RNN(flax.nnx.GRUCell)`: the reference for the ratios
  linen               `flax.linen.RNN(flax.linen.GRUCell)`
  torch               `torch.nn.GRU` (cuDNN on GPU where it supports the dtype, ATen on CPU),
                      when PyTorch is importable and runs the dtype there
  matmuls             not a GRU: only the layer's matmuls, arranged as gru_jax's XLA path arranges
                      them (a scan of x_t W_i + h W_h; for the backward, a reverse scan of one
                      (B, 3H)x(3H, H) matmul, then Xᵀ G, Hᵀ G and G W_iᵀ over all T·B rows).
                      The floor that gate arithmetic and memory traffic add to.

Every layer is time-major (T, B, E), E = H, one layer. Forward returns the outputs (T, B, H);
forward+backward takes the gradient of Σ outputs ⊙ W (a fixed random W) with respect to the
parameters and the inputs. Compilation and warm-up calls are excluded; the clock stops after
`block_until_ready` (`torch.cuda.synchronize` for PyTorch). Each figure is the median over
``--repeats`` rounds, and within a round the implementations run in a shuffled order, so that
noise from other processes hits all of them alike. FLOP counts are the matmul FLOPs of the
layer (2·T·B·(E + H)·3H forward, 3x that for forward+backward).

    python benchmarks/cell.py --quick            # CPU: 4 shapes at T = 20, float32, a few minutes
    python benchmarks/cell.py                    # the full grid (for accelerators)
    python benchmarks/cell.py --batch 128 --hidden 100 --steps 20 50 --dtypes bfloat16

On CPU the run is pinned to one thread (``--threads 1``, the default) for XLA and PyTorch alike,
since the machine is shared. Results go to runs/benchmarks/cell_<device>.json and .png (speeds
relative to nnx, or to linen when nnx is not run); ``--out benchmarks/results`` replaces the
recorded ones. A run cut short leaves cell_<device>.partial.json and no complete file.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import statistics
import sys
import time

from arguments import at_least, file_suffix, folder

# Fresh runs go under runs/ (ignored by git); the recorded tables in benchmarks/results/ are
# replaced only by asking for it: --out benchmarks/results.
RESULTS = pathlib.Path(__file__).resolve().parents[1] / "runs" / "benchmarks"
REFERENCE = "nnx"
GRID = {"batch": (32, 128, 512), "hidden": (100, 256, 512), "steps": (1, 20, 50)}
QUICK = {"batch": (128, 512), "hidden": (100, 256), "steps": (20,)}
MODES = ("fwd", "fwd+bwd")
SKIPPED_WHY = "Pallas runs only in interpret mode on CPU; torch needs PyTorch installed"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="B 128/512, H 100/256, T 20")
    parser.add_argument("--batch", type=at_least(1), nargs="+", help="batch sizes B")
    parser.add_argument("--hidden", type=at_least(1), nargs="+", help="hidden sizes H (E = H)")
    parser.add_argument("--steps", type=at_least(1), nargs="+", help="sequence lengths T")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=("float32", "bfloat16"))
    parser.add_argument("--modes", nargs="+", default=("fwd", "fwd+bwd"), choices=MODES)
    parser.add_argument("--impls", nargs="+", default=None, help="subset of implementations")
    parser.add_argument("--repeats", type=at_least(1), default=7, help="timed rounds (median)")
    parser.add_argument("--min-time", type=at_least(1e-4, float), default=0.05, help="s per sample")
    parser.add_argument(
        "--threads", type=at_least(0), default=1,
        help="1: XLA:CPU and torch on one thread; N > 1: torch's threads only (XLA:CPU has no "
        "N-thread setting); 0: both libraries' defaults",
    )  # fmt: skip
    parser.add_argument("--out", type=folder, default=RESULTS, help=f"folder ({RESULTS})")
    parser.add_argument(
        "--tag", type=file_suffix, default="", help="suffix of the output file names"
    )
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    grid = QUICK if args.quick else GRID
    args.batch = tuple(args.batch or grid["batch"])
    args.hidden = tuple(args.hidden or grid["hidden"])
    args.steps = tuple(args.steps or grid["steps"])
    args.dtypes = tuple(args.dtypes or (("float32",) if args.quick else ("float32", "bfloat16")))
    return args


def pin_threads(threads: int) -> None:
    """Single-threaded XLA:CPU (must run before jax is imported)."""
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


# ---------------------------------------------------------------------------------------------
# Implementations: each builder returns run() -> result to block on, or None if unavailable.
# ---------------------------------------------------------------------------------------------


def jax_inputs(shape, dtype, seed=0):
    import jax

    steps, batch, hidden = shape
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (steps, batch, hidden)).astype(dtype)
    w = jax.random.normal(kw, (steps, batch, hidden))
    return x, w


def build_nnx_like(make_module, mode, x, w, call=lambda module, x: module(x)[0]):
    """A jitted forward or forward+backward of an NNX module; call(module, x) -> (T, B, H)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, params, rest = nnx.split(make_module(), nnx.Param, ...)

    def forward(params, x):
        return call(nnx.merge(graphdef, params, rest), x)

    def loss(params, x):
        return jnp.sum(forward(params, x).astype(jnp.float32) * w)

    fn = jax.jit(forward if mode == "fwd" else jax.grad(loss, argnums=(0, 1)))
    return lambda: fn(params, x)


def build_gru_jax(mode, shape, dtype, *, impl="auto"):
    """`gru_jax.GRU` as users call it."""
    import jax
    from flax import nnx

    from gru_jax import GRU

    if impl == "pallas" and jax.default_backend() == "cpu":
        return None  # Interpret mode is a test harness, not a benchmark.
    steps, batch, hidden = shape
    x, w = jax_inputs(shape, dtype)
    compute = None if dtype == "float32" else dtype
    kwargs = dict(impl=impl, time_major=True, dtype=compute, rngs=nnx.Rngs(0))
    return build_nnx_like(lambda: GRU(hidden, hidden, **kwargs), mode, x, w)


def build_gru_jax_xla(mode, shape, dtype, *, hoist=None, backward="fused"):
    """`gru_jax.nn.functional.sequence` with a given arrangement (None: the platform default)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from gru_jax import FusedGRUCell
    from gru_jax.nn import functional as F
    from gru_jax.nn.layer import default_hoist

    steps, batch, hidden = shape
    x, w = jax_inputs(shape, dtype)
    compute = None if dtype == "float32" else dtype
    params = FusedGRUCell(hidden, hidden, rngs=nnx.Rngs(0)).params
    h0 = jax.numpy.zeros((batch, hidden))
    hoist = default_hoist() if hoist is None else hoist

    def forward(params, x):
        hs, _ = F.sequence(params, x, h0, hoist=hoist, dtype=compute, backward=backward)
        return hs

    def loss(params, x):
        return jnp.sum(forward(params, x) * w)

    fn = jax.jit(forward if mode == "fwd" else jax.grad(loss, argnums=(0, 1)))
    return lambda: fn(params, x)


def build_nnx(mode, shape, dtype):
    import jax.numpy as jnp
    from flax import nnx

    steps, batch, hidden = shape
    x, w = jax_inputs(shape, dtype)
    compute = None if dtype == "float32" else dtype

    def make():
        cell = nnx.GRUCell(hidden, hidden, dtype=compute, rngs=nnx.Rngs(0))
        return nnx.RNN(cell, time_major=True)

    h0 = jnp.zeros((batch, hidden))
    return build_nnx_like(make, mode, x, w, lambda rnn, x: rnn(x, initial_carry=h0))


def build_linen(mode, shape, dtype):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    steps, batch, hidden = shape
    x, w = jax_inputs(shape, dtype)
    compute = None if dtype == "float32" else dtype
    model = nn.RNN(nn.GRUCell(hidden, dtype=compute), time_major=True)
    params = model.init(jax.random.key(0), x)

    def forward(params, x):
        return model.apply(params, x)

    def loss(params, x):
        return jnp.sum(forward(params, x).astype(jnp.float32) * w)

    fn = jax.jit(forward if mode == "fwd" else jax.grad(loss, argnums=(0, 1)))
    return lambda: fn(params, x)


def build_matmuls(mode, shape, dtype):
    """The matmuls of one GRU layer alone, with a minimal data dependency between steps."""
    import jax
    import jax.numpy as jnp

    from gru_jax.nn.functional import matmul

    _, batch, hidden = shape
    x, _ = jax_inputs(shape, dtype)
    keys = jax.random.split(jax.random.key(1), 2)
    w_i = (0.05 * jax.random.normal(keys[0], (hidden, 3 * hidden))).astype(dtype)
    w_h = (0.05 * jax.random.normal(keys[1], (hidden, 3 * hidden))).astype(dtype)

    def mm(a, b):  # the layer's own matmul: operands in `dtype`, float32 result
        return matmul(a, b, dtype)

    def forward(x):
        def body(h, x_t):
            g = mm(x_t, w_i) + mm(h, w_h)
            return g[:, :hidden], (h, g)

        _, (h_in, g) = jax.lax.scan(body, jnp.zeros((batch, hidden)), x)
        return h_in, g

    def both(x):
        h_in, g = forward(x)

        def body(d, g_t):
            return mm(g_t, w_h.T) + d, None

        rows_x, rows_h, rows_g = (a.reshape(-1, a.shape[-1]) for a in (x, h_in, g))
        d_h, _ = jax.lax.scan(body, jnp.zeros((batch, hidden)), g, reverse=True)
        return d_h, mm(rows_x.T, rows_g), mm(rows_h.T, rows_g), mm(rows_g, w_i.T)

    fn = jax.jit((lambda x: forward(x)[0]) if mode == "fwd" else both)
    return lambda: fn(x)


def build_torch(mode, shape, dtype):
    try:
        import torch
    except ImportError:
        return None
    steps, batch, hidden = shape
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    torch.manual_seed(0)
    gru = torch.nn.GRU(hidden, hidden).to(device=device, dtype=tdtype)
    x = torch.randn(steps, batch, hidden, device=device, dtype=tdtype)
    w = torch.randn(steps, batch, hidden, device=device, dtype=tdtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        if mode == "fwd":
            with torch.no_grad():
                out = gru(x)[0]
        else:
            xg = x.detach().requires_grad_(True)
            gru.zero_grad(set_to_none=True)
            out = gru(xg)[0]
            (out * w).sum().backward()
        sync()
        return out

    try:
        run()  # Some torch builds lack this dtype on this device (e.g. bfloat16 GRU on CUDA).
    except RuntimeError as error:
        print(f"# torch {mode} {dtype} on {device} unavailable: {str(error).splitlines()[0]}")
        return None
    return run


IMPLS = {
    "gru_jax": build_gru_jax,
    "gru_jax[hoist=F]": lambda m, s, d: build_gru_jax_xla(m, s, d, hoist=False),
    "gru_jax[hoist=T]": lambda m, s, d: build_gru_jax_xla(m, s, d, hoist=True),
    "gru_jax[autodiff]": lambda m, s, d: build_gru_jax_xla(m, s, d, backward="autodiff"),
    "gru_jax[pallas]": lambda m, s, d: build_gru_jax(m, s, d, impl="pallas"),
    "nnx": build_nnx,
    "linen": build_linen,
    "torch": build_torch,
    "matmuls": build_matmuls,
}


# ---------------------------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------------------------


def block(result):
    import jax

    if hasattr(result, "block_until_ready") or isinstance(result, (tuple, list, dict)):
        return jax.block_until_ready(result)
    return result  # torch: already synchronised in run().


def calls_per_sample(run, min_time: float) -> int:
    start = time.perf_counter()
    block(run())
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, round(min_time / once))


def measure(runs: dict, repeats: int, min_time: float) -> dict[str, float]:
    """Median seconds per call of each run, rounds interleaved in a shuffled order."""
    for run in runs.values():
        block(run())  # compile / warm up
    counts = {name: calls_per_sample(run, min_time) for name, run in runs.items()}
    samples = {name: [] for name in runs}
    order = list(runs)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            run, n = runs[name], counts[name]
            start = time.perf_counter()
            for _ in range(n):
                result = run()
            block(result)
            samples[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(s) for name, s in samples.items()}


def layer_flops(shape, mode) -> float:
    steps, batch, hidden = shape
    forward = 2.0 * steps * batch * (hidden + hidden) * 3 * hidden
    return forward if mode == "fwd" else 3.0 * forward


# ---------------------------------------------------------------------------------------------
# Reporting.
# ---------------------------------------------------------------------------------------------


def environment(args) -> dict:
    import platform

    import flax
    import jax

    env = {
        "device_kind": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        env["torch"] = None
    return env


def print_table(rows: list[dict]) -> None:
    nan = float("nan")  # a ratio whose reference was not in --impls
    header = f"{'B':>4} {'H':>4} {'T':>3} {'dtype':>8} {'mode':>7}  {'impl':<18}"
    header += f" {'ms':>9} {'events/s':>10} {'GFLOP/s':>8} {'vs nnx':>7} {'vs linen':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['batch']:>4} {row['hidden']:>4} {row['steps']:>3} {row['dtype']:>8} "
            f"{row['mode']:>7}  {row['impl']:<18} {row['seconds'] * 1e3:>9.2f} "
            f"{row['events_per_second']:>10.3g} {row['flops_per_second'] / 1e9:>8.1f} "
            f"{row.get('speed_vs_nnx', nan):>7.2f} {row.get('speed_vs_linen', nan):>8.2f}"
        )


def summarise(rows: list[dict]) -> dict:
    """Geometric mean [min, max] of each implementation's speed vs nnx and linen, per mode."""
    summary = {}
    for key in ("speed_vs_nnx", "speed_vs_linen"):
        for (impl, mode, dtype), values in _group(rows, key).items():
            geo = statistics.geometric_mean(values)
            summary.setdefault(f"{impl} {mode} {dtype}", {})[key] = [geo, min(values), max(values)]
    return summary


def _group(rows, key):
    groups = {}
    for row in rows:
        if key in row:
            groups.setdefault((row["impl"], row["mode"], row["dtype"]), []).append(row[key])
    return groups


def plot(rows: list[dict], path: pathlib.Path, device_kind: str) -> bool:
    """Bars of speed relative to nnx (or linen when nnx was not run); False when neither ran."""
    key = next((k for k in ("speed_vs_nnx", "speed_vs_linen") if any(k in r for r in rows)), None)
    if key is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["mode"], r["dtype"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (mode, dtype) in zip(axes[0], panels):
        sub = [r for r in rows if r["mode"] == mode and r["dtype"] == dtype]
        shapes = sorted({(r["batch"], r["hidden"], r["steps"]) for r in sub})
        impls = list(dict.fromkeys(r["impl"] for r in sub))
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            speed = {
                (r["batch"], r["hidden"], r["steps"]): r[key]
                for r in sub
                if r["impl"] == impl and key in r
            }
            values = [speed.get(s, 0.0) for s in shapes]
            ax.bar([j + i * width for j in range(len(shapes))], values, width, label=impl)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))])
        ax.set_xticklabels([f"B{b}\nH{h}\nT{t}" for b, h, t in shapes], fontsize=7)
        ax.set_ylabel(f"speed relative to {key[9:]} (higher is faster)")
        ax.set_title(f"{mode}, {dtype}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.suptitle(f"One GRU layer on {device_kind}")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    args = parse_args(argv)
    pin_threads(args.threads)
    import jax

    # Start JAX's backend before torch is imported: whichever loads cuDNN first decides which
    # copy the process uses, and JAX's GPU backend fails to start with an older one.
    jax.devices()
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
    except ImportError:
        pass
    impls = args.impls or list(IMPLS)
    unknown = set(impls) - set(IMPLS)
    if unknown:
        sys.exit(f"unknown implementations {sorted(unknown)}; choose from {list(IMPLS)}")
    env = environment(args)
    print(f"# {env['device_kind']} ({env['platform']}), jax {env['jax']}, flax {env['flax']}, "
          f"torch {env['torch']}, threads {args.threads or 'default'}")  # fmt: skip

    rows, skipped = [], set()
    for dtype in args.dtypes:
        for mode in args.modes:
            for batch in args.batch:
                for hidden in args.hidden:
                    for steps in args.steps:
                        shape = (steps, batch, hidden)
                        runs = {}
                        for name in impls:
                            run = IMPLS[name](mode, shape, dtype)
                            if run is not None:
                                runs[name] = run
                            elif name not in skipped:
                                skipped.add(name)
                                print(f"# {name}: not available here ({SKIPPED_WHY}); skipped")
                        seconds = measure(runs, args.repeats, args.min_time)
                        new = []
                        for name, sec in seconds.items():
                            row = dict(batch=batch, hidden=hidden, steps=steps, dtype=dtype)
                            row.update(mode=mode, impl=name, seconds=sec)
                            row["events_per_second"] = batch * steps / sec
                            row["flops_per_second"] = layer_flops(shape, mode) / sec
                            if REFERENCE in seconds:
                                row["speed_vs_nnx"] = seconds[REFERENCE] / sec
                            if "linen" in seconds:
                                row["speed_vs_linen"] = seconds["linen"] / sec
                            new.append(row)
                        print_table(new)
                        print(flush=True)
                        rows.extend(new)
                        if rows:
                            write_results(args, env, rows, complete=False)

    if not rows:  # an empty "complete" file would replace a recorded table with nothing
        sys.exit(f"none of {impls} runs here; nothing measured, nothing written")
    summary = summarise(rows)
    print("geomean speed [min, max] over the shapes:")
    for key, value in summary.items():
        parts = [f"{k[6:]} {v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]" for k, v in value.items()]
        print(f"  {key:<34} " + "  ".join(parts))
    path = write_results(args, env, rows, complete=True)
    plotted = not args.no_plot and plot(rows, path.with_suffix(".png"), env["device_kind"])
    if not plotted:  # a plot of an earlier run beside this JSON would mislead
        path.with_suffix(".png").unlink(missing_ok=True)
    print(f"wrote {path}" + (" and .png" if plotted else ""))
    del jax


def write_results(args, env: dict, rows: list[dict], *, complete: bool) -> pathlib.Path:
    """Writes the JSON; called after every shape too, so a run cut short keeps what it measured."""
    import json

    args.out.mkdir(parents=True, exist_ok=True)
    stem = (
        "cell_"
        + env["device_kind"].lower().replace(" ", "_")
        + (f"_{args.tag}" if args.tag else "")
    )
    payload = {
        "environment": env,
        "args": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
        "complete": complete,
        "rows": rows,
        "summary": summarise(rows),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    # A run cut short keeps what it measured in .partial.json and never replaces a complete
    # file; the complete one is written whole, then renamed over the old.
    path = args.out / f"{stem}.json"
    partial = args.out / f"{stem}.partial.json"
    target = path.with_suffix(".json.tmp") if complete else partial.with_suffix(".tmp")
    target.write_text(json.dumps(payload, indent=1))
    target.replace(path if complete else partial)
    if complete:
        partial.unlink(missing_ok=True)
    return path


if __name__ == "__main__":
    main()
