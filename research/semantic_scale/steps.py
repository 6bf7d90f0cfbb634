"""The jitted pieces of a long-tailed classification run: the LDAM-DRW optimizer and schedule,
every method's loss (the baselines and DSB learning) and prediction. The settings come as
frozen options dataclasses (`config.train`, `config.loss`, `config.dsb`).

Methods (`config.methods`, comma-separated): loss on the logits x class weights
  ce                cross-entropy, no weights
  cb                cross-entropy, effective-number weights (beta) from the start
  focal             focal loss (gamma), no weights
  ldam_drw          LDAM (cosine head), effective-number weights from `reweight_epoch` (DRW)
  logit_adjust      cross-entropy of z + tau log pi (the logit-adjusted loss)
  balanced_softmax  cross-entropy of z + log n
  dsb_ce            cross-entropy, semantic-scale weights from `reweight_epoch` (DSB)
  dsb_focal         focal loss, semantic-scale weights from `reweight_epoch`
  dsb_ldam          LDAM (cosine head), semantic-scale weights from `reweight_epoch`

DSB learning (`DSBOptions`): every step pushes the batch's detached features into a per-class
pool (`pool.push`, all devices' features); every `every` steps the class scales are recomputed
from the pool (`scale.pool_scales`) and turned into weights S^(-alpha), mean 1
(`losses.scale_weights`); the loss uses them from `reweight_epoch` on (deferred, as DRW), the
pool filling during the warm-up. All of it runs inside the jitted step.

The model state carried by the step (`TrainState.model_state`): {"step", "batch_stats" (models
with BatchNorm), "pool" and "scale_weights" (DSB)}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from research.semantic_scale import losses
from research.semantic_scale.pool import init_pool, push
from research.semantic_scale.scale import pool_scales
from research.training.parallel import DATA_AXIS
from research.training.train_state import TrainState


@dataclass(frozen=True)
class TrainOptions:
    """The LDAM-DRW recipe (`config.train`): SGD with momentum, coupled weight decay on every
    parameter, a linear warm-up over the first `warmup_epochs` (may be fractional), then lr
    x decay_factors[k] from decay_epochs[k] on (LDAM: 0.01 from 160, 1e-4 from 180 of 200);
    `reweight_epoch`: where DRW and DSB switch their class weights on."""

    batch_size: int = 128
    epochs: int = 200
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    warmup_epochs: float = 5.0
    decay_epochs: tuple[int, ...] = (160, 180)
    decay_factors: tuple[float, ...] = (0.01, 0.0001)
    reweight_epoch: int = 160


@dataclass(frozen=True)
class LossOptions:
    """`config.loss`: focal_gamma (the LDAM code's focal baseline uses 1), LDAM's largest margin
    and logit scale s, the effective-number beta of CB and DRW, the logit-adjustment tau."""

    focal_gamma: float = 1.0
    ldam_max_margin: float = 0.5
    ldam_scale: float = 30.0
    cb_beta: float = 0.9999
    la_tau: float = 1.0


@dataclass(frozen=True)
class DSBOptions:
    """`config.dsb`: pool_size features kept per class; scales recomputed every `every` steps;
    weights S^(-alpha) with S floored at floor x max S; d and normalize as in
    `scale.semantic_scale`."""

    pool_size: int = 128
    every: int = 10
    alpha: float = 1.0
    floor: float = 0.05
    d: float = 1.0
    normalize: bool = False


class Method(NamedTuple):
    loss: str  # ce | focal | ldam | logit_adjust | balanced_softmax
    weights: str  # none | effective_number | drw | dsb
    normed_head: bool = False  # LDAM's cosine classifier


METHODS: dict[str, Method] = {
    "ce": Method("ce", "none"),
    "cb": Method("ce", "effective_number"),
    "focal": Method("focal", "none"),
    "ldam_drw": Method("ldam", "drw", normed_head=True),
    "logit_adjust": Method("logit_adjust", "none"),
    "balanced_softmax": Method("balanced_softmax", "none"),
    "dsb_ce": Method("ce", "dsb"),
    "dsb_focal": Method("focal", "dsb"),
    "dsb_ldam": Method("ldam", "dsb", normed_head=True),
}


def learning_rate(options: TrainOptions, steps_per_epoch: int) -> optax.Schedule:
    """The LDAM-DRW schedule per step. The warm-up rises linearly per step, (step + 1) /
    warm-up steps; the official code raises it per epoch, (epoch + 1) / 5, which over its
    5 x 390 steps is the same ramp, and which in a run of a few hundred steps would skip the
    warm-up (one warm-up epoch starts at the full rate). The decays start at whole epochs."""
    t = options
    warmup_steps = max(1.0, t.warmup_epochs * steps_per_epoch)

    def schedule(step):
        epoch = step // steps_per_epoch
        lr = t.lr * jnp.minimum(1.0, (step + 1) / warmup_steps)
        factor = jnp.ones((), jnp.float32)
        for start, f in zip(t.decay_epochs, t.decay_factors, strict=True):
            factor = jnp.where(epoch >= start, f, factor)
        return lr * factor

    return schedule


def make_optimizer(options: TrainOptions, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum and PyTorch's coupled weight decay (added to the gradient)."""
    return optax.chain(
        optax.add_decayed_weights(options.weight_decay),
        optax.sgd(learning_rate(options, steps_per_epoch), momentum=options.momentum),
    )


def init_state(
    model: nn.Module,
    method: str,
    image_shape: tuple[int, ...],
    num_classes: int,
    optimizer: optax.GradientTransformation,
    dsb: DSBOptions,
    key: jax.Array,
) -> TrainState:
    """A fresh train state of `model` for images [H, W, C]: parameters from fold_in(key, 1), the
    step keys from fold_in(key, 2), and the model state at step 0 (see the module docstring;
    the pool's feature width is the model's)."""
    x = jnp.zeros((1, *image_shape), jnp.float32)
    variables = model.init(jax.random.fold_in(key, 1), x, train=False)
    model_state: dict[str, Any] = {"step": jnp.zeros((), jnp.int32)}
    if "batch_stats" in variables:
        model_state["batch_stats"] = variables["batch_stats"]
    if METHODS[method].weights == "dsb":
        _, features = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
        model_state["pool"] = init_pool(num_classes, dsb.pool_size, features.shape[-1])
        model_state["scale_weights"] = jnp.ones(num_classes, jnp.float32)
    return TrainState.create(
        variables["params"], optimizer, jax.random.fold_in(key, 2), model_state
    )


def make_loss_fn(
    model: nn.Module,
    method: str,
    counts: np.ndarray,
    options: LossOptions,
    dsb: DSBOptions,
    reweight_step: int,
) -> Callable:
    """`loss_fn(params, model_state, batch, rng) -> (loss, (metrics, model_state))` for
    `parallel.make_train_step(..., with_model_state=True)`; batch {"images": [B, H, W, C],
    "labels": [B]}; counts [C] the training set's class counts."""
    spec = METHODS[method]
    num_classes = len(counts)
    margins = jnp.asarray(losses.ldam_margins(counts, options.ldam_max_margin))
    prior = jnp.asarray(losses.log_prior(counts))
    log_counts = jnp.asarray(np.log(np.asarray(counts, np.float64)), jnp.float32)
    effective = jnp.asarray(losses.effective_number_weights(counts, options.cb_beta))
    ones = jnp.ones(num_classes, jnp.float32)

    def per_example(logits, labels):
        if spec.loss == "ce":
            return losses.cross_entropy(logits, labels)
        if spec.loss == "focal":
            return losses.focal(logits, labels, options.focal_gamma)
        if spec.loss == "ldam":
            z = losses.ldam_logits(logits, labels, margins, options.ldam_scale)
            return losses.cross_entropy(z, labels)
        if spec.loss == "logit_adjust":
            z = losses.adjusted_logits(logits, prior, options.la_tau)
            return losses.cross_entropy(z, labels)
        return losses.cross_entropy(losses.adjusted_logits(logits, log_counts), labels)

    def class_weights(model_state):
        step = model_state["step"]
        if spec.weights == "effective_number":
            return effective
        if spec.weights == "drw":
            return jnp.where(step >= reweight_step, effective, ones)
        if spec.weights == "dsb":
            return jnp.where(step >= reweight_step, model_state["scale_weights"], ones)
        return ones

    def update_pool(model_state, features, labels):
        """The pool with every device's features, and the scale weights (recomputed every
        `dsb.every` steps)."""
        # to="invarying": the gathered arrays are the same on every device (a replicated pool).
        gather = lambda x: lax.all_gather(x, DATA_AXIS, tiled=True, to="invarying")
        features, labels = gather(lax.stop_gradient(features)), gather(labels)
        pool = push(model_state["pool"], features, labels)

        def recompute():
            scales = pool_scales(pool.features, pool.count, d=dsb.d, normalize=dsb.normalize)
            return losses.scale_weights(scales, dsb.alpha, dsb.floor)

        weights = lax.cond(
            model_state["step"] % dsb.every == 0,
            recompute,
            lambda: model_state["scale_weights"],
        )
        return {"pool": pool, "scale_weights": weights}

    def loss_fn(params, model_state, batch, rng):
        del rng  # nothing random in the forward pass
        images, labels = batch["images"], batch["labels"]
        new_state = dict(model_state, step=model_state["step"] + 1)
        if "batch_stats" in model_state:
            variables = {"params": params, "batch_stats": model_state["batch_stats"]}
            (logits, features), updates = model.apply(
                variables, images, train=True, mutable=["batch_stats"]
            )
            new_state["batch_stats"] = lax.pmean(updates["batch_stats"], DATA_AXIS)
        else:
            logits, features = model.apply({"params": params}, images, train=True)
        weights = class_weights(model_state)
        loss = losses.weighted_mean(per_example(logits, labels), labels, weights, DATA_AXIS)
        if spec.weights == "dsb":
            new_state.update(update_pool(model_state, features, labels))
        metrics = {
            "train_top1": jnp.mean(jnp.argmax(logits, -1) == labels),
            "weight_ratio": jnp.max(weights) / jnp.min(weights),
        }
        return loss, (metrics, new_state)

    return loss_fn


def make_predict(model: nn.Module) -> Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]:
    """Jitted `(variables, images [B, H, W, C]) -> (logits [B, C], features [B, p])`, eval
    mode (BatchNorm on its running statistics)."""

    @jax.jit
    def predict(variables, images):
        return model.apply(variables, images, train=False)

    return predict


def predict_all(
    predict: Callable, variables: Any, images: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Logits [N, C] and features [N, p] of in-memory images [N, H, W, C] (the last batch
    padded to the compiled shape; N may be 0)."""
    if not len(images):
        batch = jax.ShapeDtypeStruct((batch_size, *images.shape[1:]), images.dtype)
        shapes = jax.eval_shape(predict, variables, batch)
        return tuple(np.zeros((0, *s.shape[1:]), s.dtype) for s in shapes)
    logits, features = [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        pad = batch_size - len(x)
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        z, f = jax.device_get(predict(variables, x))
        logits.append(z[: len(z) - pad])
        features.append(f[: len(f) - pad])
    return np.concatenate(logits), np.concatenate(features)
