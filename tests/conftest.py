"""Test set-up: 4 fake CPU devices so data-parallel code runs as on a multi-device host.

This must run before jax creates its backends, which conftest guarantees (it is imported
before any test module).
"""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")

assert jax.local_device_count() == 4, "tests expect 4 (fake) CPU devices"


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops jax's compilation caches after each test module. A pytest-xdist worker runs many
    modules in one process and every XLA:CPU executable keeps its code mapped in memory; a
    worker that kept them all reached tens of thousands of memory maps (the kernel allows 65,530
    per process) and once aborted inside a compiled call. Modules rarely share programs, so
    recompiling what a later module needs again costs little."""
    yield
    jax.clear_caches()
