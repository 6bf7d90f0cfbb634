"""research/bifeat/sampler.py on small hand-made graphs: sampled edges exist, fan-outs hold,
padding is masked, capacities and overflow, uniformity; and the prefetch thread."""

import threading
import time

import numpy as np
import pytest

from research.bifeat.sampler import (
    NeighborSampler,
    calibrate_caps,
    sample_neighbors,
    stack_batches,
    worst_case_caps,
)
from research.datasets.graphs import csr_from_edges, synthetic_graph
from research.training.prefetch import Prefetcher


def hand_graph():
    """Node 0 is a hub linked to 1..9; a path 9-10-11-12; 13 isolated; a triangle 14-15-16."""
    edges = [(0, i) for i in range(1, 10)] + [
        (9, 10),
        (10, 11),
        (11, 12),
        (14, 15),
        (15, 16),
        (14, 16),
        (1, 2),
    ]
    src, dst = np.array(edges).T
    return csr_from_edges(src, dst, 17)


def layer_nodes(batch, caps, layer):
    """Global ids and validity of layer `layer`'s nodes: a prefix of the input nodes."""
    return batch.input_nodes[: caps[layer]], batch.input_mask[: caps[layer]]


def check_blocks(indptr, indices, sampler, batch, *, overflow=False):
    """Every unmasked edge exists, comes from a valid node, and fan-outs hold (with `overflow`,
    edges to dropped nodes are missing: fewer than the fan-out)."""
    nbrs = [set(indices[indptr[i] : indptr[i + 1]].tolist()) for i in range(len(indptr) - 1)]
    caps = sampler.caps
    for layer, k in enumerate(sampler.fanouts):
        src_ids, src_valid = layer_nodes(batch, caps, layer)
        dst_ids, dst_valid = layer_nodes(batch, caps, layer + 1)
        senders = batch.senders[layer].reshape(caps[layer + 1], k)
        mask = batch.edge_mask[layer].reshape(caps[layer + 1], k)
        assert senders.shape == (caps[layer + 1], k) and senders.dtype == np.int32
        for i in range(caps[layer + 1]):
            chosen = senders[i][mask[i]]
            if not dst_valid[i]:
                assert not mask[i].any()  # padding destinations have no edges
                continue
            assert src_valid[chosen].all()
            got = src_ids[chosen].tolist()
            assert len(set(got)) == len(got)  # without replacement
            assert set(got) <= nbrs[dst_ids[i]]  # every sampled edge exists
            want = min(k, len(nbrs[dst_ids[i]]))
            assert len(got) <= want if overflow else len(got) == want  # fan-out respected
            assert (senders[i][~mask[i]] == 0).all()
    # the destination prefix: layer l+1's nodes are the first nodes of layer l
    assert (
        batch.input_nodes[: len(batch.seeds)][batch.seed_mask] == batch.seeds[batch.seed_mask]
    ).all()
    valid = batch.input_nodes[batch.input_mask]
    assert len(np.unique(valid)) == len(valid)  # deduplicated


@pytest.mark.parametrize("fanouts", [(2,), (3, 2), (1, 2, 3)])
def test_blocks_on_hand_made_graph(fanouts):
    indptr, indices = hand_graph()
    sampler = NeighborSampler(indptr, indices, fanouts, batch_size=4)
    assert sampler.caps == worst_case_caps(17, fanouts, 4)
    rng = np.random.default_rng(0)
    for seeds in ([0, 13, 15], [9, 10, 11, 12], [13], [0, 1, 2, 3]):
        batch = sampler.sample(np.array(seeds), rng)
        check_blocks(indptr, indices, sampler, batch)
        assert batch.dropped == 0
        assert batch.seed_mask.tolist() == [True] * len(seeds) + [False] * (4 - len(seeds))


def test_blocks_on_synthetic_graph_with_hubs():
    g = synthetic_graph(3000, num_features=4, avg_degree=8, seed=1)
    sampler = NeighborSampler(g.indptr, g.indices, (3, 5), batch_size=32)
    rng = np.random.default_rng(1)
    batch = sampler.sample(rng.choice(g.num_nodes, 30, replace=False), rng)
    check_blocks(g.indptr, g.indices, sampler, batch)


def test_sampling_is_uniform_over_neighbours():
    indptr, indices = hand_graph()  # node 0 has 9 neighbours
    rng = np.random.default_rng(0)
    nodes = np.zeros(20000, np.int32)
    nbrs, mask = sample_neighbors(indptr, indices, nodes, np.ones(20000, bool), 3, rng)
    assert mask.all()
    counts = np.bincount(nbrs.reshape(-1), minlength=10)[1:]
    expected = 20000 * 3 / 9
    assert np.abs(counts - expected).max() < 0.05 * expected
    assert (np.sort(nbrs, 1)[:, 1:] != np.sort(nbrs, 1)[:, :-1]).all()  # distinct per row


def test_capacity_overflow_drops_and_masks():
    indptr, indices = hand_graph()
    sampler = NeighborSampler(indptr, indices, (9,), batch_size=1, caps=(4, 1))  # room for 3
    batch = sampler.sample(np.array([0]), np.random.default_rng(0))
    assert batch.dropped == 6 and batch.edge_mask[0].sum() == 3
    check_blocks(indptr, indices, sampler, batch, overflow=True)  # kept edges are still real
    with pytest.raises(ValueError, match="caps"):
        NeighborSampler(indptr, indices, (2,), batch_size=4, caps=(10, 3))
    with pytest.raises(ValueError, match="distinct"):
        NeighborSampler(indptr, indices, (2,), batch_size=4).sample(np.array([1, 1]), None)


def test_calibrated_caps_are_tighter_and_stack():
    g = synthetic_graph(5000, num_features=4, avg_degree=10, seed=0)
    worst = NeighborSampler(g.indptr, g.indices, (5, 10), batch_size=16)
    caps = calibrate_caps(worst, g.train_idx, num_batches=4, margin=1.5, align=8)
    assert caps[-1] == 16 and all(c <= w for c, w in zip(caps, worst.caps, strict=True))
    assert caps[0] < worst.caps[0]
    tight = NeighborSampler(g.indptr, g.indices, (5, 10), batch_size=16, caps=caps)
    rng = np.random.default_rng(0)
    batches = [tight.sample(rng.choice(g.train_idx, 16, replace=False), rng) for _ in range(2)]
    stacked = stack_batches(batches)
    assert stacked["input_nodes"].shape == (2, caps[0])
    assert stacked["senders_1"].shape == (2, caps[2] * 10)
    assert stacked["edge_mask_0"].shape == (2, caps[1] * 5)


def test_prefetcher_order_restart_and_errors():
    calls, lock = [], threading.Lock()

    def make(step):
        with lock:
            calls.append(step)
        if step == 7:
            raise RuntimeError("boom at 7")
        return step * 10

    with Prefetcher(make, end=10, depth=2) as fetch:
        assert [fetch(s) for s in range(3)] == [0, 10, 20]
        assert fetch(5) == 50  # a jump (resume) restarts the thread
        assert fetch(6) == 60
        with pytest.raises(RuntimeError, match="boom at 7"):
            fetch(7)
        assert fetch(12) == 120  # past `end`: computed on demand
    time.sleep(0.05)
    assert max(calls) <= 12
