"""The classical location estimators the GANs are compared with: sample mean, coordinate-wise
median, geometric median (Weiszfeld), and the sample covariance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def sample_mean(x: np.ndarray) -> np.ndarray:
    """x [n, p] -> [p]."""
    return np.asarray(x, np.float64).mean(axis=0)


def coordinate_median(x: np.ndarray) -> np.ndarray:
    """x [n, p] -> [p], the median of each coordinate."""
    return np.median(np.asarray(x, np.float64), axis=0)


def sample_covariance(x: np.ndarray) -> np.ndarray:
    """x [n, p] -> [p, p] (ddof 1)."""
    return np.atleast_2d(np.cov(np.asarray(x, np.float64), rowvar=False))


@jax.jit
def _weiszfeld(x: jax.Array, start: jax.Array, tol: jax.Array, max_iters: int = 1000):
    """Weiszfeld iterations m <- sum_i w_i x_i / sum_i w_i, w_i = 1 / max(||x_i - m||, 1e-12),
    until the step is below tol * (1 + ||m||) or after max_iters; returns (m, iterations)."""

    def body(carry):
        m, _, it = carry
        w = 1.0 / jnp.maximum(jnp.linalg.norm(x - m, axis=1), 1e-12)
        new = (w @ x) / w.sum()
        return new, jnp.linalg.norm(new - m), it + 1

    def cond(carry):
        m, step, it = carry
        return (step > tol * (1 + jnp.linalg.norm(m))) & (it < max_iters)

    m, _, it = lax.while_loop(cond, body, (start, jnp.asarray(jnp.inf, x.dtype), 0))
    return m, it


def geometric_median(x: np.ndarray, *, tol: float = 1e-7) -> np.ndarray:
    """x [n, p] -> [p]: argmin_m sum_i ||x_i - m||, by Weiszfeld's algorithm from the
    coordinate-wise median (float32 iterations; the guard keeps a data point as iterate finite)."""
    x32 = jnp.asarray(x, jnp.float32)
    m, _ = _weiszfeld(x32, jnp.asarray(coordinate_median(x), jnp.float32), jnp.float32(tol))
    return np.asarray(m, np.float64)


CLASSICAL = {
    "mean": sample_mean,
    "coord_median": coordinate_median,
    "geo_median": geometric_median,
}
