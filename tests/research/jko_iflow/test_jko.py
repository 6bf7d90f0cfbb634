"""Tests of the JKO block loss, schedules, the baseline loss and the flow (jko.py, flow.py)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from models.flows import VelocityMLP, init_velocity
from research.datasets.densities import gaussian_logpdf
from research.jko_iflow import flow, jko


def test_block_loss_gradient_matches_finite_differences_float64():
    with jax.enable_x64(True):
        model = VelocityMLP(dim=2, width=8, depth=2)
        params = jax.tree.map(
            lambda a: a.astype(jnp.float64), init_velocity(model, jax.random.PRNGKey(0))
        )
        x = jax.random.normal(jax.random.PRNGKey(1), (16, 2), jnp.float64)
        eps = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 2), jnp.float64)
        w = jnp.full((16,), 1 / (2 * 0.5), jnp.float64)

        flat, unravel = jax.flatten_util.ravel_pytree(params)
        loss = jax.jit(lambda f: jko.jko_block_loss(model, unravel(f), x, eps, w, num_steps=2)[0])
        g_flat = jax.jit(jax.grad(loss))(flat)
        idx = np.random.default_rng(0).choice(flat.size, 8, replace=False)
        steps = jnp.zeros((8, flat.size), jnp.float64).at[np.arange(8), idx].set(1e-6)
        fd = (jax.vmap(loss)(flat + steps) - jax.vmap(loss)(flat - steps)) / 2e-6
        np.testing.assert_allclose(g_flat[idx], fd, rtol=1e-5, atol=1e-8)


def test_block_loss_parts():
    model = VelocityMLP(dim=2, width=8, depth=1)
    params = jax.tree.map(jnp.zeros_like, init_velocity(model, jax.random.PRNGKey(0)))
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 2))
    loss, aux = jko.jko_block_loss(
        model, params, x, None, jnp.ones(32), num_steps=3, divergence="exact"
    )
    # A zero field does not move the data: loss = E V(x).
    np.testing.assert_allclose(loss, jnp.mean(0.5 * jnp.sum(x**2, -1)), rtol=1e-6)
    assert float(aux["movement"]) == 0.0 and float(aux["div"]) == 0.0


def test_cnf_nll_loss_with_exact_trace_equals_minus_log_prob():
    model = VelocityMLP(dim=2, width=8, depth=2)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    stacked = jax.vmap(lambda k: init_velocity(model, k))(keys)
    blocks = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(3)]
    x = jax.random.normal(jax.random.PRNGKey(1), (10, 2))
    loss = jax.jit(
        lambda p, x: jko.cnf_nll_loss(model, p, x, None, num_steps=2, divergence="exact")
    )
    nll, _ = loss(stacked, x)
    logp = flow.log_prob(model, blocks, x, solver=flow.Solver("rk4", num_steps=2))
    np.testing.assert_allclose(nll, -jnp.mean(logp), rtol=1e-5)


def test_log_prob_of_linear_flow_is_the_gaussian_density():
    # dx/dt = -a x for t in [0, 1] maps N(0, e^{2a} I) to N(0, I).
    a = 0.7
    field_model = _LinearModel(a)  # a linear field, where the divergence is exact in RK4
    x = jax.random.normal(jax.random.PRNGKey(1), (50, 2)) * np.exp(a)
    logp = flow.log_prob(field_model, [None], x, solver=flow.Solver("rk4", num_steps=4))
    ref = gaussian_logpdf(np.asarray(x), np.exp(2 * a) * np.eye(2))
    np.testing.assert_allclose(logp, ref, atol=1e-4)


class _LinearModel:
    """Stands in for a VelocityMLP: `apply(params, t, x) = -a x` (hashable, static in jit)."""

    def __init__(self, a):
        self.a, self.dim = a, 2

    def apply(self, params, t, x):
        return -self.a * x

    def __hash__(self):
        return hash(("linear", self.a))

    def __eq__(self, other):
        return isinstance(other, _LinearModel) and other.a == self.a


def test_inversion_round_trip():
    model = VelocityMLP(dim=2, width=16, depth=2)
    blocks = [init_velocity(model, jax.random.PRNGKey(i)) for i in range(3)]
    x = jax.random.normal(jax.random.PRNGKey(9), (200, 2)) * 2
    err = flow.inversion_error(model, blocks, x, solver=flow.Solver("dopri5"))
    assert err["max_abs"] < 1e-4 and err["rms"] < 2e-5
    traj = flow.flow_forward(model, blocks, x, solver=flow.Solver("rk4", num_steps=3))
    assert len(traj) == 4 and traj[-1].shape == (200, 2)


def test_step_sizes_stopping_rule_and_reparameterization():
    np.testing.assert_allclose(
        jko.step_sizes(0.25, 1.4, 8),
        [0.25, 0.35, 0.49, 0.686, 0.9604, 1.3446, 1.8824, 2.6354],
        rtol=1e-3,
    )
    x = np.ones((10, 2))
    assert jko.should_stop(x, x * 1.05) and not jko.should_stop(x, x * 1.5)
    h = [1.0, 1.0, 1.0]
    moves = [2.0, 1.0, 0.5]
    new = jko.reparameterize(h, moves, eta=1.0, h_max=10.0)
    # With eta = 1, h_k * a_k-ratio makes h_k / a_k * a_k constant: new h ~ mean(a) / a_k.
    np.testing.assert_allclose(new, [7 / 12, 7 / 6, 7 / 3], rtol=1e-6)
    assert jko.reparameterize(h, moves, eta=1.0, h_max=2.0)[2] == 2.0
    traj = [np.zeros((4, 2)), np.ones((4, 2)), np.ones((4, 2)) * 3]
    np.testing.assert_allclose(jko.block_movements(traj), [np.sqrt(2), 2 * np.sqrt(2)])
    with pytest.raises(ValueError, match="movements"):
        jko.reparameterize([1.0], [1.0, 2.0])


def test_reparameterization_refuses_a_nan_movement():
    # Before, a NaN movement gave NaN step sizes and the blocks were retrained with them.
    with pytest.raises(ValueError, match="movements must be finite and positive"):
        jko.reparameterize([1.0, 1.0], [1.0, float("nan")])
