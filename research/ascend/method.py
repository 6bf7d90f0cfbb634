"""The denoisers compared by ASCEND and how they are trained: options, the backbone factory, the
loss, the optimizer with an EMA of the weights.

Backbones (`BACKBONES`): "vit" (vanilla ViT), "iu_vit", "ascend" (`models.diffusion_vit`) and
"unet" (`models.unet`, the DDPM baseline). The ViTs share `depth` = encoder + 1 + decoder blocks;
IU-ViT splits them evenly, ASCEND gives the decoder `ascend_decoder_depth` and the rest to the
encoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from models.diffusion_vit import DIFFUSION_VITS, DiffusionViT
from models.unet import UNet
from research.ascend import diffusion

Array = jax.Array

BACKBONES = ("vit", "iu_vit", "ascend", "unet")
_VIT_DESIGN = {"vit": "vanilla", "iu_vit": "iu_vit", "ascend": "ascend"}


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The backbones' sizes. Defaults: U-ViT-S/2 (patch 2, width 512, 13 blocks, 8 heads) and
    DDPM's CIFAR-10 U-Net (ch 128, multipliers 1-2-2-2, 2 residual blocks, attention at 16x16,
    dropout 0.1).

    conditioning: the ViTs' "tokens" (U-ViT) or "adaln" (DiT's adaLN-Zero).
    depth: the ViTs' blocks, odd (encoder + middle + decoder).
    ascend_decoder_depth: ASCEND's decoder blocks (< (depth - 1) / 2).
    """

    patch_size: int = 2
    hidden_dim: int = 512
    depth: int = 13
    num_heads: int = 8
    mlp_ratio: float = 4.0
    conditioning: str = "tokens"
    ascend_decoder_depth: int = 4
    unet_channels: int = 128
    unet_channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    unet_num_res_blocks: int = 2
    unet_attention_resolutions: tuple[int, ...] = (16,)
    unet_dropout: float = 0.1
    unet_num_groups: int = 32


@dataclasses.dataclass(frozen=True)
class DiffusionOptions:
    """The forward process and conditioning: DDPM's linear schedule over 1,000 steps.
    class_conditional: train with labels (label_dropout of them replaced by the null label, for
    classifier-free guidance)."""

    schedule: str = "linear"
    num_steps: int = 1000
    class_conditional: bool = False
    label_dropout: float = 0.1


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """U-ViT's CIFAR-10 recipe: AdamW (lr 2e-4, weight decay 0.03, betas 0.99 / 0.999), linear
    warm-up over 2,500 steps then constant, batch 128, 500k steps, EMA 0.9999.
    ema_warmup: decay min(ema_decay, (1 + n) / (10 + n)) after n updates (TF's
    ExponentialMovingAverage with num_updates), so short runs average their recent weights;
    clip_norm: global gradient-norm clipping (DDPM: 1; 0 = off)."""

    batch_size: int = 128
    steps: int = 500_000
    lr: float = 2e-4
    weight_decay: float = 0.03
    b1: float = 0.99
    b2: float = 0.999
    warmup_steps: int = 2500
    clip_norm: float = 0.0
    ema_decay: float = 0.9999
    ema_warmup: bool = False


def vit_depths(options: ModelOptions, backbone: str) -> tuple[int, int]:
    """(encoder_depth, decoder_depth) of a ViT backbone: even halves, or ASCEND's split."""
    if options.depth < 3 or options.depth % 2 == 0:
        raise ValueError(f"the ViT depth must be odd and >= 3, got {options.depth}")
    half = (options.depth - 1) // 2
    if backbone != "ascend":
        return half, half
    decoder = options.ascend_decoder_depth
    if not 1 <= decoder < half:
        raise ValueError(
            f"ASCEND's decoder must be shallower than the encoder: ascend_decoder_depth "
            f"{decoder} must be in 1..{half - 1} for depth {options.depth}"
        )
    return options.depth - 1 - decoder, decoder


def make_backbone(options: ModelOptions, backbone: str, num_classes: int) -> nn.Module:
    """The denoiser `backbone` (one of BACKBONES): (x, t, y, train=...) -> epsilon.
    num_classes: 0 for an unconditional model."""
    if backbone == "unet":
        return UNet(
            channels=options.unet_channels,
            channel_mult=tuple(options.unet_channel_mult),
            num_res_blocks=options.unet_num_res_blocks,
            attention_resolutions=tuple(options.unet_attention_resolutions),
            dropout=options.unet_dropout,
            num_groups=options.unet_num_groups,
            num_classes=num_classes,
        )
    if backbone not in _VIT_DESIGN:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
    encoder, decoder = vit_depths(options, backbone)
    return DiffusionViT(
        **DIFFUSION_VITS[_VIT_DESIGN[backbone]],
        patch_size=options.patch_size,
        hidden_dim=options.hidden_dim,
        encoder_depth=encoder,
        decoder_depth=decoder,
        num_heads=options.num_heads,
        mlp_ratio=options.mlp_ratio,
        conditioning=options.conditioning,
        num_classes=num_classes,
    )


def init_params(model: nn.Module, image_shape: tuple[int, ...], key: Array) -> Any:
    """Parameters for images of `image_shape` (H, W, C), initialised under `jit` (one compiled
    call instead of hundreds of eager ones: 12 s -> 3 s for a small U-Net on the CPU)."""
    x = jnp.zeros((2, *image_shape), jnp.float32)
    t = jnp.zeros((2,), jnp.int32)
    return jax.jit(lambda k: model.init({"params": k}, x, t, t, train=False))(key)


def eps_fn(model: nn.Module):
    """`(params, x_t, t, y) -> epsilon` of `model` in evaluation mode (for the samplers)."""

    def apply(params: Any, x: Array, t: Array, y: Array) -> Array:
        return model.apply(params, x, t, y, train=False)

    return apply


def make_loss_fn(
    model: nn.Module, schedule: diffusion.Schedule, opts: DiffusionOptions, num_classes: int
):
    """`(params, batch, rng) -> (loss, {})` for `parallel.make_train_step`; batch: images
    [B, H, W, C] in [-1, 1], labels [B] int32."""

    def loss_fn(params: Any, batch: dict[str, Array], rng: Array):
        k_dropout, k_loss = jax.random.split(rng)

        def predict(x: Array, t: Array, y: Array) -> Array:
            return model.apply(params, x, t, y, train=True, rngs={"dropout": k_dropout})

        loss = diffusion.epsilon_loss(
            predict,
            schedule,
            batch["images"],
            batch["labels"],
            k_loss,
            label_dropout=opts.label_dropout if opts.class_conditional else 0.0,
            null_label=num_classes,
        )
        return loss, {}

    return loss_fn


class EmaState(NamedTuple):
    """The optimizer's state with the EMA of the parameters (`ema`) after `count` updates."""

    inner: Any
    ema: Any
    count: Array


def with_ema(
    optimizer: optax.GradientTransformation, decay: float, *, warmup: bool = False
) -> optax.GradientTransformation:
    """`optimizer` that also keeps ema <- d ema + (1 - d) params_new after every update, with
    d = decay or, with `warmup`, min(decay, (1 + n) / (10 + n)) at the n-th update. The EMA lives
    in the optimizer state, so it is checkpointed, resumed and replicated with it."""

    def init(params: Any) -> EmaState:
        return EmaState(
            optimizer.init(params), jax.tree.map(jnp.array, params), jnp.zeros((), jnp.int32)
        )

    def update(grads: Any, state: EmaState, params: Any = None):
        updates, inner = optimizer.update(grads, state.inner, params)
        new_params = optax.apply_updates(params, updates)
        count = state.count + 1
        d = jnp.float32(decay)
        if warmup:
            n = count.astype(jnp.float32)
            d = jnp.minimum(d, (1.0 + n) / (10.0 + n))
        ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema, new_params)
        return updates, EmaState(inner, ema, count)

    return optax.GradientTransformation(init, update)


def make_optimizer(opts: TrainOptions) -> optax.GradientTransformation:
    """AdamW with linear warm-up then a constant rate, optional clipping, and the weight EMA."""
    schedule = optax.linear_schedule(0.0, opts.lr, max(opts.warmup_steps, 1))
    adamw = optax.adamw(schedule, b1=opts.b1, b2=opts.b2, weight_decay=opts.weight_decay)
    chain = (
        optax.chain(optax.clip_by_global_norm(opts.clip_norm), adamw) if opts.clip_norm else adamw
    )
    return with_ema(chain, opts.ema_decay, warmup=opts.ema_warmup)


def ema_params(opt_state: Any) -> Any:
    """The EMA parameters held by `make_optimizer`'s state."""
    if not isinstance(opt_state, EmaState):
        raise TypeError(f"expected the state of make_optimizer, got {type(opt_state).__name__}")
    return opt_state.ema
