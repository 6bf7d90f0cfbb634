"""Sparse sampling of a video's features at N positions, with siamese offsets, and the mapping
between seconds and sampled positions.

A video's raw features [T, D] cover its duration in T equal frames. It is sampled at N = min(T,
max_positions) positions of stride T / N frames, as VSLNet downsamples to at most 128 positions:
position i averages the frames of its window [(i + u) s, (i + 1 + u) s) (box filter over
fractional frames, windows clipped to the video), where u is the sequence's offset in strides.
The anchor sequence has u = 0; a siamese sequence has the anchor's stride and an offset u in
(-1/2, 1/2), so its windows interleave the anchor's and never leave the video.

Boundaries are labelled as VSLNet's `time_to_index` does: the start index is the window that
contains the start time, the end index the window that contains the end time (in the sequence's
own, offset windows), so a sparse sequence cannot say where inside a window the boundary lies.
"""

from __future__ import annotations

import numpy as np


def num_positions(num_frames: int, max_positions: int) -> int:
    """N = min(T, max_positions): short videos keep every frame, long ones are downsampled."""
    if num_frames < 1 or max_positions < 1:
        raise ValueError(f"need T >= 1 and max_positions >= 1, got {num_frames}, {max_positions}")
    return min(num_frames, max_positions)


def window_means(features: np.ndarray, n: int, offsets: np.ndarray | float = 0.0) -> np.ndarray:
    """Means of `features` [T, D] over the n windows [(i + u) s, (i + 1 + u) s) clipped to
    [0, T], s = T / n, with fractional frames weighted by their covered fraction, for each offset
    u of `offsets` [S] -> [S, n, D] (a scalar offset -> [n, D]). The cumulative sum of the
    features is computed once for all offsets."""
    t = features.shape[0]
    u = np.asarray(offsets, np.float64)
    if np.any(np.abs(u) >= 0.5):
        raise ValueError(f"offsets must be in (-1/2, 1/2) strides, got {offsets}")
    stride = t / n
    edges = np.clip((np.arange(n + 1) + u[..., None]) * stride, 0.0, t)  # [..., n + 1]
    cumulative = np.concatenate([np.zeros((1, features.shape[1])), np.cumsum(features, 0)])

    def integral(x: np.ndarray) -> np.ndarray:  # of the piecewise-constant features over [0, x)
        k = np.minimum(np.floor(x).astype(int), t - 1)
        return cumulative[k] + (x - k)[..., None] * features[k]

    widths = np.diff(edges, axis=-1)
    means = (integral(edges[..., 1:]) - integral(edges[..., :-1])) / widths[..., None]
    return means.astype(np.float32)


def time_to_index(
    seconds: np.ndarray, duration: np.ndarray, n: np.ndarray, offset: np.ndarray | float = 0.0
) -> np.ndarray:
    """Index of the window (of n over `duration`, shifted by `offset` strides) holding each time;
    arrays broadcast; int32 in [0, n - 1]."""
    position = np.asarray(seconds) / np.asarray(duration) * np.asarray(n) - offset
    return np.clip(np.floor(position), 0, np.asarray(n) - 1).astype(np.int32)


def siamese_offsets(rng: np.random.Generator, shape: tuple[int, ...], spread: float) -> np.ndarray:
    """Offsets of siamese sequences in strides, uniform in (-spread, spread), spread <= 1/2."""
    if not 0 < spread <= 0.5:
        raise ValueError(f"the siamese offset spread must be in (0, 1/2] strides, got {spread}")
    u = rng.uniform(-spread, spread, size=shape)
    return np.clip(u, -0.5 + 1e-6, 0.5 - 1e-6)
