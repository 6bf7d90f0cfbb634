"""Feature quantizers (BiFeat, arXiv 2207.14696) and bit packing, as pure functions over arrays.

Three methods, each a host-side fit plus jittable encode / decode:

- ``"sq"``: BiFeat's scalar quantizer, reproducing the official code (github.com/BiFeat/BiFeat,
  ``compresser.py`` / ``packbits.py``) including its quirks: one global log-uniform sign-magnitude
  quantizer; ``fmin`` / ``fmax`` from the 0.5 / 99.5 percentiles of ``|x|`` over a row sample;
  ``bits`` in {1, 2, 4, 8, 16}; zero counts as negative; 1 bit decodes to ``+-mean|x|`` (+0.1 when
  the mean is below 0.1). Levels decode to the midpoints of their log2 bins, never to 0.
- ``"uniform"``: per-column min-max uniform quantizer (1/2/4/8 bits), the common baseline.
- ``"vq"``: per-sub-vector k-means codebooks with cosine assignment (``ops/vq.py``).

Codes of fewer than 8 bits are packed with BiFeat's chunked layout (see `pack_bits`). Packed bytes
are stored as ``uint8``; the official code stores the same bit patterns in an ``int8`` tensor, so
``official.view(np.uint8) == ours``.

`quantize` / `dequantize` wrap everything in a `QuantizedTable` pytree. Gathering rows of a table
and decoding them in one pass lives in ``ops/quantized_gather.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ops.vq import fit_vq, vq_code_dtype, vq_decode, vq_encode  # noqa: F401 (re-exported)

SQ_BITS = (1, 2, 4, 8, 16)
UNIFORM_BITS = (1, 2, 4, 8)
METHODS = ("sq", "uniform", "vq")
_ENCODE_ROWS = 1 << 18  # rows encoded per call in `quantize`
_EPS = 1e-5  # the official code's epsilon: fmin >= 1e-5, fmax >= 2e-5, emax = log2 fmax + 1e-5


# ----------------------------------------------------------------------------- bit packing


@functools.cache
def chunk_layout(num_cols: int, bits: int) -> tuple[int, int, tuple[int, ...], tuple[int, ...]]:
    """BiFeat's packing layout: ``(per_byte, num_bytes, widths, starts)``.

    The ``num_cols`` columns are cut into ``per_byte = 8 // bits`` consecutive chunks; chunk
    ``e`` holds ``widths[e] = ceil((num_cols - e) / per_byte)`` columns starting at ``starts[e]``
    (earliest chunks widest) and sits at bit position ``bits * (per_byte - 1 - e)`` of bytes
    ``0 .. widths[e] - 1``. ``num_bytes = widths[0] = ceil(num_cols * bits / 8)``.
    """
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"bit packing needs bits in (1, 2, 4, 8), got {bits}")
    per_byte = 8 // bits
    widths = tuple(-(-(num_cols - e) // per_byte) for e in range(per_byte))
    starts = tuple(int(s) for s in np.cumsum((0,) + widths[:-1]))
    return per_byte, widths[0], widths, starts


def packed_width(num_cols: int, bits: int) -> int:
    """Bytes per packed row: ``ceil(num_cols * bits / 8)``."""
    return chunk_layout(num_cols, bits)[1]


@functools.cache
def chunk_major_columns(num_cols: int, bits: int) -> np.ndarray | None:
    """Where each column sits in the chunk-major ``[per_byte * num_bytes]`` unpacked order.

    Unpacking a row of bytes gives the values of chunk 0 (all ``num_bytes`` slots), then chunk 1,
    ...; column ``c = starts[e] + j`` sits at ``e * num_bytes + j``. ``None`` when that is the
    identity (``num_cols`` divisible by ``per_byte``), so callers can skip the column gather.
    """
    per_byte, nbytes, widths, starts = chunk_layout(num_cols, bits)
    pos = np.concatenate([e * nbytes + np.arange(widths[e]) for e in range(per_byte)])
    return None if len(pos) == per_byte * nbytes else pos.astype(np.int32)


@functools.partial(jax.jit, static_argnames="bits")
def pack_bits(codes: jax.Array, bits: int) -> jax.Array:
    """Packs ``codes: [N, D]`` (integers in ``[0, 2**bits)``) into ``[N, ceil(D*bits/8)] uint8``.

    Byte ``j`` of a row is ``OR_e codes[starts[e] + j] << bits*(per_byte-1-e)`` over the chunks
    ``e`` with ``j < widths[e]`` (`chunk_layout`), e.g. 4 bits, D = 64: ``c[j] << 4 | c[32 + j]``.
    """
    codes = jnp.asarray(codes)
    num_rows, num_cols = codes.shape
    per_byte, nbytes, widths, starts = chunk_layout(num_cols, bits)
    if per_byte == 1:
        return codes.astype(jnp.uint8)
    # Source column for each (chunk, byte) slot; slot past a chunk's width reads a zero column.
    src = np.full((per_byte, nbytes), num_cols, np.int32)
    for e in range(per_byte):
        src[e, : widths[e]] = starts[e] + np.arange(widths[e])
    padded = jnp.concatenate([codes.astype(jnp.uint8), jnp.zeros((num_rows, 1), jnp.uint8)], 1)
    slots = padded[:, src] & ((1 << bits) - 1)  # [N, per_byte, nbytes]
    shifts = (bits * (per_byte - 1 - np.arange(per_byte))).astype(np.uint8)
    return jnp.bitwise_or.reduce(slots << shifts[None, :, None], axis=1).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames=("bits", "num_cols"))
def unpack_bits(packed: jax.Array, bits: int, num_cols: int) -> jax.Array:
    """Inverse of `pack_bits`: ``[N, ceil(D*bits/8)] uint8 (or int8) -> [N, D] uint8``."""
    packed = jnp.asarray(packed)
    per_byte, nbytes, _, _ = chunk_layout(num_cols, bits)
    if packed.shape[-1] != nbytes:
        raise ValueError(
            f"packed rows have {packed.shape[-1]} bytes; {num_cols} cols x {bits} "
            f"bits need {nbytes}"
        )
    u = jax.lax.bitcast_convert_type(packed, jnp.uint8) if packed.dtype == jnp.int8 else packed
    if per_byte == 1:
        return u.astype(jnp.uint8)
    shifts = (bits * (per_byte - 1 - np.arange(per_byte))).astype(np.uint8)
    vals = (u[:, None, :] >> shifts[None, :, None]) & np.uint8((1 << bits) - 1)
    vals = vals.reshape(u.shape[0], per_byte * nbytes)
    pos = chunk_major_columns(num_cols, bits)
    return vals if pos is None else vals[:, pos]


def byte_codes(bits: int) -> np.ndarray:
    """``[256, 8 // bits] uint8``: the codes held by each byte value, chunk 0 (top bits) first."""
    per_byte = 8 // bits
    shifts = bits * (per_byte - 1 - np.arange(per_byte))
    return ((np.arange(256)[:, None] >> shifts[None, :]) & ((1 << bits) - 1)).astype(np.uint8)


# ----------------------------------------------------------------------------- BiFeat scalar (sq)


def fit_log_sq(
    x: Any,
    bits: int,
    *,
    rng: np.random.Generator | int | None = 0,
    sample_rows: int = 100_000,
    mean_rows: int = 10_000,
) -> dict[str, np.float32]:
    """Fits BiFeat's log-uniform quantizer on the host (numpy), as the official code does.

    x: [N, D] float. Percentiles of ``|x|`` (numpy, linear interpolation) over all elements of the
    sample rows: every row when ``N <= sample_rows``, else the first ``sample_rows`` rows of a
    permutation drawn from ``rng`` (the official permutation is unseeded). ``mean`` is
    ``mean|x|`` over the first ``min(N, mean_rows)`` rows, +0.1 when below 0.1 (official quirk).
    Returns float32 scalars ``fmin, fmax, emin, emax, mean``; ``emin = emax = 0`` for ``bits=1``
    (the official code never sets them there).
    """
    if bits not in SQ_BITS:
        raise ValueError(f"sq bits must be one of {SQ_BITS}, got {bits}")
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be [num_rows, num_cols], got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    n = x.shape[0]
    if n > sample_rows:
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        sample = x[np.sort(rng.permutation(n)[:sample_rows])]
    else:
        sample = x
    p_lo, p_hi = np.percentile(np.abs(sample), [0.5, 99.5])
    fmin = np.float32(max(np.float32(p_lo), _EPS))
    fmax = np.float32(max(np.float32(p_hi), 2 * _EPS))
    if bits == 1:
        emin = emax = np.float32(0)
    else:  # numpy float32 log2 matches torch's on these two scalars; XLA's is 1 ulp off at times
        emin = np.log2(fmin)
        emax = np.float32(np.log2(fmax) + np.float32(_EPS))
    # float64 accumulation; the official float32 norm differs by ~5e-6 relative.
    head = x[:mean_rows]
    mean = np.float32(np.abs(head, dtype=np.float64).sum() / head.size)
    if mean < 0.1:
        mean = np.float32(mean + np.float32(0.1))
    return dict(fmin=fmin, fmax=fmax, emin=emin, emax=emax, mean=mean)


def _log2(a: jax.Array) -> jax.Array:
    """float32 log2 accurate to ~1 ulp: exact exponent + log of a mantissa in [sqrt(.5), sqrt(2)).

    XLA:CPU's ``log2`` is ~2 ulp off: with it tens to hundreds of the golden 16-bit codes flip a
    level (gauss, outlier); with this split 1 and 0 do, fewer than with numpy's float32 log2.
    """
    m, e = jnp.frexp(a)
    small = m < np.float32(np.sqrt(0.5))
    m = jnp.where(small, m * 2, m)
    e = jnp.where(small, e - 1, e)
    return e.astype(jnp.float32) + jnp.log(m) * np.float32(1 / np.log(2))


@functools.partial(jax.jit, static_argnames="bits")
def log_sq_encode(x: jax.Array, params: dict[str, Any], bits: int) -> jax.Array:
    """Official BiFeat codes (unpacked) of ``x: [N, D] float``.

    bits=1: ``uint8 (x > 0)``; bits < 8: ``uint8 s + 2**(bits-1)``; bits=8: ``int8 s``;
    bits=16: ``int16 s``, with signed level ``s = e`` for ``x > 0`` else ``-1 - e`` and
    ``e = floor((log2 clip(|x|, fmin, fmax) - emin) / (emax - emin) * 2**(bits-1))``.
    Jitted: eager op-by-op rounding (no fused multiply-add in `_log2`) flips a few more 16-bit
    levels.
    """
    x = jnp.asarray(x, jnp.float32)
    if bits == 1:
        return (x > 0).astype(jnp.uint8)
    drange = 2 ** (bits - 1)
    p = {k: jnp.asarray(params[k], jnp.float32) for k in ("fmin", "fmax", "emin", "emax")}
    a = jnp.clip(jnp.abs(x), p["fmin"], p["fmax"])
    # XLA rewrites `v / broadcast(s)` as `v * (1 / s)`, which is not IEEE division and moves ~10%
    # of the quotients by 1 ulp (flipping 16-bit levels); a full-shape divisor behind an
    # optimization barrier keeps the true division that torch does.
    span = jax.lax.optimization_barrier(jnp.broadcast_to(p["emax"] - p["emin"], a.shape))
    e = jnp.floor((_log2(a) - p["emin"]) / span * np.float32(drange))
    e = jnp.clip(e, 0, drange - 1)  # a no-op for the official parameters; guards hand-made ones
    s = jnp.where(x > 0, e, -1 - e)
    if bits < 8:
        return (s + drange).astype(jnp.uint8)
    return s.astype(jnp.int8 if bits == 8 else jnp.int16)


def log_sq_decode(codes: jax.Array, params: dict[str, Any], bits: int) -> jax.Array:
    """Official decode of unpacked codes ``[N, D]`` (dtypes of `log_sq_encode`) to float32.

    ``t = s + 1/2``, ``x = sign(t) * 2**(|t| * (emax - emin) / drange + emin)``; bits=1:
    ``(code - 1/2) * 2 * mean``.
    """
    codes = jnp.asarray(codes)
    if bits == 1:
        return (codes.astype(jnp.float32) - 0.5) * (2 * jnp.asarray(params["mean"], jnp.float32))
    drange = 2 ** (bits - 1)
    emin = jnp.asarray(params["emin"], jnp.float32)
    emax = jnp.asarray(params["emax"], jnp.float32)
    s = codes.astype(jnp.float32)
    if bits < 8:
        s = s - drange
    t = s + 0.5
    return jnp.sign(t) * _exp2(jnp.abs(t) * ((emax - emin) / drange) + emin)


def _exp2(y: jax.Array) -> jax.Array:
    """float32 ``2**y`` to ~1 ulp: exact integer part, ``exp`` of the fraction only.

    XLA's ``exp2(y) = exp(y * ln 2)`` rounds ``y * ln 2``, a relative error of ~|y| ulp (5 ulp at
    |y| ~ 17, the golden vectors' range).
    """
    n = jnp.floor(y)
    # 2**n built from its exponent bits (normal range; |y| stays far inside it here).
    scale = (jnp.clip(n, -126, 127).astype(jnp.int32) + 127) << 23
    return jnp.exp((y - n) * np.float32(np.log(2))) * jax.lax.bitcast_convert_type(
        scale, jnp.float32
    )


def _level_patterns(bits: int) -> np.ndarray:
    """Every code as int32, indexed by its bit pattern (int8 / int16 codes viewed unsigned)."""
    pattern = np.arange(2**bits)
    if bits in (8, 16):
        pattern = pattern.astype(np.uint8 if bits == 8 else np.uint16).view(
            np.int8 if bits == 8 else np.int16
        )
    return pattern.astype(np.int32)


def log_sq_levels(params: dict[str, Any], bits: int) -> jax.Array:
    """``[2**bits] float32``: the decoded value of every code, indexed by the code's bit pattern.

    bits < 8: by the code itself; bits = 8 / 16: by the int8 / int16 code viewed as uint8 / uint16.
    With concrete parameters this is computed on the host the way the official torch code rounds
    (float32 multiply, then add, then a correctly rounded ``exp2``), so the table is within an ulp
    of the official decode; jitted formulas may fuse the multiply-add (one rounding less), which
    moves ``2**y`` by up to half an ulp of ``y`` (~5e-7 relative at |y| ~ 17).
    """
    pattern = _level_patterns(bits)
    try:
        p = {k: np.float32(params[k]) for k in ("emin", "emax", "mean")}
    except jax.errors.ConcretizationTypeError:  # traced parameters: the jnp formula
        return log_sq_decode(jnp.asarray(pattern), params, bits)
    if bits == 1:
        return jnp.asarray((pattern.astype(np.float32) - np.float32(0.5)) * (2 * p["mean"]))
    drange = 2 ** (bits - 1)
    s = pattern.astype(np.float32) - (drange if bits < 8 else 0)
    t = s + np.float32(0.5)
    y = np.abs(t) * ((p["emax"] - p["emin"]) / np.float32(drange)) + p["emin"]  # float32 ops
    return jnp.asarray((np.sign(t) * np.exp2(y.astype(np.float64))).astype(np.float32))


# ----------------------------------------------------------------------------- uniform per column


def fit_uniform(x: Any, bits: int) -> dict[str, jax.Array]:
    """Per-column min-max fit over all rows: ``lo, scale: [D] float32``.

    ``scale = (max - min) / (2**bits - 1)``, the step between levels.
    """
    if bits not in UNIFORM_BITS:
        raise ValueError(f"uniform bits must be one of {UNIFORM_BITS}, got {bits}")
    x = jnp.asarray(x, jnp.float32)
    lo, hi = jnp.min(x, axis=0), jnp.max(x, axis=0)
    return dict(lo=lo, scale=(hi - lo) / (2**bits - 1))


@functools.partial(jax.jit, static_argnames="bits")
def uniform_encode(x: jax.Array, params: dict[str, Any], bits: int) -> jax.Array:
    """``x: [N, D] -> uint8 [N, D]`` codes ``round((x - lo) / scale)`` in ``[0, 2**bits - 1]``."""
    lo, scale = params["lo"], params["scale"]
    inv = jnp.where(scale > 0, 1 / jnp.where(scale > 0, scale, 1), 0)
    q = jnp.round((jnp.asarray(x, jnp.float32) - lo) * inv)
    return jnp.clip(q, 0, 2**bits - 1).astype(jnp.uint8)


def uniform_decode(codes: jax.Array, params: dict[str, Any]) -> jax.Array:
    """``codes: [N, D] -> float32 [N, D]``: ``lo + code * scale``; error <= scale / 2 per column."""
    return params["lo"] + jnp.asarray(codes).astype(jnp.float32) * params["scale"]


# ----------------------------------------------------------------------------- table + wrappers


@dataclasses.dataclass(frozen=True)
class QuantizedTable:
    """A quantized ``[num_rows, num_cols]`` float32 matrix (a pytree: ``codes`` and ``params`` are
    leaves, the rest static).

    codes: sq bits<8 and uniform bits<8: ``[num_rows, ceil(num_cols*bits/8)] uint8`` (packed);
      sq 8: ``[num_rows, num_cols] int8``; sq 16: ``int16``; uniform 8: ``uint8``;
      vq: ``[num_rows, ceil(num_cols/width)]`` uint8 / int16 / int32.
    params: sq: float32 scalars ``fmin, fmax, emin, emax, mean`` and, for bits <= 8, ``levels:
      [2**bits]`` (`log_sq_levels`, used by the fast gather); uniform: ``lo, scale: [num_cols]``;
      vq: ``codebooks: [S, length, width]``.
    """

    codes: jax.Array
    params: dict[str, jax.Array]
    method: str
    bits: int
    num_cols: int

    @property
    def num_rows(self) -> int:
        return self.codes.shape[0]

    @property
    def packed(self) -> bool:
        """Whether ``codes`` holds packed bytes (sq / uniform below 8 bits)."""
        return self.method in ("sq", "uniform") and self.bits < 8

    @property
    def nbytes(self) -> int:
        """Bytes of codes plus parameters."""
        return int(self.codes.nbytes) + sum(int(v.nbytes) for v in self.params.values())

    @property
    def compression_ratio(self) -> float:
        """float32 bytes of the matrix / `nbytes` (parameters included)."""
        return self.num_rows * self.num_cols * 4 / self.nbytes


jax.tree_util.register_dataclass(
    QuantizedTable, data_fields=["codes", "params"], meta_fields=["method", "bits", "num_cols"]
)


def quantize(
    x: Any,
    method: str = "sq",
    bits: int = 8,
    *,
    width: int = 16,
    length: int = 256,
    seed: int = 0,
    sample_rows: int | None = None,
    **vq_kwargs: Any,
) -> QuantizedTable:
    """Fits and encodes ``x: [N, D]`` float into a `QuantizedTable`.

    method: ``"sq"`` (bits in `SQ_BITS`), ``"uniform"`` (bits in `UNIFORM_BITS`) or ``"vq"``
    (ignores ``bits``; ``width`` columns per sub-vector, ``length`` codebook entries;
    ``vq_kwargs`` such as ``max_iters``, ``tol`` go to `fit_vq`). ``sample_rows`` defaults to 100k
    for sq and 50k for vq (uniform fits on all rows); ``seed`` seeds the row sample and k-means.
    """
    x_np = np.asarray(x)
    if x_np.ndim != 2:
        raise ValueError(f"x must be [num_rows, num_cols], got shape {x_np.shape}")
    if vq_kwargs and method != "vq":
        raise ValueError(f"{sorted(vq_kwargs)} apply to method='vq' only (got {method!r})")
    num_cols = x_np.shape[1]
    if method == "sq":
        params = fit_log_sq(x_np, bits, rng=seed, sample_rows=sample_rows or 100_000)
        params = {k: jnp.asarray(v) for k, v in params.items()}
        if bits <= 8:  # decode table for the fast gather (computed once, not per call)
            params["levels"] = log_sq_levels(params, bits)
        encode = functools.partial(log_sq_encode, params=params, bits=bits)
    elif method == "uniform":
        params = fit_uniform(x_np, bits)
        encode = functools.partial(uniform_encode, params=params, bits=bits)
    elif method == "vq":
        params = fit_vq(
            x_np,
            width=width,
            length=length,
            sample_rows=sample_rows or 50_000,
            seed=seed,
            **vq_kwargs,
        )
        encode = functools.partial(vq_encode, params=params)
        bits = int(math.ceil(math.log2(length)))
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    pack = method != "vq" and bits < 8
    blocks = []  # row blocks bound the encoder's temporaries (it materialises a divisor array)
    for start in range(0, max(len(x_np), 1), _ENCODE_ROWS):
        c = encode(jnp.asarray(x_np[start : start + _ENCODE_ROWS], jnp.float32))
        blocks.append(pack_bits(c, bits) if pack else c)
    codes = blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks)
    return QuantizedTable(codes=codes, params=params, method=method, bits=bits, num_cols=num_cols)


@jax.jit
def decode_codes(table: QuantizedTable, codes: jax.Array) -> jax.Array:
    """Decodes code rows (``[B, code_cols]``, as in ``table.codes``) to ``[B, D] float32``."""
    if table.packed:
        codes = unpack_bits(codes, table.bits, table.num_cols)
    if table.method == "sq":
        return log_sq_decode(codes, table.params, table.bits)
    if table.method == "uniform":
        return uniform_decode(codes, table.params)
    if table.method == "vq":
        return vq_decode(codes, table.params, table.num_cols)
    raise ValueError(f"unknown method {table.method!r}")


def dequantize(table: QuantizedTable) -> jax.Array:
    """The whole table decoded: ``[num_rows, num_cols] float32``."""
    return decode_codes(table, table.codes)
