"""Tests for ops/anderson.py: the bare accelerator and the safeguarded MM driver."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ops.anderson import (
    AndersonState,
    anderson_init,
    anderson_mm,
    anderson_reset,
    anderson_update,
    default_regularization,
)

_update = jax.jit(anderson_update)  # one compile per input structure instead of op-by-op


def _least_squares_mm(n=60, rho=0.95, seed=0, dtype=jnp.float32):
    """Gradient step 1/L on 0.5||Mx - y||^2: T(x) = A x + b with eig(A) in [0, rho]; an MM map."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((2 * n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    mat = jnp.asarray((q * np.sqrt(np.linspace(1 - rho, 1.0, n))) @ v.T, dtype)
    y = jnp.asarray(rng.standard_normal(2 * n), dtype)
    step = lambda x: x - mat.T @ (mat @ x - y)
    energy = lambda x: 0.5 * jnp.sum((mat @ x - y) ** 2)
    return step, energy, jnp.zeros((n,), dtype)


def _aa_fixed_point(g, x0, *, m, tol, max_iter, use_aa=True, regularization=None):
    """Bare accelerator (no safeguard) in a jitted lax.while_loop: x <- AA(x, g(x))."""

    def cond(c):
        _, _, k, res = c
        return (k < max_iter) & (res >= tol)

    def body(c):
        x, st, k, _ = c
        gx = g(x)
        res = jnp.max(jnp.abs(gx - x))
        if use_aa:
            x_new, st = anderson_update(st, x, gx, regularization=regularization)
        else:
            x_new = gx
        return x_new, st, k + 1, res

    init = (x0, anderson_init(x0, m), jnp.zeros((), jnp.int32), jnp.array(jnp.inf, x0.dtype))
    x, _, k, res = jax.jit(lambda c: lax.while_loop(cond, body, c))(init)
    return x, int(k), float(res)


def test_linear_contraction_at_least_2x_fewer_iterations():
    # Nonsymmetric A with spectral radius 0.95 (bare accelerator) ...
    rng = np.random.default_rng(1)
    n = 50
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    tri = np.diag(np.linspace(-0.95, 0.95, n)) + np.triu(0.05 * rng.standard_normal((n, n)), 1)
    a = jnp.asarray(q @ tri @ q.T, jnp.float32)
    assert abs(np.max(np.abs(np.linalg.eigvals(np.asarray(a)))) - 0.95) < 1e-3
    b = jnp.asarray(rng.standard_normal(n), jnp.float32)
    g = lambda x: a @ x + b
    x0 = jnp.zeros((n,), jnp.float32)
    _, k_plain, _ = _aa_fixed_point(g, x0, m=5, tol=1e-5, max_iter=2000, use_aa=False)
    x_aa, k_aa, res = _aa_fixed_point(g, x0, m=5, tol=1e-5, max_iter=2000)
    assert res < 1e-5
    np.testing.assert_allclose(x_aa, np.linalg.solve(np.eye(n) - np.asarray(a), b), atol=1e-3)
    assert 2 * k_aa <= k_plain, (k_aa, k_plain)

    # ... and the safeguarded driver on the least-squares MM map, same criterion.
    step, energy, x0 = _least_squares_mm()
    run = jax.jit(
        lambda x, use: anderson_mm(step, energy, x, max_iter=2000, tol=1e-5, use_aa=use),
        static_argnums=1,
    )
    _, plain = run(x0, False)
    _, aa = run(x0, True)
    assert bool(plain.converged) and bool(aa.converged)
    assert 2 * int(aa.iterations) <= int(plain.iterations), (aa.iterations, plain.iterations)
    assert float(aa.energy) <= float(plain.energy) * (1 + 1e-5)


def test_nonlinear_contraction():
    rng = np.random.default_rng(2)
    n = 40
    w = rng.standard_normal((n, n))
    w = jnp.asarray(0.85 * w / np.linalg.norm(w, 2), jnp.float32)
    b = jnp.asarray(rng.standard_normal(n), jnp.float32)
    g = lambda x: jnp.tanh(w @ x + b) + 0.1 * jnp.sin(x)  # Lipschitz <= 0.85 + 0.1
    x0 = jnp.zeros((n,), jnp.float32)
    _, k_plain, res_plain = _aa_fixed_point(g, x0, m=5, tol=1e-5, max_iter=3000, use_aa=False)
    x, k_aa, res = _aa_fixed_point(g, x0, m=5, tol=1e-5, max_iter=3000)
    assert res < 1e-5 and res_plain < 1e-5
    np.testing.assert_allclose(g(x), x, atol=1e-4)
    assert k_aa < k_plain, (k_aa, k_plain)


def _numpy_anderson(g, x0, m, steps):
    """Textbook type-II AA with window m, unnormalised differences, exact least squares."""
    xs, fs, gs = [], [], []
    x = np.asarray(x0, np.float64)
    out = []
    for _ in range(steps):
        gx = g(x)
        xs.append(x), gs.append(gx), fs.append(gx - x)
        k = min(m, len(xs) - 1)
        if k == 0:
            x = gx
        else:
            d_f = np.stack([fs[-i] - fs[-i - 1] for i in range(1, k + 1)], 1)
            d_g = np.stack([gs[-i] - gs[-i - 1] for i in range(1, k + 1)], 1)
            gamma = np.linalg.lstsq(d_f, fs[-1], rcond=None)[0]
            x = gx - d_g @ gamma
        out.append(x)
    return out


@pytest.mark.parametrize("m", [1, 2, 3])
def test_update_matches_textbook_reference_float64(m):
    rng = np.random.default_rng(3)
    n = 6
    w = rng.standard_normal((n, n)) * 0.3
    g_np = lambda x: np.cos(w @ x) + 0.5
    ref = _numpy_anderson(g_np, np.zeros(n), m, 8)  # 8 steps: the circular buffer wraps
    with jax.enable_x64(True):
        g = lambda x: jnp.cos(jnp.asarray(w) @ x) + 0.5
        x = jnp.zeros((n,), jnp.float64)
        st = anderson_init(x, m)
        assert st.dx.dtype == jnp.float64
        upd = jax.jit(lambda s, x, gx: anderson_update(s, x, gx, regularization=0.0))
        for k in range(8):
            x, st = upd(st, x, g(x))
            assert x.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(x), ref[k], rtol=1e-9, atol=1e-10)
    assert jnp.zeros(1).dtype == jnp.float32  # x64 did not leak out of the context


def test_m1_is_the_secant_step():
    # Scalar g(x) = cos x: AA(1) is the secant method on f(x) = cos x - x.
    g = lambda x: jnp.cos(x)
    x0, x1 = jnp.array([0.3]), jnp.array([0.9])
    st = anderson_init(x0, 1)
    out, st = _update(st, x0, g(x0), regularization=0.0)
    np.testing.assert_allclose(out, g(x0))  # empty history: the plain step
    x2, st = _update(st, x1, g(x1), regularization=0.0)
    f = lambda x: float(np.cos(x[0]) - x[0])
    secant = float(x1[0]) - f(x1) * float(x1[0] - x0[0]) / (f(x1) - f(x0))
    np.testing.assert_allclose(float(x2[0]), secant, rtol=1e-5)

    # Vector form: x2 = g1 - gamma (dx + df), gamma = <df, f1> / <df, df>.
    rng = np.random.default_rng(4)
    xa, xb, ga, gb = (jnp.asarray(rng.standard_normal(5), jnp.float32) for _ in range(4))
    st = anderson_init(xa, 1)
    _, st = _update(st, xa, ga, regularization=0.0)
    x2, _ = _update(st, xb, gb, regularization=0.0)
    fa, fb = np.asarray(ga - xa), np.asarray(gb - xb)
    d_f, d_x = fb - fa, np.asarray(xb - xa)
    gamma = d_f @ fb / (d_f @ d_f)
    np.testing.assert_allclose(x2, np.asarray(gb) - gamma * (d_x + d_f), rtol=1e-5, atol=1e-6)


def test_pytree_matches_flat():
    rng = np.random.default_rng(5)
    a = jnp.asarray(rng.standard_normal((10, 10)) * 0.25, jnp.float32)
    b = jnp.asarray(rng.standard_normal(10), jnp.float32)
    g_flat = lambda x: jnp.tanh(a @ x) + b
    to_tree = lambda x: {"w": x[:6].reshape(2, 3), "v": (x[6:],)}
    to_flat = lambda t: jnp.concatenate([t["w"].reshape(-1), t["v"][0]])
    g_tree = lambda t: to_tree(g_flat(to_flat(t)))
    x, t = jnp.zeros(10), to_tree(jnp.zeros(10))
    s_flat, s_tree = anderson_init(x, 3), anderson_init(t, 3)
    for _ in range(6):
        x, s_flat = _update(s_flat, x, g_flat(x))
        t, s_tree = _update(s_tree, t, g_tree(t))
        assert jax.tree.structure(t) == jax.tree.structure(to_tree(x))
        np.testing.assert_allclose(to_flat(t), x, rtol=1e-6, atol=1e-6)
    # And through the driver.
    energy = lambda t: jnp.sum(to_flat(t) ** 2)
    xt, info = anderson_mm(g_tree, energy, to_tree(jnp.zeros(10)), max_iter=50, tol=1e-6)
    np.testing.assert_allclose(to_flat(g_tree(xt)), to_flat(xt), atol=1e-5)
    assert xt["w"].shape == (2, 3) and int(info.iterations) < 50


def test_reset_gives_plain_step_then_fresh_history():
    rng = np.random.default_rng(6)
    a = jnp.asarray(rng.standard_normal((8, 8)) * 0.3, jnp.float32)
    g = lambda x: jnp.sin(a @ x) + 1.0
    xs = [jnp.asarray(rng.standard_normal(8), jnp.float32) for _ in range(5)]
    st = anderson_init(xs[0], 3)
    for x in xs[:3]:
        _, st = _update(st, x, g(x))
    assert int(st.count) == 3
    st = anderson_reset(st)
    assert isinstance(st, AndersonState) and int(st.count) == 0
    out, st = _update(st, xs[3], g(xs[3]))
    np.testing.assert_array_equal(out, g(xs[3]))  # history forgotten: plain step
    out, _ = _update(st, xs[4], g(xs[4]))
    # Same as a fresh accelerator that has only seen xs[3], xs[4].
    fresh = anderson_init(xs[0], 3)
    _, fresh = _update(fresh, xs[3], g(xs[3]))
    ref, _ = _update(fresh, xs[4], g(xs[4]))
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def _welsch_regression(seed=1, n=200, d=5, nu=0.5):
    """Robust regression, Welsch IRLS as MM: T(b) = weighted LS solve at the weights of b."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = x @ rng.standard_normal(d) + 0.1 * rng.standard_normal(n)
    y[: n // 3] += 5 * rng.standard_normal(n // 3)  # outliers
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

    def weights(b):
        return jnp.exp(-((x @ b - y) ** 2) / (2 * nu**2))

    def step(b):
        xw = x * weights(b)[:, None]
        return jnp.linalg.solve(xw.T @ x + 1e-6 * jnp.eye(d), xw.T @ y)

    energy = lambda b: jnp.sum(1.0 - weights(b))
    return step, energy, jnp.zeros((d,), jnp.float32)


def test_safeguard_never_increases_energy_where_raw_aa_does():
    step, energy, b0 = _welsch_regression()
    run = jax.jit(
        lambda b, sg: anderson_mm(step, energy, b0, max_iter=300, tol=1e-6, safeguard=sg),
        static_argnums=1,
    )
    _, raw = run(b0, False)
    _, safe = run(b0, True)
    _, plain = jax.jit(
        lambda b: anderson_mm(step, energy, b, max_iter=300, tol=1e-6, use_aa=False)
    )(b0)
    # Raw AA overshoots: its energy rises along its (always accepted) iterates, a lot.
    raw_trace = np.asarray(raw.energy_trace)[: int(raw.iterations)]
    assert np.max(np.diff(raw_trace)) > 1.0
    # The safeguard rejects those points and keeps the accepted energy non-increasing.
    trace = np.asarray(safe.energy_trace)
    e_scale = float(trace[0])
    assert int(safe.rejected) > 0 and int(safe.accepted) > 0
    assert np.all(np.diff(trace) <= 1e-6 * e_scale), np.max(np.diff(trace))
    # Every rejected candidate was indeed above the accepted energy before it.
    cand = np.asarray(safe.candidate_trace)[: int(safe.iterations)]
    prev = np.concatenate([[np.inf], trace[: int(safe.iterations) - 1]])
    assert int(np.sum(cand > prev)) >= int(safe.rejected)
    assert bool(safe.converged)
    np.testing.assert_allclose(float(safe.energy), float(plain.energy), rtol=1e-4)
    assert float(safe.energy) < float(raw.energy)


def test_driver_one_step_and_one_energy_per_iteration_and_plain_mode():
    counts = {"step": 0, "energy": 0}

    def bump(key):
        def cb():
            counts[key] += 1

        return cb

    base_step, base_energy, b0 = _welsch_regression(seed=2)

    def step(b):
        jax.debug.callback(bump("step"))
        return base_step(b)

    def energy(b):
        jax.debug.callback(bump("energy"))
        return base_energy(b)

    x2, i2 = anderson_mm(step, energy, b0, max_iter=100, tol=1e-6)
    jax.effects_barrier()
    assert counts["step"] == counts["energy"] == int(i2.iterations)
    assert int(i2.rejected) > 0  # rejected iterations are counted too

    # Fused form (energy_fn=None) gives identical results; use_aa=False is the plain iteration.
    fused = lambda b: (base_step(b), base_energy(b))
    x1, i1 = anderson_mm(fused, None, b0, max_iter=100, tol=1e-6)
    np.testing.assert_allclose(x1, x2, rtol=1e-6, atol=1e-7)
    assert int(i1.iterations) == int(i2.iterations)
    xp, ip = anderson_mm(base_step, base_energy, b0, max_iter=7, tol=0.0, use_aa=False)
    b = b0
    for _ in range(6):  # iteration 7 evaluates T^6(b0) and stops: that is the returned point
        b = base_step(b)
    np.testing.assert_allclose(xp, b, rtol=1e-5, atol=1e-6)  # eager vs compiled rounding
    assert int(ip.iterations) == 7 and int(ip.accepted) == int(ip.rejected) == 0


def test_driver_under_jit_and_vmap_with_float64():
    with jax.enable_x64(True):
        step, energy, x0 = _least_squares_mm(n=20, dtype=jnp.float64)
        assert default_regularization(jnp.float64) < default_regularization(jnp.float32)
        run = jax.jit(jax.vmap(lambda x: anderson_mm(step, energy, x, max_iter=400, tol=1e-12)))
        xs = jnp.stack([x0, x0 + 1.0, x0 - 2.0])
        x, info = run(xs)
        assert x.dtype == jnp.float64 and info.energy.dtype == jnp.float64
        assert info.energy_trace.shape == (3, 400)
        assert bool(jnp.all(info.converged)) and bool(jnp.all(info.residual < 1e-12))
        np.testing.assert_allclose(x[0], x[1], atol=1e-9)  # unique minimiser
    assert jnp.zeros(1).dtype == jnp.float32


def test_stop_on_step_measures_consecutive_iterates():
    """stop_on="step": the stopping residual is max |x_next - x_acc| (x_next the Anderson point);
    the plain iteration is unchanged (x_next = T(x_acc))."""
    step, energy, x0 = _least_squares_mm(n=30, rho=0.9, seed=4)
    fused = lambda x: (step(x), energy(x))
    iterations = {}
    for use_aa in (False, True):
        kw = dict(max_iter=300, tol=1e-4, use_aa=use_aa)
        x_r, i_r = anderson_mm(fused, None, x0, **kw)
        x_s, i_s = anderson_mm(fused, None, x0, stop_on="step", **kw)
        assert bool(i_s.converged) and float(i_s.residual) < 1e-4
        if not use_aa:
            np.testing.assert_array_equal(np.asarray(x_r), np.asarray(x_s))
            assert int(i_r.iterations) == int(i_s.iterations)
        iterations[use_aa] = int(i_s.iterations)
    assert iterations[True] < iterations[False]
    # One iteration fewer: no accepted point had a step below tol yet.
    _, i_prev = anderson_mm(fused, None, x0, max_iter=iterations[True] - 1, tol=0.0, stop_on="step")
    assert float(i_prev.residual) >= 1e-4


def test_residual_fn_replaces_the_stopping_residual():
    """residual_fn(x, T(x)) replaces max|T(x) - x| in the stopping rule."""

    def step(x):  # contraction towards 1 with energy |x - 1|^2
        return 0.5 * (x + 1.0), jnp.sum((x - 1.0) ** 2)

    x0 = jnp.zeros((3,), jnp.float32)
    _, plain = anderson_mm(step, None, x0, use_aa=False, max_iter=50, tol=1e-3)
    _, scaled = anderson_mm(
        step,
        None,
        x0,
        use_aa=False,
        max_iter=50,
        tol=1e-3,
        residual_fn=lambda x, gx: 100.0 * jnp.max(jnp.abs(gx - x)),
    )
    assert bool(plain.converged) and bool(scaled.converged)
    assert int(scaled.iterations) > int(plain.iterations)
    assert float(scaled.residual) < 1e-3


def test_aux_is_threaded_through_every_evaluation():
    """aux: step_fn(x, aux) -> (T(x), E(x), aux); same iterates, final aux returned."""
    step, energy, x0 = _least_squares_mm(n=30, rho=0.9, seed=6)
    x1, i1 = anderson_mm(lambda x: (step(x), energy(x)), None, x0, max_iter=50, tol=1e-5)
    counted = lambda x, calls: (step(x), energy(x), calls + 1)
    x2, i2, calls = anderson_mm(counted, None, x0, max_iter=50, tol=1e-5, aux=jnp.int32(0))
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
    assert int(calls) == int(i2.iterations) == int(i1.iterations)
    with pytest.raises(ValueError, match="aux"):
        anderson_mm(counted, energy, x0, max_iter=3, aux=jnp.int32(0))


@pytest.mark.parametrize("use_aa", [True, False])
def test_a_non_finite_accepted_energy_stops_the_loop(use_aa):
    """A map that turns NaN at evaluation 3 (counting from 0): evaluation 4 (at that NaN point)
    is rejected by the safeguard, evaluation 5 is the forced acceptance of T(x_acc), also NaN,
    and the loop stops there instead of running max_iter NaN iterations; the accepted-energy
    trace shows the NaN at that iteration."""

    def step(x, k):  # T(x) = x / 2, NaN from the fourth evaluation on; aux counts evaluations
        gx = jnp.where(k >= 3, jnp.nan, 0.5 * x)
        return gx, jnp.sum(x**2), k + 1

    x, info, _ = anderson_mm(
        step, None, jnp.ones((4,)), max_iter=50, tol=0.0, use_aa=use_aa, aux=jnp.int32(0)
    )
    trace = np.asarray(info.energy_trace)
    assert int(info.iterations) == 6
    assert np.isfinite(trace[:5]).all() and np.isnan(trace[5])


def test_errors():
    with pytest.raises(ValueError, match="m must be >= 1"):
        anderson_init(jnp.zeros(3), 0)
    st = anderson_init(jnp.zeros(3), 2)
    with pytest.raises(ValueError, match="scalars"):
        anderson_update(st, jnp.zeros(4), jnp.zeros(4))
    with pytest.raises(ValueError, match="floating"):
        anderson_mm(lambda x: x, lambda x: 0.0, jnp.zeros(3, jnp.int32), max_iter=3)
    with pytest.raises(ValueError, match="scalar"):
        anderson_mm(lambda x: x, lambda x: x, jnp.zeros(3), max_iter=3)
    with pytest.raises(ValueError, match="stop_on"):
        anderson_mm(lambda x: x, lambda x: 0.0, jnp.zeros(3), max_iter=3, stop_on="energy")
