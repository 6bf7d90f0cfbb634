"""Every jraph function re-exported by models/jraph_compat works with the pinned jax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import jraph_compat as jc

SENDERS = np.array([0, 1, 2, 3, 0, 1])
RECEIVERS = np.array([1, 2, 3, 0, 2, 2])


def small_graph():
    rng = np.random.default_rng(0)
    return jc.GraphsTuple(
        nodes=jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        edges=jnp.asarray(rng.normal(size=(6, 2)), jnp.float32),
        senders=jnp.asarray(SENDERS),
        receivers=jnp.asarray(RECEIVERS),
        n_node=jnp.array([4]),
        n_edge=jnp.array([6]),
        globals=jnp.ones((1, 2)),
    )


def test_segment_ops_match_numpy():
    g = small_graph()
    e = np.asarray(g.edges)
    for op, reduce in [
        (jc.segment_sum, np.sum),
        (jc.segment_mean, np.mean),
        (jc.segment_max, np.max),
    ]:
        got = np.asarray(jax.jit(lambda x, op=op: op(x, g.receivers, 4))(g.edges))
        for node in range(4):
            rows = e[RECEIVERS == node]
            if len(rows):
                np.testing.assert_allclose(got[node], reduce(rows, axis=0), rtol=1e-6)
    logits = jnp.arange(6.0)
    soft = np.asarray(jc.segment_softmax(logits, g.receivers, 4))
    for node in range(4):
        sel = RECEIVERS == node
        ref = np.exp(np.arange(6.0)[sel]) / np.exp(np.arange(6.0)[sel]).sum()
        np.testing.assert_allclose(soft[sel], ref, rtol=1e-6)
    grad = jax.grad(lambda x: jc.segment_softmax(x, g.receivers, 4)[0])(logits)
    assert np.isfinite(np.asarray(grad)).all()


def test_models_and_padding_work_under_jit():
    g = small_graph()
    gat = jc.GAT(
        attention_query_fn=lambda n: n,
        attention_logit_fn=lambda s, r, e: jnp.sum(s * r, -1, keepdims=True),
    )
    gcn = jc.GraphConvolution(lambda n: 2 * n, add_self_edges=True)
    net = jc.GraphNetwork(update_edge_fn=lambda e, s, r, gl: e + 1, update_node_fn=None)
    for model in (gat, gcn, net):
        out = jax.jit(model)(g)
        assert out.nodes.shape == (4, 3)
    padded = jc.pad_with_graphs(g, n_node=8, n_edge=10, n_graph=3)
    assert np.asarray(jc.get_node_padding_mask(padded)).tolist() == [True] * 4 + [False] * 4
    padded = padded._replace(nodes=padded.nodes + 5.0)
    zeroed = jc.zero_out_padding(padded)
    np.testing.assert_array_equal(np.asarray(zeroed.nodes[4:]), 0.0)
    np.testing.assert_allclose(np.asarray(zeroed.nodes[:4]), np.asarray(g.nodes) + 5.0)
    assert len(jc.unbatch(jc.batch([g, g]))) == 2


def test_upstream_zero_out_padding_is_still_broken():
    """Documents why the re-implementation exists; delete it when jraph is fixed upstream."""
    import jraph

    padded = jc.pad_with_graphs(small_graph(), n_node=8, n_edge=10, n_graph=3)
    with pytest.raises(AttributeError, match="tree_map"):
        jraph.zero_out_padding(padded)
