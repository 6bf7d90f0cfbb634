"""research/datasets/graph_files.py: Planetoid and OGB-layout readers; errors name the file."""

import gzip
import os
import pickle
from collections import defaultdict

import numpy as np
import pytest
import scipy.sparse as sp

from research.datasets import graph_files
from tests.conftest import SHARED_DATA
from tests.research.datasets.test_graphs import neighbour_sets


def write_planetoid(root, name, *, gap=False):
    """A Planetoid dataset: 2 train nodes, 6 allx rows, test ids 6..9 (gap: 6..10, 9 missing)."""
    rng = np.random.default_rng(0)
    d, c = 5, 3
    test_ids = [7, 6, 9, 8] if not gap else [7, 6, 10, 8]
    n_all = 6
    allx = (rng.random((n_all, d)) < 0.5).astype(np.float32)
    allx[:, 0] = 1  # no empty rows
    ally = np.eye(c, dtype=np.float32)[rng.integers(0, c, n_all)]
    tx = np.ones((len(test_ids), d), np.float32)
    ty = np.eye(c, dtype=np.float32)[[0, 1, 2, 0]]
    graph = defaultdict(list, {0: [1, 2], 1: [0], 2: [0, 2], 3: [4], 6: [7], 7: [6, 6]})
    parts = dict(
        x=sp.csr_matrix(allx[:2]),
        y=ally[:2],
        allx=sp.csr_matrix(allx),
        ally=ally,
        tx=sp.csr_matrix(tx),
        ty=ty,
        graph=graph,
    )
    for suffix, value in parts.items():
        with open(os.path.join(root, f"ind.{name}.{suffix}"), "wb") as f:
            pickle.dump(value, f, protocol=2)
    with open(os.path.join(root, f"ind.{name}.test.index"), "w") as f:
        f.write("\n".join(str(i) for i in test_ids) + "\n")
    return allx, ally, tx, ty, test_ids


def test_planetoid_reads_files_and_orders_nodes(tmp_path):
    allx, ally, tx, ty, test_ids = write_planetoid(tmp_path, "cora")
    g = graph_files.load_planetoid(str(tmp_path), "cora")
    assert g.num_nodes == 10 and g.num_classes == 3 and g.num_features == 5
    np.testing.assert_allclose(g.features.sum(1), 1.0, rtol=1e-6)  # row-normalised
    np.testing.assert_allclose(g.features[:6], allx / allx.sum(1, keepdims=True), rtol=1e-6)
    assert g.labels[test_ids].tolist() == [0, 1, 2, 0]  # tx rows placed at their test ids
    assert g.labels[:6].tolist() == ally.argmax(1).tolist()
    assert g.train_idx.tolist() == [0, 1] and g.val_idx.tolist() == [2, 3, 4, 5]
    assert g.test_idx.tolist() == sorted(test_ids)
    nb = neighbour_sets(g)
    assert nb[0] == {1, 2} and nb[2] == {0} and nb[4] == {3} and nb[6] == {7}  # no self-loop
    raw = graph_files.load_planetoid(str(tmp_path), "cora", normalize_features=False)
    np.testing.assert_array_equal(raw.features[:6], allx)


def test_planetoid_pads_citeseer_missing_test_nodes(tmp_path):
    write_planetoid(tmp_path, "citeseer", gap=True)
    g = graph_files.load_planetoid(str(tmp_path), "citeseer")
    assert g.num_nodes == 11  # ids 6..10 with 9 missing: padded
    assert not g.features[9].any() and g.labels[9] == 0
    assert 9 not in g.test_idx


def test_planetoid_errors_name_the_file(tmp_path):
    write_planetoid(tmp_path, "cora")
    os.remove(tmp_path / "ind.cora.ty")
    with pytest.raises(FileNotFoundError, match=r"ind\.cora\.ty"):
        graph_files.load_planetoid(str(tmp_path), "cora")
    write_planetoid(tmp_path, "cora")
    (tmp_path / "ind.cora.allx").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"ind\.cora\.allx"):
        graph_files.load_planetoid(str(tmp_path), "cora")
    write_planetoid(tmp_path, "cora")
    (tmp_path / "ind.cora.test.index").write_text("6\n7\n")  # 2 ids, 4 tx rows
    with pytest.raises(ValueError, match=r"test\.index.*2 test ids"):
        graph_files.load_planetoid(str(tmp_path), "cora")
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        graph_files.load_planetoid(str(tmp_path / "no_such_dir"), "cora")


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "planetoid")), reason="no Cora")
def test_real_cora_statistics():
    g = graph_files.load_planetoid(os.path.join(SHARED_DATA, "planetoid"), "cora")
    assert (g.num_nodes, g.num_edges, g.num_features, g.num_classes) == (2708, 10556, 1433, 7)
    assert np.bincount(g.labels).tolist() == [351, 217, 418, 818, 426, 298, 180]
    assert (len(g.train_idx), len(g.val_idx), len(g.test_idx)) == (140, 500, 1000)


# ----------------------------------------------------------------------------- OGB


def write_gz(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write(text)


def write_ogb(root, *, npz=False):
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 0]])
    feat = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    labels = ["1", "0", "nan", "2", "1"]
    raw = os.path.join(root, "raw")
    if npz:
        os.makedirs(raw, exist_ok=True)
        np.savez(
            os.path.join(raw, "data.npz"),
            edge_index=edges.T,
            node_feat=feat,
            num_nodes_list=np.array([5]),
            num_edges_list=np.array([5]),
        )
        lab = np.array([[float(v)] for v in labels])
        np.savez(os.path.join(raw, "node-label.npz"), node_label=lab)
    else:
        write_gz(os.path.join(raw, "edge.csv.gz"), "\n".join(f"{a},{b}" for a, b in edges) + "\n")
        write_gz(
            os.path.join(raw, "node-feat.csv.gz"),
            "\n".join(",".join(f"{v:g}" for v in row) for row in feat) + "\n",
        )
        write_gz(os.path.join(raw, "node-label.csv.gz"), "\n".join(labels) + "\n")
    for part, ids in (("train", [0, 1]), ("valid", [3]), ("test", [4])):
        write_gz(
            os.path.join(root, "split", "sales_ranking", f"{part}.csv.gz"),
            "\n".join(map(str, ids)) + "\n",
        )
    return edges, feat


@pytest.mark.parametrize("npz", [False, True])
def test_ogb_layout_csv_and_npz(tmp_path, npz):
    root = str(tmp_path / "ogbn_toy")
    edges, feat = write_ogb(root, npz=npz)
    g = graph_files.load_ogb_node(root)
    assert g.name == "ogbn_toy" and g.num_nodes == 5 and g.num_classes == 3
    np.testing.assert_allclose(g.features, feat, rtol=1e-6)
    assert g.labels.tolist() == [1, 0, -1, 2, 1]  # nan = unlabelled
    assert g.num_edges == 10  # 5 undirected edges, both directions
    assert neighbour_sets(g)[0] == {1, 3, 4}
    assert (g.train_idx.tolist(), g.val_idx.tolist(), g.test_idx.tolist()) == ([0, 1], [3], [4])
    directed = graph_files.load_ogb_node(root, symmetric=False)
    assert directed.num_edges == 5
    assert graph_files.load_graph("ogbn-toy", str(tmp_path)).num_nodes == 5  # ogbn-toy -> ogbn_toy


def test_ogb_errors_name_file_and_problem(tmp_path):
    root = str(tmp_path / "ogbn_bad")
    write_ogb(root)
    feat = os.path.join(root, "raw", "node-feat.csv.gz")
    write_gz(feat, "0.1,0.2,0.3\n0.4,0.5\n")  # ragged
    with pytest.raises(ValueError, match=r"node-feat\.csv\.gz.*ragged"):
        graph_files.load_ogb_node(root)
    write_gz(feat, "0.1,0.2,0.3\n0.4,oops,0.6\n")
    with pytest.raises(ValueError, match=r"node-feat\.csv\.gz"):
        graph_files.load_ogb_node(root)
    write_ogb(root)
    with open(os.path.join(root, "raw", "edge.csv.gz"), "wb") as f:
        f.write(b"not gzip")
    with pytest.raises(ValueError, match=r"edge\.csv\.gz.*gzip"):
        graph_files.load_ogb_node(root)
    write_ogb(root)
    os.remove(os.path.join(root, "split", "sales_ranking", "valid.csv.gz"))
    with pytest.raises(FileNotFoundError, match=r"valid\.csv\.gz"):
        graph_files.load_ogb_node(root)
    write_ogb(root)
    write_gz(os.path.join(root, "split", "sales_ranking", "test.csv.gz"), "7\n")
    with pytest.raises(ValueError, match=r"test\.csv\.gz.*\[0, 5\)"):
        graph_files.load_ogb_node(root)


def test_ogb_non_finite_values_name_the_file(tmp_path):
    for npz in (True, False):
        root = str(tmp_path / f"ogbn_nan_{npz}")
        raw = os.path.join(root, "raw")
        write_ogb(root, npz=npz)
        if npz:
            with np.load(os.path.join(raw, "data.npz")) as f:
                arrays = {k: f[k] for k in f.files}
            arrays["node_feat"][2, 1] = np.nan
            arrays["node_feat"][4, 0] = np.inf
            np.savez(os.path.join(raw, "data.npz"), **arrays)
            expected = r"data\.npz: node features hold 2 non-finite values \(NaN or inf\), "
            expected += "the first at row 2, column 1"
        else:
            write_gz(os.path.join(raw, "node-feat.csv.gz"), "0,1,2\n3,nan,5\n6,7,8\n9,1,2\n3,4,5\n")
            expected = r"node-feat\.csv\.gz: node features hold 1 non-finite value"
        with pytest.raises(ValueError, match=expected):
            graph_files.load_ogb_node(root)
    write_ogb(root, npz=True)
    np.savez(
        os.path.join(raw, "node-label.npz"), node_label=np.array([[1.0], [np.inf], [0], [2], [1]])
    )
    with pytest.raises(ValueError, match=r"node-label\.npz: .*not a class id"):
        graph_files.load_ogb_node(root)
    np.savez(os.path.join(raw, "node-label.npz"), node_label=np.array([[1.5], [0], [0], [2], [1]]))
    with pytest.raises(ValueError, match=r"node-label\.npz: .*1\.5"):
        graph_files.load_ogb_node(root)


def test_ogb_npz_errors_name_the_file(tmp_path):
    root = str(tmp_path / "ogbn_bad_npz")
    raw = os.path.join(root, "raw")
    write_ogb(root, npz=True)
    with open(os.path.join(raw, "data.npz"), "wb") as f:
        f.write(b"not an npz file at all")
    with pytest.raises(ValueError, match=r"data\.npz: not a readable npz file"):
        graph_files.load_ogb_node(root)
    write_ogb(root, npz=True)
    data = open(os.path.join(raw, "data.npz"), "rb").read()
    with open(os.path.join(raw, "data.npz"), "wb") as f:
        f.write(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match=r"data\.npz: not a readable npz file"):
        graph_files.load_ogb_node(root)
    write_ogb(root, npz=True)
    np.savez(
        os.path.join(raw, "data.npz"),
        edge_index=np.array([[0, 1], [1, 7]]),
        node_feat=np.zeros((5, 3), np.float32),
        num_nodes_list=np.array([5]),
    )
    with pytest.raises(ValueError, match=r"data\.npz: edge_index.*\[0, 5\)"):
        graph_files.load_ogb_node(root)
    np.savez(
        os.path.join(raw, "data.npz"),
        edge_index=np.array([[0, 1], [1, 2]]),
        node_feat=np.array([[object()]] * 5, dtype=object),
        num_nodes_list=np.array([5]),
    )
    with pytest.raises(ValueError, match=r"data\.npz: not a readable npz file"):
        graph_files.load_ogb_node(root)
    root = str(tmp_path / "ogbn_bad_csv")
    write_ogb(root)
    write_gz(os.path.join(root, "raw", "edge.csv.gz"), "0,1\n1,9\n")
    with pytest.raises(ValueError, match=r"edge\.csv\.gz: edge endpoints must lie in \[0, 5\)"):
        graph_files.load_ogb_node(root)


def test_planetoid_non_finite_features_name_the_file(tmp_path):
    write_planetoid(tmp_path, "cora")
    allx = sp.lil_matrix(np.ones((6, 5), np.float32))
    allx[3, 2] = np.nan
    with open(tmp_path / "ind.cora.allx", "wb") as f:
        pickle.dump(sp.csr_matrix(allx), f, protocol=2)
    with pytest.raises(ValueError, match=r"ind\.cora\.allx: .*1 non-finite value"):
        graph_files.load_planetoid(str(tmp_path), "cora")
    write_planetoid(tmp_path, "cora")
    with open(tmp_path / "ind.cora.tx", "wb") as f:
        pickle.dump([["a", "b"]] * 4, f, protocol=2)
    with pytest.raises(ValueError, match=r"ind\.cora\.tx: expected a numeric matrix"):
        graph_files.load_planetoid(str(tmp_path), "cora")


# ----------------------------------------------------------------------------- synthetic
