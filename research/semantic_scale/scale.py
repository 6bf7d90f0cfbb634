"""The semantic scale of a class: the volume its features span (the authors' geometric-metrics
code), its marginal effect in the number of samples, and the imbalance of scales across classes.

For a class with m feature vectors Z [m, p], mean-centred to Zc,

    S = 0.5 * log2 det(I_p + (d / m) Zc^T Zc),

the coding length of the features at distortion 1 / d (d = 1 by default). det(I_p + A^T A) =
det(I_m + A A^T), so the smaller of the two Gram matrices is factored, and the log-determinant
comes from a Cholesky factor (or slogdet) rather than `det`, which overflows for p in the
hundreds. `semantic_scale` is the analysis version (numpy, float64); `pool_scales` is the
version DSB learning runs inside the jitted step (jax, float32, masked to the filled part of a
fixed-size feature pool). Both agree to float32 precision (tests).

Features are L2-normalised first when `normalize` is set (the default of this codebase): the
scale then measures the spread of feature directions, comparable across classes and training
steps whatever the feature norm; without it d sets the unit of the features.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

LOG2 = float(np.log(2.0))


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows of [m, p] scaled to unit norm (zero rows stay zero), float64."""
    z = np.asarray(features, np.float64)
    norm = np.linalg.norm(z, axis=-1, keepdims=True)
    return z / np.maximum(norm, 1e-12)


def semantic_scale(features: np.ndarray, *, d: float = 1.0, normalize: bool = True) -> float:
    """S of one class from its features [m, p] (float64; m >= 1). One sample spans no volume:
    S = 0."""
    z = l2_normalize(features) if normalize else np.asarray(features, np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"semantic_scale needs features [m >= 1, p], got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("semantic_scale: the features hold NaN or inf")
    m = len(z)
    zc = z - z.mean(axis=0)
    gram = zc.T @ zc if z.shape[1] <= m else zc @ zc.T  # the smaller one: same determinant
    sign, logdet = np.linalg.slogdet(np.eye(len(gram)) + (d / m) * gram)
    assert sign > 0, "I + (d/m) Zc^T Zc is positive definite"
    return 0.5 * logdet / LOG2


def class_scales(
    features: np.ndarray, labels: np.ndarray, num_classes: int, **kwargs
) -> np.ndarray:
    """[num_classes] S of every class from features [N, p] and labels [N]; NaN for a class with
    no samples. kwargs: `semantic_scale`'s d and normalize."""
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        rows = features[labels == c]
        if len(rows):
            out[c] = semantic_scale(rows, **kwargs)
    return out


def marginal_effect(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    sizes: Sequence[int],
    *,
    draws: int = 5,
    seed: int = 0,
    **kwargs,
) -> np.ndarray:
    """[num_classes, len(sizes)] the mean S over `draws` random subsets of m = sizes[j] samples
    of each class (without replacement; NaN where a class has fewer than m). The paper's
    marginal effect: S grows quickly with the first samples and flattens."""
    rng = np.random.default_rng(seed)
    out = np.full((num_classes, len(sizes)), np.nan)
    for c in range(num_classes):
        rows = features[labels == c]
        for j, m in enumerate(sizes):
            if m <= len(rows):
                picks = [rows[rng.choice(len(rows), m, replace=False)] for _ in range(draws)]
                out[c, j] = np.mean([semantic_scale(p, **kwargs) for p in picks])
    return out


def scale_imbalance(scales: np.ndarray) -> dict[str, float]:
    """The imbalance of semantic scales across classes: the ratio of the largest to the smallest
    and the coefficient of variation (std / mean, ddof 0). Classes with NaN (no samples) or
    S = 0 (one sample) are left out: one sample spans no volume and would make the ratio
    infinite."""
    s = np.asarray(scales, np.float64)
    s = s[np.isfinite(s) & (s > 0)]
    if not len(s):
        return {"scale_ratio": float("nan"), "scale_cv": float("nan")}
    return {
        "scale_ratio": float(s.max() / s.min()),
        "scale_cv": float(s.std() / s.mean()),
    }


def pool_scales(
    features: jax.Array, counts: jax.Array, *, d: float = 1.0, normalize: bool = True
) -> jax.Array:
    """S per class from a feature pool, inside jit: features [C, Q, p] of which the first
    counts[c] rows of class c are filled (in any order), counts [C] int -> [C] float32.
    A class with fewer than 2 stored features has S = 0."""
    _, q, p = features.shape
    if normalize:
        features = features / jnp.maximum(jnp.linalg.norm(features, axis=-1, keepdims=True), 1e-12)

    def one(z, n):
        valid = (jnp.arange(q) < n)[:, None]
        m = jnp.maximum(n, 1).astype(z.dtype)
        zc = jnp.where(valid, z - jnp.sum(jnp.where(valid, z, 0.0), 0) / m, 0.0)
        gram = zc.T @ zc if p <= q else zc @ zc.T
        chol = cholesky(jnp.eye(len(gram), dtype=z.dtype) + (d / m) * gram)
        return jnp.sum(jnp.log(jnp.diagonal(chol))) / LOG2  # 0.5 log det = sum log diag(L)

    return jax.vmap(one)(features, counts)


def cholesky(a: jax.Array) -> jax.Array:
    """The lower Cholesky factor of a symmetric positive definite a [n, n], column by column in
    a `fori_loop` of plain jnp (n matrix-vector products).

    Not `jnp.linalg.cholesky`: on a CPU with several devices in one process (the tests' fake
    devices), its LAPACK call inside the data-parallel step deadlocked the step for n = 64 (the
    devices wait in the step's collectives while the call waits for a thread; n = 8 ran). For
    the pool's p x p matrices, every `dsb.every` steps, the loop costs nothing measurable
    (experiments/bench/semantic_scale.py)."""
    n = a.shape[-1]
    rows = jnp.arange(n)

    def column(j, lower):
        s = a[:, j] - lower @ lower[j]  # a_ij - sum_{k < j} L_ik L_jk (columns >= j are 0)
        diag = jnp.sqrt(s[j])
        return lower.at[:, j].set(jnp.where(rows > j, s / diag, jnp.where(rows == j, diag, 0.0)))

    return jax.lax.fori_loop(0, n, column, jnp.zeros_like(a))
