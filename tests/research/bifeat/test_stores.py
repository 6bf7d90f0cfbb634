"""research/bifeat/stores.py: every scheme returns the rows it should (sharded over 4 devices),
the cache keeps exact float32 rows, byte counts, and scheme parsing."""

import jax
import numpy as np
import pytest

from ops.quantize import dequantize
from research.bifeat.stores import build_store, parse_scheme, parse_schemes, top_degree_nodes
from research.training.parallel import data_mesh, shard_batch

SCHEMES = [
    "float32",
    "float32-device",
    "sq1",
    "sq4",
    "sq8",
    "sq16",
    "uniform2",
    "vq8x16",
    "sq2+cache",
]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 24)) * rng.random((300, 1))).astype(np.float32)
    ids = rng.integers(0, 300, size=(4, 50)).astype(np.int32)  # [devices, rows]
    return x, ids, rng.integers(1, 50, 300)


def expected_rows(store, x, ids):
    """What the store must return: the decoded table (after its affine map), cache rows exact."""
    if store.scheme.method == "float32":
        table = x + (0 if store.shift is None else store.shift)
    elif store.scheme.method == "float32-device":
        table = np.asarray(store.tables["table"])
    else:
        t = store.tables
        table = np.array(dequantize(t["table"]))
        if "scale" in t:
            table = table * np.asarray(t["scale"]) + np.asarray(t["shift"])
        if "cache" in t:
            slot = np.asarray(t["slot"])
            table[slot >= 0] = np.asarray(t["cache"])[slot[slot >= 0]]
    return table[ids]


@pytest.mark.parametrize(
    "name,center",
    [(s, False) for s in SCHEMES]
    + [(s, True) for s in ("float32", "float32-device", "sq1", "vq8x16", "sq2+cache")],
)
def test_store_rows_match_decoded_table(data, name, center):
    x, ids, degrees = data
    mesh = data_mesh()
    store = build_store(name, x, mesh, degrees=degrees, cache_fraction=0.1, center=center)
    out = store.features(shard_batch(store.prepare(ids), mesh))
    assert out.shape == (4, 50, 24) and out.dtype == np.float32
    assert len(out.sharding.device_set) == 4
    want = expected_rows(store, x, ids)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(store.rows(ids[0]), want[0], rtol=1e-5, atol=1e-6)
    if center:  # every store maps to zero column means and the centred float32 RMS
        table = store.rows(np.arange(300))
        assert np.abs(table.mean(0)).max() < 0.05 * np.sqrt(np.mean(table**2))
        ref_rms = np.sqrt(np.mean((x - x.mean(0)) ** 2))
        if not store.scheme.cache:
            np.testing.assert_allclose(np.sqrt(np.mean(table**2)), ref_rms, rtol=1e-3)
    if name == "float32":
        assert store.location == "host" and store.compression_ratio <= 1.0
    else:
        assert store.location == "device"


def test_cache_keeps_hot_rows_exact_and_bytes(data):
    x, _, degrees = data
    store = build_store("sq1+cache", x, data_mesh(), degrees=degrees, cache_fraction=0.1)
    hot = top_degree_nodes(degrees, 30)
    assert len(hot) == 30 and degrees[hot].min() >= np.sort(degrees)[-30]
    np.testing.assert_array_equal(store.rows(hot), x[hot])
    cold = np.setdiff1d(np.arange(300), hot)
    assert not np.allclose(store.rows(cold), x[cold])
    plain = build_store("sq1", x, data_mesh())
    assert plain.nbytes == 300 * 3 + 4 * 5 + 4 * 2  # packed codes + sq params + 2 levels
    assert store.nbytes == plain.nbytes + 30 * 24 * 4 + 300 * 4
    assert abs(plain.compression_ratio - 300 * 24 * 4 / plain.nbytes) < 1e-9
    with pytest.raises(ValueError, match="cache_fraction"):
        build_store("sq1+cache", x, data_mesh(), degrees=degrees, cache_fraction=0.0)


def test_scheme_names():
    assert parse_scheme("vq16x2048").width == 16 and parse_scheme("vq16x2048").length == 2048
    assert parse_scheme("sq4+cache").cache and parse_scheme("sq4+cache").bits == 4
    assert [s.name for s in parse_schemes("float32, sq1")] == ["float32", "sq1"]
    for bad, msg in [
        ("sq3", "sq bits"),
        ("uniform16", "uniform bits"),
        ("fp16", "unknown"),
        ("float32+cache", "compressed"),
        ("vq0x16", "width"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_scheme(bad)
    with pytest.raises(ValueError, match="duplicates"):
        parse_schemes("sq1,sq1")


def test_host_store_transfers_rows_not_ids(data):
    x, ids, _ = data
    store = build_store("float32", x, data_mesh())
    prepared = store.prepare(ids)
    assert prepared.shape == (4, 50, 24) and prepared.dtype == np.float32
    quantized = build_store("sq8", x, data_mesh())
    assert quantized.prepare(ids).shape == (4, 50) and quantized.prepare(ids).dtype == np.int32
    assert jax.tree.leaves(quantized.tables)[0].sharding.is_fully_replicated
