"""From residual maps to detections and scores: the threshold from defect-free validation
images, segmentation, and the image- and pixel-level metrics overall and per defect class.

Every detector (the autoencoder under each loss, the non-learned baseline) is judged by the same
`evaluate_detector` on its residual maps, so their numbers sit in one table.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from research.datasets.defects import InspectionImages
from research.defect_ae import inspection, metrics


@dataclasses.dataclass(frozen=True)
class InspectOptions:
    """residual: one of `inspection.RESIDUALS` (1 - SSIM map, L1, or 1 - SSIM + l1_weight L1);
    percentile: the threshold is this percentile of every residual pixel of the defect-free
    validation images; opening_radius: disk radius of the morphological opening (0: none);
    min_area: connected components with fewer pixels are removed; stride: of the sliding
    window (0: half the training patch)."""

    residual: str = "ssim_l1"
    l1_weight: float = 1.0
    percentile: float = 99.5
    opening_radius: int = 1
    min_area: int = 0
    stride: int = 0


@functools.partial(jax.jit, static_argnames=("kind", "l1_weight"))
def _residual_batch(x, recon, kind: str, l1_weight: float):
    return inspection.residual_map(x, recon, kind, l1_weight=l1_weight)


def residual_maps(
    images: np.ndarray, recons: np.ndarray, kind: str, *, l1_weight: float, batch_size: int = 64
) -> np.ndarray:
    """[N, S, S, C] images and reconstructions -> [N, S, S] float32 residuals (jitted batches
    of one shape: the last is padded, so any N compiles once)."""
    out = []
    for i in range(0, len(images), batch_size):
        x, r = images[i : i + batch_size], recons[i : i + batch_size]
        pad = [(0, batch_size - len(x))] + [(0, 0)] * (x.ndim - 1)
        maps = _residual_batch(np.pad(x, pad), np.pad(r, pad), kind, l1_weight)
        out.append(np.asarray(maps)[: len(x)])
    return np.concatenate(out).astype(np.float32)


def _image_metrics(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Image AUROC of `scores` (higher = more defective), None when it is undefined."""
    if len(np.unique(labels > 0)) < 2:
        return None
    return metrics.image_auroc(scores, labels)


def evaluate_detector(
    val_residuals: np.ndarray,
    test_residuals: np.ndarray,
    test: InspectionImages,
    opts: InspectOptions,
) -> dict[str, Any]:
    """Scores one detector.

    Args:
      val_residuals: [Nv, S, S] residuals of defect-free validation images (the threshold).
      test_residuals: [Nt, S, S] residuals of `test` (defect-free and defective images).
    Returns a flat dict: `threshold`; overall `image_auroc_max` (score: the image's largest
    residual), `image_auroc_area` (score: area of the segmented defect), `pixel_auroc`, `pro`
    (per-region overlap up to FPR 0.3), `precision` / `recall` / `f1` of the segmentation;
    per defect class c: `<c>/image_auroc_max` and `<c>/pixel_auroc` on the defect-free test
    images together with class c; `warnings`: the traps that make a number meaningless
    (constant image scores, the 'AUROC stuck at 0.5' case).
    """
    threshold = inspection.threshold_from_residuals(val_residuals, opts.percentile)
    predicted = inspection.segment(
        test_residuals, threshold, opening_radius=opts.opening_radius, min_area=opts.min_area
    )
    max_score = test_residuals.reshape(len(test), -1).max(axis=1)
    area_score = predicted.reshape(len(test), -1).sum(axis=1).astype(np.float64)
    out: dict[str, Any] = {"threshold": threshold, "warnings": []}
    if metrics.constant_scores(max_score):
        out["warnings"].append("every test image has the same largest residual")
    out["image_auroc_max"] = _image_metrics(max_score, test.labels)
    out["image_auroc_area"] = _image_metrics(area_score, test.labels)
    out["pixel_auroc"] = metrics.pixel_auroc(test_residuals, test.masks)
    out["pro"] = metrics.pro_score(test_residuals, test.masks)
    out.update(metrics.f1_score(predicted, test.masks))
    free = test.labels == 0
    for k, name in enumerate(test.classes):
        if k == 0 or not (test.labels == k).any():
            continue
        keep = free | (test.labels == k)
        out[f"{name}/image_auroc_max"] = _image_metrics(max_score[keep], test.labels[keep])
        out[f"{name}/pixel_auroc"] = metrics.pixel_auroc(test_residuals[keep], test.masks[keep])
    return out


def pixel_auroc_by_residual(
    test: InspectionImages, recons: np.ndarray, *, l1_weight: float
) -> dict[str, float]:
    """{"pixel_auroc/<kind>": ...} of the test reconstructions under every residual kind of
    `inspection.RESIDUALS` (which residual map separates defect pixels best)."""
    return {
        f"pixel_auroc/{kind}": metrics.pixel_auroc(
            residual_maps(test.images, recons, kind, l1_weight=l1_weight), test.masks
        )
        for kind in inspection.RESIDUALS
    }


def reconstruction_quality(images: np.ndarray, recons: np.ndarray) -> dict[str, float]:
    """How faithful reconstructions of defect-free images are: mean L1, and `contrast`, the
    mean over images of std(reconstruction) / std(input) (near 1 for a faithful copy, near 0
    for the blurry or all-grey reconstructions SSIM autoencoders are known to collapse to)."""
    axes = tuple(range(1, images.ndim))
    contrast = recons.std(axis=axes) / np.maximum(images.std(axis=axes), 1e-6)
    return {
        "val_l1": float(np.abs(images - recons).mean()),
        "val_contrast": float(contrast.mean()),
    }


GREY_CONTRAST = 0.5  # below: the reconstructions lost most of the texture


def pixel_gaussian_residuals(train: np.ndarray, images: np.ndarray) -> np.ndarray:
    """The non-learned floor: per-pixel Gaussian of the defect-free training images [N, S, S, C];
    the residual of `images` is |x - mean| / std at each pixel (std floored at 1e-2, mean over
    channels), [M, S, S]. It knows nothing of texture, only of where pixels usually are."""
    mean = train.mean(axis=0)
    std = np.maximum(train.std(axis=0), 1e-2)
    return (np.abs(images - mean) / std).mean(axis=-1).astype(np.float32)
