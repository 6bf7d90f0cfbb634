"""Summaries of SMMix runs: top-1 mean / std per method, `results.json`, `results.md`, plots."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from research.smmix import plots, steps
from research.training import results as lib_results
from research.training import stats


def summarize(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-method rows in first-seen order: top-1 over seeds (`top1`, a `stats.SeedSummary`,
    and its mean and sample std, ddof 1), the per-seed values, seconds per step (median over
    seeds) and per run, the share of SMMix batches."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == method]
        top1 = stats.seed_summary([r["top1"] for r in rs])
        ema = [r["top1_ema"] for r in rs if r.get("top1_ema") is not None]
        sps = [r["seconds_per_step"] for r in rs if r.get("seconds_per_step")]
        rows.append(
            dict(
                method=method,
                seeds=top1.n,
                top1=top1,
                top1_mean=top1.mean,
                top1_std=top1.std,
                top1_per_seed=[float(r["top1"]) for r in rs],
                top1_ema_mean=stats.seed_summary(ema).mean if ema else None,
                seconds_per_step=float(np.median(sps)) if sps else None,
                seconds_per_run=stats.seed_summary([r["seconds"] for r in rs]).mean,
                smmix_fraction=stats.seed_summary([r["smmix_fraction"] for r in rs]).mean,
            )
        )
    return rows


def compare(rows: Sequence[Mapping[str, Any]], a: str, b: str) -> stats.Difference | None:
    """Top-1 mean of method a minus that of b (fractions, not points) with its Welch standard
    error from the seed spreads; None if a method is missing."""
    by = {r["method"]: r for r in rows}
    if a not in by or b not in by:
        return None
    return stats.difference(by[a]["top1"], by[b]["top1"])


def write_report(
    workdir: str, runs: Sequence[Mapping[str, Any]], *, notes: str, figure_seed: int
) -> dict[str, Any]:
    """Writes results.json / results.md / top1.png for `runs` (the `result.json` dicts of every
    method x seed), and copies the mixing figure of `runs/<smmix method>/seed<figure_seed>/`
    if there is one; `notes` go under the title. Returns the flat metrics."""
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
    seeds = {r["method"]: r["seeds"] for r in rows}
    diffs = []
    for a, b in steps.COMPARISONS:
        d = compare(rows, a, b)
        if d is None:
            continue
        metrics[f"diff/{a}-{b}_points"] = 100 * d.diff
        metrics[f"diff/{a}-{b}_z"] = d.z
        diffs.append(
            {
                "comparison": f"{a} - {b}",
                "Δ top-1 (points)": f"{100 * d.diff:+.2f}",
                "std. error (points)": f"{100 * d.stderr:.2f}",
                "Δ / std. error": f"{d.z:.2f}",
                "exceeds the seed spread": (
                    "n/a (1 seed)"
                    if min(seeds[a], seeds[b]) < 2
                    else "yes"
                    if d.exceeds_spread()
                    else "no"
                ),
            }
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
        src = os.path.join(workdir, "runs", method, f"seed{figure_seed}", plots.FIGURE)
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
