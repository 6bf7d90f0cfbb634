"""Deformation graph: weights, coverage, neighbours, and the isolated-vertex error."""

import numpy as np
import pytest

from research.amm_nrr.graph import _exact_geodesic_fn, build_graph, normalise
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


# The authors' sampling (graph.build_graph(sampling="authors")) against hand computations.


def _strip() -> Mesh:
    """A flat 4 x 2 strip of unit squares, z = 0: v_k = (k % 4, k // 4, 0), each square split by
    its diagonal from (c, 0) to (c + 1, 1). Flat and convex, so geodesic = Euclidean distance."""
    v = np.array([[k % 4, k // 4, 0.0] for k in range(8)])
    f = np.array([[c, c + 1, c + 5] for c in range(3)] + [[c, c + 5, c + 4] for c in range(3)])
    return Mesh(v, f)


def test_authors_sampling_on_a_strip_equals_the_hand_computation():
    pytest.importorskip("pygeodesic")
    mesh = _strip()
    v = mesh.vertices
    # 10 unit edges and 3 diagonals: mean edge (10 + 3 sqrt 2) / 13; R = 2.1.
    mean = (10 + 3 * np.sqrt(2)) / 13
    g = build_graph(mesh, v, 2.1 / mean, sampling="authors")
    assert g.radius == pytest.approx(2.1)
    # Order by decreasing x, ties by index: 3, 7, 2, 6, 1, 5, 0, 4. v3 = (3, 0) is the first
    # node and covers d < 2.1: v3 (0), v2 (1), v7 (1), v6 (sqrt 2), v1 (2); v5 is sqrt 5 away.
    # 7, 2, 6, 1 are covered; v5 = (1, 1) is the second node: v5 (0), v1, v4, v6 (1),
    # v0, v2 (sqrt 2), v7 (2); v3 is sqrt 5 away. Everything is covered: 2 nodes.
    np.testing.assert_array_equal(g.node_index, [3, 5])
    d = {
        0: {3: 0.0, 2: 1.0, 7: 1.0, 6: np.sqrt(2), 1: 2.0},
        1: {5: 0.0, 1: 1.0, 4: 1.0, 6: 1.0, 0: np.sqrt(2), 2: np.sqrt(2), 7: 2.0},
    }
    raw = {(i, j): (1 - (dij / 2.1) ** 2) ** 3 for j, row in d.items() for i, dij in row.items()}
    total = {i: sum(w for (k, _), w in raw.items() if k == i) for i in range(8)}
    got = {
        (int(i), int(j)): w
        for i, j, w in zip(g.pair_vertex, g.pair_node, g.pair_weight, strict=True)
    }
    assert set(got) == set(raw)  # coverage: which vertices each node influences
    for key, w in raw.items():
        assert got[key] == pytest.approx(w / total[key[0]], rel=1e-9), key
    # The two nodes share v1, v2, v6, v7: one link, stored both ways.
    assert sorted(zip(g.edge_from.tolist(), g.edge_to.tolist(), strict=True)) == [(0, 1), (1, 0)]
    # Today's sampling goes by increasing x from v0 and gives other nodes.
    assert build_graph(mesh, v, 2.1 / mean).node_index[0] == 0


def test_authors_coverage_uses_exact_geodesics_across_a_fold():
    """A unit strip folded by 90 degrees along x = 1: floor v0 (0,0,0), v1 (0,1,0), v2 (1,0,0),
    v3 (1,1,0); wall v4 (1,0,1), v5 (1,1,1). Unfolded, the wall lies at x = 1 + z, so v0 -> v5
    is sqrt 5 (2.236; the straight line crosses the fold at y = 0.5), not the Euclidean sqrt 3
    nor an edge path's 1 + sqrt 2. With R = 2.2 v5 is beyond v0's reach, with R = 2.3 within."""
    pytest.importorskip("pygeodesic")
    v = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1.0]])
    f = np.array([[0, 2, 3], [0, 3, 1], [2, 4, 5], [2, 5, 3]])
    mesh = Mesh(v, f)
    mean = mean_edge_length(mesh)
    expect = [0.0, 1.0, 1.0, np.sqrt(2), 2.0, np.sqrt(5)]
    reach, dist = _exact_geodesic_fn(mesh, v)(0, 10.0)
    np.testing.assert_array_equal(reach, np.arange(6))
    np.testing.assert_allclose(dist, expect, atol=1e-9)
    # Coverage: only d < R. Mirrored x makes v0 (then the largest x) the first node.
    for radius, covered in ((2.2, [0, 1, 2, 3, 4]), (2.3, [0, 1, 2, 3, 4, 5])):
        g = build_graph(mesh, v * [-1, 1, 1], radius / mean, sampling="authors")
        assert g.node_index[0] == 0
        np.testing.assert_array_equal(np.sort(g.pair_vertex[g.pair_node == 0]), covered)


def test_authors_sampling_errors():
    mesh = _strip()
    with pytest.raises(ValueError, match="sampling='spline'.*current.*authors"):
        build_graph(mesh, mesh.vertices, 2.0, sampling="spline")
    with pytest.raises(ValueError, match="sampling='authors'.*coverage='euclidean'"):
        build_graph(mesh, mesh.vertices, 2.0, coverage="euclidean", sampling="authors")
    with pytest.raises(ValueError, match="point cloud"):
        build_graph(Mesh(mesh.vertices), mesh.vertices, 2.0, sampling="authors")


def test_node_count_benchmark_rows():
    pytest.importorskip("pygeodesic")
    from experiments.bench.amm_nrr_graph import count_nodes

    rows = count_nodes("grid:12,grid:6", ["current", "authors"], "")
    assert [(r["radius"], r["sampling"]) for r in rows] == [
        (12.0, "current"),
        (12.0, "authors"),
        (6.0, "current"),
        (6.0, "authors"),
    ]
    assert all(r["nodes"] > 0 and r["official_nodes"] == "" for r in rows)
    assert rows[2]["nodes"] > rows[0]["nodes"]  # a smaller radius, more nodes
    with pytest.raises(ValueError, match="--samplings: unknown"):
        count_nodes("grid:12", ["vtp"], "")
    with pytest.raises(ValueError, match="'grid' is not NAME:RADIUS"):
        count_nodes("grid", ["current"], "")
