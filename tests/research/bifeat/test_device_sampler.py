"""The device (JAX) sampler of research/bifeat/sampler.py against the numpy one: the same block
structure and rules (fan-outs, degree < fan-out, padding, deduplication, overflow), the same
distribution (chi-square over neighbours and over subsets, which "the first k" fails), seeded
per batch; `DeviceSampledBatches` epochs on 4 devices; training with it."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from research.bifeat import pipeline
from research.bifeat.sampler import (
    DeviceNeighborSampler,
    NeighborSampler,
    batch_key,
    block_errors,
    sample_blocks_jax,
    sample_neighbors,
    sample_neighbors_jax,
)
from research.bifeat.stores import build_store
from research.datasets.graphs import synthetic_graph
from research.training.parallel import data_mesh
from tests.research.bifeat.test_sampler import check_blocks, hand_graph


def as_numpy(batch):
    return jax.tree.map(np.asarray, batch)


@pytest.mark.parametrize("fanouts", [(2,), (3, 2), (1, 2, 3)])
def test_device_blocks_have_the_host_structure(fanouts):
    indptr, indices = hand_graph()
    host = NeighborSampler(indptr, indices, fanouts, batch_size=4)
    dev = DeviceNeighborSampler(host)
    for i, seeds in enumerate(([0, 13, 15], [9, 10, 11, 12], [13], [0, 1, 2, 3])):
        got = as_numpy(dev.sample(np.array(seeds), jax.random.PRNGKey(i)))
        check_blocks(indptr, indices, host, got)  # real edges, exact fan-outs, dedup, padding
        want = host.sample(np.array(seeds), np.random.default_rng(i))
        for a, b in zip(jax.tree.leaves(want)[:-1], jax.tree.leaves(got)[:-1], strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
        assert got.dropped == 0


def test_identical_to_the_host_sampler_when_nothing_is_random():
    """Fan-outs >= every degree and worst-case capacities: both take every neighbour, so the
    blocks (order of new nodes, local ids, masks) must agree exactly."""
    indptr, indices = hand_graph()
    host = NeighborSampler(indptr, indices, (9, 9), batch_size=4)
    dev = DeviceNeighborSampler(host)
    for seeds in ([0, 13, 15], [9, 10, 11, 12], [13], [16, 2]):
        want = host.sample(np.array(seeds), np.random.default_rng(0))
        got = as_numpy(dev.sample(np.array(seeds), jax.random.PRNGKey(0)))
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
            np.testing.assert_array_equal(a, b)


def test_per_node_counts_on_a_graph_with_hubs():
    g = synthetic_graph(3000, num_features=4, avg_degree=8, seed=1)
    host = NeighborSampler(g.indptr, g.indices, (3, 5), batch_size=32)
    dev = DeviceNeighborSampler(host)
    seeds = np.random.default_rng(1).choice(g.num_nodes, 30, replace=False)
    batch = as_numpy(dev.sample(seeds, jax.random.PRNGKey(1)))
    check_blocks(g.indptr, g.indices, host, batch)  # min(fanout, degree) distinct neighbours
    assert batch.input_mask.sum() > 30 * 5  # hubs and the rest: a real expansion


def _chi2_p(counts):
    counts = np.asarray(counts, float)
    return sps.chisquare(counts).pvalue


@pytest.mark.parametrize("fanout", [3, 8])
def test_sampling_is_uniform_like_the_host_sampler(fanout):
    """Node 0 has 9 neighbours (1..9). Over 20,000 draws every neighbour and every fanout-subset
    must be equally likely (chi-square p > 1e-4 for the device and the numpy sampler), while
    taking the first `fanout` neighbours, or a sampler with replacement, fails."""
    indptr, indices = hand_graph()
    n = 20_000
    nodes, valid = np.zeros(n, np.int32), np.ones(n, bool)
    dev, mask = sample_neighbors_jax(
        jnp.asarray(indptr, jnp.int32),
        jnp.asarray(indices),
        nodes,
        valid,
        fanout,
        jax.random.key(7),
    )
    dev, mask = np.asarray(dev), np.asarray(mask)
    host, _ = sample_neighbors(indptr, indices, nodes, valid, fanout, np.random.default_rng(7))
    subsets = {c: i for i, c in enumerate(itertools.combinations(range(1, 10), fanout))}

    def p_values(nbrs):
        per_node = np.bincount(nbrs.reshape(-1), minlength=10)[1:]
        rows = [subsets.get(tuple(np.sort(r))) for r in nbrs]
        if any(r is None for r in rows):  # a repeated neighbour: not a subset
            return _chi2_p(per_node), 0.0
        return _chi2_p(per_node), _chi2_p(np.bincount(rows, minlength=len(subsets)))

    assert mask.all()
    for nbrs in (dev, host):
        assert min(p_values(nbrs)) > 1e-4
    first_k = np.broadcast_to(np.arange(1, fanout + 1), (n, fanout))
    assert max(p_values(first_k)) < 1e-10
    with_replacement = np.random.default_rng(0).integers(1, 10, (n, fanout))
    assert min(p_values(with_replacement)) < 1e-10
    assert len(subsets) == math.comb(9, fanout)


def test_overflow_drops_a_uniform_subset_and_masks():
    indptr, indices = hand_graph()
    host = NeighborSampler(indptr, indices, (9,), batch_size=1, caps=(4, 1))  # room for 3 of 9
    dev = DeviceNeighborSampler(host)
    batch = as_numpy(dev.sample(np.array([0]), jax.random.PRNGKey(0)))
    assert batch.dropped == 6 and batch.edge_mask[0].sum() == 3
    check_blocks(indptr, indices, host, batch, overflow=True)
    assert (np.diff(batch.input_nodes[1:]) > 0).all()  # kept new nodes sorted by id

    def kept(key):
        b = sample_blocks_jax(
            dev.indptr, dev.indices, jnp.zeros(1, jnp.int32), jnp.ones(1, bool), key,
            fanouts=(9,), caps=(4, 1), num_nodes=17,
        )  # fmt: skip
        return b.input_nodes[1:]

    keys = jax.random.split(jax.random.key(3), 1000)
    counts = np.bincount(np.asarray(jax.vmap(kept)(keys)).reshape(-1), minlength=10)[1:]
    assert counts.sum() == 3000 and _chi2_p(counts) > 1e-4


def test_seeded_per_batch():
    g = synthetic_graph(2000, num_features=4, avg_degree=8, seed=0)
    dev = DeviceNeighborSampler(NeighborSampler(g.indptr, g.indices, (4, 6), batch_size=16))
    seeds = np.arange(10, 26)
    a = as_numpy(dev.sample(seeds, batch_key(0, 5, 0)))
    b = as_numpy(dev.sample(seeds, batch_key(0, 5, 0)))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    for key in (batch_key(0, 6, 0), batch_key(0, 5, 1), batch_key(1, 5, 0)):
        c = as_numpy(dev.sample(seeds, key))
        assert not np.array_equal(a.input_nodes, c.input_nodes)


def test_device_batches_cover_an_epoch_on_four_devices():
    g = synthetic_graph(2000, num_features=8, avg_degree=6, seed=0)
    mesh = data_mesh()
    host = NeighborSampler(g.indptr, g.indices, (3, 4), batch_size=16)
    dev = DeviceNeighborSampler(host, mesh)
    store = build_store("sq2", g.features, mesh)
    nodes = g.train_idx[:150]  # 3 steps of 4 x 16 seeds, the last one partial (22 seeds)
    batches = pipeline.make_batches(g, nodes, dev, store, mesh=mesh, seed=3)
    assert isinstance(batches, pipeline.DeviceSampledBatches) and batches.steps_per_epoch == 3
    seen = []
    for step in range(3):
        batch = batches(step)
        assert batch["x"].shape == (4, host.caps[0]) and batch["senders_1"].shape == (4, 16 * 4)
        seeds, mask = np.asarray(batch["seeds"]), np.asarray(batch["seed_mask"])
        np.testing.assert_array_equal(np.asarray(batch["labels"])[mask], g.labels[seeds[mask]])
        assert (seeds[~mask] == 0).all()
        seen.append(np.concatenate(batches.seeds(step)))
    assert mask.sum() == 150 - 2 * 64
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.sort(nodes))
    np.testing.assert_array_equal(np.asarray(batches(1)["x"]), np.asarray(batches(1)["x"]))
    next_epoch = np.concatenate(batches.seeds(3))
    assert not np.array_equal(next_epoch, seen[0][: len(next_epoch)])  # reshuffled
    with pytest.raises(ValueError, match="device-resident feature store"):
        pipeline.make_batches(
            g, nodes, dev, build_store("float32", g.features, mesh), mesh=mesh, seed=0
        )


def test_int32_limit_is_checked():
    host = NeighborSampler(np.array([0, 0]), np.zeros(0, np.int32), (2,), batch_size=1)
    host.indices = np.broadcast_to(np.int32(0), (2**31,))  # a view: no memory
    with pytest.raises(ValueError, match="int32"):
        DeviceNeighborSampler(host)


def test_block_errors_counts_broken_rules():
    g = synthetic_graph(3000, num_features=4, avg_degree=8, seed=2)
    host = NeighborSampler(g.indptr, g.indices, (3, 5), batch_size=32)
    seeds = np.random.default_rng(2).choice(g.num_nodes, 30, replace=False)
    for batch in (
        host.sample(seeds, np.random.default_rng(0)),
        as_numpy(DeviceNeighborSampler(host).sample(seeds, jax.random.PRNGKey(0))),
    ):
        assert block_errors(g.indptr, g.indices, batch, host.fanouts, host.caps) == 0
    senders = batch.senders[1].copy()
    senders[batch.edge_mask[1]] = (senders[batch.edge_mask[1]] + 7) % host.caps[1]  # rewired
    broken = batch._replace(senders=(batch.senders[0], senders))
    assert block_errors(g.indptr, g.indices, broken, host.fanouts, host.caps) > 10
    fewer = batch.edge_mask[0].copy().reshape(-1, 3)
    rows = np.flatnonzero(fewer.any(1))[:3]
    fewer[rows, fewer[rows].argmax(1)] = False  # one edge fewer in three destinations
    fewer = fewer.reshape(-1)
    broken = batch._replace(edge_mask=(fewer, batch.edge_mask[1]))
    assert block_errors(g.indptr, g.indices, broken, host.fanouts, host.caps) == 3
