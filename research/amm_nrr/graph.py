"""The deformation graph of the registration, built on the host with numpy / scipy.

Everything here is in the normalised frame (`normalise`): both meshes centred on, and divided
by the diagonal of, their joint bounding box, as the official code does.

Coverage distance. The official code measures node coverage with exact local geodesics (VTP). We
use shortest paths (Dijkstra, `scipy.sparse.csgraph`) along mesh edges plus one diagonal across
each pair of adjacent triangles (see `_edge_graph`), which approximates the geodesic distance to a
few percent; point clouds (no faces) use Euclidean distance (`scipy.spatial.cKDTree`).
`build_graph(sampling="authors")` follows the official code instead (`_authors_sampling`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from research.datasets.meshes import Mesh, mean_edge_length


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """x_normalised = (x - centre) / scale, scale = joint bounding-box diagonal."""

    centre: np.ndarray  # [3]
    scale: float

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.centre) / self.scale

    def undo(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64) * self.scale + self.centre


def normalise(source: np.ndarray, target: np.ndarray) -> Normalisation:
    """The joint bounding box of source [n, 3] and target [m, 3]: centre and diagonal."""
    both = np.concatenate([np.asarray(source, np.float64), np.asarray(target, np.float64)])
    lo, hi = both.min(0), both.max(0)
    scale = float(np.linalg.norm(hi - lo))
    if not scale > 0:
        raise ValueError("normalise: source and target together span a single point")
    return Normalisation((lo + hi) / 2, scale)


@dataclasses.dataclass(frozen=True)
class DeformationGraph:
    """Nodes, vertex-node weights and node edges (numpy, normalised frame).

    node_index: [r] int64 source vertices that are nodes, in sampling order.
    nodes: [r, 3] their positions p_j.
    pair_vertex, pair_node: [nnz] int64 (vertex i, node j) pairs with w_ij > 0, sorted by vertex.
    pair_weight: [nnz] w_ij = (1 - (d_ij / R)^2)^3, normalised to sum 1 per vertex.
    edge_from, edge_to: [e] int64 directed node edges (i -> j), both directions stored.
    edge_scale: [e] 1 / ||p_i - p_j||, normalised to mean 1 (the regulariser's row scaling).
    radius: R in normalised units; mean_edge: l, the source's mean edge length (normalised).
    """

    node_index: np.ndarray
    nodes: np.ndarray
    pair_vertex: np.ndarray
    pair_node: np.ndarray
    pair_weight: np.ndarray
    edge_from: np.ndarray
    edge_to: np.ndarray
    edge_scale: np.ndarray
    radius: float
    mean_edge: float

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.shape[0])


def _edge_graph(mesh: Mesh, vertices: np.ndarray) -> sp.csr_matrix:
    """[n, n] symmetric graph for the geodesic approximation: the mesh edges plus, for each interior
    edge, the "diagonal" between the two opposite vertices of its triangles, all with Euclidean
    lengths. The diagonals let shortest paths cut across triangle pairs, which brings graph
    distances much closer to geodesics than edges alone (d1 at radius 8: 285 nodes with edges only,
    210 with diagonals, 199 with the official exact geodesics; d2 at radius 5: 290, 246, 266)."""
    n = vertices.shape[0]
    f = np.asarray(mesh.faces, np.int64)
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    opposite = np.concatenate([f[:, 2], f[:, 0], f[:, 1]])
    key = e[:, 0] * n + e[:, 1]
    order = np.argsort(key, kind="stable")
    twin = np.flatnonzero(key[order][1:] == key[order][:-1])  # edges shared by two triangles
    diag = np.stack([opposite[order][twin], opposite[order][twin + 1]], 1)
    pairs = np.concatenate([mesh.edges(), np.sort(diag, axis=1)])
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)
    length = np.linalg.norm(vertices[pairs[:, 0]] - vertices[pairs[:, 1]], axis=1)
    g = sp.coo_matrix((length, (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return (g + g.T).tocsr()


SAMPLINGS = ("current", "authors")


def _exact_geodesic_fn(mesh: Mesh, vertices: np.ndarray):
    """A function (i, limit) -> (reach [k] vertex indices, d [k] their exact geodesic distances
    from vertex i along the surface, all < limit). Exact: MMP (Kirsanov's `geodesic` library, the
    one the official code ships), via the package `pygeodesic` (requirements.txt).

    Only vertices within Euclidean distance `limit` of i are asked for (the geodesic distance is
    never below the Euclidean one). pygeodesic returns an uninitialised source index for a vertex
    the propagation did not reach (its distance is inf), which raises an OverflowError when the
    garbage does not fit an int32; then the asked vertices are split in halves and asked again,
    and a single vertex that still raises is one the propagation did not reach (inf)."""
    try:
        from pygeodesic import geodesic
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "build_graph(sampling='authors') needs exact geodesics from the package pygeodesic "
            "(pip install pygeodesic==0.1.11); sampling='current' needs no extra package"
        ) from e
    algo = geodesic.PyGeodesicAlgorithmExact(
        np.ascontiguousarray(vertices, np.float64),
        np.ascontiguousarray(mesh.faces, np.int32),
    )
    tree = cKDTree(vertices)

    def ask(source: np.ndarray, targets: np.ndarray, limit: float) -> np.ndarray:
        try:
            d, _ = algo.geodesicDistances(source, targets, max_distance=limit)
            return np.asarray(d, np.float64)
        except OverflowError:
            if targets.size == 1:
                return np.full(1, np.inf)
            half = targets.size // 2
            return np.concatenate(
                [ask(source, targets[:half], limit), ask(source, targets[half:], limit)]
            )

    def distances(i: int, limit: float) -> tuple[np.ndarray, np.ndarray]:
        near = np.sort(np.asarray(tree.query_ball_point(vertices[i], limit), np.int64))
        d = ask(np.array([i], np.int32), near.astype(np.int32), limit)
        keep = d < limit
        return near[keep], d[keep]

    return distances


def _authors_sampling(
    mesh: Mesh, vertices: np.ndarray, radius: float
) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    """The official node sampling (AMM_NRR `src/tools/nodeSampler.cpp`,
    `nodeSampler::sampleAndconstuct`, called with `X_AXIS` from `NonRigidreg.cpp`): vertices in
    decreasing x (`vl[axis] > vr[axis]`; std::sort is not stable, we break ties by index); a vertex
    that no earlier node covers becomes a node and covers every vertex whose exact local geodesic
    distance (`GeodesicAlgorithmExact` propagated up to R) is < R. Returns the nodes (vertex
    indices, in order) and, per node, the covered vertices and their distances."""
    n = vertices.shape[0]
    geodesics = _exact_geodesic_fn(mesh, vertices)
    order = np.lexsort((np.arange(n), -vertices[:, 0]))
    covered = np.zeros(n, bool)
    nodes, rows_v, rows_d = [], [], []
    for i in order:
        if covered[i]:
            continue
        reach, dist = geodesics(int(i), radius)
        nodes.append(int(i))
        rows_v.append(reach)
        rows_d.append(dist)
        covered[reach] = True
    return nodes, rows_v, rows_d


def _check_isolated(mesh: Mesh) -> None:
    """The official code's known failure: a vertex in no face can never be covered by a node
    geodesically, so it fails with an unhelpful message. Report the vertices instead."""
    used = np.zeros(mesh.vertices.shape[0], bool)
    used[np.asarray(mesh.faces).ravel()] = True
    if not used.all():
        bad = np.flatnonzero(~used)
        raise ValueError(
            f"deformation graph: the source mesh has {bad.size} isolated vertices (in no face), "
            f"e.g. indices {bad[:10].tolist()}; geodesic coverage cannot reach them. Remove them "
            "from the source mesh (or register it as a point cloud, with Euclidean coverage)."
        )


# The node radius when none is given (`radius_factor` None): AUTO_RADIUS x the joint bounding-box
# diagonal (1 in the normalised frame), but at least AUTO_MIN_EDGES mean edge lengths (the
# authors' default). A count of mean edge lengths alone gives a graph whose node count grows with
# the mesh's resolution (4x the nodes for a mesh subdivided once). On the generated pairs of d1's
# source (mean edge 0.004 of the diagonal) 5 mean edge lengths (0.02) beat 7.5 (0.03) and 12 on
# every smooth warp (research/amm_nrr/README.md), so the default is the authors' radius on
# meshes up to d1's resolution and the same spacing relative to the size on finer ones.
AUTO_RADIUS = 0.02
AUTO_MIN_EDGES = 5.0


def build_graph(
    mesh: Mesh,
    vertices: np.ndarray,
    radius_factor: float | None,
    *,
    coverage: str = "auto",
    sampling: str = "current",
) -> DeformationGraph:
    """Samples the deformation graph of `mesh` with normalised `vertices` [n, 3].

    R = radius_factor x mean edge length (for a point cloud: mean distance to the nearest other
    point); radius_factor None: R = max(AUTO_RADIUS, AUTO_MIN_EDGES x mean edge length) in
    normalised units. Greedy sampling over vertices sorted by x: a vertex not yet within R of a node
    becomes a node. coverage: "geodesic" (Dijkstra along edges; meshes only), "euclidean", or
    "auto" (geodesic for meshes, Euclidean for point clouds).

    sampling: "current" (the above: increasing x, coverage by `coverage`) or "authors" (the
    official code's, `_authors_sampling`: decreasing x, exact geodesics; meshes only, `coverage`
    must be "auto" or "geodesic"). Weights, their normalisation and the node links are the same
    for both (and the official code's): w = (1 - (d/R)^2)^3 for d < R, normalised per vertex,
    two nodes linked when they cover a common vertex.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"build_graph: sampling={sampling!r}, expected one of {SAMPLINGS}")
    v = np.asarray(vertices, np.float64)
    n = v.shape[0]
    if coverage == "auto":
        coverage = "euclidean" if mesh.is_point_cloud else "geodesic"
    if coverage not in ("geodesic", "euclidean"):
        raise ValueError(f"build_graph: coverage={coverage!r}, expected geodesic or euclidean")
    if sampling == "authors" and coverage != "geodesic":
        raise ValueError(
            "build_graph: sampling='authors' covers by exact geodesics and needs a mesh with "
            f"faces and coverage geodesic or auto (got coverage={coverage!r}"
            + (", and the source is a point cloud)" if mesh.is_point_cloud else ")")
        )
    if radius_factor is not None and not radius_factor > 0:
        raise ValueError(f"build_graph: radius factor {radius_factor} must be > 0")
    if mesh.is_point_cloud:
        if coverage == "geodesic":
            raise ValueError("build_graph: geodesic coverage needs faces; the source has none")
        d, _ = cKDTree(v).query(v, k=2)
        mean_edge = float(d[:, 1].mean())
    else:
        mean_edge = mean_edge_length(mesh, v)
    if radius_factor is None:
        radius_factor = max(AUTO_RADIUS / mean_edge, AUTO_MIN_EDGES)
    radius = radius_factor * mean_edge

    order = np.lexsort((np.arange(n), v[:, 0]))  # by x, ties by index
    covered = np.zeros(n, bool)
    nodes, rows_v, rows_d = [], [], []
    if sampling == "authors":
        _check_isolated(mesh)
        nodes, rows_v, rows_d = _authors_sampling(mesh, v, radius)
    elif coverage == "geodesic":
        _check_isolated(mesh)
        graph = _edge_graph(mesh, v)
        for i in order:
            if covered[i]:
                continue
            dist = csgraph.dijkstra(graph, indices=int(i), limit=radius)
            reach = np.flatnonzero(dist < radius)
            nodes.append(i)
            rows_v.append(reach)
            rows_d.append(dist[reach])
            covered[reach] = True
    else:
        tree = cKDTree(v)
        for i in order:
            if covered[i]:
                continue
            reach = np.asarray(tree.query_ball_point(v[i], radius), np.int64)
            nodes.append(i)
            rows_v.append(reach)
            rows_d.append(np.linalg.norm(v[reach] - v[i], axis=1))
            covered[reach] = True
    node_index = np.asarray(nodes, np.int64)
    r = node_index.size
    pv = np.concatenate(rows_v)
    pn = np.repeat(np.arange(r), [len(x) for x in rows_v])
    pd = np.concatenate(rows_d)
    w = (1.0 - (pd / radius) ** 2) ** 3
    keep = w > 0
    pv, pn, w = pv[keep], pn[keep], w[keep]
    total = np.bincount(pv, weights=w, minlength=n)
    if np.any(total <= 0):  # only reachable through rounding at d == R
        bad = np.flatnonzero(total <= 0)
        raise ValueError(
            f"deformation graph: {bad.size} vertices are covered by no node with radius "
            f"{radius_factor:.3g} x mean edge length, e.g. {bad[:10].tolist()}; increase the "
            "radius"
        )
    srt = np.lexsort((pn, pv))
    pv, pn, w = pv[srt], pn[srt], w[srt] / total[pv[srt]]

    # Node neighbours: nodes that cover a common vertex.
    cover = sp.csr_matrix((np.ones_like(w), (pv, pn)), shape=(n, r))
    share = (cover.T @ cover).tocoo()
    off = share.row != share.col
    ef, et = share.row[off].astype(np.int64), share.col[off].astype(np.int64)
    p = v[node_index]
    inv_len = 1.0 / np.linalg.norm(p[ef] - p[et], axis=1)
    edge_scale = inv_len / inv_len.mean() if inv_len.size else inv_len
    return DeformationGraph(
        node_index=node_index,
        nodes=p,
        pair_vertex=pv,
        pair_node=pn,
        pair_weight=w,
        edge_from=ef,
        edge_to=et,
        edge_scale=edge_scale,
        radius=float(radius),
        mean_edge=float(mean_edge),
    )
