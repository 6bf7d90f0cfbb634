"""Tests of the ODE integrators and divergence estimators (research/jko_iflow/ode.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from models.flows import VelocityMLP, init_velocity
from research.jko_iflow import ode

A = np.array([[-0.5, 1.0], [-1.0, -0.3]])


def test_rk4_matches_linear_ode_closed_form_with_fourth_order_error():
    with jax.enable_x64(True):
        x0 = jnp.array([[1.0, 0.5], [-2.0, 0.3]], jnp.float64)
        exact = np.asarray(x0) @ scipy.linalg.expm(2.0 * A).T
        f = lambda t, x: x @ jnp.asarray(A).T
        errs = [np.abs(np.asarray(ode.rk4(f, x0, 0.0, 2.0, n)) - exact).max() for n in (10, 20)]
    assert errs[0] < 1e-4
    assert 12 < errs[0] / errs[1] < 20  # ~2^4: fourth order


def test_exact_divergence_matches_trace_of_jacobian():
    model = VelocityMLP(dim=3, width=16, depth=2, time_dependent=True)
    params = init_velocity(model, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    fn = lambda z: model.apply(params, 0.3, z)
    values, div = jax.jit(lambda z: ode.divergence_exact(fn, z))(x)
    row_trace = lambda r: jnp.trace(jax.jacfwd(lambda v: fn(v[None])[0])(r))
    ref = jax.jit(jax.vmap(row_trace))(x)
    np.testing.assert_allclose(values, fn(x), rtol=1e-6)
    np.testing.assert_allclose(div, ref, rtol=1e-5, atol=1e-6)


def test_hutchinson_is_unbiased_on_average():
    model = VelocityMLP(dim=2, width=16, depth=2)
    params = init_velocity(model, jax.random.PRNGKey(0))
    x = jnp.tile(jax.random.normal(jax.random.PRNGKey(1), (1, 2)), (20000, 1))
    fn = lambda z: model.apply(params, 0.0, z)
    eps = jax.random.normal(jax.random.PRNGKey(2), x.shape)
    _, est = ode.divergence_hutchinson(fn, x, eps)
    _, exact = ode.divergence_exact(fn, x[:1])
    stderr = np.std(est) / np.sqrt(len(est))
    assert abs(float(np.mean(est) - exact[0])) < 4 * stderr + 1e-6
    assert np.std(est) > 1e-4  # the estimates do vary: the test is not vacuous


def test_integrated_divergence_of_linear_field_is_trace_times_time():
    f = lambda t, x: x @ jnp.asarray(A, jnp.float32).T
    x0 = jax.random.normal(jax.random.PRNGKey(0), (4, 2))
    _, l_exact = ode.integrate_with_divergence(f, x0, 0.0, 1.5, 3, method="exact")
    eps = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 2))
    _, l_hutch = ode.integrate_with_divergence(f, x0, 0.0, 1.5, 3, method="hutchinson", eps=eps)
    np.testing.assert_allclose(l_exact, np.trace(A) * 1.5, rtol=1e-5)
    assert l_hutch.shape == (4,)
    with pytest.raises(ValueError, match="unknown divergence"):
        ode.integrate_with_divergence(f, x0, 0.0, 1.0, 1, method="bogus")


def test_dopri5_forward_and_backward():
    f = lambda t, x: x @ jnp.asarray(A, jnp.float32).T
    x0 = jnp.array([[1.0, 0.5], [-2.0, 0.3]])
    x1 = ode.odeint_adaptive(f, x0, 0.0, 1.0)
    np.testing.assert_allclose(x1, np.asarray(x0) @ scipy.linalg.expm(A).T, atol=3e-5)
    back = ode.odeint_adaptive(f, x1, 1.0, 0.0)
    np.testing.assert_allclose(back, x0, atol=3e-5)
    _, int_div = ode.odeint_adaptive_with_divergence(f, x0, 0.0, 1.0)
    np.testing.assert_allclose(int_div, np.trace(A), rtol=1e-4)
