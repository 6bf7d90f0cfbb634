"""Anderson acceleration (type II) with an energy safeguard, as pure functions over pytrees.

Used by amm_nrr (Yao et al., "Fast and Robust Non-Rigid Registration Using Accelerated
Majorization-Minimization", TPAMI 2023) and by anything else that iterates a fixed-point map
`x -> T(x)`. Everything here is jit- and `lax.while_loop`-compatible: the history lives in
fixed-size circular buffers, unused slots are masked, so all shapes are static.

Two layers:

* `anderson_init` / `anderson_update` / `anderson_reset`: the bare accelerator. Given the current
  iterate `x_k` and its image `g_k = T(x_k)` it returns the extrapolated point

      f_k       = g_k - x_k                                  (residual)
      dX, dF    = last m differences x_i - x_{i-1}, f_i - f_{i-1}, each column pair divided by
                  ||f_i - f_{i-1}|| (the "normalised differences" of the authors' C++ code)
      gamma     = argmin ||f_k - dF gamma||^2 + lam * s * ||gamma||^2,   s = mean diag(dF^T dF)
      x_{k+1}   = g_k - (dX + dF) gamma                      (= g_k - dG gamma)

  solved through the m x m normal equations (Tikhonov-regularised, scaled to the Gram matrix) by
  Cholesky.
  With an empty history `x_{k+1} = g_k`, the plain step.

* `anderson_mm`: the safeguarded driver for majorization-minimization, see its docstring for the
  exact accept / reject rule. One map evaluation and one energy evaluation per iteration.

Pytrees are flattened with `jax.flatten_util.ravel_pytree`; mixed-precision leaves are promoted to
a common dtype by it. float32 and float64 both work (float64 under `with jax.enable_x64(True):`,
the context manager that replaced `jax.experimental.enable_x64` in new jax).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

PyTree = Any

# Default Tikhonov weight, relative to the mean diagonal of the Gram matrix of the normalised
# residual differences (which is 1 for a full history). The normal equations square the
# condition number, so the floor has to sit above the working precision: float32 needs ~1e-6.
_DEFAULT_REG = {jnp.dtype(jnp.float32): 1e-6, jnp.dtype(jnp.float64): 1e-10}


def default_regularization(dtype: Any) -> float:
    """The Tikhonov weight used when `regularization=None`: 1e-6 (float32), 1e-10 (float64)."""
    return _DEFAULT_REG.get(jnp.dtype(dtype), 1e-6)


class AndersonState(NamedTuple):
    """History of the accelerator; a pytree of arrays, with n = number of scalars in x.

    dx: [m, n] normalised iterate differences (x_i - x_{i-1}) / ||f_i - f_{i-1}||, circular.
    df: [m, n] normalised residual differences (f_i - f_{i-1}) / ||f_i - f_{i-1}||, circular.
    prev_x: [n] the previous iterate x_{k-1} (flattened).
    prev_f: [n] its residual f_{k-1} = g(x_{k-1}) - x_{k-1}.
    count: [] int32, number of (x, g(x)) pairs seen since the last reset. The difference made at
      pair c (c >= 1, counting from 0) is stored in slot (c - 1) % m; min(count - 1, m) are valid.
    """

    dx: jax.Array
    df: jax.Array
    prev_x: jax.Array
    prev_f: jax.Array
    count: jax.Array

    @property
    def m(self) -> int:
        return self.dx.shape[0]


def anderson_init(x0: PyTree, m: int = 5) -> AndersonState:
    """Empty history of depth `m` for iterates shaped like the pytree `x0` (only shapes used)."""
    if m < 1:
        raise ValueError(f"anderson_init: history m must be >= 1, got m={m}")
    flat, _ = ravel_pytree(x0)
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        raise ValueError(f"anderson_init: x0 must hold floating arrays, got dtype {flat.dtype}")
    n = flat.shape[0]
    zeros = jnp.zeros((m, n), flat.dtype)
    return AndersonState(
        dx=zeros,
        df=zeros,
        prev_x=jnp.zeros((n,), flat.dtype),
        prev_f=jnp.zeros((n,), flat.dtype),
        count=jnp.zeros((), jnp.int32),
    )


def anderson_reset(state: AndersonState) -> AndersonState:
    """Forgets the history (buffers kept, masked out); the next update is a plain step."""
    return state._replace(count=jnp.zeros((), jnp.int32))


def _flat_update(
    state: AndersonState, x: jax.Array, gx: jax.Array, regularization: Any
) -> tuple[jax.Array, AndersonState]:
    """`anderson_update` on flat [n] vectors."""
    m = state.m
    f = gx - x
    count = state.count
    has_prev = count > 0

    # New difference pair, normalised by the residual difference's norm (as the authors' code does,
    # which keeps the Gram matrix's diagonal at 1 and makes the regulariser scale-free).
    d_x = x - state.prev_x
    d_f = f - state.prev_f
    scale = jnp.linalg.norm(d_f)
    tiny = jnp.finfo(x.dtype).tiny
    inv = jnp.where(scale > tiny, 1.0 / jnp.maximum(scale, tiny), 0.0).astype(x.dtype)
    slot = jnp.maximum(count - 1, 0) % m
    dx = jnp.where(has_prev, state.dx.at[slot].set(d_x * inv), state.dx)
    df = jnp.where(has_prev, state.df.at[slot].set(d_f * inv), state.df)

    # Small regularised least squares  min_gamma ||f - dF gamma||^2 + lam s ||gamma||^2  over the
    # valid slots; masked slots get an identity row/column and a zero right-hand side -> gamma = 0.
    n_valid = jnp.minimum(count, m)
    valid = jnp.arange(m) < n_valid
    both = valid[:, None] & valid[None, :]
    gram = jnp.where(both, df @ df.T, 0.0)
    diag = jnp.diagonal(gram)
    s = jnp.sum(diag) / jnp.maximum(n_valid, 1).astype(x.dtype)
    s = jnp.where(s > 0, s, 1.0)
    lam = jnp.asarray(regularization, x.dtype)
    gram = gram + jnp.diag(jnp.where(valid, lam * s, 1.0).astype(x.dtype))
    rhs = jnp.where(valid, df @ f, 0.0)
    # SPD for lam > 0: Cholesky (cheaper to compile and run than a pivoted LU).
    chol = jnp.linalg.cholesky(gram)
    gamma = jax.scipy.linalg.cho_solve((chol, True), rhs)
    # A singular system (lam = 0 with repeated differences) gives non-finite gamma: take the plain
    # step rather than propagate NaNs.
    gamma = jnp.where(jnp.all(jnp.isfinite(gamma)), gamma, 0.0)
    x_next = gx - (dx + df).T @ gamma

    new_state = AndersonState(dx=dx, df=df, prev_x=x, prev_f=f, count=count + 1)
    return x_next, new_state


def anderson_update(
    state: AndersonState, x: PyTree, gx: PyTree, *, regularization: float | None = None
) -> tuple[PyTree, AndersonState]:
    """One Anderson (type II) step from the iterate `x` and its image `gx = T(x)`.

    Args:
      state: history from `anderson_init` / a previous update; dx, df: [m, n].
      x: current iterate x_k, a pytree with n scalars in total.
      gx: T(x_k), same structure as `x`.
      regularization: Tikhonov weight lam relative to the mean diagonal of the Gram matrix;
        None -> `default_regularization(dtype)`. 0 gives the unregularised least squares.

    Returns:
      (x_next, new_state): x_next is a pytree like `x`,
      x_next = g_k - (dX + dF) gamma (see the module docstring); with no history x_next = gx.
    """
    xf, unravel = ravel_pytree(x)
    gf, _ = ravel_pytree(gx)
    if xf.shape != state.prev_x.shape or gf.shape != xf.shape:
        raise ValueError(
            f"anderson_update: x has {xf.shape[0]} scalars and gx {gf.shape[0]}, but the state "
            f"was built for {state.prev_x.shape[0]}"
        )
    if regularization is None:
        regularization = default_regularization(state.prev_x.dtype)
    x_next, new_state = _flat_update(
        state, xf.astype(state.prev_x.dtype), gf.astype(state.prev_x.dtype), regularization
    )
    return unravel(x_next), new_state


class AndersonInfo(NamedTuple):
    """What `anderson_mm` reports (all arrays; scalars are 0-d).

    iterations: int32, number of iterations run = calls of the map (and of the energy).
    energy: energy of the returned point (the last accepted one).
    residual: max |T(x) - x| (or `residual_fn`; with stop_on="step" the step to the next
      iterate) at the returned point.
    converged: bool, residual < tol was reached.
    accepted: int32, extrapolated (Anderson) points that passed the energy test.
    rejected: int32, extrapolated points that failed it (each costs one iteration).
    energy_trace: [max_iter] energy of the last accepted point after each iteration; padded
      with the final value after the loop stops. Non-increasing for a genuine MM map.
    candidate_trace: [max_iter] energy of the point evaluated in each iteration (accepted or
      not); padded with NaN.
    """

    iterations: jax.Array
    energy: jax.Array
    residual: jax.Array
    converged: jax.Array
    accepted: jax.Array
    rejected: jax.Array
    energy_trace: jax.Array
    candidate_trace: jax.Array


class _Carry(NamedTuple):
    k: jax.Array  # iterations done
    x: jax.Array  # [n] the point to evaluate next (candidate)
    extrapolated: jax.Array  # bool, x came from a non-trivial Anderson step
    force: jax.Array  # bool, accept x whatever its energy (first point, or after a rejection)
    x_acc: jax.Array  # [n] last accepted point
    g_acc: jax.Array  # [n] T(x_acc)
    e_acc: jax.Array  # E(x_acc)
    residual: jax.Array  # max |g_acc - x_acc|
    aa: AndersonState
    accepted: jax.Array
    rejected: jax.Array
    trace: jax.Array  # [max_iter]
    cand_trace: jax.Array  # [max_iter]
    done: jax.Array
    aux: Any  # the caller's state threaded through step_fn (None without)


def anderson_mm(
    step_fn: Callable[[PyTree], Any],
    energy_fn: Callable[[PyTree], jax.Array] | None,
    x0: PyTree,
    *,
    m: int = 5,
    max_iter: int = 100,
    tol: float = 1e-5,
    regularization: float | None = None,
    use_aa: bool = True,
    safeguard: bool = True,
    residual_fn: Callable[[PyTree, PyTree], jax.Array] | None = None,
    stop_on: str = "residual",
    aux: PyTree = None,
) -> tuple[PyTree, AndersonInfo] | tuple[PyTree, AndersonInfo, PyTree]:
    """Safeguarded Anderson-accelerated majorization-minimization, in one `lax.while_loop`.

    Args:
      step_fn: the MM map x -> T(x) (x a pytree like `x0`). If `energy_fn` is None, step_fn must
        return the pair (T(x), E(x)): the fused form, for problems where the energy and the
        surrogate share work (registration: one closest-point search of x gives both E(x) and the
        weights of the surrogate whose minimiser is T(x)).
      energy_fn: x -> E(x), a scalar; or None (fused step_fn, see above).
      x0: initial point, a pytree of floating arrays (n scalars in total).
      m: Anderson history depth (static).
      max_iter: iteration cap (static; the traces have this length).
      tol: stop when max |T(x) - x| < tol at an accepted point x.
      regularization: Tikhonov weight of the Anderson least squares (see `anderson_update`).
      use_aa: False runs the plain MM iteration x_{k+1} = T(x_k) through the same loop (the
        baseline, with identical cost accounting).
      safeguard: False accepts every Anderson point ("raw AA"), for comparison only.
      residual_fn: (x, T(x)) -> scalar (pytrees like x0), the residual compared with `tol`;
        None -> max |T(x) - x| over all scalars. Registration passes the largest vertex
        displacement, which is what the authors' stopping rule measures.
      stop_on: what `residual_fn` (or max |.|) measures at an accepted point x: "residual"
        compares x with T(x) (the MM residual); "step" compares x with the next iterate, the
        Anderson point extrapolated from (x, T(x)) (T(x) itself for the plain iteration, where
        both rules agree), i.e. the change between consecutive iterates, which is the rule of
        the authors' registration code (AMM_NRR `DoNonRigid`: |curV - prevV| after the AA step).
      aux: None, or a pytree threaded through every evaluation (accepted or not), e.g. a cache
        that makes T and E cheaper but must not change them: then step_fn(x, aux) returns
        (T(x), E(x), new_aux) (fused form, energy_fn None) and the result gains the final aux.

    Returns:
      (x, info): x is the last accepted point (pytree like x0), info an `AndersonInfo`;
      (x, info, aux) when `aux` is given.

    Semantics. Each iteration evaluates exactly one point y, calling T(y) once and E(y) once:
      1. Let E_acc be the energy of the last accepted point x_acc (+inf before the first).
      2. y is accepted if it is the first point, or the point right after a rejection, or
         E(y) <= E_acc (NaN fails). Then x_acc = y, E_acc = E(y), the history takes the pair
         (y, T(y)), and the next point is the Anderson extrapolation from it (T(y) itself while
         the history has no difference yet, i.e. right after a reset).
      3. Otherwise (the Anderson point raised the true energy) y is discarded, the history is
         reset, and the next point is T(x_acc), the plain MM output of the last accepted point,
         which was already computed; it is accepted unconditionally in the next iteration, since
         the MM property gives E(T(x_acc)) <= E(x_acc) without evaluating it now.
      4. Stop when max |T(x_acc) - x_acc| < tol for a freshly accepted x_acc (which for the plain
         iteration is max |x_{k+1} - x_k|; stop_on="step": max |x_next - x_acc| with x_next the
         next point to evaluate), or after max_iter iterations, or as soon as a point is
         accepted with a NaN or infinite energy (only a forced acceptance can do that; nothing
         after it can be trusted, and the energy trace shows where it happened).
    This is the rule of the authors' C++ code (revert to the MM output, accept the next step
    unconditionally). Resetting at a change of the MM parameters (nu) is the caller's business:
    start a new `anderson_mm` per stage. If step_fn is not a true MM map, the forced acceptance
    in 3 can raise the energy; the candidate trace shows it.
    """
    if max_iter < 1:
        raise ValueError(f"anderson_mm: max_iter must be >= 1, got {max_iter}")
    if stop_on not in ("residual", "step"):
        raise ValueError(f"anderson_mm: stop_on={stop_on!r}, expected 'residual' or 'step'")
    x0_flat, unravel = ravel_pytree(x0)
    dtype = x0_flat.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"anderson_mm: x0 must hold floating arrays, got dtype {dtype}")
    if regularization is None:
        regularization = default_regularization(dtype)

    if aux is not None and energy_fn is not None:
        raise ValueError("anderson_mm: aux needs the fused step_fn (energy_fn=None)")

    def evaluate(x_flat: jax.Array, aux_in: PyTree) -> tuple[jax.Array, jax.Array, PyTree]:
        x = unravel(x_flat)
        aux_out = None
        if aux is not None:
            gx, e, aux_out = step_fn(x, aux_in)
        elif energy_fn is None:
            gx, e = step_fn(x)
        else:
            gx, e = step_fn(x), energy_fn(x)
        g_flat, _ = ravel_pytree(gx)
        if g_flat.shape != x_flat.shape:
            raise ValueError(
                f"anderson_mm: step_fn returned {g_flat.shape[0]} scalars for {x_flat.shape[0]}"
            )
        return g_flat.astype(dtype), jnp.asarray(e), aux_out

    e_dtype = jax.eval_shape(evaluate, x0_flat, aux)[1]
    if e_dtype.shape != ():
        raise ValueError(f"anderson_mm: the energy must be a scalar, got shape {e_dtype.shape}")
    e_dtype = e_dtype.dtype

    init = _Carry(
        k=jnp.zeros((), jnp.int32),
        x=x0_flat,
        extrapolated=jnp.array(False),
        force=jnp.array(True),
        x_acc=x0_flat,
        g_acc=x0_flat,
        e_acc=jnp.array(jnp.inf, e_dtype),
        residual=jnp.array(jnp.inf, dtype),
        aa=anderson_init(x0_flat, m),
        accepted=jnp.zeros((), jnp.int32),
        rejected=jnp.zeros((), jnp.int32),
        trace=jnp.full((max_iter,), jnp.nan, e_dtype),
        cand_trace=jnp.full((max_iter,), jnp.nan, e_dtype),
        done=jnp.array(False),
        aux=aux,
    )

    def body(c: _Carry) -> _Carry:
        gy, ey, aux_y = evaluate(c.x, c.aux)
        if safeguard:
            accept = c.force | (ey <= c.e_acc)
        else:
            accept = jnp.array(True)

        # Accepted: y becomes the iterate; extrapolate from (y, T(y)).
        if use_aa:
            x_aa, aa_acc = _flat_update(c.aa, c.x, gy, regularization)
            extrap_next = aa_acc.count > 1  # at least one difference in the history
        else:
            x_aa, aa_acc = gy, c.aa
            extrap_next = jnp.array(False)
        moved = gy if stop_on == "residual" else x_aa
        if residual_fn is not None:
            residual_y = jnp.asarray(residual_fn(unravel(c.x), unravel(moved)), dtype)
        elif c.x.size:
            residual_y = jnp.max(jnp.abs(moved - c.x))
        else:
            residual_y = jnp.zeros((), dtype)
        # Rejected: back to T(x_acc), fresh history, accept it unconditionally next time.
        pick = lambda a, r: jnp.where(accept, a, r)
        aa = jax.tree.map(pick, aa_acc, anderson_reset(c.aa))
        x_acc = pick(c.x, c.x_acc)
        g_acc = pick(gy, c.g_acc)
        e_acc = pick(ey.astype(e_dtype), c.e_acc)
        residual = pick(residual_y, c.residual)
        converged = accept & (residual_y < tol)
        k = c.k + 1
        return _Carry(
            k=k,
            x=pick(x_aa, c.g_acc),
            extrapolated=accept & extrap_next,
            force=~accept,
            x_acc=x_acc,
            g_acc=g_acc,
            e_acc=e_acc,
            residual=residual,
            aa=aa,
            accepted=c.accepted + (accept & c.extrapolated).astype(jnp.int32),
            rejected=c.rejected + (~accept & c.extrapolated).astype(jnp.int32),
            trace=c.trace.at[c.k].set(e_acc),
            cand_trace=c.cand_trace.at[c.k].set(ey.astype(e_dtype)),
            done=converged | (k >= max_iter) | (accept & ~jnp.isfinite(ey)),
            aux=aux_y,
        )

    out = lax.while_loop(lambda c: ~c.done, body, init)
    # Pad the accepted-energy trace with the final value past the stopping iteration.
    idx = jnp.arange(max_iter)
    trace = jnp.where(idx < out.k, out.trace, out.e_acc)
    info = AndersonInfo(
        iterations=out.k,
        energy=out.e_acc,
        residual=out.residual,
        converged=out.residual < tol,
        accepted=out.accepted,
        rejected=out.rejected,
        energy_trace=trace,
        candidate_trace=out.cand_trace,
    )
    if aux is not None:
        return unravel(out.x_acc), info, out.aux
    return unravel(out.x_acc), info
