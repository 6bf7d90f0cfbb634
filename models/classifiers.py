"""Image classifiers for long-tailed classification (the LDAM-DRW recipe, Cao et al. 2019).

Both models share one interface, so a training loop can swap them:

    model = make_classifier("resnet32", num_classes=10, normed_head=True)
    variables = model.init(key, x, train=False)                  # x: [B, H, W, C] float32
    (logits, features), updates = model.apply(
        variables, x, train=True, mutable=["batch_stats"])        # CifarResNet (BatchNorm)
    logits, features = model.apply(variables, x, train=False)    # any model, eval mode
    # logits: [B, num_classes]; features: [B, feature_dim], the penultimate representation

`CifarResNet` is the CIFAR ResNet of He et al. 2016 as in the official LDAM-DRW code
(kaidic/LDAM-DRW, `models/resnet_cifar.py`, `ResNet_s`):

  stem:    Conv 3x3 (16) -> BatchNorm -> ReLU
  stages:  3 stages of n = (depth - 2) / 6 basic blocks, widths 16 / 32 / 64, stride 2 in the
           first block of stages 2 and 3; a basic block is
           relu(BN(Conv 3x3(relu(BN(Conv 3x3(x))))) + shortcut(x))
  shortcut "option A": identity, or where the shape changes, x[:, ::2, ::2] zero-padded in
           channels (no parameters), so ResNet-32 has 464,154 parameters for 10 classes
  head:    global average pool (features, 64-dim) -> Dense or NormedLinear

Convolutions have no bias and pad 1 on every side as PyTorch's `padding=1` (flax "SAME" pads a
stride-2 conv on an even input only at the bottom/right, which shifts the sampling grid).
Convolution and Dense kernels use Kaiming-normal (fan-in) init as the official `_weights_init`;
BatchNorm uses PyTorch's defaults (momentum 0.1 == flax 0.9, eps 1e-5). Its running statistics
live in the "batch_stats" collection: apply with `mutable=["batch_stats"]` when `train=True`.
`bn_axis_name` (both models) names the data-parallel axis to normalise over the global batch
(synchronised BatchNorm: a step on N devices computes what one device computes on the whole
batch); None normalises over each device's shard.

`SmallCNN` is a CPU-sized network for small grayscale digits (28x28 or 16x16): per width,
Conv 3x3 -> BatchNorm -> ReLU -> max-pool 2x2; then flatten -> Dense(feature_dim) -> ReLU
(features) -> head. The BatchNorm lets it train at the recipe's SGD learning rate of 0.1 (without
it the LDAM head's s = 30 logits diverge there) and gives it the same mutable state as the ResNet.

`NormedLinear` is the LDAM cosine classifier: logits are the cosines between the features and
the class weight vectors, in [-1, 1] (LDAM scales them by s = 30 in the loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

CLASSIFIERS = ("resnet32", "small_cnn")

_kaiming = nn.initializers.kaiming_normal()
_EPS = 1e-12  # as torch.nn.functional.normalize


def _normalize(x: Array, axis: int) -> Array:
    """x / max(||x||_2, eps) along `axis`, as `F.normalize`."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, _EPS)


def unit_column_uniform(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    """uniform(-1, 1) [in, out] with every column rescaled to unit L2 norm.

    The official `uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)` caps each column's norm at 1e-5
    and then multiplies by 1e5, i.e. normalises the columns. The forward pass normalises anyway;
    the initial scale matters for the size of the gradients and for weight decay.
    """
    w = jax.random.uniform(key, shape, dtype, minval=-1.0, maxval=1.0)
    return _normalize(w, axis=0)


class NormedLinear(nn.Module):
    """Cosine classifier: x [B, D] -> normalize(x, -1) @ normalize(W, 0), [B, features] in
    [-1, 1]. W is [D, features], no bias."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        w = self.param("kernel", unit_column_uniform, (x.shape[-1], self.features))
        return _normalize(x, axis=-1) @ _normalize(w, axis=0)


def _head(num_classes: int, normed: bool) -> nn.Module:
    if normed:
        return NormedLinear(num_classes, name="head")
    return nn.Dense(num_classes, kernel_init=_kaiming, name="head")


def option_a_shortcut(x: Array, features: int, stride: int) -> Array:
    """Parameter-free shortcut: x [B, H, W, C] -> [B, ceil(H/s), ceil(W/s), features].

    Subsamples with stride `stride` and zero-pads the channels on both sides, as the official
    `LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4)))`
    (there C = features / 2, so each side gets features / 4). Needs features >= C.
    """
    c = x.shape[-1]
    if features < c:
        raise ValueError(f"option-A shortcut cannot shrink channels {c} -> {features}")
    x = x[:, ::stride, ::stride]
    lo = (features - c) // 2
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (lo, features - c - lo)))


def _conv3x3(features: int, stride: int, name: str) -> nn.Conv:
    # padding=1 on every side, as PyTorch (see the module docstring).
    return nn.Conv(
        features,
        (3, 3),
        strides=stride,
        padding=((1, 1), (1, 1)),
        use_bias=False,
        kernel_init=_kaiming,
        name=name,
    )


def _batch_norm(train: bool, name: str, axis_name: str | None) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=axis_name, name=name
    )


class BasicBlock(nn.Module):
    """x [B, H, W, C] -> [B, ceil(H/stride), ceil(W/stride), features], option-A shortcut."""

    features: int
    stride: int = 1
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        y = _conv3x3(self.features, self.stride, "conv1")(x)
        y = nn.relu(_batch_norm(train, "bn1", self.bn_axis_name)(y))
        y = _batch_norm(train, "bn2", self.bn_axis_name)(_conv3x3(self.features, 1, "conv2")(y))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = option_a_shortcut(x, self.features, self.stride)
        return nn.relu(y + shortcut)


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2): x [B, H, W, C] -> (logits [B, num_classes], features [B, widths[-1]]).

    Attributes:
      depth: 6n + 2 (20, 32, 44, 56, 110, ...); n basic blocks per stage.
      num_classes: outputs of the head.
      widths: channels of the stages (the stem has widths[0]); stride 2 at the start of every
        stage after the first. Must be non-decreasing (option-A shortcuts only pad).
      normed_head: NormedLinear (cosine logits, for LDAM) instead of Dense.

    Block i of stage s (from 1) is the submodule `layer{s}_{i}`.
    """

    depth: int = 32
    num_classes: int = 10
    widths: Sequence[int] = (16, 32, 64)
    normed_head: bool = False
    bn_axis_name: str | None = None

    def __post_init__(self) -> None:
        # Fail at construction, not at the first init, so a bad config is caught early.
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"CifarResNet depth={self.depth} is not 6n + 2 with n >= 1")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, train: bool) -> tuple[Array, Array]:
        n = (self.depth - 2) // 6
        x = _conv3x3(self.widths[0], 1, "conv1")(x)
        x = nn.relu(_batch_norm(train, "bn1", self.bn_axis_name)(x))
        for s, width in enumerate(self.widths):
            for i in range(n):
                stride = 2 if s > 0 and i == 0 else 1
                block = BasicBlock(width, stride, self.bn_axis_name, name=f"layer{s + 1}_{i}")
                x = block(x, train=train)
        features = jnp.mean(x, axis=(1, 2))  # = avg_pool2d over the whole (8x8) map
        return _head(self.num_classes, self.normed_head)(features), features


class SmallCNN(nn.Module):
    """Small CNN for digits: x [B, H, W, C] -> (logits [B, num_classes], features
    [B, feature_dim]). H and W are halved (floor) once per entry of `widths`. BatchNorm
    statistics are in the "batch_stats" collection, as CifarResNet's.
    """

    num_classes: int = 10
    widths: Sequence[int] = (16, 32)
    feature_dim: int = 64
    normed_head: bool = False
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> tuple[Array, Array]:
        for i, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), padding="SAME", use_bias=False, name=f"conv{i}")(x)
            x = nn.relu(_batch_norm(train, f"bn{i}", self.bn_axis_name)(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        features = nn.relu(nn.Dense(self.feature_dim, name="fc")(x))
        return _head(self.num_classes, self.normed_head)(features), features


def make_classifier(
    name: str, num_classes: int, *, normed_head: bool = False, **kwargs: Any
) -> nn.Module:
    """Classifier `name` (one of CLASSIFIERS); kwargs go to the module (e.g. `widths`)."""
    if name == "resnet32":
        return CifarResNet(depth=32, num_classes=num_classes, normed_head=normed_head, **kwargs)
    if name == "small_cnn":
        return SmallCNN(num_classes=num_classes, normed_head=normed_head, **kwargs)
    raise ValueError(f"unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")
