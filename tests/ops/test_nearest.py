"""ops/nearest.py: the brute-force paths (XLA, Pallas in interpret mode) and k_nearest against the
jnp reference and scipy's cKDTree (float64 ground truth). The grid index is tested in
test_nearest_grid.py; the shared checks are in nearest_checks.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import cKDTree

from ops import nearest
from tests.ops.nearest_checks import (
    check_duplicates_and_ties,
    check_far_cluster,
    check_nearest,
    random_inputs,
    rtol_for,
)

IMPLS = ["xla", "pallas"]
F32, F64 = np.float32, np.float64
# (impl, (Q, P, d), dtype, also run with small tiles): ragged sizes that are not multiples of the
# tiles, single points, d = 1, 2, 3, 16. Pallas (interpret) compiles slowly: fewer cases.
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
]
SMALL_TILES = {"xla": nearest.NearestTiles(48, 40), "pallas": nearest.NearestTiles(32, 64)}


@pytest.mark.parametrize(
    "impl,shape,dtype,small_tiles",
    CASES,
    ids=[f"{c[0]}-{'x'.join(map(str, c[1]))}-{c[2].__name__}" for c in CASES],
)
def test_matches_kdtree_and_reference(impl, shape, dtype, small_tiles):
    q, p = random_inputs(shape, dtype)
    with jax.enable_x64(dtype == np.float64):
        q_j, p_j = jnp.asarray(q), jnp.asarray(p)
        index, sq_dist = nearest.nearest_neighbor(q_j, p_j, impl=impl)
        assert sq_dist.dtype == dtype
        check_nearest(q, p, index, sq_dist, rtol=rtol_for(dtype))
        ref_index, ref_sq = nearest.nearest_neighbor_reference(q_j, p_j)
        check_nearest(q, p, ref_index, ref_sq, rtol=rtol_for(dtype))
        if small_tiles:  # several ragged tiles in both directions
            tiles = SMALL_TILES[impl]
            index, sq_dist = nearest.nearest_neighbor(q_j, p_j, impl=impl, tiles=tiles)
            check_nearest(q, p, index, sq_dist, rtol=rtol_for(dtype))


@pytest.mark.parametrize("impl", IMPLS)
def test_duplicates_and_ties(impl):
    check_duplicates_and_ties(lambda q, p: nearest.nearest_neighbor(q, p, impl=impl))


@pytest.mark.parametrize("impl", IMPLS)
def test_far_cluster_cancellation(impl):
    rel = 1e-4 if impl == "xla" else 2e-5  # the XLA path scores by matmul (centred)
    check_far_cluster(lambda q, p: nearest.nearest_neighbor(q, p, impl=impl), rel)


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
        for tiles in (None, nearest.NearestTiles(16, 24)) if small_tiles else (None,):
            index, sq_dist = nearest.k_nearest(jnp.asarray(q), jnp.asarray(p), k, tiles=tiles)
            assert index.shape == sq_dist.shape == (num_queries, k)
            ref_index, ref_sq = nearest.k_nearest_reference(jnp.asarray(q), jnp.asarray(p), k)
            rtol = rtol_for(dtype)
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
    index, sq_dist = jax.jit(lambda a, b: nearest.nearest_neighbor(a, b, impl="xla"))(q, p)
    check_nearest(q, p, index, sq_dist, rtol=2e-5)
    for impl in IMPLS:
        index, sq_dist = nearest.nearest_neighbor(q[:0], p, impl=impl)
        assert index.shape == sq_dist.shape == (0,)


def test_errors_name_the_shapes():
    q = jnp.zeros((5, 3), jnp.float32)
    p = jnp.zeros((7, 3), jnp.float32)
    with pytest.raises(ValueError, match=r"\(5,\).*\(7, 3\)"):
        nearest.nearest_neighbor(q[:, 0], p)
    with pytest.raises(ValueError, match=r"\(5, 3\).*\(7, 2\)"):
        nearest.nearest_neighbor(q, p[:, :2])
    with pytest.raises(ValueError, match=r"\(0, 3\)"):
        nearest.nearest_neighbor(q, p[:0])
    with pytest.raises(ValueError, match="float32"):
        nearest.nearest_neighbor(q.astype(jnp.int32), p.astype(jnp.int32))
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match="float64"):
            nearest.nearest_neighbor(q, p.astype(jnp.float64))
    with pytest.raises(ValueError, match="impl"):
        nearest.nearest_neighbor(q, p, impl="cuda")
    with pytest.raises(ValueError, match=r"k=8.*\(7, 3\)"):
        nearest.k_nearest(q, p, 8)
    with pytest.raises(ValueError, match="NearestTiles"):
        nearest.NearestTiles(0, 64)
    with pytest.raises(ValueError, match="powers of two"):
        nearest.nearest_neighbor(q, p, impl="pallas", tiles=nearest.NearestTiles(48, 64))
