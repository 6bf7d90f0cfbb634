"""Seconds per training iteration of JKO-iFlow (and the end-to-end baseline) on this machine,
next to the official PyTorch code's figure recorded on the same 2-core CPU.

    python -m experiments.bench.jko_iflow [--out=bench_out/jko_iflow.json] [--width=128] ...

The official code was not run here (it is not available in this environment): its 0.19 s per
iteration (batch 2000, width 128, 3 RK4 sub-steps, rose) comes from
shared/data/densities2d/README.md and is printed as "recorded". Ours is measured with the real
training step (`make_train_step`, `steps_per_call` iterations per call), wall time and process
CPU time (CPU time is less sensitive to other processes sharing the cores).
"""

from __future__ import annotations

import os
import resource
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from experiments.bench.timing import format_table, record, write_json
from experiments.configs.jko_iflow import get_config
from models.flows import init_velocity
from research.jko_iflow import train
from research.jko_iflow.flow import ModelOptions, make_model
from research.jko_iflow.jko import BaselineOptions, JKOOptions
from research.training.parallel import data_mesh, replicate, shard_batch
from research.training.train_state import TrainState

RECORDED_OFFICIAL_S_PER_ITER = 0.19  # shared/data/densities2d/README.md (torch CPU, this machine)

_OUT = flags.DEFINE_string("out", "bench_out/jko_iflow.json", "JSON output path.")
_WIDTH = flags.DEFINE_integer("width", 128, "Hidden width.")
_BATCH = flags.DEFINE_integer("batch", 2000, "Batch size.")
_SUBSTEPS = flags.DEFINE_integer("substeps", 3, "RK4 steps per block.")
_STEPS = flags.DEFINE_integer("steps_per_call", 25, "Iterations per jitted call.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per contender (median reported).")
_BASELINE_BLOCKS = flags.DEFINE_integer("baseline_blocks", 8, "Blocks of the end-to-end CNF.")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _time_step(step_fn, state, batch, repeats: int, steps: int) -> tuple[float, float, float]:
    """(median wall s/iter, median CPU s/iter, compile + first call s).

    `state` must already be replicated on the step's mesh (as `train_loop` places it): an
    unplaced state would compile the step a second time on the first timed call."""
    start = time.perf_counter()
    state, _ = step_fn(state, batch)
    jax.block_until_ready(state)
    first = time.perf_counter() - start
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), _cpu_seconds()
        state, _ = step_fn(state, batch)
        jax.block_until_ready(state)
        walls.append((time.perf_counter() - t) / steps)
        cpus.append((_cpu_seconds() - c) / steps)
    return statistics.median(walls), statistics.median(cpus), first


def main(argv: list[str]) -> None:
    del argv
    config = get_config("rose")
    config.model.width, config.jko.batch_size = _WIDTH.value, _BATCH.value
    config.jko.num_substeps, config.steps_per_call = _SUBSTEPS.value, _STEPS.value
    k, b = _STEPS.value, _BATCH.value
    opts, baseline = JKOOptions(**config.jko), BaselineOptions(**config.baseline)
    model = make_model(ModelOptions(**config.model), 2)
    mesh = data_mesh(jax.local_devices()[:1])
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.normal(size=(k, b, 2)).astype(np.float32),
        "w2_weight": np.full((k, b), 2.0, np.float32),
    }
    rows = []
    step_fn = train.jko_train_step(opts, model, mesh, steps_per_call=k)
    state = TrainState.create(
        init_velocity(model, jax.random.PRNGKey(0)),
        train.jko_optimizer(opts),
        jax.random.PRNGKey(1),
    )
    wall, cpu, first = _time_step(
        step_fn,
        replicate(state, mesh),
        shard_batch(batch, mesh, steps_per_call=k),
        _REPEATS.value,
        k,
    )
    shape = [b, _WIDTH.value, _SUBSTEPS.value]
    rows.append(
        record(
            "jko_block_step",
            "official torch (recorded)",
            shape,
            "float32",
            RECORDED_OFFICIAL_S_PER_ITER,
            note="README figure, not re-run here",
        )
    )
    rows.append(
        record(
            "jko_block_step",
            "ours (jax)",
            shape,
            "float32",
            wall,
            baseline_seconds=RECORDED_OFFICIAL_S_PER_ITER,
            cpu_seconds=cpu,
            cpu_per_core_seconds=cpu / (os.cpu_count() or 1),
            compile_seconds=first,
        )
    )
    nb = _BASELINE_BLOCKS.value
    base_step, base_state = train.baseline_train_step(
        opts,
        baseline,
        model,
        mesh,
        num_blocks=nb,
        key=jax.random.PRNGKey(config.seed),
        steps_per_call=k,
    )
    base_batch = shard_batch({"x": batch["x"]}, mesh, steps_per_call=k)
    wall_b, cpu_b, first_b = _time_step(
        base_step, replicate(base_state, mesh), base_batch, max(2, _REPEATS.value // 2), k
    )
    rows.append(
        record(
            "cnf_baseline_step",
            f"ours (jax), {nb} blocks end to end",
            shape,
            "float32",
            wall_b,
            cpu_seconds=cpu_b,
            compile_seconds=first_b,
        )
    )
    print(
        format_table(rows, ["op", "impl", "shape", "seconds", "ratio_vs_baseline", "cpu_seconds"])
    )
    print(
        f"JKO-iFlow block step: {wall:.4f} s/iter measured (wall, median of {_REPEATS.value} calls "
        f"of {k} iterations) vs {RECORDED_OFFICIAL_S_PER_ITER} s/iter RECORDED for the official "
        f"code (README, not re-run): {RECORDED_OFFICIAL_S_PER_ITER / wall:.2f}x. Process CPU time "
        f"{cpu:.4f} s/iter over {os.cpu_count()} cores, i.e. "
        f"{RECORDED_OFFICIAL_S_PER_ITER * (os.cpu_count() or 1) / cpu:.2f}x if every core were "
        "free for this process (other processes were sharing the CPU when the wall time is worse)."
    )
    write_json(_OUT.value, rows, recorded_official_s_per_iter=RECORDED_OFFICIAL_S_PER_ITER)


if __name__ == "__main__":
    app.run(main)
