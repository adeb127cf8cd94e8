"""GRU4Rec on every dataset in ../shared/data, one command, one table.

Each experiment is (reader format, files, reading options, config file in experiments/configs/);
the official-parity runs (RetailRocket, Diginetica) are in experiments/official_parity.py.

    python experiments/datasets.py                         # all, about 40 minutes on 2 CPU cores
    python experiments/datasets.py --only tmall,lastfm     # some
    python experiments/datasets.py --only beauty --out runs/datasets-quick n_epochs=1

Writes runs/datasets/NAME/ (a normal run directory each) and runs/datasets/datasets.md, the table
recorded in experiments/RESULTS.md; each finished experiment's row is merged into it at once,
so ``--only`` and a run cut short keep the other rows. MovieLens-100K is left out on purpose:
it is rating data without sequential intent, the first flaw of "Widespread Flaws in Offline
Evaluation of Recommender Systems" (Hidasi & Czapp, 2023).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

from common import run_script, update_table

from gru_jax.cli import nonempty_path
from gru_jax.config import Config
from gru_jax.data import PreprocessConfig, load_dataset
from gru_jax.data.preprocess import SEQUENCES_AS_GIVEN
from gru_jax.train.loop import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"

EXPERIMENTS = {
    "tmall": ("srgnn", "tmall_gcegnn", {"test_protocol": "sessions"}, "session_splits"),
    "nowplaying": ("srgnn", "nowplaying_gcegnn", {"test_protocol": "sessions"}, "session_splits"),
    "diginetica-raw": (
        "diginetica",
        "diginetica_sample/sample_train-item-views.csv",
        {"config": PreprocessConfig(test_days=7)},
        "diginetica_sample",
    ),
    "beauty": ("sequences", "amazon_beauty_s3rec/Beauty.txt", {}, "user_sequences"),
    "sports": ("sequences", "amazon_sports_s3rec/Sports_and_Outdoors.txt", {}, "user_sequences"),
    "toys": ("sequences", "amazon_toys_s3rec/Toys_and_Games.txt", {}, "user_sequences"),
    "video": ("sequences", "amazon_video_sasrec/Video.txt", {}, "user_sequences"),
    "yelp": ("sequences", "yelp_s3rec/Yelp.txt", {}, "user_sequences"),
    "lastfm": ("sequences", "lastfm_s3rec/LastFM.txt", {}, "user_sequences"),
}


def run(
    name: str, data_root: pathlib.Path, out_root: pathlib.Path, overrides: list[str], progress: bool
) -> dict:
    fmt, path, options, config_name = EXPERIMENTS[name]
    dataset = load_dataset(fmt, data_root / path, **options)
    config = Config.from_file(CONFIGS / f"{config_name}.toml").with_overrides(overrides)
    # What `gru-jax evaluate --run` needs to read the test set again (as the CLI records it).
    description = {"format": fmt, "train": [str((data_root / path).absolute())], "test": None}
    if fmt == "srgnn":
        description["test_protocol"] = options["test_protocol"]
    else:
        description["reader_options"] = {}
        recipe = options.get("config") or (SEQUENCES_AS_GIVEN if fmt == "sequences" else None)
        description["recipe"] = dataclasses.asdict(recipe or PreprocessConfig())
    description["config_file"] = config_name
    results = train(
        config, dataset, out_root / name, data_description=description, progress=progress
    )
    return {
        "name": name,
        "config_file": config_name,
        "epochs": config.n_epochs,
        **dataset.summary(),
        **results.results,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| dataset | config | epochs | items | train events | test events | R@1 | R@5 | R@10 | "
        "R@20 | MRR@20 | train s | train events/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['config_file']} | {r.get('epochs', '?')} | {r['n_items']:,} | "
            f"{r['n_train_events']:,} | "
            f"{r['n_test_events']:,} | {r['recall@1']:.4f} | {r['recall@5']:.4f} | "
            f"{r['recall@10']:.4f} | {r['recall@20']:.4f} | {r['mrr@20']:.4f} | "
            f"{r['train_seconds']:.0f} | {r['train_events_per_second']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=pathlib.Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--out", type=nonempty_path, default=ROOT / "runs/datasets")
    parser.add_argument("--only", help="comma-separated names: " + ", ".join(EXPERIMENTS))
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()

    names = list(EXPERIMENTS) if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = sorted(set(names) - set(EXPERIMENTS))  # --only '' names no experiment
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; known: {', '.join(EXPERIMENTS)}")
    rows = []
    for name in names:
        row = run(name, args.data_root, args.out, args.overrides, not args.no_progress)
        rows = update_table(args.out, "datasets", [row], key=("name",),
                            order=[(n,) for n in EXPERIMENTS], markdown=markdown)  # fmt: skip
    print(markdown(rows))


if __name__ == "__main__":
    run_script(main)
