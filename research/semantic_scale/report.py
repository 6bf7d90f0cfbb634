"""Summaries of semantic-scale runs: accuracy per method and data version (overall, many /
medium / few-shot), DSB against the baselines with the seed spread, the correlation of per-class
accuracy with sample count and with semantic scale, the scale imbalance, step times; written as
`results.json`, `results.md` and figures (per-class scatter plots, marginal-effect curves, top-1
against the imbalance factor)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats as scipy_stats

from research.semantic_scale import data as data_lib
from research.semantic_scale import scale
from research.training import results as lib_results
from research.training import stats

Run = Mapping[str, Any]
COMPARISONS = (("dsb_ce", "ce"), ("dsb_ce", "ldam_drw"), ("dsb_ce", "logit_adjust"))


def group_accuracy(run: Run, many: int, few: int) -> dict[str, float]:
    """Mean per-class test accuracy of the many / medium / few-shot classes (NaN if none)."""
    acc = np.asarray(run["class_accuracy"], float)
    groups = data_lib.shot_groups(np.asarray(run["counts"]), many, few)
    return {k: float(acc[m].mean()) if m.any() else float("nan") for k, m in groups.items()}


def correlations(run: Run) -> dict[str, float]:
    """Pearson r and Spearman rho of per-class accuracy with the semantic scale (of the model's
    features, and of the pixels) and with the (log) training count; NaN where a variable is
    constant (the balanced versions' counts)."""
    acc = np.asarray(run["class_accuracy"], float)
    out = {}
    for name, x in (
        ("scale", np.asarray(run["scales"], float)),
        ("pixel_scale", np.asarray(run["pixel_scales"], float)),
        ("count", np.log(run["counts"])),
    ):
        constant = np.ptp(x) == 0 or np.ptp(acc) == 0
        out[f"pearson_{name}"] = np.nan if constant else float(np.corrcoef(acc, x)[0, 1])
        out[f"spearman_{name}"] = (
            np.nan if constant else float(scipy_stats.spearmanr(acc, x).statistic)
        )
    return out


def _mean_std(values: Sequence[float]) -> str:
    v = [x for x in values if np.isfinite(x)]
    if not v:
        return "n/a"
    s = stats.seed_summary(v)
    return f"{s.mean:+.3f} ± {s.std:.3f}" if min(v) < 0 else f"{s.mean:.3f} ± {s.std:.3f}"


def _pct(values: Sequence[float]) -> str:
    s = stats.seed_summary(values)
    return f"{100 * s.mean:.2f} ± {100 * s.std:.2f}"


def summarize(runs: Sequence[Run], many: int, few: int) -> list[dict[str, Any]]:
    """One row per (version, method) in first-seen order, with the seed summaries."""
    rows = []
    keys = dict.fromkeys((r["version"], r["method"]) for r in runs)
    for version, method in keys:
        rs = [r for r in runs if r["version"] == version and r["method"] == method]
        groups = [group_accuracy(r, many, few) for r in rs]
        sps = [r["seconds_per_step"] for r in rs if r.get("seconds_per_step")]
        rows.append(
            dict(
                version=version,
                dataset=rs[0]["dataset"],
                imbalance_factor=rs[0]["imbalance_factor"],
                method=method,
                top1=stats.seed_summary([r["top1"] for r in rs]),
                top1_per_seed=[r["top1"] for r in rs],
                groups={k: [g[k] for g in groups] for k in ("many", "medium", "few")},
                correlations=[correlations(r) for r in rs],
                seconds_per_step=float(np.median(sps)) if sps else None,
            )
        )
    return rows


def _accuracy_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    table = []
    for r in rows:
        line = {"version": r["version"], "method": r["method"], "top-1 %": _pct(r["top1_per_seed"])}
        for g in ("many", "medium", "few"):
            v = [x for x in r["groups"][g] if np.isfinite(x)]
            line[f"{g} %"] = _pct(v) if v else "-"
        line["seeds"] = str(r["top1"].n)
        table.append(line)
    return table


def _comparison_table(rows, metrics: dict[str, Any]) -> list[dict[str, str]]:
    by = {(r["version"], r["method"]): r for r in rows}
    table = []
    for version in dict.fromkeys(r["version"] for r in rows):
        for a, b in COMPARISONS:
            if (version, a) not in by or (version, b) not in by:
                continue
            ra, rb = by[version, a], by[version, b]
            d = stats.difference(ra["top1"], rb["top1"])
            metrics[f"{version}/diff/{a}-{b}_points"] = 100 * d.diff
            metrics[f"{version}/diff/{a}-{b}_z"] = d.z
            few = min(ra["top1"].n, rb["top1"].n) < 2
            table.append(
                {
                    "version": version,
                    "comparison": f"{a} - {b}",
                    "Δ top-1 (points)": f"{100 * d.diff:+.2f}",
                    "std. error": f"{100 * d.stderr:.2f}",
                    "Δ / s.e.": f"{d.z:+.2f}",
                    "exceeds the seed spread": "n/a (1 seed)"
                    if few
                    else ("yes" if d.exceeds_spread() else "no"),
                }
            )
    return table


def _correlation_table(rows, runs, metrics: dict[str, Any]) -> list[dict[str, str]]:
    """Per version: the correlations of the CE runs (mean ± std over seeds), and their mean
    over every method's runs."""
    table = []
    for version in dict.fromkeys(r["version"] for r in rows):
        ce = [c for r in rows if r["version"] == version and r["method"] == "ce"
              for c in r["correlations"]]  # fmt: skip
        every = [c for r in rows if r["version"] == version for c in r["correlations"]]
        line = {"version": version}
        for key, label in (
            ("pearson_scale", "r(acc, S)"),
            ("pearson_pixel_scale", "r(acc, pixel S)"),
            ("pearson_count", "r(acc, log n)"),
            ("spearman_scale", "ρ(acc, S)"),
            ("spearman_count", "ρ(acc, n)"),
        ):
            if ce:
                line[f"CE {label}"] = _mean_std([c[key] for c in ce])
                metrics[f"{version}/ce/{key}"] = float(np.nanmean([c[key] for c in ce]))
        for key, label in (("pearson_scale", "r(acc, S)"), ("pearson_count", "r(acc, log n)")):
            vals = [c[key] for c in every if np.isfinite(c[key])]
            line[f"all methods {label}"] = f"{np.mean(vals):+.3f}" if vals else "n/a"
        imb = [
            scale.scale_imbalance(np.asarray(r["scales"])) for r in runs
            if r["version"] == version and r["method"] == "ce"
        ]  # fmt: skip
        if imb:
            line["CE S max / min"] = f"{np.mean([i['scale_ratio'] for i in imb]):.2f}"
            line["CE S CV"] = f"{np.mean([i['scale_cv'] for i in imb]):.3f}"
        table.append(line)
    return table


def _timing_table(rows) -> list[dict[str, Any]]:
    """Median seconds per step of every method on each version, and its ratio to CE's."""
    table = []
    for version in dict.fromkeys(r["version"] for r in rows):
        by = {r["method"]: r["seconds_per_step"] for r in rows if r["version"] == version}
        ce = by.get("ce")
        for method, sps in by.items():
            if sps is not None:
                ratio = f"{sps / ce:.3f}" if ce else ""
                table.append({"version": version, "method": method, "ms / step": 1e3 * sps,
                              "÷ CE": ratio})  # fmt: skip
    return table


def scatter_figure(path: str, runs: Sequence[Run], dataset: str) -> str:
    """Per-class test accuracy against training count (top) and semantic scale (bottom), one
    column per version of `dataset`, every seed of the CE runs."""
    ce = [r for r in runs if r["dataset"] == dataset and r["method"] == "ce"]
    versions = list(dict.fromkeys(r["version"] for r in ce))
    fig, axes = plt.subplots(2, len(versions), figsize=(3.2 * len(versions), 6), squeeze=False)
    for j, version in enumerate(versions):
        rs = [r for r in ce if r["version"] == version]
        for i, key in enumerate(("counts", "scales")):
            ax = axes[i, j]
            for r in rs:
                ax.scatter(r[key], r["class_accuracy"], s=14, alpha=0.7)
            c = [correlations(r)[f"pearson_{'count' if i == 0 else 'scale'}"] for r in rs]
            c = [x for x in c if np.isfinite(x)]
            note = f"r = {np.mean(c):+.2f}" if c else "r n/a"
            ax.set(title=f"{version} ({note})", xlabel="training images" if i == 0 else
                   "semantic scale S", ylabel="class accuracy")  # fmt: skip
            if i == 0 and np.ptp(rs[0]["counts"]) > 0:
                ax.set_xscale("log")
            ax.grid(alpha=0.3)
    return lib_results.save_figure(fig, path)


def marginal_figure(path: str, run: Run) -> str:
    """S of each class against the number of samples drawn from it (one CE run)."""
    sizes = np.asarray(run["marginal_sizes"])
    series = {
        f"class {c}": (sizes[np.isfinite(row)], np.asarray(row)[np.isfinite(row)])
        for c, row in enumerate(np.asarray(run["marginal"], float))
    }
    return lib_results.line_plot(
        path, series, xlabel="samples m", ylabel="semantic scale S", logx=True,
        title=f"marginal effect ({run['version']}, CE, seed {run['seed']})",
    )  # fmt: skip


def imbalance_figure(path: str, rows, dataset: str) -> str:
    """Top-1 against the imbalance factor, one line per method (balanced = factor 1)."""
    series = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = sorted(
            (r for r in rows if r["dataset"] == dataset and r["method"] == method),
            key=lambda r: r["imbalance_factor"],
        )
        series[method] = ([r["imbalance_factor"] for r in rs], [100 * r["top1"].mean for r in rs])
    return lib_results.line_plot(
        path, series, xlabel="imbalance factor (1: balanced)", ylabel="top-1 %", logx=True,
        title=f"{dataset}: test top-1 over seeds",
    )  # fmt: skip


def write_report(workdir: str, runs: Sequence[Run], config: Any) -> dict[str, Any]:
    """Writes results.json / results.md and the figures for `runs` (every `result.json`);
    returns the flat metrics."""
    a = config.analysis
    rows = summarize(runs, a.many_shot, a.few_shot)
    metrics: dict[str, Any] = {}
    for r in rows:
        metrics[f"{r['version']}/{r['method']}/top1_mean"] = r["top1"].mean
        metrics[f"{r['version']}/{r['method']}/top1_std"] = r["top1"].std
    tables = {
        "Test top-1 per method (mean ± std over seeds, %)": _accuracy_table(rows),
        "DSB-CE against the baselines": _comparison_table(rows, metrics),
        "Per-class accuracy against semantic scale and sample count": _correlation_table(
            rows, runs, metrics
        ),
        "Step time": _timing_table(rows),
    }
    plots = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        plots.append(imbalance_figure(os.path.join(workdir, f"top1_{dataset}.png"), rows, dataset))
        if any(r["dataset"] == dataset and r["method"] == "ce" for r in runs):
            plots.append(scatter_figure(os.path.join(workdir, f"scatter_{dataset}.png"), runs,
                                        dataset))  # fmt: skip
            ce = [r for r in runs if r["dataset"] == dataset and r["method"] == "ce"]
            ce.sort(key=lambda r: (r["imbalance_factor"] != 1, r["seed"]))  # balanced first
            plots.append(marginal_figure(os.path.join(workdir, f"marginal_{dataset}.png"), ce[0]))
    t = config.train
    notes = (
        f"{config.model.name}, {t.epochs} epochs of batch {t.batch_size} (SGD lr {t.lr}, "
        f"re-weighting from epoch {t.reweight_epoch}), {config.num_seeds} seed(s), subset seed "
        f"{config.data.subset_seed}. Many-shot: more than {a.many_shot} training images, "
        f"few-shot: fewer than {a.few_shot}. Semantic scales from the final model's features "
        f"of the training images (d = {config.dsb.d}, L2-normalised: {config.dsb.normalize}). "
        "std over seeds with ddof 1; Δ / s.e. uses the Welch standard error."
    )
    lib_results.write_results(
        workdir, metrics, title="Semantic scale imbalance and DSB learning", tables=tables,
        plots=[os.path.basename(p) for p in plots], notes=notes,
    )  # fmt: skip
    return metrics
