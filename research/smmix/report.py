"""Summaries of SMMix runs: top-1 mean / std per method, `results.json`, `results.md`, plots."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from research.smmix import plots
from research.training import results as lib_results


def summarize(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-method rows in first-seen order: top-1 mean and sample std (ddof 1) over seeds,
    the per-seed values, seconds per step and per run."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == method]
        top1 = np.array([r["top1"] for r in rs])
        ema = [r["top1_ema"] for r in rs if r.get("top1_ema") is not None]
        sps = [r["seconds_per_step"] for r in rs if r.get("seconds_per_step")]
        rows.append(
            dict(
                method=method,
                seeds=len(rs),
                top1_mean=float(top1.mean()),
                top1_std=float(top1.std(ddof=1)) if len(rs) > 1 else 0.0,
                top1_per_seed=[float(v) for v in top1],
                top1_ema_mean=float(np.mean(ema)) if ema else None,
                seconds_per_step=float(np.median(sps)) if sps else None,
                seconds_per_run=float(np.mean([r["seconds"] for r in rs])),
                smmix_fraction=float(np.mean([r["smmix_fraction"] for r in rs])),
            )
        )
    return rows


def compare(rows: Sequence[Mapping[str, Any]], a: str, b: str) -> dict[str, float] | None:
    """Mean difference a - b (points of top-1) and its standard error from the seed spreads
    (sqrt(std_a^2 / n_a + std_b^2 / n_b)); None if a method is missing."""
    by = {r["method"]: r for r in rows}
    if a not in by or b not in by:
        return None
    ra, rb = by[a], by[b]
    diff = 100 * (ra["top1_mean"] - rb["top1_mean"])
    se = 100 * math.sqrt(ra["top1_std"] ** 2 / ra["seeds"] + rb["top1_std"] ** 2 / rb["seeds"])
    return {"diff_points": diff, "stderr_points": se, "z": diff / se if se > 0 else float("inf")}


COMPARISONS = (
    ("smmix", "cutmix"),
    ("smmix", "none"),
    ("smmix", "mixup"),
    ("smmix", "smmix_no_fine"),
    ("smmix", "smmix_no_con"),
)


def write_results(workdir: str, config: Any, runs: Sequence[Mapping[str, Any]], runner) -> dict:
    """Writes results.json / results.md / top1.png (+ the mixing figure); returns the metrics."""
    rows = summarize(runs)
    metrics: dict[str, Any] = {}
    for r in rows:
        for key in ("top1_mean", "top1_std", "top1_ema_mean", "seconds_per_step", "seeds"):
            if r[key] is not None:
                metrics[f"{r['method']}/{key}"] = r[key]
    table = [
        {
            "method": r["method"],
            "top-1 % (mean ± std)": f"{100 * r['top1_mean']:.2f} ± {100 * r['top1_std']:.2f}",
            "per seed": ", ".join(f"{100 * v:.2f}" for v in r["top1_per_seed"]),
            "EMA top-1 %": "" if r["top1_ema_mean"] is None else f"{100 * r['top1_ema_mean']:.2f}",
            "s / step": r["seconds_per_step"],
            "s / run": r["seconds_per_run"],
            "SMMix batches": f"{r['smmix_fraction']:.2f}",
        }
        for r in rows
    ]
    diffs = []
    for a, b in COMPARISONS:
        c = compare(rows, a, b)
        if c is not None:
            metrics[f"diff/{a}-{b}_points"] = c["diff_points"]
            metrics[f"diff/{a}-{b}_z"] = c["z"]
            diffs.append(
                {
                    "comparison": f"{a} - {b}",
                    "Δ top-1 (points)": f"{c['diff_points']:+.2f}",
                    "std. error (points)": f"{c['stderr_points']:.2f}",
                    "Δ / std. error": f"{c['z']:.2f}",
                    "exceeds the seed spread": (
                        "n/a (1 seed)"
                        if min(r["seeds"] for r in rows if r["method"] in (a, b)) < 2
                        else "yes"
                        if abs(c["z"]) > 2
                        else "no"
                    ),
                }
            )
    t = config.train
    notes = (
        f"Data {config.data.name} at {config.data.image_size}x{config.data.image_size}, "
        f"{len(runner.data.train_labels)} training images, ViT {config.model.size} "
        f"(patch {config.model.patch_size}), {runner.num_steps} steps of batch {t.batch_size} "
        f"({t.epochs} epochs), {config.num_seeds} seed(s). Top-1 of the final model on the "
        "held-out split; std over seeds with ddof 1."
    )
    lib_results.bar_plot(
        os.path.join(workdir, "top1.png"),
        {r["method"]: 100 * r["top1_mean"] for r in rows},
        errors={r["method"]: 100 * r["top1_std"] for r in rows},
        ylabel="top-1 %",
        title="held-out top-1 over seeds",
    )
    figs = ["top1.png"]
    for method in ("smmix", "smmix_only"):
        src = os.path.join(workdir, "runs", method, f"seed{config.seed}", plots.FIGURE)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(workdir, plots.FIGURE))
            figs.append(plots.FIGURE)
            break
    tables = {"Top-1 per method": table}
    if diffs:
        tables["Differences"] = diffs
    lib_results.write_results(
        workdir, metrics, title="SMMix vs mixing baselines", tables=tables, plots=figs, notes=notes
    )
    return metrics
