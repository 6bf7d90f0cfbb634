"""What the reliability guards cost per training step, on AnKGE's `wn18rr_rotate_small` state.

    python -m experiments.bench.guards [--workdir=DIR_OF_A_FINISHED_BASE_RUN]

The guards are (1) the NaN check of the loss at a logging step (a float the loop fetches anyway)
and (2) at a checkpoint save: the host copy, the non-finite scan and the sha256 of the state,
plus its meta file. Both are timed on the preset's real state (RotatE, 40,943 entities, dim 200,
Adam) and divided by the training time between two checks: log_every and checkpoint_every
steps at the step time of the preset (from `DIR/metrics.jsonl` of a run of it, or --step_seconds).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

import jax
import optax
from absl import app, flags

from experiments.bench.timing import median_seconds
from experiments.configs.ankge import get_config
from models.kge import KGEModel
from research.training.checkpoint import non_finite_leaves, tree_checksum
from research.training.metrics import steady_steps_per_second
from research.training.train_state import TrainState

_WORKDIR = flags.DEFINE_string("workdir", None, "A run of the preset (its base/ folder is read).")
_STEP_SECONDS = flags.DEFINE_float("step_seconds", None, "Step time, if no --workdir is given.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (median).")


def save_guard(state) -> str:
    """The checkpoint guard exactly as `Checkpointer.save` runs it (meta written to a temp dir)."""
    host = jax.device_get(state)
    if non_finite_leaves(host):
        raise AssertionError("the benchmark state is finite")
    meta = {"sha256": tree_checksum(host)}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(meta, f)
    return meta["sha256"]


def main(argv: list[str]) -> None:
    del argv
    config = get_config("wn18rr_rotate_small")
    model = KGEModel("rotate", 40943, 22, config.model.dim, config.model.gamma)
    optimizer = optax.adam(config.base.lr)
    state = TrainState.create(model.init(jax.random.PRNGKey(0)), optimizer, jax.random.PRNGKey(1))
    num_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    save_s = median_seconds(lambda: save_guard(state), repeats=_REPEATS.value)
    loss = 0.1
    start = time.perf_counter()
    for _ in range(100_000):
        math.isfinite(loss)
    loss_check_s = (time.perf_counter() - start) / 100_000
    if _WORKDIR.value:
        rate = steady_steps_per_second(os.path.join(_WORKDIR.value, "base"))
        step_s = 1.0 / rate
    else:
        step_s = _STEP_SECONDS.value
    save_every, log_every = config.checkpoint_every, config.log_every
    rows = {
        "state_megabytes": num_bytes / 1e6,
        "checkpoint_guard_seconds": save_s,
        "loss_check_seconds": loss_check_s,
        "step_seconds": step_s,
        "checkpoint_every": save_every,
        "log_every": log_every,
        "overhead_fraction": save_s / (save_every * step_s) + loss_check_s / (log_every * step_s),
    }
    for name, value in rows.items():
        print(f"{name:>26}: {value:.4g}")


if __name__ == "__main__":
    flags.mark_flags_as_required([])
    app.run(main)
