"""A VSLNet-style proposal-free span predictor for temporal sentence grounding (Flax Linen).

    net = GroundingNet(vocab_size=len(vocab), dim=128, encoder="conv")
    out = net.apply(params, video, video_mask, words, word_mask, train=False)
    out.start_logits, out.end_logits   # [B, N], -1e9 at padded positions
    out.highlight_logits               # [B, N] "inside the moment" score (highlighting)
    out.features                       # [B, N, dim] query-aware video features after highlighting

Architecture (VSLNet, Zhang et al. ACL 2020, its released code): video features [B, N, Dv] are
projected to `dim`; words [B, L] are embedded (learned, or initialised from GloVe-style vectors)
and projected; one feature encoder with shared weights encodes both (learned position embedding,
then either QANet blocks of depthwise-separable convolutions + self-attention, or pre-LayerNorm
transformer blocks); context-query attention (trilinear similarity, video-to-query and
query-to-video attention, [v, a, v * a, v * b] -> dim); the pooled query is concatenated to every
position; query-guided highlighting scales the features by sigmoid(inside score); a conditioned
predictor (a start encoder, an end encoder on top of it) gives start and end logits.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ENCODERS = ("conv", "transformer")
NEG_INF = -1e9


class GroundingOutput(NamedTuple):
    start_logits: Array  # [B, N]
    end_logits: Array  # [B, N]
    highlight_logits: Array  # [B, N]
    features: Array  # [B, N, dim]


def masked_logits(logits: Array, mask: Array) -> Array:
    """`logits` with NEG_INF where `mask` (bool, same shape) is False."""
    return jnp.where(mask, logits, NEG_INF)


def _attention_mask(mask: Array) -> Array:
    """[B, L] key mask -> [B, 1, L, L] for nn.MultiHeadDotProductAttention."""
    return nn.make_attention_mask(mask, mask)


class ConvBlock(nn.Module):
    """QANet encoder block: `num_convs` pre-LN depthwise-separable convolutions, self-attention
    and a feed-forward layer, each residual."""

    dim: int
    num_heads: int
    num_convs: int = 4
    kernel_size: int = 7
    dropout: float = 0.2

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, train: bool) -> Array:
        keep = mask[..., None].astype(x.dtype)
        for _ in range(self.num_convs):
            y = nn.LayerNorm()(x)
            y = nn.Conv(self.dim, (self.kernel_size,), feature_group_count=self.dim)(y * keep)
            y = nn.relu(nn.Dense(self.dim)(y))
            x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dropout_rate=self.dropout)(
            nn.LayerNorm()(x), mask=_attention_mask(mask), deterministic=not train
        )
        x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
        y = nn.Dense(self.dim)(nn.relu(nn.Dense(self.dim)(nn.LayerNorm()(x))))
        return (x + nn.Dropout(self.dropout, deterministic=not train)(y)) * keep


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block (self-attention and a 4x GELU MLP, each residual)."""

    dim: int
    num_heads: int
    dropout: float = 0.2

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, train: bool) -> Array:
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dropout_rate=self.dropout)(
            nn.LayerNorm()(x), mask=_attention_mask(mask), deterministic=not train
        )
        x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
        y = nn.Dense(self.dim)(nn.gelu(nn.Dense(4 * self.dim)(nn.LayerNorm()(x))))
        x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
        return x * mask[..., None].astype(x.dtype)


class FeatureEncoder(nn.Module):
    """Learned position embedding + `num_blocks` blocks of `kind` ("conv" or "transformer");
    [B, L, dim] -> [B, L, dim], zeros at masked positions."""

    kind: str
    dim: int
    num_heads: int
    max_len: int
    num_blocks: int = 1
    dropout: float = 0.2

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, train: bool) -> Array:
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence of {x.shape[1]} positions > max_len {self.max_len}")
        pos = self.param("position", nn.initializers.normal(0.02), (self.max_len, self.dim))
        x = x + pos[: x.shape[1]]
        for _ in range(self.num_blocks):
            if self.kind == "conv":
                x = ConvBlock(self.dim, self.num_heads, dropout=self.dropout)(x, mask, train=train)
            elif self.kind == "transformer":
                x = TransformerBlock(self.dim, self.num_heads, self.dropout)(x, mask, train=train)
            else:
                raise ValueError(f"encoder {self.kind!r}: expected one of {ENCODERS}")
        return x


class ContextQueryAttention(nn.Module):
    """VSLNet / QANet context-query attention: [B, N, d] video, [B, L, d] query -> [B, N, d]."""

    dim: int
    dropout: float = 0.2

    @nn.compact
    def __call__(
        self, video: Array, video_mask: Array, query: Array, query_mask: Array, *, train: bool
    ) -> Array:
        video = nn.Dropout(self.dropout, deterministic=not train)(video)
        query = nn.Dropout(self.dropout, deterministic=not train)(query)
        w_v = nn.Dense(1, use_bias=False, name="w_video")(video)  # [B, N, 1]
        w_q = nn.Dense(1, use_bias=False, name="w_query")(query)  # [B, L, 1]
        w_vq = self.param("w_product", nn.initializers.xavier_uniform(), (1, 1, self.dim))
        score = w_v + jnp.swapaxes(w_q, 1, 2) + jnp.einsum("bnd,bld->bnl", video * w_vq, query)
        video_to_query = jax.nn.softmax(masked_logits(score, query_mask[:, None, :]), axis=2)
        query_to_video = jax.nn.softmax(masked_logits(score, video_mask[:, :, None]), axis=1)
        a = video_to_query @ query  # [B, N, d]
        b = video_to_query @ jnp.swapaxes(query_to_video, 1, 2) @ video  # [B, N, d]
        return nn.Dense(self.dim)(jnp.concatenate([video, a, video * a, video * b], axis=-1))


class QueryConcat(nn.Module):
    """Attention-pooled query vector concatenated to every video position -> [B, N, dim]."""

    dim: int

    @nn.compact
    def __call__(self, video: Array, query: Array, query_mask: Array) -> Array:
        weights = jax.nn.softmax(masked_logits(nn.Dense(1)(query)[..., 0], query_mask), axis=1)
        pooled = jnp.einsum("bl,bld->bd", weights, query)
        tiled = jnp.broadcast_to(pooled[:, None], video.shape)
        return nn.Dense(self.dim)(jnp.concatenate([video, tiled], axis=-1))


class GroundingNet(nn.Module):
    """The VSLNet-style network (module docstring). `word_vectors` [V, word_dim], when given,
    initialise the word embedding (GloVe-style); otherwise it is learned from N(0, 1)."""

    vocab_size: int
    dim: int = 128
    word_dim: int = 300
    num_heads: int = 8
    encoder: str = "conv"
    encoder_blocks: int = 1
    max_positions: int = 128
    max_words: int = 64
    dropout: float = 0.2
    word_vectors: Any = None

    @nn.compact
    def __call__(
        self,
        video: Array,
        video_mask: Array,
        words: Array,
        word_mask: Array,
        *,
        train: bool,
    ) -> GroundingOutput:
        """video [B, N, Dv] float, video_mask [B, N] bool, words [B, L] int32, word_mask [B, L]."""
        if self.word_vectors is not None:
            table = np.asarray(self.word_vectors, np.float32)
            init = lambda *_: jnp.asarray(table)  # noqa: E731
            embed = nn.Embed(self.vocab_size, table.shape[1], embedding_init=init)
        else:
            embed = nn.Embed(self.vocab_size, self.word_dim)
        drop = nn.Dropout(self.dropout, deterministic=not train)
        query = nn.Dense(self.dim, name="query_projection")(drop(embed(words)))
        video = nn.Dense(self.dim, name="video_projection")(drop(video))
        encoder = FeatureEncoder(
            self.encoder,
            self.dim,
            self.num_heads,
            max(self.max_positions, self.max_words),
            self.encoder_blocks,
            self.dropout,
            name="feature_encoder",
        )
        query = encoder(query, word_mask, train=train)
        video = encoder(video, video_mask, train=train)
        x = ContextQueryAttention(self.dim, self.dropout)(
            video, video_mask, query, word_mask, train=train
        )
        x = QueryConcat(self.dim)(x, query, word_mask)
        highlight = nn.Dense(1, name="highlight")(drop(x))[..., 0]
        features = x * jax.nn.sigmoid(highlight)[..., None]

        def predictor(name: str) -> FeatureEncoder:
            return FeatureEncoder(
                self.encoder,
                self.dim,
                self.num_heads,
                self.max_positions,
                self.encoder_blocks,
                self.dropout,
                name=name,
            )

        start_features = predictor("start_encoder")(features, video_mask, train=train)
        end_features = predictor("end_encoder")(start_features, video_mask, train=train)

        def head(h: Array, name: str) -> Array:
            hidden = nn.relu(
                nn.Dense(self.dim, name=f"{name}_hidden")(jnp.concatenate([h, features], -1))
            )
            return masked_logits(nn.Dense(1, name=name)(hidden)[..., 0], video_mask)

        return GroundingOutput(
            start_logits=head(start_features, "start"),
            end_logits=head(end_features, "end"),
            highlight_logits=masked_logits(highlight, video_mask),
            features=features,
        )
