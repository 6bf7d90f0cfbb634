"""ops/nearest_grid.py: the grid index (every level, the brute-force fallback, max_distance) and
the candidate cache against scipy's cKDTree (float64 ground truth); the shared checks are in
nearest_checks.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import cKDTree

from ops import nearest, nearest_grid
from research.datasets.meshes import grid_surface
from tests.ops.nearest_checks import (
    check_duplicates_and_ties,
    check_far_cluster,
    check_nearest,
    random_inputs,
    rtol_for,
)

F32, F64 = np.float32, np.float64
# (Q, P, d), dtype: ragged sizes, a single point, d = 1, 2, 3. The grid compiles slowly: few cases.
CASES = [((1, 1, 3), F32), ((130, 515, 2), F32), ((50, 70, 1), F32), ((257, 1100, 3), F64)]


def _grid_search(queries, points):
    return nearest_grid.grid_nearest(nearest_grid.build_grid_index(points), queries)


@pytest.mark.parametrize(
    "shape,dtype", CASES, ids=[f"{'x'.join(map(str, s))}-{t.__name__}" for s, t in CASES]
)
def test_matches_kdtree(shape, dtype):
    q, p = random_inputs(shape, dtype)
    with jax.enable_x64(dtype == np.float64):
        index, sq_dist = _grid_search(jnp.asarray(q), jnp.asarray(p))
        assert sq_dist.dtype == dtype
        check_nearest(q, p, index, sq_dist, rtol=rtol_for(dtype))


def test_duplicates_and_ties():
    check_duplicates_and_ties(_grid_search)


def test_far_cluster_cancellation():
    check_far_cluster(_grid_search, rel=2e-5)


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
    index = nearest_grid.build_grid_index(p)
    assert len(index.levels) >= 2
    found, sq_dist = jax.jit(nearest_grid.grid_nearest)(index, jnp.asarray(q))  # index: a pytree
    check_nearest(q, p, found, sq_dist, rtol=2e-5)
    # A level verifies an answer only within 2 cells of the query: the far queries (>= 9 away)
    # exercise the brute-force fallback.
    assert 2 * float(index.levels[-1].cell) < 9
    with pytest.raises(ValueError, match="cell_size=0.001"):
        nearest_grid.build_grid_index(p, cell_size=1e-3)
    # Degenerate point sets: all equal, and all on a line (through nearest_neighbor(impl="grid")).
    for pts in (
        np.ones((50, 3), np.float32),
        np.outer(np.arange(40), [1, 2, 0]).astype(np.float32),
    ):
        found, sq_dist = nearest.nearest_neighbor(
            jnp.asarray(q[:50]), jnp.asarray(pts), impl="grid"
        )
        check_nearest(q[:50], pts, found, sq_dist, rtol=2e-5)


def test_grid_nearest_max_distance():
    """max_distance (partial overlap): exact within the limit, some point beyond it elsewhere;
    no limit and an infinite one are the exact search."""
    rng = np.random.default_rng(0)
    points = grid_surface(30).vertices.astype(np.float32)
    # Queries near the surface and far above it (a partial-overlap situation).
    near = points[rng.choice(len(points), 300)] + rng.normal(size=(300, 3)) * 0.01
    far = points[rng.choice(len(points), 200)] + np.array([0, 0, 0.5]) + rng.normal(size=(200, 3))
    queries = jnp.asarray(np.concatenate([near, far]), jnp.float32)
    index = nearest_grid.build_grid_index(points)
    exact_d, exact_i = cKDTree(points).query(np.asarray(queries))
    limit = 0.2
    idx, d2 = nearest_grid.grid_nearest(index, queries, max_distance=limit)
    idx, d = np.asarray(idx), np.sqrt(np.asarray(d2))
    within = exact_d <= limit * (1 - 1e-5)
    beyond = exact_d > limit * (1 + 1e-5)
    assert within.any() and beyond.any()
    np.testing.assert_array_equal(idx[within], exact_i[within])  # exact where it matters
    assert np.all(d[beyond] > limit)  # elsewhere: some point beyond the limit
    for kwargs in ({}, {"max_distance": np.inf}):
        idx_all, _ = nearest_grid.grid_nearest(index, queries, **kwargs)
        np.testing.assert_array_equal(np.asarray(idx_all), exact_i)


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
    index = nearest_grid.build_grid_index(p)
    step = jax.jit(nearest_grid.grid_nearest_cached)
    cache = nearest_grid.nearest_cache_init(len(q), 3, 4)
    refreshed = []
    for _ in range(5):
        found, sq_dist, new = step(index, jnp.asarray(q), cache)
        check_nearest(q, p, found, sq_dist, rtol=2e-5)
        moved = np.asarray(new.queries) != np.asarray(cache.queries)
        refreshed.append(int(np.sum(np.any(moved, 1))))
        cache = new
        q = q + (0.002 * rng.standard_normal(q.shape)).astype(np.float32)
    assert refreshed[0] == len(q) and 0 < max(refreshed[1:]) < len(q) // 2
    # max_distance: exact within the limit, some point beyond it elsewhere (as grid_nearest).
    limit = 0.5
    found, sq_dist, _ = nearest_grid.grid_nearest_cached(
        index, jnp.asarray(q), cache, max_distance=limit
    )
    exact_d, exact_i = cKDTree(p).query(q)
    within, beyond = exact_d < limit * (1 - 1e-5), exact_d > limit * (1 + 1e-5)
    assert within.any() and beyond.any()
    np.testing.assert_array_equal(np.asarray(found)[within], exact_i[within])
    assert np.all(np.sqrt(np.asarray(sq_dist))[beyond] > limit)
    for pts, k in ((p[:3], 8), (p[:50], 1)):
        small = nearest_grid.build_grid_index(pts)
        cache = nearest_grid.nearest_cache_init(len(q), 3, k)
        for _ in range(2):
            found, sq_dist, cache = nearest_grid.grid_nearest_cached(small, jnp.asarray(q), cache)
            check_nearest(q, pts, found, sq_dist, rtol=2e-5)
    with pytest.raises(ValueError, match="cache for queries"):
        nearest_grid.grid_nearest_cached(index, jnp.asarray(q[:10]), cache)
    with pytest.raises(ValueError, match="k=0"):
        nearest_grid.nearest_cache_init(10, 3, 0)


def test_empty_queries():
    rng = np.random.default_rng(4)
    q = jnp.asarray(rng.standard_normal((40, 3)), jnp.float32)
    p = jnp.asarray(rng.standard_normal((90, 3)), jnp.float32)
    index, sq_dist = nearest.nearest_neighbor(q[:0], p, impl="grid")
    assert index.shape == sq_dist.shape == (0,)
    index, sq_dist = nearest_grid.grid_nearest(nearest_grid.build_grid_index(p), q[:0])
    assert index.shape == sq_dist.shape == (0,)


def test_errors():
    q = jnp.zeros((5, 3), jnp.float32)
    p = jnp.zeros((7, 3), jnp.float32)
    with pytest.raises(ValueError, match="d <= 3"):
        nearest_grid.build_grid_index(np.zeros((7, 4), np.float32))
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda a, b: nearest.nearest_neighbor(a, b, impl="grid"))(q, p)
    with pytest.raises(ValueError, match="cell_size=-1"):
        nearest_grid.build_grid_index(np.zeros((7, 3), np.float32), cell_size=-1.0)
    with pytest.raises(ValueError, match=r"\(5, 2\).*\(7, 3\)"):
        nearest_grid.grid_nearest(nearest_grid.build_grid_index(p), q[:, :2])
