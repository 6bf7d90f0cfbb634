"""The synthetic grounding benchmark: lengths, planted moments between samples, sentences."""

import numpy as np

from research.datasets.video import tokenize
from research.datasets.video_synthetic import OBJECTS, VERBS, synthetic_grounding


def test_videos_and_moments():
    videos, moments = synthetic_grounding(30, seed=0, dim=8, min_frames=40, max_frames=80)
    lengths = {v.shape[0] for v in videos.values()}
    assert min(lengths) >= 40 and max(lengths) <= 80 and len(lengths) > 5
    assert all(v.shape[1] == 8 and v.dtype == np.float32 for v in videos.values())
    assert {m.vid for m in moments} == set(videos)
    fps = 4.0
    for m in moments:
        assert m.duration == videos[m.vid].shape[0] / fps
        assert 0 <= m.start < m.end <= m.duration
        words = tokenize(m.sentence)
        assert words[1] in VERBS and words[3] in OBJECTS
    # boundaries fall between frames (and so between the samples of any sparse sampling)
    frames = np.array([[m.start, m.end] for m in moments]) * fps
    assert np.mean(np.abs(frames - np.round(frames)) > 0.01) > 0.9
    # two queries of one video ask for different events
    by_video = {}
    for m in moments:
        by_video.setdefault(m.vid, []).append(m)
    assert all(len({(x.start, x.sentence) for x in ms}) == len(ms) for ms in by_video.values())


def test_the_moment_is_visible_in_the_features():
    """Inside its moment a video's features move along the event's prototype: the mean inside
    differs from the mean outside far more than the noise of the means."""
    videos, moments = synthetic_grounding(20, seed=1, dim=16, noise=0.5)
    gaps = []
    for m in moments:
        x = videos[m.vid]
        t = np.arange(x.shape[0]) / 4.0
        inside = (t >= m.start) & (t + 0.25 <= m.end)
        gaps.append(np.linalg.norm(x[inside].mean(0) - x[~inside].mean(0)))
    assert np.median(gaps) > 1.0


def test_same_seed_same_benchmark():
    a = synthetic_grounding(5, seed=3, dim=4)
    b = synthetic_grounding(5, seed=3, dim=4)
    assert a[1] == b[1]
    for vid in a[0]:
        np.testing.assert_array_equal(a[0][vid], b[0][vid])
