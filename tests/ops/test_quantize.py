"""Tests for ops/quantize.py: BiFeat golden vectors, bit packing, uniform and vector quantizers."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops import quantize as Q

GOLDEN = os.path.join(os.path.dirname(__file__), "../../../shared/data/golden/bifeat_sq.npz")
MATRICES = ("gauss", "bow", "outlier")


@pytest.fixture(scope="module")
def golden():
    if not os.path.exists(GOLDEN):
        pytest.skip(f"golden vectors not found at {os.path.abspath(GOLDEN)} (shared/data/golden)")
    return dict(np.load(GOLDEN))


_TABLES = {}


def _golden_table(golden, matrix, bits):
    if (matrix, bits) not in _TABLES:
        _TABLES[matrix, bits] = Q.quantize(golden[f"{matrix}_in"], "sq", bits)
    return _TABLES[matrix, bits]


# ----------------------------------------------------------------------------- golden vectors


@pytest.mark.parametrize("bits", Q.SQ_BITS)
@pytest.mark.parametrize("matrix", MATRICES)
def test_golden_fit_codes_packing(golden, matrix, bits):
    g = lambda s: golden[f"{matrix}_k{bits}_{s}"]
    x = golden[f"{matrix}_in"]
    table = _golden_table(golden, matrix, bits)
    p = table.params
    for name in ("fmin", "fmax", "emin", "emax"):  # bit-exact
        assert np.float32(p[name]) == g(name), name
    # The official mean is a float32 norm: ~5e-6 relative from the exact mean (README quirk 5).
    np.testing.assert_allclose(np.float32(p["mean"]), g("mean"), rtol=1e-5)

    codes = np.asarray(Q.log_sq_encode(x, p, bits))
    assert codes.dtype == g("codes").dtype
    diff = codes.astype(np.int32) - g("codes").astype(np.int32)
    if bits <= 8:
        assert np.count_nonzero(diff) == 0
    else:  # log2 differs from torch's by an ulp at a few floor boundaries (README)
        assert np.abs(diff).max() <= 1
        assert np.count_nonzero(diff) <= 5, np.count_nonzero(diff)

    packed = np.asarray(table.codes)
    if bits < 8:  # official: the same bit patterns in an int8 tensor
        assert packed.dtype == np.uint8
        np.testing.assert_array_equal(packed, g("packed").view(np.uint8))
        np.testing.assert_array_equal(
            np.asarray(Q.unpack_bits(g("packed"), bits, x.shape[1])), g("codes")
        )
        np.testing.assert_array_equal(
            np.asarray(Q.pack_bits(g("codes"), bits)), g("packed").view(np.uint8)
        )
    elif bits == 8:
        np.testing.assert_array_equal(packed, g("packed"))
    else:
        assert packed.dtype == np.int16
        assert np.count_nonzero(packed != g("packed")) <= 5


@pytest.mark.parametrize("bits", Q.SQ_BITS)
@pytest.mark.parametrize("matrix", MATRICES)
def test_golden_decode(golden, matrix, bits):
    g = lambda s: golden[f"{matrix}_k{bits}_{s}"]
    x = golden[f"{matrix}_in"]
    table = _golden_table(golden, matrix, bits)
    out = g("out")
    codes = g("codes")  # unpacked; for k >= 8 the same as "packed"
    # 1 bit inherits the mean's 5e-6 (README quirk 5); otherwise within ~1 ulp (1.2e-7).
    one_ulp = 1e-5 if bits == 1 else 1.5e-7
    # The official formula run op by op (no fusion): float32 rounding as in torch.
    eager = np.asarray(Q.log_sq_decode(codes, table.params, bits))
    np.testing.assert_allclose(eager, out, rtol=one_ulp, atol=0)
    # The decode table of the fast gather (bits <= 8), built on the host the same way.
    if bits <= 8:
        pattern = codes.view(np.uint8) if bits == 8 else codes
        levels = np.asarray(table.params["levels"])
        np.testing.assert_allclose(levels[pattern.astype(np.int64)], out, rtol=one_ulp, atol=0)
    # Jitted, XLA fuses the multiply-add in the exponent (one rounding less than torch): <= 5e-7.
    rtol = max(one_ulp, 5e-7)
    decoded = np.asarray(Q.decode_codes(table, g("packed")))
    np.testing.assert_allclose(decoded, out, rtol=rtol, atol=0)
    # End to end: identical except where a 16-bit level flipped, and then by one level.
    ours = np.asarray(Q.dequantize(table))
    if bits <= 8:
        np.testing.assert_allclose(ours, out, rtol=rtol, atol=0)
    else:
        step = 2.0 ** ((g("emax") - g("emin")) / 2**15) - 1  # relative width of one level
        assert np.all(np.abs(ours - out) <= np.abs(out) * step * 1.01 + 1e-12)
    # Quirk 1: an exact zero decodes to the smallest negative level (-m at 1 bit).
    if matrix == "bow":
        zero = x == 0
        assert np.all(ours[zero] < 0)
        np.testing.assert_allclose(ours[zero], ours[zero].min(), rtol=1e-6)


def test_golden_commit_recorded(golden):
    assert str(golden["commit"]).startswith("16f1f9d")


# ----------------------------------------------------------------------------- bit packing


def _pack_spec(codes: np.ndarray, bits: int) -> np.ndarray:
    """The README's layout, written out loop by loop."""
    n, d = codes.shape
    per = 8 // bits
    widths = [-(-(d - e) // per) for e in range(per)]
    starts = np.cumsum([0] + widths[:-1])
    out = np.zeros((n, widths[0]), np.uint8)
    for e in range(per):
        for j in range(widths[e]):
            out[:, j] |= (codes[:, starts[e] + j] << (bits * (per - 1 - e))).astype(np.uint8)
    return out


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 4),
    cols=st.integers(1, 70),
    bits=st.sampled_from([1, 2, 4, 8]),
    seed=st.integers(0, 2**31 - 1),
)
def test_pack_round_trip(rows, cols, bits, seed):
    codes = np.random.default_rng(seed).integers(0, 2**bits, (rows, cols)).astype(np.uint8)
    packed = np.asarray(Q.pack_bits(codes, bits))
    assert packed.shape == (rows, -(-cols * bits // 8)) == (rows, Q.packed_width(cols, bits))
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, _pack_spec(codes, bits))
    np.testing.assert_array_equal(np.asarray(Q.unpack_bits(packed, bits, cols)), codes)
    # the official int8 storage unpacks the same
    np.testing.assert_array_equal(
        np.asarray(Q.unpack_bits(packed.view(np.int8), bits, cols)), codes
    )


def test_pack_layout_examples():
    per, nbytes, widths, starts = Q.chunk_layout(100, 1)  # README: bow, k=1
    assert (per, nbytes, widths) == (8, 13, (13, 13, 13, 13, 12, 12, 12, 12))
    assert starts == (0, 13, 26, 39, 52, 64, 76, 88)
    codes = np.arange(64, dtype=np.uint8)[None] % 16  # README: D=64, k=4: c[j] << 4 | c[32 + j]
    packed = np.asarray(Q.pack_bits(codes, 4))[0]
    np.testing.assert_array_equal(packed, (codes[0, :32] << 4) | codes[0, 32:])
    with pytest.raises(ValueError, match="bytes"):
        Q.unpack_bits(jnp.zeros((2, 5), jnp.uint8), 4, 64)


# ----------------------------------------------------------------------------- uniform


@pytest.mark.parametrize("bits", Q.UNIFORM_BITS)
def test_uniform_error_bound(bits):
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((400, 37)) * rng.uniform(0.1, 5, 37) + rng.normal(size=37)
    x = x.astype(np.float32)
    x[:, 3] = 1.5  # a constant column decodes exactly
    table = Q.quantize(x, "uniform", bits)
    assert table.codes.shape == (400, Q.packed_width(37, bits))
    xr = np.asarray(Q.dequantize(table))
    scale = np.asarray(table.params["scale"])
    assert np.all(np.abs(xr - x) <= scale / 2 * (1 + 1e-5) + 1e-6 * np.abs(x).max())
    np.testing.assert_array_equal(xr[:, 3], 1.5)
    np.testing.assert_allclose(xr.min(0), x.min(0), rtol=1e-6, atol=1e-6)  # min/max are levels
    np.testing.assert_allclose(xr.max(0), x.max(0), rtol=1e-5, atol=1e-5)


def test_log_vs_uniform_on_gaussian():
    """Relative L2 decode error on N(0, 1), 20000 x 64 (seed 0). Measured: 2 bits: log-uniform
    0.605, uniform 0.807; 4 bits: log-uniform 0.228, uniform 0.156. With one magnitude bit the
    log levels (~0.03, ~0.6) sit nearer the bulk than uniform's (+-1.3, +-4); from 4 bits on the
    log grid spends its levels on tiny magnitudes and uniform wins."""
    x = np.random.default_rng(0).standard_normal((20000, 64)).astype(np.float32)
    err = {}
    for method in ("sq", "uniform"):
        for bits in (2, 4):
            xr = np.asarray(Q.dequantize(Q.quantize(x, method, bits)))
            err[method, bits] = np.linalg.norm(xr - x) / np.linalg.norm(x)
    assert err["sq", 2] < err["uniform", 2]
    assert err["uniform", 4] < err["sq", 4]
    np.testing.assert_allclose(
        [err["sq", 2], err["uniform", 2], err["sq", 4], err["uniform", 4]],
        [0.605, 0.807, 0.228, 0.156],
        atol=0.01,
    )


# ----------------------------------------------------------------------------- vector


def _planted(n, num_sub, width, length, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_sub, length, width))
    labels = rng.integers(0, length, (n, num_sub))
    parts = [
        centers[s][labels[:, s]] * rng.uniform(0.8, 1.2, (n, 1))
        + 0.03 * rng.standard_normal((n, width))
        for s in range(num_sub)
    ]
    return np.concatenate(parts, 1).astype(np.float32), labels


def test_vq_recovers_planted_clusters():
    x, labels = _planted(2000, 2, 8, 12)
    x = x[:, :13]  # the last sub-vector is padded (13 = 8 + 5)
    table = Q.quantize(x, "vq", width=8, length=12)
    assert table.codes.shape == (2000, 2) and table.codes.dtype == np.uint8
    assert table.params["codebooks"].shape == (2, 12, 8)
    codes = np.asarray(table.codes)
    for s in range(2):  # codes and planted labels are the same partition
        pairs = set(zip(codes[:, s].tolist(), labels[:, s].tolist(), strict=True))
        assert len(pairs) == 12, s
    xr = np.asarray(Q.dequantize(table))
    assert xr.shape == x.shape
    assert np.linalg.norm(xr - x) / np.linalg.norm(x) < 0.15


def test_vq_code_dtypes():
    assert Q.vq_code_dtype(256) == np.uint8
    assert Q.vq_code_dtype(257) == np.int16 and Q.vq_code_dtype(32768) == np.int16
    assert Q.vq_code_dtype(32769) == np.int32
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 4)).astype(np.float32)
    params = {"codebooks": jnp.asarray(rng.standard_normal((1, 300, 4)), jnp.float32)}
    codes = np.asarray(Q.vq_encode(x, params))  # encoding only: fitting compiles for seconds
    assert codes.dtype == np.int16 and codes.shape == (600, 1) and codes.max() < 300
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
        (c := np.asarray(params["codebooks"][0])) / np.linalg.norm(c, axis=1, keepdims=True)
    ).T
    np.testing.assert_array_equal(codes[:, 0], cos.argmax(1))
    with pytest.raises(ValueError, match="exceeds"):
        Q.quantize(x[:100], "vq", width=4, length=300)


# ----------------------------------------------------------------------------- table


def test_table_pytree_and_ratios():
    x = np.random.default_rng(2).standard_normal((1000, 128)).astype(np.float32)
    for bits, ratio in ((1, 32), (2, 16), (4, 8), (8, 4), (16, 2)):
        t = Q.quantize(x, "sq", bits)
        assert t.nbytes == t.codes.nbytes + sum(v.nbytes for v in t.params.values())
        assert abs(t.compression_ratio / ratio - 1) < 0.01, (bits, t.compression_ratio)
    t = Q.quantize(x, "sq", 4)
    leaves, treedef = jax.tree_util.tree_flatten(t)
    assert len(leaves) == 1 + len(t.params)
    t2 = jax.tree_util.tree_unflatten(treedef, leaves)
    assert (t2.method, t2.bits, t2.num_cols) == ("sq", 4, 128)
    np.testing.assert_allclose(jax.jit(Q.dequantize)(t), Q.dequantize(t), rtol=1e-6)


def test_bad_arguments():
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match="sq bits"):
        Q.quantize(x, "sq", 3)
    with pytest.raises(ValueError, match="uniform bits"):
        Q.quantize(x, "uniform", 16)
    with pytest.raises(ValueError, match="method"):
        Q.quantize(x, "pq", 8)
    with pytest.raises(ValueError, match="num_rows, num_cols"):
        Q.quantize(x[0], "sq", 8)
