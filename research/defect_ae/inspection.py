"""From reconstructions to defect masks: residual maps, sliding-window reconstruction, threshold,
morphological clean-up and connected components.

The autoencoder only learns defect-free texture, so where the input and its reconstruction
disagree (the residual) is where defects are. The threshold is a percentile of the residuals of
defect-free validation images; an opening with a disk removes thin / isolated false positives.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from research.defect_ae import losses

Array = jax.Array

RESIDUALS = ("ssim", "l1", "ssim_l1")

# 8-connectivity: diagonal neighbours belong to the same region.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def residual_map(x: Array, recon: Array, kind: str, *, l1_weight: float = 1.0) -> Array:
    """Per-pixel residual, [B, H, W, C] x2 -> [B, H, W]; larger means more likely a defect.

    kind: "ssim" (1 - SSIM map), "l1" (channel-mean |x - recon|) or "ssim_l1"
    ((1 - SSIM map) + l1_weight * L1 map).
    """
    if kind not in RESIDUALS:
        raise ValueError(f"unknown residual kind {kind!r}; expected one of {RESIDUALS}")
    if kind == "l1":
        return jnp.abs(x - recon).mean(axis=-1)
    dssim = 1.0 - losses.ssim_map(x, recon)
    if kind == "ssim":
        return dssim
    return dssim + l1_weight * jnp.abs(x - recon).mean(axis=-1)


def _offsets(size: int, patch_size: int, stride: int) -> list[int]:
    """Window starts along one axis: every stride, plus one flush with the far border."""
    starts = list(range(0, size - patch_size + 1, stride))
    if starts[-1] != size - patch_size:
        starts.append(size - patch_size)
    return starts


def sliding_window_reconstruct(
    reconstruct: Callable[[Array], Array],
    images: np.ndarray,
    *,
    patch_size: int,
    stride: int,
    batch_size: int = 64,
) -> np.ndarray:
    """Reconstructs [N, H, W, C] images patch by patch -> [N, H, W, C] float32.

    reconstruct maps [batch_size, p, p, C] -> [batch_size, p, p, C] (e.g. a jitted model apply).
    Windows start at every stride offset plus one flush with the bottom / right border, so every
    pixel is covered; each pixel's reconstruction is the mean over the windows covering it.
    Windows go to reconstruct in batches of exactly batch_size (the last one zero-padded), so a
    jitted function compiles once.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"expected images [N, H, W, C], got shape {images.shape}")
    n, h, w, c = images.shape
    if patch_size < 1 or patch_size > h or patch_size > w:
        raise ValueError(
            f"patch_size must be in [1, min(H, W)] = [1, {min(h, w)}], got {patch_size}"
        )
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    p = patch_size
    ys, xs = _offsets(h, p, stride), _offsets(w, p, stride)

    # The covering count is the same for every image: one [H, W] map.
    counts = np.zeros((h, w), dtype=np.float32)
    for y0 in ys:
        for x0 in xs:
            counts[y0 : y0 + p, x0 : x0 + p] += 1

    # Windows ordered offset-major, image-minor: a run of one offset in a batch touches each image
    # at most once, so it is added with one fancy-indexed `+=` (no duplicate indices).
    win_offset = np.repeat(np.arange(len(ys) * len(xs)), n)
    win_image = np.tile(np.arange(n), len(ys) * len(xs))
    views = np.lib.stride_tricks.sliding_window_view(images, (p, p), axis=(1, 2))  # no copy

    sums = np.zeros_like(images)

    def accumulate(start: int, recon: Array) -> None:
        recon = np.asarray(recon, dtype=np.float32)
        stop = min(start + batch_size, len(win_image))
        offs, imgs = win_offset[start:stop], win_image[start:stop]
        if recon.shape != (batch_size, p, p, c):
            raise ValueError(
                f"reconstruct returned shape {recon.shape}, expected {(batch_size, p, p, c)}"
            )
        bounds = np.flatnonzero(np.diff(offs)) + 1
        for lo, hi in zip(
            np.concatenate([[0], bounds]), np.concatenate([bounds, [len(offs)]]), strict=True
        ):
            y0, x0 = ys[offs[lo] // len(xs)], xs[offs[lo] % len(xs)]
            sums[imgs[lo:hi], y0 : y0 + p, x0 : x0 + p] += recon[lo:hi]

    pending = None
    for start in range(0, len(win_image), batch_size):
        offs = win_offset[start : start + batch_size]
        imgs = win_image[start : start + batch_size]
        batch = np.zeros((batch_size, p, p, c), dtype=np.float32)
        oy = np.asarray(ys)[offs // len(xs)]
        ox = np.asarray(xs)[offs % len(xs)]
        # views[i, y, x] is [C, p, p]; move channels last.
        batch[: len(offs)] = views[imgs, oy, ox].transpose(0, 2, 3, 1)
        result = reconstruct(batch)
        # Dispatch the next batch before pulling this one back, so the device is not left idle
        # while numpy accumulates (JAX dispatch is asynchronous).
        if pending is not None:
            accumulate(*pending)
        pending = (start, result)
    if pending is not None:
        accumulate(*pending)
    return sums / counts[None, :, :, None]


def threshold_from_residuals(residuals: np.ndarray, percentile: float) -> float:
    """The given percentile of every pixel residual of defect-free images [N, H, W]."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    residuals = np.asarray(residuals)
    if residuals.size == 0:
        raise ValueError("residuals is empty; expected defect-free validation residuals")
    if not np.all(np.isfinite(residuals)):
        raise ValueError("residuals contain NaN or inf; expected finite values")
    return float(np.percentile(residuals, percentile))


def _disk(radius: int) -> np.ndarray:
    """[2r+1, 2r+1] bool disk (as skimage.morphology.disk): x^2 + y^2 <= r^2."""
    d = np.arange(-radius, radius + 1)
    return d[:, None] ** 2 + d[None, :] ** 2 <= radius**2


def _remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drops the 8-connected components of a [H, W] mask with fewer than min_area pixels."""
    labels, num = components(mask)
    if num == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_area
    keep[0] = False  # background
    return keep[labels]


def segment(
    residuals: np.ndarray, threshold: float, *, opening_radius: int, min_area: int = 0
) -> np.ndarray:
    """Defect masks [N, H, W] bool from residuals [N, H, W].

    residual > threshold, then a binary opening with a disk of opening_radius per image
    (0: none), then 8-connected components with fewer than min_area pixels are removed.
    """
    residuals = np.asarray(residuals)
    if residuals.ndim != 3:
        raise ValueError(f"expected residuals [N, H, W], got shape {residuals.shape}")
    if opening_radius < 0:
        raise ValueError(f"opening_radius must be >= 0, got {opening_radius}")
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    masks = residuals > threshold
    disk = _disk(opening_radius) if opening_radius > 0 else None
    out = np.empty_like(masks)
    for i, mask in enumerate(masks):
        if disk is not None:
            mask = ndimage.binary_opening(mask, structure=disk)
        if min_area > 1:
            mask = _remove_small(mask, min_area)
        out[i] = mask
    return out


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected regions of a [H, W] mask: (labels [H, W] int, 0 = background; count)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a [H, W] mask, got shape {mask.shape}")
    labels, num = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    return labels, int(num)
