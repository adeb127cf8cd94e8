"""End-to-end GRU4Rec training and evaluation throughput, and the cell's share of a step.

For each cell (gru_jax's fused cell, and Flax's own `nnx.GRUCell` swapped in by name), on one
dataset and preset, in one process:

  train events/s   what `gru-jax train` does per dispatch: host batch and negatives → the jitted
                   T-step scan (forward, loss, row-sparse Adagrad) → the host reads the losses;
                   compile and ``--warmup`` dispatches excluded, median of ``--repeats`` rounds;
                   the cells' rounds interleave in a shuffled order
  eval events/s    full-ranking evaluation of the test set (`Evaluator`), compiled beforehand
  cell share       the time of the cell's forward + backward alone (same B, E, H, T steps in a
                   scan; the cells' rounds interleaved) over the time of the whole training step

    python benchmarks/train_throughput.py          # RetailRocket (COTREC split), preset retailrocket
    python benchmarks/train_throughput.py --dataset diginetica_srgnn_processed
    python benchmarks/train_throughput.py --synthetic --preset synthetic

The official PyTorch GRU4Rec trained this RetailRocket split at about 6,800 events/s on an idle
2-core CPU (101 s per epoch); see experiments/RESULTS.md. Results go to
runs/benchmarks/train_throughput_<device>_<dataset>.json (--out benchmarks/results to record them).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from arguments import at_least, folder

from gru_jax.config import preset
from gru_jax.data import DataError, SessionLog, default_dataset, load_dataset
from gru_jax.models import CELLS
from gru_jax.train.evaluate import Evaluator
from gru_jax.train.functional import split_tables
from gru_jax.train.loop import setup, versions

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "runs" / "benchmarks"  # --out benchmarks/results replaces the recorded ones
OFFICIAL_CPU_EVENTS_PER_SECOND = {"retailrocket_cotrec": 6_800, "diginetica_srgnn_processed": 7_300}


class TrainingClock:
    """One cell's training run, timed in rounds, so that rounds of several cells can interleave
    (this VM's speed drifts by more than the differences between cells)."""

    def __init__(self, config, dataset, *, warmup: int):
        self.config = config
        self.run = setup(config, dataset)
        self.state = self.run.par.place_state(self.run.state)
        self.epoch = 0
        self.batches = self.run.iterator.epoch(self.epoch)
        self.rates, self.ms_per_step = [], []
        for _ in range(warmup):
            self._dispatch()

    def _dispatch(self) -> int:
        run = self.run
        batch = next(self.batches, None)
        if batch is None:  # a small dataset: the rounds go on into the next epoch
            self.epoch += 1
            self.batches = self.run.iterator.epoch(self.epoch)
            batch = next(self.batches)
        negatives = run.sampler.take(self.config.steps_per_dispatch)
        self.state, losses, rows = run.par.step(self.state, batch, negatives, run.supports)
        np.asarray(losses)  # the loop reads the losses every dispatch (NaN guard)
        return int(np.asarray(rows).sum())

    def round(self, dispatches: int) -> None:
        t0, events = time.perf_counter(), 0
        for _ in range(dispatches):
            events += self._dispatch()
        seconds = time.perf_counter() - t0
        self.rates.append(events / seconds)
        self.ms_per_step.append(1e3 * seconds / (dispatches * self.config.steps_per_dispatch))

    def summary(self) -> dict:
        return {
            "train_events_per_second": statistics.median(self.rates),
            "train_ms_per_minibatch": statistics.median(self.ms_per_step),
            "train_rounds_events_per_second": self.rates,
        }


def time_training(configs: dict, dataset, *, warmup: int, dispatches: int, repeats: int):
    """Per cell: median events/s and ms per mini-batch, the cells' rounds interleaved."""
    clocks = {
        cell: TrainingClock(config, dataset, warmup=warmup) for cell, config in configs.items()
    }
    order = list(clocks)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for cell in order:
            clocks[cell].round(dispatches)
    return clocks


def time_evaluation(config, spec, params, test: SessionLog) -> dict:
    evaluator = Evaluator(
        spec,
        batch_size=config.eval_batch_size,
        tie_mode=config.tie_mode,
        chunk_size=config.eval_chunk_size,
    )
    evaluator(params, test)  # compiles
    t0 = time.perf_counter()
    metrics = evaluator(params, test)
    seconds = time.perf_counter() - t0
    return {"eval_events_per_second": metrics["n_test_events"] / seconds, "eval_seconds": seconds}


def cell_runner(config, spec, params):
    """() -> ms per mini-batch of the cells' forward + backward alone (T steps in one scan)."""
    tables, dense = split_tables(params)
    model = spec.build(params)
    batch, steps = config.batch_size, config.steps_per_dispatch
    width = tables[spec.input_table].shape[1]
    xs = jax.random.normal(jax.random.key(0), (steps, batch, width), jnp.float32)
    weights = jax.random.normal(jax.random.key(1), (batch, config.layers[-1]), jnp.float32)

    @jax.jit
    def cell_steps(dense, carry, xs):
        def body(carry, x):
            def objective(dense, x):
                new_carry, h = spec.build({**tables, **dense}).step(carry, x)
                return jnp.sum(h * weights), new_carry

            (_, new_carry), grads = jax.value_and_grad(objective, (0, 1), has_aux=True)(dense, x)
            return new_carry, jax.tree.map(jnp.sum, grads)

        return jax.lax.scan(body, carry, xs)

    carry = model.initial_carry(batch)
    jax.block_until_ready(cell_steps(dense, carry, xs))

    def run() -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(cell_steps(dense, carry, xs))
        return 1e3 * (time.perf_counter() - t0) / steps

    return run


def time_cells(runners: dict, *, repeats: int) -> dict:
    """Median ms per mini-batch of each cell alone, rounds interleaved in a shuffled order."""
    samples = {cell: [] for cell in runners}
    order = list(runners)
    rng = random.Random(1)
    for _ in range(repeats * 3):
        rng.shuffle(order)
        for cell in order:
            samples[cell].append(runners[cell]())
    return {cell: statistics.median(s) for cell, s in samples.items()}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="retailrocket_cotrec", help="a split in shared/data")
    parser.add_argument("--data-root", type=pathlib.Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--synthetic", action="store_true", help="the generated default data")
    parser.add_argument("--preset", default="retailrocket")
    parser.add_argument("--cells", nargs="+", type=cell_name, default=("fused", "flax-gru"))
    parser.add_argument(
        "--warmup", type=at_least(1), default=3, help="dispatches before timing (compile)"
    )
    parser.add_argument("--dispatches", type=at_least(1), default=20, help="dispatches per round")
    parser.add_argument("--repeats", type=at_least(1), default=3)
    parser.add_argument("--out", type=folder, default=RESULTS, help=f"folder ({RESULTS})")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_args(argv)


def cell_name(text: str) -> str:
    """An argparse type: a registered cell (so that key=value after --cells is not taken)."""
    try:
        CELLS.get(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from None
    return text


def load(args: argparse.Namespace):
    """(name, dataset, config) before any measuring; a bad preset, override or dataset ends the
    script with one line."""
    try:
        base = preset(args.preset).with_overrides(args.overrides)
        if args.synthetic:
            return "synthetic", default_dataset(), base
        data = load_dataset("srgnn", args.data_root / args.dataset, test_protocol="sessions")
        return args.dataset, data, base
    except (DataError, ValueError, OSError) as e:
        raise SystemExit(f"train_throughput.py: error: {e}") from None


def main(argv=None) -> None:
    args = parse_args(argv)
    name, dataset, base = load(args)
    device = jax.devices()[0].device_kind
    print(f"{name}: {dataset.train.n_events:,} train events, {dataset.n_items:,} items; "
          f"preset {args.preset}; {device}")  # fmt: skip

    configs = {cell: base.replace(cell=cell) for cell in args.cells}
    clocks = time_training(
        configs, dataset, warmup=args.warmup, dispatches=args.dispatches, repeats=args.repeats
    )
    rows, runners = [], {}
    for cell, clock in clocks.items():
        config, spec = configs[cell], clock.run.spec
        params = clock.run.par.local_params(clock.state)
        row = {"cell": cell, **clock.summary()}
        row.update(time_evaluation(config, spec, params, dataset.test))
        runners[cell] = cell_runner(config, spec, params)
        rows.append(row)
    cell_ms = time_cells(runners, repeats=args.repeats)
    for row in rows:
        row["cell_ms_per_minibatch"] = cell_ms[row["cell"]]
        row["cell_share_of_step"] = row["cell_ms_per_minibatch"] / row["train_ms_per_minibatch"]

    reference = rows[0]["train_events_per_second"]
    fused = next((r["train_events_per_second"] for r in rows if r["cell"] == "fused"), None)
    official = OFFICIAL_CPU_EVENTS_PER_SECOND.get(name) if jax.default_backend() == "cpu" else None
    print(f"\n| cell | train events/s | ms/mini-batch | vs {rows[0]['cell']} | "
          f"eval events/s | cell ms/mini-batch | cell share |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['cell']} | {r['train_events_per_second']:,.0f} | "
            f"{r['train_ms_per_minibatch']:.2f} | {r['train_events_per_second'] / reference:.2f} | "
            f"{r['eval_events_per_second']:,.0f} | {r['cell_ms_per_minibatch']:.2f} | "
            f"{100 * r['cell_share_of_step']:.0f}% |"
        )
    if official and fused:
        print(f"\nofficial PyTorch GRU4Rec on a 2-core CPU: {official:,} train events/s; "
              f"gru_jax fused: {fused / official:.2f}×")  # fmt: skip

    tag = device.lower().replace(" ", "_")
    record = {
        "dataset": name,
        "preset": args.preset,
        "overrides": args.overrides,
        "args": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
        "config": base.to_dict(),
        "versions": versions(),
        "official_cpu_events_per_second": official,
        "rows": rows,
    }
    path = args.out / f"train_throughput_{tag}_{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
