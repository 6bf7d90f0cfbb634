"""AMM-NRR on generated registration pairs with ground truth: every deformation family x
corruption of `research.datasets.registration_pairs` on each base mesh, Welsch vs least squares
(and any other variant of `VARIANTS`), RMSE over the bounding-box diagonal.

    python -m experiments.bench.amm_nrr_pairs --out=DIR [--meshes=grid,d1,d2] \
        [--variants=welsch,l2] [--radius=0] [--seed=0] [--pairs=articulated/clean,...]

Base meshes: `grid` (a bumpy 40 x 40 square generated in code), `d1` / `d2` (the sources of the
shared pairs under --data_dir), or a path to an OBJ / PLY mesh; `NAME:fine` is that mesh subdivided
once. Writes DIR/amm_nrr_pairs.json
(every row) and prints the per-pair table and the family x corruption summary.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import app, flags, logging

from experiments.bench.timing import format_table, write_json
from research.amm_nrr import robustness, solver
from research.datasets import registration_pairs
from research.datasets.meshes import Mesh, grid_surface, load_mesh
from research.datasets.paths import resolve_data_dir

# Named variants: solver.Options fields changed from the defaults (radius: --radius, else this).
VARIANTS = {
    "welsch": {},
    "welsch_official_start": {"nu_start": "median"},
    "welsch_tail_start": {"nu_start": "tail"},
    "welsch_radius5": {"radius": 5.0},  # the authors' CLI default
    "welsch_radius12": {"radius": 12.0},
    # the official code's node sampling (graph.build_graph(sampling="authors"))
    "welsch_authors_sampling": {"sampling": "authors"},
    "welsch_radius12_authors_sampling": {"radius": 12.0, "sampling": "authors"},
    # every stage in double precision (the authors' C++ runs in double)
    "welsch_float64": {"dtype": "float64"},
    "welsch_radius12_float64": {"radius": 12.0, "dtype": "float64"},
    # least-squares edges at nodes without data (solver.UNMATCHED_REGS)
    "welsch_unmatched_quadratic": {"unmatched_reg": "quadratic"},
    # matches past the target's rim rejected (solver.Options.reject_boundary), alone and with
    # least-squares edges at the nodes this leaves without data
    "welsch_reject_boundary": {"reject_boundary": True},
    "welsch_reject_boundary_quadratic": {"reject_boundary": True, "unmatched_reg": "quadratic"},
    "l2": {"robust": False},
}


def base_mesh(name: str, data_dir: str) -> Mesh:
    """`grid`, a shared pair's source (`d1`, `d2` under data_dir) or a mesh file; `NAME:fine`:
    that mesh subdivided once (4x the triangles, the same surface)."""
    if name.endswith(":fine"):
        return registration_pairs.subdivide(base_mesh(name[: -len(":fine")], data_dir))
    if name == "grid":
        return grid_surface(40)
    if os.path.splitext(name)[1]:
        return load_mesh(name)
    return load_mesh(os.path.join(resolve_data_dir(data_dir), name, "source.obj"))


def variant_options(names: list[str], radius: float) -> dict[str, solver.Options]:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; known: {sorted(VARIANTS)}")
    return {n: dataclasses.replace(solver.Options(radius=radius), **VARIANTS[n]) for n in names}


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    variants = variant_options(_VARIANTS.value, _RADIUS.value)
    pairs = {
        name: [
            pair
            for pair in registration_pairs.make_pairs(
                base_mesh(name, _DATA_DIR.value), seed=_SEED.value
            )
            if not _PAIRS.value or pair.name in _PAIRS.value
        ]
        for name in _MESHES.value
    }
    start = time.perf_counter()
    rows = robustness.benchmark_pairs(pairs, variants)
    summary = robustness.summarise_benchmark(rows, list(variants))
    columns = [
        "mesh",
        "family",
        "corruption",
        "variant",
        "nodes",
        "iterations",
        "solve_s",
        "rmse_initial",
        "rmse",
        "rmse_overlap_initial",
        "rmse_overlap",
    ]
    print(format_table([{k: r.get(k) for k in columns} for r in rows]))
    print("\nGeometric mean over the meshes (partial pairs: over the overlap):")
    print(format_table(summary))
    failures = [r["error"] for r in rows if r["error"]]
    print(f"\n{len(failures)} of {len(rows)} solves failed" + "".join(f"\n  {m}" for m in failures))
    path = os.path.join(_OUT.value, "amm_nrr_pairs.json")
    write_json(
        path,
        rows,
        summary=summary,
        radius=_RADIUS.value,
        seed=_SEED.value,
        seconds=time.perf_counter() - start,
    )
    print(f"wrote {path} ({time.perf_counter() - start:.0f} s, at {time.ctime()})")


if __name__ == "__main__":
    _OUT = flags.DEFINE_string("out", "bench_out/amm_nrr_pairs", "Output folder.")
    _MESHES = flags.DEFINE_list("meshes", "grid,d1,d2", "Base meshes: grid, d1, d2 or paths.")
    _VARIANTS = flags.DEFINE_list("variants", "welsch,l2", f"Of {sorted(VARIANTS)}.")
    _RADIUS = flags.DEFINE_float(
        "radius", 0.0, "Node radius / mean edge length (0: from the mesh, the solver's default)."
    )
    _SEED = flags.DEFINE_integer("seed", 0, "Seed of the deformations and corruptions.")
    _PAIRS = flags.DEFINE_list("pairs", "", "FAMILY/CORRUPTION pairs to run (default: all 12).")
    _DATA_DIR = flags.DEFINE_string(
        "data_dir", "../shared/data/meshes/AMM_NRR", "Folder of the shared pairs d1, d2."
    )
    app.run(main)
