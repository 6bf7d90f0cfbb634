"""Metric logging: `metrics.jsonl` (one JSON object per logged step) and TensorBoard events.

In a multi-process run only process 0 writes (`workdir.is_writer`); reading works everywhere.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorboardX import SummaryWriter

from research.training.workdir import is_writer


def _to_python(value: Any) -> Any:
    """Scalars (numpy / jax) as plain Python numbers; NaN/inf as strings (valid JSON)."""
    value = np.asarray(value).item() if np.ndim(value) == 0 else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricWriter:
    """Appends `{"step": s, **scalars}` lines to `workdir/metrics.jsonl` and TensorBoard events.

    When a run resumes from step `resume_step`, records after that step (written by the
    interrupted run after its last checkpoint) are dropped from both outputs, so the log of a
    resumed run reads like the log of an uninterrupted one.

    In a multi-process run the writer of every process but process 0 writes nothing (each
    process logs the same values: the loop fetches them from replicated arrays).
    """

    def __init__(self, workdir: str, *, resume_step: int | None = None):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not is_writer():
            return
        os.makedirs(workdir, exist_ok=True)
        if resume_step is None:
            open(self.path, "w").close()
        else:
            self._truncate_after(resume_step)
        purge = None if resume_step is None else resume_step + 1
        # A unique suffix: a resumed run must not overwrite the first run's event file.
        suffix = f".{os.getpid()}.{time.time_ns()}"
        self._tb = SummaryWriter(
            os.path.join(workdir, "tensorboard"), purge_step=purge, filename_suffix=suffix
        )

    def _truncate_after(self, step: int) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self.path, "w") as f:
            f.writelines(kept)

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Logs scalar metrics at `step` (values may be jax/numpy scalars)."""
        if self._tb is None:  # not the writing process
            return
        record = {"step": int(step), **{k: _to_python(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)):
                self._tb.add_scalar(name, value, global_step=int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The records of `workdir/metrics.jsonl`, in order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_config(workdir: str, config: Any) -> str:
    """Writes the resolved ml_collections config to `workdir/config.json` (atomically: other
    processes may read it meanwhile); returns the path. Only process 0 of a multi-process run
    writes."""
    path = os.path.join(workdir, "config.json")
    if not is_writer():
        return path
    os.makedirs(workdir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def steady_steps_per_second(workdir: str) -> float | None:
    """Median training steps/s of a loop's `metrics.jsonl`, or None before any record.

    The first logged interval includes compilation and is dropped when there are others;
    evaluation time is not in any interval (`loop.train_loop` times training only).
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rates = [r["steps_per_s"] for r in read_metrics(workdir) if "steps_per_s" in r]
    rates = rates[1:] if len(rates) > 1 else rates
    return float(np.median(rates)) if rates else None
