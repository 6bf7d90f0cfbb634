"""research/defect_ae/metrics.py on hand-made cases with known values."""

import time
import warnings

import numpy as np
import pytest
from scipy import ndimage

from research.defect_ae import metrics


def test_image_auroc_known_value_and_errors():
    # Positives 0.4 and 0.8 against negatives 0.1 and 0.5: 3 of 4 pairs ordered -> 0.75.
    scores = np.array([0.1, 0.4, 0.5, 0.8])
    labels = np.array([0, 1, 0, 3])  # any label > 0 is a defect
    assert metrics.image_auroc(scores, labels) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both"):
        metrics.image_auroc(scores, np.zeros(4))
    with pytest.raises(ValueError, match="both"):
        metrics.image_auroc(scores, np.ones(4))


def test_constant_scores():
    assert metrics.constant_scores(np.full(5, 0.3))
    assert metrics.constant_scores(np.array([1.0, 1.0 + 1e-9]))
    assert not metrics.constant_scores(np.array([0.3, 0.31]))
    with pytest.raises(ValueError, match="empty"):
        metrics.constant_scores(np.array([]))


def test_pixel_auroc_known_value_and_errors():
    residuals = np.array([0.1, 0.4, 0.5, 0.8]).reshape(1, 2, 2)
    masks = np.array([False, True, False, True]).reshape(1, 2, 2)
    assert metrics.pixel_auroc(residuals, masks) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no defect pixels"):
        metrics.pixel_auroc(residuals, np.zeros_like(masks))
    with pytest.raises(ValueError, match="no defect-free pixels"):
        metrics.pixel_auroc(residuals, np.ones_like(masks))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        metrics.pixel_auroc(residuals[0], masks[0])


def _regions(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """[n, size, size] masks with two or three rectangles each (some images without defects)."""
    masks = np.zeros((n, size, size), bool)
    for i in range(1, n):  # image 0 is defect-free
        for _ in range(rng.integers(2, 4)):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(2, 8, 2)
            masks[i, y : y + h, x : x + w] = True
    return masks


def test_pro_perfect_detector_scores_one():
    masks = _regions(4, 32, np.random.default_rng(0))
    assert metrics.pro_score(masks.astype(float), masks) == pytest.approx(1.0)
    # Any monotone residual that separates the classes is perfect too.
    residuals = np.where(masks, 2.0 + np.random.default_rng(1).random(masks.shape), 0.5)
    assert metrics.pro_score(residuals, masks, max_fpr=0.1) == pytest.approx(1.0)


def test_pro_random_detector_scores_about_half_max_fpr():
    rng = np.random.default_rng(2)
    masks = _regions(20, 64, rng)
    residuals = rng.random(masks.shape)
    for max_fpr in (0.3, 0.1):
        assert metrics.pro_score(residuals, masks, max_fpr=max_fpr) == pytest.approx(
            max_fpr / 2, abs=0.05
        )


def test_pro_two_regions_one_found():
    rng = np.random.default_rng(3)
    residuals = 0.1 + 0.8 * rng.random((2, 16, 16))  # defect-free pixels in (0.1, 0.9)
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 2:6, 2:6] = True  # found: above every defect-free pixel
    residuals[0, 2:6, 2:6] = 1.0
    masks[1, 9:14, 3:12] = True  # missed: below every defect-free pixel (and larger)
    residuals[1, 9:14, 3:12] = 0.0
    # Per-region overlap is 1 for the first and 0 for the second at every FPR <= 0.3: PRO 0.5,
    # whereas a pixel-level overlap would weight the regions by area (16 vs 45 pixels).
    assert metrics.pro_score(residuals, masks) == pytest.approx(0.5, abs=1e-9)


def _brute_force_pro(residuals: np.ndarray, masks: np.ndarray, max_fpr: float) -> float:
    """Every distinct residual as a threshold, regions by scipy, the curve clipped at max_fpr."""
    regions = []
    for residual, mask in zip(residuals, masks, strict=True):
        labels, num = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [residual[labels == k] for k in range(1, num + 1)]
    negatives = residuals[~masks]
    points = [(0.0, 0.0)]
    for t in np.concatenate([np.unique(residuals)[::-1], [-np.inf]]):
        pro = np.mean([(region > t).mean() for region in regions])
        points.append(((negatives > t).mean(), pro))
    fpr, pro = np.array(points).T
    return float(
        np.trapezoid(np.interp(np.linspace(0, max_fpr, 20001), fpr, pro), dx=max_fpr / 20000)
        / max_fpr
    )


@pytest.mark.parametrize("skew", [1.0, 6.0])
def test_pro_matches_a_brute_force_curve(skew):
    rng = np.random.default_rng(int(skew))
    masks = _regions(4, 20, rng)
    # Informative but imperfect; skew > 1 piles most residuals near 0 with a long tail.
    residuals = (0.6 * rng.random(masks.shape) + 0.4 * masks * rng.random(masks.shape)) ** skew
    for max_fpr in (0.3, 0.05):
        want = _brute_force_pro(residuals, masks, max_fpr)
        got = metrics.pro_score(residuals, masks, max_fpr=max_fpr, num_thresholds=2000)
        assert got == pytest.approx(want, abs=0.003)
        coarse = metrics.pro_score(residuals, masks, max_fpr=max_fpr, num_thresholds=50)
        assert coarse == pytest.approx(want, abs=0.003)


def test_pro_errors_and_speed():
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    with pytest.raises(ValueError, match="max_fpr"):
        metrics.pro_score(masks.astype(float), masks, max_fpr=0)
    with pytest.raises(ValueError, match="no defect pixels"):
        metrics.pro_score(masks.astype(float), np.zeros_like(masks))
    # The evaluation's scale: 300 images of 128x128.
    rng = np.random.default_rng(4)
    big = np.zeros((300, 128, 128), bool)
    big[::2, 20:40, 30:45] = True
    big[::3, 90:95, 10:80] = True
    residuals = rng.random(big.shape) + big
    start = time.perf_counter()
    score = metrics.pro_score(residuals, big)
    assert time.perf_counter() - start < 5.0
    assert 0.5 < score <= 1.0


def test_f1_score():
    pred = np.zeros((1, 4, 4), bool)
    true = np.zeros((1, 4, 4), bool)
    pred[0, 0, :3] = True  # 3 predicted
    true[0, 0, 1:] = True  # 3 true, 2 of them predicted
    got = metrics.f1_score(pred, true)
    assert got == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    pred[0, 1, :] = True  # 4 more false positives: precision 2/7
    got = metrics.f1_score(pred, true)
    assert got["precision"] == pytest.approx(2 / 7) and got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(2 * (2 / 7) * (2 / 3) / (2 / 7 + 2 / 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = metrics.f1_score(np.zeros_like(pred), np.zeros_like(true))
    assert empty == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
