"""The defect_ae results: tables over seeds, the loss comparison, and the detection figure."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from research.defect_ae import evaluate, inspection
from research.training import results, stats
from research.training.stats import mean_std_text as pm

OVERALL = ("image_auroc_max", "image_auroc_area", "pixel_auroc", "pro", "f1")
TIMING = ("num_params", "seconds", "seconds_per_step", "images_per_s", "val_contrast", "val_l1")
# The paper's loss ablation: SSIM + L1 against each loss alone.
COMPARISONS = (("ae_ssim_l1", "ae_l2"), ("ae_ssim_l1", "ae_l1"), ("ae_ssim_l1", "ae_ssim"))


def summarize(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per detector (in run order): every numeric metric as a `stats.SeedSummary` over
    its seeds (None where a seed has no value), `seeds`, and the warnings of any seed."""
    rows = []
    for detector in dict.fromkeys(r["detector"] for r in runs):
        rs = [r for r in runs if r["detector"] == detector]
        row: dict[str, Any] = {"detector": detector, "seeds": len(rs)}
        keys = dict.fromkeys(k for r in rs for k, v in r.items() if isinstance(v, (int, float)))
        for key in keys:
            if key == "seed":
                continue
            values = [r[key] for r in rs if isinstance(r.get(key), (int, float))]
            row[key] = stats.seed_summary(values) if values else None
        row["warnings"] = sorted({w for r in rs for w in r.get("warnings", [])})
        rows.append(row)
    return rows


def _count(s: stats.SeedSummary | None) -> str:
    return "" if s is None else f"{s.mean:.3g}"


def tables(rows: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> dict[str, list[dict]]:
    out = {}
    out["detection on the test images (mean ± std over seeds)"] = [
        {"detector": r["detector"], "seeds": r["seeds"], **{m: pm(r.get(m), 4) for m in OVERALL}}
        for r in rows
    ]
    out[
        "per defect class: image AUROC (largest residual) / pixel AUROC, each class against "
        "the defect-free test images"
    ] = [  # fmt: skip
        {
            "detector": r["detector"],
            **{
                c: f"{pm(r.get(f'{c}/image_auroc_max'), 3)} / {pm(r.get(f'{c}/pixel_auroc'), 3)}"
                for c in classes
            },
        }
        for r in rows
    ]
    kinds = [k for k in inspection.RESIDUALS if any(r.get(f"pixel_auroc/{k}") for r in rows)]
    if kinds:
        out["pixel AUROC under each residual map (rows: training loss)"] = [
            {"detector": r["detector"], **{k: pm(r.get(f"pixel_auroc/{k}"), 4) for k in kinds}}
            for r in rows
            if r.get(f"pixel_auroc/{kinds[0]}")
        ]
    comparisons = comparison_rows(rows)
    if comparisons:
        out["the loss ablation: a - b, with the Welch standard error over seeds"] = comparisons
    out["model, speed and reconstruction quality"] = [
        {
            "detector": r["detector"],
            "parameters": _count(r.get("num_params")),
            "train s": _count(r.get("seconds")),
            "s / step": _count(r.get("seconds_per_step")),
            "test images / s": _count(r.get("images_per_s")),
            "val contrast": _count(r.get("val_contrast")),
            "val L1": _count(r.get("val_l1")),
            "threshold": _count(r.get("threshold")),
            "warnings": "; ".join(r["warnings"]),
        }
        for r in rows
    ]
    return out


def comparison_rows(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("pixel_auroc", "image_auroc_max")
) -> list[dict[str, Any]]:
    """For each metric and pair of `COMPARISONS` that ran: the difference of the means, its
    Welch standard error over seeds, and whether it exceeds two standard errors."""
    out = []
    for metric in metrics:
        by = {r["detector"]: r.get(metric) for r in rows}
        for a, b in COMPARISONS:
            if by.get(a) is None or by.get(b) is None:
                continue
            d = stats.difference(by[a], by[b])
            if min(by[a].n, by[b].n) < 2:
                verdict = "one seed: no spread to judge by"
            elif not d.exceeds_spread():
                verdict = "within spread"
            else:
                verdict = (a if d.diff > 0 else b) + " higher"
            out.append(
                {
                    "metric": metric,
                    "a - b": f"{a} - {b}",
                    "diff": d.diff,
                    "s.e.": d.stderr,
                    "verdict": verdict,
                }
            )
    return out


def flat_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """{"<detector>/<metric>": mean, "<detector>/<metric>_std": std}."""
    out = {}
    for row in rows:
        for key, s in row.items():
            if isinstance(s, stats.SeedSummary):
                out[f"{row['detector']}/{key}"] = s.mean
                out[f"{row['detector']}/{key}_std"] = s.std
    return out


def class_counts(images: Any) -> str:
    """'Free 190, Blowhole 115, ...': the images of each class of an `InspectionImages`."""
    return ", ".join(f"{c} {int((images.labels == k).sum())}" for k, c in enumerate(images.classes))


def write_report(workdir: str, config: Any, data: Any, runs: Sequence[Mapping[str, Any]]):
    """results.{json,md} of `runs`; returns the flat metrics."""
    rows = summarize(runs)
    classes = [c for k, c in enumerate(data.test.classes) if k and (data.test.labels == k).any()]
    d, t = config.data, config.train
    notes = (
        f"Data {d.source} at {d.image_size}x{d.image_size}, {d.channels} channel(s): "
        f"{len(data.train)} defect-free training, {len(data.val)} validation and {len(data.test)} "
        f"test images ({class_counts(data.test)}); "
        f"split seed {d.split_seed}. Autoencoder widths {tuple(config.model.widths)}, bottleneck "
        f"{config.model.bottleneck}; {t.steps} Adam steps of {t.batch_size} patches of "
        f"{t.patch_size}x{t.patch_size}. Residual {config.inspect.residual}, threshold at the "
        f"{config.inspect.percentile}th percentile of the validation residuals, opening radius "
        f"{config.inspect.opening_radius}. Std over training seeds with ddof 1; the baseline has "
        "no training seed."
    )
    figures = [
        f for f in sorted(os.listdir(workdir)) if f.startswith("detections_") and f.endswith(".png")
    ]
    metrics = flat_metrics(rows)
    results.write_results(
        workdir,
        metrics,
        title=f"defect_ae: {config.preset}",
        tables=tables(rows, classes),
        plots=figures,
        notes=notes,
    )
    return metrics


def detections_figure(
    path: str,
    test: Any,
    recons: np.ndarray,
    residuals: np.ndarray,
    threshold: float,
    opts: evaluate.InspectOptions,
    *,
    per_class: int = 1,
) -> str:
    """Rows: the first `per_class` test images of each class; columns: input, reconstruction,
    residual (colour scale up to twice the threshold), predicted mask, true mask."""
    import matplotlib.pyplot as plt

    picks = [
        i for k in range(len(test.classes)) for i in np.flatnonzero(test.labels == k)[:per_class]
    ]
    masks = inspection.segment(
        residuals[picks], threshold, opening_radius=opts.opening_radius, min_area=opts.min_area
    )
    fig, axes = plt.subplots(len(picks), 5, figsize=(10, 2.1 * len(picks)), squeeze=False)
    titles = ("input", "reconstruction", f"residual ({opts.residual})", "predicted", "truth")
    for row, (i, mask) in enumerate(zip(picks, masks, strict=True)):
        panels = (test.images[i], recons[i], residuals[i], mask, test.masks[i])
        for col, (ax, img) in enumerate(zip(axes[row], panels, strict=True)):
            img = np.asarray(img, np.float32)
            if img.ndim == 3 and img.shape[-1] == 1:
                img = img[..., 0]
            kw = {"vmin": 0, "vmax": 2 * threshold, "cmap": "magma"} if col == 2 else {}
            if img.ndim == 2 and col != 2:
                kw = {"vmin": 0, "vmax": 1, "cmap": "gray"}
            ax.imshow(img, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=8)
        axes[row][0].set_ylabel(test.classes[test.labels[i]], fontsize=8)
    return os.path.basename(results.save_figure(fig, path))
