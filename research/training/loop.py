"""The shared training loop: resume, data-parallel steps, metrics, progress, checkpoints; in one
process or in every process of a multi-process run (`research.training.distributed`)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from research.training import distributed
from research.training.checkpoint import Checkpointer
from research.training.errors import NonFiniteError, TimeBudgetExceeded
from research.training.metrics import MetricWriter
from research.training.parallel import queued_calls_can_deadlock, shard_batch
from research.training.progress import progress_bar
from research.training.train_state import TrainState
from research.training.workdir import sync


def train_loop(
    *,
    workdir: str,
    state: TrainState,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]],
    batch_fn: Callable[[int], Any],
    num_steps: int,
    mesh: jax.sharding.Mesh,
    checkpoint_every: int,
    keep_checkpoints: int = 3,
    log_every: int = 50,
    steps_per_call: int = 1,
    desc: str = "train",
    eval_fn: Callable[[TrainState], dict[str, Any]] | None = None,
    eval_every: int | None = None,
    deadline: float | None = None,
    min_calls: int = 1,
) -> TrainState:
    """Runs `train_step` until `state.step == num_steps`, resuming from `workdir/checkpoints`.

    Args:
      state: the initial state (also the template to restore a checkpoint into).
      train_step: from `parallel.make_train_step` (same `steps_per_call`).
      batch_fn: `step -> batch` for the call starting at `step`: [B, ...] leaves, or
        [steps_per_call, B, ...] (in a run of several processes, this process's rows of B;
        see below). It must be a pure function of `step` (e.g. seeded by the step),
        so that a resumed run sees exactly the batches an uninterrupted run sees.
      num_steps: optimizer steps to run; like every count below it is rounded up to whole
        calls (`round_to_calls`), so callers that size a schedule by it should round the same way.
      checkpoint_every: save every this many steps, and at the end.
      log_every: fetch metrics to the host and log them every this many steps (the only host
        round-trips of the loop besides checkpoints and evaluation; on a CPU mesh of several
        devices the loop also waits for each call, `parallel.queued_calls_can_deadlock`).
      eval_fn: optional `state -> metrics`, run every `eval_every` steps and at the end.
      deadline: optional `time.monotonic()` time after which no further call starts: the loop
        saves the state reached and raises TimeBudgetExceeded. It is checked before each call
        once `min_calls` calls of this invocation have run (default 1: every invocation makes
        progress, so a run stopped and resumed any number of times ends where an uninterrupted
        one does; 0: a deadline that has passed stops the loop before it trains at all, as a
        run of several loops sharing one deadline needs).

    Writes `metrics.jsonl` and TensorBoard events into `workdir`; returns the final state. The
    logged `steps_per_s` covers the training steps of each interval, evaluation excluded
    (`metrics.steady_steps_per_second` summarises it).

    Raises NonFiniteError when the loss fetched at a logging step is NaN or infinite, or a state
    due to be saved holds one (checked on the host copy the save makes anyway, so the guard adds
    no round-trip); the checkpoints written before it stay, and a re-run resumes from the last.

    Several processes (`distributed.is_multi_process()`): every process calls `train_loop` with
    the same arguments. `mesh` must span every process's devices: pass
    `distributed.global_mesh()` (`parallel.data_mesh()` defaults to this process's devices
    only) and build `train_step` on it. `state` must be the same in every process (e.g. built
    from the same seed); it is replicated over `mesh` and every process holds all of it.
    `batch_fn` returns THIS PROCESS'S rows of the global batch, `distributed.process_rows(B)`
    (a pure function of the step: every process derives the global batch's order from the
    step, then builds only its rows), and `distributed.assemble_batch` joins them into the
    global arrays; so 1 process of N devices and P processes of N / P devices train on the
    same batches and reach the same parameters (up to the order of float additions in the
    cross-process all-reduce). Metrics are read from replicated arrays, so every process sees
    the same values and raises the same errors; process 0 alone writes metrics.jsonl,
    TensorBoard events and the checkpoint meta files, while every process takes part in
    orbax's saves (`Checkpointer`). The deadline is process 0's clock: it tells the others
    whether to stop, so all stop before the same call. `workdir` must be on a file system every
    process sees; when `train_loop` returns, every process may read its files.
    """
    num_steps = round_to_calls(num_steps, steps_per_call)
    checkpoint_every = round_to_calls(checkpoint_every, steps_per_call)
    log_every = max(steps_per_call, round_to_calls(log_every, steps_per_call))
    eval_every = round_to_calls(eval_every, steps_per_call) if eval_every else None
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), save_every=checkpoint_every, keep=keep_checkpoints
    )
    multi_process = distributed.is_multi_process()
    # Replicated first, so that a checkpoint is restored straight into the mesh's sharding.
    state = distributed.replicate(state, mesh)
    state, resumed = checkpointer.restore_latest(state)
    start = 0 if resumed is None else resumed
    if resumed is not None:
        logging.info("resuming %s from step %d", desc, start)
    place_batch = distributed.assemble_batch if multi_process else shard_batch
    writer = MetricWriter(workdir, resume_step=resumed)
    bar = progress_bar(num_steps, desc=desc, initial=start)
    last_time, last_step = time.perf_counter(), start
    wait_each_call = queued_calls_can_deadlock(mesh)
    try:
        for step in range(start, num_steps, steps_per_call):
            calls_run = (step - start) // steps_per_call
            if (
                deadline is not None
                and calls_run >= min_calls
                and _deadline_passed(deadline, multi_process)
            ):
                if calls_run:
                    checkpointer.save(step, state, force=True)
                raise TimeBudgetExceeded(desc, step, state)
            batch = place_batch(batch_fn(step), mesh, steps_per_call=steps_per_call)
            state, metrics = train_step(state, batch)
            if wait_each_call:
                jax.block_until_ready(state)
            done = step + steps_per_call
            bar.update(steps_per_call)
            is_eval = eval_fn is not None and (
                done == num_steps or (eval_every and done % eval_every == 0)
            )
            if done % log_every == 0 or done == num_steps or is_eval:
                scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if not math.isfinite(scalars["loss"]):
                    writer.write(done, scalars)
                    raise _non_finite_loss(desc, done, scalars["loss"], checkpointer)
                now = time.perf_counter()
                scalars["steps_per_s"] = (done - last_step) / max(now - last_time, 1e-9)
                last_time, last_step = now, done
                if is_eval:
                    scalars.update({f"eval/{k}": v for k, v in eval_fn(state).items()})
                    last_time = time.perf_counter()  # the next interval times training only
                writer.write(done, scalars)
                bar.set_postfix(loss=f"{scalars['loss']:.4g}")
                if bar.disable:
                    logging.info("%s step %d/%d: %s", desc, done, num_steps, log_line(scalars))
            checkpointer.save(done, state, force=done == num_steps)
    finally:
        bar.close()
        writer.close()
        checkpointer.close()
    # Several processes: none returns before process 0 has closed metrics.jsonl, so that every
    # process may read the workdir's files once train_loop returns.
    sync(f"train_loop {desc}: {os.path.abspath(workdir)} done")
    return state


def _deadline_passed(deadline: float, multi_process: bool) -> bool:
    """Whether `deadline` has passed; in a multi-process run by process 0's clock, told to every
    process (a collective), so that all stop before the same call."""
    passed = time.monotonic() > deadline
    if multi_process:
        passed = bool(multihost_utils.broadcast_one_to_all(np.int32(passed)))
    return passed


def _non_finite_loss(desc: str, step: int, loss: float, checkpointer: Checkpointer):
    steps = checkpointer.all_steps()
    kept = f"step {steps[-1]} in {checkpointer.directory}" if steps else "none"
    return NonFiniteError(
        f"{desc}: the loss is {loss} at step {step}; training stopped (last finite checkpoint: "
        f"{kept}); lower the learning rate or check the data"
    )


def round_to_calls(count: int, steps_per_call: int) -> int:
    """`count` steps rounded up to whole jitted calls of `steps_per_call` steps."""
    if count < 0 or steps_per_call < 1:
        raise ValueError(f"need count >= 0 and steps_per_call >= 1, got {count}, {steps_per_call}")
    return -(-count // steps_per_call) * steps_per_call


def log_line(scalars: dict[str, float]) -> str:
    """The short per-step log text: the loss, evaluation metrics and the step rate (every
    other metric is in metrics.jsonl and TensorBoard)."""
    shown = {"loss": scalars["loss"]}
    shown.update({k.removeprefix("eval/"): v for k, v in scalars.items() if k.startswith("eval/")})
    text = ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
    return f"{text} ({scalars['steps_per_s']:.3g} steps/s)"
