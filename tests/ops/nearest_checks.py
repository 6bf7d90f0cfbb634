"""Checks shared by tests/ops/test_nearest.py (brute force) and test_nearest_grid.py (grid index):
answers against scipy's cKDTree in float64 (the ground truth), and two hard inputs.

Indices are compared only where the nearest point is clearly nearer than the second nearest;
distances are compared everywhere (ties may pick different indices at the same distance).
A `search` is any `(queries [Q, d], points [P, d]) -> (index int32 [Q], sq_dist [Q])`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from ops import nearest

Search = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def rtol_for(dtype) -> float:
    return 2e-5 if dtype == np.float32 else 1e-12


def random_inputs(shape: tuple[int, int, int], dtype) -> tuple[np.ndarray, np.ndarray]:
    """Standard normal queries [Q, d] and points [P, d] for shape (Q, P, d), seeded by shape."""
    num_queries, num_points, d = shape
    rng = np.random.default_rng(num_queries * 7 + num_points)
    q = rng.standard_normal((num_queries, d)).astype(dtype)
    p = rng.standard_normal((num_points, d)).astype(dtype)
    return q, p


def check_nearest(queries, points, index, sq_dist, *, rtol: float) -> None:
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


def check_duplicates_and_ties(search: Search) -> None:
    """Integer lattice, every point three times; queries on lattice points and half-way between:
    distances are small integers, so they must equal the reference's exactly."""
    base = np.stack(np.meshgrid(*[np.arange(6.0)] * 3), -1).reshape(-1, 3)
    p = np.random.default_rng(0).permutation(np.concatenate([base] * 3)).astype(np.float32)
    q = np.concatenate([base[::7], base[::5] + 0.5]).astype(np.float32)
    index, sq_dist = search(jnp.asarray(q), jnp.asarray(p))
    _, ref_sq = nearest.nearest_neighbor_reference(jnp.asarray(q), jnp.asarray(p))
    np.testing.assert_array_equal(np.asarray(sq_dist), np.asarray(ref_sq))
    np.testing.assert_array_equal(np.sum((q - p[np.asarray(index)]) ** 2, 1), np.asarray(sq_dist))


def check_far_cluster(search: Search, rel: float) -> None:
    """A tight cluster far from the origin: ||p||^2 ~ 3e6 while neighbours are ~1e-4^2 apart, so
    float32 ||q||^2 - 2 q.p + ||p||^2 without centring would pick wrong neighbours. `rel`: the
    tolerance of the reported distance against the reported point's, relative to the neighbour
    distances (~1e-5 squared), not to the coordinates."""
    rng = np.random.default_rng(1)
    offset = np.array([1000.0, -1000.0, 1000.0])
    p = (offset + 0.01 * rng.standard_normal((2000, 3))).astype(np.float32)
    q = (offset + 0.01 * rng.standard_normal((300, 3))).astype(np.float32)
    naive = np.asarray(
        jnp.argmin(jnp.sum(p * p, 1)[None] - 2 * jnp.asarray(q) @ jnp.asarray(p).T, 1)
    )
    _, truth = cKDTree(p.astype(np.float64)).query(q.astype(np.float64))
    assert np.mean(naive != truth) > 0.1  # the trap is real
    index, sq_dist = search(jnp.asarray(q), jnp.asarray(p))
    np.testing.assert_allclose(
        np.asarray(sq_dist), np.sum((q - p[np.asarray(index)]) ** 2, 1), rtol=rel
    )
    ref_d, ref_i = cKDTree(p.astype(np.float64)).query(q.astype(np.float64), k=2)
    np.testing.assert_allclose(np.asarray(sq_dist), ref_d[:, 0] ** 2, rtol=1e-3)
    clear = ref_d[:, 1] ** 2 > ref_d[:, 0] ** 2 * 1.01
    np.testing.assert_array_equal(np.asarray(index)[clear], ref_i[clear, 0])
