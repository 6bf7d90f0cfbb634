"""Span decoding and the grounding metrics: R@n at IoU m and mIoU.

Decoding (under `jit`, batched): the score of span (i, j) is p_start(i) p_end(j) over the real
positions with i <= j < i + max_len; the top-k spans are mapped to seconds. Two mappings:

- "window" (VSLNet's `index_to_time`): start = i * w, end = (j + 1) * w, w = duration / N;
- "refined": each boundary at the expected position of its distribution over the window and its
  two neighbours, start = (E_i + 1/2) w, end = (E_j + 1/2) w: a boundary label that splits its
  mass between neighbouring windows (SSRN's soft labels) then places it inside a window.

    spans, scores = top_k_spans(start_logits, end_logits, mask, k=5, max_len=N)   # [B, k, 2]
    seconds = spans_to_seconds(spans, start_probs, end_probs, duration, n, refine=True)
    grounding_metrics(seconds, gt_seconds)  # {"r1_iou0.5": ..., "r5_iou0.7": ..., "miou": ...}
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from models.grounding import masked_logits

Array = jax.Array
IOU_THRESHOLDS = (0.3, 0.5, 0.7)
RECALL_AT = (1, 5)


def temporal_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of spans [..., 2] (seconds) with spans broadcastable to it; 0 for empty unions."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    inter = np.clip(
        np.minimum(pred[..., 1], gt[..., 1]) - np.maximum(pred[..., 0], gt[..., 0]), 0, None
    )
    union = np.maximum(pred[..., 1], gt[..., 1]) - np.minimum(pred[..., 0], gt[..., 0])
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def top_k_spans(
    start_logits: Array, end_logits: Array, mask: Array, *, k: int, max_len: int
) -> tuple[Array, Array]:
    """The k best spans (i, j) [B, k, 2] int32 and their scores [B, k], best first.

    start_logits / end_logits: [B, N]; mask: [B, N] real positions; spans have i <= j < i +
    max_len and both ends real. k is clipped to the number of allowed spans of the padded length.
    """
    n = start_logits.shape[1]
    p_start = jax.nn.softmax(masked_logits(start_logits, mask), axis=-1)
    p_end = jax.nn.softmax(masked_logits(end_logits, mask), axis=-1)
    i, j = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
    allowed = (j >= i) & (j < i + max_len)
    valid = allowed[None] & mask[:, :, None] & mask[:, None, :]
    score = jnp.where(valid, p_start[:, :, None] * p_end[:, None, :], -1.0)
    best, flat = jax.lax.top_k(score.reshape(score.shape[0], n * n), min(k, n * n))
    return jnp.stack([flat // n, flat % n], axis=-1).astype(jnp.int32), best


def _local_mean(probs: Array, index: Array) -> Array:
    """Expected position of `probs` [B, N] over {index - 1, index, index + 1} [B, k]."""
    n = probs.shape[1]
    window = jnp.clip(index[..., None] + jnp.arange(-1, 2), 0, n - 1)  # [B, k, 3]
    p = jnp.take_along_axis(probs[:, None, :], window, axis=2)
    p = jnp.where(jnp.abs(window - index[..., None]) <= 1, p, 0.0)
    unique = jnp.concatenate(  # clipped duplicates at the ends count once
        [jnp.ones_like(window[..., :1], bool), window[..., 1:] != window[..., :-1]], axis=-1
    )
    p = p * unique
    return jnp.sum(p * window, -1) / jnp.maximum(jnp.sum(p, -1), 1e-12)


def spans_to_seconds(
    spans: Array,
    start_probs: Array,
    end_probs: Array,
    duration: Array,
    num_positions: Array,
    *,
    refine: bool,
) -> Array:
    """Spans of indices [B, k, 2] -> seconds [B, k, 2] (module docstring); duration and
    num_positions: [B] (each video's N, which may be below the padded length)."""
    width = (duration / num_positions)[:, None]
    if not refine:
        return jnp.stack([spans[..., 0] * width, (spans[..., 1] + 1) * width], axis=-1)
    start = (_local_mean(start_probs, spans[..., 0]) + 0.5) * width
    end = (_local_mean(end_probs, spans[..., 1]) + 0.5) * width
    end = jnp.maximum(end, start)
    upper = duration[:, None]
    return jnp.stack([jnp.clip(start, 0, upper), jnp.clip(end, 0, upper)], axis=-1)


def grounding_metrics(pred_seconds: np.ndarray, gt_seconds: np.ndarray) -> dict[str, float]:
    """R@n at IoU m (n in RECALL_AT, m in IOU_THRESHOLDS) in percent, and mIoU (top-1, percent).

    pred_seconds: [Q, k, 2] ranked spans per query (k >= max(RECALL_AT) for R@5); gt: [Q, 2].
    """
    pred_seconds, gt_seconds = np.asarray(pred_seconds), np.asarray(gt_seconds)
    if pred_seconds.ndim != 3 or gt_seconds.shape != (pred_seconds.shape[0], 2):
        raise ValueError(
            f"need pred [Q, k, 2] and gt [Q, 2], got {pred_seconds.shape}, {gt_seconds.shape}"
        )
    iou = temporal_iou(pred_seconds, gt_seconds[:, None, :])  # [Q, k]
    out = {}
    for n in RECALL_AT:
        if n > iou.shape[1]:
            continue
        best = iou[:, :n].max(axis=1)
        for m in IOU_THRESHOLDS:
            out[f"r{n}_iou{m}"] = 100.0 * float(np.mean(best >= m))
    out["miou"] = 100.0 * float(np.mean(iou[:, 0]))
    return out
