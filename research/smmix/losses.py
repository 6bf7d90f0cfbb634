"""SMMix losses: soft-target cross-entropy, the fine-grained token-head loss, the consistency KL.

    loss = loss_cls + loss_fine + loss_con        (all weights 1 in the official code)
    loss_cls  = CE(head(mixed), lam y_i + (1 - lam) y_{B-1-i})            (soft targets)
    loss_fine = (CE(token_head(pool_target), y_i) + CE(token_head(pool_source), y_{B-1-i})) / 2
    loss_con  = KL(softmax(lam z_i + (1 - lam) z_{B-1-i}) || softmax(head(mixed)))
with z the logits of the unmixed images (eval mode, no gradient), KL averaged over the batch
(`nn.KLDivLoss(reduction="batchmean")(log_softmax(out), softmax(mixed z))`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def soft_cross_entropy(logits: Array, targets: Array) -> Array:
    """Mean over the batch of -sum_k targets log_softmax(logits); [B, K], [B, K] -> scalar."""
    return -(targets * jax.nn.log_softmax(logits.astype(jnp.float32))).sum(-1).mean()


def region_mean(tokens: Array, mask: Array) -> Array:
    """Mean of the tokens inside each region: tokens [B, N, D], mask [B, N] bool -> [B, D]."""
    m = mask.astype(tokens.dtype)[..., None]
    return (tokens * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def consistency_kl(mixed_logits: Array, unmixed_logits: Array, lam: Array) -> Array:
    """KL(p || q) averaged over the batch, p = softmax(lam z + (1 - lam) z[::-1]) (targets
    from the unmixed logits z [B, K]), q = softmax(mixed_logits [B, K])."""
    z = jax.lax.stop_gradient(unmixed_logits.astype(jnp.float32))
    log_p = jax.nn.log_softmax(lam * z + (1.0 - lam) * z[::-1])
    log_q = jax.nn.log_softmax(mixed_logits.astype(jnp.float32))
    return (jnp.exp(log_p) * (log_p - log_q)).sum(-1).mean()


def top1_correct(logits: Array, labels: Array) -> Array:
    """Number of correct top-1 predictions (float32 scalar): logits [B, K], labels [B]."""
    return (jnp.argmax(logits, -1) == labels).sum().astype(jnp.float32)
