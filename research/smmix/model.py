"""The classifier SMMix trains: the shared ViT plus the separate token head of the fine-grained
loss (the official `deit.py` `token_head`, a Linear on region-pooled final patch tokens).

At test time only the class-token head (`ViTOutput.logits`) is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.vit import ViT, ViTOutput, vit_size
from research.smmix.losses import region_mean

Array = jax.Array


@dataclass(frozen=True)
class ModelOptions:
    """The ViT (`config.model`, `--config.model.<field>`).

    size: DeiT `tiny` / `small` / `base`, or `mini`, the configurable CPU size whose width,
    depth and heads are `hidden_dim`, `depth`, `num_heads` (ignored for the DeiT sizes);
    patch_size: p of the p x p patches; mlp_ratio: MLP width / hidden_dim; drop_path: the
    stochastic-depth rate.
    """

    size: str = "mini"
    patch_size: int = 2
    hidden_dim: int = 48
    depth: int = 3
    num_heads: int = 3
    mlp_ratio: float = 4.0
    drop_path: float = 0.0


class SMMixViT(nn.Module):
    """`backbone` ViT with a token head. Call with `regions` [B, M, N] bool masks over the patch
    grid to also get the token head's logits [B, M, K] on each region's mean patch token."""

    backbone: ViT

    @nn.compact
    def __call__(
        self, images: Array, *, train: bool, regions: Array | None = None
    ) -> tuple[ViTOutput, Array | None]:
        out = self.backbone(images, train=train)
        if regions is None:
            return out, None
        head = nn.Dense(
            self.backbone.num_classes,
            kernel_init=nn.initializers.truncated_normal(stddev=0.02),
            name="token_head",
        )
        pooled = jax.vmap(region_mean, in_axes=(None, 1), out_axes=1)(out.patch_tokens, regions)
        return out, head(pooled)

    def init_params(self, key: Array, image_shape: tuple[int, int, int]) -> dict:
        """Parameters for images [B, *image_shape] (backbone and token head)."""
        x = jnp.zeros((1, *image_shape), jnp.float32)
        n = (image_shape[0] // self.backbone.patch_size) * (
            image_shape[1] // self.backbone.patch_size
        )
        return self.init(key, x, train=False, regions=jnp.ones((1, 1, n), bool))


def make_model(options: ModelOptions, image_size: int, num_classes: int) -> SMMixViT:
    """The `SMMixViT` of `options` for square images [B, image_size, image_size, C]."""
    kwargs = vit_size(options.size)
    if options.size == "mini":  # the configurable CPU size
        kwargs.update(
            hidden_dim=options.hidden_dim, depth=options.depth, num_heads=options.num_heads
        )
    vit = ViT(
        num_classes=num_classes,
        patch_size=options.patch_size,
        image_size=image_size,
        mlp_ratio=options.mlp_ratio,
        drop_path_rate=options.drop_path,
        **kwargs,
    )
    return SMMixViT(vit)
