r"""Data-parallel training: the B session-parallel rows of a step split over devices and hosts.

Three modes build the same update (`resolve_mode` turns "auto" into one of them):

``none``
    one device, the plain ``jax.jit`` of `gru_jax.train.step.make_train_step` (the fast path).
``pmap``
    ``jax.pmap`` of the step with ``axis_name="data"``: each device holds B_local = B / D rows,
    gathers the step's B targets and row mask, scores its rows against all B targets and the
    n shared negatives, and takes its rows' share of the loss (divided by the global B). The
    dense and output-row gradients are summed with ``lax.psum`` and the input rows' gradients
    gathered, so every device applies the single-device update to its replica.
``sharding``
    ``jax.jit`` of the single-device step with ``NamedSharding`` over a 1-D device ``Mesh``
    (axis "data"): batch and carry split by rows, parameters and optimizer state replicated;
    the compiler inserts the gathers and all-reduces (GSPMD).

Equality with one device: both modes compute the single-device update for the same global
batch, up to the order of floating-point sums (about 1e-6 relative in float32). Dropout: the
sharding mode draws the single-device masks exactly (JAX's partitionable threefry is on by
default); pmap folds the device index into the key, so its masks are different (and
reproducible): compare pmap with one device at dropout 0.

Several hosts (``jax.distributed``): process p of P reads only its rows of the step, the
iterator's shard p of P (``[p * B / P, (p + 1) * B / P)``), and the global arrays are
assembled with ``jax.make_array_from_process_local_data``; the negative sampler is seeded alike
on every process, so the shared negatives agree without communication.

Checkpoints hold global arrays in one layout whatever the mode: replicated parameters and
optimizer state, the carry as (B, H) in global row order. A checkpoint written with N devices
restores with M devices, in any mode, as long as B is divisible by M.

Shapes: T steps per dispatch, B global rows, D devices (all processes), P processes,
B_local = B / D rows per device, H hidden units.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gru_jax.data import Batch
from gru_jax.train.step import StepData, TrainState

log = logging.getLogger(__name__)

MODES = ("none", "pmap", "sharding", "auto")
MAX_CPU_DEVICES = 4096  # virtual ones; 100,000 took minutes and gigabytes before failing
DATA_AXIS = "data"

# make_run(axis_name=...) -> run(state, data, supports) -> (state, losses (T,)): make_train_step
# with everything but the axis name bound.
MakeRun = Callable[[str | None], Callable[..., Any]]


# ---------------------------------------------------------------------------------------------
# Processes and devices
# ---------------------------------------------------------------------------------------------


def initialize(
    *,
    cpu_devices: int | None = None,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Sets up devices and processes; call before anything touches a JAX device.

    Args:
      cpu_devices: run on N virtual CPU devices (forces the CPU platform), e.g. to try the
        parallel modes on a laptop.
      coordinator: "HOST:PORT" of process 0 for ``jax.distributed.initialize``; "auto" lets JAX
        find the cluster itself (Cloud TPU pods, SLURM, Open MPI).
      num_processes, process_id: P and this process's index (with a HOST:PORT coordinator).
    """
    if cpu_devices is not None:
        try:
            check_cpu_devices(cpu_devices)
        except ValueError as e:
            raise ValueError(f"cpu_devices: {e}") from None
        try:
            jax.config.update("jax_platforms", "cpu")
            jax.config.update("jax_num_cpu_devices", int(cpu_devices))
        except RuntimeError as e:
            raise RuntimeError(
                f"cpu_devices (--cpu-devices) must be set before JAX starts: {e}"
            ) from None
    if coordinator is None:
        if num_processes not in (None, 1):
            raise ValueError("several processes need a coordinator address (HOST:PORT or auto)")
        if process_id not in (None, 0):  # else process 1 would train alone and write results
            raise ValueError(
                f"process id {process_id} needs a coordinator address (HOST:PORT or auto)"
            )
        return
    # CPU collectives across processes go through gloo (no effect on GPU or TPU devices).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator == "auto":
        try:
            jax.distributed.initialize()
        except ValueError as e:  # JAX's "coordinator_address should be defined."
            raise ValueError(
                "coordinator 'auto' found no cluster that JAX detects (Cloud TPU pod, SLURM, "
                f"Open MPI); give HOST:PORT, the process count and this process's index ({e})"
            ) from None
    else:
        if num_processes is None or process_id is None:
            raise ValueError("a HOST:PORT coordinator needs num_processes and process_id")
        # jax.distributed waits (minutes) until every process has connected; say so.
        log.info(
            "process %d of %d: waiting for all processes at the coordinator %s",
            process_id,
            num_processes,
            coordinator,
        )
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    log.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --parallel, --cpu-devices and the multi-process flags to a (sub)parser."""
    g = parser.add_argument_group("devices and hosts")
    g.add_argument(
        "--parallel",
        choices=MODES,
        default=None,
        help="data parallelism over devices: none, pmap, sharding (jit + NamedSharding) or auto "
        "(sharding when there is more than one device); overrides the config key 'parallel'",
    )
    g.add_argument(
        "--cpu-devices",
        type=_cpu_device_count,
        default=None,
        metavar="N",
        help=f"run on N virtual CPU devices, 1 to {MAX_CPU_DEVICES} (forces the CPU platform; "
        "for trying the parallel modes without accelerators); N > 1 means parallel auto unless "
        "--parallel, a parallel=... override or the config file says otherwise",
    )
    g.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="address of process 0 for jax.distributed (env JAX_COORDINATOR_ADDRESS); 'auto' "
        "lets JAX detect the cluster (Cloud TPU pods, SLURM, Open MPI)",
    )
    g.add_argument(
        "--num-processes",
        type=int,
        default=None,
        metavar="P",
        help="number of processes (env JAX_NUM_PROCESSES)",
    )
    g.add_argument(
        "--process-id",
        type=int,
        default=None,
        metavar="I",
        help="index of this process, 0 .. P-1 (env JAX_PROCESS_ID)",
    )


def check_cpu_devices(count: int | str) -> int:
    """A count of virtual CPU devices (or the text of --cpu-devices), bounded: they are for
    trying the parallel modes, and each costs memory and start-up time."""
    try:
        value = int(count)
    except ValueError:
        value = 0  # refused below, naming what was given
    if not 1 <= value <= MAX_CPU_DEVICES:
        raise ValueError(
            f"an integer from 1 to {MAX_CPU_DEVICES}, got {count!r} (each virtual device costs "
            "memory and start-up time)"
        )
    return value


def _cpu_device_count(text: str) -> int:
    """An argparse type for --cpu-devices (argparse shows only this error type's message)."""
    try:
        return check_cpu_devices(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class Processes:
    """Where this process sits in a multi-process run, from flags or the environment."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def processes_from(args: argparse.Namespace) -> Processes:
    """The --coordinator/--num-processes/--process-id flags, or JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES and JAX_PROCESS_ID where a flag is not given."""

    def env_int(name: str) -> int | None:
        value = os.environ.get(name, "").strip()
        if not value:
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"environment variable {name}={value!r} is not an integer") from None

    return Processes(
        coordinator=args.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None,
        num_processes=(
            args.num_processes if args.num_processes is not None else env_int("JAX_NUM_PROCESSES")
        ),
        process_id=args.process_id if args.process_id is not None else env_int("JAX_PROCESS_ID"),
    )


def resolve_mode(mode: str, num_devices: int | None = None) -> str:
    """ "auto" → "sharding" with more than one device, else "none"; other modes unchanged."""
    if mode not in MODES:
        raise ValueError(f"unknown parallel mode {mode!r}; expected one of {MODES}")
    if mode != "auto":
        return mode
    num_devices = jax.device_count() if num_devices is None else num_devices
    return "sharding" if num_devices > 1 else "none"


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh (axis "data") over all devices, each process's devices contiguous.

    Row block k of a step goes to the k-th device, so process p's devices hold the rows that
    process p reads (`SessionParallelIterator` shard p of P).
    """
    devices = jax.devices() if devices is None else devices
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (DATA_AXIS,))


# ---------------------------------------------------------------------------------------------
# The three modes
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DataParallel:
    """Places the train state and batches on the devices and runs the step, for one mode.

    The state between calls is in the mode's own layout (``place_state`` takes it there from the
    checkpoint layout: global shapes, carry (B, H)); ``checkpoint_state`` converts back, and
    ``restore_target`` turns a state in the checkpoint layout into the abstract arrays (with
    shardings) that orbax restores into, ``from_restored`` then placing the result.
    ``local_params`` gives one process-local copy of the parameters (evaluation, results).

    Attributes:
      mode: "none", "pmap" or "sharding".
      batch_size: B, the global rows of a step.
      num_devices: D, devices over all processes.
      data_shard, num_data_shards: this process's iterator shard (process index and count).
    """

    mode: str
    batch_size: int
    num_devices: int
    data_shard: int
    num_data_shards: int

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "num_devices": self.num_devices,
            "num_processes": self.num_data_shards,
            "rows_per_device": self.batch_size // self.num_devices,
        }

    # The subclasses implement these.
    def place_state(self, state: TrainState) -> TrainState:
        raise NotImplementedError

    def place_supports(self, supports: np.ndarray) -> Any:
        raise NotImplementedError

    def step(self, state: TrainState, batch: Batch, negatives: np.ndarray, supports: Any):
        """(state, losses (T,), rows (T,)): the step losses and the active rows over all hosts."""
        raise NotImplementedError

    def zero_carry(self, state: TrainState) -> TrainState:
        raise NotImplementedError

    def step_count(self, state: TrainState) -> int:
        raise NotImplementedError

    def checkpoint_state(self, state: TrainState) -> TrainState:
        raise NotImplementedError

    def restore_target(self, state: TrainState) -> TrainState:
        raise NotImplementedError

    def from_restored(self, state: TrainState) -> TrainState:
        raise NotImplementedError

    def local_params(self, state: TrainState) -> dict:
        raise NotImplementedError


class SingleDevice(DataParallel):
    """Mode "none": exactly the plain jitted step on the default device."""

    def __init__(self, make_run: MakeRun, batch_size: int):
        super().__init__("none", batch_size, 1, 0, 1)
        self._step = jax.jit(make_run(axis_name=None), donate_argnums=(0,))

    def place_state(self, state):
        return state

    def place_supports(self, supports):
        return jnp.asarray(supports)

    def step(self, state, batch, negatives, supports):
        data = StepData(batch.inputs, batch.targets, batch.resets, batch.mask, negatives)
        state, losses = self._step(state, data, supports)
        return state, losses, batch.mask.sum(axis=1)

    def zero_carry(self, state):
        return state._replace(carry=jax.tree.map(jnp.zeros_like, state.carry))

    def step_count(self, state):
        return int(state.step)

    def checkpoint_state(self, state):
        return state

    def restore_target(self, state):
        return state

    def from_restored(self, state):
        return state

    def local_params(self, state):
        return state.params


def check_batch_split(batch_size: int, num_devices: int, mode: str) -> None:
    """The B rows of a step must split evenly over the devices of a data-parallel mode."""
    if batch_size % num_devices:
        raise ValueError(
            f"batch_size {batch_size} does not split over the {num_devices} devices of the "
            f"{mode!r} mode; choose a multiple of {num_devices} (batch_size=...)"
        )


class _MeshParallel(DataParallel):
    """What the pmap and sharding modes share: the mesh, the row split and global arrays."""

    def __init__(self, mode: str, batch_size: int, devices: list | None = None):
        mesh = make_mesh(devices)
        n = mesh.devices.size
        check_batch_split(batch_size, n, mode)
        super().__init__(mode, batch_size, n, jax.process_index(), jax.process_count())
        self.mesh = mesh
        self.replicated = NamedSharding(mesh, P())
        self.rows = NamedSharding(mesh, P(DATA_AXIS))  # (B, ...) arrays split by rows

    def _state_shardings(self, state: TrainState) -> TrainState:
        like = jax.tree.map(lambda _: self.replicated, state)
        return like._replace(carry=jax.tree.map(lambda _: self.rows, state.carry))

    def _global(self, x: Any, sharding: NamedSharding) -> jax.Array:
        """A global array from a value that every process holds in full."""
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    def _from_local_rows(self, x: np.ndarray, sharding: NamedSharding, axis: int) -> jax.Array:
        """A global array from this process's block of rows (along ``axis``)."""
        shape = list(x.shape)
        shape[axis] *= self.num_data_shards
        return jax.make_array_from_process_local_data(sharding, x, tuple(shape))

    def _local_rows(self, x: np.ndarray) -> np.ndarray:
        """This process's block of the B rows of a full (B, ...) host array."""
        b = len(x) // self.num_data_shards
        return x[self.data_shard * b : (self.data_shard + 1) * b]

    def place_supports(self, supports):
        return self._global(supports, self.replicated)


class ShardingParallel(_MeshParallel):
    """Mode "sharding": ``jax.jit`` of the single-device step with ``NamedSharding``.

    TODO(#5): GSPMD partitions the scores by rows as intended, but adds all-to-alls around the
    loss and the row-sparse coalesce; sharding constraints inside the step could remove them.
    """

    def __init__(self, make_run: MakeRun, batch_size: int, devices: list | None = None):
        super().__init__("sharding", batch_size, devices)
        self._run = make_run(axis_name=None)
        self._batch = NamedSharding(self.mesh, P(None, DATA_AXIS))  # (T, B) arrays
        self._step = None  # jitted on first use, when the state's structure is known

    def _build(self, state: TrainState) -> None:
        shardings = self._state_shardings(state)
        data = StepData(*([self._batch] * 4), self.replicated)
        run = self._run

        def step(state, data, supports):
            state, losses = run(state, data, supports)
            return state, losses, jnp.sum(data.mask, axis=1)

        self._step = jax.jit(
            step,
            in_shardings=(shardings, data, self.replicated),
            out_shardings=(shardings, self.replicated, self.replicated),
            donate_argnums=(0,),
        )
        self._zeros = jax.jit(
            lambda c: jax.tree.map(jnp.zeros_like, c),
            out_shardings=shardings.carry,
            donate_argnums=(0,),
        )

    def place_state(self, state):
        shardings = self._state_shardings(state)
        if self.num_data_shards == 1:
            return jax.device_put(state, shardings)
        return jax.tree.map(self._global, state, shardings)

    def step(self, state, batch, negatives, supports):
        if self._step is None:
            self._build(state)
        arrays = [
            self._from_local_rows(a, self._batch, axis=1)
            for a in (batch.inputs, batch.targets, batch.resets, batch.mask)
        ]
        data = StepData(*arrays, self._global(negatives, self.replicated))
        state, losses, rows = self._step(state, data, supports)
        return state, losses.addressable_data(0), rows.addressable_data(0)

    def zero_carry(self, state):
        if self._step is None:
            self._build(state)
        return state._replace(carry=self._zeros(state.carry))

    def step_count(self, state):
        return int(state.step.addressable_data(0))

    def checkpoint_state(self, state):
        return state

    def restore_target(self, state):
        return jax.tree.map(_abstract, state, self._state_shardings(state))

    def from_restored(self, state):
        return state

    def local_params(self, state):
        return jax.tree.map(lambda x: x.addressable_data(0), state.params)


class PmapParallel(_MeshParallel):
    """Mode "pmap": ``jax.pmap`` of the step over this process's devices (axis "data").

    State layout: a leading axis of local devices on every leaf; parameters, optimizer state
    and step replicated, the carry (n_local, B_local, H) in global row order.
    """

    def __init__(self, make_run: MakeRun, batch_size: int, devices: list | None = None):
        super().__init__("pmap", batch_size, devices)
        local = [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]
        self.num_local = len(local)
        pmap = functools.partial(
            jax.pmap, axis_name=DATA_AXIS, devices=None if devices is None else local
        )
        run = make_run(axis_name=DATA_AXIS)

        def step(state, local, negatives, supports):
            state, losses = run(state, StepData(*local, negatives), supports)
            rows = jax.lax.psum(jnp.sum(local[3], axis=1), DATA_AXIS)
            return state, losses, rows

        self._step = pmap(step, in_axes=(0, 0, None, None), donate_argnums=(0,))
        self._put = pmap(lambda x: x)
        self._zeros = pmap(lambda c: jax.tree.map(jnp.zeros_like, c), donate_argnums=(0,))

    def _split(self, x: np.ndarray) -> np.ndarray:
        """(B_process, ...) rows → (n_local, B_local, ...)."""
        return x.reshape(self.num_local, -1, *x.shape[1:])

    def place_state(self, state):
        """From the checkpoint layout (any placement) to the pmap layout."""

        def host(x):
            x = jnp.asarray(x) if not isinstance(x, jax.Array) else x
            return np.asarray(x.addressable_data(0)) if x.is_fully_replicated else np.asarray(x)

        def replicate(x):
            x = host(x)
            return np.broadcast_to(x, (self.num_local, *x.shape))

        params, opt_state, step = jax.tree.map(
            replicate, (state.params, state.opt_state, state.step)
        )
        carry = jax.tree.map(lambda c: self._split(self._local_rows(host(c))), state.carry)
        return self._put(TrainState(params, opt_state, carry, step))

    def place_supports(self, supports):
        return jnp.asarray(supports)

    def step(self, state, batch, negatives, supports):
        # (T, B_process) → (n_local, T, B_local)
        local = [
            a.reshape(a.shape[0], self.num_local, -1).transpose(1, 0, 2)
            for a in (batch.inputs, batch.targets, batch.resets, batch.mask)
        ]
        state, losses, rows = self._step(state, tuple(local), negatives, supports)
        return state, losses.addressable_data(0)[0], rows.addressable_data(0)[0]

    def zero_carry(self, state):
        return state._replace(carry=self._zeros(state.carry))

    def step_count(self, state):
        return int(state.step.addressable_data(0)[0])

    def checkpoint_state(self, state):
        def first(x):
            return self._global(np.asarray(x.addressable_data(0))[0], self.replicated)

        def rows(c):
            local = np.concatenate([np.asarray(s.data) for s in _in_order(c)])
            local = local.reshape(-1, *local.shape[2:])  # (n_local * B_local, H)
            return self._from_local_rows(local, self.rows, axis=0)

        params, opt_state, step = jax.tree.map(first, (state.params, state.opt_state, state.step))
        return TrainState(params, opt_state, jax.tree.map(rows, state.carry), step)

    def restore_target(self, state):
        # Everything replicated: each process then takes its rows of the carry on the host.
        return jax.tree.map(lambda x: _abstract(x, self.replicated), state)

    def from_restored(self, state):
        return self.place_state(state)

    def local_params(self, state):
        return jax.tree.map(lambda x: x.addressable_data(0)[0], state.params)


def _abstract(x: jax.Array, sharding: NamedSharding) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def _in_order(x: jax.Array) -> list:
    """The addressable shards of a pmap array in the order of its leading axis."""
    return sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)


def build(
    mode: str, make_run: MakeRun, *, batch_size: int, devices: list | None = None
) -> DataParallel:
    """The `DataParallel` of ``mode`` ("auto" resolved) for steps of ``batch_size`` rows.

    ``devices``: a subset of ``jax.devices()`` to use (one process only; default: all).
    """
    if devices is not None and jax.process_count() > 1:
        raise ValueError("a subset of devices is for one process only")
    mode = resolve_mode(mode, None if devices is None else len(devices))
    if mode == "none":
        if jax.process_count() > 1:
            raise ValueError(
                "several processes need the parallel mode pmap, sharding or auto (config key "
                "parallel, or --parallel), not none"
            )
        return SingleDevice(make_run, batch_size)
    if mode == "pmap":
        return PmapParallel(make_run, batch_size, devices)
    return ShardingParallel(make_run, batch_size, devices)
