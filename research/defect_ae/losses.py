"""Reconstruction losses for the defect autoencoder: L2, L1, SSIM and SSIM + L1.

SSIM is Wang et al. (2004) with an 11-tap Gaussian window (sigma 1.5), population (co)variances
and reflect padding, so `ssim` equals

    skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1.0,
                                          channel_axis=-1)

image by image. Everything here is jax.numpy: jittable and differentiable.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

LOSSES = ("l2", "l1", "ssim", "ssim_l1")


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian taps [size], centred on the middle tap (size must be odd)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be a positive odd integer, got {size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def reflect_filter_matrix(size: int, taps: np.ndarray) -> np.ndarray:
    """[size, size] matrix M with M @ v = 'same' correlation of v [size] with taps, reflect-padded.

    Reflect as scipy.ndimage's default mode='reflect' (d c b a | a b c d | d c b a), which is
    numpy's 'symmetric'; the padding is folded into M, so a border row sums taps twice.
    """
    k = len(taps)
    r = (k - 1) // 2
    source = np.pad(np.arange(size), r, mode="symmetric")  # padded position -> pixel
    cols = source[np.arange(size)[:, None] + np.arange(k)[None, :]]  # [size, k]
    m = np.zeros((size, size), dtype=np.float64)
    np.add.at(m, (np.repeat(np.arange(size), k), cols.ravel()), np.tile(taps, size))
    return m


def _filter_hw(x: Array, taps: np.ndarray) -> Array:
    """Separable 'same' Gaussian filtering of [B, H, W, K] over H then W, reflect padding.

    Each pass is one matmul with a constant [H, H] / [W, W] banded matrix: far quicker to compile
    and to differentiate than a sum of shifted slices or a depthwise convolution, and on CPU
    quicker to run at these image sizes. HIGHEST precision keeps float32 (no TF32 on GPUs).
    """
    mh = jnp.asarray(reflect_filter_matrix(x.shape[1], taps), x.dtype)
    mw = jnp.asarray(reflect_filter_matrix(x.shape[2], taps), x.dtype)
    hi = jax.lax.Precision.HIGHEST
    x = jnp.einsum("ih,bhwk->biwk", mh, x, precision=hi)
    return jnp.einsum("jw,bhwk->bhjk", mw, x, precision=hi)


def _check_pair(x: Array, y: Array) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(
            f"expected two image batches of the same shape [B, H, W, C], got {x.shape} "
            f"and {y.shape}"
        )


def ssim_map(
    x: Array,
    y: Array,
    *,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Array:
    """Local SSIM of x and y, [B, H, W, C] x2 -> [B, H, W] (mean over channels).

    Border pixels use reflect-padded windows (as skimage's full map); `ssim` crops them.
    window, sigma, data_range, k1 and k2 are Python numbers (static arguments of the jit).
    """
    _check_pair(x, y)
    return _ssim_map(x, y, window=window, sigma=sigma, data_range=data_range, k1=k1, k2=k2)


# Jitted even when called eagerly, so the ~30 small ops are not dispatched one by one.
@functools.partial(jax.jit, static_argnames=("window", "sigma", "data_range", "k1", "k2"))
def _ssim_map(
    x: Array, y: Array, *, window: int, sigma: float, data_range: float, k1: float, k2: float
) -> Array:
    """ssim_map without the shape check; [B, H, W, C] x2 -> [B, H, W]."""
    dtype = jnp.promote_types(jnp.result_type(x, y), jnp.float32)
    x = x.astype(dtype)
    y = y.astype(dtype)
    taps = gaussian_window(window, sigma)
    # One separable pass over all five moments, stacked on the channel axis.
    moments = jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1)
    moments = _filter_hw(moments, taps)
    mu_x, mu_y, e_xx, e_yy, e_xy = jnp.split(moments, 5, axis=-1)
    # E[x^2] - mu^2 can round below 0 on flat patches; clamp so no variance is negative.
    # Nothing below takes a root or a log, and the denominator is >= c1 * c2 > 0, so the value
    # and the gradient stay finite even for constant images.
    var_x = jnp.maximum(e_xx - mu_x * mu_x, 0.0)
    var_y = jnp.maximum(e_yy - mu_y * mu_y, 0.0)
    cov = e_xy - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (num / den).mean(axis=-1)


def ssim(
    x: Array,
    y: Array,
    *,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Array:
    """Mean SSIM per image, [B, H, W, C] x2 -> [B], over the interior (as skimage).

    The (window - 1) // 2 border pixels on each side are left out of the mean; H and W must be
    >= window.
    """
    _check_pair(x, y)
    if x.shape[1] < window or x.shape[2] < window:
        raise ValueError(f"images must be at least {window}x{window} for SSIM, got {x.shape}")
    s = ssim_map(x, y, window=window, sigma=sigma, data_range=data_range, k1=k1, k2=k2)
    r = (window - 1) // 2
    return s[:, r : s.shape[1] - r, r : s.shape[2] - r].mean(axis=(1, 2))


def l1(x: Array, y: Array) -> Array:
    """Mean absolute error per image, [B, H, W, C] x2 -> [B]."""
    _check_pair(x, y)
    return jnp.abs(x - y).mean(axis=(1, 2, 3))


def l2(x: Array, y: Array) -> Array:
    """Mean squared error per image, [B, H, W, C] x2 -> [B]."""
    _check_pair(x, y)
    return jnp.square(x - y).mean(axis=(1, 2, 3))


def reconstruction_loss(
    name: str, x: Array, recon: Array, *, l1_weight: float = 1.0, ssim_crop: bool = True
) -> Array:
    """Batch-mean training loss, [B, H, W, C] x2 -> scalar.

    name: "l2", "l1", "ssim" (1 - SSIM) or "ssim_l1" ((1 - SSIM) + l1_weight * L1).
    ssim_crop: SSIM is the mean over the interior (`ssim`, as skimage and tf.image.ssim); with
    False, over every pixel of the reflect-padded `ssim_map`, so the (window - 1) // 2 border
    pixels of a training patch are trained too (on 32x32 patches the interior is 47% of them).
    """
    if name == "l2":
        per_image = l2(x, recon)
    elif name == "l1":
        per_image = l1(x, recon)
    elif name in ("ssim", "ssim_l1"):
        s = ssim(x, recon) if ssim_crop else ssim_map(x, recon).mean(axis=(1, 2))
        per_image = 1.0 - s
        if name == "ssim_l1":
            per_image = per_image + l1_weight * l1(x, recon)
    else:
        raise ValueError(f"unknown reconstruction loss {name!r}; expected one of {LOSSES}")
    return per_image.mean()
