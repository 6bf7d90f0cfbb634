"""The grounding model with SSRN's siamese reasoning: options, the training loss, prediction.

`num_siamese = 0` is the base network (VSLNet's losses on the anchor sampling); `num_siamese = K`
adds K siamese sequences per query, each trained on its own ground truth too, and with
`loss_weight > 0` the soft boundary loss `CE(Q, P_anchor)` (`losses` module docstring); with
`loss_weight = 0` the siamese sequences are extra training samples only (the "siamese"
ablation). Prediction always runs the anchor sampling alone, so SSRN costs nothing extra at test
time.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from models.grounding import GroundingNet, GroundingOutput
from research.ssrn import losses, metrics

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """`models.grounding.GroundingNet`'s fields (VSLNet's defaults: width 128, 8 heads, dropout
    0.2, at most 128 positions)."""

    dim: int = 128
    word_dim: int = 300
    num_heads: int = 8
    encoder: str = "conv"
    encoder_blocks: int = 1
    max_positions: int = 128
    max_words: int = 30
    dropout: float = 0.2


@dataclasses.dataclass(frozen=True)
class SiameseOptions:
    """num_siamese: K siamese sequences per query (0: the base network); offset_spread: their
    offsets are uniform in (-spread, spread) strides; weight: w of Q = w A P + (1 - w) P;
    temperature: of the cosine affinity; projection_dim: width of F; loss_weight: of CE(Q, P)."""

    num_siamese: int = 2
    offset_spread: float = 0.5
    weight: float = 0.5
    temperature: float = 0.1
    projection_dim: int = 64
    loss_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """VSLNet's recipe: AdamW (lr 5e-4, decay 0.01 off biases and norms), linear warm-up over
    `warmup_fraction` of the steps then linear decay to 0, gradient clipping at 1; the
    highlighting loss weighted `highlight_weight` on the moment extended by `extend`."""

    batch_size: int = 16
    steps: int = 2000
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.01
    clip_norm: float = 1.0
    highlight_weight: float = 5.0
    extend: float = 0.1


class SiameseGrounding(nn.Module):
    """`GroundingNet` over S sequences per query, and the affinity projection F.

    video: [B, S, N, Dv]; video_mask [B, N]; words / word_mask [B, L]. Returns the network's
    outputs with leading [B, S] axes and, when `project`, the projected features [B, S, N, P].
    """

    net: GroundingNet
    projection_dim: int = 64

    @nn.compact
    def __call__(self, video, video_mask, words, word_mask, *, train: bool, project: bool):
        b, s = video.shape[:2]

        def repeat(x: Array) -> Array:
            return jnp.repeat(x, s, axis=0)

        out = self.net(
            video.reshape(b * s, *video.shape[2:]),
            repeat(video_mask),
            repeat(words),
            repeat(word_mask),
            train=train,
        )
        out = GroundingOutput(*(x.reshape(b, s, *x.shape[1:]) for x in out))
        projected = (
            nn.Dense(self.projection_dim, name="affinity")(out.features) if project else None
        )
        return out, projected


def reasons(siamese: SiameseOptions) -> bool:
    """Whether the soft boundary loss (and the affinity projection) is used."""
    return siamese.num_siamese > 0 and siamese.loss_weight > 0


def make_model(opts: ModelOptions, vocab_size: int, siamese: SiameseOptions, word_vectors=None):
    net = GroundingNet(vocab_size=vocab_size, word_vectors=word_vectors, **dataclasses.asdict(opts))
    return SiameseGrounding(net, siamese.projection_dim)


def init_params(model: SiameseGrounding, batch: dict[str, np.ndarray], key: Array, project: bool):
    return model.init(
        key,
        jnp.asarray(batch["video"][:1]),
        jnp.asarray(batch["video_mask"][:1]),
        jnp.asarray(batch["words"][:1]),
        jnp.asarray(batch["word_mask"][:1]),
        train=False,
        project=project,
    )


def make_optimizer(opts: TrainOptions, num_steps: int) -> optax.GradientTransformation:
    warmup = max(1, int(opts.warmup_fraction * num_steps))
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, opts.lr, warmup),
            optax.linear_schedule(opts.lr, 0.0, max(1, num_steps - warmup)),
        ],
        [warmup],
    )
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(opts.clip_norm),
        optax.adamw(schedule, weight_decay=opts.weight_decay, mask=decay_mask),
    )


def make_loss_fn(model: SiameseGrounding, opts: TrainOptions, siamese: SiameseOptions):
    """`(params, batch, rng) -> (loss, metrics)` for `parallel.make_train_step`; the batch is
    `data.QuerySet.batch`'s (S = 1 + num_siamese sequences)."""
    use_siamese = reasons(siamese)

    def loss_fn(params, batch, rng):
        mask = batch["video_mask"]
        out, projected = model.apply(
            params,
            batch["video"],
            mask,
            batch["words"],
            batch["word_mask"],
            train=True,
            project=use_siamese,
            rngs={"dropout": rng},
        )
        b, s, n = out.start_logits.shape
        start, end = batch["start_index"].reshape(-1), batch["end_index"].reshape(-1)
        flat_mask = jnp.repeat(mask, s, axis=0)
        boundary = losses.boundary_loss(out.start_logits.reshape(b * s, n), start)
        boundary += losses.boundary_loss(out.end_logits.reshape(b * s, n), end)
        inside = losses.inside_labels(start, end, n, opts.extend)
        highlight = losses.highlight_loss(out.highlight_logits.reshape(b * s, n), inside, flat_mask)
        loss = boundary + opts.highlight_weight * highlight
        aux = {"boundary_loss": boundary, "highlight_loss": highlight}
        if use_siamese:
            affinity = losses.group_affinity(projected, mask, siamese.temperature)
            soft = 0.0
            for logits in (out.start_logits, out.end_logits):
                probs = jax.nn.softmax(logits, axis=-1)
                q = losses.soft_boundary_labels(affinity, probs, mask, siamese.weight)
                soft += losses.soft_label_loss(q, logits[:, 0])
            loss += siamese.loss_weight * soft
            aux["soft_label_loss"] = soft
        return loss, aux

    return loss_fn


def make_predict_fn(model: SiameseGrounding, *, top_k: int, max_len: int):
    """Jitted `(params, batch) -> {"refined", "window": [B, k, 2] seconds}` from the anchor
    sampling alone (`batch["video"]` [B, 1, N, D])."""

    @jax.jit
    def predict(params, batch):
        out, _ = model.apply(
            params,
            batch["video"],
            batch["video_mask"],
            batch["words"],
            batch["word_mask"],
            train=False,
            project=False,
        )
        start_logits, end_logits = out.start_logits[:, 0], out.end_logits[:, 0]
        mask = batch["video_mask"]
        spans, _ = metrics.top_k_spans(start_logits, end_logits, mask, k=top_k, max_len=max_len)
        p_start, p_end = jax.nn.softmax(start_logits, -1), jax.nn.softmax(end_logits, -1)
        n = batch["num_positions"].astype(jnp.float32)
        return {
            name: metrics.spans_to_seconds(
                spans, p_start, p_end, batch["duration"], n, refine=refine
            )
            for name, refine in (("refined", True), ("window", False))
        }

    return predict
