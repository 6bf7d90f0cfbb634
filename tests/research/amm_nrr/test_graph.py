"""Deformation graph: weights, coverage, neighbours, and the isolated-vertex error."""

import numpy as np
import pytest

from research.amm_nrr.graph import build_graph, normalise
from research.datasets.meshes import Mesh, grid_surface, mean_edge_length


@pytest.mark.parametrize("coverage", ["geodesic", "euclidean"])
def test_graph_weights_and_neighbours(coverage):
    mesh = grid_surface(12)
    v = normalise(mesh.vertices, mesh.vertices).apply(mesh.vertices)
    g = build_graph(mesh, v, 3.0, coverage=coverage)
    n = v.shape[0]
    np.testing.assert_allclose(np.bincount(g.pair_vertex, g.pair_weight, n), 1.0, rtol=1e-12)
    assert np.all(np.diff(g.pair_vertex) >= 0)  # sorted by vertex
    # Every node covers itself with the largest raw weight, and nodes are >= R apart (greedy).
    d = np.linalg.norm(g.nodes[:, None] - g.nodes[None], axis=-1)
    assert np.all(d[~np.eye(g.num_nodes, dtype=bool)] >= g.radius * (1 - 1e-9) - 1e-12) or (
        coverage == "geodesic"
    )
    # Edges both ways, between nodes that share a vertex.
    edges = set(zip(g.edge_from.tolist(), g.edge_to.tolist(), strict=True))
    assert all((j, i) in edges for i, j in edges)
    cover = {}
    for vert, node in zip(g.pair_vertex, g.pair_node, strict=True):
        cover.setdefault(int(node), set()).add(int(vert))
    for i, j in edges:
        assert cover[i] & cover[j]
    np.testing.assert_allclose(g.edge_scale.mean(), 1.0)
    assert g.mean_edge == pytest.approx(mean_edge_length(mesh, v))


def test_isolated_vertex_is_reported():
    mesh = grid_surface(6)
    v = np.concatenate([mesh.vertices, [[0.5, 0.5, 3.0]]])
    bad = Mesh(v, mesh.faces)
    with pytest.raises(ValueError, match=r"1 isolated vertices.*\[49\]"):
        build_graph(bad, normalise(v, v).apply(v), 3.0)
    # As a point cloud (Euclidean coverage) the far vertex becomes its own node.
    g = build_graph(Mesh(v), normalise(v, v).apply(v), 3.0)
    assert 49 in g.node_index.tolist()


def test_landmark_file(tmp_path):
    from research.amm_nrr.train import load_landmarks

    good = tmp_path / "lm.txt"
    good.write_text("0 5\n3 7\n")
    np.testing.assert_array_equal(load_landmarks(str(good), 10, 10), [[0, 5], [3, 7]])
    bad = tmp_path / "bad.txt"
    bad.write_text("0 5\n3 70\n")
    with pytest.raises(ValueError, match="bad.txt"):
        load_landmarks(str(bad), 10, 10)


def test_binary_maps_the_authors_flags():
    from experiments.amm_nrr import _rewrite

    argv = _rewrite(
        ["amm", "--source=s.obj", "--out=D", "--use_aa=false", "--config.solver.max_iter=3"]
    )
    assert argv[1].startswith("--config=") and argv[1].endswith("amm_nrr.py:paper")
    assert argv[2:] == [
        "--config.source=s.obj",
        "--workdir=D",
        "--config.solver.use_aa=false",
        "--config.solver.max_iter=3",
    ]
    # An explicit --config moves first (absl reads --config.* only after it).
    argv = _rewrite(["amm", "--radius=8", "--config=c.py:tiny", "--workdir=W"])
    assert argv == ["amm", "--config=c.py:tiny", "--config.solver.radius=8", "--workdir=W"]


def test_auto_radius_follows_the_size_not_the_resolution(monkeypatch):
    """radius None: max(AUTO_RADIUS x diagonal, AUTO_MIN_EDGES mean edge lengths). A coarse mesh
    gets the authors' 5 mean edge lengths; a finer sampling of a surface keeps the spacing
    relative to its size, so its node count stays put where a count of edges multiplies it
    (AUTO_RADIUS raised to 0.2 so that the diagonal rule applies to small test meshes)."""
    from research.amm_nrr import graph as G
    from research.datasets.registration_pairs import subdivide

    coarse = grid_surface(24)  # mean edge 0.035 of the diagonal: 5 edges > 0.02
    v = normalise(coarse.vertices, coarse.vertices).apply(coarse.vertices)
    g = build_graph(coarse, v, None)
    np.testing.assert_allclose(g.radius, G.AUTO_MIN_EDGES * g.mean_edge)
    monkeypatch.setattr(G, "AUTO_RADIUS", 0.2)
    nodes = {}
    for name, mesh in (("mesh", coarse), ("subdivided", subdivide(subdivide(coarse)))):
        w = normalise(mesh.vertices, mesh.vertices).apply(mesh.vertices)
        auto, fixed = build_graph(mesh, w, None), build_graph(mesh, w, G.AUTO_MIN_EDGES)
        np.testing.assert_allclose(auto.radius, 0.2)
        nodes[name] = auto.num_nodes, fixed.num_nodes
    assert abs(nodes["subdivided"][0] / nodes["mesh"][0] - 1) < 0.2  # auto: the same graph size
    assert nodes["subdivided"][1] > 8 * nodes["mesh"][1]  # 5 edge lengths: ~16x the nodes
