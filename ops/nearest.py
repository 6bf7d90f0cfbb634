"""Exact nearest-neighbour (closest point) search, tiled so no [Q, P] distance matrix is ever built.

Two brute-force ways to answer "which of `points` [P, d] is closest to each of `queries` [Q, d]":

- `impl="xla"`: blocked brute force, lax.map over query tiles and lax.scan over point tiles with a
  running min. Each tile scores `||p||^2 - 2 q.p` with one matmul (4x faster on XLA:CPU than direct
  differences for d = 3) in a frame centred on the points' bounding box, so that a cloud far from
  the origin does not lose its digits to cancellation; the squared distances of the two lowest
  scores per tile are then recomputed directly as `sum((q - p)^2)`, and only these exact
  distances are compared (`NearestTiles.candidates`). Works on every backend and under jit / vmap.
- `impl="pallas"`: the same brute force as a Pallas kernel (direct differences, no cancellation):
  grid over query blocks, loop over point blocks inside the kernel. It lowers to Triton on GPU
  (`compiler_params=pallas.triton.CompilerParams`). Triton runs grid programs in parallel, so a
  running minimum revisited across a point-block grid axis (the TPU / interpret-mode pattern)
  would race there; hence the in-kernel loop. The Triton lowering is deprecated in new jax in
  favour of Mosaic GPU (`plgpu.kernel`), to which this kernel is not ported. Off GPU it runs with
  `interpret=True` (slow: tests only).

`impl="grid"` builds the host-side uniform grid index of `ops/nearest_grid.py` for one call
(`build_grid_index` + `grid_nearest`, and `grid_nearest_cached` for queries that move a little
between calls, live there): the only path that can compete with `scipy.spatial.cKDTree` on a
CPU, since brute force is O(Q P).

`impl="auto"` is Pallas on a GPU (on an H100 it is exact and 13x faster than the XLA path at 40,000
x 40,000, d = 3: experiments/bench/gpu_check.py) and XLA elsewhere; the grid needs concrete points,
so it is never picked automatically. The distance returned is always `sum((queries -
points[index])**2)` in the input dtype. Indices agree with brute force except between ties and, on
the XLA path, when three or more points of one tile have squared distances within a few ulps of
`||q - c||^2 + ||p - c||^2` (c: the bounding-box centre) of the minimum. `k_nearest` is the XLA
path with a running top-k (exact recomputation of each tile's top k + 1 scores).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

_IMPLS = ("auto", "xla", "pallas", "grid")


@dataclasses.dataclass(frozen=True)
class NearestTiles:
    """Tile sizes: `block_q` queries x `block_p` points per step (clipped to the input sizes).

    `candidates` (XLA nearest_neighbor only): how many of the lowest matmul scores per tile get
    their distance recomputed exactly. With 2, the answer is exact unless three points of one tile
    lie within the matmul rounding of the minimum; 1 is ~1.6-2x faster on CPU but may swap two
    candidates closer than that rounding (~1e-3 relative in d^2 for float32 mesh vertices).
    """

    block_q: int = 512
    block_p: int = 512
    candidates: int = 2

    def __post_init__(self):
        if min(self.block_q, self.block_p, self.candidates) < 1:
            raise ValueError(f"NearestTiles: every field must be >= 1, got {self}")


# 2-core CPU, 8192 x 40000, d = 3 (noisy): 512 x 512 ~ 128 x 2048 best, 256 x 256 1.25x slower.
XLA_TILES = NearestTiles(512, 512)
# Powers of two (Triton); a [64, 128] float32 tile of distances fits in registers of 4 warps.
PALLAS_TILES = NearestTiles(64, 128)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _check_inputs(name: str, queries: Any, points: Any) -> None:
    q_shape, p_shape = jnp.shape(queries), jnp.shape(points)
    if len(q_shape) != 2 or len(p_shape) != 2:
        raise ValueError(
            f"{name}: expected queries [Q, d] and points [P, d], got queries {q_shape} and "
            f"points {p_shape}"
        )
    if q_shape[1] != p_shape[1] or q_shape[1] < 1:
        raise ValueError(
            f"{name}: queries {q_shape} and points {p_shape} must share the last dimension d >= 1"
        )
    if p_shape[0] < 1:
        raise ValueError(f"{name}: points {p_shape} is empty; need at least one point")
    q_dtype, p_dtype = jnp.result_type(queries), jnp.result_type(points)
    if q_dtype != p_dtype or q_dtype not in (jnp.float32, jnp.float64):
        raise ValueError(
            f"{name}: queries {q_shape} {q_dtype} and points {p_shape} {p_dtype} must both be "
            "float32 or both float64"
        )


def _centre(points: jax.Array) -> jax.Array:
    """[d]: bounding-box midpoint. Not the mean: XLA may duplicate a reduction into several
    fusions with different summation orders, which would put queries and points in frames
    shifted by rounding; min and max give the same value in every copy."""
    return (jnp.min(points, axis=0) + jnp.max(points, axis=0)) / 2


def _exact_sq_dist(queries: jax.Array, points: jax.Array, index: jax.Array) -> jax.Array:
    """[Q]: sum((queries - points[index])^2), the distance every path reports."""
    return jnp.sum((queries - jnp.take(points, index, axis=0)) ** 2, axis=-1)


# ----------------------------------------------------------------------------------------------
# References (small inputs only: they build the full [Q, P] matrix).


def nearest_neighbor_reference(
    queries: jax.Array, points: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Brute force in plain jnp. Returns (index int32 [Q], sq_dist [Q]); lowest index among ties."""
    _check_inputs("nearest_neighbor_reference", queries, points)
    d2 = jnp.sum((queries[:, None, :] - points[None, :, :]) ** 2, axis=-1)
    return jnp.argmin(d2, axis=1).astype(jnp.int32), jnp.min(d2, axis=1)


def k_nearest_reference(
    queries: jax.Array, points: jax.Array, k: int
) -> tuple[jax.Array, jax.Array]:
    """Brute force k nearest: (indices int32 [Q, k], sq_dists [Q, k]) sorted by distance."""
    _check_inputs("k_nearest_reference", queries, points)
    d2 = jnp.sum((queries[:, None, :] - points[None, :, :]) ** 2, axis=-1)
    neg, idx = lax.top_k(-d2, k)
    return idx.astype(jnp.int32), -neg


# ----------------------------------------------------------------------------------------------
# XLA path.


def _tiled_points(points_c: jax.Array, block_p: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Point tiles [n, d, bp], squared norms [n, bp] (+inf on padding), tile offsets [n]."""
    num_points, d = points_c.shape
    padded = _round_up(num_points, block_p)
    pts = jnp.pad(points_c, ((0, padded - num_points), (0, 0)))
    norms = jnp.where(jnp.arange(padded) < num_points, jnp.sum(pts * pts, axis=-1), jnp.inf)
    tiles = pts.reshape(-1, block_p, d).swapaxes(1, 2)
    offsets = jnp.arange(0, padded, block_p, dtype=jnp.int32)
    return tiles, norms.reshape(-1, block_p), offsets


def _map_query_tiles(fn, queries_c: jax.Array, block_q: int) -> Any:
    """Applies fn to [block_q, d] query tiles (zero-padded), concatenating and unpadding results."""
    num_queries, d = queries_c.shape
    padded = _round_up(num_queries, block_q)
    tiles = jnp.pad(queries_c, ((0, padded - num_queries), (0, 0))).reshape(-1, block_q, d)
    out = lax.map(fn, tiles)
    return jax.tree.map(lambda x: x.reshape(padded, *x.shape[2:])[:num_queries], out)


def _clip_tiles(tiles: NearestTiles, num_queries: int, num_points: int) -> tuple[int, int]:
    return min(tiles.block_q, _round_up(num_queries, 8)), min(
        tiles.block_p, _round_up(num_points, 8)
    )


def _dot(q: jax.Array, p: jax.Array) -> jax.Array:
    """q [bq, d] @ p [d, bp] in full float32: the GPU default (TF32, 10-bit mantissa) picks wrong
    candidates (seen on an H100: 0.13% of 2-d queries off by up to 39% in squared distance)."""
    return jnp.matmul(q, p, precision=lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("tiles",))
def _xla_nearest(queries: jax.Array, points: jax.Array, tiles: NearestTiles) -> jax.Array:
    num_points = points.shape[0]
    block_q, block_p = _clip_tiles(tiles, queries.shape[0], num_points)
    centre = _centre(points)
    points_c = points - centre
    p_tiles, p_norms, offsets = _tiled_points(points_c, block_p)

    def query_tile(q):  # q: [bq, d]
        def step(carry, xs):
            best_d2, best_i = carry
            p, norms, offset = xs  # [d, bp], [bp], []
            score = norms[None, :] - 2.0 * _dot(q, p)  # ||q - p||^2 - ||q||^2, up to rounding
            lanes = lax.broadcasted_iota(jnp.int32, score.shape, 1)
            for _ in range(tiles.candidates):  # the lowest scores, one at a time
                low = jnp.min(score, axis=1, keepdims=True)
                # min + masked iota-min: 10x faster than jnp.argmin's variadic reduce on XLA:CPU.
                col = jnp.min(jnp.where(score == low, lanes, block_p), axis=1, keepdims=True)
                score = jnp.where(lanes == col, jnp.inf, score)
                idx = jnp.minimum(offset + col[:, 0], num_points - 1)
                d2 = jnp.sum((q - points_c[idx]) ** 2, axis=-1)  # exact distance
                better = d2 < best_d2
                best_d2, best_i = jnp.where(better, d2, best_d2), jnp.where(better, idx, best_i)
            return (best_d2, best_i), None

        init = (jnp.full((q.shape[0],), jnp.inf, q.dtype), jnp.zeros((q.shape[0],), jnp.int32))
        (_, best_i), _ = lax.scan(step, init, (p_tiles, p_norms, offsets))
        return best_i

    return _map_query_tiles(query_tile, queries - centre, block_q)


@functools.partial(jax.jit, static_argnames=("k", "tiles"))
def _xla_k_nearest(
    queries: jax.Array, points: jax.Array, k: int, tiles: NearestTiles
) -> tuple[jax.Array, jax.Array]:
    num_points = points.shape[0]
    block_q, block_p = _clip_tiles(tiles, queries.shape[0], num_points)
    block_p = max(block_p, min(_round_up(k + 1, 8), _round_up(num_points, 8)))
    kk = min(k + 1, block_p)  # one spare candidate per tile against matmul rounding
    centre = _centre(points)
    points_c = points - centre
    p_tiles, p_norms, offsets = _tiled_points(points_c, block_p)

    def query_tile(q):
        def step(carry, xs):
            best_d2, best_i = carry  # [bq, k] each
            p, norms, offset = xs
            _, col = lax.top_k(-(norms[None, :] - 2.0 * _dot(q, p)), kk)
            idx = offset + col.astype(jnp.int32)
            valid = idx < num_points
            idx = jnp.minimum(idx, num_points - 1)
            d2 = jnp.sum((q[:, None, :] - points_c[idx]) ** 2, axis=-1)
            d2 = jnp.where(valid, d2, jnp.inf)
            neg, pos = lax.top_k(-jnp.concatenate([best_d2, d2], 1), k)
            cand = jnp.concatenate([best_i, idx], 1)
            return (-neg, jnp.take_along_axis(cand, pos, axis=1)), None

        shape = (q.shape[0], k)
        init = (jnp.full(shape, jnp.inf, q.dtype), jnp.zeros(shape, jnp.int32))
        (_, best_i), _ = lax.scan(step, init, (p_tiles, p_norms, offsets))
        return best_i

    index = _map_query_tiles(query_tile, queries - centre, block_q)
    d2 = jnp.sum((queries[:, None, :] - points[index]) ** 2, axis=-1)
    # Re-sort by distances in the original frame (may differ from the centred ones by ulps).
    order = jnp.argsort(d2, axis=1, stable=True)
    return jnp.take_along_axis(index, order, 1), jnp.take_along_axis(d2, order, 1)


# ----------------------------------------------------------------------------------------------
# Pallas kernel.


def _nearest_kernel(q_ref, p_ref, idx_ref, d2_ref, *, d, block_p, num_points, num_blocks):
    """One query block: q_ref [dp, bq], p_ref [dp, P_pad] (all points), outputs [bq]."""
    block_q = q_ref.shape[1]
    q = [q_ref[c, :][:, None] for c in range(d)]  # d x [bq, 1]
    lanes = lax.broadcasted_iota(jnp.int32, (block_q, block_p), 1)

    def body(j, carry):
        best_d2, best_i = carry
        start = pl.multiple_of(j * block_p, block_p)
        d2 = jnp.zeros((block_q, block_p), q_ref.dtype)
        for c in range(d):  # direct differences: no cancellation, d is small
            diff = q[c] - p_ref[c, pl.ds(start, block_p)][None, :]
            d2 = d2 + diff * diff
        col = start + lanes
        d2 = jnp.where(col < num_points, d2, jnp.inf)
        low = jnp.min(d2, axis=1)
        arg = jnp.min(jnp.where(d2 == low[:, None], col, jnp.iinfo(jnp.int32).max), axis=1)
        better = low < best_d2
        return jnp.where(better, low, best_d2), jnp.where(better, arg, best_i)

    init = (jnp.full((block_q,), jnp.inf, q_ref.dtype), jnp.zeros((block_q,), jnp.int32))
    best_d2, best_i = lax.fori_loop(0, num_blocks, body, init)
    idx_ref[...] = best_i
    d2_ref[...] = best_d2


@functools.partial(jax.jit, static_argnames=("tiles", "interpret"))
def _pallas_nearest(
    queries: jax.Array, points: jax.Array, tiles: NearestTiles, interpret: bool
) -> jax.Array:
    (num_queries, d), num_points = queries.shape, points.shape[0]
    block_q, block_p = tiles.block_q, tiles.block_p
    if block_q & (block_q - 1) or block_p & (block_p - 1):
        raise ValueError(f"Pallas tiles must be powers of two (Triton), got {tiles}")
    dp = pl.next_power_of_2(d)
    q_pad, p_pad = _round_up(num_queries, block_q), _round_up(num_points, block_p)
    q_t = jnp.pad(queries, ((0, q_pad - num_queries), (0, dp - d))).T
    p_t = jnp.pad(points, ((0, p_pad - num_points), (0, dp - d))).T
    kernel = functools.partial(
        _nearest_kernel, d=d, block_p=block_p, num_points=num_points, num_blocks=p_pad // block_p
    )
    compiler_params = None
    if not interpret:
        from jax.experimental.pallas import triton as pltriton

        compiler_params = pltriton.CompilerParams(num_warps=4, num_stages=2)
    index, _ = pl.pallas_call(
        kernel,
        out_shape=(
            jax.ShapeDtypeStruct((q_pad,), jnp.int32),
            jax.ShapeDtypeStruct((q_pad,), queries.dtype),
        ),
        grid=(q_pad // block_q,),
        in_specs=[
            pl.BlockSpec((dp, block_q), lambda i: (0, i)),
            pl.BlockSpec((dp, p_pad), lambda i: (0, 0)),
        ],
        out_specs=(
            pl.BlockSpec((block_q,), lambda i: (i,)),
            pl.BlockSpec((block_q,), lambda i: (i,)),
        ),
        interpret=interpret,
        compiler_params=compiler_params,
        name="nearest_neighbor",
    )(q_t, p_t)
    return index[:num_queries]


# ----------------------------------------------------------------------------------------------
# Public entry points.


def nearest_neighbor(
    queries: jax.Array,
    points: jax.Array,
    *,
    impl: str = "auto",
    tiles: NearestTiles | None = None,
    interpret: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Exact nearest neighbour of each query [Q, d] among points [P, d] (float32 or float64).

    impl: "auto" ("pallas" on GPU, else "xla"), "xla", "pallas" (interpret=None: interpret unless
    on GPU) or "grid" (builds an `ops.nearest_grid.GridIndex` on the host: concrete points only;
    reuse `nearest_grid.build_grid_index` when the points stay fixed).
    Returns (index int32 [Q], sq_dist [Q] = sum((queries - points[index])**2)).
    """
    _check_inputs("nearest_neighbor", queries, points)
    if impl not in _IMPLS:
        raise ValueError(f"nearest_neighbor: impl={impl!r}, expected one of {_IMPLS}")
    if queries.shape[0] == 0:
        return jnp.zeros((0,), jnp.int32), jnp.zeros((0,), jnp.result_type(queries))
    if impl == "auto":
        impl = "pallas" if jax.default_backend() == "gpu" else "xla"
    if impl == "grid":
        from ops import nearest_grid  # imported here: nearest_grid builds on this module

        return nearest_grid.grid_nearest(nearest_grid.build_grid_index(points), queries)
    if impl == "pallas":
        if interpret is None:
            interpret = jax.default_backend() != "gpu"
        index = _pallas_nearest(queries, points, tiles or PALLAS_TILES, bool(interpret))
    else:
        index = _xla_nearest(queries, points, tiles or XLA_TILES)
    return index, _exact_sq_dist(queries, points, index)


def k_nearest(
    queries: jax.Array, points: jax.Array, k: int, *, tiles: NearestTiles | None = None
) -> tuple[jax.Array, jax.Array]:
    """The k nearest points of each query (XLA path, running top-k merged across point tiles).

    Returns (indices int32 [Q, k], sq_dists [Q, k]) in increasing distance. 1 <= k <= P; meant for
    small k (retrieval), its cost grows with k log k per tile.
    """
    _check_inputs("k_nearest", queries, points)
    if not 1 <= k <= points.shape[0]:
        raise ValueError(f"k_nearest: k={k} must be in [1, P] for points {tuple(points.shape)}")
    if queries.shape[0] == 0:
        return jnp.zeros((0, k), jnp.int32), jnp.zeros((0, k), jnp.result_type(queries))
    return _xla_k_nearest(queries, points, int(k), tiles or XLA_TILES)
