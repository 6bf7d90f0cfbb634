"""models/classifiers.py: output shapes, the ResNet-32 parameter count, the cosine head,
BatchNorm train/eval behaviour, the option-A shortcut, and errors.

On the CPU most of the time goes into compiling the initialisers (once per kernel shape), so the
tests share one small ResNet (depth 8) and keep batch shapes fixed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.classifiers import (
    CLASSIFIERS,
    BasicBlock,
    CifarResNet,
    NormedLinear,
    SmallCNN,
    make_classifier,
    option_a_shortcut,
)

NUM_CLASSES = 7


def _count(tree) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _init(model, x, **kwargs):
    # One jitted init compiles faster on the CPU than op-by-op (one RNG program per kernel shape).
    return jax.jit(lambda key: model.init(key, x, **kwargs))(jax.random.PRNGKey(0))


def _shapes(model, shape):
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False))


@pytest.fixture(scope="module")
def resnet():
    """(model, images [4, 16, 16, 3], variables, jitted apply) of a ResNet-8 with a Dense head.

    `apply(variables, x, train)` returns (logits, features), and with train=True also the
    updated batch_stats.
    """
    model = CifarResNet(depth=8, num_classes=NUM_CLASSES)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3)) + 1.0

    def apply(variables, x, train):
        return model.apply(variables, x, train=train, mutable=["batch_stats"] if train else False)

    return model, x, _init(model, x, train=False), jax.jit(apply, static_argnames="train")


def test_resnet32_has_the_published_parameter_count():
    variables = _shapes(make_classifier("resnet32", 10), (1, 32, 32, 3))
    # 464,154 = convs without bias + BN scale/bias + Dense 64x10 + 10 (option A adds nothing)
    assert _count(variables["params"]) == 464_154
    # running mean and var of the 31 BatchNorms
    assert _count(variables["batch_stats"]) == 2 * (16 + 10 * (16 + 32 + 64))
    normed = _shapes(make_classifier("resnet32", 10, normed_head=True), (1, 32, 32, 3))
    assert _count(normed["params"]) == 464_154 - 10  # no bias in the cosine head


@pytest.mark.parametrize("train", [True, False])
def test_resnet_shapes(resnet, train):
    _, x, variables, apply = resnet
    out = apply(variables, x, train=train)
    logits, feats = out[0] if train else out
    assert logits.shape == (4, NUM_CLASSES) and feats.shape == (4, 64)
    assert bool(jnp.all(feats >= 0))  # pooled after a ReLU


def test_resnet_with_normed_head(resnet):
    _, x, variables, _ = resnet
    model = CifarResNet(depth=8, num_classes=NUM_CLASSES, normed_head=True)
    # the Dense-head ResNet's variables with a NormedLinear head (a full init costs seconds)
    head = NormedLinear(NUM_CLASSES).init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"]
    variables = {**variables, "params": {**variables["params"], "head": head}}
    logits, feats = jax.jit(lambda v: model.apply(v, x, train=False))(variables)
    assert logits.shape == (4, NUM_CLASSES) and feats.shape == (4, 64)
    assert float(jnp.abs(logits).max()) <= 1.0 + 1e-6


@pytest.mark.parametrize("side", [16, 28])
def test_small_cnn_on_digit_sizes(side):
    model = make_classifier("small_cnn", 10)
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, side, side, 1))
    variables = _init(model, x, train=False)
    assert set(variables["batch_stats"]) == {"bn0", "bn1"}
    (logits, feats), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (4, 10) and feats.shape == (4, 64)
    moved = updates["batch_stats"]["bn0"]["mean"] - variables["batch_stats"]["bn0"]["mean"]
    assert float(jnp.abs(moved).max()) > 0
    assert model.apply(variables, x, train=False)[0].shape == (4, 10)
    # two max-pools: 28 -> 7, 16 -> 4
    assert variables["params"]["fc"]["kernel"].shape == ((side // 4) ** 2 * 32, 64)


def test_normed_linear_is_the_cosine():
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 5))
    head = NormedLinear(4)
    params = _init(head, x)
    w = np.asarray(params["params"]["kernel"], np.float64)
    assert w.shape == (5, 4)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, rtol=1e-5)  # unit columns at init
    # scale the kernel: the logits must not change (only directions count)
    out = np.asarray(head.apply(jax.tree.map(lambda p: 3.0 * p, params), x), np.float64)
    xn = np.asarray(x, np.float64)
    cos = (xn @ w) / np.linalg.norm(xn, axis=1, keepdims=True) / np.linalg.norm(w, axis=0)
    np.testing.assert_allclose(out, cos, atol=1e-5)
    assert out.min() >= -1.0 and out.max() <= 1.0
    # F.normalize's eps: a zero row gives zero logits, not NaN
    assert np.all(np.asarray(head.apply(params, jnp.zeros((6, 5)))) == 0.0)


def test_batch_norm_updates_in_train_and_is_fixed_in_eval(resnet):
    _, x, variables, apply = resnet
    _, updates = apply(variables, x, train=True)
    before, after = variables["batch_stats"]["bn1"], updates["batch_stats"]["bn1"]
    assert not np.allclose(before["mean"], after["mean"])
    # flax momentum 0.9 == PyTorch 0.1: new mean = 0.9 * 0 + 0.1 * the batch mean of the stem
    stem = jax.lax.conv_general_dilated(
        x,
        variables["params"]["conv1"]["kernel"],
        (1, 1),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    np.testing.assert_allclose(after["mean"], 0.1 * stem.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
    # eval mode uses the running statistics: sample 0's output does not depend on the others
    variables = {"params": variables["params"], **updates}
    other = x.at[1:].set(3.0 * x[1:] - 2.0)  # same shape, so nothing recompiles
    a, _ = apply(variables, x, train=False)
    b, _ = apply(variables, other, train=False)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
    # ... while in train mode it does (batch statistics)
    (a, _), _ = apply(variables, x, train=True)
    (b, _), _ = apply(variables, other, train=True)
    assert not np.allclose(a[0], b[0], atol=1e-4)


def test_option_a_shortcut(resnet):
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 16))
    s = np.asarray(option_a_shortcut(x, 32, 2))
    assert s.shape == (4, 8, 8, 32)
    np.testing.assert_array_equal(s[..., 8:24], np.asarray(x)[:, ::2, ::2])  # planes // 4 a side
    assert np.all(s[..., :8] == 0) and np.all(s[..., 24:] == 0)
    # the first block of stage 2 has no projection parameters
    _, _, variables, _ = resnet
    assert set(variables["params"]["layer2_0"]) == {"conv1", "bn1", "conv2", "bn2"}
    block = BasicBlock(32, stride=2)
    assert jax.eval_shape(
        lambda: block.init_with_output(jax.random.PRNGKey(0), x, train=False)[0]
    ).shape == (4, 8, 8, 32)
    # in ResNet-32 on 32x32 inputs its output has 32 channels at 16x16
    _, state = jax.eval_shape(
        lambda: CifarResNet().init_with_output(
            jax.random.PRNGKey(0),
            jnp.zeros((1, 32, 32, 3)),
            train=False,
            capture_intermediates=lambda m, _: m.name == "layer2_0",
        )
    )
    assert state["intermediates"]["layer2_0"]["__call__"][0].shape == (1, 16, 16, 32)


@pytest.mark.parametrize("depth", [0, 2, 30, 33])
def test_bad_depth_raises(depth):
    with pytest.raises(ValueError, match=f"depth={depth}"):
        CifarResNet(depth=depth)


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="resnet18.*resnet32, small_cnn"):
        make_classifier("resnet18", 10)
    assert CLASSIFIERS == ("resnet32", "small_cnn")
    assert isinstance(make_classifier("small_cnn", 3, widths=(8,)), SmallCNN)
