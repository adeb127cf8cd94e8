"""Accuracy and speed against the official PyTorch GRU4Rec, on the shared benchmark splits.

The official code (hidasib/GRU4Rec_PyTorch_Official) was run on a 2-core CPU machine with its
RetailRocket parameter file for 5 epochs, full ranking, conservative ties. This script trains
gru_jax with the same parameters (preset ``retailrocket``) on the same splits and prints both,
with the ratio; ``experiments/RESULTS.md`` records what it measured.

    python experiments/official_parity.py                 # about 25 minutes on 2 CPU cores
    python experiments/official_parity.py --only diginetica --epochs 1   # a quick look, own --out
    python experiments/official_parity.py --seed 1        # another seed, into runs/...-seed1

RetailRocket is trained once and evaluated under both test protocols (the training data is
the same): whole test sessions, and only the published (prefix, target) pairs. Each run's rows
are merged into OUT/parity.md and parity.json as soon as it ends, so ``--only`` keeps the others.
"""

from __future__ import annotations

import argparse
import pathlib
import time

from common import run_script, update_table

from gru_jax.cli import nonempty_path
from gru_jax.config import preset
from gru_jax.data import load_dataset
from gru_jax.train.evaluate import evaluate
from gru_jax.train.loop import train

ROOT = pathlib.Path(__file__).resolve().parents[1]

OFFICIAL_EPOCHS = 5  # of the official runs below (the presets' paramfiles say 10; the runs used 5)
# (split folder, protocol): official Recall@20, MRR@20 (5 epochs), and its training speed.
OFFICIAL = {
    ("retailrocket_cotrec", "sessions"): (0.6031, 0.2971),
    ("retailrocket_cotrec", "pairs"): (0.5904, 0.2824),
    ("diginetica_srgnn_processed", "pairs"): (0.5447, 0.1836),
}
OFFICIAL_EVENTS_PER_SECOND = {"retailrocket_cotrec": 6_800, "diginetica_srgnn_processed": 7_300}
RUNS = {
    "retailrocket": ("retailrocket_cotrec", ("sessions", "pairs")),
    "diginetica": ("diginetica_srgnn_processed", ("pairs",)),
}


def run_one(
    name: str,
    data_root: pathlib.Path,
    out_root: pathlib.Path,
    epochs: int,
    seed: int,
    progress: bool = True,
) -> list[dict]:
    folder, protocols = RUNS[name]
    config = preset("retailrocket").replace(n_epochs=epochs, seed=seed)
    dataset = load_dataset("srgnn", data_root / folder, test_protocol=protocols[0])
    result = train(
        config,
        dataset,
        out_root / name,
        data_description={
            "format": "srgnn",
            "train": [str((data_root / folder).absolute())],
            "test_protocol": protocols[0],
        },
        progress=progress,
    )
    rows = []
    for protocol in protocols:
        if protocol == protocols[0]:
            metrics = result.results
        else:
            test = load_dataset("srgnn", data_root / folder, test_protocol=protocol).test
            t0 = time.perf_counter()
            metrics = evaluate(
                result.spec,
                result.params,
                test,
                batch_size=config.eval_batch_size,
                tie_mode=config.tie_mode,
                chunk_size=config.eval_chunk_size,
            )
            metrics["eval_seconds"] = time.perf_counter() - t0
        r20, m20 = OFFICIAL[(folder, protocol)]
        rows.append(
            {
                "split": folder,
                "protocol": protocol,
                "epochs": epochs,
                "seed": seed,
                **{k: metrics[k] for k in metrics if "@" in k or k.startswith("n_test")},
                "eval_seconds": metrics["eval_seconds"],
                "train_seconds": result.results["train_seconds"],
                "train_events_per_second": result.results["train_events_per_second"],
                "official_recall@20": r20,
                "official_mrr@20": m20,
                "ratio_recall@20": metrics["recall@20"] / r20,
                "ratio_mrr@20": metrics["mrr@20"] / m20,
                "official_train_events_per_second": OFFICIAL_EVENTS_PER_SECOND[folder],
                "speed_ratio": result.results["train_events_per_second"]
                / OFFICIAL_EVENTS_PER_SECOND[folder],
                "versions": result.results["versions"],
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    head = (
        "| split | protocol | epochs | R@1 | R@5 | R@10 | R@20 | MRR@20 | "
        f"official R@20 / MRR@20 ({OFFICIAL_EPOCHS} epochs) | ratio R@20 / MRR@20 | train s | "
        "train events/s (× official) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| `{r['split']}` | {r['protocol']} | {r['epochs']} | {r['recall@1']:.4f} | "
        f"{r['recall@5']:.4f} | "
        f"{r['recall@10']:.4f} | {r['recall@20']:.4f} | {r['mrr@20']:.4f} | "
        f"{r['official_recall@20']:.4f} / {r['official_mrr@20']:.4f} | "
        f"{r['ratio_recall@20']:.3f} / {r['ratio_mrr@20']:.3f} | {r['train_seconds']:.0f} | "
        f"{r['train_events_per_second']:,.0f} ({r['speed_ratio']:.2f}×) |\n"
        for r in rows
    )
    short = sorted({r["epochs"] for r in rows if r["epochs"] != OFFICIAL_EPOCHS})
    note = (
        f"\nNote: the official figures are after {OFFICIAL_EPOCHS} epochs and this run trained "
        f"{'/'.join(map(str, short))}, so the ratios are not a parity check.\n"
        if short
        else ""
    )
    return head + body + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=pathlib.Path, default=ROOT.parent / "shared/data")
    default_seed = preset("retailrocket").seed
    parser.add_argument("--out", type=nonempty_path, help="default: runs/official_parity[-seedN]")
    parser.add_argument("--epochs", type=int, default=OFFICIAL_EPOCHS)
    parser.add_argument("--only", choices=tuple(RUNS), action="append")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--seed", type=int, default=default_seed, help="init, dropout and sampling seed"
    )
    args = parser.parse_args()
    if args.out is None:
        suffix = "" if args.seed == default_seed else f"-seed{args.seed}"
        suffix += "" if args.epochs == OFFICIAL_EPOCHS else f"-epochs{args.epochs}"
        args.out = ROOT / f"runs/official_parity{suffix}"

    rows = []
    order = [(folder, p) for folder, protocols in RUNS.values() for p in protocols]
    for name in args.only or RUNS:
        new = run_one(name, args.data_root, args.out, args.epochs, args.seed, not args.no_progress)
        rows = update_table(args.out, "parity", new, key=("split", "protocol"), order=order,
                            markdown=markdown)  # fmt: skip
    print(markdown(rows))


if __name__ == "__main__":
    run_script(main)
