"""GraphSAGE (mean aggregator) and multi-head GAT over message-passing blocks (Flax Linen).

A block is one layer's bipartite graph: `h_src: [n_src, d]` node states, `senders: [E]` int32
rows of `h_src`, `receivers: [E]` int32 destination ids in `[0, num_dst)`, and `edge_mask: [E]`
bool (False on padding edges, which contribute nothing: they are zeroed before jraph-style
segment sums, and get no attention weight). The destination nodes are the first `num_dst` rows
of `h_src` (DGL's block convention), so `h_dst = h_src[:num_dst]`. A full graph is the block
with every node as source and destination.

`blocks_from_fanout` builds the blocks of a sampled mini-batch (`research/bifeat/sampler.py`),
where destination `i` owns edge slots `i * k .. i * k + k - 1`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.jraph_compat import segment_max, segment_sum


class Block(NamedTuple):
    """One layer's edges. senders, receivers: [E] int32; edge_mask: [E] bool; num_dst: int."""

    senders: jax.Array
    receivers: jax.Array
    edge_mask: jax.Array
    num_dst: int


def blocks_from_fanout(
    senders: Sequence[jax.Array], edge_mask: Sequence[jax.Array], num_dst: Sequence[int]
) -> list[Block]:
    """Blocks of a sampled batch: layer l has `num_dst[l]` destinations with `k_l =
    len(senders[l]) // num_dst[l]` edge slots each (receivers `repeat(arange(num_dst), k)`)."""
    blocks = []
    for s, m, n in zip(senders, edge_mask, num_dst, strict=True):
        if s.shape[0] % n:
            raise ValueError(f"{s.shape[0]} edge slots do not split into {n} destinations")
        receivers = jnp.repeat(jnp.arange(n, dtype=jnp.int32), s.shape[0] // n)
        blocks.append(Block(s, receivers, m, n))
    return blocks


def masked_mean(messages: jax.Array, block: Block) -> jax.Array:
    """Mean of `messages: [E, d]` over each destination's unmasked edges -> [num_dst, d] (0 for a
    destination without edges)."""
    w = block.edge_mask.astype(messages.dtype)
    total = segment_sum(messages * w[:, None], block.receivers, block.num_dst)
    count = segment_sum(w, block.receivers, block.num_dst)
    return total / jnp.maximum(count, 1.0)[:, None]


def masked_segment_softmax(logits: jax.Array, block: Block) -> jax.Array:
    """Softmax of `logits: [E, H]` over each destination's unmasked edges; 0 on masked edges.

    Masked logits are set to a large negative value before the per-destination max, so an
    all-padding destination gets zeros instead of NaN.
    """
    mask = block.edge_mask[:, None]
    logits = jnp.where(mask, logits, -1e9)
    maxes = segment_max(logits, block.receivers, block.num_dst)
    e = jnp.where(mask, jnp.exp(logits - jax.lax.stop_gradient(maxes)[block.receivers]), 0.0)
    denom = segment_sum(e, block.receivers, block.num_dst)
    return e / jnp.maximum(denom[block.receivers], 1e-16)


class SAGEConv(nn.Module):
    """GraphSAGE layer, mean aggregator (DGL `SAGEConv(aggregator_type="mean")`):
    `out = W_self h_dst + W_neigh mean_{j in N(i)} h_j + b`.

    `(h_src [n_src, d_in], block) -> [num_dst, features]`. The neighbour projection runs
    before or after the aggregation, whichever costs less for the static shapes (DGL projects
    first when `d_in > features`; with padded blocks `n_src` can be much larger than the number
    of destinations, which changes the trade-off). Both orders give the same result.
    """

    features: int
    order: str = "auto"  # "auto", "project" (project, then aggregate) or "aggregate"
    gather_cost: float = 8.0  # "auto": one gathered element ~ this many multiply-adds

    def project_first(self, n_src: int, d_in: int, block: Block) -> bool:
        if self.order != "auto":
            if self.order not in ("project", "aggregate"):
                raise ValueError(f"order must be auto, project or aggregate, got {self.order!r}")
            return self.order == "project"
        num_edges, out = block.senders.shape[0], self.features
        project = n_src * d_in * out + num_edges * out * self.gather_cost
        aggregate = num_edges * d_in * self.gather_cost + block.num_dst * d_in * out
        return project < aggregate

    @nn.compact
    def __call__(self, h_src: jax.Array, block: Block) -> jax.Array:
        h_dst = h_src[: block.num_dst]
        fc_neigh = nn.Dense(self.features, use_bias=False, name="fc_neigh")
        if self.project_first(h_src.shape[0], h_src.shape[1], block):
            neigh = masked_mean(fc_neigh(h_src)[block.senders], block)
        else:
            neigh = fc_neigh(masked_mean(h_src[block.senders], block))
        return nn.Dense(self.features, name="fc_self")(h_dst) + neigh


class GATConv(nn.Module):
    """Multi-head graph attention (DGL `GATConv`): per head, `z = W h`, `e_ij = LeakyReLU(a_l .
    z_j + a_r . z_i)`, softmax over `j in N(i)` (plus `i` itself when `self_loop`), output
    `sum_j alpha_ij z_j + b`. `(h_src, block) -> [num_dst, num_heads, features]`."""

    features: int
    num_heads: int
    negative_slope: float = 0.2
    self_loop: bool = True

    @nn.compact
    def __call__(self, h_src: jax.Array, block: Block) -> jax.Array:
        heads, f = self.num_heads, self.features
        z = nn.Dense(heads * f, use_bias=False, name="fc")(h_src).reshape(-1, heads, f)
        init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
        attn_l = self.param("attn_l", init, (1, heads, f))
        attn_r = self.param("attn_r", init, (1, heads, f))
        if self.self_loop:  # destination i is row i of h_src: add the edge i -> i
            self_ids = jnp.arange(block.num_dst, dtype=jnp.int32)
            block = Block(
                jnp.concatenate([block.senders, self_ids]),
                jnp.concatenate([block.receivers, self_ids]),
                jnp.concatenate([block.edge_mask, jnp.ones(block.num_dst, bool)]),
                block.num_dst,
            )
        el = jnp.sum(z * attn_l, -1)  # [n_src, H]
        er = jnp.sum(z[: block.num_dst] * attn_r, -1)  # [num_dst, H]
        logits = nn.leaky_relu(el[block.senders] + er[block.receivers], self.negative_slope)
        alpha = masked_segment_softmax(logits, block)  # [E, H]
        out = segment_sum(z[block.senders] * alpha[..., None], block.receivers, block.num_dst)
        return out + self.param("bias", nn.initializers.zeros, (heads, f))


class GraphSAGE(nn.Module):
    """`num_layers` SAGEConv layers (hidden width `hidden`), ReLU and dropout between layers.

    `(x [n_0, d_in], blocks (L), train) -> logits [num_dst of the last block, num_classes]`.
    input_dropout: dropout on the input features (0 in the BiFeat recipe).
    """

    hidden: int
    num_classes: int
    num_layers: int = 3
    dropout: float = 0.5
    input_dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, blocks: Sequence[Block], *, train: bool) -> jax.Array:
        if len(blocks) != self.num_layers:
            raise ValueError(f"{self.num_layers}-layer GraphSAGE got {len(blocks)} blocks")
        h = nn.Dropout(self.input_dropout, deterministic=not train)(x)
        for layer, block in enumerate(blocks):
            last = layer == self.num_layers - 1
            h = SAGEConv(self.num_classes if last else self.hidden, name=f"conv{layer}")(h, block)
            if not last:
                h = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(h))
        return h


class GAT(nn.Module):
    """`num_layers` GATConv layers: hidden layers concatenate `num_heads` heads of `hidden`
    features (ELU, dropout); the output layer averages `num_heads` heads of `num_classes`.

    `(x [n_0, d_in], blocks, train) -> logits [num_dst of the last block, num_classes]`.
    """

    hidden: int
    num_classes: int
    num_heads: int = 8
    num_layers: int = 3
    dropout: float = 0.5
    input_dropout: float = 0.0
    self_loop: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, blocks: Sequence[Block], *, train: bool) -> jax.Array:
        if len(blocks) != self.num_layers:
            raise ValueError(f"{self.num_layers}-layer GAT got {len(blocks)} blocks")
        h = nn.Dropout(self.input_dropout, deterministic=not train)(x)
        for layer, block in enumerate(blocks):
            last = layer == self.num_layers - 1
            conv = GATConv(
                self.num_classes if last else self.hidden,
                self.num_heads,
                self_loop=self.self_loop,
                name=f"conv{layer}",
            )
            h = conv(h, block)
            if last:
                h = h.mean(1)
            else:
                h = nn.Dropout(self.dropout, deterministic=not train)(
                    nn.elu(h.reshape(h.shape[0], -1))
                )
        return h
