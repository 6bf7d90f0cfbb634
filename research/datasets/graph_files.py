"""Node-classification graphs from files: Planetoid `ind.*` files and the OGB node-property
layout, and `load_graph`, the dispatch by data set name (synthetic graphs included).

Missing or malformed files raise an error that names the file and what is wrong; so do values
that cannot be right: NaN or infinite features, labels that are not class ids, edge endpoints
outside the node range.
"""

from __future__ import annotations

import gzip
import os
import pickle
import warnings
import zipfile

import numpy as np
import scipy.sparse as sp

from research.datasets.graphs import Graph, csr_from_edges, synthetic_graph

PLANETOID_NAMES = ("cora", "citeseer", "pubmed")
SPLITS = ("train", "valid", "test")


def check_finite(values: np.ndarray, path: str, what: str) -> None:
    """ValueError naming `path` when `values` (`[rows, ...]`, read from that file) hold NaN or
    infinity: how many, and where the first is. Checked in blocks of rows, so the temporary
    mask stays small for tables of 100M+ rows."""
    values = np.asarray(values)
    if values.ndim == 0:
        values = values.reshape(1)
    count, first = 0, None
    block = max(1, (1 << 24) // max(1, values[:1].size))
    for start in range(0, len(values), block):
        bad = ~np.isfinite(values[start : start + block])
        n = int(bad.sum())
        if n and first is None:
            first = np.unravel_index(int(np.argmax(bad.reshape(-1))), bad.shape)
            first = (first[0] + start, *first[1:])
        count += n
    if count:
        where = f"row {int(first[0])}" + "".join(f", column {int(i)}" for i in first[1:2])
        raise ValueError(
            f"{path}: {what} hold {count} non-finite value{'s' if count > 1 else ''} (NaN or "
            f"inf), the first at {where}; expected finite numbers"
        )


def _check_edges(
    src: np.ndarray, dst: np.ndarray, num_nodes: int, path: str, what: str = "edge"
) -> None:
    """ValueError naming `path` when an edge endpoint is not a node id in [0, num_nodes)."""
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num_nodes):
        raise ValueError(
            f"{path}: {what} endpoints must lie in [0, {num_nodes}) (the node count); got range "
            f"[{min(src.min(), dst.min())}, {max(src.max(), dst.max())}]"
        )


# ----------------------------------------------------------------------------- Planetoid


def _planetoid_file(root: str, name: str, suffix: str) -> str:
    path = os.path.join(root, f"ind.{name}.{suffix}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Planetoid file {path} is missing (dataset {name!r} in {root})")
    return path


def _unpickle(path: str):
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            # the 2016 pickles name scipy.sparse.csr.csr_matrix, a deprecated alias
            warnings.simplefilter("ignore", DeprecationWarning)
            return pickle.load(f, encoding="latin1")
    except Exception as err:  # noqa: BLE001 - any unpickling failure names the file
        raise ValueError(
            f"cannot read Planetoid pickle {path}: {type(err).__name__}: {err}"
        ) from None


def load_planetoid(root: str, name: str = "cora", *, normalize_features: bool = True) -> Graph:
    """Reads the Planetoid `ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}` files.

    Node order is `vstack(allx, tx)` with the tx rows moved to the ids in `test.index` (as GCN,
    PyG and DGL load them). CiteSeer's test ids without features are padded with zero feature
    rows and label 0 (the GCN/PyG convention); they are not test nodes. Splits: train = the first
    `len(y)` nodes, val = the next 500 (fewer if allx ends first), test = `test.index`
    (sorted). Edges: symmetric, deduplicated, self-loops removed (Cora: 10,556 directed edges,
    as PyG).

    normalize_features: divide each feature row by its sum (what GCN, DGL and the PyG examples'
    `NormalizeFeatures` do; rows that sum to 0 are left at 0).
    """
    if name not in PLANETOID_NAMES:
        raise ValueError(f"unknown Planetoid dataset {name!r}; expected one of {PLANETOID_NAMES}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Planetoid folder {root} does not exist")
    parts = {}
    for suffix in ("x", "y", "tx", "ty", "allx", "ally", "graph"):
        parts[suffix] = _unpickle(_planetoid_file(root, name, suffix))
    index_path = _planetoid_file(root, name, "test.index")
    test_index = _read_int_lines(index_path)

    def dense(suffix: str) -> np.ndarray:
        value = parts[suffix]
        path = os.path.join(root, f"ind.{name}.{suffix}")
        try:
            arr = value.toarray() if sp.issparse(value) else np.asarray(value)
            arr = arr.astype(np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{path}: expected a numeric matrix, got {type(value).__name__} ({err})"
            ) from None
        if arr.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D matrix, got shape {arr.shape}")
        check_finite(arr, path, "features" if suffix.endswith("x") else "labels")
        return arr

    x, y, tx, ty, allx, ally = (dense(s) for s in ("x", "y", "tx", "ty", "allx", "ally"))
    for a, b, what in ((tx, ty, "tx/ty"), (allx, ally, "allx/ally"), (x, y, "x/y")):
        if len(a) != len(b):
            raise ValueError(
                f"ind.{name}.{what} in {root}: {len(a)} feature rows but {len(b)} labels"
            )
    if len(test_index) != len(tx):
        raise ValueError(
            f"{index_path}: {len(test_index)} test ids but ind.{name}.tx has {len(tx)} rows"
        )
    if not (tx.shape[1] == allx.shape[1] and ty.shape[1] == ally.shape[1]):
        raise ValueError(
            f"ind.{name}.* in {root}: column counts differ (allx {allx.shape}, tx {tx.shape}, "
            f"ally {ally.shape}, ty {ty.shape})"
        )
    lo, hi = int(test_index.min()), int(test_index.max())
    # CiteSeer: the test ids span lo..hi with gaps (isolated nodes without features).
    num_nodes = max(len(allx) + len(tx), hi + 1)
    features = np.zeros((num_nodes, allx.shape[1]), np.float32)
    onehot = np.zeros((num_nodes, ally.shape[1]), np.float32)
    features[: len(allx)], onehot[: len(ally)] = allx, ally
    features[test_index], onehot[test_index] = tx, ty
    if lo < len(allx):
        raise ValueError(
            f"{index_path}: test ids start at {lo}, inside the allx rows (< {len(allx)})"
        )
    labels = np.where(onehot.any(1), onehot.argmax(1), 0).astype(np.int32)
    if normalize_features:
        rowsum = features.sum(1, keepdims=True)
        features = np.divide(features, rowsum, out=np.zeros_like(features), where=rowsum != 0)

    graph = parts["graph"]
    if not hasattr(graph, "items"):
        raise ValueError(f"ind.{name}.graph in {root}: expected a dict of adjacency lists")
    src = np.fromiter((u for u, nbrs in graph.items() for _ in nbrs), np.int64)
    dst = np.fromiter((v for nbrs in graph.values() for v in nbrs), np.int64)
    _check_edges(src, dst, num_nodes, os.path.join(root, f"ind.{name}.graph"))
    indptr, indices = csr_from_edges(src, dst, num_nodes)
    n_train = len(y)
    return Graph(
        name=name,
        indptr=indptr,
        indices=indices,
        features=features,
        labels=labels,
        train_idx=np.arange(n_train, dtype=np.int64),
        val_idx=np.arange(n_train, min(n_train + 500, len(allx)), dtype=np.int64),
        test_idx=np.sort(test_index).astype(np.int64),
        num_classes=onehot.shape[1],
    )


def _read_int_lines(path: str) -> np.ndarray:
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    try:
        return np.array([int(v) for v in lines], np.int64)
    except ValueError as err:
        raise ValueError(f"{path}: expected one integer per line ({err})") from None


# ----------------------------------------------------------------------------- OGB layout


def read_csv_gz(path: str, *, dtype: type, num_cols: int | None = None) -> np.ndarray:
    """A headerless comma-separated `.csv.gz` of numbers as `[rows, cols]` (cols from line 1).

    Parsed in C (`np.fromstring`), hundreds of MB/s; a short row, a bad token or a ragged file
    raise ValueError naming the file. `nan` parses (OGB marks unlabelled nodes with it).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"OGB file {path} is missing")
    try:
        with gzip.open(path, "rb") as f:
            text = f.read().decode("ascii")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable gzip text file ({err})") from None
    lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    if not text.strip():
        return np.zeros((0, num_cols or 0), dtype)
    first = text[: text.find("\n")] if "\n" in text else text
    cols = len(first.split(","))
    if num_cols is not None and cols != num_cols:
        raise ValueError(f"{path}: line 1 has {cols} columns, expected {num_cols}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (instead of raising) on a bad token
        try:
            flat = np.fromstring(text.replace(",", " "), dtype=dtype, sep=" ")
        except (ValueError, DeprecationWarning) as err:
            raise ValueError(f"{path}: cannot parse as {np.dtype(dtype).name} ({err})") from None
    if flat.size != lines * cols:
        raise ValueError(
            f"{path}: {flat.size} values in {lines} lines is not {cols} per line "
            "(a ragged line or a bad token)"
        )
    return flat.reshape(lines, cols)


def _load_npz(path: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `keys` of the npz file `path` (no pickles); errors name the file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"OGB file {path} is missing")
    try:
        with np.load(path) as f:
            if not hasattr(f, "files"):  # a plain .npy file
                raise ValueError("a single array, not an npz archive")
            names = f.files
            missing = [k for k in keys if k not in names]
            if not missing:
                return {k: f[k] for k in keys}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        # numpy raises ValueError for pickled (object) arrays or non-npz bytes, BadZipFile and
        # EOFError for a truncated archive
        raise ValueError(f"{path}: not a readable npz file ({type(err).__name__}: {err})") from None
    raise ValueError(f"{path}: missing arrays {missing} (has {names})")


def load_ogb_node(
    root: str, *, split: str | None = None, symmetric: bool = True, name: str | None = None
) -> Graph:
    """Reads an OGB node-property dataset folder (e.g. `.../ogbn_products`).

    Layout (as `ogb.nodeproppred` downloads it):
      raw/edge.csv.gz            [E, 2] int, one `src,dst` per line
      raw/node-feat.csv.gz       [N, D] float
      raw/node-label.csv.gz      [N, 1] (int, or `nan` for unlabelled nodes)
      split/<scheme>/{train,valid,test}.csv.gz   one node id per line
    or the preprocessed equivalents `raw/data.npz` (`edge_index [2, E]`, `node_feat [N, D]`,
    `num_nodes_list`) and `raw/node-label.npz` (`node_label [N, 1]`), used when `data.npz` exists.
    split: the scheme folder (default: the only folder under `split/`).
    symmetric: add reverse edges (ogbn-products ships one direction; the BiFeat / DGL code trains
    on the bidirected graph).
    """
    raw = os.path.join(root, "raw")
    if not os.path.isdir(raw):
        raise FileNotFoundError(f"OGB folder {raw} does not exist (expected raw/ and split/)")
    npz = os.path.join(raw, "data.npz")
    if os.path.exists(npz):
        data = _load_npz(npz, ("edge_index", "node_feat", "num_nodes_list"))
        edge_index, features = data["edge_index"], data["node_feat"]
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"{npz}: edge_index must be [2, E], got {edge_index.shape}")
        if not np.issubdtype(edge_index.dtype, np.integer):
            raise ValueError(f"{npz}: edge_index must hold integers, got {edge_index.dtype}")
        num_nodes = int(np.sum(data["num_nodes_list"]))
        label_file = os.path.join(raw, "node-label.npz")
        labels = _load_npz(label_file, ("node_label",))["node_label"]
        feature_file = edge_file = npz
        edge_what = "edge_index"
        src, dst = edge_index
    else:
        edge_file, edge_what = os.path.join(raw, "edge.csv.gz"), "edge"
        edges = read_csv_gz(edge_file, dtype=np.int64, num_cols=2)
        feature_file = os.path.join(raw, "node-feat.csv.gz")
        features = read_csv_gz(feature_file, dtype=np.float32)
        label_file = os.path.join(raw, "node-label.csv.gz")
        labels = read_csv_gz(label_file, dtype=np.float64, num_cols=1)
        num_nodes = len(features)
        src, dst = edges[:, 0], edges[:, 1]
    if features.ndim != 2 or len(features) != num_nodes:
        raise ValueError(
            f"{feature_file}: node features have shape {features.shape}, expected [{num_nodes}, D]"
        )
    if not np.issubdtype(features.dtype, np.number):
        raise ValueError(f"{feature_file}: node features must be numbers, got {features.dtype}")
    check_finite(features, feature_file, "node features")
    labels = np.asarray(labels, np.float64).reshape(len(labels), -1)
    if labels.shape != (num_nodes, 1):
        raise ValueError(
            f"{label_file}: labels have shape {labels.shape}, expected [{num_nodes}, 1]"
        )
    labels = _class_ids(labels[:, 0], label_file)
    _check_edges(src, dst, num_nodes, edge_file, edge_what)
    splits = _read_ogb_split(root, split, num_nodes)
    indptr, indices = csr_from_edges(src, dst, num_nodes, symmetric=symmetric)
    return Graph(
        name=name or os.path.basename(os.path.normpath(root)),
        indptr=indptr,
        indices=indices,
        features=np.asarray(features, np.float32),
        labels=labels,
        train_idx=splits["train"],
        val_idx=splits["valid"],
        test_idx=splits["test"],
        num_classes=int(labels.max()) + 1 if num_nodes else 0,
    )


def _class_ids(labels: np.ndarray, path: str) -> np.ndarray:
    """[N] float labels read from `path` -> int32 class ids, NaN (unlabelled) -> -1; ValueError
    naming the file for an infinite, negative or fractional label."""
    known = labels[~np.isnan(labels)]
    bad = ~np.isfinite(known) | (known < 0) | (known != np.round(known))
    if bad.any():
        raise ValueError(
            f"{path}: {int(bad.sum())} labels are not a class id (a non-negative integer, or "
            f"nan for an unlabelled node), e.g. {known[bad][0]!r}"
        )
    return np.where(np.isnan(labels), -1, labels).astype(np.int32)


def _read_ogb_split(root: str, split: str | None, num_nodes: int) -> dict[str, np.ndarray]:
    base = os.path.join(root, "split")
    if split is None:
        schemes = (
            sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
            if (os.path.isdir(base))
            else []
        )
        if len(schemes) != 1:
            raise FileNotFoundError(
                f"{base}: expected exactly one split scheme folder, found {schemes or 'none'}; "
                "pass split=<scheme>"
            )
        split = schemes[0]
    out = {}
    for part in SPLITS:
        path = os.path.join(base, split, f"{part}.csv.gz")
        ids = read_csv_gz(path, dtype=np.int64, num_cols=1)[:, 0]
        if ids.size and (ids.min() < 0 or ids.max() >= num_nodes):
            raise ValueError(
                f"{path}: node ids must lie in [0, {num_nodes}), got [{ids.min()}, {ids.max()}]"
            )
        out[part] = ids
    return out


def load_graph(name: str, data_dir: str = "", **synthetic_kwargs) -> Graph:
    """Dispatch by name: `cora` / `citeseer` / `pubmed` (Planetoid files in `data_dir`),
    `ogbn-*` / `mag240m*` (OGB layout in `data_dir/<name with - as _>`, or `data_dir` itself
    when it holds raw/), or `synthetic` (`synthetic_kwargs`, `num_nodes` required)."""
    if name in PLANETOID_NAMES:
        return load_planetoid(data_dir, name)
    if name == "synthetic":
        return synthetic_graph(**synthetic_kwargs)
    if name.startswith(("ogbn", "mag240m")):
        root = data_dir
        if not os.path.isdir(os.path.join(root, "raw")):
            root = os.path.join(data_dir, name.replace("-", "_"))
        return load_ogb_node(root, name=name)
    raise ValueError(f"unknown graph dataset {name!r}: expected Planetoid, ogbn-*, or synthetic")
