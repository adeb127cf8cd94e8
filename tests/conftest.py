"""Shared test setup: float32 matmuls at full precision, one XLA compilation cache per test run,
paths to ../shared/data."""

import os
import pathlib
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"

# Most of the suite's time is XLA:CPU compiling the same small programs again: every test
# builds its own trainer, and the CLI and multi-device tests start fresh processes. JAX's
# persistent cache lets them share compiled programs (tests/train/test_loop.py: 138 -> 78 s;
# the whole suite 12.5 -> 11.3 min, one run each on 2 cores: the multi-device subprocesses
# compile programs of their own device counts).
# Its folder lives for one run only, so every run still compiles each program once. The size
# limit turns on JAX's file lock, so that no xdist worker or subprocess reads an entry that
# another process is still writing; the lock's holder scans the whole folder on every write, so
# only programs that take 0.2 s or more to compile are kept (caching every small op made the
# suite slower than none).
XLA_CACHE = {
    "jax_persistent_cache_min_compile_time_secs": 0.2,
    "jax_persistent_cache_min_entry_size_bytes": -1,
    "jax_compilation_cache_max_size": 2**31,
}
_OWN_CACHE = pytest.StashKey[str]()


def pytest_configure(config):
    # The first process of a run (pytest itself, or xdist's controller before it starts its
    # workers) makes the folder; the workers and every subprocess read it, and the settings,
    # from the environment when they import jax. A cache folder the user set is left as it is.
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="gru_jax-tests-xla-cache-")
    config.stash[_OWN_CACHE] = folder
    for name, value in {"jax_compilation_cache_dir": folder, **XLA_CACHE}.items():
        os.environ[name.upper()] = str(value)
        jax.config.update(name, value)  # this process imported jax before


def pytest_unconfigure(config):
    folder = config.stash.get(_OWN_CACHE, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA
