"""The feature storage pool of DSB learning: the most recent (detached) features of each class
in a fixed-size ring buffer per class, updated inside the jitted step (no host round-trip).

    pool = init_pool(num_classes=10, size=128, dim=64)
    pool = push(pool, features, labels)    # features [B, p] (stop_gradient), labels [B]
    scales = scale.pool_scales(pool.features, pool.count)

Under data parallelism, push the features gathered from every device (`lax.all_gather(...,
tiled=True)`), so every device holds the same pool.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class FeaturePool(NamedTuple):
    """features: [C, Q, p] float32 ring buffers; next: [C] int32 the slot the next feature of
    each class goes to; count: [C] int32 filled slots (at most Q)."""

    features: jax.Array
    next: jax.Array
    count: jax.Array


def init_pool(num_classes: int, size: int, dim: int) -> FeaturePool:
    """An empty pool of `size` features of dimension `dim` per class."""
    if min(num_classes, size, dim) < 1:
        raise ValueError(f"init_pool needs positive sizes, got {num_classes}, {size}, {dim}")
    return FeaturePool(
        jnp.zeros((num_classes, size, dim), jnp.float32),
        jnp.zeros(num_classes, jnp.int32),
        jnp.zeros(num_classes, jnp.int32),
    )


def push(pool: FeaturePool, features: jax.Array, labels: jax.Array) -> FeaturePool:
    """Stores features [B, p] under labels [B] int: each class's new features overwrite its
    oldest ones, in batch order; if a batch holds more than Q of one class, its last Q are kept."""
    num_classes, size, _ = pool.features.shape
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32)  # [B, C]
    rank = jnp.take_along_axis(jnp.cumsum(onehot, 0) - onehot, labels[:, None], 1)[:, 0]
    added = onehot.sum(0)  # [C]
    keep = rank >= added[labels] - size  # only the last Q of a class in this batch
    slot = (pool.next[labels] + rank) % size
    row = jnp.where(keep, labels, num_classes)  # out of range: dropped by the scatter
    stored = pool.features.at[row, slot].set(
        features.astype(pool.features.dtype), mode="drop", unique_indices=False
    )
    return FeaturePool(
        stored, (pool.next + added) % size, jnp.minimum(pool.count + added, size).astype(jnp.int32)
    )
