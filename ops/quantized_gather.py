"""Gather rows of a `QuantizedTable` and dequantize them in one pass.

``quantized_gather(table, indices)`` returns ``float32 [*indices.shape, num_cols]``, the same as
``dequantize(table)[indices]`` without decoding the whole table. Three implementations:

- `quantized_gather_reference`: plain jnp, take the code rows then decode with ``ops/quantize``.
- ``impl="xla"`` (`_gather_xla`): fused jnp that lowers through XLA on every backend (CPU, GPU,
  TPU). Tuned by measurement on XLA:CPU (see experiments/bench/ops_gather.py):
  * its gather is fast only for row slices of <= 16 or >= ~96 elements, so code rows of 8..64
    bytes are fetched through a ``uint32`` view (an in-jit bitcast: no copy of the table);
  * packed codes are split by shifts straight into the chunk-major order of BiFeat's layout, which
    is the column order when ``D`` is a multiple of ``8 / bits`` (else slices + concat reorder);
  * sq levels come from the decode table stored by `quantize`: a select tree over the code bits
    at 1-2 bits, one table lookup at 4 and 8 bits (both beat ``exp2``), ``exp2`` at 16 bits;
  * rows of 8/16-bit codes (>= 96 bytes) are written out before decoding (`_fusion_barrier`);
    fused into the decode loop their gather is redone per output element, 2-5x slower.
- ``impl="pallas"`` (`_gather_pallas`): a Pallas kernel, grid over blocks of ``block_rows``
  indices; each step gathers its rows with a vector index into the code table
  (``codes_ref[idx, :]``) and decodes them with elementwise math. It lowers to Triton on GPU
  (the Triton lowering is deprecated in new jax; Mosaic GPU has no vector gather before
  Blackwell, and Mosaic TPU none of this form), and runs with ``interpret=True`` anywhere else.
  Triton needs power-of-two block sizes: ``block_rows`` and the row widths of the codes.

``impl="auto"`` picks ``"xla"`` on every backend. On an H100 (experiments/bench/gpu_check.py,
65,536 rows of a 1,000,000 x 128 table) the compiled Pallas kernel matches the reference for
every scheme but is faster than XLA only at 4 bits (119 vs 146 us); elsewhere XLA wins by up to
1.5x, so ``auto`` stays XLA.

Out-of-range indices: with ``check=True`` (default) concrete indices are checked on the host and
raise ``ValueError``; traced indices cannot be checked, so ``check=True`` under ``jit`` raises too
and asks for ``check=False``. Without the check, every implementation clamps indices to
``[0, num_rows - 1]`` (negative indices give row 0; they do not wrap).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from ops.quantize import (
    QuantizedTable,
    chunk_layout,
    chunk_major_columns,
    decode_codes,
    log_sq_decode,
    log_sq_levels,
)

IMPLS = ("auto", "xla", "pallas")


@dataclasses.dataclass(frozen=True)
class GatherTiles:
    """Pallas tiling: ``block_rows`` indices per grid step (a power of two for Triton)."""

    block_rows: int = 128


# ----------------------------------------------------------------------------- shared helpers


def _clamp(indices: jax.Array, num_rows: int) -> jax.Array:
    """Any integer dtype -> int32 in ``[0, num_rows - 1]``."""
    if jnp.dtype(indices.dtype).itemsize < 4 or indices.dtype == jnp.int32:
        indices = indices.astype(jnp.int32)  # small dtypes: so that the bound fits
    return jnp.clip(indices, 0, num_rows - 1).astype(jnp.int32)


def _out_width(table: QuantizedTable) -> int:
    """Width of the chunk-major decoded rows, before `_to_columns`."""
    if table.method == "vq":
        s, _, width = table.params["codebooks"].shape
        return s * width
    if table.packed:
        per_byte, nbytes, _, _ = chunk_layout(table.num_cols, table.bits)
        return per_byte * nbytes
    return table.num_cols


def _to_columns(out: jax.Array, table: QuantizedTable) -> jax.Array:
    """Chunk-major ``[B, _out_width]`` -> ``[B, num_cols]`` in column order."""
    if table.method == "vq":
        return out[:, : table.num_cols]
    if not table.packed:
        return out
    pos = chunk_major_columns(table.num_cols, table.bits)
    if pos is None:
        return out
    # Slices + concat fuse into one loop on XLA; a column gather would not.
    per_byte, nbytes, widths, _ = chunk_layout(table.num_cols, table.bits)
    return jnp.concatenate(
        [out[:, e * nbytes : e * nbytes + widths[e]] for e in range(per_byte)], 1
    )


def _shifts(bits: int) -> np.ndarray:
    per_byte = 8 // bits
    return (bits * (per_byte - 1 - np.arange(per_byte))).astype(np.uint8)


def _select_levels(codes: jax.Array, levels: list[jax.Array], bits: int) -> jax.Array:
    """``levels[codes]`` by a binary select tree over the code bits (elementwise, no gather)."""
    b = 0
    while len(levels) > 1:
        bit = (codes & np.uint8(1 << b)) != 0
        levels = [jnp.where(bit, levels[2 * j + 1], levels[2 * j]) for j in range(len(levels) // 2)]
        b += 1
    return jnp.broadcast_to(levels[0], codes.shape).astype(jnp.float32)


def _chunk_major_params(table: QuantizedTable) -> tuple[jax.Array, jax.Array]:
    """Uniform ``lo, scale`` permuted (and zero-padded) into chunk-major order ``[_out_width]``."""
    lo, scale = table.params["lo"], table.params["scale"]
    if not table.packed:
        return lo, scale
    per_byte, nbytes, widths, starts = chunk_layout(table.num_cols, table.bits)
    src = np.full(per_byte * nbytes, table.num_cols, np.int32)  # padding slots read a zero
    for e in range(per_byte):
        src[e * nbytes : e * nbytes + widths[e]] = starts[e] + np.arange(widths[e])
    pad = lambda v: jnp.concatenate([v, jnp.zeros((1,), v.dtype)])[src]
    return pad(lo), pad(scale)


# ----------------------------------------------------------------------------- reference


def quantized_gather_reference(table: QuantizedTable, indices: jax.Array) -> jax.Array:
    """``dequantize(table)[clamp(indices)]`` computed as take-rows-then-decode (plain jnp).

    indices: any integer shape ``I``; returns ``float32 [*I, num_cols]``.
    """
    indices = jnp.asarray(indices)
    flat = _clamp(indices.reshape(-1), table.num_rows)
    out = decode_codes(table, jnp.take(table.codes, flat, axis=0))
    return out.reshape(*indices.shape, table.num_cols)


# ----------------------------------------------------------------------------- XLA


def _view_rows(codes: jax.Array) -> bool:
    """Whether rows are fetched through a uint32 view: rows of 8..64 bytes (2..16 words).

    XLA:CPU gathers row slices of <= 16 elements or >= ~96 elements fast and the ones in between
    up to 10x slower; the in-jit bitcast to a word view is free (no copy of the table).
    """
    row_bytes = codes.shape[1] * codes.dtype.itemsize
    return row_bytes % 4 == 0 and 8 <= row_bytes <= 64


def _gather_rows(codes: jax.Array, idx: jax.Array) -> jax.Array:
    """``codes[idx]`` for in-range ``idx``: ``[B, code_cols]`` in the codes' dtype."""
    n, w = codes.shape
    if _view_rows(codes):
        per = 4 // codes.dtype.itemsize
        words = jax.lax.bitcast_convert_type(codes.reshape(n, w // per, per), jnp.uint32)
        rows = jnp.take(words, idx, axis=0, mode="clip")
        return jax.lax.bitcast_convert_type(rows, codes.dtype).reshape(idx.shape[0], w)
    return jnp.take(codes, idx, axis=0, mode="clip")


def _fusion_barrier(rows: jax.Array, idx: jax.Array) -> jax.Array:
    """Makes XLA:CPU write the gathered rows out before decoding them.

    Fused, the row gather is redone inside the decode loop for every output element, which makes
    table-lookup and wide-row decodes 2-5x slower on XLA:CPU. ``optimization_barrier`` does not
    stop that fusion on CPU; a conditional does. On other platforms this is the identity (a GPU
    conditional would cost a device-to-host sync).
    """

    def cpu(rows, idx):
        return jax.lax.cond(jnp.any(idx >= 0), lambda r: r, jnp.zeros_like, rows)

    return jax.lax.platform_dependent(rows, idx, cpu=cpu, default=lambda rows, idx: rows)


def _levels(table: QuantizedTable) -> jax.Array:
    """The sq decode table, stored by `quantize`. Computing it here instead would put its
    ``exp2``s inside the fused gather loop, redone for every output element (3-4x slower)."""
    if "levels" in table.params:
        return table.params["levels"]
    return log_sq_levels(table.params, table.bits)


def _decode_xla(table: QuantizedTable, rows: jax.Array) -> jax.Array:
    """Rows of codes ``[B, code_cols]`` -> chunk-major ``float32 [B, _out_width]``."""
    bsz = rows.shape[0]
    if table.method == "vq":
        cb = table.params["codebooks"]
        s, length, width = cb.shape
        flat = rows.astype(jnp.int32) + jnp.arange(s, dtype=jnp.int32) * length
        vals = jnp.take(cb.reshape(s * length, width), flat, axis=0, mode="clip")
        return vals.reshape(bsz, s * width)
    if table.packed:
        mask = np.uint8((1 << table.bits) - 1)
        shifts = _shifts(table.bits)
        codes = ((rows[:, None, :] >> shifts[None, :, None]) & mask).reshape(
            bsz, len(shifts) * rows.shape[1]
        )
        if table.method == "sq":
            levels = _levels(table)
            if table.bits <= 2:  # 1-3 selects per value beat a lookup
                return _select_levels(codes, [levels[j] for j in range(2**table.bits)], table.bits)
            return jnp.take(levels, codes.astype(jnp.int32), axis=0, mode="clip")
        lo, scale = _chunk_major_params(table)
        return lo + codes.astype(jnp.float32) * scale
    if table.method == "uniform":
        return table.params["lo"] + rows.astype(jnp.float32) * table.params["scale"]
    if table.bits == 8:  # 256-entry table by bit pattern
        pattern = jax.lax.bitcast_convert_type(rows, jnp.uint8).astype(jnp.int32)
        return jnp.take(_levels(table), pattern, axis=0, mode="clip")
    return log_sq_decode(rows, table.params, table.bits)  # 16 bits: exp2 beats a 64Ki table


@jax.jit
def _gather_xla(table: QuantizedTable, indices: jax.Array) -> jax.Array:
    """XLA implementation: ``indices [B]`` (any int dtype, clamped) -> ``float32 [B, num_cols]``."""
    idx = _clamp(indices, table.num_rows)
    rows = _gather_rows(table.codes, idx)
    # Measured on XLA:CPU: rows read through the word view (packed, VQ) decode faster fused;
    # wide rows (8 / 16 bits) faster from materialised rows.
    if not _view_rows(table.codes):
        rows = _fusion_barrier(rows, idx)
    return _to_columns(_decode_xla(table, rows), table)


# ----------------------------------------------------------------------------- Pallas


def _pallas_kernel(idx_ref, codes_ref, *refs, method, bits, num_cols, names, scalars):
    """One grid step: ``idx_ref [bm]``, the whole ``codes_ref`` and parameter refs (``names``;
    ``scalars`` are ``[1]`` refs read as scalars) -> ``o_ref [bm, out_w]`` chunk-major."""
    *param_refs, o_ref = refs
    refs_by_name = dict(zip(names, param_refs, strict=True))
    read = lambda k: refs_by_name[k][0] if k in scalars else refs_by_name[k][...]
    i = jnp.clip(idx_ref[...], 0, codes_ref.shape[0] - 1)
    if method == "vq":
        cb_ref = refs_by_name["codebooks"]
        s, _, width = cb_ref.shape
        for j in range(s):  # static loop over sub-vectors; two vector gathers each
            c = codes_ref[i, j].astype(jnp.int32)
            o_ref[:, j * width : (j + 1) * width] = cb_ref[j, c, :]
        return
    rows = codes_ref[i, :]
    if method == "sq":
        params = {k: read(k) for k in scalars}
    if bits < 8:  # packed: one store per chunk, static slices of refs, no reshape of values
        per_byte, nbytes, _, _ = chunk_layout(num_cols, bits)
        mask = np.uint8((1 << bits) - 1)
        for e, sh in enumerate(_shifts(bits)):
            codes = (rows >> sh) & mask
            cols = slice(e * nbytes, (e + 1) * nbytes)
            if method == "uniform":
                lo, scale = refs_by_name["lo"][cols], refs_by_name["scale"][cols]
                o_ref[:, cols] = lo + codes.astype(jnp.float32) * scale
            else:
                o_ref[:, cols] = log_sq_decode(codes, params, bits)
    elif method == "uniform":
        o_ref[...] = read("lo") + rows.astype(jnp.float32) * read("scale")
    else:
        o_ref[...] = log_sq_decode(rows, params, bits)


@functools.partial(jax.jit, static_argnames=("tiles", "interpret"))
def _gather_pallas(
    table: QuantizedTable, indices: jax.Array, *, tiles: GatherTiles, interpret: bool
) -> jax.Array:
    """Pallas implementation (see module docstring): ``indices [B] -> float32 [B, num_cols]``."""
    bm = tiles.block_rows
    b = indices.shape[0]
    idx = _clamp(indices, table.num_rows)
    idx = jnp.pad(idx, (0, -b % bm))  # padded slots gather row 0 and are sliced off
    params = dict(table.params)
    if table.method == "uniform":
        params["lo"], params["scale"] = _chunk_major_params(table)
    names = tuple(sorted(params))
    scalars = tuple(k for k in names if jnp.ndim(params[k]) == 0)
    # 0-d blocks are not supported everywhere: scalars travel as [1] arrays.
    args = [jnp.reshape(params[k], (1,)) if k in scalars else params[k] for k in names]
    full = lambda a: pl.BlockSpec(a.shape, lambda g, nd=a.ndim: (0,) * nd)
    out_w = _out_width(table)
    kernel = functools.partial(
        _pallas_kernel,
        method=table.method,
        bits=table.bits,
        num_cols=table.num_cols,
        names=names,
        scalars=scalars,
    )
    out = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((idx.shape[0], out_w), jnp.float32),
        grid=(idx.shape[0] // bm,),
        in_specs=[pl.BlockSpec((bm,), lambda g: (g,)), full(table.codes)] + [full(a) for a in args],
        out_specs=pl.BlockSpec((bm, out_w), lambda g: (g, 0)),
        interpret=interpret,
    )(idx, table.codes, *args)
    return _to_columns(out[:b], table)


# ----------------------------------------------------------------------------- dispatch


def _check_indices(indices: Any, num_rows: int) -> None:
    if isinstance(indices, jax.core.Tracer):
        raise ValueError(
            "quantized_gather(check=True) needs concrete indices to check them on the host; "
            "under jit pass check=False (out-of-range indices are then clamped to "
            f"[0, {num_rows - 1}])"
        )
    host = np.asarray(indices)
    if host.size == 0:
        return
    lo, hi = host.min(), host.max()
    if lo < 0 or hi >= num_rows:
        bad = host[(host < 0) | (host >= num_rows)]
        raise ValueError(
            f"quantized_gather: {bad.size} of {host.size} indices out of range [0, {num_rows}) "
            f"(min {lo}, max {hi}; first bad value {bad.flat[0]})"
        )


def quantized_gather(
    table: QuantizedTable,
    indices: Any,
    *,
    impl: str = "auto",
    check: bool = True,
    tiles: GatherTiles | None = None,
    interpret: bool | None = None,
) -> jax.Array:
    """Rows ``indices`` of the dequantized table: ``float32 [*indices.shape, num_cols]``.

    table: a `QuantizedTable` (any method / bits). indices: integer array of any shape and integer
    dtype. impl: ``"auto"`` (XLA everywhere for now, see the module docstring), ``"xla"``,
    ``"pallas"`` (``interpret`` defaults to True off GPU). check: raise ``ValueError`` for indices
    outside ``[0, num_rows)`` (host-side, needs concrete indices); with ``check=False`` they are
    clamped.
    """
    if not isinstance(table, QuantizedTable):
        raise TypeError(f"table must be a QuantizedTable, got {type(table).__name__}")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if not jnp.issubdtype(jnp.result_type(indices), jnp.integer):
        raise ValueError(f"indices must be integers, got dtype {jnp.result_type(indices)}")
    if check:
        _check_indices(indices, table.num_rows)
    idx = jnp.asarray(indices)
    flat = idx.reshape(-1)
    if flat.shape[0] == 0:
        return jnp.zeros((*idx.shape, table.num_cols), jnp.float32)
    if impl == "pallas":
        if interpret is None:
            interpret = jax.default_backend() != "gpu"
        out = _gather_pallas(table, flat, tiles=tiles or GatherTiles(), interpret=interpret)
    else:
        out = _gather_xla(table, flat)
    return out.reshape(*idx.shape, table.num_cols)
