"""The semantic scale (numpy float64 and the jitted pool version), the marginal effect, the
imbalance measure and the feature pool."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.semantic_scale import pool as pool_lib
from research.semantic_scale import scale


def test_isotropic_gaussian_scale_matches_its_closed_form():
    # Z ~ N(0, sigma^2 I_p): (1/m) Zc^T Zc -> sigma^2 I, so S -> 0.5 p log2(1 + d sigma^2).
    rng = np.random.default_rng(0)
    p, m = 6, 40_000
    for sigma, d in ((0.5, 1.0), (2.0, 1.0), (1.0, 3.0)):
        z = sigma * rng.normal(size=(m, p))
        expected = 0.5 * p * np.log2(1 + d * sigma**2)
        got = scale.semantic_scale(z, d=d, normalize=False)
        assert got == pytest.approx(expected, rel=0.01), (sigma, d)


def test_scale_is_monotone_in_the_spread_and_invariant_to_order_and_shift():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(200, 16))
    s = [scale.semantic_scale(k * z, normalize=False) for k in (0.1, 0.3, 1.0, 3.0)]
    assert all(a < b for a, b in zip(s, s[1:], strict=False)), s
    base = scale.semantic_scale(z, normalize=False)
    assert scale.semantic_scale(z[rng.permutation(200)], normalize=False) == pytest.approx(base)
    assert scale.semantic_scale(z + 5.0, normalize=False) == pytest.approx(base)
    # The wide case (p > m) factors the m x m Gram matrix: the same determinant.
    wide = rng.normal(size=(10, 50))
    direct = 0.5 * np.linalg.slogdet(np.eye(50) + 0.1 * (wide - wide.mean(0)).T @ (
        wide - wide.mean(0)))[1] / np.log(2)  # fmt: skip
    assert scale.semantic_scale(wide, normalize=False) == pytest.approx(direct)


def test_large_dimensions_do_not_overflow_and_one_sample_has_zero_scale():
    rng = np.random.default_rng(2)
    s = scale.semantic_scale(100 * rng.normal(size=(1000, 512)), normalize=False)
    assert np.isfinite(s) and s > 1000  # det itself overflows float64 here
    assert scale.semantic_scale(rng.normal(size=(1, 8))) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        scale.semantic_scale(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="shape"):
        scale.semantic_scale(np.zeros(5))


def test_marginal_effect_grows_and_flattens_and_imbalance_measures():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(600, 8))
    labels = np.repeat([0, 1], 300)
    z[labels == 1] *= 0.3
    curve = scale.marginal_effect(z, labels, 2, (2, 8, 32, 128, 512), draws=3)
    assert np.isnan(curve[:, -1]).all()  # 512 > 300 samples per class
    gains = np.diff(curve[0, :4])
    assert (gains > 0).all() and gains[-1] < gains[0]  # grows with diminishing gains
    scales = scale.class_scales(z, labels, 3, normalize=False)
    assert np.isnan(scales[2]) and scales[0] > scales[1]
    imb = scale.scale_imbalance(scales)
    assert imb["scale_ratio"] == pytest.approx(scales[0] / scales[1])
    assert imb["scale_cv"] > 0
    # A one-sample class (S = 0) is left out of the ratio rather than making it infinite.
    with_single = scale.scale_imbalance(np.array([2.0, 1.0, 0.0]))
    assert with_single == {"scale_ratio": 2.0, "scale_cv": pytest.approx(1 / 3)}


def test_pool_scales_in_jax_equal_the_float64_analysis():
    rng = np.random.default_rng(4)
    c, q, p = 3, 32, 8
    feats = rng.normal(size=(c, q, p)).astype(np.float32)
    feats[1] *= 0.2
    counts = np.array([32, 20, 1])
    got = jax.jit(scale.pool_scales)(jnp.asarray(feats), jnp.asarray(counts))
    for k in range(c):
        want = scale.semantic_scale(feats[k, : counts[k]])
        np.testing.assert_allclose(float(got[k]), want, rtol=1e-4, atol=1e-5)
    assert float(got[2]) == pytest.approx(0.0, abs=1e-6)


def test_pool_keeps_the_most_recent_features_of_each_class():
    pool = pool_lib.init_pool(num_classes=3, size=4, dim=2)
    push = jax.jit(pool_lib.push)
    # Class 0 gets 6 features in one batch (only its last 4 fit), class 2 gets one.
    labels = jnp.array([0, 0, 2, 0, 0, 0, 0])
    feats = jnp.arange(14, dtype=jnp.float32).reshape(7, 2)
    pool = push(pool, feats, labels)
    assert pool.count.tolist() == [4, 0, 1] and pool.next.tolist() == [2, 0, 1]
    stored0 = {tuple(r) for r in np.asarray(pool.features[0]).tolist()}
    assert stored0 == {tuple(r) for r in np.asarray(feats[3:]).tolist()}
    np.testing.assert_array_equal(pool.features[2, 0], feats[2])
    # The next push of class 0 overwrites its oldest slot (slot 2, then 3).
    pool = push(pool, jnp.full((2, 2), -1.0), jnp.array([0, 1]))
    assert pool.count.tolist() == [4, 1, 1] and pool.next.tolist() == [3, 1, 1]
    rows = np.asarray(pool.features[0])
    assert (rows == -1).all(axis=1).sum() == 1
    assert not any(tuple(r) == tuple(np.asarray(feats[3])) for r in rows.tolist())


@pytest.mark.parametrize("n", [1, 5, 64])
def test_in_graph_cholesky_matches_numpy(n):
    rng = np.random.default_rng(n)
    b = rng.normal(size=(n, n))
    a = (b @ b.T / n + np.eye(n)).astype(np.float32)
    got = jax.jit(scale.cholesky)(jnp.asarray(a))
    np.testing.assert_allclose(got, np.linalg.cholesky(a.astype(np.float64)), rtol=1e-4, atol=1e-5)
