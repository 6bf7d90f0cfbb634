"""Deformation-graph node counts per node sampling (`graph.SAMPLINGS`) on base meshes at given
radii, against the official code's counts where known (`OFFICIAL_NODES`).

    python -m experiments.bench.amm_nrr_graph --out=DIR [--meshes=d1:8,d2:5] \
        [--samplings=current,authors]

`--meshes` is NAME:RADIUS items (radius in mean edge lengths; NAME as in
`experiments.bench.amm_nrr_pairs.base_mesh`: grid, d1, d2, a mesh path, NAME:fine). The graph is
built on the mesh normalised by its own bounding box (node counts do not depend on the scale).
Prints a table (nodes, links, vertex-node pairs, seconds) and writes DIR/amm_nrr_graph.json.
"""

from __future__ import annotations

import os
import time

from absl import app, flags

from experiments.bench.amm_nrr_pairs import base_mesh
from experiments.bench.timing import format_table, write_json
from research.amm_nrr.graph import SAMPLINGS, build_graph, normalise

# Node counts of the official C++ build (AMM_NRR) at the shared pairs' example radii (PAPERS.md).
OFFICIAL_NODES = {("d1", 8.0): 199, ("d2", 5.0): 266}


def count_nodes(meshes: str, samplings: list[str], data_dir: str) -> list[dict]:
    """One row per (mesh, radius) x sampling: nodes, links (undirected), pairs, seconds."""
    unknown = [s for s in samplings if s not in SAMPLINGS]
    if unknown:
        raise ValueError(f"--samplings: unknown {unknown}; known: {list(SAMPLINGS)}")
    rows = []
    for item in [m.strip() for m in meshes.split(",") if m.strip()]:
        name, _, text = item.rpartition(":")
        try:
            radius = float(text)
        except ValueError:
            radius = float("nan")
        if not name or not radius > 0:
            raise ValueError(f"--meshes: {item!r} is not NAME:RADIUS with a RADIUS > 0, e.g. d1:8")
        mesh = base_mesh(name, data_dir)
        v = normalise(mesh.vertices, mesh.vertices).apply(mesh.vertices)
        for sampling in samplings:
            start = time.perf_counter()
            g = build_graph(mesh, v, radius, sampling=sampling)
            rows.append(
                dict(
                    mesh=name,
                    radius=radius,
                    sampling=sampling,
                    nodes=g.num_nodes,
                    official_nodes=OFFICIAL_NODES.get((name, radius), ""),
                    links=int(g.edge_from.size // 2),
                    pairs=int(g.pair_vertex.size),
                    seconds=round(time.perf_counter() - start, 2),
                )
            )
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str]) -> None:
    del argv
    rows = count_nodes(_MESHES.value, _SAMPLINGS.value, _DATA_DIR.value)
    print(format_table(rows))
    path = os.path.join(_OUT.value, "amm_nrr_graph.json")
    write_json(path, rows, meshes=_MESHES.value)
    print("wrote", path)


if __name__ == "__main__":
    _OUT = flags.DEFINE_string("out", "bench_out/amm_nrr_graph", "Output folder.")
    _MESHES = flags.DEFINE_string("meshes", "d1:8,d2:5", "NAME:RADIUS items, comma-separated.")
    _SAMPLINGS = flags.DEFINE_list("samplings", list(SAMPLINGS), f"Of {list(SAMPLINGS)}.")
    _DATA_DIR = flags.DEFINE_string(
        "data_dir", "../shared/data/meshes/AMM_NRR", "Folder of the shared pairs d1, d2."
    )
    app.run(main)
