"""JKO-iFlow's per-block objective, step sizes, stopping rule and time reparameterization, and
the loss of the end-to-end trained baseline CNF.

Per block k (official code, with V(x) = ||x||^2 / 2 and the block integrated over [0, 1]):

    L_k = E[V(x(1))] - E[int_0^1 div f_k(x(t)) dt] + E[||x(1) - x(0)||^2] / (2 h_k)

which is, up to a constant, KL(T#p_{k-1} || N(0, I)) plus the W2 proximal term of one JKO step
of size h_k. The baseline stacks K blocks into one CNF trained by maximum likelihood with the
Hutchinson trace (FFJORD).

`JKOOptions` (with `ReparamOptions`) and `BaselineOptions` are the two methods' settings; their
defaults are the official ones (`experiments/configs/jko_iflow.py` builds `config.jko` and
`config.baseline` from them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from models.flows import VelocityMLP
from research.jko_iflow import ode
from research.jko_iflow.flow import block_field

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ReparamOptions:
    """Adaptive time reparameterization after the blocks are trained (`reparameterize`)."""

    rounds: int = 0  # rounds of new h_k + every block retrained; 0: off
    eta: float = 0.5
    h_max: float = 5.0
    iters_per_block: int = 100  # optimizer steps per block in each round


@dataclasses.dataclass(frozen=True)
class JKOOptions:
    """Block-by-block JKO-iFlow training (official JKO_rose.yaml, 250 instead of 10,000 iterations).

    `reparam` may be given as a mapping (a `config.jko.reparam` ConfigDict read back with
    `JKOOptions(**config.jko)`); it is stored as `ReparamOptions`.
    """

    num_blocks: int = 8
    h0: float = 0.25  # h_k = h0 * h_ratio^k: 0.25, 0.35, ..., 2.64 (official)
    h_ratio: float = 1.4
    step_sizes: tuple[float, ...] = ()  # explicit h_k, overrides h0 / h_ratio when non-empty
    num_substeps: int = 3  # RK4 steps per block in training (S)
    iters_per_block: int = 250  # optimizer steps per block
    batch_size: int = 2000
    lr: float = 1e-4
    grad_clip: float = 1.0  # global gradient norm clipping
    divergence: str = "hutchinson"  # or "exact" (ode.DIVERGENCES)
    stop_tol: float = 0.01  # stop adding blocks once E|x-T(x)|^2 / E|T(x)|^2 < stop_tol; 0: off
    reparam: ReparamOptions = dataclasses.field(default_factory=ReparamOptions)

    def __post_init__(self):
        if not isinstance(self.reparam, ReparamOptions):
            object.__setattr__(self, "reparam", ReparamOptions(**self.reparam))
        object.__setattr__(self, "step_sizes", tuple(float(h) for h in self.step_sizes))
        if self.divergence not in ode.DIVERGENCES:
            raise ValueError(
                f"jko.divergence={self.divergence!r}; expected one of {ode.DIVERGENCES}"
            )
        if self.step_sizes and len(self.step_sizes) < self.num_blocks:
            raise ValueError(
                f"jko.step_sizes has {len(self.step_sizes)} entries, fewer than "
                f"{self.num_blocks} blocks"
            )

    def block_step_sizes(self) -> list[float]:
        """h_k of each block: `step_sizes` when given, else `h0 * h_ratio^k` (`jko.step_sizes`)."""
        if self.step_sizes:
            return list(self.step_sizes)
        return step_sizes(self.h0, self.h_ratio, self.num_blocks)


@dataclasses.dataclass(frozen=True)
class BaselineOptions:
    """The end-to-end CNF baseline (`cnf_nll_loss`). It uses JKO-iFlow's batch size, clipping,
    RK4 sub-steps and divergence (`JKOOptions`), and as many blocks as JKO-iFlow ended with."""

    enabled: bool = True
    lr: float = 1e-4
    num_steps: int = 0  # 0: as many optimizer steps as JKO-iFlow took in total


def jko_block_loss(
    model: VelocityMLP,
    params: Any,
    x: Array,
    eps: Array,
    w2_weight: Array,
    *,
    num_steps: int,
    divergence: str = "hutchinson",
    unroll: int | bool = True,
) -> tuple[Array, dict[str, Array]]:
    """The JKO loss of one block on a batch.

    Args:
      x: [B, d] samples of p_{k-1} (data pushed through the finished blocks).
      eps: Hutchinson probes, [num_steps, B, d] (one per RK4 step) or [B, d]; ignored when
        `divergence == "exact"`.
      w2_weight: [B] per-sample weight of the movement term, `1 / (2 h_k)` (a batch leaf, so
        one compiled step serves every block whatever its h_k).
      num_steps: RK4 steps over [0, 1] (official: S = 3).

    Returns the scalar loss and its parts: `V`, `div` (E int div f), `w2` (the weighted
    movement term) and `movement` (E||x(1) - x(0)||^2).
    """
    field = block_field(model, params)
    z, int_div = ode.integrate_with_divergence(
        field, x, 0.0, 1.0, num_steps, method=divergence, eps=eps, unroll=unroll
    )
    v = jnp.mean(0.5 * jnp.sum(z**2, axis=-1))
    div = jnp.mean(int_div)
    move = jnp.sum((z - x) ** 2, axis=-1)
    w2 = jnp.mean(move * w2_weight)
    return v - div + w2, {"V": v, "div": div, "w2": w2, "movement": jnp.mean(move)}


def cnf_nll_loss(
    model: VelocityMLP,
    stacked_params: Any,
    x: Array,
    eps: Array,
    *,
    num_steps: int,
    divergence: str = "hutchinson",
    unroll: int | bool = True,
) -> tuple[Array, dict[str, Array]]:
    """Negative log-likelihood of the end-to-end CNF (K stacked blocks) on a batch.

    Args:
      stacked_params: the K blocks' parameters stacked on a leading axis (`lax.scan` over blocks).
      x: [B, d] data.
      eps: [K, num_steps, B, d] Hutchinson probes (ignored for `divergence == "exact"`).

    Returns mean NLL (nats) and `{"nll": same}`.
    """

    def one_block(z, inputs):
        params, e = inputs
        field = block_field(model, params)
        z, int_div = ode.integrate_with_divergence(
            field, z, 0.0, 1.0, num_steps, method=divergence, eps=e, unroll=unroll
        )
        return z, int_div

    z, int_divs = lax.scan(one_block, x, (stacked_params, eps))
    d = x.shape[-1]
    logp_z = -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * d * math.log(2 * math.pi)
    nll = jnp.mean(-(logp_z + jnp.sum(int_divs, axis=0)))
    return nll, {"nll": nll}


def step_sizes(h0: float, ratio: float, num_blocks: int) -> list[float]:
    """The official geometric schedule h_k = h0 * ratio^k (h0 = 0.25, ratio 1.4: 0.25 ... 2.64)."""
    if h0 <= 0 or ratio <= 0 or num_blocks < 1:
        raise ValueError(
            f"need h0 > 0, ratio > 0, num_blocks >= 1; got {h0}, {ratio}, {num_blocks}"
        )
    return [float(h0 * ratio**k) for k in range(num_blocks)]


def movement_ratio(x: np.ndarray | Array, tx: np.ndarray | Array) -> float:
    """The stopping statistic `E||x - T(x)||^2 / E||T(x)||^2` of a block T on samples x [N, d]."""
    x, tx = np.asarray(x, np.float64), np.asarray(tx, np.float64)
    return float(np.mean(np.sum((x - tx) ** 2, -1)) / np.mean(np.sum(tx**2, -1)))


def should_stop(x: np.ndarray | Array, tx: np.ndarray | Array, tol: float = 0.01) -> bool:
    """The official rule: no more blocks once the last one moves the data by under `tol`."""
    return movement_ratio(x, tx) < tol


def block_movements(trajectory: Sequence[np.ndarray | Array]) -> list[float]:
    """`a_k = E||x_k - x_{k-1}||` for each block of a trajectory `[x_0, x_1, ..., x_K]`."""
    traj = [np.asarray(t, np.float64) for t in trajectory]
    return [
        float(np.mean(np.linalg.norm(b - a, axis=-1)))
        for a, b in zip(traj[:-1], traj[1:], strict=True)
    ]


def reparameterize(
    h: Sequence[float], movements: Sequence[float], *, eta: float = 0.5, h_max: float = 5.0
) -> list[float]:
    """Adaptive time reparameterization: equalise the blocks' W2 movement.

    `h_k <- min(h_k + eta * (mean(a) * h_k / a_k - h_k), h_max)` with `a_k` the movement of
    block k (`block_movements`): blocks that moved more than average get a smaller step.
    """
    if len(h) != len(movements):
        raise ValueError(f"{len(h)} step sizes but {len(movements)} movements")
    a = np.asarray(movements, np.float64)
    if not np.all(np.isfinite(a) & (a > 0)):  # a NaN movement would give NaN step sizes
        raise ValueError(f"block movements must be finite and positive, got {list(a)}")
    mean_a = float(np.mean(a))
    return [
        float(min(hk + eta * (mean_a * hk / ak - hk), h_max)) for hk, ak in zip(h, a, strict=True)
    ]
