"""Which benchmark modules `ops.py` and `gpu_check.py` run (each exposes `benchmark(quick)`
and/or `gpu_check()`)."""

import importlib
from types import ModuleType

from absl import app

OP_SUITES = {
    "gather": "experiments.bench.ops_gather",
    "nearest": "experiments.bench.ops_nearest",
    "anderson": "experiments.bench.ops_anderson",
}

# The op suites plus the papers' device checks.
GPU_CHECK_SUITES = {
    **OP_SUITES,
    "bifeat": "experiments.bench.bifeat",
    "kge": "experiments.bench.kge",
    "jko_iflow": "experiments.bench.jko_iflow",
}


def load_suites(names: list[str], suites: dict[str, str]) -> dict[str, ModuleType]:
    """Imports the named suites in order; a UsageError naming the choices for unknown names."""
    unknown = sorted(set(names) - set(suites))
    if unknown:
        raise app.UsageError(f"unknown suite(s) {unknown}; choose from {', '.join(suites)}")
    return {name: importlib.import_module(suites[name]) for name in names}
