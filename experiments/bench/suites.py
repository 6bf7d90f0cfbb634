"""Which benchmark modules `ops.py` and `gpu_check.py` run (each exposes `benchmark(quick)`
and/or `gpu_check()`)."""

OP_SUITES = {
    "gather": "experiments.bench.ops_gather",
    "nearest": "experiments.bench.ops_nearest",
    "anderson": "experiments.bench.ops_anderson",
}

# The op suites plus the papers' device checks.
GPU_CHECK_SUITES = {**OP_SUITES, "bifeat": "experiments.bench.bifeat"}
