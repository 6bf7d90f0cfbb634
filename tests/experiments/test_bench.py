"""The benchmark binaries import each other's suites: they must load together in one process."""

import pytest
from absl import app

from experiments.bench import gpu_check  # noqa: F401 - defines its absl flags, as in its runs
from experiments.bench.suites import GPU_CHECK_SUITES, OP_SUITES, load_suites


def test_every_suite_imports_beside_gpu_check():
    # A suite that defines absl flags at import time collides with the binaries' own flags
    # (e.g. a second --out), which only shows up when gpu_check.py loads it.
    modules = load_suites(list(GPU_CHECK_SUITES), GPU_CHECK_SUITES)
    assert all(hasattr(m, "gpu_check") or hasattr(m, "benchmark") for m in modules.values())
    assert set(OP_SUITES) <= set(GPU_CHECK_SUITES)


def test_unknown_suite_names_the_choices():
    with pytest.raises(app.UsageError, match="gather"):
        load_suites(["gather", "nope"], OP_SUITES)
