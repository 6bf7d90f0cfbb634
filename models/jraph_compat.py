"""The part of jraph (last release 2022) this codebase uses, checked against the pinned jax.

Import graph utilities from here, not from `jraph` directly: everything re-exported below is
exercised by tests/models/test_jraph_compat.py under the pinned jax, and functions that no
longer work with current jax are re-implemented here.

Known breakage: `jraph.zero_out_padding` calls `jax.tree_map`, removed from jax in 0.6.
"""

from __future__ import annotations

import jax
import jraph
from jraph import (
    GAT,
    GraphConvolution,
    GraphNetwork,
    GraphsTuple,
    batch,
    get_edge_padding_mask,
    get_graph_padding_mask,
    get_node_padding_mask,
    pad_with_graphs,
    segment_max,
    segment_mean,
    segment_normalize,
    segment_softmax,
    segment_sum,
    unbatch,
)

__all__ = [
    "GAT",
    "GraphConvolution",
    "GraphNetwork",
    "GraphsTuple",
    "batch",
    "get_edge_padding_mask",
    "get_graph_padding_mask",
    "get_node_padding_mask",
    "pad_with_graphs",
    "segment_max",
    "segment_mean",
    "segment_normalize",
    "segment_softmax",
    "segment_sum",
    "unbatch",
    "zero_out_padding",
]


def zero_out_padding(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """Zeroes node, edge and global features of padding (as `jraph.zero_out_padding`)."""

    def zero(mask):
        def apply(x):
            return x * mask.reshape(mask.shape + (1,) * (x.ndim - 1)).astype(x.dtype)

        return apply

    return graph._replace(
        nodes=jax.tree.map(zero(get_node_padding_mask(graph)), graph.nodes),
        edges=jax.tree.map(zero(get_edge_padding_mask(graph)), graph.edges),
        globals=jax.tree.map(zero(get_graph_padding_mask(graph)), graph.globals),
    )
