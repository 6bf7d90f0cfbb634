"""research/datasets/graphs.py: CSR building, the synthetic generator and edge dropping."""

import numpy as np
import pytest

from research.datasets import graphs


def neighbour_sets(g):
    return [set(g.indices[g.indptr[i] : g.indptr[i + 1]].tolist()) for i in range(g.num_nodes)]


def test_csr_from_edges_dedups_symmetrises_and_sorts():
    src = np.array([0, 1, 1, 2, 3, 3])
    dst = np.array([1, 0, 2, 2, 0, 1])  # 0-1 twice, a self-loop 2-2
    indptr, indices = graphs.csr_from_edges(src, dst, 5)
    assert indptr.tolist() == [0, 2, 5, 6, 8, 8]
    assert indices.tolist() == [1, 3, 0, 2, 3, 1, 0, 1]
    assert indices.dtype == np.int32 and indptr.dtype == np.int64
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        graphs.csr_from_edges([0], [5], 5)


# ----------------------------------------------------------------------------- Planetoid


def test_synthetic_power_law_homophily_and_class_features():
    g = graphs.synthetic_graph(
        20_000,
        num_features=16,
        num_classes=4,
        avg_degree=8,
        homophily=0.8,
        feature_signal=1.0,
        seed=3,
    )
    deg = g.degrees()
    assert 6 < deg.mean() < 8.5 and deg.max() > 15 * deg.mean()  # heavy tail
    src, dst = g.edges()
    assert 0.75 < np.mean(g.labels[src] == g.labels[dst]) < 0.9
    assert np.all(neighbour_sets(g)[0] == set(g.indices[g.indptr[0] : g.indptr[1]].tolist()))
    means = np.stack([g.features[g.labels == c].mean(0) for c in range(4)])
    assert np.linalg.norm(means[0] - means[1]) > 1.0  # class-dependent
    assert len(set(g.train_idx) & set(g.test_idx)) == 0
    again = graphs.synthetic_graph(
        20_000,
        num_features=16,
        num_classes=4,
        avg_degree=8,
        homophily=0.8,
        feature_signal=1.0,
        seed=3,
    )
    np.testing.assert_array_equal(again.indices, g.indices)


def test_drop_edges_random_and_by_degree_product():
    g = graphs.synthetic_graph(3000, num_features=4, avg_degree=6, seed=0)
    half = graphs.drop_edges(g, 0.5, mode="random", seed=1)
    assert abs(half.num_edges - g.num_edges / 2) <= 2
    nb_full, nb_half = neighbour_sets(g), neighbour_sets(half)
    assert all(nb_half[i] <= nb_full[i] for i in range(g.num_nodes))
    assert all(j in nb_half[i] for i in range(200) for j in nb_half[i] if i in nb_half[j]) and all(
        i in nb_half[j] for i in range(200) for j in nb_half[i]
    )  # still symmetric
    by_deg = graphs.drop_edges(g, 0.5, mode="degree")
    deg = g.degrees()
    s_kept, d_kept = by_deg.edges()
    s_all, d_all = g.edges()
    kept, every = deg[s_kept] * deg[d_kept], deg[s_all] * deg[d_all]
    assert kept.max() <= np.quantile(every, 0.55) and kept.mean() < 0.5 * every.mean()
    assert graphs.drop_edges(g, 0.0).num_edges == g.num_edges
    with pytest.raises(ValueError, match="mode"):
        graphs.drop_edges(g, 0.5, mode="nope")
