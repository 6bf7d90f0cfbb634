"""Vision Transformers as diffusion denoisers: a vanilla ViT, IU-ViT and ASCEND (Cao et al.,
arXiv 2212.13771), with U-ViT's (Bao et al. 2023) token conditioning and long skips, or DiT's
(Peebles & Xie 2023) adaLN-Zero conditioning.

    model = DiffusionViT(**DIFFUSION_VITS["iu_vit"], patch_size=2, hidden_dim=512,
                         encoder_depth=6, decoder_depth=6, num_heads=8, num_classes=10)
    eps = model.apply(params, x, t, y, train=False)   # x [B, H, W, C], t [B], y [B] -> [B, H, W, C]

One module, three designs (`DIFFUSION_VITS`):
  vanilla  a standard ViT: one conditioning token (time embedding + class embedding), pre-LN
           blocks run in sequence, final LayerNorm, a linear un-patchify and nothing after it.
  iu_vit   U-ViT's improvements: time and class as separate tokens, long skips from the first
           half of the blocks to the second (Linear on the concatenation [x, skip], before the
           block), a 3x3 conv after the un-patchify.
  ascend   IU-ViT split into a deeper encoder and a shallower decoder (`encoder_depth` >
           `decoder_depth`), the decoder's long skips spread over the encoder (`skip_sources`).
Every design has `encoder_depth` + 1 (middle) + `decoder_depth` blocks of width `hidden_dim`, so
at equal total depth the designs differ only by the skip Linears and the conv (a few percent).

`conditioning="adaln"` replaces the tokens by DiT's adaLN-Zero: c = time MLP + class embedding;
every block gets SiLU(c) -> Linear(6 D) = shift, scale, gate for the attention and the MLP, on
LayerNorms without affine parameters; every modulation and the output Linear start at zero (the
model outputs zero at init).

The time step enters as the sinusoidal embedding (`models.embeddings`) through Dense(D) -> SiLU
-> Dense(D). Labels: y in 0..num_classes-1, and y == num_classes is the null label of
classifier-free guidance (the class embedding has num_classes + 1 rows); with num_classes == 0
the model is unconditional and ignores y.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.embeddings import timestep_embedding
from models.vit import Attention, Block, mlp_branch

Array = jax.Array

_trunc = nn.initializers.truncated_normal(stddev=0.02)
_zeros = nn.initializers.zeros

CONDITIONINGS = ("tokens", "adaln")
DIFFUSION_VITS: dict[str, dict[str, Any]] = {
    "vanilla": dict(long_skips=False, separate_class_token=False, conv_out=False),
    "iu_vit": dict(long_skips=True, separate_class_token=True, conv_out=True),
    "ascend": dict(long_skips=True, separate_class_token=True, conv_out=True),
}


def skip_sources(encoder_depth: int, decoder_depth: int) -> list[int]:
    """The encoder block whose output feeds decoder block j's long skip, for j = 0..Dd-1:
    E - 1 - floor(j E / Dd). With E == Dd this is U-ViT's stack (the last encoder block to the
    first decoder block, ..., the first to the last); with E > Dd the skips come from evenly
    spaced encoder blocks, still the deepest first (E = 8, Dd = 4: 7, 5, 3, 1)."""
    if encoder_depth < 1 or decoder_depth < 1:
        raise ValueError(
            f"long skips need encoder and decoder depths >= 1, got {encoder_depth}, {decoder_depth}"
        )
    return [encoder_depth - 1 - (j * encoder_depth) // decoder_depth for j in range(decoder_depth)]


def unpatchify(tokens: Array, patch_size: int, height: int, channels: int) -> Array:
    """[B, N, p * p * C] patch values (row-major grid, each patch row-major then channel)
    -> [B, H, W, C] with H = height and W = N p^2 / H."""
    b, n, _ = tokens.shape
    p = patch_size
    gh = height // p
    gw = n // gh
    x = tokens.reshape(b, gh, gw, p, p, channels)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * p, gw * p, channels)


def _modulate(x: Array, shift: Array, scale: Array) -> Array:
    return x * (1.0 + scale[:, None]) + shift[:, None]


class AdaLNZeroBlock(nn.Module):
    """DiT's block: x + gate_a Attn(mod(LN(x))), then x + gate_m MLP(mod(LN(x))), with
    (shift, scale, gate) x 2 from SiLU(c) through a zero-initialised Linear.
    x [B, T, D], c [B, D] -> [B, T, D]."""

    num_heads: int
    mlp_ratio: float = 4.0

    @nn.compact
    def __call__(self, x: Array, c: Array, *, train: bool) -> Array:
        d = x.shape[-1]
        mod = nn.Dense(6 * d, kernel_init=_zeros, name="adaln")(nn.silu(c))
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod, 6, axis=-1)
        norm = lambda name: nn.LayerNorm(1e-6, use_scale=False, use_bias=False, name=name)  # noqa: E731
        y, _ = Attention(self.num_heads, name="attn")(
            _modulate(norm("norm1")(x), shift_a, scale_a), train=train
        )
        x = x + gate_a[:, None] * y
        y = mlp_branch(_modulate(norm("norm2")(x), shift_m, scale_m), self.mlp_ratio, 0.0, train)
        return x + gate_m[:, None] * y


class DiffusionViT(nn.Module):
    """A ViT denoiser: (x [B, H, W, C], t [B], y [B]) -> epsilon [B, H, W, C].

    Attributes:
      patch_size: side p of the square patches (H, W multiples of p).
      hidden_dim, num_heads, mlp_ratio: width D, heads, MLP width ratio.
      encoder_depth, decoder_depth: blocks before and after the middle block.
      long_skips: U-ViT's skips from the encoder to the decoder (`skip_sources`).
      separate_class_token: time and class as two tokens (else one token, their sum).
      conv_out: a 3x3 conv on the un-patchified output.
      conditioning: "tokens" (U-ViT) or "adaln" (DiT's adaLN-Zero).
      num_classes: 0 for unconditional; else y in 0..num_classes (num_classes = null label).
    """

    patch_size: int = 2
    hidden_dim: int = 512
    encoder_depth: int = 6
    decoder_depth: int = 6
    num_heads: int = 8
    mlp_ratio: float = 4.0
    long_skips: bool = True
    separate_class_token: bool = True
    conv_out: bool = True
    conditioning: str = "tokens"
    num_classes: int = 0

    @nn.compact
    def __call__(self, x: Array, t: Array, y: Array | None = None, *, train: bool) -> Array:
        if x.ndim != 4:
            raise ValueError(f"DiffusionViT expects x [B, H, W, C], got shape {x.shape}")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(
                f"unknown conditioning {self.conditioning!r}; "
                f"choose from {', '.join(CONDITIONINGS)}"
            )
        b, h, w, c = x.shape
        p, d = self.patch_size, self.hidden_dim
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        if self.num_classes and y is None:
            raise ValueError("a class-conditional DiffusionViT needs labels y [B]")
        tokens = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", name="patch")(x)
        tokens = tokens.reshape(b, (h // p) * (w // p), d)

        time = nn.Dense(d, kernel_init=_trunc, name="time_fc1")(timestep_embedding(t, d))
        time = nn.Dense(d, kernel_init=_trunc, name="time_fc2")(nn.silu(time))
        label = (
            nn.Embed(self.num_classes + 1, d, embedding_init=_trunc, name="label")(y)
            if self.num_classes
            else None
        )
        adaln = self.conditioning == "adaln"
        if adaln:
            cond = time if label is None else time + label
            extras = []
        elif label is None:
            extras = [time]
        elif self.separate_class_token:
            extras = [time, label]
        else:
            extras = [time + label]
        num_extra = len(extras)
        tokens = jnp.concatenate([e[:, None] for e in extras] + [tokens], axis=1)
        pos = self.param("pos_embedding", _trunc, (1, tokens.shape[1], d))
        tokens = tokens + pos

        def block(name: str) -> nn.Module:
            if adaln:
                return AdaLNZeroBlock(self.num_heads, self.mlp_ratio, name=name)
            return Block(self.num_heads, self.mlp_ratio, name=name)

        def run(blk: nn.Module, z: Array) -> Array:
            return blk(z, cond, train=train) if adaln else blk(z, train=train)[0]

        encoder_outputs = []
        for i in range(self.encoder_depth):
            tokens = run(block(f"encoder{i}"), tokens)
            encoder_outputs.append(tokens)
        tokens = run(block("middle"), tokens)
        sources = skip_sources(self.encoder_depth, self.decoder_depth) if self.long_skips else []
        for j in range(self.decoder_depth):
            if self.long_skips:
                skip = encoder_outputs[sources[j]]
                tokens = nn.Dense(d, kernel_init=_trunc, name=f"skip{j}")(
                    jnp.concatenate([tokens, skip], axis=-1)
                )
            tokens = run(block(f"decoder{j}"), tokens)

        patch_dim = p * p * c
        if adaln:  # DiT's FinalLayer
            shift, scale = jnp.split(
                nn.Dense(2 * d, kernel_init=_zeros, name="final_adaln")(nn.silu(cond)), 2, -1
            )
            tokens = nn.LayerNorm(1e-6, use_scale=False, use_bias=False, name="norm")(tokens)
            tokens = _modulate(tokens, shift, scale)
            out = nn.Dense(patch_dim, kernel_init=_zeros, name="to_patches")(tokens)
        else:
            tokens = nn.LayerNorm(1e-6, name="norm")(tokens)
            out = nn.Dense(patch_dim, kernel_init=_trunc, name="to_patches")(tokens)
        out = unpatchify(out[:, num_extra:], p, h, c)
        if self.conv_out:
            out = nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), name="conv_out")(out)
        return out
