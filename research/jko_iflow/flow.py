"""A flow made of neural-ODE blocks: forward maps, inverse, log-likelihood, trajectories.

Block k integrates `dx/dt = f_k(t, x)` over t in [0, 1] (`f_k = model.apply(params_k, t, x)`);
the flow is the composition of its blocks, data -> noise. `blocks` is a list of parameter
pytrees, one per block, all for the same `model`.

Two ways to integrate a block:
- `"rk4"`: `num_steps` fixed RK4 steps, the discretisation used in training (and, with one step,
  the official code's test-NLL evaluation);
- `"dopri5"`: adaptive diffrax Dopri5 with tolerances `rtol`, `atol` (the official code's
  inversion and sampling; an accurate likelihood of the continuous model).

`ModelOptions` (`config.model`) builds the block field `model`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from models.flows import VelocityMLP
from research.jko_iflow import ode

Array = jax.Array
SOLVERS = ("rk4", "dopri5")


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The velocity field of every block (`config.model`); defaults: `VelocityMLP`'s, the
    official code's `FCnet` (width 128, depth 3, Softplus beta 20, time-independent)."""

    width: int = VelocityMLP.width
    depth: int = VelocityMLP.depth
    beta: float = VelocityMLP.beta
    time_dependent: bool = VelocityMLP.time_dependent


def make_model(options: ModelOptions, dim: int) -> VelocityMLP:
    """The field for data of dimension `dim`: (t, x [B, dim]) -> [B, dim]."""
    return VelocityMLP(
        dim,
        width=options.width,
        depth=options.depth,
        beta=options.beta,
        time_dependent=options.time_dependent,
    )


@dataclasses.dataclass(frozen=True)
class Solver:
    """How to integrate one block: `kind` in SOLVERS; `num_steps` for rk4; tolerances for dopri5."""

    kind: str = "dopri5"
    num_steps: int = 3
    rtol: float = 1e-5
    atol: float = 1e-5

    def __post_init__(self):
        if self.kind not in SOLVERS:
            raise ValueError(f"unknown solver {self.kind!r}; expected one of {SOLVERS}")


def block_field(model: VelocityMLP, params: Any) -> ode.Field:
    """The velocity field `(t, x [B, d]) -> [B, d]` of one block."""
    return lambda t, x: model.apply(params, t, x)


@functools.partial(jax.jit, static_argnames=("model", "solver", "reverse"))
def block_map(
    model: VelocityMLP, params: Any, x: Array, *, solver: Solver, reverse: bool = False
) -> Array:
    """Pushes `x` [B, d] through one block (t: 0 -> 1), or back (1 -> 0) with `reverse`."""
    field = block_field(model, params)
    t0, t1 = (1.0, 0.0) if reverse else (0.0, 1.0)
    if solver.kind == "rk4":
        return ode.rk4(field, x, t0, t1, solver.num_steps)
    return ode.odeint_adaptive(field, x, t0, t1, rtol=solver.rtol, atol=solver.atol)


@functools.partial(jax.jit, static_argnames=("model", "solver"))
def block_map_with_divergence(
    model: VelocityMLP, params: Any, x: Array, *, solver: Solver
) -> tuple[Array, Array]:
    """`(T(x) [B, d], int_0^1 div f [B])` with the exact divergence."""
    field = block_field(model, params)
    if solver.kind == "rk4":
        return ode.integrate_with_divergence(field, x, 0.0, 1.0, solver.num_steps, method="exact")
    return ode.odeint_adaptive_with_divergence(
        field, x, 0.0, 1.0, rtol=solver.rtol, atol=solver.atol
    )


def _chunked(fn, x: np.ndarray | Array, chunk: int):
    """Applies `fn` to row chunks of `x` and concatenates every output along axis 0."""
    outs = [fn(jnp.asarray(x[i : i + chunk])) for i in range(0, len(x), chunk)]
    return jax.tree.map(lambda *o: jnp.concatenate(o, axis=0), *outs)


def flow_forward(
    model: VelocityMLP,
    blocks: Sequence[Any],
    x: np.ndarray | Array,
    *,
    solver: Solver,
    chunk: int = 20000,
) -> list[Array]:
    """The trajectory through the blocks: `[x, T_1(x), T_2(T_1(x)), ...]`, each [B, d]."""
    traj = [jnp.asarray(x)]
    for params in blocks:
        step = lambda z, p=params: block_map(model, p, z, solver=solver)
        traj.append(_chunked(step, traj[-1], chunk))
    return traj


def flow_inverse(
    model: VelocityMLP,
    blocks: Sequence[Any],
    z: np.ndarray | Array,
    *,
    solver: Solver,
    chunk: int = 20000,
) -> list[Array]:
    """Backwards through the blocks, last to first: `[z, T_K^-1(z), ..., x]`, each [B, d]."""
    traj = [jnp.asarray(z)]
    for params in reversed(blocks):
        step = lambda y, p=params: block_map(model, p, y, solver=solver, reverse=True)
        traj.append(_chunked(step, traj[-1], chunk))
    return traj


def standard_normal_logpdf(z: Array) -> Array:
    """log N(z; 0, I) per row: z [B, d] -> [B]."""
    d = z.shape[-1]
    return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * d * math.log(2 * math.pi)


def log_prob(
    model: VelocityMLP,
    blocks: Sequence[Any],
    x: np.ndarray | Array,
    *,
    solver: Solver,
    chunk: int = 10000,
) -> Array:
    """log p(x) per row, x [B, d] -> [B]: `log N(T(x)) + sum_k int div f_k` (exact traces)."""

    def one_chunk(xc):
        total = jnp.zeros(xc.shape[0], xc.dtype)
        for params in blocks:
            xc, div = block_map_with_divergence(model, params, xc, solver=solver)
            total = total + div
        return standard_normal_logpdf(xc) + total

    return _chunked(one_chunk, x, chunk)


def sample(
    model: VelocityMLP,
    blocks: Sequence[Any],
    key: Array,
    num: int,
    *,
    solver: Solver,
    chunk: int = 20000,
) -> Array:
    """`num` samples of the flow: z ~ N(0, I) pushed backwards through all blocks. [num, d]."""
    z = jax.random.normal(key, (num, model.dim))
    return flow_inverse(model, blocks, z, solver=solver, chunk=chunk)[-1]


def inversion_error(
    model: VelocityMLP,
    blocks: Sequence[Any],
    x: np.ndarray | Array,
    *,
    solver: Solver,
) -> dict[str, float]:
    """Forward through all blocks then backward; errors of the round trip x -> z -> x'.

    Returns max |x - x'| over all entries, the RMS of ||x - x'|| over rows, and the official
    code's figure `0.5 * mean ||x - x'||^2`.
    """
    x = jnp.asarray(x)
    z = flow_forward(model, blocks, x, solver=solver)[-1]
    back = flow_inverse(model, blocks, z, solver=solver)[-1]
    err = np.asarray(back - x, np.float64)
    sq = np.sum(err**2, axis=-1)
    return {
        "max_abs": float(np.max(np.abs(err))),
        "rms": float(np.sqrt(np.mean(sq))),
        "half_mse": float(0.5 * np.mean(sq)),
    }
