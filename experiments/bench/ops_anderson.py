"""Benchmark: Anderson-accelerated MM (ops/anderson.py) vs the plain MM iteration.

    python -m experiments.bench.ops_anderson [--quick] [--out=bench_out/ops_anderson.json]

Problems, each run side by side by the same `anderson_mm` loop (use_aa=False is the baseline):
  linear_mm   gradient step x -> x - (M^T (M x - y)) / L on a least-squares energy, i.e. the linear
              contraction x -> A x + b with A = I - M^T M / L, spectral radius 0.95.
  registration_closest  a small amm_nrr-like problem: a deformation graph (per-node affine +
              translation) deforms a wavy sheet onto a bent, partial (a strip missing), outlier-
              ridden copy of it; energy sum_i Welsch(closest-point distance) + alpha sum_edges
              Welsch(graph smoothness) + beta sum_j ||A_j - proj_SO3(A_j)||^2, one stage at fixed
              nu. Each MM step: one brute-force closest-point search (which also gives the energy
              of the point), Welsch weights, rotation projections, then a 4r x 4r Cholesky solve
              with 3 right-hand sides. Non-convex with discrete correspondences: the two methods
              may stop in different local minima (the final energies say so).
  registration_fixed  the same deformation graph and energy with fixed correspondences
              u_i = bent(v_i) + noise, 20% of them replaced by random points (robust IRLS fit of
              a smooth deformation with outliers).
The maps are fused (return T(x) and E(x)), so an iteration costs one step for both methods.

Reported per problem: the plain run to convergence (tol); the first iteration at which each method's
accepted energy is within `rtol` of the plain method's final energy; the wall time of a run of
exactly that many iterations (compiled, median of repeats); ratios plain / AA.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench.timing import block, format_table, median_seconds, record, write_json
from ops.anderson import anderson_mm

Fused = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def linear_mm_problem(n: int, *, rho: float = 0.95, seed: int = 0) -> tuple[Fused, jax.Array]:
    """Least squares 0.5 ||M x - y||^2 by gradient steps 1/L: a linear contraction of radius rho.

    Returns (fused map x: [n] -> (T(x): [n], E(x): []), x0: [n]) in float32.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((2 * n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    # Singular values^2 spread over [(1 - rho) L, L] -> the iteration matrix has eigenvalues in
    # [0, rho].
    lip = 1.0
    sv = np.sqrt(np.linspace(1.0 - rho, 1.0, n) * lip)
    mat = jnp.asarray((q * sv) @ v.T, jnp.float32)
    y = jnp.asarray(rng.standard_normal(2 * n), jnp.float32)  # noise: E* > 0

    def fused(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        r = mat @ x - y
        return x - (mat.T @ r) / lip, 0.5 * jnp.sum(r * r)

    return fused, jnp.zeros((n,), jnp.float32)


def _welsch(r2: jax.Array, nu: float) -> tuple[jax.Array, jax.Array]:
    """Welsch psi of squared residuals and the MM weights exp(-r^2 / (2 nu^2))."""
    w = jnp.exp(-r2 / (2.0 * nu * nu))
    return 1.0 - w, w


def _proj_so3(a: jax.Array) -> jax.Array:
    """[r, 3, 3] -> nearest rotations (SVD with determinant fix)."""
    u, _, vt = jnp.linalg.svd(a)
    d = jnp.sign(jnp.linalg.det(u @ vt))
    u = u.at[:, :, 2].multiply(d[:, None])
    return u @ vt


def registration_problem(
    grid: int = 30,
    nodes: int = 6,
    *,
    outliers: float = 0.1,
    strip: bool = True,
    closest: bool = True,
    nu_scale: float = 1.0,
    seed: int = 0,
) -> tuple[Fused, jax.Array, dict[str, Any]]:
    """A deformation-graph registration at one nu stage, amm_nrr-style (see module docstring).

    Source: grid x grid points of a wavy sheet; target: a bent, denser copy with a strip removed
    and `outliers` of random points added; nodes x nodes graph nodes with (1 - (d/R)^2)^3 weights.
    Returns (fused map X: [r, 4, 3] -> (T(X), E(X)), X0 (identity), sizes) in float32; X[j] holds
    A_j^T in rows 0..2 and t_j in row 3.
    """
    rng = np.random.default_rng(seed)

    def sheet(k: int) -> np.ndarray:
        u, v = np.meshgrid(np.linspace(0, 1, k), np.linspace(0, 1, k), indexing="ij")
        z = 0.08 * np.sin(2 * np.pi * u) * np.cos(np.pi * v)
        return np.stack([u, v, z], -1).reshape(-1, 3)

    def bend(p: np.ndarray) -> np.ndarray:
        # Roll the sheet around the y axis: angle grows with x, plus a twist in y.
        ang = 0.9 * p[:, 0]
        radius = 1.0 / 0.9
        x = radius * np.sin(ang) + p[:, 2] * np.sin(ang)
        z = radius * (1 - np.cos(ang)) + p[:, 2] * np.cos(ang)
        y = p[:, 1] + 0.1 * np.sin(np.pi * p[:, 0])
        return np.stack([x, y, z], -1)

    src = sheet(grid)
    if closest:
        tgt = bend(sheet(int(grid * 1.3)))
        if strip:  # partial overlap: a strip is missing
            tgt = tgt[~((tgt[:, 1] > 0.4) & (tgt[:, 1] < 0.55))]
        lo, hi = tgt.min(0), tgt.max(0)
        n_out = int(outliers * len(tgt))
        tgt = np.concatenate([tgt, rng.uniform(lo - 0.1, hi + 0.1, (n_out, 3))])
    else:  # fixed correspondences u_i, a fraction replaced by random points
        tgt = bend(src) + 0.003 * rng.standard_normal(src.shape)
        lo, hi = tgt.min(0), tgt.max(0)
        bad = rng.random(len(src)) < outliers
        tgt[bad] = rng.uniform(lo - 0.1, hi + 0.1, (int(bad.sum()), 3))
    # Normalise by the joint bounding box diagonal (as the authors' code does).
    both = np.concatenate([src, tgt])
    centre = both.mean(0)
    diag = np.linalg.norm(both.max(0) - both.min(0))
    src, tgt = (src - centre) / diag, (tgt - centre) / diag

    # Deformation graph on a parameter grid; radius covers the neighbouring nodes.
    idx = np.linspace(0, grid - 1, nodes).round().astype(int)
    node_ids = (idx[:, None] * grid + idx[None, :]).reshape(-1)
    p = src[node_ids]
    spacing = np.linalg.norm(src[idx[1] * grid] - src[idx[0] * grid])
    rad = 1.6 * spacing
    d = np.linalg.norm(src[:, None, :] - p[None], axis=-1)
    w = np.where(d < rad, (1 - (d / rad) ** 2) ** 3, 0.0)
    w = w / w.sum(1, keepdims=True)
    r = len(p)
    # Edges: nodes sharing a covered vertex, both directions.
    share = ((w[:, :, None] > 0) & (w[:, None, :] > 0)).any(0) & ~np.eye(r, dtype=bool)
    ei, ej = np.nonzero(share)
    dp = p[ei] - p[ej]
    s = 1.0 / np.linalg.norm(dp, axis=1)
    s = s / s.mean()

    n = len(src)
    # v' = Phi X + c with Phi: [n, 4r], X: [4r, 3].
    phi = np.zeros((n, r, 4))
    phi[:, :, :3] = w[:, :, None] * (src[:, None, :] - p[None])
    phi[:, :, 3] = w
    phi = phi.reshape(n, 4 * r)
    c = w @ p
    # Edge residual e = A_j (p_i - p_j) + p_j + t_j - p_i - t_i = D X + h.
    dmat = np.zeros((len(ei), r, 4))
    dmat[np.arange(len(ei)), ej, :3] = dp
    dmat[np.arange(len(ei)), ej, 3] += 1.0
    dmat[np.arange(len(ei)), ei, 3] -= 1.0
    dmat = (dmat.reshape(len(ei), 4 * r)) * s[:, None]
    h = -dp * s[:, None]

    f32 = lambda a: jnp.asarray(a, jnp.float32)
    phi, c, dmat, h, tgt_j = f32(phi), f32(c), f32(dmat), f32(h), f32(tgt)
    mean_edge = float(np.linalg.norm(src[1] - src[0]))
    x0 = jnp.tile(f32(np.concatenate([np.eye(3), np.zeros((1, 3))]))[None], (r, 1, 1))

    # Stage parameters: nu_a from the initial closest-point distances, nu_r = 3 l (as amm_nrr).
    if closest:
        d0 = np.sqrt(((src[:, None] - tgt[None]) ** 2).sum(-1).min(1))
    else:
        d0 = np.linalg.norm(src - tgt, axis=1)
    nu_a = nu_scale * float(max(np.median(d0), mean_edge / np.sqrt(3)))
    nu_r = 3.0 * spacing
    alpha = 1.0 * n / len(ei)
    beta = 1.0 * n / r
    sel = jnp.asarray(np.kron(np.eye(r), np.eye(4)[:3]), jnp.float32)  # [3r, 4r]: A^T blocks

    def fused(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        xm = x.reshape(4 * r, 3)
        v = phi @ xm + c
        if closest:  # brute-force closest point (the k-d tree of the C++ code)
            d2 = jnp.sum(v * v, 1)[:, None] - 2 * v @ tgt_j.T + jnp.sum(tgt_j * tgt_j, 1)[None]
            u = tgt_j[jnp.argmin(d2, axis=1)]
        else:
            u = tgt_j
        rd = v - u
        psi_d, wd = _welsch(jnp.sum(rd * rd, 1), nu_a)
        re = dmat @ xm + h
        psi_e, we = _welsch(jnp.sum(re * re, 1), nu_r)
        a = x[:, :3, :].transpose(0, 2, 1)  # [r, 3, 3] A_j
        rot = _proj_so3(a)
        energy = jnp.sum(psi_d) + alpha * jnp.sum(psi_e) + beta * jnp.sum((a - rot) ** 2)
        # Quadratic surrogate at x; its minimiser is T(x).
        kd = wd / nu_a**2
        ke = alpha * we / nu_r**2
        hess = (phi.T * kd) @ phi + (dmat.T * ke) @ dmat + 2 * beta * sel.T @ sel
        hess = hess + 1e-8 * jnp.trace(hess) / (4 * r) * jnp.eye(4 * r, dtype=hess.dtype)
        rhs = (phi.T * kd) @ (u - c) - (dmat.T * ke) @ h
        rhs = rhs + 2 * beta * sel.T @ rot.transpose(0, 2, 1).reshape(3 * r, 3)
        chol = jnp.linalg.cholesky(hess)
        x_new = jax.scipy.linalg.cho_solve((chol, True), rhs)
        return x_new.reshape(r, 4, 3), energy

    sizes = {"vertices": n, "target": len(tgt), "nodes": r, "edges": len(ei), "nu_a": nu_a}
    return fused, x0, sizes


def _first_below(trace: np.ndarray, target: float) -> int | None:
    hits = np.nonzero(trace <= target)[0]
    return int(hits[0]) + 1 if len(hits) else None


def _run_and_time(fn: Callable[[Any], Any], x0: Any, repeats: int) -> tuple[Any, float]:
    """First call compiles (and serves as the warm-up); then the median of `repeats` timed calls,
    cut to one when a run takes over 2 s, to keep the benchmark within minutes on a 2-core CPU."""
    start = time.perf_counter()
    out = block(fn(x0))
    first = time.perf_counter() - start
    repeats = repeats if first < 2.0 else 1
    return out, median_seconds(functools.partial(fn, x0), repeats=repeats, warmup=0)


def _compare(
    name: str,
    fused: Fused,
    x0: Any,
    *,
    shape: Any,
    max_iter: int,
    tol: float,
    rtol: float,
    repeats: int,
    m: int = 5,
) -> list[dict[str, Any]]:
    """Plain MM vs safeguarded AA on one fused map; two timing.record rows (baseline first)."""

    def runner(use_aa: bool, iters: int, tol_: float) -> Callable[[Any], Any]:
        return jax.jit(
            lambda x: anderson_mm(fused, None, x, m=m, max_iter=iters, tol=tol_, use_aa=use_aa)
        )

    rows = []
    for impl, use_aa in (("plain_mm", False), ("anderson_mm", True)):
        (_, info), seconds = _run_and_time(runner(use_aa, max_iter, tol), x0, repeats)
        rows.append(dict(impl=impl, use_aa=use_aa, info=info, seconds_to_tol=seconds))
    e_plain = float(rows[0]["info"].energy)
    target = e_plain + rtol * abs(e_plain)
    for row in rows:
        trace = np.asarray(row["info"].energy_trace)
        k = _first_below(trace, target)
        row["k"] = k
        row["k_1pct"] = _first_below(trace, e_plain + 1e-2 * abs(e_plain))
        row["seconds"] = float("nan")
        if k is not None:  # time a run of exactly the k iterations that reach the target
            _, row["seconds"] = _run_and_time(runner(row["use_aa"], k, 0.0), x0, repeats)

    base = rows[0]
    out = []
    for row in rows:
        info = row["info"]
        ok = row["k"] is not None and base["k"] is not None
        out.append(
            record(
                f"anderson/{name}",
                row["impl"],
                shape,
                "float32",
                row["seconds"],
                baseline_seconds=base["seconds"] if ok else None,
                iters_to_target=row["k"],
                iter_ratio=(base["k"] / row["k"]) if ok else None,
                iters_to_1pct=row["k_1pct"],
                target_energy=target,
                rtol=rtol,
                final_energy=float(info.energy),
                iters_to_tol=int(info.iterations),
                iter_ratio_to_tol=int(base["info"].iterations) / int(info.iterations),
                seconds_to_tol=row["seconds_to_tol"],
                ratio_to_tol=base["seconds_to_tol"] / row["seconds_to_tol"],
                converged=bool(info.converged),
                aa_accepted=int(info.accepted),
                aa_rejected=int(info.rejected),
                tol=tol,
                m=m,
            )
        )
    return out


def benchmark(quick: bool = False) -> list[dict[str, Any]]:
    """Plain MM vs safeguarded AA (m = 5) on three problems; returns timing.record rows.

    Iterations/time "to target": until the accepted energy is within rtol = 1e-5 of the plain
    method's final energy (None / NaN if never reached); iters_to_1pct the same with 1e-2.
    "To tol": until max |T(x) - x| < 1e-5 (each method's own convergence).
    """
    repeats = 3
    rows = []
    n = 200 if quick else 1000
    fused, x0 = linear_mm_problem(n)
    rows += _compare(
        "linear_mm", fused, x0, shape=[n], max_iter=3000, tol=1e-5, rtol=1e-5, repeats=repeats
    )
    grid, nodes = (24, 5) if quick else (32, 6)
    for name, closest in (("registration_fixed", False), ("registration_closest", True)):
        outliers = 0.1 if closest else 0.2
        fused, x0, sizes = registration_problem(grid, nodes, outliers=outliers, closest=closest)
        shape = f"{sizes['vertices']}v->{sizes['target']}v,{sizes['nodes']}nodes"
        rows += _compare(
            name, fused, x0, shape=shape, max_iter=3000, tol=1e-5, rtol=1e-5, repeats=repeats
        )
    return rows


COLUMNS = [
    "op",
    "impl",
    "shape",
    "iters_to_target",
    "iter_ratio",
    "iters_to_1pct",
    "seconds",
    "ratio_vs_baseline",
    "final_energy",
    "iters_to_tol",
    "iter_ratio_to_tol",
    "seconds_to_tol",
    "ratio_to_tol",
    "converged",
    "aa_accepted",
    "aa_rejected",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller problems, fewer repeats")
    parser.add_argument("--out", default="", help="write the records as JSON to this path")
    args = parser.parse_args()
    rows = benchmark(quick=args.quick)
    print(format_table(rows, COLUMNS))
    if args.out:
        write_json(args.out, rows, benchmark="ops_anderson", quick=args.quick)


if __name__ == "__main__":
    main()
