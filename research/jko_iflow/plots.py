"""Figures of a 2D run: learned densities and samples per method, trajectories over blocks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from research.training.results import save_figure as _save


def density_figure(
    path: str,
    data: np.ndarray,
    densities: Mapping[str, np.ndarray],
    samples: Mapping[str, np.ndarray],
    *,
    lim: float = 4.5,
    title: str = "",
) -> str:
    """Row 1: data histogram, then each method's learned density (grids [n, n] over
    [-lim, lim]^2, row = y; methods without a grid stay blank); row 2: data and each method's
    samples [N, 2]. Saved as PNG at `path`."""
    cols = 1 + len(samples)
    fig, axes = plt.subplots(2, cols, figsize=(3.2 * cols, 6.4), squeeze=False)
    ext = (-lim, lim, -lim, lim)
    axes[0, 0].hist2d(data[:, 0], data[:, 1], bins=120, range=[[-lim, lim]] * 2, cmap="viridis")
    axes[0, 0].set_title("data")
    axes[1, 0].scatter(data[:, 0], data[:, 1], s=0.3, alpha=0.4)
    axes[1, 0].set_title("data samples")
    for j, (name, s) in enumerate(samples.items(), start=1):
        if name in densities:
            axes[0, j].imshow(densities[name], origin="lower", extent=ext, cmap="viridis")
        axes[0, j].set_title(f"{name}: density" if name in densities else f"{name}: (no grid)")
        axes[1, j].scatter(s[:, 0], s[:, 1], s=0.3, alpha=0.4)
        axes[1, j].set_title(f"{name}: samples")
    for ax in axes.flat:
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def trajectory_figure(
    path: str, trajectory: Sequence[np.ndarray], *, lim: float = 4.5, title: str = ""
) -> str:
    """Scatter panels of the points after each block: `trajectory = [x_0, ..., x_K]`, [N, 2]."""
    cols = len(trajectory)
    fig, axes = plt.subplots(1, cols, figsize=(2.4 * cols, 2.6), squeeze=False)
    x0 = np.asarray(trajectory[0])
    color = np.arctan2(x0[:, 1], x0[:, 0])  # a point keeps its colour along the trajectory
    for k, (ax, pts) in enumerate(zip(axes[0], trajectory, strict=True)):
        pts = np.asarray(pts)
        ax.scatter(pts[:, 0], pts[:, 1], s=0.2, alpha=0.5, c=color, cmap="hsv")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
        ax.set_title("data" if k == 0 else f"block {k}")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
