"""The backbones ASCEND compares and their training: depth splits, the EMA optimizer, and every
backbone learning a tiny data set under the diffusion loss."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.ascend import diffusion, method
from research.datasets.images import load_digits

TINY = method.ModelOptions(
    patch_size=2,
    hidden_dim=32,
    depth=5,
    num_heads=4,
    ascend_decoder_depth=1,
    unet_channels=16,
    unet_channel_mult=(1, 2),
    unet_num_res_blocks=1,
    unet_attention_resolutions=(4,),
    unet_num_groups=8,
    unet_dropout=0.0,
)


def test_vit_depths_split_evenly_or_give_ascend_the_deeper_encoder():
    opts = method.ModelOptions(depth=13, ascend_decoder_depth=4)
    assert method.vit_depths(opts, "iu_vit") == (6, 6)
    assert method.vit_depths(opts, "vit") == (6, 6)
    assert method.vit_depths(opts, "ascend") == (8, 4)
    with pytest.raises(ValueError, match="shallower"):
        method.vit_depths(dataclasses.replace(opts, ascend_decoder_depth=6), "ascend")
    with pytest.raises(ValueError, match="odd"):
        method.vit_depths(dataclasses.replace(opts, depth=12), "vit")
    with pytest.raises(ValueError, match="unknown backbone"):
        method.make_backbone(opts, "resnet", 0)


def test_ema_follows_the_updated_parameters():
    params = {"w": jnp.array([1.0, -2.0])}
    opt = method.with_ema(optax.sgd(0.5), 0.9)
    state = opt.init(params)
    expected = np.array([1.0, -2.0])
    for g in ([1.0, 0.0], [0.0, 2.0], [4.0, 4.0]):
        updates, state = opt.update({"w": jnp.array(g)}, state, params)
        params = optax.apply_updates(params, updates)
        expected = 0.9 * expected + 0.1 * np.asarray(params["w"])
        np.testing.assert_allclose(method.ema_params(state)["w"], expected, rtol=1e-6)
    assert int(state.count) == 3


def test_ema_warmup_uses_the_short_horizon_first():
    params = {"w": jnp.zeros(())}
    opt = method.with_ema(optax.sgd(1.0), 0.9999, warmup=True)
    state = opt.init(params)
    updates, state = opt.update({"w": jnp.array(-1.0)}, state, params)  # params become 1
    d = 2.0 / 11.0  # min(0.9999, (1 + 1) / (10 + 1))
    np.testing.assert_allclose(method.ema_params(state)["w"], (1 - d) * 1.0, rtol=1e-6)
    with pytest.raises(TypeError):
        method.ema_params(optax.sgd(1.0).init(params))


@pytest.mark.parametrize("backbone", method.BACKBONES)
def test_every_backbone_maps_shapes_and_learns_tiny_digits(backbone):
    digits = load_digits(image_size=8)
    x = jnp.asarray(digits.train_x[:64] * 2 - 1)
    y = jnp.asarray(digits.train_y[:64])
    model = method.make_backbone(TINY, backbone, num_classes=10)
    params = method.init_params(model, (8, 8, 1), jax.random.PRNGKey(0))
    assert model.apply(params, x[:3], jnp.arange(3), y[:3], train=False).shape == (3, 8, 8, 1)
    schedule = diffusion.make_schedule("linear", 1000)
    opts = method.DiffusionOptions(class_conditional=True)
    loss_fn = method.make_loss_fn(model, schedule, opts, num_classes=10)
    opt = method.make_optimizer(
        method.TrainOptions(lr=2e-3, b1=0.9, warmup_steps=1, ema_decay=0.9, weight_decay=0.0)
    )
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, {"images": x, "labels": y}, key
        )
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    # The same t and noise before and after: the loss on a fixed draw, not a noisy estimate.
    probe = jax.random.PRNGKey(99)
    before = float(loss_fn(params, {"images": x, "labels": y}, probe)[0])
    # A host loop of jitted steps: XLA:CPU runs a conv net's gradient inside lax.scan about 18x
    # slower than the same step on its own (jax 0.10.2), so the U-Net is not scanned here.
    for k in jax.random.split(jax.random.PRNGKey(1), 150):
        params, state = step(params, state, k)
    after = float(loss_fn(method.ema_params(state), {"images": x, "labels": y}, probe)[0])
    assert after < 0.6 * before, (before, after)
