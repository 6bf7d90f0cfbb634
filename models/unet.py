"""The DDPM U-Net (Ho et al. 2020), the baseline denoiser of the diffusion models, in Flax Linen.

    model = UNet(num_classes=10)                      # the CIFAR-10 configuration, conditional
    params = model.init(jax.random.PRNGKey(0), x, t, y, train=False)
    eps = model.apply(params, x, t, y, train=True, rngs={"dropout": key})
    # x: [B, H, W, C] float, t: [B] int or float steps, y: [B] int32 labels (num_classes = null)
    # eps: [B, H, W, out_channels] (out_channels defaults to C)

Structure as in the official TF `diffusion/models/unet.py` (and its PyTorch ports): a 3x3 conv
stem to `channels` = ch; a down path of `num_res_blocks` ResBlocks per level (width
ch * channel_mult[i], self-attention after each at the feature-map sides in
`attention_resolutions`) and a stride-2 conv between levels; a middle ResBlock, AttnBlock,
ResBlock; an up path of `num_res_blocks` + 1 ResBlocks per level, each fed the concatenation with
one stored down-path output (the stem, every down block and every downsample, in reverse), and a
nearest x2 upsample + 3x3 conv between levels; then GroupNorm, SiLU and a zero-initialised 3x3
conv. Every ResBlock adds a projection of the time (+ class) embedding: the sinusoidal embedding
of t of width ch, Dense(4ch), SiLU, Dense(4ch), plus a learned label embedding when
`num_classes` > 0 (num_classes + 1 rows, the last the "null" label of classifier-free guidance).
Residual branches end in zero-initialised layers, so at init the network is the identity on its
residual stream and outputs exactly zero. Other kernels use DDPM's initialiser (variance scaling,
fan_avg, uniform); GroupNorm eps 1e-6 as in TF.

The DDPM CIFAR-10 model is the default: ch 128, channel_mult (1, 2, 2, 2), 2 res blocks,
attention at side 16, dropout 0.1, 32x32x3 images -> 35,746,307 parameters (35.7M).
Dropout uses the "dropout" RNG stream and is active only with `train=True`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.embeddings import timestep_embedding

Array = jax.Array

_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")  # DDPM's default_init
_zeros = nn.initializers.zeros


def _conv(features: int, kernel: int = 3, stride: int = 1, zero: bool = False) -> nn.Conv:
    pad = ((kernel // 2, kernel // 2),) * 2  # PyTorch padding=k//2
    init = _zeros if zero else _init
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=pad, kernel_init=init)


class ResBlock(nn.Module):
    """x [B, H, W, C], emb [B, E] -> [B, H, W, out_ch]:
    x' + conv(dropout(SiLU(GN(conv(SiLU(GN(x))) + Dense(SiLU(emb)))))), x' = x or a 1x1 conv."""

    out_ch: int
    groups: int
    dropout: float

    @nn.compact
    def __call__(self, x: Array, emb: Array, *, train: bool) -> Array:
        h = _conv(self.out_ch)(nn.silu(nn.GroupNorm(self.groups, epsilon=1e-6)(x)))
        h = h + nn.Dense(self.out_ch, kernel_init=_init)(nn.silu(emb))[:, None, None, :]
        h = nn.silu(nn.GroupNorm(self.groups, epsilon=1e-6)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = _conv(self.out_ch, zero=True)(h)
        if x.shape[-1] != self.out_ch:
            x = nn.Dense(self.out_ch, kernel_init=_init, name="shortcut")(x)  # a 1x1 conv
        return x + h


class AttnBlock(nn.Module):
    """x [B, H, W, C] -> x + proj(MultiHeadSelfAttention(GN(x))) over the H * W positions."""

    groups: int
    num_heads: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"UNet width {c} is not divisible by num_heads {self.num_heads}")
        d = c // self.num_heads
        h = nn.GroupNorm(self.groups, epsilon=1e-6)(x).reshape(b, hh * ww, c)
        q, k, v = (
            nn.Dense(c, kernel_init=_init, name=n)(h).reshape(b, hh * ww, self.num_heads, d)
            for n in ("q", "k", "v")
        )
        w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) * d**-0.5, axis=-1)
        h = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, hh, ww, c)
        return x + nn.Dense(c, kernel_init=_zeros, name="proj")(h)


class UNet(nn.Module):
    """DDPM U-Net: x [B, H, W, C], t [B], y [B] or None -> epsilon [B, H, W, out_channels].

    Attributes:
      out_channels: output channels; None for the input's C.
      channels: base width ch; level i has width ch * channel_mult[i].
      channel_mult: width multipliers; len - 1 halvings, so H and W must be divisible by
        2 ** (len(channel_mult) - 1).
      num_res_blocks: ResBlocks per level on the down path (+ 1 on the up path).
      attention_resolutions: feature-map sides H that get self-attention after each ResBlock.
      dropout: dropout rate inside the ResBlocks (train=True only, "dropout" RNG stream).
      num_classes: > 0 for class conditioning on y [B] in [0, num_classes]; y == num_classes is
        the null label of classifier-free guidance. 0: unconditional, y is ignored.
      num_heads: attention heads (must divide every width that gets attention).
      num_groups: GroupNorm groups, capped at `channels`; must divide every width.
    """

    out_channels: int | None = None
    channels: int = 128
    channel_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    num_classes: int = 0
    num_heads: int = 1
    num_groups: int = 32

    @nn.compact
    def __call__(self, x: Array, t: Array, y: Array | None = None, *, train: bool) -> Array:
        if x.ndim != 4:
            raise ValueError(f"UNet expects x of shape [B, H, W, C], got {x.shape}")
        b, side_h, side_w, c_in = x.shape
        factor = 2 ** (len(self.channel_mult) - 1)
        if side_h % factor or side_w % factor:
            raise ValueError(
                f"UNet with {len(self.channel_mult)} levels needs H and W divisible by {factor}, "
                f"got {side_h}x{side_w}"
            )
        ch, widths = self.channels, [self.channels * m for m in self.channel_mult]
        groups = min(self.num_groups, ch)
        if any(w % groups for w in [ch, *widths]):
            raise ValueError(f"GroupNorm groups {groups} must divide every width {[ch, *widths]}")
        t = jnp.broadcast_to(jnp.asarray(t), (b,))

        emb = timestep_embedding(t, ch)
        emb = nn.Dense(4 * ch, kernel_init=_init)(emb)
        emb = nn.Dense(4 * ch, kernel_init=_init)(nn.silu(emb))
        if self.num_classes > 0:
            if y is None:
                raise ValueError("UNet with num_classes > 0 needs labels y (num_classes = null)")
            emb = emb + nn.Embed(self.num_classes + 1, 4 * ch, name="label_embed")(y)

        def res(h: Array, out_ch: int) -> Array:
            return ResBlock(out_ch, groups, self.dropout)(h, emb, train=train)

        def attn(h: Array) -> Array:
            if h.shape[1] in self.attention_resolutions:
                return AttnBlock(groups, self.num_heads)(h)
            return h

        hs = [_conv(ch)(x)]
        for i, width in enumerate(widths):
            for _ in range(self.num_res_blocks):
                hs.append(attn(res(hs[-1], width)))
            if i != len(widths) - 1:
                hs.append(_conv(width, stride=2)(hs[-1]))

        h = res(hs[-1], widths[-1])
        h = AttnBlock(groups, self.num_heads)(h)
        h = res(h, widths[-1])

        for i, width in reversed(list(enumerate(widths))):
            for _ in range(self.num_res_blocks + 1):
                h = attn(res(jnp.concatenate([h, hs.pop()], axis=-1), width))
            if i != 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest x2
                h = _conv(width)(h)
        assert not hs

        h = nn.silu(nn.GroupNorm(groups, epsilon=1e-6)(h))
        return _conv(self.out_channels or c_in, zero=True)(h)
