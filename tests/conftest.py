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
XLA_CACHE_ENV = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    "JAX_COMPILATION_CACHE_MAX_SIZE": str(2**31),
}
_OWN_CACHE = pytest.StashKey[str]()


def pytest_configure(config):
    # The first process of a run (pytest itself, or xdist's controller before it starts its
    # workers) makes the folder; the workers and every subprocess inherit it through the
    # environment. A cache folder the user set is used as it is, and kept.
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="gru_jax-tests-xla-cache-")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
        config.stash[_OWN_CACHE] = folder
    for key, value in XLA_CACHE_ENV.items():
        os.environ.setdefault(key, value)
    # This process imported jax before the variables were set.
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    for key in XLA_CACHE_ENV:
        value = os.environ[key]
        jax.config.update(key.lower(), float(value) if key.endswith("_SECS") else int(value))


def pytest_unconfigure(config):
    folder = config.stash.get(_OWN_CACHE, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA
