"""ODE integration and divergence for continuous normalizing flows.

Conventions: a field is `f(t, x) -> dx/dt` on a batch, `x: [B, d]`, and acts on each row
independently (as an MLP does), so the divergence of a row only depends on that row.

- `rk4`: fixed-step classic Runge-Kutta 4 over a pytree state, as a `lax.scan` (training,
  pushing data, the official evaluation with one step per block).
- `divergence_exact`: trace of the Jacobian from `d` forward-mode products (low dimensions).
- `divergence_hutchinson`: `e^T (df/dx) e` from one `jax.jvp` (unbiased for E[e e^T] = I).
- `integrate_with_divergence`: RK4 on the augmented state `(x, int_0^t div f)`.
- `odeint_adaptive`: diffrax Dopri5 with a PID step-size controller (inversion, sampling,
  accurate likelihoods); integrates backwards when `t1 < t0`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import optimistix
from jax import lax

Array = jax.Array
Field = Callable[[Array, Array], Array]  # (t, x [B, d]) -> [B, d]

DIVERGENCES = ("exact", "hutchinson")


def rk4(
    f: Callable[..., Any],
    y0: Any,
    t0: float,
    t1: float,
    num_steps: int,
    *,
    step_inputs: Any = None,
    unroll: int | bool = True,
) -> Any:
    """Integrates `dy/dt = f(t, y)` from `t0` to `t1` with `num_steps` classic RK4 steps.

    `y0` is any pytree of arrays; `f` returns a pytree of the same structure. The steps run in a
    `lax.scan` carrying the state. With `step_inputs` (a pytree with leading axis `num_steps`)
    the field is called as `f(t, y, inputs_of_this_step)`, e.g. a fresh Hutchinson probe per
    step. `unroll` is passed to the scan: unrolling the few steps of a block lets XLA schedule
    all stages of the backward pass together, which is faster on CPU. Returns the state at `t1`.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = (t1 - t0) / num_steps
    fn = f if step_inputs is not None else (lambda t, y, _: f(t, y))

    def axpy(a, x, y):
        return jax.tree.map(lambda xi, yi: yi + a * xi, x, y)

    def step(y, inputs):
        i, extra = inputs
        t = t0 + i * dt
        k1 = fn(t, y, extra)
        k2 = fn(t + dt / 2, axpy(dt / 2, k1, y), extra)
        k3 = fn(t + dt / 2, axpy(dt / 2, k2, y), extra)
        k4 = fn(t + dt, axpy(dt, k3, y), extra)
        incr = jax.tree.map(lambda a, b, c, d: (a + 2 * b + 2 * c + d) * (dt / 6), k1, k2, k3, k4)
        return jax.tree.map(jnp.add, y, incr), None

    xs = (jnp.arange(num_steps, dtype=jnp.float32), step_inputs)
    y, _ = lax.scan(step, y0, xs, length=num_steps, unroll=unroll)
    return y


def divergence_exact(fn: Callable[[Array], Array], x: Array) -> tuple[Array, Array]:
    """`fn(x)` and the exact divergence `tr(d fn / dx)` per row.

    `fn`: [B, d] -> [B, d], row-wise. Costs `d` Jacobian-vector products (one per basis vector,
    batched with `vmap`), so it is meant for low dimensions. Returns ([B, d], [B]).
    """
    d = x.shape[-1]
    basis = jnp.eye(d, dtype=x.dtype)

    def column(e):  # J e for every row at once: tangent e broadcast over the batch
        return jax.jvp(fn, (x,), (jnp.broadcast_to(e, x.shape),))

    values, jac_cols = jax.vmap(column, out_axes=(None, 0))(basis)  # jac_cols: [d, B, d]
    div = jnp.einsum("ibi->b", jac_cols)
    return values, div


def divergence_hutchinson(
    fn: Callable[[Array], Array], x: Array, eps: Array
) -> tuple[Array, Array]:
    """`fn(x)` and Hutchinson's estimate `e^T (d fn / dx) e` per row from one `jax.jvp`.

    `eps`: [B, d] probe with E[e e^T] = I (Gaussian or Rademacher). Unbiased for the exact
    divergence. (The official code uses the finite difference `e . (f(x + s e) - f(x)) / s`;
    the jvp is exact and costs the same.) Returns ([B, d], [B]).
    """
    values, jv = jax.jvp(fn, (x,), (eps,))
    return values, jnp.sum(jv * eps, axis=-1)


def field_and_divergence(
    field: Field, t: Array, x: Array, *, method: str, eps: Array | None = None
) -> tuple[Array, Array]:
    """`(field(t, x), div_x field(t, x))` with `method` in DIVERGENCES; `eps` for Hutchinson."""
    fn = lambda z: field(t, z)
    if method == "exact":
        return divergence_exact(fn, x)
    if method == "hutchinson":
        if eps is None:
            raise ValueError("the Hutchinson divergence needs a probe `eps` of shape [B, d]")
        return divergence_hutchinson(fn, x, eps)
    raise ValueError(f"unknown divergence method {method!r}; expected one of {DIVERGENCES}")


def integrate_with_divergence(
    field: Field,
    x0: Array,
    t0: float,
    t1: float,
    num_steps: int,
    *,
    method: str = "exact",
    eps: Array | None = None,
    unroll: int | bool = True,
) -> tuple[Array, Array]:
    """RK4 on `(x, l)` with `dx/dt = f(t, x)`, `dl/dt = div f(t, x)`, `l(t0) = 0`.

    `x0`: [B, d]. With `method="hutchinson"`, `eps` is one probe [B, d] used at every stage, or
    [num_steps, B, d]: one probe per RK4 step, fixed over its four stages (the official code
    draws one probe per sub-interval). Returns `(x(t1) [B, d], int_{t0}^{t1} div f [B])`; the
    change of log-density along the path is minus the latter.
    """
    per_step = eps is not None and eps.ndim == x0.ndim + 1
    if per_step and eps.shape[0] != num_steps:
        raise ValueError(f"eps has {eps.shape[0]} probes on its leading axis, expected {num_steps}")

    def aug(t, state, e):
        x, _ = state
        return field_and_divergence(field, t, x, method=method, eps=e if per_step else eps)

    zero = jnp.zeros_like(x0[..., 0])  # derived from x0: same sharding type under shard_map
    inputs = eps if per_step else jnp.zeros((num_steps,), x0.dtype)
    return rk4(aug, (x0, zero), t0, t1, num_steps, step_inputs=inputs, unroll=unroll)


def odeint_adaptive(
    f: Callable[[Array, Any], Any],
    y0: Any,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
) -> Any:
    """Integrates `dy/dt = f(t, y)` from `t0` to `t1` with diffrax Dopri5 and a PID controller.

    `y0` is any pytree (e.g. `x: [B, d]`, or `(x, logdet)`); all rows share the step sizes (as
    in a batched torchdiffeq solve), but the error is controlled in the max norm, so every entry
    meets the tolerance (an RMS norm over the batch would let a few rows' errors grow with the
    batch size).
    `t1 < t0` integrates backwards in time (the inverse of the flow map). Returns `y(t1)`.
    Raises (through diffrax) if `max_steps` is exceeded.
    """
    term = diffrax.ODETerm(lambda t, y, args: f(t, y))
    sol = diffrax.diffeqsolve(
        term,
        diffrax.Dopri5(),
        t0=t0,
        t1=t1,
        dt0=None,
        y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, norm=optimistix.max_norm),
        max_steps=max_steps,
        saveat=diffrax.SaveAt(t1=True),
    )
    return jax.tree.map(lambda y: y[0], sol.ys)


def odeint_adaptive_with_divergence(
    field: Field,
    x0: Array,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
) -> tuple[Array, Array]:
    """Dopri5 on `(x, l)` with the exact divergence. Returns `(x(t1), int_{t0}^{t1} div f)`."""

    def aug(t, state):
        x, _ = state
        return field_and_divergence(field, t, x, method="exact")

    zero = jnp.zeros_like(x0[..., 0])  # derived from x0: same sharding type under shard_map
    return odeint_adaptive(aug, (x0, zero), t0, t1, rtol=rtol, atol=atol, max_steps=max_steps)
