"""Exact nearest neighbour: ops.nearest_grid, ops.nearest (XLA, Pallas) vs scipy's cKDTree.

    python -m experiments.bench.ops_nearest [--quick] [--out=bench_out/]   # CPU benchmark
    python -m experiments.bench.ops_nearest --gpu_check [--out=...]        # on the GPU machine

Baseline: `scipy.spatial.cKDTree(points).query(queries, workers=-1)` (all cores), timed with its
build ("kdtree build+query") and without ("kdtree query"). `ratio_vs_baseline` is always against
build+query; the grid's query-only time is what a registration loop pays per iteration, where
the target (and so the index) is fixed. Agreement is measured against cKDTree in float64 on the
same float32 coordinates: all indices, indices where the nearest point is clearly nearer than the
second (no near-tie), and the largest error in squared distance.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from experiments.bench.timing import (
    failure_record,
    format_table,
    median_seconds,
    record,
    write_json,
)
from ops import nearest, nearest_grid

OP = "nearest_neighbor"
MESHES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "meshes")


def _obj_vertices(path: str) -> np.ndarray:
    """[V, 3] float32 vertices of an OBJ file (`v x y z` lines)."""
    with open(path) as f:
        rows = [line.split()[1:4] for line in f if line.startswith("v ")]
    if not rows:
        raise ValueError(f"{path}: no `v x y z` vertex lines")
    return np.asarray(rows, np.float32)


def _cases(quick: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, queries, points), float32 3-D."""
    rng = np.random.default_rng(0)
    n = 4000 if quick else 40000
    cases = [
        (f"uniform cube {n}x{n}", rng.random((n, 3)), rng.random((n, 3))),
        (f"gaussian {n}x{n}", rng.standard_normal((n, 3)), rng.standard_normal((n, 3))),
    ]
    d1 = os.path.join(os.environ.get("MESHES_DIR", MESHES), "AMM_NRR", "d1")
    if not quick:
        if not os.path.isdir(d1):
            raise FileNotFoundError(
                f"{d1}: AMM_NRR d1 meshes (set MESHES_DIR to shared/data/meshes)"
            )
        target = _obj_vertices(os.path.join(d1, "target.obj"))
        cases += [
            (
                "AMM_NRR d1 source->target (registration start)",
                _obj_vertices(os.path.join(d1, "source.obj")),
                target,
            ),
            (
                "AMM_NRR d1 s2tres->target (registration end)",
                _obj_vertices(os.path.join(d1, "s2tres.obj")),
                target,
            ),
        ]
    return [(name, np.asarray(q, np.float32), np.asarray(p, np.float32)) for name, q, p in cases]


def _agreement(q: np.ndarray, p: np.ndarray, index: Any, sq_dist: Any) -> dict[str, Any]:
    q64, p64 = q.astype(np.float64), p.astype(np.float64)
    ref_d, ref_i = cKDTree(p64).query(q64, k=2, workers=-1)
    index, sq_dist = np.asarray(index), np.asarray(sq_dist, np.float64)
    clear = ref_d[:, 1] ** 2 - ref_d[:, 0] ** 2 > 1e-5 * np.maximum(ref_d[:, 0] ** 2, 1e-12)
    return {
        "index_agreement": float(np.mean(index == ref_i[:, 0])),
        "clear_index_agreement": float(np.mean(index[clear] == ref_i[clear, 0])),
        "max_sq_dist_err": float(np.max(np.abs(sq_dist - ref_d[:, 0] ** 2))),
    }


def _interleaved(contenders: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median seconds per contender, timed round-robin (one call each per round) so that load
    from other processes on the shared cores hits every contender alike."""
    for fn in contenders.values():
        median_seconds(fn, repeats=1, warmup=1)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            times[name].append(median_seconds(fn, repeats=1, warmup=0))
    return {name: float(np.median(t)) for name, t in times.items()}


def benchmark(quick: bool = False) -> list[dict]:
    """All contenders on each case. Full: ~1.5 min on a 2-core CPU; quick: ~15 s."""
    rows = []
    rounds = 5 if quick else 9
    for name, q, p in _cases(quick):
        shape = (len(q), len(p), q.shape[1])
        qj, pj = jnp.asarray(q), jnp.asarray(p)
        tree, index = cKDTree(p), nearest_grid.build_grid_index(p)
        t = _interleaved(
            {
                "kdtree build+query": lambda q=q, p=p: cKDTree(p).query(q, workers=-1),
                "kdtree query": lambda q=q, t=tree: t.query(q, workers=-1),
                "grid build+query": lambda q=qj, p=p: nearest_grid.grid_nearest(
                    nearest_grid.build_grid_index(p), q
                ),
                "grid build": lambda p=p: nearest_grid.build_grid_index(p),
                "grid query": lambda q=qj, i=index: nearest_grid.grid_nearest(i, q),
            },
            rounds,
        )
        common = dict(case=name, baseline_seconds=t["kdtree build+query"])
        notes = {
            "kdtree build+query": "scipy cKDTree, workers=-1 (all cores)",
            "kdtree query": "tree built beforehand",
            "grid build+query": f"windows per level {[lv.window for lv in index.levels]}",
            "grid query": "index built beforehand (a registration iteration)",
        }
        agree = _agreement(q, p, *nearest_grid.grid_nearest(index, qj))
        for impl, seconds in t.items():
            extra = agree if impl == "grid build+query" else {}
            rows.append(
                record(OP, impl, shape, "float32", seconds, **common, **extra, note=notes.get(impl))
            )
        if not name.startswith("AMM_NRR d1 s2tres"):  # brute force costs the same on both d1 cases
            xla = median_seconds(
                lambda q=qj, p=pj: nearest.nearest_neighbor(q, p, impl="xla"),
                repeats=3 if quick else 1,
            )
            agree = _agreement(q, p, *nearest.nearest_neighbor(qj, pj, impl="xla"))
            rows.append(
                record(
                    OP,
                    "xla brute force",
                    shape,
                    "float32",
                    xla,
                    **common,
                    **agree,
                    note=f"tiles {nearest.XLA_TILES}",
                )
            )
        if quick and name.startswith("uniform"):
            small_q, small_p = qj[:500], pj[:2000]
            pallas = median_seconds(
                lambda q=small_q, p=small_p: nearest.nearest_neighbor(
                    q, p, impl="pallas", interpret=True
                ),
                repeats=1,
            )
            rows.append(
                record(
                    OP,
                    "pallas interpret",
                    (500, 2000, 3),
                    "float32",
                    pallas,
                    case=name,
                    note="interpret mode (tests only); not comparable",
                )
            )
    if not quick:
        rows += _xla_tile_sweep()
    return rows


def _xla_tile_sweep() -> list[dict]:
    """A few XLA tile sizes on 8192 x 40000 (d = 3)."""
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.random((8192, 3)), jnp.float32)
    p = jnp.asarray(rng.random((40000, 3)), jnp.float32)
    rows = []
    for tiles in (
        nearest.NearestTiles(256, 1024),
        nearest.NearestTiles(512, 512),
        nearest.NearestTiles(1024, 256),
        nearest.NearestTiles(256, 256),
        nearest.NearestTiles(128, 2048),
        nearest.NearestTiles(256, 1024, candidates=1),
    ):
        t = median_seconds(
            lambda tiles=tiles: nearest.nearest_neighbor(q, p, impl="xla", tiles=tiles), repeats=2
        )
        label = f"xla tiles {tiles.block_q}x{tiles.block_p}, {tiles.candidates} candidates"
        rows.append(record(OP, label, (8192, 40000, 3), "float32", t, case="tile sweep"))
    return rows


def gpu_check() -> list[dict]:
    """On a GPU: every impl (Pallas compiled, not interpreted) vs the reference on fresh random
    inputs (index agreement, distance error), then timings at 40k x 40k and registration size.

    Elsewhere it runs small sizes with Pallas in interpret mode, a smoke test of this script.
    Correctness rows carry `ok`.
    """
    on_gpu = jax.default_backend() == "gpu"
    interpret = not on_gpu
    rows = []
    key = jax.random.key(int(time.time()) % 2**31)
    shapes = ((4096, 8192, 3), (1000, 3001, 16), (777, 5000, 2)) if on_gpu else ((300, 700, 3),)
    for shape in shapes:
        kq, kp, key = jax.random.split(key, 3)
        q = jax.random.normal(kq, shape[::2], jnp.float32)
        p = jax.random.normal(kp, shape[1:], jnp.float32)
        ref_i, ref_d = nearest.nearest_neighbor_reference(q, p)
        impls = [("xla", {}), ("pallas", {"interpret": interpret})]
        for tiles in (nearest.NearestTiles(32, 128), nearest.NearestTiles(128, 64)):
            impls.append(("pallas", {"interpret": interpret, "tiles": tiles}))
        if shape[2] <= 3:
            impls.append(("grid", {}))
        for impl, kw in impls:
            label = impl + (
                f" {kw['tiles'].block_q}x{kw['tiles'].block_p}" if "tiles" in kw else ""
            )
            try:
                index, sq = nearest.nearest_neighbor(q, p, impl=impl, **kw)
                rel = jnp.abs(sq - ref_d) / jnp.maximum(ref_d, 1e-12)
                rows.append(
                    record(
                        OP,
                        label,
                        shape,
                        "float32",
                        0.0,
                        case="correctness",
                        index_agreement=float(jnp.mean(index == ref_i)),
                        max_rel_sq_dist_err=float(jnp.max(rel)),
                        ok=bool(jnp.max(rel) < 1e-4),  # ties may pick another index
                    )
                )
            except Exception as e:  # report a lowering failure instead of stopping the check
                rows.append(
                    failure_record(OP, label, shape, "float32", e, case="correctness", ok=False)
                )
    rng = np.random.default_rng(0)
    for shape in ((40000, 40000, 3), (16127, 37523, 3)) if on_gpu else ((2000, 3000, 3),):
        q = rng.random((shape[0], 3)).astype(np.float32)
        p = rng.random((shape[1], 3)).astype(np.float32)
        qj, pj = jnp.asarray(q), jnp.asarray(p)
        base = median_seconds(lambda q=q, p=p: cKDTree(p).query(q, workers=-1))
        rows.append(
            record(
                OP,
                "kdtree build+query (host)",
                shape,
                "float32",
                base,
                baseline_seconds=base,
                case="timing",
            )
        )
        index = nearest_grid.build_grid_index(p)
        contenders = {
            "xla": lambda q=qj, p=pj: nearest.nearest_neighbor(q, p, impl="xla"),
            "pallas": lambda q=qj, p=pj: nearest.nearest_neighbor(
                q, p, impl="pallas", interpret=interpret
            ),
            "grid query": lambda q=qj, i=index: nearest_grid.grid_nearest(i, q),
        }
        for label, fn in contenders.items():
            try:
                rows.append(
                    record(
                        OP,
                        label,
                        shape,
                        "float32",
                        median_seconds(fn),
                        baseline_seconds=base,
                        case="timing",
                    )
                )
            except Exception as e:
                rows.append(failure_record(OP, label, shape, "float32", e, case="timing"))
    return rows


COLUMNS = [
    "case",
    "impl",
    "shape",
    "seconds",
    "ratio_vs_baseline",
    "index_agreement",
    "clear_index_agreement",
    "max_sq_dist_err",
    "note",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gpu_check", action="store_true")
    parser.add_argument("--out", default="bench_out")
    args = parser.parse_args()
    rows = gpu_check() if args.gpu_check else benchmark(quick=args.quick)
    columns = COLUMNS if not args.gpu_check else None
    print(format_table(rows, columns))
    name = "ops_nearest_gpu_check.json" if args.gpu_check else "ops_nearest.json"
    write_json(os.path.join(args.out, name), rows, quick=args.quick)


if __name__ == "__main__":
    main()
