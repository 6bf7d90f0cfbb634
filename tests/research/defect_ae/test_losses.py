"""research/defect_ae/losses.py against skimage's SSIM and numpy closed forms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from research.defect_ae import losses

SKIMAGE_SSIM = dict(
    gaussian_weights=True,
    sigma=1.5,
    use_sample_covariance=False,
    data_range=1.0,
    channel_axis=-1,
)


def _pair(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A random image batch and a noisy, clipped copy (so SSIM is neither ~0 nor ~1)."""
    x = rng.random(shape).astype(np.float32)
    y = np.clip(x + 0.2 * rng.standard_normal(shape), 0, 1).astype(np.float32)
    return x, y


def test_gaussian_window_is_normalised_and_symmetric():
    w = losses.gaussian_window(11, 1.5)
    assert w.shape == (11,)
    np.testing.assert_allclose(w.sum(), 1.0)
    np.testing.assert_allclose(w, w[::-1])
    assert w.argmax() == 5
    with pytest.raises(ValueError, match="odd"):
        losses.gaussian_window(10)


@pytest.mark.parametrize("size", [3, 8, 16])
def test_reflect_filter_matrix_matches_scipy_reflect_mode(size):
    # Also below the window size, where the reflection wraps more than once.
    taps = losses.gaussian_window(11, 1.5)
    v = np.random.default_rng(size).random(size)
    want = ndimage.correlate1d(v, taps, mode="reflect")
    np.testing.assert_allclose(losses.reflect_filter_matrix(size, taps) @ v, want, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 16, 16, 1), (2, 24, 19, 3), (1, 11, 32, 3)])
def test_ssim_and_map_match_skimage(shape):
    rng = np.random.default_rng(sum(shape))
    x, y = _pair(rng, shape)
    got = np.asarray(losses.ssim(jnp.asarray(x), jnp.asarray(y)))
    got_map = np.asarray(losses.ssim_map(jnp.asarray(x), jnp.asarray(y)))
    assert got.shape == (shape[0],) and got_map.shape == shape[:3]
    for b in range(shape[0]):
        want, want_map = structural_similarity(x[b], y[b], full=True, **SKIMAGE_SSIM)
        np.testing.assert_allclose(got[b], want, atol=1e-4)
        # skimage's full map is [H, W, C]; ours is the channel mean.
        np.testing.assert_allclose(got_map[b], want_map.mean(-1), atol=1e-4)


def test_ssim_of_identical_images_is_one():
    x = jnp.asarray(np.random.default_rng(0).random((2, 16, 16, 1)), jnp.float32)
    np.testing.assert_allclose(losses.ssim(x, x), 1.0, atol=1e-5)


def test_constant_images_give_finite_values_and_gradients():
    # Two pairs in one batch: a constant image against itself and against another constant.
    x = jnp.concatenate([jnp.full((1, 16, 16, 1), 0.5), jnp.full((1, 16, 16, 1), 0.5)])
    r = jnp.concatenate([jnp.full((1, 16, 16, 1), 0.5), jnp.full((1, 16, 16, 1), 0.25)])

    assert np.all(np.isfinite(losses.ssim_map(x, r)))
    # ssim_l1's gradient is SSIM's plus L1's: finite only if both are (compiling one is faster).
    grad = jax.jit(jax.grad(functools.partial(losses.reconstruction_loss, "ssim_l1"), 1))(x, r)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(losses.ssim(x[:1], r[:1]), 1.0, atol=1e-6)


def test_reconstruction_losses_match_numpy():
    rng = np.random.default_rng(1)
    x, r = _pair(rng, (2, 24, 19, 3))
    ssim = np.array(
        [structural_similarity(a, b, **SKIMAGE_SSIM) for a, b in zip(x, r, strict=True)]
    )
    l1 = np.abs(x - r).mean(axis=(1, 2, 3))
    want = {
        "l2": np.square(x - r).mean(),
        "l1": l1.mean(),
        "ssim": (1 - ssim).mean(),
        "ssim_l1": ((1 - ssim) + 0.5 * l1).mean(),
    }
    for name in losses.LOSSES:
        got = losses.reconstruction_loss(name, jnp.asarray(x), jnp.asarray(r), l1_weight=0.5)
        assert got.shape == ()
        np.testing.assert_allclose(got, want[name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(losses.l1(x, r), l1, rtol=1e-5)
    np.testing.assert_allclose(losses.l2(x, r), np.square(x - r).mean(axis=(1, 2, 3)), rtol=1e-5)
    # ssim_crop=False: the mean of skimage's full (reflect-padded) map, border pixels included.
    full = np.array(
        [
            structural_similarity(a, b, full=True, **SKIMAGE_SSIM)[1].mean()
            for a, b in zip(x, r, strict=True)
        ]
    )
    got = losses.reconstruction_loss("ssim", jnp.asarray(x), jnp.asarray(r), ssim_crop=False)
    np.testing.assert_allclose(got, (1 - full).mean(), atol=1e-4)
    assert abs(float(got) - want["ssim"]) > 1e-3  # the border pixels do count


def test_unknown_loss_and_bad_shapes_raise():
    x = jnp.zeros((1, 16, 16, 1))
    with pytest.raises(ValueError, match="ssim_l1"):
        losses.reconstruction_loss("mse", x, x)
    with pytest.raises(ValueError, match="at least 11x11"):
        losses.ssim(jnp.zeros((1, 8, 16, 1)), jnp.zeros((1, 8, 16, 1)))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        losses.ssim_map(x, jnp.zeros((1, 16, 16, 3)))
