import jax
import jax.numpy as jnp
import numpy as np

from models.gan import Discriminator, LocationGenerator, LocationScaleGenerator, MLPGenerator


def test_shapes_and_initial_values():
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (7, 3))
    d = Discriminator(hidden=(20, 5), activation="leaky_relu")
    assert d.apply(d.init(key, x), x).shape == (7,)
    g = MLPGenerator(out_dim=3, hidden=(8,))
    assert g.apply(g.init(key, jnp.zeros((1, 4))), jnp.ones((5, 4))).shape == (5, 3)
    loc = LocationGenerator(3)
    np.testing.assert_array_equal(loc.apply(loc.init(key, x), x), x)  # bias starts at 0
    ls = LocationScaleGenerator(3)
    params = ls.init(key, x)
    np.testing.assert_array_equal(params["params"]["scale"], np.eye(3))
    np.testing.assert_allclose(ls.apply(params, x), x)
