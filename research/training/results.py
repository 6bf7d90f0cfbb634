"""Results of a finished run: `results.json` (flat metrics), `results.md` (tables), PNG plots.

In a multi-process run only process 0 writes (`workdir.is_writer`); the others compute the same
results and skip the files. Reading (`read_results`, `cached_result`) works in every process.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from research.training import identity  # noqa: E402
from research.training.workdir import is_writer  # noqa: E402

_IDENTITY_KEY = "_run_config"

Row = Mapping[str, Any]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def markdown_table(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    """Rows (dicts) as a markdown table; floats in 4 significant digits."""
    if not rows:
        return "(no rows)\n"
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _json_value(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_results(
    workdir: str,
    metrics: Mapping[str, Any],
    *,
    title: str,
    tables: Mapping[str, Sequence[Row]] | None = None,
    plots: Sequence[str] = (),
    notes: str = "",
) -> None:
    """Writes `results.json` (the flat `metrics`) and `results.md` (title, tables, plot links).

    `tables` maps a caption to its rows; `plots` are PNG file names inside `workdir`. Only
    process 0 of a multi-process run writes.
    """
    if not is_writer():
        return
    os.makedirs(workdir, exist_ok=True)
    flat = {k: _json_value(v) for k, v in metrics.items()}
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(flat, f, indent=2, sort_keys=True)
    parts = [f"# {title}\n"]
    if notes:
        parts.append(notes.strip() + "\n")
    for caption, rows in (tables or {}).items():
        parts.append(f"## {caption}\n\n{markdown_table(rows)}")
    if not tables:
        parts.append(markdown_table([{"metric": k, "value": v} for k, v in flat.items()]))
    for plot in plots:
        parts.append(f"![{os.path.splitext(plot)[0]}]({plot})\n")
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write("\n".join(parts))


def _numpy_to_python(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def read_results(workdir: str) -> dict[str, Any]:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def write_json(path: str, obj: Mapping[str, Any]) -> None:
    """Writes `obj` as JSON at `path` atomically (a temporary file renamed into place), so a
    run killed while writing never leaves a truncated file behind (nor a process reading it
    meanwhile sees one). Only process 0 of a multi-process run writes."""
    if not is_writer():
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_numpy_to_python)
    os.replace(tmp, path)


def save_arrays(path: str, tree: Any) -> None:
    """Saves a pytree of arrays (e.g. parameters; replicated jax.Arrays are fetched) as .npz
    at `path`, one array per leaf named by its "/"-joined path ("params/Dense_0/kernel"),
    atomically (a temporary file renamed into place). Only process 0 of a multi-process run
    writes. `np.load(path)` reads it back by those names."""
    if not is_writer():
        return
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    arrays = {
        jax.tree_util.keystr(key, simple=True, separator="/"): np.asarray(leaf)
        for key, leaf in leaves
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def cached_result(
    path: str,
    compute: Callable[[], Mapping[str, Any]],
    *,
    reuse: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """The finished run's result at `path` (a JSON object), else `compute()` written there.

    A re-run of a finished run (seed, method, stage, block) reads its result back instead of
    training again. `reuse(previous)` may refuse a stored result whose settings differ from the
    current ones; `compute` then runs again and overwrites it. The run identity
    (`identity.current()`) is stored with the result under `_run_config`; a result written by a
    run of another config raises `RunMismatchError` instead of being reused.

    In a multi-process run every process reads the stored result or computes (so every process
    takes part in the collectives of `compute`), and process 0 alone writes the file.
    """
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        identity.check_stored(previous.pop(_IDENTITY_KEY, None), f"result {path}")
        if reuse is None or reuse(previous):
            logging.info("read the finished run's result back from %s", path)
            return previous
    result = dict(compute())
    run_config = identity.current()
    write_json(path, result if run_config is None else {**result, _IDENTITY_KEY: run_config})
    return result


def save_figure(fig: plt.Figure, path: str) -> str:
    """Saves `fig` as PNG at `path` (folders created) and closes it; returns the path. Only
    process 0 of a multi-process run writes (the others just close the figure)."""
    if is_writer():
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def line_plot(
    path: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
) -> str:
    """One line per `series[name] = (x, y)`; saved as PNG at `path`."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name, marker="o" if len(x) < 30 else None)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def bar_plot(
    path: str,
    values: Mapping[str, float],
    *,
    errors: Mapping[str, float] | None = None,
    ylabel: str,
    title: str = "",
) -> str:
    """Bars with optional error bars (e.g. mean and std over seeds); saved as PNG at `path`."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(names) + 2), 4))
    yerr = [errors.get(n, 0.0) for n in names] if errors else None
    ax.bar(names, [values[n] for n in names], yerr=yerr, capsize=4)
    ax.set(ylabel=ylabel, title=title)
    ax.tick_params(axis="x", rotation=30)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)
