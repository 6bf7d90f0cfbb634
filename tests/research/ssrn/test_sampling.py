"""Window sampling, boundary indices and siamese offsets."""

import numpy as np
import pytest

from research.ssrn import sampling


def _fine_mean(features, a, b, res=1000):
    """Mean of the piecewise-constant features over [a, b) by dense sampling."""
    x = np.linspace(a, b, res, endpoint=False) + (b - a) / (2 * res)
    return features[np.minimum(np.floor(x).astype(int), len(features) - 1)].mean(0)


@pytest.mark.parametrize("offset", [0.0, 0.3, -0.45])
def test_window_means_are_box_filters_over_fractional_frames(offset):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(37, 3))
    n = 8
    got = sampling.window_means(f, n, offset)
    s = 37 / n
    for i in range(n):
        a, b = max(0.0, (i + offset) * s), min(37.0, (i + 1 + offset) * s)
        np.testing.assert_allclose(got[i], _fine_mean(f, a, b), atol=5e-3)


def test_window_means_reject_an_offset_of_half_a_stride():
    with pytest.raises(ValueError, match="offset"):
        sampling.window_means(np.zeros((10, 2)), 5, 0.5)


def test_siamese_offsets_never_leave_the_video():
    rng = np.random.default_rng(1)
    u = sampling.siamese_offsets(rng, (2000,), 0.5)
    assert np.all(np.abs(u) < 0.5)
    t, n = 50, 7
    for offset in u[:50]:
        edges = np.clip((np.arange(n + 1) + offset) * t / n, 0, t)
        assert edges.min() >= 0 and edges.max() <= t and np.all(np.diff(edges) > 0)
        assert np.all(np.isfinite(sampling.window_means(np.ones((t, 2)), n, offset)))
    with pytest.raises(ValueError, match="spread"):
        sampling.siamese_offsets(rng, (3,), 0.7)


def test_time_to_index_uses_each_sequences_own_windows():
    # 40 s video, 8 windows of 5 s; a boundary at 12 s is in window 2 (10-15 s)
    assert sampling.time_to_index(12.0, 40.0, 8) == 2
    assert sampling.time_to_index(12.0, 40.0, 8, offset=0.3) == 2  # windows 11.5-16.5
    assert sampling.time_to_index(12.0, 40.0, 8, offset=0.45) == 1  # windows 12.25-17.25
    assert sampling.time_to_index(40.0, 40.0, 8) == 7  # the end of the video: last window
    np.testing.assert_array_equal(
        sampling.time_to_index(np.array([[0.0], [39.0]]), 40.0, 8, np.array([[0.2, -0.2]])),
        [[0, 0], [7, 7]],
    )


def test_num_positions_keeps_short_videos_and_caps_long_ones():
    assert sampling.num_positions(50, 128) == 50 and sampling.num_positions(500, 128) == 128


def test_window_means_of_several_offsets_equal_one_call_each():
    f = np.random.default_rng(2).normal(size=(29, 4))
    offsets = np.array([0.0, -0.3, 0.49])
    got = sampling.window_means(f, 6, offsets)
    assert got.shape == (3, 6, 4)
    for k, u in enumerate(offsets):
        np.testing.assert_allclose(got[k], sampling.window_means(f, 6, float(u)), rtol=1e-6)
