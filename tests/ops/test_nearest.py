"""ops/nearest.py: every impl against the jnp reference and scipy's cKDTree (float64 ground truth).

Indices are compared only where the nearest point is clearly nearer than the second nearest;
distances are compared everywhere (ties may pick different indices at the same distance).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import cKDTree

from ops import nearest as nn

IMPLS = ["xla", "pallas", "grid"]
F32, F64 = np.float32, np.float64
# (impl, (Q, P, d), dtype, also run with small tiles): ragged sizes that are not multiples of the
# tiles, single points, d = 1, 2, 3, 16. Pallas (interpret) and grid compile slowly: fewer cases.
CASES = [
    *[
        ("xla", s, F32, s in ((257, 1100, 3), (130, 515, 2)))
        for s in [
            (1, 1, 3),
            (130, 515, 2),
            (64, 300, 16),
            (257, 1100, 3),
            (50, 70, 1),
        ]
    ],
    ("xla", (37, 101, 3), F64, True),
    ("xla", (64, 300, 16), F64, False),
    ("pallas", (1, 1, 3), F32, False),
    ("pallas", (64, 300, 16), F32, False),
    ("pallas", (257, 1100, 3), F32, True),
    ("pallas", (130, 515, 2), F64, False),
    *[("grid", s, F32, False) for s in [(1, 1, 3), (130, 515, 2), (50, 70, 1)]],
    ("grid", (257, 1100, 3), F64, False),
]
SMALL_TILES = {"xla": nn.NearestTiles(48, 40), "pallas": nn.NearestTiles(32, 64)}


def _rtol(dtype) -> float:
    return 2e-5 if dtype == np.float32 else 1e-12


def _check(queries, points, index, sq_dist, *, rtol):
    """index/sq_dist against the float64 cKDTree answer for the same (rounded) coordinates."""
    q, p = np.asarray(queries, np.float64), np.asarray(points, np.float64)
    index, sq_dist = np.asarray(index), np.asarray(sq_dist, np.float64)
    assert index.shape == (len(q),) and index.dtype == np.int32
    assert np.all((index >= 0) & (index < len(p)))
    k = min(2, len(p))
    ref_d, ref_i = cKDTree(p).query(q, k=k)
    ref_d, ref_i = ref_d.reshape(len(q), k), ref_i.reshape(len(q), k)
    scale = float(np.max(np.sum((q - p.mean(0)) ** 2, 1), initial=1.0))
    atol = rtol * scale
    # The reported distance is the distance to the reported point, and it is the smallest one.
    np.testing.assert_allclose(sq_dist, np.sum((q - p[index]) ** 2, 1), rtol=rtol, atol=atol)
    np.testing.assert_allclose(sq_dist, ref_d[:, 0] ** 2, rtol=rtol, atol=atol)
    clear = (ref_d[:, -1] ** 2 - ref_d[:, 0] ** 2 > 10 * atol) | (k == 1)
    np.testing.assert_array_equal(index[clear], ref_i[clear, 0])


def _run(impl, queries, points, tiles=None):
    if impl == "grid":
        return nn.grid_nearest(nn.build_grid_index(points), jnp.asarray(queries))
    return nn.nearest_neighbor(queries, points, impl=impl, tiles=tiles)


@pytest.mark.parametrize(
    "impl,shape,dtype,small_tiles",
    CASES,
    ids=[f"{c[0]}-{'x'.join(map(str, c[1]))}-{c[2].__name__}" for c in CASES],
)
def test_matches_kdtree_and_reference(impl, shape, dtype, small_tiles):
    num_queries, num_points, d = shape
    rng = np.random.default_rng(num_queries * 7 + num_points)
    q = rng.standard_normal((num_queries, d)).astype(dtype)
    p = rng.standard_normal((num_points, d)).astype(dtype)
    with jax.enable_x64(dtype == np.float64):
        q_j, p_j = jnp.asarray(q), jnp.asarray(p)
        index, sq_dist = _run(impl, q_j, p_j)
        assert sq_dist.dtype == dtype
        _check(q, p, index, sq_dist, rtol=_rtol(dtype))
        ref_index, ref_sq = nn.nearest_neighbor_reference(q_j, p_j)
        _check(q, p, ref_index, ref_sq, rtol=_rtol(dtype))
        if small_tiles:  # several ragged tiles in both directions
            index, sq_dist = _run(impl, q_j, p_j, SMALL_TILES[impl])
            _check(q, p, index, sq_dist, rtol=_rtol(dtype))


@pytest.mark.parametrize("impl", IMPLS)
def test_duplicates_and_ties(impl):
    # Integer lattice, every point three times; queries on lattice points and half-way between.
    base = np.stack(np.meshgrid(*[np.arange(6.0)] * 3), -1).reshape(-1, 3)
    p = np.random.default_rng(0).permutation(np.concatenate([base] * 3)).astype(np.float32)
    q = np.concatenate([base[::7], base[::5] + 0.5]).astype(np.float32)
    index, sq_dist = _run(impl, jnp.asarray(q), jnp.asarray(p))
    _, ref_sq = nn.nearest_neighbor_reference(jnp.asarray(q), jnp.asarray(p))
    np.testing.assert_array_equal(np.asarray(sq_dist), np.asarray(ref_sq))  # exact small integers
    np.testing.assert_array_equal(np.sum((q - p[np.asarray(index)]) ** 2, 1), np.asarray(sq_dist))


@pytest.mark.parametrize("impl", IMPLS)
def test_far_cluster_cancellation(impl):
    # A tight cluster far from the origin: ||p||^2 ~ 3e6 while neighbours are ~1e-4^2 apart, so
    # float32 ||q||^2 - 2 q.p + ||p||^2 without centring would pick wrong neighbours.
    rng = np.random.default_rng(1)
    offset = np.array([1000.0, -1000.0, 1000.0])
    p = (offset + 0.01 * rng.standard_normal((2000, 3))).astype(np.float32)
    q = (offset + 0.01 * rng.standard_normal((300, 3))).astype(np.float32)
    naive = np.asarray(
        jnp.argmin(jnp.sum(p * p, 1)[None] - 2 * jnp.asarray(q) @ jnp.asarray(p).T, 1)
    )
    _, truth = cKDTree(p.astype(np.float64)).query(q.astype(np.float64))
    assert np.mean(naive != truth) > 0.1  # the trap is real
    index, sq_dist = _run(impl, jnp.asarray(q), jnp.asarray(p))
    # Relative to the neighbour distances (~1e-5 squared), not to the coordinates.
    rel = 1e-4 if impl == "xla" else 2e-5
    np.testing.assert_allclose(
        np.asarray(sq_dist), np.sum((q - p[np.asarray(index)]) ** 2, 1), rtol=rel
    )
    ref_d, ref_i = cKDTree(p.astype(np.float64)).query(q.astype(np.float64), k=2)
    np.testing.assert_allclose(np.asarray(sq_dist), ref_d[:, 0] ** 2, rtol=1e-3)
    clear = ref_d[:, 1] ** 2 > ref_d[:, 0] ** 2 * 1.01
    np.testing.assert_array_equal(np.asarray(index)[clear], ref_i[clear, 0])


def test_grid_levels_and_fallback():
    # Points on a sphere (a surface), queries near it, far from it and far outside its bounding
    # box: fine levels, coarse levels and the brute-force fallback all answer some queries.
    rng = np.random.default_rng(2)
    p = rng.standard_normal((3000, 3))
    p = (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)
    dirs = rng.standard_normal((600, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    radii = np.concatenate(
        [1 + 0.01 * rng.standard_normal(200), rng.uniform(0, 3, 300), rng.uniform(10, 100, 100)]
    )
    q = (dirs * radii[:, None]).astype(np.float32)
    index = nn.build_grid_index(p)
    assert len(index.levels) >= 2
    found, sq_dist = jax.jit(nn.grid_nearest)(index, jnp.asarray(q))  # the index is a pytree
    _check(q, p, found, sq_dist, rtol=2e-5)
    # A level verifies an answer only within 2 cells of the query: the far queries (>= 9 away)
    # exercise the brute-force fallback.
    assert 2 * float(index.levels[-1].cell) < 9
    with pytest.raises(ValueError, match="cell_size=0.001"):
        nn.build_grid_index(p, cell_size=1e-3)
    # Degenerate point sets: all equal, and all on a line.
    for pts in (
        np.ones((50, 3), np.float32),
        np.outer(np.arange(40), [1, 2, 0]).astype(np.float32),
    ):
        found, sq_dist = nn.nearest_neighbor(jnp.asarray(q[:50]), jnp.asarray(pts), impl="grid")
        _check(q[:50], pts, found, sq_dist, rtol=2e-5)


def test_grid_nearest_cached_moving_queries():
    """grid_nearest_cached over a sequence of small moves equals the exact search every call,
    refreshes only the queries whose candidates no longer prove the answer, and honours
    max_distance; tiny point sets (k > P) and k = 1 work."""
    rng = np.random.default_rng(5)
    p = rng.standard_normal((3000, 3))
    p = (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)  # a sphere
    dirs = rng.standard_normal((500, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    radii = np.concatenate([1 + 0.02 * rng.standard_normal(400), rng.uniform(1.5, 30, 100)])
    q = (dirs * radii[:, None]).astype(np.float32)
    index = nn.build_grid_index(p)
    step = jax.jit(nn.grid_nearest_cached)
    cache = nn.nearest_cache_init(len(q), 3, 4)
    refreshed = []
    for _ in range(5):
        found, sq_dist, new = step(index, jnp.asarray(q), cache)
        _check(q, p, found, sq_dist, rtol=2e-5)
        moved = np.asarray(new.queries) != np.asarray(cache.queries)
        refreshed.append(int(np.sum(np.any(moved, 1))))
        cache = new
        q = q + (0.002 * rng.standard_normal(q.shape)).astype(np.float32)
    assert refreshed[0] == len(q) and 0 < max(refreshed[1:]) < len(q) // 2
    # max_distance: exact within the limit, some point beyond it elsewhere (as grid_nearest).
    limit = 0.5
    found, sq_dist, _ = nn.grid_nearest_cached(index, jnp.asarray(q), cache, max_distance=limit)
    exact_d, exact_i = cKDTree(p).query(q)
    within, beyond = exact_d < limit * (1 - 1e-5), exact_d > limit * (1 + 1e-5)
    assert within.any() and beyond.any()
    np.testing.assert_array_equal(np.asarray(found)[within], exact_i[within])
    assert np.all(np.sqrt(np.asarray(sq_dist))[beyond] > limit)
    for pts, k in ((p[:3], 8), (p[:50], 1)):
        small = nn.build_grid_index(pts)
        cache = nn.nearest_cache_init(len(q), 3, k)
        for _ in range(2):
            found, sq_dist, cache = nn.grid_nearest_cached(small, jnp.asarray(q), cache)
            _check(q, pts, found, sq_dist, rtol=2e-5)
    with pytest.raises(ValueError, match="cache for queries"):
        nn.grid_nearest_cached(index, jnp.asarray(q[:10]), cache)
    with pytest.raises(ValueError, match="k=0"):
        nn.nearest_cache_init(10, 3, 0)


@pytest.mark.parametrize(
    "shape,k,dtype,small_tiles",
    [
        ((37, 101, 3), 4, F32, True),
        ((130, 515, 16), 8, F32, False),
        ((20, 9, 2), 9, F64, False),
        ((5, 600, 3), 1, F64, True),
    ],
)
def test_k_nearest(shape, k, dtype, small_tiles):
    num_queries, num_points, d = shape
    rng = np.random.default_rng(3)
    q = rng.standard_normal((num_queries, d)).astype(dtype)
    p = rng.standard_normal((num_points, d)).astype(dtype)
    with jax.enable_x64(dtype == np.float64):
        for tiles in (None, nn.NearestTiles(16, 24)) if small_tiles else (None,):
            index, sq_dist = nn.k_nearest(jnp.asarray(q), jnp.asarray(p), k, tiles=tiles)
            assert index.shape == sq_dist.shape == (num_queries, k)
            ref_index, ref_sq = nn.k_nearest_reference(jnp.asarray(q), jnp.asarray(p), k)
            rtol = _rtol(dtype)
            np.testing.assert_allclose(
                np.asarray(sq_dist), np.asarray(ref_sq), rtol=rtol, atol=rtol
            )
            got = np.sum((q[:, None].astype(np.float64) - p[np.asarray(index)]) ** 2, -1)
            np.testing.assert_allclose(np.asarray(sq_dist), got, rtol=rtol, atol=rtol)
            assert np.all(np.diff(np.asarray(sq_dist), axis=1) >= 0)
            for row in range(num_queries):  # all k distinct points
                assert len(set(np.asarray(index)[row].tolist())) == k
            ref_d, ref_i = cKDTree(p.astype(np.float64)).query(q.astype(np.float64), k=k)
            np.testing.assert_allclose(
                np.asarray(sq_dist), np.reshape(ref_d, (-1, k)) ** 2, rtol=rtol, atol=rtol
            )


def test_under_jit_and_empty():
    rng = np.random.default_rng(4)
    q = jnp.asarray(rng.standard_normal((40, 3)), jnp.float32)
    p = jnp.asarray(rng.standard_normal((90, 3)), jnp.float32)
    index, sq_dist = jax.jit(lambda a, b: nn.nearest_neighbor(a, b, impl="xla"))(q, p)
    _check(q, p, index, sq_dist, rtol=2e-5)
    for impl in IMPLS:
        index, sq_dist = nn.nearest_neighbor(q[:0], p, impl=impl)
        assert index.shape == sq_dist.shape == (0,)


def test_errors_name_the_shapes():
    q = jnp.zeros((5, 3), jnp.float32)
    p = jnp.zeros((7, 3), jnp.float32)
    with pytest.raises(ValueError, match=r"\(5,\).*\(7, 3\)"):
        nn.nearest_neighbor(q[:, 0], p)
    with pytest.raises(ValueError, match=r"\(5, 3\).*\(7, 2\)"):
        nn.nearest_neighbor(q, p[:, :2])
    with pytest.raises(ValueError, match=r"\(0, 3\)"):
        nn.nearest_neighbor(q, p[:0])
    with pytest.raises(ValueError, match="float32"):
        nn.nearest_neighbor(q.astype(jnp.int32), p.astype(jnp.int32))
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match="float64"):
            nn.nearest_neighbor(q, p.astype(jnp.float64))
    with pytest.raises(ValueError, match="impl"):
        nn.nearest_neighbor(q, p, impl="cuda")
    with pytest.raises(ValueError, match=r"k=8.*\(7, 3\)"):
        nn.k_nearest(q, p, 8)
    with pytest.raises(ValueError, match="d <= 3"):
        nn.build_grid_index(np.zeros((7, 4), np.float32))
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda a, b: nn.nearest_neighbor(a, b, impl="grid"))(q, p)
    with pytest.raises(ValueError, match="NearestTiles"):
        nn.NearestTiles(0, 64)
    with pytest.raises(ValueError, match="cell_size=-1"):
        nn.build_grid_index(np.zeros((7, 3), np.float32), cell_size=-1.0)
    with pytest.raises(ValueError, match="powers of two"):
        nn.nearest_neighbor(q, p, impl="pallas", tiles=nn.NearestTiles(48, 64))
