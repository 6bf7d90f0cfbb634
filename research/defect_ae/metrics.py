"""Defect-detection metrics: image and pixel AUROC, MVTec's PRO score, pixel precision / recall /
F1, and a check for constant image scores (the "AUROC stuck at 0.5" trap).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from research.defect_ae.inspection import components


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of per-image scores [N] against labels [N] (0 good, > 0 defect of any kind)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(labels).ravel() > 0
    if scores.shape != positive.shape:
        raise ValueError(
            f"expected scores and labels of one shape [N], got {scores.shape} and {positive.shape}"
        )
    if positive.all() or not positive.any():
        raise ValueError("image AUROC needs both good (label 0) and defective (label > 0) images")
    return float(roc_auc_score(positive, scores))


def constant_scores(scores: np.ndarray) -> bool:
    """True when all scores [N] are equal up to float rounding (AUROC would be exactly 0.5).

    Usually a collapsed model (a reconstruction independent of the input) or a scoring bug;
    callers report it instead of a meaningless AUROC.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("scores is empty; expected at least one score")
    spread = scores.max() - scores.min()
    return bool(spread <= 1e-12 + 1e-6 * np.abs(scores).max())


def _check_maps(residuals: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    residuals = np.asarray(residuals, dtype=np.float64)
    masks = np.asarray(masks).astype(bool)
    if residuals.ndim != 3 or residuals.shape != masks.shape:
        raise ValueError(
            f"expected residuals and masks of one shape [N, H, W], got {residuals.shape} and "
            f"{masks.shape}"
        )
    if not masks.any():
        raise ValueError("masks have no defect pixels; expected at least one positive pixel")
    if masks.all():
        raise ValueError("masks have no defect-free pixels; expected at least one negative pixel")
    return residuals, masks


def pixel_auroc(residuals: np.ndarray, masks: np.ndarray) -> float:
    """AUROC of every pixel's residual [N, H, W] against the ground-truth masks [N, H, W]."""
    residuals, masks = _check_maps(residuals, masks)
    return float(roc_auc_score(masks.ravel(), residuals.ravel()))


def pro_score(
    residuals: np.ndarray,
    masks: np.ndarray,
    *,
    max_fpr: float = 0.3,
    num_thresholds: int = 200,
) -> float:
    """Normalised area under the per-region-overlap (PRO) vs false-positive-rate curve.

    For each threshold t (a pixel is predicted defective when residual > t), PRO is the mean over
    all ground-truth regions (8-connected components of each image's mask) of the fraction of the
    region's pixels predicted defective, and FPR is the fraction of all defect-free pixels
    predicted defective. The curve is integrated (trapezoids) from FPR 0 to max_fpr, interpolating
    linearly at max_fpr, and divided by max_fpr: 1 for a perfect detector, ~max_fpr / 2 for a
    random one (as MVTec AD's evaluation).

    The thresholds are the defect-free residuals at FPR levels spaced evenly in [0, max_fpr], so
    the integrated part of the curve is sampled evenly however skewed the residuals are (a grid
    over the residual range would spend most thresholds where FPR is ~0 when a few residuals are
    large), plus the next point past max_fpr for the interpolation there.
    """
    residuals, masks = _check_maps(residuals, masks)
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    if num_thresholds < 2:
        raise ValueError(f"num_thresholds must be >= 2, got {num_thresholds}")

    negatives = np.sort(residuals[~masks])
    n_neg = negatives.size
    # residual > negatives[j] holds for at most n_neg - 1 - j negatives: FPR <= level.
    levels = np.linspace(0.0, max_fpr, num_thresholds)
    idx = np.clip(n_neg - 1 - np.floor(levels * n_neg).astype(np.int64), 0, n_neg - 1)
    # The next achievable point past max_fpr (the next smaller defect-free value) and -inf, (1, 1),
    # so the interpolation at max_fpr is between true neighbours of the curve.
    below = np.searchsorted(negatives, negatives[idx.min()], side="left") - 1
    extra = negatives[[below]] if below >= 0 else negatives[:0]
    thresholds = np.concatenate(
        [np.unique(np.concatenate([negatives[idx], extra]))[::-1], [-np.inf]]
    )
    fpr = (n_neg - np.searchsorted(negatives, thresholds, side="right")) / n_neg

    # Per region: its residuals sorted, then the count above each threshold by binary search.
    overlaps = []
    for residual, mask in zip(residuals, masks, strict=True):
        labels, num = components(mask)
        if num == 0:
            continue
        order = np.argsort(labels.ravel(), kind="stable")
        sorted_labels = labels.ravel()[order]
        values = residual.ravel()[order]
        starts = np.searchsorted(sorted_labels, np.arange(1, num + 2))
        for lo, hi in zip(starts[:-1], starts[1:], strict=True):
            region = np.sort(values[lo:hi])
            below = np.searchsorted(region, thresholds, side="right")
            overlaps.append(1.0 - below / region.size)
    pro = np.mean(overlaps, axis=0)  # [T]; fpr and pro both non-decreasing along the thresholds

    # Clip the curve at max_fpr, interpolating the PRO there from its two neighbours.
    k = int(np.searchsorted(fpr, max_fpr, side="right"))  # points with fpr <= max_fpr
    xs, ys = fpr[:k], pro[:k]
    if k < fpr.size and xs[-1] < max_fpr:
        frac = (max_fpr - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
        xs = np.append(xs, max_fpr)
        ys = np.append(ys, pro[k - 1] + frac * (pro[k] - pro[k - 1]))
    return float(np.trapezoid(ys, xs) / max_fpr)


def f1_score(pred_masks: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Pixel precision, recall and F1 of predicted masks against ground truth, both [N, H, W].

    Each is 0 where undefined (no predicted, no true, or neither positive pixels).
    """
    pred = np.asarray(pred_masks).astype(bool)
    true = np.asarray(masks).astype(bool)
    if pred.shape != true.shape:
        raise ValueError(f"expected masks of one shape, got {pred.shape} and {true.shape}")
    tp = int(np.count_nonzero(pred & true))
    fp = int(np.count_nonzero(pred & ~true))
    fn = int(np.count_nonzero(~pred & true))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
