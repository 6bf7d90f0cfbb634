"""Mixup, CutMix and SMMix as batched, jittable JAX functions (no Python loop over images).

All functions take a (per-device) batch of images [B, H, W, C] and integer labels [B] and pair
image i with image B-1-i (the batch flipped), as the timm / SMMix code does. Targets are
label-smoothed one-hot vectors (smoothing s: off value s / K, on value 1 - s + s / K) mixed as
`lam y_i + (1 - lam) y_{B-1-i}`, so `lam` is the share of image i (the target).

SMMix (Chen et al., ICCV 2023; the official `smmix.py`):
  1. attention received per patch, `attn[:, :, 1:, 1:].mean(axis=(1, 2))` of the last block
     (from the model being trained, eval mode, no gradient), on the side x side patch grid;
  2. a window side r drawn uniformly from {int(0.25 side), ..., int(0.75 side)} per batch;
  3. every r x r window (stride 1) scored by its summed attention with a summed-area table;
  4. the target image i keeps everything but its argmin window, into which the source image
     B-1-i's argmax window is pasted patch by patch (the content moves, unlike CutMix);
  5. lam = (side^2 - r^2) / side^2; masks of the target and source regions (for the token head).
Windows are indexed by their top-left patch in row-major order and ties go to the first
window, as `torch.argmin/argmax` over `F.unfold` do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclass(frozen=True)
class MixOptions:
    """The mixing and loss settings of every method (`config.mix`, `--config.mix.<field>`).

    label_smoothing: s of the smoothed one-hot targets (all methods, `none` included);
    mixup_alpha / cutmix_alpha: Beta(alpha, alpha) of Mixup's lam / CutMix's box;
    switch_prob: probability of SMMix (else Mixup) per batch in `smmix` and its ablations;
    cutmix_switch_prob: probability of CutMix (else Mixup) per batch in `mixup_cutmix`;
    min_side_ratio / max_side_ratio: SMMix window sides int(ratio x side) of the patch grid;
    fine_weight / consistency_weight: weights of SMMix's token-head and consistency losses.
    """

    label_smoothing: float = 0.1
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    switch_prob: float = 0.5
    cutmix_switch_prob: float = 0.5
    min_side_ratio: float = 0.25
    max_side_ratio: float = 0.75
    fine_weight: float = 1.0
    consistency_weight: float = 1.0


class Mixed(NamedTuple):
    """images: [B, H, W, C]; targets: [B, K] mixed soft labels; lam: scalar share of image i."""

    images: Array
    targets: Array
    lam: Array


class SMMixed(NamedTuple):
    """The SMMix batch and what its losses need.

    images: [B, H, W, C] mixed images; targets: [B, K] mixed soft labels; lam: scalar;
    target_targets / source_targets: [B, K] smoothed labels of image i and of image B-1-i;
    target_mask / source_mask: [B, N] bool, patches of the mixed image i that come from image i
    / from image B-1-i; side: window side r (int32 scalar); target_corner: [B, 2] top-left
    (row, col) of the window of image i that was replaced; source_corner: [B, 2] top-left of
    the window of image B-1-i that was pasted into image i.
    """

    images: Array
    targets: Array
    lam: Array
    target_targets: Array
    source_targets: Array
    target_mask: Array
    source_mask: Array
    side: Array
    target_corner: Array
    source_corner: Array


def smoothed_one_hot(labels: Array, num_classes: int, smoothing: float) -> Array:
    """[B] int -> [B, K]: 1 - smoothing + smoothing / K on the label, smoothing / K elsewhere."""
    off = smoothing / num_classes
    return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def mix_targets(
    labels: Array, num_classes: int, lam: Array, smoothing: float
) -> tuple[Array, Array, Array]:
    """(mixed [B, K], y_i [B, K], y_{B-1-i} [B, K]) with mixed = lam y_i + (1 - lam) y_flip."""
    y1 = smoothed_one_hot(labels, num_classes, smoothing)
    y2 = y1[::-1]
    return lam * y1 + (1.0 - lam) * y2, y1, y2


def mixup(
    images: Array, labels: Array, key: Array, *, alpha: float, num_classes: int, smoothing: float
) -> Mixed:
    """Mixup: lam ~ Beta(alpha, alpha) per batch, x = lam x_i + (1 - lam) x_{B-1-i}."""
    lam = jax.random.beta(key, alpha, alpha).astype(images.dtype)
    mixed = lam * images + (1.0 - lam) * images[::-1]
    return Mixed(mixed, mix_targets(labels, num_classes, lam, smoothing)[0], lam)


def cutmix(
    images: Array, labels: Array, key: Array, *, alpha: float, num_classes: int, smoothing: float
) -> Mixed:
    """CutMix as timm (`rand_bbox`, `correct_lam`): lam ~ Beta(alpha, alpha); a box of sides
    int(H sqrt(1 - lam)) x int(W sqrt(1 - lam)) centred at a uniform pixel and clipped to the
    image takes the pixels of image B-1-i at the same place; lam = 1 - box area / image area."""
    b, h, w, _ = images.shape
    k_lam, k_y, k_x = jax.random.split(key, 3)
    lam0 = jax.random.beta(k_lam, alpha, alpha)
    cut = jnp.sqrt(1.0 - lam0)
    ch, cw = (h * cut).astype(jnp.int32), (w * cut).astype(jnp.int32)
    cy, cx = jax.random.randint(k_y, (), 0, h), jax.random.randint(k_x, (), 0, w)
    y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch // 2, 0, h)
    x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw // 2, 0, w)
    rows, cols = jnp.arange(h), jnp.arange(w)
    box = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    mixed = jnp.where(box[None, :, :, None], images[::-1], images)
    lam = (1.0 - (y1 - y0) * (x1 - x0) / (h * w)).astype(images.dtype)
    return Mixed(mixed, mix_targets(labels, num_classes, lam, smoothing)[0], lam)


def received_attention(attention: Array, *, class_token: bool = True) -> Array:
    """[B, heads, T, T] -> [B, N]: attention each patch receives from the patch queries,
    averaged over heads and queries (`attn[:, :, 1:, 1:].mean(dim=(1, 2))`)."""
    a = attention[:, :, 1:, 1:] if class_token else attention
    return a.mean(axis=(1, 2))


def window_scores(grid: Array, r: Array) -> tuple[Array, Array]:
    """Summed value of every r x r window of `grid` [B, S, S], indexed by its top-left cell.

    Returns (scores [B, S, S], valid [S, S]): scores[b, i, j] = grid[b, i:i+r, j:j+r].sum() for
    i, j <= S - r (valid); other entries are meaningless. `r` may be a traced int (one shape for
    every window size): four lookups in a zero-padded summed-area table.
    """
    b, s, _ = grid.shape
    table = jnp.pad(jnp.cumsum(jnp.cumsum(grid, axis=1), axis=2), ((0, 0), (1, s), (1, s)))
    # table[:, i, j] = sum of grid[:, :i, :j]; padded to [B, 2S + 1, 2S + 1] for the shifted reads
    tl = table[:, :s, :s]
    tr = jax.lax.dynamic_slice(table, (0, 0, r), (b, s, s))
    bl = jax.lax.dynamic_slice(table, (0, r, 0), (b, s, s))
    br = jax.lax.dynamic_slice(table, (0, r, r), (b, s, s))
    idx = jnp.arange(s)
    valid = (idx[:, None] <= s - r) & (idx[None, :] <= s - r)
    return br - tr - bl + tl, valid


def select_windows(received: Array, side: int, r: Array) -> tuple[Array, Array]:
    """Top-left corners [B, 2] (row, col) of the argmin r x r window of each image (targets)
    and of the argmax window of image B-1-i (the source pasted into image i).

    received: [B, side * side] attention per patch, row-major over the patch grid.
    """
    scores, valid = window_scores(received.reshape(-1, side, side), r)
    flat = scores.reshape(scores.shape[0], -1)
    ok = valid.reshape(-1)[None]
    low = jnp.argmin(jnp.where(ok, flat, jnp.inf), axis=1)
    high = jnp.argmax(jnp.where(ok, flat, -jnp.inf), axis=1)[::-1]
    return jnp.stack(jnp.divmod(low, side), -1), jnp.stack(jnp.divmod(high, side), -1)


def window_mask(corner: Array, r: Array, side: int) -> Array:
    """[B, 2] top-left corners -> [B, side * side] bool, True inside the r x r window."""
    idx = jnp.arange(side)
    rows = (idx[None] >= corner[:, :1]) & (idx[None] < corner[:, :1] + r)
    cols = (idx[None] >= corner[:, 1:]) & (idx[None] < corner[:, 1:] + r)
    return (rows[:, :, None] & cols[:, None, :]).reshape(corner.shape[0], -1)


def patchify(images: Array, patch: int) -> Array:
    """[B, H, W, C] -> [B, (H/p) * (W/p), p * p * C], row-major over the patch grid."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: Array, patch: int, height: int, width: int) -> Array:
    """Inverse of `patchify`: [B, N, p * p * C] -> [B, H, W, C]."""
    b = patches.shape[0]
    c = patches.shape[-1] // (patch * patch)
    x = patches.reshape(b, height // patch, width // patch, patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, height, width, c)


def paste_windows(
    images: Array, target_corner: Array, source_corner: Array, r: Array, patch: int
) -> tuple[Array, Array]:
    """Pastes the r x r patch window of image B-1-i at `source_corner[i]` into image i at
    `target_corner[i]`, keeping the patches' arrangement; returns (images [B, H, W, C],
    source_mask [B, N] True where the mixed image holds pasted patches). One gather."""
    b, h, w, _ = images.shape
    side = h // patch
    if h != w or h % patch:
        raise ValueError(f"SMMix needs square images that split into patches {patch}, got {h}x{w}")
    src = patchify(images[::-1], patch)
    dst = patchify(images, patch)
    inside = window_mask(target_corner, r, side)  # [B, N]
    n = jnp.arange(side * side)
    rows, cols = n // side, n % side
    shift = source_corner - target_corner  # [B, 2]
    from_idx = (rows[None] + shift[:, :1]) * side + cols[None] + shift[:, 1:]
    from_idx = jnp.where(inside, from_idx, 0)  # outside the window: unused
    pasted = jnp.take_along_axis(src, from_idx[..., None], axis=1)
    mixed = jnp.where(inside[..., None], pasted, dst)
    return unpatchify(mixed, patch, h, w), inside


def sample_window_side(key: Array, side: int, min_ratio: float, max_ratio: float) -> Array:
    """r uniform in {int(min_ratio side), ..., int(max_ratio side)} (int32 scalar)."""
    lo, hi = int(side * min_ratio), int(side * max_ratio)
    if not 1 <= lo <= hi <= side:
        raise ValueError(
            f"SMMix window sides {lo}..{hi} (ratios {min_ratio}, {max_ratio} of the {side}-patch "
            "grid) must satisfy 1 <= min <= max <= side"
        )
    return jax.random.randint(key, (), lo, hi + 1)


def smmix(
    images: Array,
    labels: Array,
    received: Array,
    key: Array,
    *,
    patch: int,
    num_classes: int,
    smoothing: float,
    min_ratio: float = 0.25,
    max_ratio: float = 0.75,
    side_r: Array | None = None,
) -> SMMixed:
    """SMMix of a batch given the attention each patch received, `received` [B, N].

    `side_r` fixes the window side (else it is drawn from `key`)."""
    side = images.shape[1] // patch
    if received.shape != (images.shape[0], side * side):
        raise ValueError(
            f"received attention has shape {received.shape}, expected {(images.shape[0], side**2)} "
            f"for {images.shape[1]}-pixel images in patches of {patch}"
        )
    r = sample_window_side(key, side, min_ratio, max_ratio) if side_r is None else side_r
    r = jnp.asarray(r, jnp.int32)
    target_corner, source_corner = select_windows(received, side, r)
    mixed, source_mask = paste_windows(images, target_corner, source_corner, r, patch)
    lam = ((side * side - r * r) / (side * side)).astype(images.dtype)
    targets, y1, y2 = mix_targets(labels, num_classes, lam, smoothing)
    return SMMixed(
        mixed, targets, lam, y1, y2, ~source_mask, source_mask, r, target_corner, source_corner
    )
