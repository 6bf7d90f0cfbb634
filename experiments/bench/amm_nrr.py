"""AMM-NRR on the shared pairs d1 and d2, AA vs plain MM, next to the authors' C++ timings
recorded on this 2-core CPU (shared/docs/PAPERS.md), plus a per-iteration profile.

    python -m experiments.bench.amm_nrr --out=DIR [--pairs=d1:8,d2:5] [--repeats=3] \
        [--dtype=float32] [--nu_start=median] [--sampling=current] [--reject_boundary] \
        [--unmatched_reg=welsch]

Solve time excludes compilation (reported separately) and the host set-up (graph, grid index);
it is the median over `repeats` solves. The CPU is shared: re-run on a quiet machine for the
README, and compare with the process CPU time when the wall time looks inflated.
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from threadpoolctl import threadpool_limits

from experiments.bench.timing import format_table, median_seconds, record, write_json
from experiments.configs.amm_nrr import get_config
from ops.nearest_grid import build_grid_index, grid_nearest, grid_nearest_cached, nearest_cache_init
from research.amm_nrr import energy as E
from research.amm_nrr import solver, train
from research.amm_nrr.graph import build_graph, normalise
from research.amm_nrr.linalg import banded_solve

# The authors' C++ build on this machine (PAPERS.md section 2): seconds, iterations, fit.
CPP = {
    ("d1", True): (2.07, 176, 0.00132),
    ("d1", False): (3.77, 300, 0.00133),
    ("d2", True): (1.40, 245, 0.0122),
    ("d2", False): (1.79, 300, 0.0124),
}

_OUT = flags.DEFINE_string("out", "bench_out/amm_nrr", "Output folder (amm_nrr.json).")
_PAIRS = flags.DEFINE_string("pairs", "d1:8,d2:5", "NAME:RADIUS pairs under the data dir.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Solves per contender (median reported).")
_DTYPE = flags.DEFINE_string("dtype", "float32", "float32 or float64.")
_NU_START = flags.DEFINE_string(
    "nu_start",
    "median",
    "The first stage's nu (solver.NU_STARTS): median, the official code's, like for like with the "
    "C++ timings (the default median_or_tail is the same on d1 and d2).",
)
_SAMPLING = flags.DEFINE_string(
    "sampling", "current", "Node sampling (graph.SAMPLINGS): current or authors (the C++'s)."
)
_REJECT_BOUNDARY = flags.DEFINE_bool(
    "reject_boundary", False, "Reject matches past the target's rim (solver.Options)."
)
_UNMATCHED_REG = flags.DEFINE_string(
    "unmatched_reg", "welsch", "Edges of nodes without data (solver.UNMATCHED_REGS)."
)


def profile_step(
    pair: train.Pair, result: solver.Result, options: solver.Options
) -> dict[str, float]:
    """Milliseconds per call of each part of one MM iteration at our converged result `result`
    of a solve with `options` (at the last stage's nu). "whole MM step" is the uncached step (full
    grid search); the solver uses the cached closest points."""
    dtype = jnp.dtype(options.dtype)
    norm = normalise(pair.source.vertices, pair.target.vertices)
    src = norm.apply(pair.source.vertices)
    graph = build_graph(
        pair.source, src, options.radius, coverage=options.coverage, sampling=options.sampling
    )
    problem = E.make_problem(src, graph, alpha=options.alpha, beta=options.beta, dtype=dtype)
    index = build_grid_index(np.asarray(norm.apply(pair.target.vertices), dtype))
    n = src.shape[0]
    x = jnp.asarray(result.x, dtype)
    q = jnp.asarray(norm.apply(result.deformed), dtype)
    nu = jnp.asarray(result.stages[-1]["nu_a"], dtype)
    far = solver.cutoff(dtype) * nu
    f_nn = jax.jit(lambda i, q: grid_nearest(i, q, max_distance=far)[0])
    closest = index.points[f_nn(index, q)]
    f_cached = jax.jit(lambda i, q, c: grid_nearest_cached(i, q, c, max_distance=far)[0])
    # A warm cache: candidates collected at the result itself (the usual case mid-stage).
    _, _, cache = grid_nearest_cached(index, q, nearest_cache_init(n, 3, solver.CANDIDATES, dtype))
    s = E.make_surrogate(problem, x, q, closest, nu, nu)
    f_def = jax.jit(lambda p, x: E.deform(p, x, n))
    f_rot = jax.jit(E.project_rotations)
    f_asm = jax.jit(lambda p, s: E.assemble(p, s, n))
    blocks, rhs = f_asm(problem, s)
    f_sol = jax.jit(banded_solve)
    f_step = jax.jit(lambda p, i, x: solver.mm_step(p, i, x, nu, nu, n))
    parts = {
        "closest points (grid)": lambda: f_nn(index, q),
        "closest points (cached)": lambda: f_cached(index, q, cache),
        "deform": lambda: f_def(problem, x),
        "SVD projection": lambda: f_rot(x),
        "assembly": lambda: f_asm(problem, s),
        "block Cholesky solve": lambda: f_sol(problem.layout, blocks, rhs),
        "whole MM step": lambda: f_step(problem, index, x),
    }
    with threadpool_limits(limits=1, user_api="blas"):
        return {k: 1e3 * median_seconds(fn, repeats=9) for k, fn in parts.items()}


def main(argv: list[str]) -> None:
    del argv
    if _DTYPE.value == "float64":
        jax.config.update("jax_enable_x64", True)
    config = get_config("small")
    config.pairs, config.solver.dtype = _PAIRS.value, _DTYPE.value
    config.solver.nu_start = _NU_START.value
    config.solver.sampling = _SAMPLING.value
    config.solver.reject_boundary = _REJECT_BOUNDARY.value
    config.solver.unmatched_reg = _UNMATCHED_REG.value
    rows, profiles = [], []
    for pair in train.load_pairs(config):
        scale = normalise(pair.source.vertices, pair.target.vertices).scale
        iters, options = {}, {}
        for use_aa in (True, False):
            opts = options[use_aa] = train.options_from(config, pair.radius, use_aa)
            walls, cpus, compiles = [], [], []
            for _ in range(_REPEATS.value):
                res = solver.register(pair.source, pair.target, opts)
                walls.append(res.solve_seconds)
                cpus.append(res.solve_cpu_seconds)
                compiles.append(res.compile_seconds)  # the first solve compiles, later ones hit
            iters[use_aa] = res
            cpp_s, cpp_it, cpp_fit = CPP.get((pair.name, use_aa), (None, None, None))
            rows.append(
                record(
                    "amm_nrr",
                    f"{pair.name} {'AA' if use_aa else 'MM'}",
                    [len(pair.source.vertices), len(pair.target.vertices), res.num_nodes],
                    _DTYPE.value,
                    statistics.median(walls),
                    baseline_seconds=cpp_s,
                    cpp_seconds=cpp_s,
                    iterations=res.iterations,
                    cpp_iterations=cpp_it,
                    compile_seconds=max(compiles),
                    setup_seconds=res.setup_seconds,
                    solve_cpu_seconds=statistics.median(cpus),
                    fit=solver.fit_metric(res.deformed, pair.target.vertices, scale),
                    cpp_fit=cpp_fit,
                    ms_per_iteration=1e3 * statistics.median(walls) / res.iterations,
                )
            )
        speed = train._aa_speedup(iters[True], iters[False])
        rows[-2]["aa_iteration_ratio_stage0"] = speed["aa_iteration_ratio"]
        profiles.append({"pair": pair.name, **profile_step(pair, iters[True], options[True])})
    print(
        format_table(
            rows,
            [
                "impl",
                "shape",
                "seconds",
                "cpp_seconds",
                "ratio_vs_baseline",
                "iterations",
                "cpp_iterations",
                "ms_per_iteration",
                "compile_seconds",
                "fit",
                "cpp_fit",
                "aa_iteration_ratio_stage0",
            ],
        )
    )
    print(
        "ratio_vs_baseline = C++ seconds / ours (> 1: faster than the C++ build); "
        "solve_cpu_seconds: process CPU time of the solve summed over threads (2 cores)."
    )
    print("\nPer-iteration profile (ms per call, near the converged result):")
    print(format_table(profiles))
    path = os.path.join(_OUT.value, "amm_nrr.json")
    write_json(path, rows, profile_ms=profiles, recorded_cpp=str(CPP), load=os.getloadavg())
    print(f"wrote {path} (load average {os.getloadavg()}, at {time.ctime()})")


if __name__ == "__main__":
    app.run(main)
