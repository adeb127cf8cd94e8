"""The training run: data → jitted steps → checkpoints, logs and the final evaluation.

``train(config, dataset, out_dir)`` is what ``gru-jax train`` calls. The run directory holds::

    config.json      the resolved config (and where the data came from)
    items.npy        raw item ids, index = the model's item index (for `recommend`)
    metrics.jsonl    one JSON line per logged dispatch and per epoch
    checkpoints/     orbax checkpoints (every `checkpoint_every` dispatches and each epoch end)
    results.json     test metrics, timings and versions
    tensorboard/     when config.tensorboard

Rerunning with the same directory resumes from the latest checkpoint and ends where an
uninterrupted run ends.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from gru_jax.config import Config
from gru_jax.data import DataError, Dataset, NegativeSampler, SessionParallelIterator
from gru_jax.data.dataset import (
    item_ids_for_saving,
    save_array_atomic,
    write_json_atomic,
    write_text_atomic,
)
from gru_jax.losses import make_loss
from gru_jax.models import GRU4Rec
from gru_jax.optim import check_keeps_rows, make_optimizer
from gru_jax.train import parallel, processes
from gru_jax.train.checkpoint import Checkpoints
from gru_jax.train.errors import TrainingError
from gru_jax.train.evaluate import check_evaluable, evaluate
from gru_jax.train.functional import ModelSpec
from gru_jax.train.step import TrainState, make_train_step

log = logging.getLogger(__name__)

DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def versions() -> dict[str, str]:
    import flax
    import optax

    import gru_jax

    return {
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "gru_jax": gru_jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
    }


def build_model(config: Config, n_items: int) -> GRU4Rec:
    return GRU4Rec(
        n_items,
        config.layers,
        embedding=config.embedding,
        constrained_embedding=config.constrained_embedding,
        dropout_p_embed=config.dropout_p_embed,
        dropout_p_hidden=config.dropout_p_hidden,
        variant=config.variant,
        cell=config.cell,
        dtype=DTYPES[config.dtype],
        rngs=nnx.Rngs(params=config.seed),
    )


def build_optimizer(config: Config):
    return make_optimizer(
        config.optimizer, learning_rate=config.learning_rate, momentum=config.momentum
    )


def build_loss(config: Config):
    return make_loss(
        config.loss,
        strict=False,
        bpreg=config.bpreg,
        elu_param=config.elu_param,
        logq=config.logq,
    )


@dataclasses.dataclass
class Setup:
    """Everything a training run is built from (`setup`); benchmarks reuse it."""

    spec: ModelSpec
    tx: Any  # optax.GradientTransformation
    par: parallel.DataParallel
    iterator: SessionParallelIterator
    sampler: NegativeSampler
    supports: Any  # per-item training-event counts, placed for the step (logQ)
    state: TrainState  # the initial state, in the checkpoint layout (not yet placed)


def setup(config: Config, dataset: Dataset) -> Setup:
    """Model, optimizer, loss, the (data-parallel) jitted step, iterator and sampler."""
    model = build_model(config, dataset.n_items)
    spec, params = ModelSpec.split(model)
    tx = build_optimizer(config)
    check_keeps_rows(tx, params, spec.table_names(params))
    make_run = functools.partial(
        make_train_step,
        spec,
        tx,
        build_loss(config),
        logq=config.logq,
        sample_alpha=config.sample_alpha,
        dropout_seed=config.seed + 1,
        bptt=config.bptt,
    )
    # Devices: "none" is the plain jitted step; with several processes each one reads only
    # its rows of every step (shard = process index), see gru_jax.train.parallel.
    par = parallel.build(config.parallel, make_run, batch_size=config.batch_size)
    iterator = SessionParallelIterator(
        dataset.train,
        config.batch_size,
        steps=config.steps_per_dispatch,
        order=config.session_order,
        seed=config.seed,
        shard_index=par.data_shard,
        num_shards=par.num_data_shards,
        # Without sampled negatives a lone row has none: GRU4Rec ends the epoch there.
        min_rows=2 if config.n_sample == 0 else 1,  # Config keeps batch_size >= 2 then
    )
    supports = np.asarray(dataset.item_supports(), np.float32)
    sampler = NegativeSampler(
        supports,
        alpha=config.sample_alpha,
        n_sample=config.n_sample,
        store_size=config.sample_store,
        seed=config.seed,
    )
    state = initial_state(config, model, params, tx)
    return Setup(spec, tx, par, iterator, sampler, par.place_supports(supports), state)


def initial_state(config: Config, model: GRU4Rec, params: dict, tx) -> TrainState:
    """Step 0: the initial parameters, a fresh optimizer state, zero carries."""
    carry = model.initial_carry(config.batch_size)
    return TrainState(params, tx.init(params), carry, jnp.zeros((), jnp.int32))


def read_run_json(run_dir: pathlib.Path) -> tuple[Config, dict]:
    """The config a run directory was trained with, and the whole of its config.json."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a gru-jax run directory (no config.json)")
    try:
        saved = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path} is not a gru-jax run config (invalid JSON: {e})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise DataError(f"{path} is not a gru-jax run config (no 'config' object)")
    try:
        return Config().replace(**saved["config"]), saved
    except (ValueError, TypeError) as e:
        raise DataError(f"{path} is not a gru-jax run config ({e})") from None


def read_run_config(run_dir: pathlib.Path) -> Config:
    """The config a run directory was trained with (its config.json)."""
    return read_run_json(run_dir)[0]


@dataclasses.dataclass
class TrainResult:
    spec: ModelSpec
    params: dict
    results: dict  # what results.json holds
    out_dir: pathlib.Path | None


class _Logger:
    """metrics.jsonl (and TensorBoard) writer; silent on processes other than 0."""

    def __init__(self, out_dir: pathlib.Path | None, tensorboard: bool):
        self.enabled = out_dir is not None and jax.process_index() == 0
        self._file = open(out_dir / "metrics.jsonl", "a") if self.enabled else None  # noqa: SIM115
        self._tb = None
        if self.enabled and tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


# Keys a resumed run may change: they do not touch the model, the optimizer or the data order.
RESUMABLE_CHANGES = frozenset(
    {"n_epochs", "log_every", "checkpoint_every", "tensorboard", "eval_batch_size",
     "eval_chunk_size", "cutoffs", "tie_mode", "parallel"}
)  # fmt: skip


# What `train` writes into a run directory; a folder holding any of them without a config.json
# is not a run this call can continue.
RUN_FILES = ("config.json", "items.npy", "metrics.jsonl", "results.json", "checkpoints",
             "tensorboard")  # fmt: skip


def run_directory_of(folder: pathlib.Path) -> pathlib.Path | None:
    """The gru-jax run directory that ``folder`` is or lies inside (e.g. its checkpoints/)."""
    folder = folder.absolute()
    for candidate in (folder, *folder.parents):
        if (candidate / "config.json").is_file() and (candidate / "items.npy").is_file():
            return candidate
    return None


def data_fingerprint(log) -> str:
    """A hash of a training log's sessions (item indices, offsets, times): resuming a run on
    other data of the same catalogue must be refused, and the item ids alone cannot tell."""
    return _sha256(log.items, log.offsets, log.times)


def _sha256(*arrays: np.ndarray | None) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        if array is not None:
            digest.update(np.ascontiguousarray(array).tobytes())
    return "sha256:" + digest.hexdigest()


def check_run_directory(
    out: pathlib.Path, config: Config, item_ids: np.ndarray, fingerprint: str
) -> None:
    """Refuses a run directory this run would damage: one of another config or other data, a
    finished run whose checkpoints are gone, or a folder of other files with a run's names.

    A directory of the same run continues from its latest checkpoint. One that stopped before
    its first checkpoint (a NaN, an interrupt) has nothing to continue, so a run of any config
    starts over there, replacing its config and metrics.
    """
    if out.exists() and not out.is_dir():
        raise TrainingError(f"{out} exists and is not a directory; give a run directory")
    if not (out / "config.json").is_file():
        present = [name for name in RUN_FILES if (out / name).exists()]
        if present:
            raise TrainingError(
                f"{out} holds {', '.join(present)} but no config.json, so it is not a gru-jax "
                "run to continue; give a new output directory"
            )
        return
    ckpt = out / "checkpoints"
    has_checkpoints = ckpt.is_dir() and any(ckpt.iterdir())
    if not has_checkpoints:
        if (out / "results.json").exists():
            raise TrainingError(
                f"{out} holds the results of a finished run but no checkpoint to continue it "
                "from; give a new output directory"
            )
        read_run_json(out)  # a damaged config.json is not taken for a stopped run
        return
    items_file = out / "items.npy"
    if not items_file.is_file():
        raise TrainingError(
            f"{out} has a config.json but no items.npy, so it is not a complete gru-jax run "
            "directory; give a new output directory"
        )
    before, saved = read_run_json(out)
    before_items = np.load(items_file, allow_pickle=False)
    before_fingerprint = saved.get("train_fingerprint")
    if not np.array_equal(before_items, item_ids) or before_fingerprint not in (None, fingerprint):
        raise TrainingError(
            f"{out} holds a run on other training data ({len(before_items)} items, now "
            f"{len(item_ids)}; sessions {'the same' if before_fingerprint == fingerprint else 'differ'}"
            "); rerun on the same data, read and preprocessed as that run did, to continue it "
            "(a run made before consecutive repeats were removed by default needs --no-dedupe), "
            "or give a new output directory"
        )
    changed = {
        key: (getattr(before, key), getattr(config, key))
        for key in config.to_dict()
        if key not in RESUMABLE_CHANGES and getattr(before, key) != getattr(config, key)
    }
    if changed:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        raise TrainingError(
            f"{out} holds a run with another config ({listed}); rerun with the same settings "
            "to continue it, or give a new output directory"
        )


def _check_run_directory_everywhere(
    out: pathlib.Path, config: Config, item_ids: np.ndarray, fingerprint: str
) -> None:
    """`check_run_directory` on every process, and one decision for all of them.

    Every process checks the folder before any process writes to it: the gather is also a
    barrier, so process 1 never sees a half-made run of process 0's.
    """
    error: Exception | None = None
    try:
        check_run_directory(out, config, item_ids, fingerprint)
    except (TrainingError, DataError) as e:
        error = e
    processes.refuse_together(error, f"the run directory {out}")


def _run_facts(
    config: Config,
    dataset: Dataset,
    item_ids: np.ndarray,
    fingerprint: str,
    out: pathlib.Path | None,
    evaluate_test: bool,
) -> dict[str, str]:
    """What every process of a multi-host run must agree on (`processes.check_same_run`).

    The run folder's path is not among them (hosts may mount one shared folder at different
    paths); `processes.check_shared_folder` checks the folder itself.
    """
    facts = {f"config key {k}": json.dumps(v, default=str) for k, v in config.to_dict().items()}
    facts["item ids"] = f"{len(item_ids)} of {item_ids.dtype}, {_sha256(item_ids)}"
    facts["training sessions"] = fingerprint
    tested = evaluate_test and dataset.test is not None
    facts["test sessions"] = data_fingerprint(dataset.test) if tested else "no evaluation"
    facts["run directory"] = "given" if out is not None else "none"
    return facts


def _kept_checkpoint(checkpoints: Checkpoints | None) -> str:
    if checkpoints is None:
        return "nothing was saved (no run directory)"
    if checkpoints.latest() is None:
        return f"no checkpoint had been written yet in {checkpoints.directory}"
    return (
        f"the last good checkpoint (step {checkpoints.latest()}) is kept in {checkpoints.directory}"
    )


def _truncate_metrics(path: pathlib.Path, step: int) -> None:
    """Drops the metrics lines of steps after ``step`` (they are about to be logged again), and
    lines a crash cut short (the log is appended, not replaced)."""
    if not path.is_file():
        return

    def step_of(line: str) -> float:
        try:
            record = json.loads(line)
        except ValueError:
            return math.inf
        return record.get("step", 0) if isinstance(record, dict) else math.inf

    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if step_of(line) <= step]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))


def train(
    config: Config,
    dataset: Dataset,
    out_dir: str | pathlib.Path | None = None,
    *,
    progress: bool = True,
    evaluate_test: bool = True,
    data_description: dict | None = None,
    stop_after_dispatches: int | None = None,
) -> TrainResult:
    """Trains GRU4Rec on ``dataset.train``, evaluates on ``dataset.test``, writes the run.

    Args:
      config: the resolved configuration.
      dataset: preprocessed data (train, optional test).
      out_dir: run directory (None: nothing is written, no checkpoints).
      progress: show a progress bar.
      evaluate_test: evaluate on ``dataset.test`` when present.
      data_description: recorded in config.json (format, paths).
      stop_after_dispatches: stop (after checkpointing) once this many dispatches ran in this
        call — simulates an interruption in tests.
    """
    out = pathlib.Path(out_dir) if out_dir is not None else None
    is_writer = jax.process_index() == 0
    if dataset.train.n_predictions == 0:  # every session shorter than 2: no (input, target)
        raise DataError(
            f"the training split has no session with 2 or more events ({dataset.train.n_sessions}"
            f" sessions, {dataset.train.n_events} events): nothing to learn from"
        )
    if evaluate_test and dataset.test is not None:
        check_evaluable(dataset.test)  # before training, not after it
    item_ids = item_ids_for_saving(dataset.item_ids)
    several = jax.process_count() > 1
    fingerprint = data_fingerprint(dataset.train) if out is not None or several else None
    if several:  # before the first collective that assumes one training
        processes.check_uniform_devices()
        facts = _run_facts(config, dataset, item_ids, fingerprint, out, evaluate_test)
        processes.check_same_run(facts)
    if out is not None:  # before anything of the earlier run is replaced
        _check_run_directory_everywhere(out, config, item_ids, fingerprint)

    run = setup(config, dataset)
    spec, par, iterator, sampler = run.spec, run.par, run.iterator, run.sampler
    if is_writer:
        n_params = sum(int(np.size(x)) for x in jax.tree.leaves(run.state.params))
        log.info(
            "GRU4Rec %s, %s loss, %d items: %s parameters on %d %s device(s), %s",
            "/".join(map(str, config.layers)),
            config.loss,
            dataset.n_items,
            f"{n_params:,}",
            par.num_devices,
            jax.devices()[0].device_kind,
            f"data parallel: {par.mode}",
        )
    steps, supports_device, state = config.steps_per_dispatch, run.supports, run.state
    position = {"epoch": 0, "dispatch": 0}
    earlier_seconds, resumed_totals = 0.0, (0.0, 0)
    if out is not None and several:  # before orbax's collective saves
        processes.check_shared_folder(out)  # also makes it
    elif out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / processes.SHARED_FOLDER_TOKEN).unlink(missing_ok=True)  # a crashed run's
    checkpoints = Checkpoints(out / "checkpoints") if out is not None else None
    try:
        if checkpoints is not None and checkpoints.latest() is not None:
            # Checkpoints hold global arrays: one written with N devices restores with M.
            state, meta = checkpoints.restore(par.restore_target(state))
            state = par.from_restored(state)
            position = {"epoch": meta["epoch"], "dispatch": meta["dispatch"]}
            earlier_seconds = float(meta.get("train_seconds", 0.0))  # of the interrupted runs
            resumed_totals = (
                float(meta.get("epoch_loss_sum", 0.0)),
                int(meta.get("epoch_rows", 0)),
            )
            sampler.restore(meta["sampler"])
            log.info(
                "resuming from checkpoint %s (epoch %d, dispatch %d)",
                checkpoints.latest(),
                position["epoch"],
                position["dispatch"],
            )
        else:
            state = par.place_state(state)
        if position["epoch"] > config.n_epochs or (
            position["epoch"] == config.n_epochs and position["dispatch"] > 0
        ):
            raise TrainingError(
                f"{out} was already trained past epoch {config.n_epochs} (its checkpoint is at epoch "
                f"{position['epoch']}, dispatch {position['dispatch']}); ask for at least "
                f"n_epochs={position['epoch'] + (position['dispatch'] > 0)}, or use a new directory"
            )
    except BaseException:  # a refused resume leaves no orbax thread behind
        if checkpoints is not None:
            checkpoints.close()
        raise
    if out is not None and is_writer:  # only now: every check that may refuse the run is done
        write_json_atomic(
            out / "config.json",
            {
                "config": config.to_dict(),
                "data": data_description or {},
                "train_fingerprint": fingerprint,
            },
        )
        save_array_atomic(out / "items.npy", item_ids)
        # Lines logged after the checkpoint (or by a run stopped before its first one) are
        # logged again by this run.
        _truncate_metrics(out / "metrics.jsonl", par.step_count(state))
        log.info("run directory: %s", out)
    if par.mode != "none":
        log.info("data parallel: %s", par.describe())

    logger = _Logger(out, config.tensorboard)
    n_train_events = dataset.train.n_events
    dispatches_per_epoch = len(iterator)
    total = config.n_epochs * dispatches_per_epoch
    done = position["epoch"] * dispatches_per_epoch + position["dispatch"]
    bar = tqdm(
        total=total,
        initial=done,
        disable=not (progress and is_writer),
        unit="dispatch",
        desc="train",
        dynamic_ncols=True,
    )

    def save(epoch: int, dispatch: int, seconds: float) -> None:
        number = par.step_count(state)
        # Once per step: an interruption can fall on a step that a periodic save just wrote.
        if checkpoints is not None and number != checkpoints.latest():
            meta = {
                "epoch": epoch,
                "dispatch": dispatch,
                "sampler": sampler.state(),
                "train_seconds": earlier_seconds + seconds,  # so a resumed run's total is right
                # The epoch's running loss, so a run resumed mid-epoch logs what an
                # uninterrupted one logs.
                "epoch_loss_sum": totals["loss"] if dispatch else 0.0,
                "epoch_rows": totals["rows"] if dispatch else 0,
            }
            checkpoints.save(number, par.checkpoint_state(state), meta)

    train_seconds = 0.0
    ran = 0
    try:
        for epoch in range(position["epoch"], config.n_epochs):
            start = position["dispatch"] if epoch == position["epoch"] else 0
            if start == 0:  # every hidden state is zero at the start of an epoch
                state = par.zero_carry(state)
            totals = {"loss": 0.0, "rows": 0}  # the epoch's loss sum and active rows so far
            if start:
                totals = {"loss": resumed_totals[0], "rows": resumed_totals[1]}
            epoch_events = 0
            t_epoch = time.perf_counter()
            for dispatch, batch in enumerate(iterator.epoch(epoch, start), start=start):
                negatives = sampler.take(steps)
                state, losses, rows = par.step(state, batch, negatives, supports_device)
                losses = np.asarray(losses)  # waits for the dispatch: the NaN guard needs it
                rows = np.asarray(rows)  # active rows of each step, over all processes
                if not np.all(np.isfinite(losses)):
                    bad = int(np.flatnonzero(~np.isfinite(losses))[0])
                    raise TrainingError(
                        f"non-finite loss {losses[bad]} at epoch {epoch + 1}, dispatch "
                        f"{dispatch + 1}, step {par.step_count(state) - steps + bad + 1}; "
                        + _kept_checkpoint(checkpoints)
                    )
                # The loss of a step is normalised by B; weight steps by their active rows.
                totals["loss"] += float(np.sum(losses * config.batch_size))
                totals["rows"] += int(rows.sum())
                epoch_events += int(rows.sum())
                ran += 1
                bar.update(1)
                elapsed = time.perf_counter() - t_epoch
                if dispatch % max(config.log_every, 1) == 0 or dispatch == dispatches_per_epoch - 1:
                    record = {
                        "epoch": epoch + 1,
                        "dispatch": dispatch + 1,
                        "step": par.step_count(state),
                        "loss": totals["loss"] / max(totals["rows"], 1),
                        "events_per_second": epoch_events / max(elapsed, 1e-9),
                    }
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}", ev_s=f"{record['events_per_second']:.0f}"
                    )
                    logger.write(record)
                periodic = config.checkpoint_every and (dispatch + 1) % config.checkpoint_every == 0
                if periodic and dispatch + 1 < dispatches_per_epoch:  # else the epoch-end save
                    save(epoch, dispatch + 1, train_seconds + time.perf_counter() - t_epoch)
                if stop_after_dispatches is not None and ran >= stop_after_dispatches:
                    train_seconds += time.perf_counter() - t_epoch
                    save(epoch, dispatch + 1, train_seconds)
                    return TrainResult(spec, par.local_params(state), {"interrupted": True}, out)
            epoch_seconds = time.perf_counter() - t_epoch
            train_seconds += epoch_seconds
            save(epoch + 1, 0, train_seconds)
            # Training-file events of the part of the epoch this call ran (all of it unless the
            # run resumed mid-epoch), as GRU4Rec counts speed.
            share = 1.0 if start == 0 else epoch_events / max(iterator.num_targets, 1)
            rate = n_train_events * share / epoch_seconds
            logger.write(
                {
                    "epoch": epoch + 1,
                    "step": par.step_count(state),
                    "epoch_end": True,
                    "loss": totals["loss"] / max(totals["rows"], 1),
                    "epoch_seconds": epoch_seconds,
                    "train_events_per_second": rate,
                    **({"resumed_mid_epoch": True} if start else {}),
                }
            )
            log.info(
                "epoch %d: loss %.4f, %.1f s, %.0f train events/s",
                epoch + 1,
                totals["loss"] / max(totals["rows"], 1),
                epoch_seconds,
                rate,
            )
    finally:
        bar.close()
        logger.close()
        if checkpoints is not None:
            checkpoints.close()

    # Over the whole run, interrupted parts included: training-file events × epochs / seconds.
    total_seconds = earlier_seconds + train_seconds
    results: dict[str, Any] = {
        "train_seconds": total_seconds,
        "train_events_per_second": (
            n_train_events * config.n_epochs / total_seconds if total_seconds > 0 else math.nan
        ),
        "n_train_events": n_train_events,
        "n_epochs": config.n_epochs,
        "n_epochs_run": config.n_epochs - position["epoch"],  # in this call
    }
    params = par.local_params(state)  # one process-local copy
    if evaluate_test and dataset.test is not None:
        # NOTE: every process evaluates the whole test set on one of its devices (no collectives).
        t0 = time.perf_counter()
        metrics = evaluate(
            spec,
            params,
            dataset.test,
            batch_size=config.eval_batch_size,
            cutoffs=config.cutoffs,
            tie_mode=config.tie_mode,
            chunk_size=config.eval_chunk_size,
        )
        results["eval_seconds"] = time.perf_counter() - t0
        results.update(metrics)
    results["config"] = config.to_dict()
    results["versions"] = versions()
    results["parallel"] = par.describe()
    if out is not None and is_writer:
        write_json_atomic(out / "results.json", results)
    return TrainResult(spec, params, results, out)


def load_run(run_dir: str | pathlib.Path) -> tuple[Config, ModelSpec, dict, np.ndarray]:
    """(config, spec, params, item_ids) of a finished or interrupted run directory."""
    run_dir = pathlib.Path(run_dir)
    config = read_run_config(run_dir)
    if not (run_dir / "items.npy").is_file():
        raise FileNotFoundError(f"{run_dir} has no items.npy: not a complete gru-jax run directory")
    item_ids = np.load(run_dir / "items.npy", allow_pickle=False)
    model = build_model(config, len(item_ids))
    spec, params = ModelSpec.split(model)
    like = initial_state(config, model, params, build_optimizer(config))
    checkpoints = Checkpoints(run_dir / "checkpoints")
    try:
        state, _ = checkpoints.restore(like)
    finally:
        checkpoints.close()
    return config, spec, state.params, item_ids
