"""A DeiT-style Vision Transformer family in Flax Linen (SMMix's classifier; its blocks are
ASCEND's denoisers', `models/diffusion_vit.py`).

    model = ViT(**vit_size("tiny"), num_classes=1000, patch_size=16)
    out = model.apply(params, images, train=False)   # images: [B, H, W, C]
    out.logits       # [B, num_classes] from the class token (None when num_classes == 0)
    out.patch_tokens # [B, N, D] final patch tokens after the last LayerNorm, N = (H/p) * (W/p)
    out.attention    # [B, heads, T, T] softmax attention of the last block, T = N (+ 1 class token)

Architecture (DeiT / timm `VisionTransformer`): non-overlapping patch embedding (a p x p conv with
stride p), an optional class token, learned position embeddings, `depth` pre-LayerNorm blocks
(multi-head self-attention and a GELU MLP, each with a residual branch scaled by stochastic depth
whose rate grows linearly from 0 to `drop_path_rate` over the blocks), a final LayerNorm and a
linear head on the class token. Initialisation as DeiT: truncated normal (std 0.02) for linear
layers, position embedding and class token; zero biases; LayerNorm eps 1e-6.

All three outputs are computed in every call; under `jit`, XLA drops the ones a caller ignores.
Randomness (stochastic depth, dropout) uses the `dropout` RNG stream and is active only with
`train=True`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

_trunc = nn.initializers.truncated_normal(stddev=0.02)

# The DeiT sizes (patch 16 at 224 x 224) and a CPU-sized default for small images.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_dim=192, depth=12, num_heads=3),
    "small": dict(hidden_dim=384, depth=12, num_heads=6),
    "base": dict(hidden_dim=768, depth=12, num_heads=12),
    "mini": dict(hidden_dim=64, depth=4, num_heads=4),
}


def vit_size(name: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of `ViT` for size `name` (tiny / small / base / mini), with overrides
    (e.g. `vit_size("mini", depth=6)`)."""
    if name not in SIZES:
        raise ValueError(f"unknown ViT size {name!r}; choose from {', '.join(SIZES)}")
    return {**SIZES[name], **overrides}


class ViTOutput(NamedTuple):
    """logits: [B, num_classes] or None; patch_tokens: [B, N, D]; attention: [B, heads, T, T]."""

    logits: Array | None
    patch_tokens: Array
    attention: Array


class DropPath(nn.Module):
    """Stochastic depth: zeroes a whole residual branch per sample with probability `rate` and
    rescales the kept ones by 1 / (1 - rate)."""

    rate: float

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(
            self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1)
        )
        return jnp.where(mask, x / keep, 0.0)


class Attention(nn.Module):
    """Multi-head self-attention that also returns its softmax probabilities [B, heads, T, T]."""

    num_heads: int
    qkv_bias: bool = True
    attention_dropout: float = 0.0
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> tuple[Array, Array]:
        b, t, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"ViT hidden_dim {d} must be divisible by num_heads {self.num_heads}")
        hd = d // self.num_heads
        qkv = nn.Dense(3 * d, use_bias=self.qkv_bias, kernel_init=_trunc, name="qkv")(x)
        q, k, v = jnp.moveaxis(qkv.reshape(b, t, 3, self.num_heads, hd), 2, 0)  # [B, T, H, hd]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * hd**-0.5
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(x.dtype)
        dropped = nn.Dropout(self.attention_dropout)(probs, deterministic=not train)
        y = jnp.einsum("bhqk,bkhd->bqhd", dropped, v).reshape(b, t, d)
        y = nn.Dense(d, kernel_init=_trunc, name="proj")(y)
        return nn.Dropout(self.dropout)(y, deterministic=not train), probs


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

    num_heads: int
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    qkv_bias: bool = True
    attention_dropout: float = 0.0
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> tuple[Array, Array]:
        y, probs = Attention(
            self.num_heads, self.qkv_bias, self.attention_dropout, self.dropout, name="attn"
        )(nn.LayerNorm(epsilon=1e-6, name="norm1")(x), train=train)
        x = x + DropPath(self.drop_path)(y, train=train)
        y = mlp_branch(
            nn.LayerNorm(epsilon=1e-6, name="norm2")(x), self.mlp_ratio, self.dropout, train
        )
        return x + DropPath(self.drop_path)(y, train=train), probs


def mlp_branch(x: Array, mlp_ratio: float, dropout: float, train: bool) -> Array:
    """The block's MLP: Dense(D * mlp_ratio) -> GELU -> Dropout -> Dense(D) -> Dropout on
    x [B, T, D]. Call it inside a compact method: its layers (`fc1`, `fc2`) belong to the
    caller."""
    d = x.shape[-1]
    y = nn.Dense(int(d * mlp_ratio), kernel_init=_trunc, name="fc1")(x)
    y = nn.Dropout(dropout)(nn.gelu(y, approximate=False), deterministic=not train)
    y = nn.Dense(d, kernel_init=_trunc, name="fc2")(y)
    return nn.Dropout(dropout)(y, deterministic=not train)


class ViT(nn.Module):
    """DeiT-style ViT. Input images [B, H, W, C] (any C); H and W multiples of `patch_size`.

    Attributes:
      num_classes: classes of the class-token head; 0 for no head (`logits` is None).
      patch_size: side p of the square patches; the grid is (H / p) x (W / p).
      image_size: if set, the expected H = W (checked at call time, for clear errors).
      hidden_dim, depth, num_heads, mlp_ratio: width D, blocks, heads (D % heads == 0), MLP width
        ratio.
      drop_path_rate: stochastic depth of the last block (linear from 0 at the first).
      dropout, attention_dropout: dropout rates (DeiT: 0).
      class_token: prepend a learned class token (the head reads it); without it the head reads
        the mean patch token.
    """

    num_classes: int
    patch_size: int = 16
    image_size: int | None = None
    hidden_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    qkv_bias: bool = True
    class_token: bool = True
    dtype: Any = jnp.float32

    def grid_side(self, image_side: int) -> int:
        """Patch-grid side for square images of side `image_side`."""
        return image_side // self.patch_size

    @nn.compact
    def __call__(self, images: Array, *, train: bool) -> ViTOutput:
        if images.ndim != 4:
            raise ValueError(f"ViT expects images [B, H, W, C], got shape {images.shape}")
        b, h, w, _ = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        if self.image_size is not None and (h, w) != (self.image_size, self.image_size):
            raise ValueError(
                f"ViT was configured for {self.image_size}x{self.image_size} images, got {h}x{w}"
            )
        d = self.hidden_dim
        x = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="patch")(
            images.astype(self.dtype)
        )
        x = x.reshape(b, (h // p) * (w // p), d)  # row-major over the patch grid
        num_prefix = int(self.class_token)
        if self.class_token:
            cls = self.param("cls", _trunc, (1, 1, d))
            x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(x.dtype), x], axis=1)
        pos = self.param("pos_embedding", _trunc, (1, x.shape[1], d))
        x = nn.Dropout(self.dropout)(x + pos.astype(x.dtype), deterministic=not train)
        probs = None
        for i in range(self.depth):
            rate = self.drop_path_rate * i / max(self.depth - 1, 1)
            x, probs = Block(
                self.num_heads,
                self.mlp_ratio,
                rate,
                self.qkv_bias,
                self.attention_dropout,
                self.dropout,
                name=f"block{i}",
            )(x, train=train)
        x = nn.LayerNorm(epsilon=1e-6, name="norm")(x)
        patches = x[:, num_prefix:]
        logits = None
        if self.num_classes > 0:
            pooled = x[:, 0] if self.class_token else patches.mean(axis=1)
            logits = nn.Dense(self.num_classes, kernel_init=_trunc, dtype=jnp.float32, name="head")(
                pooled
            )
        return ViTOutput(logits, patches, probs)
