"""Summaries of BiFeat runs: per-scheme tables, `results.json`, accuracy-vs-compression and
edge-drop plots."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from research.datasets.graphs import Graph  # noqa: E402
from research.training import results as lib_results  # noqa: E402


def summarize(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-scheme rows (in first-seen order): mean/std of test and val accuracy over seeds
    (population std), store bytes and compression ratio (means), seconds per run."""
    order = list(dict.fromkeys(r["scheme"] for r in runs))
    rows = []
    for scheme in order:
        rs = [r for r in runs if r["scheme"] == scheme]
        test = np.array([r["test_acc"] for r in rs])
        rows.append(
            dict(
                scheme=scheme,
                seeds=len(rs),
                test_acc_mean=float(test.mean()),
                test_acc_std=float(test.std()),
                val_acc_mean=float(np.mean([r["val_acc"] for r in rs])),
                last_test_acc_mean=float(np.mean([r["last_test_acc"] for r in rs])),
                store_bytes=float(np.mean([r["store_bytes"] for r in rs])),
                compression_ratio=float(np.mean([r["compression_ratio"] for r in rs])),
                seconds_per_run=float(np.mean([r["seconds"] for r in rs])),
                dropped_nodes=int(sum(r.get("dropped_nodes", 0) for r in rs)),
            )
        )
    base = next((r for r in rows if r["scheme"] == "float32"), None)
    for r in rows:
        r["delta_vs_float32_points"] = (
            100 * (r["test_acc_mean"] - base["test_acc_mean"]) if base else None
        )
    return rows


def flat_metrics(rows: Sequence[Mapping[str, Any]], prefix: str = "") -> dict[str, Any]:
    """`{prefix}{scheme}/{field}` for the fields of `summarize` rows."""
    keys = (
        "test_acc_mean",
        "test_acc_std",
        "val_acc_mean",
        "last_test_acc_mean",
        "store_bytes",
        "compression_ratio",
        "delta_vs_float32_points",
        "seconds_per_run",
        "seeds",
        "dropped_nodes",
    )
    return {f"{prefix}{r['scheme']}/{k}": r[k] for r in rows for k in keys}


def _pm(row: Mapping[str, Any]) -> str:
    return f"{100 * row['test_acc_mean']:.2f} ± {100 * row['test_acc_std']:.2f}"


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


def write_scheme_results(workdir: str, config, graph: Graph, runs: Sequence[Mapping]) -> dict:
    """results.json / results.md / accuracy_vs_compression.png of a `schemes` experiment."""
    rows = summarize(runs)
    metrics = flat_metrics(rows)
    title = f"BiFeat on {graph.name}: {config.model.name}, {config.num_seeds} seeds"
    accuracy_vs_compression_plot(os.path.join(workdir, "accuracy_vs_compression.png"), rows, title)
    notes = _notes(config, graph)
    lib_results.write_results(
        workdir,
        metrics,
        title=f"BiFeat ({config.preset}): {graph.name}",
        tables={"Test accuracy per feature store": table_rows(rows)},
        plots=["accuracy_vs_compression.png"],
        notes=notes,
    )
    return metrics


def _notes(config, graph: Graph) -> str:
    t, m = config.train, config.model
    return (
        f"Graph {graph.name}: {graph.num_nodes} nodes, {graph.num_edges} directed edges, "
        f"{graph.num_features} features, {graph.num_classes} classes, splits "
        f"{len(graph.train_idx)}/{len(graph.val_idx)}/{len(graph.test_idx)}. Model {m.name}, "
        f"{m.num_layers} layers, hidden {m.hidden}, dropout {m.dropout}, fan-outs "
        f"{tuple(t.fanouts)}, batch {t.batch_size}, {t.epochs} epochs, Adam lr {t.lr} x{t.lr_decay}"
        f"/epoch, weight decay {t.weight_decay}. Test accuracy at the best validation epoch "
        f"(select={config.eval.select}, eval every {config.eval.every_epochs} epochs, "
        f"{config.eval.mode} evaluation)."
    )


def write_edge_drop_results(workdir: str, config, graph: Graph, per_variant: Mapping) -> dict:
    """Accuracy loss of each compressed scheme vs float32 as edges are dropped."""
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
                    "test acc %": f"{100 * r['test_acc_mean']:.2f} ± {100 * r['test_acc_std']:.2f}",
                    "loss vs float32 (points)": (
                        f"{0.0 - r['delta_vs_float32_points']:.2f}"
                        if r["delta_vs_float32_points"] is not None
                        else ""
                    ),
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
        notes=_notes(config, graph) + " Edges dropped by `research.datasets.graphs.drop_edges`.",
    )
    return metrics
