"""Additions to shared ops made for this paper: grid_nearest(max_distance=...) (here) and
anderson_mm(residual_fn=...) (test_solver.py); grid_nearest_cached and anderson_mm(stop_on=...,
aux=...) are tested in tests/ops/test_nearest.py and tests/ops/test_anderson.py."""

import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from ops.nearest import build_grid_index, grid_nearest
from research.datasets.meshes import grid_surface


def test_grid_nearest_max_distance():
    rng = np.random.default_rng(0)
    points = grid_surface(30).vertices.astype(np.float32)
    # Queries near the surface and far above it (a partial-overlap situation).
    near = points[rng.choice(len(points), 300)] + rng.normal(size=(300, 3)) * 0.01
    far = points[rng.choice(len(points), 200)] + np.array([0, 0, 0.5]) + rng.normal(size=(200, 3))
    queries = jnp.asarray(np.concatenate([near, far]), jnp.float32)
    index = build_grid_index(points)
    exact_d, exact_i = cKDTree(points).query(np.asarray(queries))
    limit = 0.2
    idx, d2 = grid_nearest(index, queries, max_distance=limit)
    idx, d = np.asarray(idx), np.sqrt(np.asarray(d2))
    within = exact_d <= limit * (1 - 1e-5)
    beyond = exact_d > limit * (1 + 1e-5)
    assert within.any() and beyond.any()
    np.testing.assert_array_equal(idx[within], exact_i[within])  # exact where it matters
    assert np.all(d[beyond] > limit)  # elsewhere: some point beyond the limit
    # No limit (and an infinite one) is the exact search.
    for kwargs in ({}, {"max_distance": np.inf}):
        idx_all, _ = grid_nearest(index, queries, **kwargs)
        np.testing.assert_array_equal(np.asarray(idx_all), exact_i)
