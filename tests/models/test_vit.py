"""models/vit.py: output shapes, attention rows, DeiT parameter counts, drop-path, errors, and a
mini ViT that learns the digits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.vit import ViT, vit_size


def _count(model, shape):
    params = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False)
    )
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


@pytest.mark.parametrize(
    "size, expected",  # timm deit_{tiny,small,base}_patch16_224 parameter counts
    [("tiny", 5_717_416), ("small", 22_050_664), ("base", 86_567_656)],
)
def test_deit_sizes_have_the_published_parameter_counts(size, expected):
    model = ViT(num_classes=1000, patch_size=16, **vit_size(size))
    assert _count(model, (1, 224, 224, 3)) == expected


@pytest.mark.parametrize(
    "patch, side, channels, class_token", [(2, 16, 1, True), (4, 32, 3, False), (3, 12, 2, True)]
)
def test_outputs_shapes_and_attention_rows_sum_to_one(patch, side, channels, class_token):
    model = ViT(
        num_classes=7, patch_size=patch, hidden_dim=24, depth=2, num_heads=3,
        class_token=class_token, drop_path_rate=0.2,
    )  # fmt: skip
    x = jax.random.normal(jax.random.PRNGKey(1), (5, side, side, channels))
    params = model.init(jax.random.PRNGKey(0), x, train=False)
    out = model.apply(params, x, train=False)
    n = (side // patch) ** 2
    t = n + int(class_token)
    assert out.logits.shape == (5, 7)
    assert out.patch_tokens.shape == (5, n, 24)
    assert out.attention.shape == (5, 3, t, t)
    np.testing.assert_allclose(out.attention.sum(-1), 1.0, atol=1e-5)
    assert float(out.attention.min()) >= 0.0
    # eval mode is deterministic; train mode with drop-path differs between dropout keys
    again = model.apply(params, x, train=False)
    np.testing.assert_array_equal(out.logits, again.logits)
    a = model.apply(params, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    b = model.apply(params, x, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
    assert not np.allclose(a.logits, b.logits)


def test_headless_model_returns_tokens_only():
    model = ViT(num_classes=0, patch_size=2, hidden_dim=16, depth=1, num_heads=2)
    x = jnp.zeros((2, 8, 8, 3))
    out = model.apply(model.init(jax.random.PRNGKey(0), x, train=False), x, train=False)
    assert out.logits is None and out.patch_tokens.shape == (2, 16, 16)


def test_bad_inputs_raise_clear_errors():
    model = ViT(num_classes=3, patch_size=4, image_size=16, hidden_dim=8, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 18, 18, 1)), train=False)
    with pytest.raises(ValueError, match="configured for 16x16"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 20, 20, 1)), train=False)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ViT(num_classes=3, patch_size=4, hidden_dim=10, depth=1, num_heads=3).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False
        )
    with pytest.raises(ValueError, match="unknown ViT size"):
        vit_size("huge")


@pytest.mark.slow
def test_mini_vit_learns_the_digits():
    from research.datasets.images import load_digits

    data = load_digits(image_size=16, seed=0)
    mean, std = data.mean[0], data.std[0]
    x_train = jnp.asarray((data.train_x - mean) / std)
    y_train = jnp.asarray(data.train_y)
    model = ViT(num_classes=10, patch_size=2, hidden_dim=32, depth=2, num_heads=2)
    params = model.init(jax.random.PRNGKey(0), x_train[:1], train=False)
    opt = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 5e-3, 40, 400))
    batch = 64

    def step(carry, i):
        params, opt_state = carry
        idx = jax.random.choice(jax.random.PRNGKey(i), len(y_train), (batch,), replace=False)

        def loss(p):
            logits = model.apply(p, x_train[idx], train=False).logits
            return optax.softmax_cross_entropy_with_integer_labels(logits, y_train[idx]).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(400)))(
        (params, opt.init(params))
    )
    logits = model.apply(params, jnp.asarray((data.test_x - mean) / std), train=False).logits
    accuracy = float((np.asarray(logits).argmax(-1) == data.test_y).mean())
    assert accuracy > 0.7, accuracy  # chance is 0.1
