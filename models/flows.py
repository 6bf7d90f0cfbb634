"""Velocity fields for continuous normalizing flows (neural-ODE blocks).

`VelocityMLP` is the field of one JKO-iFlow block: an MLP `d -> width -> ... -> width -> d` with
Softplus(beta) activations, as in the official JKO-iFlow code (`FCnet`, beta = 20). The
time-independent variant ignores `t` (the official choice); the time-dependent variant
concatenates `t` to the input of every layer (FFJORD's "concat" layers).

Parameters are initialised like PyTorch's `nn.Linear` (weights and biases uniform in
`+-1/sqrt(fan_in)`), so a block starts from the same distribution of fields as the official code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _exp_neg_abs(z: Array) -> tuple[Array, Array]:
    u = jnp.exp(-jnp.abs(z))  # in (0, 1]: no overflow for any z
    return u, 1.0 + u


@jax.custom_jvp
def _logistic(z: Array) -> Array:
    u, one_plus_u = _exp_neg_abs(z)
    return jnp.where(z >= 0, 1.0, u) / one_plus_u


@_logistic.defjvp
def _logistic_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    s = _logistic(z)
    return s, s * (1.0 - s) * dz


@jax.custom_jvp
def _softplus(z: Array) -> Array:
    # max(z, 0) + log(1 + e^-|z|): log rather than log1p (the absolute error is below 1e-7, and
    # XLA's log1p costs twice as much on CPU). XLA shares e^-|z| with the logistic below.
    u, one_plus_u = _exp_neg_abs(z)
    return jnp.maximum(z, 0.0) + jnp.log(one_plus_u)


@_softplus.defjvp
def _softplus_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    # Explicit derivatives (logistic, and its derivative s (1 - s)) keep XLA from
    # differentiating through exp/log: fewer elementwise ops in the Hutchinson jvp and in the
    # backward pass through it.
    return _softplus(z), _logistic(z) * dz


def softplus_beta(x: Array, beta: float = 20.0) -> Array:
    """`log(1 + exp(beta x)) / beta` (PyTorch `nn.Softplus(beta)`), elementwise, any shape.

    PyTorch switches to the identity where `beta x > 20`; the difference is below `e^-20 / beta`.
    """
    return _softplus(beta * x) / beta


def torch_linear_bias_init(fan_in: int) -> Callable[..., Array]:
    """Bias initialiser of PyTorch's `nn.Linear`: uniform in `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`."""
    bound = 1.0 / jnp.sqrt(fan_in)

    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# PyTorch's kaiming_uniform(a=sqrt(5)) on the weight: uniform in +-1/sqrt(fan_in).
torch_linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class VelocityMLP(nn.Module):
    """The velocity field `f(t, x)` of one flow block.

    Attributes:
      dim: data dimension d (input and output width).
      width: hidden width (official: 128).
      depth: number of hidden layers (official: 3, i.e. d -> 128 -> 128 -> 128 -> d).
      beta: Softplus sharpness (official: 20).
      time_dependent: if True, `t` is concatenated to the input of every layer.
    """

    dim: int
    width: int = 128
    depth: int = 3
    beta: float = 20.0
    time_dependent: bool = False

    @nn.compact
    def __call__(self, t: Array | float, x: Array) -> Array:
        """`t`: scalar time; `x`: [B, dim] -> velocity [B, dim]."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"VelocityMLP expects x of shape [B, {self.dim}], got {x.shape}")
        h = x
        widths = [self.width] * self.depth + [self.dim]
        for i, out in enumerate(widths):
            if self.time_dependent:
                tt = jnp.broadcast_to(jnp.asarray(t, h.dtype), h.shape[:-1] + (1,))
                h = jnp.concatenate([h, tt], axis=-1)
            fan_in = h.shape[-1]
            h = nn.Dense(
                out,
                kernel_init=torch_linear_kernel_init,
                bias_init=torch_linear_bias_init(fan_in),
                name=f"dense_{i}",
            )(h)
            if i < self.depth:
                h = softplus_beta(h, self.beta)
        return h


def init_velocity(model: VelocityMLP, key: Array) -> Any:
    """Parameters of `model` for inputs of dimension `model.dim` (batch of one)."""
    return model.init(key, jnp.zeros(()), jnp.zeros((1, model.dim)))
