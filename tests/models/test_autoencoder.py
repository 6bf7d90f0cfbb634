"""The lightweight convolutional autoencoder: shapes, range, the bottleneck, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.autoencoder import ConvAutoencoder
from models.params import count_params


@pytest.mark.parametrize("upsample", ["subpixel", "transpose"])
@pytest.mark.parametrize("channels,size", [(1, 32), (3, 16)])
def test_shapes_range_and_code_size(upsample, channels, size):
    model = ConvAutoencoder(channels=channels, widths=(8, 16), bottleneck=4, upsample=upsample)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, size, size, channels))
    params = model.init(jax.random.PRNGKey(1), x)
    y = model.apply(params, x)
    assert y.shape == x.shape and bool(jnp.all((y > 0) & (y < 1)))
    code = model.apply(params, x, method=ConvAutoencoder.encode)
    assert code.shape == (2, size // 4, size // 4, 4)
    # Fully convolutional: the parameters do not depend on the image size.
    bigger = jnp.zeros((1, 2 * size, 2 * size, channels))
    assert model.apply(params, bigger).shape == bigger.shape


def test_count_params_counts_every_scalar():
    model = ConvAutoencoder(channels=1, widths=(4,), bottleneck=2)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
    expected = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    # down 4x4 1->4, enc 3x3 4->4, code 1x1 4->2, from_code 3x3 2->4, dec 3x3 4->4,
    # subpixel 3x3 4->16, out 3x3 4->1 (kernels + biases)
    by_hand = (16 * 4 + 4) + (36 * 4 + 4) + (4 * 2 + 2) + (18 * 4 + 4) + (36 * 4 + 4)
    by_hand += (36 * 16 + 16) + (36 + 1)
    assert count_params(params) == expected == by_hand


def test_bad_input_names_the_rule():
    model = ConvAutoencoder(channels=1, widths=(8, 16, 32))
    with pytest.raises(ValueError, match="divisible by 2\\^3 = 8"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 20, 20, 1)))
    with pytest.raises(ValueError, match="3 channels, the model 1"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="upsample='nearest'"):
        ConvAutoencoder(upsample="nearest").init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))
