"""The ascend results: one row per backbone (parameters, speed, sample quality, mean ± std over
seeds), the paper's orderings as differences with their Welch standard errors, the Frechet
distance bar plot and the sample grids side by side."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from research.training import results, stats

METRICS = ("fd", "precision", "recall", "num_params", "train_step_ms", "sampling_images_per_s")
# The paper's claims: the vanilla ViT trails IU-ViT, IU-ViT is on par with the U-Net, ASCEND is
# at least as good as IU-ViT. Each row is the FD of a minus that of b (lower FD is better).
ORDERINGS = (("vit", "iu_vit"), ("iu_vit", "unet"), ("ascend", "iu_vit"), ("ascend", "unet"))


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, stats.SeedSummary]]:
    """{backbone: {metric: SeedSummary over its seeds}} in the order the backbones ran."""
    by_backbone: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        by_backbone.setdefault(run["backbone"], []).append(run)
    return {
        b: {
            m: stats.seed_summary([r[m] for r in rs])
            for m in METRICS
            if all(isinstance(r.get(m), (int, float)) for r in rs)
        }
        for b, rs in by_backbone.items()
    }


def sample_montage(path: str, grids: Mapping[str, np.ndarray]) -> str:
    """One panel per backbone of its samples [N, H, W, C] in [-1, 1] (a square grid)."""
    fig, axes = plt.subplots(1, len(grids), figsize=(3 * len(grids), 3.3), squeeze=False)
    for ax, (name, images) in zip(axes[0], grids.items(), strict=True):
        n = int(np.sqrt(len(images)))
        h, w, c = images.shape[1:]
        tiles = images[: n * n].reshape(n, n, h, w, c).transpose(0, 2, 1, 3, 4)
        tiles = ((tiles.reshape(n * h, n * w, c) + 1) / 2).clip(0, 1)
        ax.imshow(tiles[..., 0] if c == 1 else tiles, cmap="gray" if c == 1 else None)
        ax.set_title(name)
        ax.axis("off")
    return results.save_figure(fig, path)


def write_report(
    workdir: str,
    data: str,
    runs: Sequence[Mapping[str, Any]],
    held_out: Mapping[str, float],
) -> dict[str, Any]:
    """Writes results.{json,md}, fd.png and samples.png; returns the flat metrics.
    held_out: the scores of held-out real images (the floor a perfect model would reach)."""
    cells = summarize(runs)
    table = [
        {
            "backbone": b,
            "seeds": c["fd"].n,
            "parameters": f"{c['num_params'].mean:,.0f}",
            "train step (ms)": stats.mean_std_text(c.get("train_step_ms"), 1),
            "sampling (images/s)": stats.mean_std_text(c.get("sampling_images_per_s"), 1),
            "Frechet distance": stats.mean_std_text(c["fd"], 3),
            "precision": stats.mean_std_text(c["precision"], 3),
            "recall": stats.mean_std_text(c["recall"], 3),
        }
        for b, c in cells.items()
    ]
    table.append(
        {
            "backbone": "held-out real images",
            "Frechet distance": f"{held_out['fd']:.3f}",
            "precision": f"{held_out['precision']:.3f}",
            "recall": f"{held_out['recall']:.3f}",
        }
    )
    orderings = []
    for a, b in ORDERINGS:
        if a in cells and b in cells:
            d = stats.difference(cells[a]["fd"], cells[b]["fd"])
            orderings.append(
                {
                    "FD difference": f"{a} - {b}",
                    "value": f"{d.diff:+.3f}",
                    "s.e.": f"{d.stderr:.3f}",
                    "exceeds 2 s.e.": ("yes" if d.exceeds_spread() else "no")
                    if min(cells[a]["fd"].n, cells[b]["fd"].n) > 1
                    else "(one seed: no spread)",
                }
            )
    tables = {"backbones (mean ± std over seeds; lower FD is better)": table}
    if orderings:
        tables["the paper's orderings: FD of a - FD of b, Welch s.e."] = orderings
    fd_plot = results.bar_plot(
        os.path.join(workdir, "fd.png"),
        {b: c["fd"].mean for b, c in cells.items()},
        errors={b: c["fd"].std for b, c in cells.items()},
        ylabel="Frechet distance (classifier features)",
        title="sample quality per backbone (mean ± std over seeds)",
    )
    grids = {}
    for b in cells:
        first = min(r["seed"] for r in runs if r["backbone"] == b)
        path = os.path.join(workdir, "runs", b, f"seed{first}", "samples.npy")
        if os.path.exists(path):
            grids[b] = np.load(path)
    plots = [os.path.basename(fd_plot)]
    if grids:
        plots.append(os.path.basename(sample_montage(os.path.join(workdir, "samples.png"), grids)))
    flat = {f"{b}/{m}": s.mean for b, c in cells.items() for m, s in c.items()}
    flat.update({f"held_out/{k}": v for k, v in held_out.items()})
    results.write_results(
        workdir,
        flat,
        title="Diffusion backbones: vanilla ViT, IU-ViT, ASCEND, U-Net",
        tables=tables,
        plots=plots,
        notes=f"Data: {data}.",
    )
    return flat
