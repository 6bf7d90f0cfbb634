"""models/unet.py: shapes and errors, the DDPM CIFAR-10 parameter count, zero output at init and
dependence on t and y (that it learns under the diffusion loss: tests/research/ascend)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.unet import UNet

TINY = dict(channels=16, channel_mult=(1, 2), num_res_blocks=1, num_groups=8)


def _init(model, x, t, y=None):
    return jax.jit(lambda: model.init(jax.random.PRNGKey(0), x, t, y, train=False))()


@pytest.fixture(scope="module")
def tiny():
    """A 2-level class-conditional U-Net with attention at side 4, for 8 x 8 x 1 images, and its
    parameters (shared: compiling `init` is the slow part on CPU)."""
    model = UNet(**TINY, num_classes=3, attention_resolutions=(4,))
    x, t, y = jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,), int), jnp.zeros((1,), int)
    with jax.threefry_partitionable(False):  # the same init, compiled several times faster on CPU
        return model, _init(model, x, t, y)


@pytest.mark.parametrize("num_classes, out_channels", [(0, None), (5, None), (5, 4), (0, 2)])
def test_output_shape(num_classes, out_channels):
    model = UNet(
        **{**TINY, "channel_mult": (1, 2, 2)}, attention_resolutions=(14,),
        num_classes=num_classes, out_channels=out_channels, num_heads=2,
    )  # fmt: skip
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 28, 28, 3))  # 28 -> 14 -> 7
    t, y = jnp.array([0, 999]), jnp.array([1, 5])  # 5 = the null label
    run = lambda: model.apply(
        model.init(jax.random.PRNGKey(0), x, t, y, train=False), x, t, y, train=True,
        rngs={"dropout": jax.random.PRNGKey(2)},
    )  # fmt: skip
    out = jax.eval_shape(run)  # shapes only: tracing, no compilation
    assert out.shape == (2, 28, 28, out_channels or 3)


def test_errors():
    x, t = jnp.zeros((1, 16, 16, 1)), jnp.zeros((1,))
    with pytest.raises(ValueError, match="needs labels y"):
        _init(UNet(**TINY, num_classes=3), x, t)
    with pytest.raises(ValueError, match="divisible by 4"):
        _init(UNet(**{**TINY, "channel_mult": (1, 1, 1)}), jnp.zeros((1, 18, 18, 1)), t)
    with pytest.raises(ValueError, match="GroupNorm groups"):
        _init(UNet(**{**TINY, "num_groups": 6}), x, t)


def test_ddpm_cifar10_has_35_7m_parameters():
    model = UNet()  # ch 128, mult (1, 2, 2, 2), 2 res blocks, attention at 16, unconditional
    params = jax.eval_shape(lambda: _init(model, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,), int)))
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    assert round(n / 1e6, 1) == 35.7
    assert n == 35_746_307  # the official TF count


def test_zero_at_init_then_depends_on_t_and_y(tiny):
    model, params = tiny
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
    t, y = jnp.array([3, 3]), jnp.array([0, 0])
    f = jax.jit(
        lambda p, t, y, k=None: model.apply(
            p, x, t, y, train=k is not None, rngs=None if k is None else {"dropout": k}
        )
    )
    assert not jnp.any(f(params, t, y))  # zero-initialised output conv
    # Perturb every parameter: the zero-initialised branches otherwise hide t and y.
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape, np.float32), params)
    base = f(params, t, y)
    assert jnp.abs(base).max() > 0
    assert jnp.abs(f(params, t + 100, y) - base).max() > 1e-3
    assert jnp.abs(f(params, t, y + 3) - base).max() > 1e-3  # 3 = the null label
    # Dropout is active only with train=True.
    k0, k1 = jax.random.split(jax.random.PRNGKey(4))
    with jax.threefry_partitionable(False):
        assert jnp.abs(f(params, t, y, k0) - f(params, t, y, k1)).max() > 1e-3
