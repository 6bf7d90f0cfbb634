"""research/defect_ae/inspection.py: residuals, sliding windows, threshold, segmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.defect_ae import inspection, losses


def _window_mean(batch: np.ndarray) -> np.ndarray:
    """A stand-in model that only depends on its own window: each window's per-channel mean."""
    return np.broadcast_to(batch.mean(axis=(1, 2), keepdims=True), batch.shape)


def _loop_reconstruct(images: np.ndarray, p: int, stride: int) -> np.ndarray:
    """Direct loops: the mean, per pixel, of _window_mean over the windows covering it."""
    n, h, w, c = images.shape
    ys = sorted(set(range(0, h - p + 1, stride)) | {h - p})
    xs = sorted(set(range(0, w - p + 1, stride)) | {w - p})
    sums = np.zeros(images.shape)
    counts = np.zeros(images.shape)
    for i in range(n):
        for y in ys:
            for x in xs:
                window = images[i, y : y + p, x : x + p]
                sums[i, y : y + p, x : x + p] += window.mean(axis=(0, 1))
                counts[i, y : y + p, x : x + p] += 1
    return sums / counts


def test_residual_maps():
    rng = np.random.default_rng(0)
    x = rng.random((2, 24, 19, 3)).astype(np.float32)  # a shape test_losses compiles too
    r = rng.random((2, 24, 19, 3)).astype(np.float32)
    l1 = np.abs(x - r).mean(-1)
    dssim = 1 - np.asarray(losses.ssim_map(jnp.asarray(x), jnp.asarray(r)))
    np.testing.assert_allclose(inspection.residual_map(x, r, "l1"), l1, rtol=1e-6)
    np.testing.assert_allclose(inspection.residual_map(x, r, "ssim"), dssim, rtol=1e-6)
    got = inspection.residual_map(x, r, "ssim_l1", l1_weight=2.0)
    assert got.shape == (2, 24, 19)
    np.testing.assert_allclose(got, dssim + 2.0 * l1, rtol=1e-5)
    with pytest.raises(ValueError, match="ssim_l1"):
        inspection.residual_map(x, r, "l2")


def test_sliding_window_identity_returns_the_input():
    images = np.random.default_rng(1).random((3, 13, 10, 2)).astype(np.float32)
    calls = []

    def identity(batch):
        calls.append(batch.shape)
        return batch

    out = inspection.sliding_window_reconstruct(
        identity, images, patch_size=4, stride=3, batch_size=8
    )
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(out, images, rtol=1e-6)
    # Starts 0, 3, 6, 9 (+ none: 9 = 13 - 4) by 0, 3, 6 (+ 6 = 10 - 4): 4 * 3 * 3 images = 36
    # windows, padded to 5 batches of one shape.
    assert calls == [(8, 4, 4, 2)] * 5

    # A jitted function returning jax arrays: traced once for all batches.
    traces = []
    jitted = jax.jit(lambda b: traces.append(b.shape) or b)
    out = inspection.sliding_window_reconstruct(
        jitted, images, patch_size=4, stride=3, batch_size=8
    )
    np.testing.assert_allclose(out, images, rtol=1e-6)
    assert len(traces) == 1


@pytest.mark.parametrize(("p", "stride"), [(4, 3), (5, 2), (6, 6), (13, 1)])
def test_sliding_window_averages_overlapping_windows(p, stride):
    images = np.random.default_rng(p).random((2, 13, 15, 3)).astype(np.float32)
    out = inspection.sliding_window_reconstruct(
        _window_mean, images, patch_size=p, stride=stride, batch_size=7
    )
    np.testing.assert_allclose(out, _loop_reconstruct(images, p, stride), rtol=1e-5)


def test_sliding_window_errors():
    images = np.zeros((1, 8, 6, 1), np.float32)
    with pytest.raises(ValueError, match="patch_size"):
        inspection.sliding_window_reconstruct(_window_mean, images, patch_size=7, stride=1)
    with pytest.raises(ValueError, match="stride"):
        inspection.sliding_window_reconstruct(_window_mean, images, patch_size=4, stride=0)


def test_threshold_from_residuals():
    residuals = np.arange(100, dtype=np.float64).reshape(1, 10, 10)
    assert inspection.threshold_from_residuals(residuals, 100) == 99.0
    assert inspection.threshold_from_residuals(residuals, 50) == pytest.approx(49.5)
    for bad in (0, -1, 100.5):
        with pytest.raises(ValueError, match="percentile"):
            inspection.threshold_from_residuals(residuals, bad)
    with pytest.raises(ValueError, match="empty"):
        inspection.threshold_from_residuals(np.zeros((0, 4, 4)), 99)
    with pytest.raises(ValueError, match="NaN"):
        inspection.threshold_from_residuals(np.array([[[0.0, np.nan]]]), 99)


def _hand_made_residuals() -> np.ndarray:
    """[1, 16, 16]: a 3x3 block, an isolated pixel, a 1-px line and a 2x2 block, all at 1."""
    r = np.zeros((1, 16, 16))
    r[0, 2:5, 2:5] = 1.0  # 3x3 block
    r[0, 10, 2] = 1.0  # isolated pixel
    r[0, 13, 5:12] = 1.0  # horizontal line, 1 px thick
    r[0, 8:10, 11:13] = 1.0  # 2x2 block
    return r


def test_segment_opening_and_min_area():
    residuals = _hand_made_residuals()
    raw = inspection.segment(residuals, 0.5, opening_radius=0)
    np.testing.assert_array_equal(raw, residuals > 0.5)
    assert inspection.components(raw[0])[1] == 4

    opened = inspection.segment(residuals, 0.5, opening_radius=1)
    assert opened.dtype == bool and opened.shape == residuals.shape
    # The radius-1 disk is a plus sign: it fits once in the 3x3 block (centred at (3, 3)), so the
    # block survives as that plus; it fits nowhere in the pixel, the line or the 2x2 block.
    want = np.zeros_like(opened)
    want[0, 2:5, 3] = want[0, 3, 2:5] = True
    np.testing.assert_array_equal(opened, want)

    # No opening, min_area 4: the pixel (1) goes, the 2x2 block (4) stays.
    kept = inspection.segment(residuals, 0.5, opening_radius=0, min_area=4)
    labels, num = inspection.components(kept[0])
    assert num == 3 and not kept[0, 10, 2] and kept[0, 8:10, 11:13].all()
    kept = inspection.segment(residuals, 0.5, opening_radius=0, min_area=8)
    assert inspection.components(kept[0])[1] == 1  # only the 3x3 block (9 px)


def test_components_use_eight_connectivity():
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # one diagonal region
    mask[4:6, 4:6] = True
    labels, num = inspection.components(mask)
    assert num == 2
    assert labels[0, 0] == labels[2, 2] != labels[5, 5]
    assert labels[3, 0] == 0
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        inspection.components(mask[None])
