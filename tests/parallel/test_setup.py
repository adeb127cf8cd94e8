"""Flags, environment variables and mode resolution of gru_jax.train.parallel (no devices used)."""

import argparse
import dataclasses

import pytest

from gru_jax.train import parallel


def _parse(argv):
    parser = argparse.ArgumentParser()
    parallel.add_parallel_arguments(parser)
    return parser.parse_args(argv)


def test_flags_parse():
    args = _parse(
        [
            "--parallel",
            "pmap",
            "--cpu-devices",
            "4",
            "--coordinator",
            "10.0.0.1:1234",
            "--num-processes",
            "2",
            "--process-id",
            "1",
        ]
    )
    assert (args.parallel, args.cpu_devices, args.coordinator) == ("pmap", 4, "10.0.0.1:1234")
    assert (args.num_processes, args.process_id) == (2, 1)


def test_flags_default_to_nothing(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    args = _parse([])
    assert args.parallel is None
    where = parallel.processes_from(args)
    assert where == parallel.Processes(coordinator=None, num_processes=None, process_id=None)
    parallel.initialize(**dataclasses.asdict(where))  # one process: nothing to initialise


def test_unknown_mode_is_rejected():
    with pytest.raises(SystemExit):
        _parse(["--parallel", "ring"])
    with pytest.raises(ValueError, match="unknown parallel mode"):
        parallel.resolve_mode("ring")


def test_several_processes_need_a_coordinator(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    where = parallel.processes_from(_parse([]))
    assert (where.num_processes, where.process_id) == (2, 0)
    with pytest.raises(ValueError, match="several processes need a coordinator"):
        parallel.initialize(**dataclasses.asdict(where))


def test_coordinator_needs_process_count_and_index():
    with pytest.raises(ValueError, match="num_processes and process_id"):
        parallel.initialize(coordinator="127.0.0.1:1", num_processes=2)


@pytest.mark.parametrize(
    "mode, devices, want",
    [("auto", 1, "none"), ("auto", 8, "sharding"), ("pmap", 1, "pmap"), ("none", 8, "none")],
)
def test_resolve_mode(mode, devices, want):
    assert parallel.resolve_mode(mode, devices) == want


def test_config_key():
    from gru_jax.config import Config

    assert Config().parallel == "none"
    assert Config().replace(parallel="auto").parallel == "auto"
    with pytest.raises(ValueError, match="parallel"):
        Config().replace(parallel="ring")


def test_batch_split_names_the_batch_the_devices_and_the_fix():
    parallel.check_batch_split(80, 4, "sharding")  # 20 rows per device
    with pytest.raises(ValueError, match=r"batch_size 81 does not split over the 4 devices of "
                                         r"the 'pmap' mode; choose a multiple of 4"):  # fmt: skip
        parallel.check_batch_split(81, 4, "pmap")


@pytest.mark.parametrize("text", ["0", "-2", "100000", "four"])
def test_cpu_device_count_is_bounded_by_the_flag(text, capsys):
    # 100,000 virtual devices took minutes and gigabytes before anything failed
    with pytest.raises(SystemExit):
        _parse(["--cpu-devices", text])
    assert (
        f"an integer from 1 to {parallel.MAX_CPU_DEVICES}, got '{text}'" in capsys.readouterr().err
    )


def test_an_environment_variable_that_is_not_an_integer_is_named(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "abc")
    with pytest.raises(ValueError, match=r"environment variable JAX_NUM_PROCESSES='abc' is not"):
        parallel.processes_from(_parse([]))
    # a flag given wins over the environment
    assert parallel.processes_from(_parse(["--num-processes", "2"])).num_processes == 2
