"""Huber's contamination sampler and the classical estimators."""

import numpy as np
import pytest

from research.mom_gan import estimators
from research.mom_gan.contamination import (
    Contamination,
    clean_moments,
    huber_sample,
    sample_clean,
)


@pytest.mark.parametrize("outliers", ["gaussian", "cauchy", "uniform"])
def test_outlier_fraction_and_where_outliers_lie(outliers):
    n, eps = 20_000, 0.2
    x, is_outlier = huber_sample(0, n, 3, eps, Contamination(outliers=outliers))
    assert x.shape == (n, 3) and x.dtype == np.float32
    # Binomial(n, eps): 4 standard deviations
    assert abs(is_outlier.mean() - eps) < 4 * np.sqrt(eps * (1 - eps) / n)
    assert abs(np.median(x[is_outlier]) - 5.0) < 0.1
    assert abs(np.mean(x[~is_outlier])) < 0.05
    if outliers == "uniform":
        assert x[is_outlier].min() >= 4.0 and x[is_outlier].max() <= 6.0
    again, _ = huber_sample(0, n, 3, eps, Contamination(outliers=outliers))
    np.testing.assert_array_equal(x, again)  # a pure function of the seed


def test_clean_moments_match_the_samplers():
    rng = np.random.default_rng(0)
    for clean, dim in (("gaussian", 4), ("mixture2d", 2)):
        mu, sigma = clean_moments(clean, dim)
        x = sample_clean(rng, 200_000, dim, clean)
        np.testing.assert_allclose(x.mean(0), mu, atol=0.02)
        np.testing.assert_allclose(np.cov(x, rowvar=False), sigma, atol=0.03)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="eps = 0.5"):
        huber_sample(0, 10, 2, 0.5, Contamination())
    with pytest.raises(ValueError, match="mixture2d clean distribution is 2-dimensional"):
        huber_sample(0, 10, 3, 0.1, Contamination(clean="mixture2d"))
    with pytest.raises(ValueError, match="contamination.outliers = 'bogus'"):
        Contamination(outliers="bogus")


def test_classical_estimators_recover_a_clean_gaussian_mean():
    x = np.random.default_rng(1).standard_normal((20_000, 5)) + 3.0
    for name, estimator in estimators.CLASSICAL.items():
        np.testing.assert_allclose(estimator(x), 3.0, atol=0.04, err_msg=name)
    np.testing.assert_allclose(estimators.sample_covariance(x), np.eye(5), atol=0.05)


def test_geometric_median_minimises_the_sum_of_distances():
    x = np.random.default_rng(2).standard_normal((300, 3)) ** 3
    m = estimators.geometric_median(x)
    cost = lambda c: np.linalg.norm(x - c, axis=1).sum()
    for delta in np.eye(3) * 1e-2:
        assert cost(m) <= cost(m + delta) and cost(m) <= cost(m - delta)
    # Robust: 20% outliers far away move it far less than the mean.
    y, _ = huber_sample(3, 5000, 10, 0.2, Contamination())
    assert np.linalg.norm(estimators.geometric_median(y)) < 0.3 * np.linalg.norm(y.mean(0))
