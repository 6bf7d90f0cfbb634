"""The benchmark binaries import each other's suites: they must load together in one process."""

import subprocess
import sys

import pytest
from absl import app

from experiments.bench.suites import OP_SUITES, load_suites
from tests.conftest import REPO_ROOT

_LOAD_BESIDE_GPU_CHECK = """
from experiments.bench import gpu_check  # defines its absl flags, as in its runs
from experiments.bench.suites import GPU_CHECK_SUITES, load_suites
modules = load_suites(list(GPU_CHECK_SUITES), GPU_CHECK_SUITES)
assert all(hasattr(m, "gpu_check") or hasattr(m, "benchmark") for m in modules.values())
"""


def test_every_suite_imports_beside_gpu_check():
    # A suite that defines absl flags at import time collides with the binary's own flags (e.g. a
    # second --out), which only shows up when gpu_check.py loads it. A fresh process, since the
    # flag registry is global and other tests import binaries with their own --out.
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_BESIDE_GPU_CHECK],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unknown_suite_names_the_choices():
    with pytest.raises(app.UsageError, match="gather"):
        load_suites(["gather", "nope"], OP_SUITES)
