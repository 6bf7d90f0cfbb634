"""Huber's contamination model: n draws from (1 - eps) P + eps Q, and clean hold-out draws of P.

P (`clean`): "gaussian" N(0, I_p), or "mixture2d" (p = 2: eight Gaussians of std 0.2 on the
circle of radius 2). Q (`outliers`): "gaussian" N(shift 1_p, scale^2 I_p) (the robust
JS-GAN's Q with shift 5, scale 1), "cauchy" (a multivariate Cauchy: N(0, scale^2 I_p) divided
by sqrt(chi2_1), plus shift 1_p, as in the robust JS-GAN code), or "uniform" (the box
[shift - scale, shift + scale]^p). Every draw comes from a numpy Generator, so a sample is a
pure function of its seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

CLEAN = ("gaussian", "mixture2d")
OUTLIERS = ("gaussian", "cauchy", "uniform")
_MIXTURE_RADIUS, _MIXTURE_STD, _MIXTURE_MODES = 2.0, 0.2, 8


@dataclasses.dataclass(frozen=True)
class Contamination:
    """The distributions of one experiment (`config.contamination`)."""

    clean: str = "gaussian"
    outliers: str = "gaussian"
    shift: float = 5.0  # Q's centre is shift * 1_p
    scale: float = 1.0  # Q's std (gaussian), scale (cauchy) or half-width (uniform)

    def __post_init__(self):
        if self.clean not in CLEAN:
            raise ValueError(f"contamination.clean = {self.clean!r}: must be one of {CLEAN}")
        if self.outliers not in OUTLIERS:
            raise ValueError(
                f"contamination.outliers = {self.outliers!r}: must be one of {OUTLIERS}"
            )

    def check_dim(self, dim: int) -> None:
        if self.clean == "mixture2d" and dim != 2:
            raise ValueError(f"the mixture2d clean distribution is 2-dimensional, got p = {dim}")


def clean_moments(clean: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean [p] and covariance [p, p] of P."""
    if clean == "gaussian":
        return np.zeros(dim), np.eye(dim)
    # Equally spaced modes: E[r^2 cos^2] = r^2 / 2 per axis, plus the modes' own variance.
    return np.zeros(2), np.eye(2) * (_MIXTURE_RADIUS**2 / 2 + _MIXTURE_STD**2)


def sample_clean(rng: np.random.Generator, n: int, dim: int, clean: str) -> np.ndarray:
    """n draws of P: [n, p] float32."""
    if clean == "gaussian":
        return rng.standard_normal((n, dim)).astype(np.float32)
    angles = 2 * np.pi * rng.integers(0, _MIXTURE_MODES, n) / _MIXTURE_MODES
    centres = _MIXTURE_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return (centres + _MIXTURE_STD * rng.standard_normal((n, 2))).astype(np.float32)


def sample_outliers(rng: np.random.Generator, n: int, dim: int, c: Contamination) -> np.ndarray:
    """n draws of Q: [n, p] float32."""
    if c.outliers == "gaussian":
        x = c.scale * rng.standard_normal((n, dim))
    elif c.outliers == "cauchy":
        x = c.scale * rng.standard_normal((n, dim)) / np.sqrt(rng.chisquare(1, (n, 1)))
    else:
        x = rng.uniform(-c.scale, c.scale, (n, dim))
    return (x + c.shift).astype(np.float32)


def huber_sample(
    seed: int | Sequence[int], n: int, dim: int, eps: float, c: Contamination
) -> tuple[np.ndarray, np.ndarray]:
    """n i.i.d. draws of (1 - eps) P + eps Q: (x [n, p] float32, is_outlier [n] bool).

    `seed` seeds numpy's Generator (an int or a sequence of ints). Each point is an outlier
    independently with probability eps (so their count is Binomial(n, eps)), as in the robust
    JS-GAN code.
    """
    if not 0 <= eps < 0.5:
        raise ValueError(f"contamination fraction eps = {eps}: must be in [0, 0.5)")
    c.check_dim(dim)
    rng = np.random.default_rng(seed)
    is_outlier = rng.random(n) < eps
    x = sample_clean(rng, n, dim, c.clean)
    x[is_outlier] = sample_outliers(rng, int(is_outlier.sum()), dim, c)
    return x, is_outlier
