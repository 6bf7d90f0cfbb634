"""Summaries of BiFeat runs: per-scheme tables, `results.json`, accuracy-vs-compression and
edge-drop plots. Seed statistics come from `research.training.stats` (sample std, Welch
standard error of a difference), as in every paper's report."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from research.datasets.graphs import Graph  # noqa: E402
from research.training import results as lib_results  # noqa: E402
from research.training import stats  # noqa: E402

STATS_NOTE = (
    "Mean ± std over seeds, where std is the sample standard deviation (ddof 1); each Δ vs "
    "float32 comes with the standard error of the difference of the two means (Welch, "
    "`research.training.stats.difference`), and it exceeds the seed spread when |Δ| > 2 s.e."
)


def summarize(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-scheme rows (in first-seen order): mean, sample std (ddof 1) and standard error of
    the test accuracy over seeds (`stats.seed_summary`), mean val / last-epoch test accuracy,
    store bytes, compression ratio and seconds per run, and the comparison with float32
    (`_vs_float32`)."""
    schemes = dict.fromkeys(r["scheme"] for r in runs)
    by_scheme = {s: [r for r in runs if r["scheme"] == s] for s in schemes}
    test = {s: stats.seed_summary([r["test_acc"] for r in rs]) for s, rs in by_scheme.items()}
    return [
        dict(
            scheme=scheme,
            seeds=test[scheme].n,
            test_acc_mean=test[scheme].mean,
            test_acc_std=test[scheme].std,
            test_acc_stderr=test[scheme].stderr,
            val_acc_mean=_mean(rs, "val_acc"),
            last_test_acc_mean=_mean(rs, "last_test_acc"),
            store_bytes=_mean(rs, "store_bytes"),
            compression_ratio=_mean(rs, "compression_ratio"),
            seconds_per_run=_mean(rs, "seconds"),
            dropped_nodes=int(sum(r.get("dropped_nodes", 0) for r in rs)),
            **_vs_float32(scheme, test),
        )
        for scheme, rs in by_scheme.items()
    ]


def _mean(runs: Sequence[Mapping[str, Any]], key: str) -> float:
    """The mean of `key` over the runs (seeds) of one scheme."""
    return stats.seed_summary([r[key] for r in runs]).mean


def _vs_float32(scheme: str, test: Mapping[str, stats.SeedSummary]) -> dict[str, Any]:
    """`scheme`'s test accuracy minus float32's in points (`delta_vs_float32_points`), the
    difference's standard error (`..._stderr_points`, Welch), z = Δ / s.e. and
    `exceeds_seed_spread` (|z| > 2). All None without a float32 run; the spread terms are None
    for float32 itself and when either side has one seed (no spread to compare with)."""
    base = test.get("float32")
    if base is None:
        d, spread = None, False
    else:
        d = stats.difference(test[scheme], base)
        spread = scheme != "float32" and min(test[scheme].n, base.n) > 1
    return dict(
        delta_vs_float32_points=100 * d.diff if d is not None else None,
        delta_vs_float32_stderr_points=100 * d.stderr if spread else None,
        delta_vs_float32_z=d.z if spread else None,
        exceeds_seed_spread=d.exceeds_spread() if spread else None,
    )


def flat_metrics(rows: Sequence[Mapping[str, Any]], prefix: str = "") -> dict[str, Any]:
    """`{prefix}{scheme}/{field}` for the fields of `summarize` rows."""
    keys = (
        "test_acc_mean",
        "test_acc_std",
        "test_acc_stderr",
        "val_acc_mean",
        "last_test_acc_mean",
        "store_bytes",
        "compression_ratio",
        "delta_vs_float32_points",
        "delta_vs_float32_stderr_points",
        "delta_vs_float32_z",
        "exceeds_seed_spread",
        "seconds_per_run",
        "seeds",
        "dropped_nodes",
    )
    return {f"{prefix}{r['scheme']}/{k}": r[k] for r in rows for k in keys}


def _pm(row: Mapping[str, Any]) -> str:
    return f"{100 * row['test_acc_mean']:.2f} ± {100 * row['test_acc_std']:.2f}"


def _spread_cells(row: Mapping[str, Any], what: str = "Δ") -> dict[str, str]:
    """The table cells of the standard error of the difference from float32 (`what`: its name
    in the table) and whether the difference exceeds the seed spread."""
    se = row["delta_vs_float32_stderr_points"]
    if row["delta_vs_float32_points"] is None or row["scheme"] == "float32":
        cells = ("", "")
    elif se is None:
        cells = ("", "n/a (1 seed)")
    else:
        cells = (f"{se:.2f}", "yes" if row["exceeds_seed_spread"] else "no")
    names = (f"s.e. of {what} (points)", "exceeds seed spread (> 2 s.e.)")
    return dict(zip(names, cells, strict=True))


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the markdown table (accuracies in percent)."""
    return [
        {
            "scheme": r["scheme"],
            "test acc % (mean ± std)": _pm(r),
            "Δ vs float32 (points)": (
                f"{r['delta_vs_float32_points']:+.2f}"
                if r["delta_vs_float32_points"] is not None
                else ""
            ),
            **_spread_cells(r),
            "val acc %": f"{100 * r['val_acc_mean']:.2f}",
            "last-epoch test acc %": f"{100 * r['last_test_acc_mean']:.2f}",
            "store MB": f"{r['store_bytes'] / 1e6:.3f}",
            "compression": f"{r['compression_ratio']:.1f}x",
            "s / run": f"{r['seconds_per_run']:.1f}",
        }
        for r in rows
    ]


def _family(scheme: str) -> str:
    for prefix in ("float32", "sq", "uniform", "vq"):
        if scheme.startswith(prefix):
            return prefix + (" + cache" if scheme.endswith("+cache") else "")
    return scheme


def accuracy_vs_compression_plot(path: str, rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """Test accuracy (mean ± std over seeds) against compression ratio, log x, one colour per
    quantizer family, labelled points, a dashed line at float32's mean."""
    fig, ax = plt.subplots(figsize=(8, 5))
    families = list(dict.fromkeys(_family(r["scheme"]) for r in rows))
    colours = dict(zip(families, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    seen = set()
    for r in rows:
        fam = _family(r["scheme"])
        x, y = r["compression_ratio"], 100 * r["test_acc_mean"]
        ax.errorbar(
            x,
            y,
            yerr=100 * r["test_acc_std"],
            fmt="o",
            capsize=3,
            color=colours[fam],
            label=None if fam in seen else fam,
        )
        seen.add(fam)
        ax.annotate(r["scheme"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    base = next((r for r in rows if r["scheme"] == "float32"), None)
    if base:
        ax.axhline(100 * base["test_acc_mean"], ls="--", color="gray", lw=1)
    ax.set_xscale("log")
    ax.set(
        xlabel="compression ratio (float32 bytes / store bytes)",
        ylabel="test accuracy (%)",
        title=title,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return lib_results.save_figure(fig, path)


def write_scheme_results(
    workdir: str, runs: Sequence[Mapping], *, title: str, plot_title: str, notes: str
) -> dict:
    """results.json / results.md / accuracy_vs_compression.png of a `schemes` experiment;
    `runs` are the per-(scheme, seed) results, `notes` describe the setting (STATS_NOTE is
    appended). Returns the flat metrics."""
    rows = summarize(runs)
    metrics = flat_metrics(rows)
    accuracy_vs_compression_plot(
        os.path.join(workdir, "accuracy_vs_compression.png"), rows, plot_title
    )
    lib_results.write_results(
        workdir,
        metrics,
        title=title,
        tables={"Test accuracy per feature store": table_rows(rows)},
        plots=["accuracy_vs_compression.png"],
        notes=f"{notes} {STATS_NOTE}",
    )
    return metrics


def write_edge_drop_results(
    workdir: str, graph: Graph, per_variant: Mapping, *, notes: str
) -> dict:
    """Accuracy loss of each compressed scheme vs float32 as edges are dropped: `per_variant`
    maps (mode, fraction dropped, number of edges) to that graph's per-(scheme, seed) results;
    `graph` is the undropped graph. Returns the flat metrics (prefixed `<mode>-<fraction>/`)."""
    metrics: dict[str, Any] = {}
    table, loss_series, acc_series = [], {}, {}
    modes = [m for (m, _, _) in per_variant if m != "none"] or ["none"]
    modes = list(dict.fromkeys(modes))
    for (mode, fraction, num_edges), runs in per_variant.items():
        rows = summarize(runs)
        metrics.update(flat_metrics(rows, prefix=f"{mode}-{fraction:g}/"))
        for r in rows:
            table.append(
                {
                    "drop": mode,
                    "fraction dropped": f"{fraction:g}",
                    "avg degree": f"{num_edges / graph.num_nodes:.2f}",
                    "scheme": r["scheme"],
                    "test acc % (mean ± std)": _pm(r),
                    "loss vs float32 (points)": (
                        f"{0.0 - r['delta_vs_float32_points']:.2f}"
                        if r["delta_vs_float32_points"] is not None
                        else ""
                    ),
                    **_spread_cells(r, "loss"),
                }
            )
            # the undropped graph ("none") starts the curve of every mode
            for curve_mode in modes if mode == "none" else [mode]:
                name = f"{r['scheme']} ({curve_mode})"
                acc_series.setdefault(name, ([], []))
                acc_series[name][0].append(fraction)
                acc_series[name][1].append(100 * r["test_acc_mean"])
                if r["scheme"] != "float32" and r["delta_vs_float32_points"] is not None:
                    loss_series.setdefault(name, ([], []))
                    loss_series[name][0].append(fraction)
                    loss_series[name][1].append(-r["delta_vs_float32_points"])
    plots = []
    if loss_series:
        lib_results.line_plot(
            os.path.join(workdir, "edge_drop_accuracy_loss.png"),
            loss_series,
            xlabel="fraction of edges dropped",
            ylabel="accuracy loss vs float32 (points)",
            title=f"{graph.name}: quantization loss vs sparsity",
        )
        plots.append("edge_drop_accuracy_loss.png")
    lib_results.line_plot(
        os.path.join(workdir, "edge_drop_accuracy.png"),
        acc_series,
        xlabel="fraction of edges dropped",
        ylabel="test accuracy (%)",
        title=f"{graph.name}: accuracy vs sparsity",
    )
    plots.append("edge_drop_accuracy.png")
    lib_results.write_results(
        workdir,
        metrics,
        title=f"BiFeat edge-drop analysis: {graph.name}",
        tables={"Accuracy as edges are dropped": table},
        plots=plots,
        notes=f"{notes} Edges dropped by `research.datasets.graphs.drop_edges`. {STATS_NOTE}",
    )
    return metrics
