"""Long-tailed classification losses and class weights, each a pure jnp function.

Per-example losses [B] (from logits [B, C] and int labels [B]) are reduced by
`weighted_mean`: sum_i w[y_i] l_i / sum_i w[y_i], PyTorch's `cross_entropy(weight=w)` rule,
which the LDAM-DRW code uses for every re-weighted loss (with all weights 1 it is the mean).

  cross_entropy                 softmax cross-entropy
  focal                         (1 - p_y)^gamma * CE (Lin et al. 2017; the LDAM code's form)
  ldam_logits -> cross_entropy  LDAM: s * (z - m_y at the true class), m_c ∝ n_c^(-1/4) with
                                max m = 0.5, s = 30, on cosine logits (Cao et al. 2019)
  adjusted_logits -> CE         logit adjustment, z + tau log pi (Menon et al. 2021), and
                                balanced softmax, z + log n (Ren et al. 2020): both shift the
                                logits by the log class prior, so at tau = 1 the two losses are
                                the same function (a per-example constant apart)

Class weights [C], normalised to mean 1 (sum C, as the LDAM code's `per_cls_weights`):
  effective_number_weights      (1 - beta) / (1 - beta^n_c) (Cui et al. 2019)
  scale_weights                 S_c^(-alpha), DSB learning's weights from semantic scales
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """[B] -log softmax(logits)[y]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def focal(logits: jax.Array, labels: jax.Array, gamma: float) -> jax.Array:
    """[B] (1 - p_y)^gamma * CE, p_y = exp(-CE)."""
    ce = cross_entropy(logits, labels)
    return (1.0 - jnp.exp(-ce)) ** gamma * ce


def weighted_mean(
    losses: jax.Array,
    labels: jax.Array,
    class_weights: jax.Array,
    axis_name: str | None = None,
) -> jax.Array:
    """sum_i w[y_i] l_i / sum_i w[y_i] for per-example losses [B] and weights [C].

    axis_name: inside a data-parallel step, the denominator is the devices' mean weight sum, so
    that the mean over devices of this value is the weighted mean over the global batch."""
    w = class_weights[labels]
    total = jnp.sum(w) if axis_name is None else jax.lax.pmean(jnp.sum(w), axis_name)
    return jnp.sum(w * losses) / total


def ldam_margins(counts: np.ndarray, max_margin: float = 0.5) -> np.ndarray:
    """[C] LDAM margins: n_c^(-1/4), scaled so the largest (the rarest class) is max_margin."""
    m = 1.0 / np.sqrt(np.sqrt(_positive_counts(counts)))
    return (m * (max_margin / m.max())).astype(np.float32)


def ldam_logits(
    logits: jax.Array, labels: jax.Array, margins: jax.Array, scale: float = 30.0
) -> jax.Array:
    """[B, C] s * (z - m_y e_y): the true class's logit lowered by its class margin."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return scale * (logits - onehot * margins[labels][:, None])


def log_prior(counts: np.ndarray) -> np.ndarray:
    """[C] log(n_c / N)."""
    n = _positive_counts(counts)
    return np.log(n / n.sum()).astype(np.float32)


def adjusted_logits(logits: jax.Array, log_prior: jax.Array, tau: float = 1.0) -> jax.Array:
    """[B, C] z + tau log pi: the logit-adjusted (tau) and balanced-softmax (tau = 1) losses
    are the cross-entropy of these; prediction uses the plain logits."""
    return logits + tau * log_prior


def effective_number_weights(counts: np.ndarray, beta: float) -> np.ndarray:
    """[C] (1 - beta) / (1 - beta^n_c) normalised to mean 1; beta = 0 gives all ones."""
    n = _positive_counts(counts)
    w = (1.0 - beta) / (1.0 - np.power(beta, n))
    return (w * len(w) / w.sum()).astype(np.float32)


def scale_weights(scales: jax.Array, alpha: float, floor: float) -> jax.Array:
    """[C] S_c^(-alpha) normalised to mean 1, S floored at `floor` x max S (a class with one
    stored feature has S = 0; the floor bounds its weight at floor^(-alpha) x the smallest)."""
    s = jnp.maximum(scales, floor * jnp.max(scales))
    s = jnp.maximum(s, 1e-12)  # an all-zero pool (before any push): equal weights
    w = s ** (-alpha)
    return w / jnp.mean(w)


def _positive_counts(counts: np.ndarray) -> np.ndarray:
    n = np.asarray(counts, np.float64)
    if n.ndim != 1 or (n < 1).any():
        raise ValueError(f"class counts must be a vector of positive counts, got {counts}")
    return n
