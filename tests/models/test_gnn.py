"""models/gnn.py: GraphSAGE and GAT layers against numpy references, padding masked out of the
aggregation, and both models learning on a tiny synthetic graph."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.gnn import GAT, Block, GATConv, GraphSAGE, SAGEConv, blocks_from_fanout
from research.bifeat.sampler import NeighborSampler
from research.datasets.graphs import synthetic_graph


def random_block(rng, n_src=9, n_dst=4, k=3):
    """A fan-out block with some masked (padding) edges pointing at arbitrary rows."""
    senders = rng.integers(0, n_src, n_dst * k).astype(np.int32)
    mask = rng.random(n_dst * k) < 0.7
    mask[:k] = False  # destination 0 has no edges at all
    (block,) = blocks_from_fanout([jnp.asarray(senders)], [jnp.asarray(mask)], [n_dst])
    return block, senders, mask


def sage_reference(params, h, senders, mask, n_dst, k):
    p = params["params"]
    neigh = np.zeros((n_dst, h.shape[1]))
    for i in range(n_dst):
        rows = [senders[i * k + j] for j in range(k) if mask[i * k + j]]
        if rows:
            neigh[i] = h[rows].mean(0)
    return (
        h[:n_dst] @ p["fc_self"]["kernel"] + p["fc_self"]["bias"] + neigh @ p["fc_neigh"]["kernel"]
    )


@pytest.mark.parametrize("d_in,features", [(6, 3), (3, 6)])  # project first / aggregate first
def test_sage_conv_matches_reference(d_in, features):
    rng = np.random.default_rng(0)
    block, senders, mask = random_block(rng)
    h = rng.normal(size=(9, d_in)).astype(np.float32)
    conv = SAGEConv(features)
    params = conv.init(jax.random.PRNGKey(0), h, block)
    out = np.asarray(conv.apply(params, h, block))
    ref = sage_reference(jax.device_get(params), h, senders, mask, 4, 3)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # both evaluation orders agree
    for order in ("project", "aggregate"):
        other = SAGEConv(features, order=order).apply(params, h, block)
        np.testing.assert_allclose(np.asarray(other), out, rtol=1e-5, atol=1e-5)


def test_gat_conv_matches_reference():
    rng = np.random.default_rng(1)
    block, senders, mask = random_block(rng)
    h = rng.normal(size=(9, 5)).astype(np.float32)
    conv = GATConv(features=2, num_heads=3)
    params = conv.init(jax.random.PRNGKey(0), h, block)
    out = np.asarray(conv.apply(params, h, block))
    p = jax.device_get(params)["params"]
    z = (h @ p["fc"]["kernel"]).reshape(9, 3, 2)
    el, er = (z * p["attn_l"]).sum(-1), (z * p["attn_r"]).sum(-1)
    for i in range(4):
        srcs = [senders[i * 3 + j] for j in range(3) if mask[i * 3 + j]] + [i]  # + self-loop
        e = el[srcs] + er[i]
        e = np.where(e > 0, e, 0.2 * e)
        a = np.exp(e - e.max(0)) / np.exp(e - e.max(0)).sum(0)
        ref = (a[..., None] * z[srcs]).sum(0) + p["bias"]
        np.testing.assert_allclose(out[i], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "model", [GraphSAGE(8, 3, num_layers=2), GAT(4, 3, num_heads=2, num_layers=2)]
)
def test_padding_is_masked_out(model):
    """Changing the features of padding nodes, or the senders of masked edges, changes nothing."""
    g = synthetic_graph(300, num_features=5, num_classes=3, avg_degree=4, seed=0)
    sampler = NeighborSampler(g.indptr, g.indices, (3, 4), batch_size=8)
    rng = np.random.default_rng(0)
    batch = sampler.sample(rng.choice(g.num_nodes, 6, replace=False), rng)
    x = g.features[batch.input_nodes] * batch.input_mask[:, None]
    blocks = blocks_from_fanout(batch.senders, batch.edge_mask, sampler.caps[1:])
    params = model.init(jax.random.PRNGKey(0), x, blocks, train=False)
    out = model.apply(params, x, blocks, train=False)[batch.seed_mask]
    x2 = np.where(batch.input_mask[:, None], x, 1e3).astype(np.float32)
    senders2 = [
        np.where(m, s, rng.integers(0, 5, s.shape)).astype(np.int32)
        for s, m in zip(batch.senders, batch.edge_mask, strict=True)
    ]
    blocks2 = blocks_from_fanout(senders2, batch.edge_mask, sampler.caps[1:])
    out2 = model.apply(params, x2, blocks2, train=False)[batch.seed_mask]
    np.testing.assert_allclose(np.asarray(out2), np.asarray(out), rtol=1e-5, atol=1e-5)
    assert np.isfinite(np.asarray(model.apply(params, x2, blocks2, train=False))).all()


@pytest.mark.parametrize(
    "model",
    [
        GraphSAGE(16, 4, num_layers=2, dropout=0.1),
        GAT(8, 4, num_heads=2, num_layers=2, dropout=0.1),
    ],
)
def test_models_learn_on_tiny_graph(model):
    g = synthetic_graph(
        600, num_features=8, num_classes=4, avg_degree=6, homophily=0.9, feature_signal=0.5, seed=2
    )
    sampler = NeighborSampler(g.indptr, g.indices, (4, 4), batch_size=64)
    rng = np.random.default_rng(0)
    seeds = rng.choice(g.num_nodes, 64, replace=False)
    batch = sampler.sample(seeds, rng)
    x = jnp.asarray(g.features[batch.input_nodes])
    blocks = blocks_from_fanout(batch.senders, batch.edge_mask, sampler.caps[1:])
    labels = jnp.asarray(g.labels[seeds])
    params = model.init(jax.random.PRNGKey(0), x, blocks, train=False)
    opt = optax.adam(0.02)
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
        def loss(p):
            logits = model.apply(p, x, blocks, train=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, value

    losses = []
    for i in range(60):
        params, state, value = step(params, state, jax.random.PRNGKey(i))
        losses.append(float(value))
    assert losses[-1] < 0.5 * losses[0]
    pred = np.asarray(model.apply(params, x, blocks, train=False).argmax(-1))
    assert np.mean(pred == np.asarray(labels)) > 0.8


def test_full_graph_block_and_layer_count_error():
    edges = Block(
        jnp.array([1, 0, 2], jnp.int32), jnp.array([0, 1, 1], jnp.int32), jnp.ones(3, bool), 3
    )
    model = GraphSAGE(4, 2, num_layers=2)
    x = jnp.ones((3, 2))
    params = model.init(jax.random.PRNGKey(0), x, [edges, edges], train=False)
    assert model.apply(params, x, [edges, edges], train=False).shape == (3, 2)
    with pytest.raises(ValueError, match="2-layer GraphSAGE got 1 blocks"):
        model.apply(params, x, [edges], train=False)
