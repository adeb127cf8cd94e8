"""Data-parallel scaling: training events/s on 1, 2, 4 and 8 devices, modes pmap and sharding.

Each device count runs in its own process (JAX fixes the device count when it starts). In it,
the modes are built with `gru_jax.train.parallel.build` on the first N devices and run the
same dispatches from the same initial state, exactly as `gru_jax.train.loop.train` runs them
(host batch → placement → jitted step → the host reads the losses, the loop's sync point).
Compilation and ``--warmup`` dispatches are excluded; each figure is the median over
``--repeats`` rounds of ``--dispatches`` dispatches, the modes interleaved within a round so
that noise from other processes hits them alike. On one device the table also gives each
mode's overhead against ``none`` (the plain jitted step).

``--scaling strong`` (default) keeps the global batch B fixed, so the update is the same on any
number of devices and the script checks it: every mode's losses must equal the one-device
``none`` losses (rtol 1e-4), so a fast but wrong mode cannot pass. ``--scaling weak`` gives each
device ``--batch`` rows (B = N · batch; the losses are then checked within each N).

    python benchmarks/scaling.py --cpu            # N virtual CPU devices: overhead, not speed-up
    python benchmarks/scaling.py                  # the machine's GPUs or TPU cores
    python benchmarks/scaling.py --scaling weak --batch 128 --layers 512

On virtual CPU devices all "devices" share the same cores, so events/s cannot grow with N;
the figures measure what the collectives and the placement cost. Results are printed as a
Markdown table and written to runs/benchmarks/scaling_<device>_<scaling>.json (``--out
benchmarks/results`` replaces the recorded ones).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import statistics
import subprocess
import sys
import time

import numpy as np
from arguments import at_least, folder

RESULTS = (
    pathlib.Path(__file__).resolve().parents[1] / "runs" / "benchmarks"
)  # --out benchmarks/results records
MODES = ("none", "pmap", "sharding")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    positive, counts = at_least(1), at_least(0)
    parser.add_argument("--devices", type=positive, nargs="+", default=(1, 2, 4, 8))
    parser.add_argument("--cpu", action="store_true", help="use N virtual CPU devices")
    parser.add_argument("--scaling", choices=("strong", "weak"), default="strong")
    parser.add_argument(
        "--batch", type=positive, default=256, help="global B (strong) or rows per device (weak)"
    )
    parser.add_argument("--layers", type=positive, default=100, help="hidden units H (one layer)")
    parser.add_argument("--n-sample", type=counts, default=2048, help="shared negatives n")
    parser.add_argument("--n-items", type=positive, default=20_000)
    parser.add_argument("--steps", type=positive, default=32, help="steps per dispatch T")
    parser.add_argument("--dispatches", type=positive, default=8, help="timed dispatches per round")
    # At least one: the warm-up losses are also the check that every mode trains the same.
    parser.add_argument("--warmup", type=positive, default=2, help="untimed dispatches (compile)")
    parser.add_argument("--repeats", type=positive, default=3, help="rounds (median taken)")
    parser.add_argument("--quick", action="store_true", help="4 dispatches x 2 rounds")
    parser.add_argument("--out", type=folder, default=RESULTS, help=f"folder ({RESULTS})")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.dispatches, args.repeats = 4, 2
    # Checked here, before any child runs: a refusal after all the work would lose it.
    if args.child is None:
        args.devices = tuple(sorted(set(args.devices)))
        if args.scaling == "strong":
            if args.devices[0] != 1:
                parser.error("strong scaling needs 1 in --devices (the reference)")
            uneven = [n for n in args.devices if args.batch % n]
            if uneven:
                parser.error(f"strong scaling splits --batch {args.batch} over the devices; "
                             f"it does not divide over {uneven}")  # fmt: skip
    return args


# ---------------------------------------------------------------------------------------------
# One device count (child process)
# ---------------------------------------------------------------------------------------------


def _sessions(n_items: int, n_pairs: int, seed: int = 0):
    """Random sessions (lengths 2..12, Zipf-like items) with at least ``n_pairs`` pairs."""
    from gru_jax.data import SessionLog

    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 13, size=n_pairs // 5 + 1)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths - 1), n_pairs) + 1]
    p = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=int(lengths.sum()), p=p / p.sum()).astype(np.int32)
    return SessionLog(items, np.concatenate([[0], np.cumsum(lengths)]))


def run_child(args: argparse.Namespace) -> dict:
    n = args.child
    from gru_jax.train import parallel

    parallel.initialize(cpu_devices=n if args.cpu else None)
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from gru_jax.data import NegativeSampler, SessionParallelIterator
    from gru_jax.losses import make_loss
    from gru_jax.models import GRU4Rec
    from gru_jax.optim import make_optimizer
    from gru_jax.train.functional import ModelSpec
    from gru_jax.train.loop import versions
    from gru_jax.train.step import TrainState, make_train_step

    devices = jax.devices()[:n]
    if len(devices) < n:
        raise SystemExit(f"only {len(devices)} devices, {n} asked")
    batch = args.batch if args.scaling == "strong" else args.batch * n
    total = args.warmup + args.dispatches
    log = _sessions(args.n_items, batch * args.steps * total * 11 // 10)
    iterator = SessionParallelIterator(log, batch, steps=args.steps)
    batches = list(iterator.epoch(0))[:total]
    supports = np.bincount(log.items, minlength=args.n_items).astype(np.float32)
    sampler = NegativeSampler(supports, alpha=0.5, n_sample=args.n_sample, store_size=10**6)
    negatives = [sampler.take(args.steps) for _ in batches]

    model = GRU4Rec(args.n_items, (args.layers,), rngs=nnx.Rngs(params=0))
    spec, params = ModelSpec.split(model)
    tx = make_optimizer("adagrad_momentum", learning_rate=0.05, momentum=0.0)
    loss_fn = make_loss("cross-entropy", strict=False, logq=1.0)

    def make_run(axis_name):
        return make_train_step(
            spec, tx, loss_fn, logq=1.0, sample_alpha=0.5, dropout_seed=1, axis_name=axis_name
        )

    modes = [m for m in MODES if m != "none" or n == 1]
    runners, states, sups, losses = {}, {}, {}, {}
    for mode in modes:
        par = parallel.build(mode, make_run, batch_size=batch, devices=devices[:n])
        fresh = jax.tree.map(jnp.copy, params)  # the steps donate the state
        state = TrainState(
            fresh, tx.init(fresh), model.initial_carry(batch), jnp.zeros((), jnp.int32)
        )
        runners[mode], states[mode] = par, par.place_state(state)
        sups[mode] = par.place_supports(supports)
        # Warm-up: compile, then the first dispatches; their losses are the correctness check.
        out = []
        t0 = time.perf_counter()
        for b, neg in zip(batches[: args.warmup], negatives):
            states[mode], loss, _ = par.step(states[mode], b, neg, sups[mode])
            out.append(np.asarray(loss))
        losses[mode] = np.concatenate(out).tolist()
        print(f"  {n} devices, {mode}: warm-up {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    timed = list(zip(batches[args.warmup :], negatives[args.warmup :]))
    events = int(sum(b.mask.sum() for b, _ in timed))
    seconds = {mode: [] for mode in modes}
    for _ in range(args.repeats):
        for mode in random.sample(modes, len(modes)):
            par = runners[mode]
            t0 = time.perf_counter()
            for b, neg in timed:
                states[mode], loss, _ = par.step(states[mode], b, neg, sups[mode])
                np.asarray(loss)  # the loop's sync point (NaN guard)
            seconds[mode].append(time.perf_counter() - t0)
    return {
        "devices": n,
        "batch": batch,
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "events_per_second": {m: events / statistics.median(s) for m, s in seconds.items()},
        "ms_per_dispatch": {
            m: 1000 * statistics.median(s) / len(timed) for m, s in seconds.items()
        },
        "warmup_losses": losses,
        "versions": versions(),
    }


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def child_argv(args: argparse.Namespace, n: int) -> list[str]:
    argv = [sys.executable, __file__, "--child", str(n), "--scaling", args.scaling]
    for flag in ("batch", "layers", "n_sample", "n_items", "steps", "dispatches", "warmup"):
        argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    argv += ["--repeats", str(args.repeats)] + (["--cpu"] if args.cpu else [])
    return argv


def check_losses(rows: list[dict], scaling: str) -> None:
    """Every mode's warm-up losses equal the reference's (strong: one device, none)."""
    reference = rows[0]["warmup_losses"]["none"] if scaling == "strong" else None
    for row in rows:
        ref = reference or next(iter(row["warmup_losses"].values()))
        for mode, losses in row["warmup_losses"].items():
            np.testing.assert_allclose(
                losses, ref, rtol=1e-4, err_msg=f"{mode} on {row['devices']} devices"
            )


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    batch = "B" if args.scaling == "strong" else "B per device"
    title = (
        f"{rows[0]['device_kind']} ({'virtual CPU devices' if args.cpu else 'devices'}), "
        f"{args.scaling} scaling, {batch} = {args.batch}, H = {args.layers}, "
        f"n = {args.n_sample}, T = {args.steps}, {args.n_items} items"
    )
    lines = [
        title,
        "",
        "| devices | B | none ev/s | pmap ev/s | sharding ev/s | pmap ms/disp | sharding ms/disp |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ev, ms = r["events_per_second"], r["ms_per_dispatch"]
        none = f"{ev['none']:,.0f}" if "none" in ev else "–"
        lines.append(
            f"| {r['devices']} | {r['batch']} | {none} | {ev['pmap']:,.0f} | "
            f"{ev['sharding']:,.0f} | {ms['pmap']:.1f} | {ms['sharding']:.1f} |"
        )
    one = next((r for r in rows if r["devices"] == 1), None)
    if one is not None:
        base = one["ms_per_dispatch"]["none"]
        over = {m: 100 * (one["ms_per_dispatch"][m] / base - 1) for m in ("pmap", "sharding")}
        lines.append(
            f"\nOverhead on one device against none ({base:.1f} ms per dispatch): "
            f"pmap {over['pmap']:+.1f} %, sharding {over['sharding']:+.1f} %."
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_child(args)))
        return 0
    if not args.cpu:  # asked in a child: this process must not fix its own device count
        probe = [sys.executable, "-c", "import jax; print(jax.device_count())"]
        available = int(subprocess.run(probe, check=True, capture_output=True, text=True).stdout)
        if max(args.devices) > available:
            sys.exit(f"--devices {max(args.devices)} but this machine has {available} device(s); "
                     "--cpu runs virtual CPU devices")  # fmt: skip
    rows = []
    for n in args.devices:
        out = subprocess.run(child_argv(args, n), check=True, stdout=subprocess.PIPE, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    check_losses(rows, args.scaling)
    table = markdown(rows, args)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    kind = rows[0]["device_kind"].replace(" ", "_").lower()
    path = args.out / f"scaling_{kind}{'_virtual' if args.cpu else ''}_{args.scaling}.json"
    record = {"args": vars(args) | {"out": str(args.out)}, "versions": rows[0]["versions"]}
    path.write_text(json.dumps(record | {"rows": rows}))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
