"""Tests for ops/quantized_gather.py: reference, XLA and Pallas (interpret) agree on all methods."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ops import quantize as Q
from ops.quantized_gather import GatherTiles, quantized_gather, quantized_gather_reference

NUM_ROWS = 300
CONFIGS = [("sq", b) for b in Q.SQ_BITS] + [("uniform", b) for b in Q.UNIFORM_BITS] + [("vq", 0)]


def _make(method, bits, num_cols, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((NUM_ROWS, num_cols)) * 2).astype(np.float32)
    if (
        method == "vq"
    ):  # random codebooks: fitting is tested in test_quantize.py (and compiles long)
        params = {
            "codebooks": jnp.asarray(rng.standard_normal((-(-num_cols // 8), 16, 8)), jnp.float32)
        }
        codes = Q.vq_encode(x, params)
        return Q.QuantizedTable(codes, params, "vq", 4, num_cols)
    return Q.quantize(x, method, bits)


_CACHE = {}


def table(method, bits, num_cols):
    key = (method, bits, num_cols)
    if key not in _CACHE:
        _CACHE[key] = _make(method, bits, num_cols)
    return _CACHE[key]


def assert_close(out, ref, t):
    """Per-method tolerance: the paths fuse the same float32 math differently (an ulp or an FMA)."""
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape and out.dtype == np.float32
    if t.method == "vq":
        np.testing.assert_array_equal(out, ref)
    elif t.method == "sq":
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=0)
    else:  # lo + code * scale: absolute error relative to the column's range
        atol = 1e-6 * (
            np.abs(np.asarray(t.params["lo"])).max()
            + np.asarray(t.params["scale"]).max() * 2**t.bits
        )
        np.testing.assert_allclose(out, ref, rtol=0, atol=atol)


# 37 columns: packed chunks of unequal width and a padded last VQ sub-vector.
CASES = [(m, b, 128) for m, b in CONFIGS] + [
    ("sq", 1, 37),
    ("sq", 4, 37),
    ("uniform", 2, 37),
    ("vq", 0, 37),
]


@pytest.mark.parametrize(
    ("method", "bits", "num_cols"), CASES, ids=[f"{m}{b}-{d}" for m, b, d in CASES]
)
def test_impls_agree(method, bits, num_cols):
    t = table(method, bits, num_cols)
    idx = np.random.default_rng(1).integers(0, NUM_ROWS, 200).astype(np.int32)
    ref = quantized_gather_reference(t, idx)
    np.testing.assert_array_equal(ref, np.asarray(Q.dequantize(t))[idx])
    assert_close(quantized_gather(t, idx, impl="xla"), ref, t)
    assert_close(quantized_gather(t, idx), ref, t)  # auto
    assert_close(quantized_gather(t, idx, impl="pallas", interpret=True), ref, t)


@pytest.mark.parametrize(
    "dtype", [np.int32, np.int64, np.uint8, np.int16, np.uint32, np.int8], ids=lambda d: d.__name__
)
def test_index_dtypes(dtype):
    t = table("sq", 4, 37)
    idx = np.random.default_rng(2).integers(0, min(NUM_ROWS, np.iinfo(dtype).max), 64).astype(dtype)
    ref = np.asarray(Q.dequantize(t))[idx.astype(np.int64)]
    for impl in ("xla", "pallas"):
        assert_close(quantized_gather(t, idx, impl=impl), ref, t)
    assert_close(quantized_gather(t, jnp.asarray(idx), impl="xla"), ref, t)


@pytest.mark.parametrize(("method", "bits"), [("sq", 2), ("uniform", 8), ("vq", 0)])
def test_out_of_range(method, bits):
    t = table(method, bits, 37)
    idx = np.array([0, -1, NUM_ROWS, 5, NUM_ROWS + 1000, -7, NUM_ROWS - 1], np.int32)
    for impl in ("xla", "pallas"):
        with pytest.raises(ValueError, match=r"4 of 7 indices out of range \[0, 300\)"):
            quantized_gather(t, idx, impl=impl)
    with pytest.raises(ValueError, match="out of range"):
        quantized_gather(t, np.array([2**40], np.int64))  # would wrap if cast to int32 first
    # Unchecked: clamped (negative -> row 0, no wrap-around), in every implementation.
    ref = np.asarray(Q.dequantize(t))[np.clip(idx, 0, NUM_ROWS - 1)]
    assert_close(quantized_gather_reference(t, idx), ref, t)
    for impl in ("xla", "pallas"):
        assert_close(quantized_gather(t, idx, impl=impl, check=False), ref, t)


def test_under_jit():
    t = table("sq", 8, 37)
    idx = jnp.arange(10, dtype=jnp.int32) * 3

    with pytest.raises(ValueError, match="check=False"):
        jax.jit(lambda t, i: quantized_gather(t, i))(t, idx)
    out = jax.jit(lambda t, i: quantized_gather(t, i, check=False))(t, idx)
    assert_close(out, quantized_gather_reference(t, idx), t)


def test_shapes_and_tiles():
    t = table("sq", 1, 128)
    idx = np.random.default_rng(3).integers(0, NUM_ROWS, (5, 7))  # any index shape
    out = quantized_gather(t, idx)
    assert out.shape == (5, 7, 128)
    assert_close(out, np.asarray(Q.dequantize(t))[idx], t)
    flat = idx.reshape(-1)  # 35 indices: not a multiple of the block
    out = quantized_gather(t, flat, impl="pallas", tiles=GatherTiles(block_rows=16))
    assert_close(out, quantized_gather_reference(t, flat), t)
    assert quantized_gather(t, np.zeros((0,), np.int32)).shape == (0, 128)


def test_bad_arguments():
    t = table("sq", 8, 37)
    with pytest.raises(ValueError, match="impl"):
        quantized_gather(t, np.arange(3), impl="triton")
    with pytest.raises(ValueError, match="integers"):
        quantized_gather(t, np.arange(3.0))
    with pytest.raises(TypeError, match="QuantizedTable"):
        quantized_gather(np.zeros((3, 3)), np.arange(3))
