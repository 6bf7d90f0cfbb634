"""Shared timing and record helpers for the benchmarks (experiments/bench/*).

Every benchmark measures its contenders side by side in one process and reports records of one
schema, so tables and JSON files from different benchmarks read the same way.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from research.training.results import markdown_table as format_table  # noqa: F401 (re-export)


def block(x: Any) -> Any:
    """Waits for every array in the pytree `x` (no-op for numpy / Python values)."""
    return jax.block_until_ready(x)


def median_seconds(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` calls after `warmup` untimed calls.

    `fn` must return its result so that asynchronous JAX work is waited for.
    """
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def record(
    op: str,
    impl: str,
    shape: Sequence[int] | str,
    dtype: str,
    seconds: float,
    *,
    bytes_moved: int | None = None,
    baseline_seconds: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One benchmark row. `ratio` is baseline_seconds / seconds (> 1: faster than the baseline)."""
    row: dict[str, Any] = {
        "op": op,
        "impl": impl,
        "shape": list(shape) if not isinstance(shape, str) else shape,
        "dtype": dtype,
        "seconds": seconds,
        "bytes_moved": bytes_moved,
        "gb_per_s": (bytes_moved / seconds / 1e9) if bytes_moved and seconds > 0 else None,
        "ratio_vs_baseline": (baseline_seconds / seconds) if baseline_seconds else None,
    }
    row.update(extra)
    return row


def failure_record(
    op: str, impl: str, shape: Sequence[int] | str, dtype: str, err: BaseException, **extra: Any
) -> dict[str, Any]:
    """The row of a contender that raised (e.g. a kernel that does not lower): NaN seconds and
    the error text, so a benchmark reports the failure and goes on."""
    error = f"{type(err).__name__}: {str(err)[:300]}"
    return record(op, impl, shape, dtype, float("nan"), error=error, **extra)


def write_json(path: str, rows: Sequence[dict[str, Any]], **meta: Any) -> None:
    """Writes {"meta": {...device, jax version...}, "records": rows} to `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta = {
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(),
        **meta,
    }
    with open(path, "w") as f:
        json.dump({"meta": meta, "records": list(rows)}, f, indent=1, default=float)
