"""Distances between two samples of points: MMD with a Gaussian kernel and sliced Wasserstein.

Used to compare a model's samples with held-out data (JKO-iFlow's flows, MoM-GAN's generators).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def median_distance(x: np.ndarray, *, max_points: int = 2000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of the rows of x [N, d] (a random subset of rows)."""
    x = np.asarray(x, np.float64)
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    sq = np.sum(x**2, 1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    return float(np.median(np.sqrt(d2[np.triu_indices(len(x), 1)])))


@jax.jit
def _kernel_mean(a: Array, b: Array, gamma: Array) -> Array:
    """mean_{i,j} exp(-||a_i - b_j||^2 / (2 gamma^2)), tiled over rows of `a` (1000 at a time)."""
    tile = 1000
    pad = (-a.shape[0]) % tile
    mask = jnp.concatenate([jnp.ones(a.shape[0]), jnp.zeros(pad)]).reshape(-1, tile)
    a = jnp.pad(a, ((0, pad), (0, 0))).reshape(-1, tile, a.shape[1])

    def rows(args):
        ai, mi = args
        d2 = jnp.sum(ai**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2 * ai @ b.T
        return jnp.sum(jnp.exp(-jnp.maximum(d2, 0) / (2 * gamma**2)) * mi[:, None])

    return jnp.sum(jax.lax.map(rows, (a, mask))) / (mask.sum() * b.shape[0])


def mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Biased MMD^2 between samples x [n, d] and y [m, d] with a Gaussian kernel of width g."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    g = jnp.float32(bandwidth)
    return float(_kernel_mean(x, x, g) + _kernel_mean(y, y, g) - 2 * _kernel_mean(x, y, g))


def sliced_wasserstein(
    x: np.ndarray, y: np.ndarray, *, num_projections: int = 200, seed: int = 0
) -> float:
    """Sliced 2-Wasserstein distance between x [n, d] and y [n, d] (equal sizes):
    sqrt(mean over random unit directions u of W2^2(x u, y u)), each 1D W2 from sorted
    projections. The directions are drawn from `seed`, so two calls compare alike."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(
            f"sliced_wasserstein needs samples of equal shape, got {x.shape}, {y.shape}"
        )
    u = np.random.default_rng(seed).standard_normal((x.shape[1], num_projections))
    u /= np.linalg.norm(u, axis=0, keepdims=True)
    px, py = np.sort(x @ u, axis=0), np.sort(y @ u, axis=0)
    return float(np.sqrt(np.mean((px - py) ** 2)))
