"""Tests of the flow velocity fields (models/flows.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.flows import VelocityMLP, init_velocity, softplus_beta


def test_softplus_beta_matches_reference_with_derivatives():
    x = jnp.linspace(-3.0, 3.0, 601)
    ref = lambda v: jax.nn.softplus(20.0 * v) / 20.0
    np.testing.assert_allclose(softplus_beta(x), ref(x), atol=1e-7)
    # The custom jvp (logistic, then s (1 - s)) against autodiff, first and second derivative.
    d1 = lambda fn: jax.grad(lambda v: jnp.sum(fn(v)))
    d2 = lambda fn: jax.grad(lambda v: jnp.sum(d1(fn)(v)))
    np.testing.assert_allclose(d1(softplus_beta)(x), d1(ref)(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d2(softplus_beta)(x), d2(ref)(x), rtol=1e-4, atol=1e-3)
    # No overflow or NaN far out.
    big = jnp.array([-1e4, 1e4])
    assert np.all(np.isfinite(softplus_beta(big)))
    assert np.all(np.isfinite(jax.grad(lambda v: jnp.sum(softplus_beta(v)))(big)))


@pytest.mark.parametrize("time_dependent", [False, True])
def test_velocity_mlp_shapes_and_time_dependence(time_dependent):
    model = VelocityMLP(dim=3, width=16, depth=2, time_dependent=time_dependent)
    params = init_velocity(model, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    out0, out1 = model.apply(params, 0.0, x), model.apply(params, 1.0, x)
    assert out0.shape == (5, 3)
    assert (np.abs(np.asarray(out0 - out1)).max() > 1e-6) == time_dependent
    kernels = [params["params"][f"dense_{i}"]["kernel"] for i in range(3)]
    assert [k.shape[1] for k in kernels] == [16, 16, 3]
    for k in kernels:  # PyTorch nn.Linear init: uniform in +-1/sqrt(fan_in)
        assert np.abs(np.asarray(k)).max() <= 1 / np.sqrt(k.shape[0]) + 1e-6


def test_velocity_mlp_rejects_wrong_dimension():
    model = VelocityMLP(dim=2, width=8)
    params = init_velocity(model, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"\[B, 2\].*\(4, 3\)"):
        model.apply(params, 0.0, jnp.zeros((4, 3)))
