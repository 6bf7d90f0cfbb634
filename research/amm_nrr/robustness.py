"""Synthetic pairs with known correspondence, and the Welsch vs least-squares robustness sweep.

A level l in [0, 1] scales three corruptions of the target together: Gaussian noise
(sigma = l x noise), outlier points (l x outliers x the target's size, uniform in the bounding
box enlarged 10%), and a cut-away slab of the target (the l x cut fraction of its points with the
largest x). The target samples the deformed surface `density` times more finely than the source
(so point-to-point matching is not limited by the target's vertex spacing); the ground truth is
the smoothly deformed source, vertex by vertex.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from absl import logging

from research.amm_nrr import solver
from research.amm_nrr.graph import normalise
from research.datasets import registration_pairs
from research.datasets.meshes import Mesh, grid_surface, smooth_deformation
from research.datasets.registration_pairs import rmse
from research.training.errors import NonFiniteError


@dataclasses.dataclass(frozen=True)
class SyntheticPair:
    """source: Mesh; target: Mesh or point cloud; truth: [n, 3] where source vertices belong."""

    source: Mesh
    target: Mesh
    truth: np.ndarray


def make_pair(
    rng: np.random.Generator,
    *,
    grid: int = 24,
    density: int = 2,
    amplitude: float = 0.05,
    noise: float = 0.0,
    outliers: float = 0.0,
    cut: float = 0.0,
) -> SyntheticPair:
    """A bumpy square (grid x grid cells), a smooth random deformation of it sampled `density`
    times more finely as the target, then the corruptions (noise relative to the bounding-box
    diagonal, per coordinate; outliers and cut as fractions of the target's points). Without
    outliers or cut the target is a mesh, else a point cloud."""
    source = grid_surface(grid)
    fine = grid_surface(grid * density)
    field = smooth_deformation(
        rng, source.vertices.min(0), source.vertices.max(0), amplitude=amplitude
    )
    truth = field(source.vertices)
    dense = field(fine.vertices)
    diag = float(np.linalg.norm(truth.max(0) - truth.min(0)))
    pts = dense + rng.normal(size=dense.shape) * noise * diag
    keep = np.ones(len(pts), bool)
    if cut > 0:
        keep = dense[:, 0] < np.quantile(dense[:, 0], 1.0 - cut)
    pts = pts[keep]
    num_out = int(round(outliers * len(dense)))
    if num_out:
        lo, hi = dense.min(0), dense.max(0)
        pad = 0.1 * (hi - lo)
        pts = np.concatenate([pts, rng.uniform(lo - pad, hi + pad, size=(num_out, 3))])
    target = Mesh(pts, fine.faces) if keep.all() and not num_out else Mesh(pts)
    return SyntheticPair(source, target, truth)


def sweep(
    levels: list[float],
    options: solver.Options,
    *,
    seed: int,
    grid: int,
    density: int,
    amplitude: float,
    noise: float,
    outliers: float,
    cut: float,
) -> list[dict[str, float]]:
    """RMSE vs ground truth for Welsch and least squares at each level: rows
    {level, noise, outliers, cut, rmse_welsch, rmse_l2, rmse_initial, fit_welsch, fit_l2}.
    The settings (no defaults here) come from `config.robustness` (experiments/configs/amm_nrr.py);
    noise, outliers and cut are the corruptions at level 1. A solve that ends with a NaN or
    infinite energy or vertices raises NonFiniteError naming the level."""
    rows = []
    for level in levels:
        rng = np.random.default_rng(seed)
        pair = make_pair(
            rng,
            grid=grid,
            density=density,
            amplitude=amplitude,
            noise=level * noise,
            outliers=level * outliers,
            cut=level * cut,
        )
        scale = normalise(pair.source.vertices, pair.target.vertices).scale
        row = dict(level=level, noise=level * noise, outliers=level * outliers, cut=level * cut)
        row["rmse_initial"] = rmse(pair.source.vertices, pair.truth)
        for name, robust in (("welsch", True), ("l2", False)):
            label = f"robustness level {level:g} ({name})"
            res = solver.register(
                pair.source, pair.target, dataclasses.replace(options, robust=robust), label=label
            )
            solver.check_finite(res, label)
            row[f"rmse_{name}"] = rmse(res.deformed, pair.truth)
            row[f"fit_{name}"] = solver.fit_metric(res.deformed, pair.target.vertices, scale)
        rows.append(row)
    return rows


def benchmark_pairs(
    pairs: dict[str, list[registration_pairs.RegistrationPair]],
    variants: dict[str, solver.Options],
) -> list[dict[str, Any]]:
    """Registers every generated pair (`research.datasets.registration_pairs`) with every variant.

    pairs: {base mesh name: its pairs}; variants: {name: options}. One row per pair and variant:
    {mesh, family, corruption, variant, nodes, iterations, solve_s, rmse, rmse_overlap,
    rmse_initial, rmse_overlap_initial, error}. A solve that ends in a NaN or infinite energy is
    a row with NaN errors and the NonFiniteError's message under `error` (empty otherwise), so
    one failing pair does not hide the others."""
    rows = []
    for mesh_name, mesh_pairs in pairs.items():
        for pair in mesh_pairs:
            family, corruption = pair.name.split("/")
            initial = registration_pairs.registration_errors(pair.source.vertices, pair)
            for variant, options in variants.items():
                label = f"{mesh_name} {pair.name} ({variant})"
                row: dict[str, Any] = dict(
                    mesh=mesh_name, family=family, corruption=corruption, variant=variant
                )
                try:
                    res = solver.register(pair.source, pair.target, options, label=label)
                    solver.check_finite(res, label)
                    errors, message = registration_pairs.registration_errors(res.deformed, pair), ""
                    row.update(radius=res.radius, nodes=res.num_nodes, iterations=res.iterations)
                    row.update(solve_s=res.solve_seconds)
                except NonFiniteError as err:
                    errors = dict.fromkeys(initial, float("nan"))
                    message = str(err)
                row.update(errors)
                row.update(rmse_initial=initial["rmse"])
                row.update(rmse_overlap_initial=initial["rmse_overlap"], error=message)
                logging.info(
                    "%s: rmse %.5f (initial %.5f) %s", label, row["rmse"], initial["rmse"], message
                )
                rows.append(row)
    return rows


def summarise_benchmark(rows: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    """One row per family x corruption: each variant's RMSE (all vertices, and over the overlap
    for partial pairs) as the geometric mean over the base meshes, the initial RMSE, and how
    many meshes each variant failed on (NaN) or did not improve on."""
    table = []
    keys = sorted(
        {(r["family"], r["corruption"]) for r in rows},
        key=lambda k: (
            registration_pairs.FAMILIES.index(k[0]),
            registration_pairs.CORRUPTIONS.index(k[1]),
        ),
    )
    for family, corruption in keys:
        group = [r for r in rows if (r["family"], r["corruption"]) == (family, corruption)]
        metric = "rmse_overlap" if corruption == "partial" else "rmse"
        out: dict[str, Any] = dict(family=family, corruption=corruption, metric=metric)
        first = [r for r in group if r["variant"] == variants[0]]
        out["initial"] = _geomean([r[f"{metric}_initial"] for r in first])
        for v in variants:
            vals = [r[metric] for r in group if r["variant"] == v]
            inits = [r[f"{metric}_initial"] for r in group if r["variant"] == v]
            out[v] = _geomean(vals)
            out[f"{v} NaN / not improved"] = (
                f"{sum(not np.isfinite(x) for x in vals)} / "
                f"{sum(not x < i for x, i in zip(vals, inits, strict=True))}"
            )
        table.append(out)
    return table


def _geomean(values: list[float]) -> float:
    """Geometric mean; NaN if any value is NaN (a failed solve is not averaged away)."""
    v = np.asarray(values, np.float64)
    return float(np.exp(np.mean(np.log(v)))) if np.all(v > 0) else float("nan")
