"""Session set-up for both test folders, loaded by pytest before any test module (and so before jax).

JAX's persistent compilation cache, one per test session, shared with the CLI tests' subprocesses
through the environment: the suite compiles the same few train steps again and again (every CLI
run, every resume), and on a 2-core CPU compiling costs more than the steps themselves (a 10-step
CLI run: 10.4 s without the cache, 5.1 s with it). A fresh folder per session, so a run of the
suite never reads what another session compiled; the cache holds XLA executables keyed by their
program, options and versions, so what a test computes is unchanged.
"""

import os
import shutil
import tempfile

import pytest

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="gan-jax-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # small programs too: there are many
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
else:  # the caller chose a cache (and keeps it)
    _CACHE = None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)
