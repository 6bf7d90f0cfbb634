"""The ssrn results: per (N, method) tables over seeds, SSRN's gain over the base network with its
Welch standard error, and the plot of the gain against the number of sampled positions."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt

from research.ssrn.metrics import IOU_THRESHOLDS, RECALL_AT
from research.training import results, stats

SCORES = tuple(f"r{n}_iou{m}" for n in RECALL_AT for m in IOU_THRESHOLDS) + ("miou",)
SPEED = ("num_params", "train_videos_per_s", "test_videos_per_s")
GAIN_SCORES = ("r1_iou0.5", "r1_iou0.7", "miou")
# SSRN against the base network, and the ablation: the siamese samples alone, the reasoning alone
COMPARISONS = (("ssrn", "base"), ("siamese", "base"), ("ssrn", "siamese"))


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """{(N, method): {metric: SeedSummary}} over the seeds of each (N, method)."""
    out: dict[tuple[int, str], dict[str, Any]] = {}
    for run in runs:
        out.setdefault((run["positions"], run["method"]), {}).setdefault("_runs", []).append(run)
    for cell in out.values():
        rs = cell.pop("_runs")
        for key in rs[0]:
            values = [r[key] for r in rs if isinstance(r.get(key), (int, float))]
            if key not in ("seed", "positions") and len(values) == len(rs):
                cell[key] = stats.seed_summary(values)
    return out


def gains(
    cells: Mapping[tuple[int, str], Mapping[str, Any]],
    a: str = "ssrn",
    b: str = "base",
    decoding: str = "refined",
):
    """[(N, metric, Difference)] of method a - method b for every N that has both."""
    out = []
    for n in sorted({n for n, _ in cells}):
        if (n, a) in cells and (n, b) in cells:
            for metric in GAIN_SCORES:
                key = f"{decoding}_{metric}"
                out.append((n, metric, stats.difference(cells[(n, a)][key], cells[(n, b)][key])))
    return out


def gain_plot(path: str, gain_rows, metrics: Sequence[str] = GAIN_SCORES) -> str:
    """SSRN's gain (points, with ±1 standard error) against N for each metric."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for metric in metrics:
        pts = [(n, d) for n, m, d in gain_rows if m == metric]
        ax.errorbar(
            [n for n, _ in pts],
            [d.diff for _, d in pts],
            yerr=[d.stderr for _, d in pts],
            marker="o",
            capsize=4,
            label=metric,
        )
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ns = sorted({n for n, _, _ in gain_rows})
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set(xlabel="sampled positions N (fewer = sparser)", ylabel="SSRN - base (points)")
    ax.set_title("SSRN's gain over the base network (mean over seeds, ±1 s.e.)")
    ax.legend()
    ax.grid(alpha=0.3)
    return results.save_figure(fig, path)


def write_report(workdir: str, data: Any, runs: Sequence[Mapping[str, Any]]):
    """Writes results.{json,md} and gain.png; returns the flat metrics."""
    cells = summarize(runs)
    tables = {}
    for decoding in ("refined", "window"):
        tables[f"test queries, {decoding} boundaries (percent, mean ± std over seeds)"] = [
            {
                "N": n,
                "method": m,
                "seeds": c[f"{decoding}_miou"].n,
                **{s: stats.mean_std_text(c.get(f"{decoding}_{s}"), 2) for s in SCORES},
            }
            for (n, m), c in cells.items()
        ]
    for a, b in COMPARISONS:
        rows = [
            {
                "N": n,
                "metric": metric,
                "difference": f"{d.diff:+.2f}",
                "s.e.": f"{d.stderr:.2f}",
                "exceeds": "yes" if d.exceeds_spread() else "no",
            }
            for n, metric, d in gains(cells, a, b)
        ]
        if rows:
            tables[f"{a} - {b} (refined boundaries): difference, Welch s.e., exceeds 2 s.e."] = rows
    tables["model and throughput (videos/s on this machine)"] = [
        {
            "N": n,
            "method": m,
            "parameters": f"{c['num_params'].mean:.0f}",
            **{s: stats.mean_std_text(c.get(s), 0) for s in SPEED[1:]},
        }
        for (n, m), c in cells.items()
    ]
    gain_rows = gains(cells)
    plots = []
    if gain_rows:
        plots.append(os.path.basename(gain_plot(os.path.join(workdir, "gain.png"), gain_rows)))
    flat = {}
    for (n, m), c in cells.items():
        flat.update({f"N{n}/{m}/{k}": v.mean for k, v in c.items()})
    flat.update({f"N{n}/gain/{metric}": d.diff for n, metric, d in gain_rows})  # ssrn - base
    results.write_results(
        workdir,
        flat,
        title="SSRN against its base network",
        tables=tables,
        plots=plots,
        notes=f"Data: {data.describe()}.",
    )
    return flat
