"""The jitted pieces of an SMMix run: optimizer (AdamW, cosine with warm-up, optional EMA of the
weights), the per-method losses (none / Mixup / CutMix / SMMix and its ablations) and evaluation.
Everything random happens inside the jitted step from the step's key. The settings come as
frozen options dataclasses: `TrainOptions` (here), `mixing.MixOptions`, `model.ModelOptions`.

Methods (`config.methods`, comma-separated):
  none           label-smoothed cross-entropy on the augmented images
  mixup          Mixup every batch, Beta(mixup_alpha, mixup_alpha)
  cutmix         CutMix every batch, Beta(cutmix_alpha, cutmix_alpha)
  mixup_cutmix   the DeiT recipe: Mixup or CutMix per batch (switch probability 0.5)
  smmix          SMMix with probability `MixOptions.switch_prob` per batch, else Mixup; all 3 losses
  smmix_no_fine  SMMix without the fine-grained token-head loss
  smmix_no_con   SMMix without the consistency KL
  smmix_only     SMMix on every batch (no Mixup switch): used to time the SMMix step
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from research.smmix import mixing
from research.smmix.losses import consistency_kl, soft_cross_entropy, top1_correct
from research.smmix.model import SMMixViT
from research.training.parallel import DATA_AXIS

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


@dataclass(frozen=True)
class TrainOptions:
    """The schedule and optimizer of one run (`config.train`, `--config.train.<field>`).

    batch_size: global batch; epochs: passes over the training set; base_lr: the DeiT
    learning rate per batch of 512 (peak lr = base_lr x batch_size / 512); warmup_epochs /
    warmup_lr: linear warm-up from warmup_lr; min_lr: end of the cosine decay; weight_decay:
    AdamW's, on matrices only; grad_clip: global-norm clipping (0: none, as DeiT); ema_decay:
    > 0 also keeps (and evaluates) an EMA of the weights.
    """

    batch_size: int = 64
    epochs: int = 30
    base_lr: float = 3.2e-2  # x batch / 512 (DeiT scaling): 4e-3 at batch 64
    warmup_epochs: float = 2.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    grad_clip: float = 0.0
    ema_decay: float = 0.0


# method -> (mixing, fine-grained loss, consistency loss)
METHODS: dict[str, tuple[str, bool, bool]] = {
    "none": ("none", False, False),
    "mixup": ("mixup", False, False),
    "cutmix": ("cutmix", False, False),
    "mixup_cutmix": ("mixup_cutmix", False, False),
    "smmix": ("smmix", True, True),
    "smmix_no_fine": ("smmix", False, True),
    "smmix_no_con": ("smmix", True, False),
    "smmix_only": ("smmix_only", True, True),
}

# the (a, b) method pairs whose top-1 difference every report states: SMMix against each
# baseline and ablation
COMPARISONS = (
    ("smmix", "cutmix"),
    ("smmix", "none"),
    ("smmix", "mixup"),
    ("smmix", "smmix_no_fine"),
    ("smmix", "smmix_no_con"),
)


def parse_methods(spec: str) -> list[str]:
    names = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(
            f"config.methods={spec!r}: unknown method(s) {unknown}; "
            f"choose from {', '.join(METHODS)}"
        )
    return names


class EmaState(NamedTuple):
    """An exponential moving average of the parameters, carried in the optimizer state."""

    ema: Any


def track_ema(decay: float) -> optax.GradientTransformation:
    """Last transform of a chain: leaves the updates alone and keeps `ema <- decay ema +
    (1 - decay) (params + updates)`, the parameters after this step (timm ModelEma)."""

    def init(params):
        return EmaState(jax.tree.map(jnp.copy, params))  # own buffers: donation-safe

    def update(updates, state, params):
        new = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, new)
        return updates, EmaState(ema)

    return optax.GradientTransformation(init, update)


def ema_params(opt_state: Any) -> Any | None:
    """The EMA parameters inside an optimizer state from `make_optimizer`, or None."""
    for s in opt_state if isinstance(opt_state, tuple) else ():
        if isinstance(s, EmaState):
            return s.ema
    return None


def _decay_mask(params: Any) -> Any:
    """Weight decay on matrices and kernels only: not on biases, norms, position embedding and
    class token (timm `no_weight_decay` + 1-D parameters)."""
    flat = traverse_util.flatten_dict(params)
    mask = {k: v.ndim > 1 and k[-1] not in ("pos_embedding", "cls") for k, v in flat.items()}
    return traverse_util.unflatten_dict(mask)


class ScheduleState(NamedTuple):
    """The learning-rate schedule's position and shape, carried in the optimizer state: the
    step count and the warm-up / total lengths in steps (int32 scalars). The lengths are data,
    not constants of the compiled step, so `set_schedule` changes them without recompiling."""

    count: jax.Array
    warmup_steps: jax.Array
    total_steps: jax.Array


def schedule_lengths(
    options: TrainOptions, num_steps: int, steps_per_epoch: int
) -> tuple[int, int]:
    """(warm-up steps, total steps) of `options` for a run of `num_steps`: warmup_epochs of
    steps (at least 1), and a total of at least warm-up + 1."""
    warmup = max(int(round(options.warmup_epochs * steps_per_epoch)), 1)
    return warmup, max(num_steps, warmup + 1)


def lr_at(options: TrainOptions, count: jax.Array, warmup: jax.Array, total: jax.Array):
    """DeiT: lr = base_lr x batch / 512, linear warm-up from warmup_lr over `warmup` steps,
    cosine decay to min_lr at step `total` (per step rather than timm's per epoch); the values
    of `optax.warmup_cosine_decay_schedule(warmup_lr, peak, warmup, total, min_lr)`."""
    t = options
    peak = t.base_lr * t.batch_size / 512.0
    count = jnp.asarray(count, jnp.float32)
    warmup = jnp.asarray(warmup, jnp.float32)
    decay = jnp.maximum(jnp.asarray(total, jnp.float32) - warmup, 1.0)
    rising = t.warmup_lr + (peak - t.warmup_lr) * count / warmup
    done = jnp.clip(count - warmup, 0.0, decay) / decay
    falling = t.min_lr + (peak - t.min_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * done))
    return jnp.where(count < warmup, rising, falling)


def scale_by_warmup_cosine(
    options: TrainOptions, warmup_steps: int, total_steps: int
) -> optax.GradientTransformation:
    """`updates x -lr_at(count)`, the schedule's lengths kept in a `ScheduleState`."""

    def init(params):
        del params
        return ScheduleState(
            jnp.zeros((), jnp.int32),
            jnp.asarray(warmup_steps, jnp.int32),
            jnp.asarray(total_steps, jnp.int32),
        )

    def update(updates, state, params=None):
        del params
        lr = lr_at(options, state.count, state.warmup_steps, state.total_steps)
        updates = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)
        return updates, state._replace(count=optax.safe_int32_increment(state.count))

    return optax.GradientTransformation(init, update)


def set_schedule(opt_state: Any, warmup_steps: int, total_steps: int) -> Any:
    """`opt_state` (from `make_optimizer`) with the schedule's lengths replaced, e.g. once a
    run's step budget is known after its steps were compiled; the count is kept."""

    def swap(s):
        if isinstance(s, ScheduleState):
            return s._replace(
                warmup_steps=jnp.asarray(warmup_steps, jnp.int32),
                total_steps=jnp.asarray(total_steps, jnp.int32),
            )
        return s

    return jax.tree.map(swap, opt_state, is_leaf=lambda s: isinstance(s, ScheduleState))


def make_optimizer(
    options: TrainOptions, num_steps: int, steps_per_epoch: int
) -> optax.GradientTransformation:
    """AdamW (optax.adamw's chain: Adam, decoupled weight decay on `_decay_mask`, then the
    learning rate) on the warm-up + cosine schedule of `num_steps` (the steps `train_loop`
    runs; `set_schedule` changes it later), with optional clipping before it and EMA after."""
    t = options
    parts = []
    if t.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(t.grad_clip))
    parts += [
        optax.scale_by_adam(),
        optax.add_decayed_weights(t.weight_decay, _decay_mask),
        scale_by_warmup_cosine(options, *schedule_lengths(options, num_steps, steps_per_epoch)),
    ]
    if t.ema_decay > 0:
        parts.append(track_ema(t.ema_decay))
    return optax.chain(*parts)


def make_loss_fn(model: SMMixViT, method: str, mix: mixing.MixOptions, num_classes: int) -> LossFn:
    """`loss_fn(params, {"images": [B, H, W, C], "labels": [B]}, rng) -> (loss, metrics)`, the
    metrics of every method having the same keys (loss_cls, loss_fine, loss_con, smmix, top1)."""
    kind, use_fine, use_con = METHODS[method]
    mc, s = mix, mix.label_smoothing
    patch = model.backbone.patch_size

    def metrics(logits, labels, cls, fine=None, con=None, used=None):
        # zeros_like(cls): in a shard_map every branch of lax.cond must return device-varying
        # values, and so must the terms a method does not use.
        z = jnp.zeros_like(cls)
        fine, con = z if fine is None else fine, z if con is None else con
        used = z if used is None else used
        acc = top1_correct(logits, labels) / labels.shape[0]
        return dict(loss_cls=cls, loss_fine=fine, loss_con=con, smmix=used, train_top1=acc)

    def forward(params, images, rng, regions=None):
        return model.apply(params, images, train=True, regions=regions, rngs={"dropout": rng})

    def plain(params, batch, rng):
        out, _ = forward(params, batch["images"], rng)
        loss = soft_cross_entropy(
            out.logits, mixing.smoothed_one_hot(batch["labels"], num_classes, s)
        )
        return loss, metrics(out.logits, batch["labels"], loss)

    def mixed_loss(mix_fn, alpha):
        def loss_fn(params, batch, rng):
            k_mix, k_drop = jax.random.split(rng)
            m = mix_fn(
                batch["images"],
                batch["labels"],
                k_mix,
                alpha=alpha,
                num_classes=num_classes,
                smoothing=s,
            )
            out, _ = forward(params, m.images, k_drop)
            loss = soft_cross_entropy(out.logits, m.targets)
            return loss, metrics(out.logits, batch["labels"], loss)

        return loss_fn

    mixup_loss = mixed_loss(mixing.mixup, mc.mixup_alpha)
    cutmix_loss = mixed_loss(mixing.cutmix, mc.cutmix_alpha)

    def smmix_loss(params, batch, rng):
        k_mix, k_drop = jax.random.split(rng)
        images, labels = batch["images"], batch["labels"]
        # The attention of the model being trained, on the unmixed batch: eval mode, no gradient.
        plain_out, _ = model.apply(jax.lax.stop_gradient(params), images, train=False)
        received = mixing.received_attention(plain_out.attention)
        m = mixing.smmix(
            images,
            labels,
            received,
            k_mix,
            patch=patch,
            num_classes=num_classes,
            smoothing=s,
            min_ratio=mc.min_side_ratio,
            max_ratio=mc.max_side_ratio,
        )
        regions = jnp.stack([m.target_mask, m.source_mask], axis=1) if use_fine else None
        out, token_logits = forward(params, m.images, k_drop, regions)
        cls = soft_cross_entropy(out.logits, m.targets)
        fine = (
            0.5
            * (
                soft_cross_entropy(token_logits[:, 0], m.target_targets)
                + soft_cross_entropy(token_logits[:, 1], m.source_targets)
            )
            if use_fine
            else None
        )
        con = consistency_kl(out.logits, plain_out.logits, m.lam) if use_con else None
        loss = cls
        if use_fine:
            loss = loss + mc.fine_weight * fine
        if use_con:
            loss = loss + mc.consistency_weight * con
        return loss, metrics(out.logits, labels, cls, fine, con, jnp.ones_like(cls))

    def switch(first: LossFn, second: LossFn, prob: float) -> LossFn:
        """`first` with probability `prob` per batch, else `second` (lax.cond: one runs)."""

        def loss_fn(params, batch, rng):
            k_switch, k = jax.random.split(rng)
            # One draw for the whole global batch (device 0's): a device-varying predicate of
            # lax.cond inside shard_map corrupted memory on the multi-device CPU backend (jax
            # 0.10.2), and a shared switch is the same per-batch rule for the global batch.
            u = jax.lax.all_gather(jax.random.uniform(k_switch), DATA_AXIS)[0]
            return jax.lax.cond(u < prob, first, second, params, batch, k)

        return loss_fn

    if kind == "none":
        return plain
    if kind == "mixup":
        return mixup_loss
    if kind == "cutmix":
        return cutmix_loss
    if kind == "mixup_cutmix":
        return switch(cutmix_loss, mixup_loss, mc.cutmix_switch_prob)
    if kind == "smmix_only":
        return smmix_loss
    return switch(smmix_loss, mixup_loss, mc.switch_prob)


def make_predict(model: SMMixViT) -> Callable[[Any, jax.Array], jax.Array]:
    """Jitted `(params, images [B, H, W, C]) -> class-token logits [B, K]` (eval mode)."""

    @jax.jit
    def predict(params, images):
        return model.apply(params, images, train=False)[0].logits

    return predict


def predict_classes(
    predict: Callable, params: Any, images: np.ndarray, batch_size: int
) -> np.ndarray:
    """The predicted classes int32 [N] of `params` for in-memory images [N, H, W, C] (batches
    padded to one compiled shape)."""
    predicted = [np.zeros(0, np.int32)]
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        pad = batch_size - len(x)
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        pred = np.asarray(jnp.argmax(predict(params, x), -1), np.int32)
        predicted.append(pred[: batch_size - pad])
    return np.concatenate(predicted)


def evaluate_top1(
    predict: Callable, params: Any, images: np.ndarray, labels: np.ndarray, batch_size: int
) -> float:
    """Top-1 accuracy of `params` on in-memory images [N, H, W, C] (batches padded to one
    compiled shape)."""
    predicted = predict_classes(predict, params, images, batch_size)
    return int((predicted == labels).sum()) / len(labels)
