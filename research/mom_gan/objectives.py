"""GAN objectives and their median-of-means (MoM) versions.

A discriminator step sees a real batch [N, p] and a fake batch [M, p]. The real-data term is a
mean over the batch, of `softplus(-D(x))` (JS: the cross-entropy of calling x real) or of
`-D(x)` (Wasserstein critic). MoM replaces that mean by a median of block means, following the
public MoM-WGAN code: a fresh random partition of the batch into K blocks of
b = N // K points (the N - K b left over sit out), the mean of the term per block, and only the
block whose mean is the median (the (K // 2)-th smallest, the upper median for even K) is
back-propagated. The selection is exact and jittable: one forward pass over the batch, an argsort
of the K block means under `stop_gradient`, and a gather; the gradient is that of the chosen
block's mean alone.

The fake term and the generator loss are the usual ones: JS uses the non-saturating generator
loss softplus(-D(G(z))) (as the robust JS-GAN code: cross-entropy against "real"), the
Wasserstein objective -D(G(z)). The Wasserstein critic is kept Lipschitz by weight clipping
(`clip`) or a gradient penalty on random interpolates (`gp_weight`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

OBJECTIVES = ("js", "wasserstein")


def blocks_for_contamination(eps: float, batch_size: int) -> int:
    """The number of MoM blocks K for a batch at contamination eps: K > 2 x the expected
    outliers of a batch, K = 2 ceil(eps N) + 1 (at most N), so that more than half of the
    blocks are free of outliers whenever a batch holds at most its expected count. 1 (plain
    mean) at eps = 0."""
    return int(min(batch_size, 2 * math.ceil(eps * batch_size) + 1))


def random_blocks(key: jax.Array, batch_size: int, num_blocks: int) -> jax.Array:
    """A random partition of range(batch_size) into `num_blocks` blocks of equal size
    b = batch_size // num_blocks: [K, b] int32 indices, each index at most once."""
    if not 1 <= num_blocks <= batch_size:
        raise ValueError(f"need 1 <= num_blocks <= batch size, got {num_blocks}, {batch_size}")
    size = batch_size // num_blocks
    perm = jax.random.permutation(key, batch_size)
    return perm[: num_blocks * size].reshape(num_blocks, size)


def median_of_means(values: jax.Array, blocks: jax.Array) -> jax.Array:
    """values [N] -> the mean of values over the median block of `blocks` [K, b] (the block
    whose mean is the (K // 2)-th smallest). Differentiable: the gradient flows through the
    chosen block's mean only."""
    means = values[blocks].mean(axis=1)  # [K]
    chosen = jnp.argsort(jax.lax.stop_gradient(means))[means.shape[0] // 2]
    return means[chosen]


def real_term(per_sample: jax.Array, key: jax.Array, num_blocks: int) -> jax.Array:
    """The real-data term of a discriminator loss: the mean of `per_sample` [N] (num_blocks
    <= 1) or its median of means over a fresh random partition into `num_blocks` blocks."""
    if num_blocks <= 1:
        return per_sample.mean()
    return median_of_means(per_sample, random_blocks(key, per_sample.shape[0], num_blocks))


def discriminator_loss(
    objective: str, real_scores: jax.Array, fake_scores: jax.Array, key: jax.Array, num_blocks: int
) -> tuple[jax.Array, jax.Array]:
    """(loss to minimise, real-data term) for scores D(x) [N] and D(G(z)) [M]."""
    if objective == "js":
        real = real_term(jax.nn.softplus(-real_scores), key, num_blocks)
        return real + jax.nn.softplus(fake_scores).mean(), real
    real = real_term(-real_scores, key, num_blocks)
    return real + fake_scores.mean(), real


def generator_loss(objective: str, fake_scores: jax.Array) -> jax.Array:
    """The generator's loss for D(G(z)) [M]."""
    if objective == "js":
        return jax.nn.softplus(-fake_scores).mean()
    return -fake_scores.mean()


def gradient_penalty(score_fn, real: jax.Array, fake: jax.Array, key: jax.Array) -> jax.Array:
    """WGAN-GP's penalty: mean over random interpolates x of (||grad_x D(x)|| - 1)^2;
    real [N, p], fake [N, p]."""
    t = jax.random.uniform(key, (real.shape[0], 1), real.dtype)
    x = t * real + (1 - t) * fake
    grads = jax.grad(lambda x: score_fn(x).sum())(x)
    return jnp.mean((jnp.sqrt(jnp.sum(grads**2, axis=1) + 1e-12) - 1.0) ** 2)
