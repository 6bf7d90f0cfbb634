"""Sinusoidal embeddings of scalars (diffusion time steps), shared by the U-Net and the diffusion
ViTs.

    emb = timestep_embedding(t, 128)   # t: [B] (integer steps or real times) -> [B, 128]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def timestep_embedding(t: Array, dim: int, *, max_period: float = 10_000.0) -> Array:
    """The transformer / DDPM sinusoidal embedding: [cos(t w_i), sin(t w_i)] for the
    frequencies w_i = max_period^(-i / (dim/2)), i = 0..dim/2-1 (the layout of guided-diffusion,
    DiT and U-ViT's `timestep_embedding`; DDPM's TF code puts sin first, an equivalent
    permutation). t: [B] -> [B, dim] float32; an odd `dim` gets one zero column at the end.
    """
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding expects t of shape [B], got {t.shape}")
    half = dim // 2
    freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb
