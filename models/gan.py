"""GAN networks for distribution estimation: an MLP discriminator and three generators.

- `Discriminator`: x [B, p] -> logits (or critic values) [B]; hidden widths and activation
  configurable, Xavier-normal weights and zero biases (the robust JS-GAN code's init).
- `MLPGenerator`: a ReLU MLP z [B, latent] -> x [B, p], for estimating a whole distribution.
- `LocationGenerator`: G(z) = z + b, the parametric family N(b, I) of mean estimation.
- `LocationScaleGenerator`: G(z) = z A^T + b, the family N(b, A A^T) of mean and covariance
  estimation (A starts at the identity).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "relu": nn.relu,
    "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=0.2),
    "sigmoid": nn.sigmoid,
}


class Discriminator(nn.Module):
    """x [B, p] -> scores [B]: Dense(h_1) -> act -> ... -> Dense(h_k) -> act -> Dense(1)."""

    hidden: Sequence[int] = (20,)
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        init = nn.initializers.xavier_normal()
        for width in self.hidden:
            x = act(nn.Dense(width, kernel_init=init)(x))
        return nn.Dense(1, kernel_init=init)(x)[:, 0]


class MLPGenerator(nn.Module):
    """z [B, latent] -> x [B, out_dim] through ReLU hidden layers."""

    out_dim: int
    hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        for width in self.hidden:
            z = nn.relu(nn.Dense(width)(z))
        return nn.Dense(self.out_dim)(z)


class LocationGenerator(nn.Module):
    """z [B, p] -> z + b; the parameter `bias` [p] is the location estimate."""

    dim: int

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        return z + self.param("bias", nn.initializers.zeros, (self.dim,))


class LocationScaleGenerator(nn.Module):
    """z [B, p] -> z A^T + b; `bias` [p] estimates the mean, A A^T (`scale` A [p, p]) the
    covariance."""

    dim: int

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        scale = self.param("scale", lambda key, shape: jnp.eye(shape[0]), (self.dim, self.dim))
        return z @ scale.T + self.param("bias", nn.initializers.zeros, (self.dim,))
