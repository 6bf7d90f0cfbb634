"""The grounding losses: VSLNet's boundary and highlighting losses, and SSRN's siamese soft
boundary labels.

Siamese reasoning (SSRN, after the SiaSamRea template). A training video is sampled K + 1 times
at the same stride: the anchor sequence and K siamese sequences whose windows are offset by a
fraction of a stride. For each position i the K + 1 frames of index i (one per sequence) form a
group. Within the group, the affinity `A(a, b) = norm(F f_a) . norm(F f_b) / tau` of projected
features, its diagonal zeroed (a frame does not vote for itself) and row-softmaxed, propagates the
groups' boundary probabilities P [K + 1, N] (each sequence's start, or end, distribution):
`Q = w * W1 A P + (1 - w) * W2 P`, w = 0.5. The two boundary channels have their own heads, so
W1 and W2 (class mixing in the template) are identities here. The anchor's row of Q, renormalised
over the positions, is its soft boundary label, and `CE(Q, P_anchor)` is added to the
ground-truth loss of every sequence. P enters Q without gradient (the siamese predictions are the
teacher); the projection F learns through A which siamese frames to trust.

Why it resolves sub-window boundaries: a boundary a fraction f into the anchor's window i lies in
window i of a siamese sequence offset by u when u < f and in window i - 1 when u > f (a sequence's
window index counts from its own offset). Offsets spread over the stride make the siamese
distributions, read at the anchor's positions, split the boundary mass between neighbouring
positions in proportion to f, which a one-hot label at window i cannot say.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from models.grounding import NEG_INF

Array = jax.Array


def boundary_loss(logits: Array, index: Array) -> Array:
    """Mean cross-entropy of start (or end) `logits` [B, N] against indices [B]."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, index))


def inside_labels(start: Array, end: Array, n: int, extend: float) -> Array:
    """VSLNet's highlighting target [B, N] float: 1 on [start - e, end + e] with
    e = extend * (end - start + 1) positions (the foreground extended into the context)."""
    ext = jnp.floor(extend * (end - start + 1).astype(jnp.float32)).astype(jnp.int32)
    pos = jnp.arange(n)[None, :]
    return ((pos >= (start - ext)[:, None]) & (pos <= (end + ext)[:, None])).astype(jnp.float32)


def highlight_loss(logits: Array, labels: Array, mask: Array) -> Array:
    """Masked binary cross-entropy of the inside scores [B, N], as VSLNet's (mean over the real
    positions)."""
    per = optax.sigmoid_binary_cross_entropy(jnp.where(mask, logits, 0.0), labels)
    return jnp.sum(per * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def group_affinity(features: Array, mask: Array, temperature: float) -> Array:
    """Row-softmaxed affinity within each position's group of frames.

    features: [B, S, N, P] projected frame features of S = K + 1 sequences (anchor first);
    mask: [B, N] real positions. Returns A [B, N, S, S]: A[b, i, a, c] is the affinity of frame
    (a, i) to frame (c, i), cosine / temperature with the diagonal removed before the softmax, so
    each row sums to one over the other S - 1 frames (S >= 2).
    """
    f = features / jnp.maximum(jnp.linalg.norm(features, axis=-1, keepdims=True), 1e-6)
    cos = jnp.einsum("bsnp,btnp->bnst", f, f) / temperature
    s = features.shape[1]
    logits = jnp.where(jnp.eye(s, dtype=bool), NEG_INF, cos)
    return jax.nn.softmax(logits, axis=-1) * mask[:, :, None, None]


def soft_boundary_labels(affinity: Array, probs: Array, mask: Array, weight: float) -> Array:
    """The anchor's soft boundary label [B, N]: row 0 of Q = w A P + (1 - w) P, renormalised.

    affinity: [B, N, S, S] from `group_affinity`; probs: [B, S, N] boundary distributions of the
    S sequences (used without gradient); mask: [B, N].
    """
    p = jax.lax.stop_gradient(probs)
    propagated = jnp.einsum("bnt,btn->bn", affinity[:, :, 0, :], p)  # (A P) for the anchor row
    q = (weight * propagated + (1.0 - weight) * p[:, 0]) * mask
    return q / jnp.maximum(jnp.sum(q, axis=-1, keepdims=True), 1e-12)


def soft_label_loss(labels: Array, logits: Array) -> Array:
    """Mean CE(Q, P_anchor) = -sum_i Q_i log softmax(logits)_i over the batch."""
    return jnp.mean(optax.softmax_cross_entropy(logits, labels))
