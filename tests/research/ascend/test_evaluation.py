"""Tests for research.ascend.evaluation: Frechet distance, precision / recall, the feature
classifier, the pluggable extractor and image grids."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image
from scipy import linalg

from research.ascend import evaluation as ev


def _toy_extractor():
    """A feature-extractor factory for load_feature_extractor: per-channel mean and std."""

    def features(images):
        x = np.asarray(images)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)

    return features


_NOT_CALLABLE = 3


def _returns_not_callable():
    return "not a function"


def _random_covariance(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# ----------------------------------------------------------------------------- Frechet distance


def test_feature_statistics_are_float64_mean_and_unbiased_covariance():
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    mu, sigma = ev.feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    assert mu.shape == (3,) and sigma.shape == (3, 3)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mu, x64.mean(0), rtol=1e-12)
    centred = x64 - x64.mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        ev.feature_statistics(x[:1])
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        ev.feature_statistics(x[0])


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    # Commuting (diagonal) covariances: Tr sqrt(S1 S2) = sum sqrt(v1 v2), so
    # FD = ||mu1 - mu2||^2 + sum (sqrt(v1) - sqrt(v2))^2.
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = ev.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-10)


def test_frechet_distance_of_full_covariances_matches_an_independent_reference():
    rng = np.random.default_rng(2)
    for d in (2, 5, 16):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _random_covariance(rng, d), _random_covariance(rng, d)
        # sqrtm(S1 S2) by scipy, and Tr sqrt(S1^1/2 S2 S1^1/2) (the same trace, a symmetric
        # matrix, square root by eigendecomposition) as a second, independent route.
        ref_scipy = np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
        r1 = _psd_sqrt(s1)
        ref_eigh = np.trace(s1) + np.trace(s2) - 2 * np.trace(_psd_sqrt(r1 @ s2 @ r1))
        ref_scipy += np.sum((mu1 - mu2) ** 2)
        ref_eigh += np.sum((mu1 - mu2) ** 2)
        got = ev.frechet_distance(mu1, s1, mu2, s2)
        assert got == pytest.approx(ref_scipy, rel=1e-8)
        assert got == pytest.approx(ref_eigh, rel=1e-8)


def test_frechet_distance_of_a_sample_with_itself_is_zero():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    assert abs(ev.frechet_distance_of(x, x)) < 1e-8
    # Fewer samples than dimensions: singular covariances, still ~0 and no warning.
    y = rng.normal(size=(10, 20))
    mu, sigma = ev.feature_statistics(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert abs(ev.frechet_distance(mu, sigma, mu, sigma)) < 1e-4 * np.trace(sigma)


def test_frechet_distance_adds_eps_when_the_square_root_is_not_finite(monkeypatch):
    real_sqrtm = ev.linalg.sqrtm
    calls = []

    def nan_first(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(ev.linalg, "sqrtm", nan_first)
    v1, v2, eps = np.array([1.0, 2.0]), np.array([3.0, 0.5]), 0.1
    mu = np.zeros(2)
    with pytest.warns(RuntimeWarning, match="adding 0.1"):
        got = ev.frechet_distance(mu, np.diag(v1), mu, np.diag(v2), eps=eps)
    # The traces keep the original covariances; only the square root gets the offset.
    want = v1.sum() + v2.sum() - 2 * np.sum(np.sqrt((v1 + eps) * (v2 + eps)))
    assert len(calls) == 2 and got == pytest.approx(want, rel=1e-10)


def test_frechet_distance_rejects_a_large_imaginary_part_and_bad_shapes():
    # sqrtm(diag(-1, 1)) = diag(i, 1): not a covariance.
    with pytest.raises(ValueError, match="imaginary"):
        ev.frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="means"):
        ev.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="covariances"):
        ev.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        ev.frechet_distance(np.zeros(2), np.eye(2), np.array([0.0, np.nan]), np.eye(2))
    with pytest.raises(ValueError, match=r"\[M, d\]"):
        ev.frechet_distance_of(np.zeros((5, 3)), np.zeros((5, 4)))


def test_frechet_distance_of_large_samples_approaches_the_analytic_value():
    rng = np.random.default_rng(4)
    d, n = 4, 20000
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 0.5])
    s1, s2 = _random_covariance(rng, d) + 0.4 * np.eye(d), np.diag([1.0, 2.0, 0.5, 1.5])
    exact = ev.frechet_distance(mu1, s1, mu2, s2)  # ~2.0
    a = rng.multivariate_normal(mu1, s1, size=n)
    b = rng.multivariate_normal(mu2, s2, size=n)
    # The estimate's spread is dominated by the mean term 2 (mu1 - mu2).(e1 - e2), standard
    # deviation 2 sqrt((mu1 - mu2)^T (S1 + S2) (mu1 - mu2) / n) ~ 0.03 here (0.027 measured over
    # 40 seeds); the bias from the covariances is O(d / n) ~ 1e-3. 0.15 is > 5 sigma.
    assert ev.frechet_distance_of(a, b) == pytest.approx(exact, abs=0.15)
    # And a clearly different distribution is clearly farther away.
    c = rng.multivariate_normal(mu2 + 1.0, s2, size=n)
    assert ev.frechet_distance_of(a, c) > exact + 2.0


# ----------------------------------------------------------------------- precision and recall


def _brute_force_precision_recall(real, fake, k):
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def coverage(queries, centres):
        radii = np.sort(dist(centres, centres), axis=1)[:, k]  # [:, 0] is the point itself
        return float(np.mean((dist(queries, centres) <= radii[None, :]).any(axis=1)))

    return coverage(fake, real), coverage(real, fake)


def test_precision_recall_of_identical_and_of_far_apart_sets():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    assert ev.precision_recall(x, x.copy(), k=3) == (1.0, 1.0)
    far = x + 1000.0
    assert ev.precision_recall(x, far, k=3) == (0.0, 0.0)


def test_precision_recall_on_a_hand_built_example():
    # Real points at 0, 1, ..., 9 on a line, k = 1: every real ball has radius 1.
    # Fake: 0.1, 1.1, ..., 4.1 (each 0.1 from a real point: inside) and 100, ..., 104 (far):
    # precision 5 / 10. Every fake ball has radius 1 too (neighbours 1 apart); real 0..4 are
    # 0.1 from a fake point and real 5 is 0.9 from 4.1, real 6..9 are >= 1.9 away: recall 6 / 10.
    real = np.stack([np.arange(10.0), np.zeros(10)], axis=1)
    fake_x = np.concatenate([np.arange(5) + 0.1, 100.0 + np.arange(5)])
    fake = np.stack([fake_x, np.zeros(10)], axis=1)
    precision, recall = ev.precision_recall(real, fake, k=1)
    assert precision == pytest.approx(0.5) and recall == pytest.approx(0.6)
    # k = 3: the real radii are 2 or 3, precision is unchanged. The fake balls around 0.1 and 4.1
    # have radius 3 (the inner ones 2), so real 0..7 are covered (7 is 2.9 from 4.1), 8 and 9
    # are not (>= 3.9 away): recall 8 / 10.
    precision, recall = ev.precision_recall(real, fake, k=3)
    assert precision == pytest.approx(0.5) and recall == pytest.approx(0.8)


def test_precision_recall_matches_brute_force_and_does_not_depend_on_batch_size():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(300, 8))
    fake = 0.8 * rng.normal(size=(250, 8)) + 0.5
    want = _brute_force_precision_recall(real, fake, k=3)
    assert 0.1 < want[0] < 0.99 and 0.1 < want[1] < 0.99  # a non-trivial case
    one_batch = ev.precision_recall(real, fake, k=3, batch_size=1000)
    assert one_batch == pytest.approx(want, abs=1e-12)
    assert ev.precision_recall(real, fake, k=3, batch_size=37) == one_batch


def test_precision_recall_rejects_bad_arguments():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="k must be"):
        ev.precision_recall(x, x, k=5)
    with pytest.raises(ValueError, match="k must be"):
        ev.precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match=r"\[M, d\]"):
        ev.precision_recall(x, np.zeros((5, 3)))


# ------------------------------------------------------------------------- feature classifier


@pytest.fixture(scope="module")
def digits():
    from research.datasets.images import load_digits

    data = load_digits(image_size=16, test_fraction=0.25, seed=0)
    return data.train_x * 2 - 1, data.train_y, data.test_x * 2 - 1, data.test_y


@pytest.fixture(scope="module")
def trained(digits):
    train_x, train_y, test_x, test_y = digits
    # A smaller net than the default (widths (32, 64), batch 128) keeps this at ~7 s on the CPU.
    return ev.train_feature_classifier(
        train_x,
        train_y,
        10,
        test_x=test_x,
        test_y=test_y,
        steps=300,
        batch_size=64,
        widths=(16, 32),
        feature_dim=32,
    )


def test_feature_classifier_learns_digits(trained, digits):
    extractor, accuracy = trained
    test_x, test_y = digits[2], digits[3]
    assert accuracy > 0.85
    assert accuracy == pytest.approx(extractor.accuracy(test_x, test_y))
    features = extractor(test_x)  # 450 images: one full block of 256 and a padded one
    assert features.shape == (len(test_x), 32) and features.dtype == np.float32
    assert np.isfinite(features).all()
    # Padding and batching do not change an image's features (BatchNorm in inference mode).
    np.testing.assert_allclose(extractor(test_x[:5]), features[:5], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="trained on"):
        extractor(np.zeros((2, 8, 8, 1), np.float32))


def test_feature_classifier_save_load_roundtrip(trained, digits, tmp_path):
    extractor, _ = trained
    test_x = digits[2]
    path = extractor.save(str(tmp_path / "cache" / "classifier.msgpack"))
    assert os.path.exists(path)
    features = extractor(test_x)
    loaded = ev.ClassifierFeatures.load(path)  # module kwargs from the file
    np.testing.assert_array_equal(loaded(test_x), features)
    kwargs = {"num_classes": 10, "widths": (16, 32), "feature_dim": 32}
    np.testing.assert_array_equal(ev.ClassifierFeatures.load(path, kwargs)(test_x), features)
    with pytest.raises(ValueError, match="do not fit"):
        ev.ClassifierFeatures.load(path, {**kwargs, "feature_dim": 16})


def test_feature_classifier_scan_chunks_match_single_steps(digits):
    train_x, train_y, test_x, test_y = (a[:200] for a in digits)
    kw = dict(test_x=test_x, test_y=test_y, steps=5, batch_size=16, widths=(4,), feature_dim=8)
    single, _ = ev.train_feature_classifier(train_x, train_y, 10, steps_per_call=1, **kw)
    chunked, _ = ev.train_feature_classifier(train_x, train_y, 10, steps_per_call=3, **kw)
    np.testing.assert_allclose(chunked(test_x), single(test_x), rtol=1e-4, atol=1e-5)


def test_feature_classifier_rejects_bad_labels(digits):
    train_x, train_y, test_x, test_y = digits
    with pytest.raises(ValueError, match="train_y"):
        ev.train_feature_classifier(train_x, train_y + 10, 10, test_x=test_x, test_y=test_y)
    with pytest.raises(ValueError, match="test_y"):
        ev.train_feature_classifier(train_x, train_y, 10, test_x=test_x, test_y=test_y[:-1])


# ------------------------------------------------------------------- pluggable feature extractor


def test_load_feature_extractor_from_a_spec():
    extractor = ev.load_feature_extractor("tests.research.ascend.test_evaluation:_toy_extractor")
    images = np.random.default_rng(7).uniform(-1, 1, size=(6, 4, 4, 3)).astype(np.float32)
    features = ev.extract_features(extractor, images, batch_size=4)
    np.testing.assert_allclose(features, _toy_extractor()(images), rtol=1e-6)
    assert features.shape == (6, 6)
    assert ev.frechet_distance_of(features, features) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "spec, error",
    [
        ("no_colon_here", ValueError),
        ("a.b:c:d", ValueError),
        (":function", ValueError),
        ("tests.research:", ValueError),
        ("bad-name.module:f", ValueError),
        ("no_such_package_xyz.module:f", ImportError),
        ("tests.research.ascend.test_evaluation:_no_such_function", ImportError),
        ("tests.research.ascend.test_evaluation:_NOT_CALLABLE", TypeError),
        ("tests.research.ascend.test_evaluation:_returns_not_callable", TypeError),
    ],
)
def test_load_feature_extractor_errors_name_the_spec(spec, error):
    with pytest.raises(error) as info:
        ev.load_feature_extractor(spec)
    assert repr(spec) in str(info.value)


# ----------------------------------------------------------------------------------- image grid


def test_save_image_grid_layout_and_pixel_values(tmp_path):
    n, h, w = 5, 3, 4
    values = np.array([-1.0, 1.0, 0.0, -2.0, 0.5])  # 0.0 -> 127.5 -> 128; -2 clips to 0
    images = np.broadcast_to(values[:, None, None, None], (n, h, w, 1)).astype(np.float32)
    path = ev.save_image_grid(images, str(tmp_path / "grids" / "g.png"), nrow=3, pad=2)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L"
        grid = np.asarray(im)
    # 3 images per row, 2 rows; pad 2 between tiles and around the border.
    assert grid.shape == (2 * (h + 2) + 2, 3 * (w + 2) + 2)
    expected = [0, 255, 128, 0, round((0.5 + 1) * 127.5)]
    for i, want in enumerate(expected):
        r, c = divmod(i, 3)
        tile = grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + c * (w + 2) : 2 + c * (w + 2) + w]
        assert (tile == want).all(), (i, tile)
    assert (grid[:2] == 0).all() and (grid[:, :2] == 0).all()  # border
    assert (grid[2 + h + 2 :, 2 + 2 * (w + 2) :] == 0).all()  # the empty sixth slot


def test_save_image_grid_rgb_default_layout(tmp_path):
    images = np.zeros((10, 2, 2, 3), np.float32)
    images[:, :, :, 0] = 1.0  # red
    images[:, :, :, 2] = -1.0
    path = ev.save_image_grid(images, str(tmp_path / "rgb.png"), pad=1)
    with Image.open(path) as im:
        assert im.mode == "RGB"
        grid = np.asarray(im)
    # Default nrow = ceil(sqrt(10)) = 4 images per row, 3 rows.
    assert grid.shape == (3 * 3 + 1, 4 * 3 + 1, 3)
    np.testing.assert_array_equal(grid[1, 1], [255, 128, 0])
    with pytest.raises(ValueError, match="images"):
        ev.save_image_grid(np.zeros((2, 4, 4, 2)), str(tmp_path / "bad.png"))


def test_extract_features_checks_the_extractor_output_and_sample_quality_combines():
    images = np.zeros((4, 2, 2, 1), np.float32)
    with pytest.raises(ValueError, match=r"\[B, d\]"):
        ev.extract_features(lambda x: np.zeros((len(x) + 1, 3)), images)
    with pytest.raises(ValueError, match="NaN"):
        ev.extract_features(lambda x: np.full((len(x), 3), np.nan), images)
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(100, 4)), rng.normal(size=(100, 4)) + 0.3
    metrics = ev.sample_quality(real, fake, k=3)
    assert metrics["fd"] == pytest.approx(ev.frechet_distance_of(real, fake))
    assert (metrics["precision"], metrics["recall"]) == ev.precision_recall(real, fake, k=3)
