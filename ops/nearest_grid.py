"""Exact nearest neighbour through multi-level uniform grids, built on the host, queried under jit.

- `build_grid_index` sorts `points` [P, d] (d <= 3, concrete) into uniform grids of cell side
  h, 2h, 4h, ... on the host (like building a k-d tree) and returns a `GridIndex`, a pytree that
  jitted functions take as an argument.
- `grid_nearest` answers queries [Q, d] exactly: a level keeps an answer only when a verified
  search radius proves it; queries that no level verifies fall back to the brute force of
  `ops.nearest` (see `grid_nearest`). The only path that can compete with
  `scipy.spatial.cKDTree` on a CPU, since brute force is O(Q P). `max_distance` works like
  cKDTree's `distance_upper_bound`.
- `grid_nearest_cached`: the grid search for queries that move a little between calls (iterative
  registration): each query keeps its k nearest points and a distance bound from its last search
  (`NearestCache`, from `nearest_cache_init`) and only searches the grid again when they no longer
  prove the answer.

`ops.nearest.nearest_neighbor(impl="grid")` builds an index per call; build it once with
`build_grid_index` when the points stay fixed. The distance returned is always
`sum((queries - points[index])**2)` in the input dtype.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ops import nearest
from ops.nearest import _check_inputs, _exact_sq_dist, _round_up  # shared with the brute force

# ----------------------------------------------------------------------------------------------
# The index: host-side build.


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["sorted_points", "order", "starts", "cell", "dims", "tol"],
    meta_fields=["window", "chunk"],
)
@dataclasses.dataclass(frozen=True)
class GridLevel:
    """One grid of cubic cells. Points are sorted by cell id (axis 0 fastest), so the cells x-1..x+1
    of a row are one contiguous range of `sorted_points`: 3^(d-1) ranges per query."""

    sorted_points: jax.Array  # [d, P + window]: centred coordinates in cell order, zero padded
    order: jax.Array  # [P] int32: sorted position -> index into the original points
    starts: jax.Array  # [cells + 1] int32 (length bucketed): first sorted position of each cell
    cell: jax.Array  # []: cell side
    dims: jax.Array  # [d] int32: cells per axis
    tol: jax.Array  # []: rounding slack taken off the verified radius
    window: int  # static: most points in any 3^d block of cells (candidates per query)
    chunk: int  # static: queries per step


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["points", "centre", "lo", "levels"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class GridIndex:
    """`points` [P, d] plus grids of cell side h, 2h, 4h, ... (coarse levels serve far queries)."""

    points: jax.Array
    centre: jax.Array  # [d]: the points' bounding-box centre, in their dtype
    lo: jax.Array  # [d]: grid origin (the points' lower corner, centred frame)
    levels: tuple[GridLevel, ...]


def _bucket(n: int) -> int:
    """Rounds n up to 4 steps per octave (multiple of 8), so similar inputs share a compilation."""
    step = max(8, 1 << max(int(n).bit_length() - 3, 0))
    return _round_up(max(int(n), 1), step)


def _cells(xc: np.ndarray, lo: np.ndarray, ext: np.ndarray, h: float):
    """Cell ids [P] int32 (axis 0 fastest) and cells per axis [d] for cell side h."""
    dims = np.maximum(np.ceil(ext / h), 1).astype(np.int64)
    cells = np.floor((xc - lo) / xc.dtype.type(h)).astype(np.int32)
    np.minimum(cells, (dims - 1).astype(np.int32), out=cells)
    ids = cells[:, -1]
    for axis in range(xc.shape[1] - 2, -1, -1):
        ids = ids * np.int32(dims[axis]) + cells[:, axis]
    return ids, dims


def _default_cell_size(xc, lo, ext, per_cell: float, max_cells: int) -> float:
    num_points, d = xc.shape
    flat = np.maximum(ext, max(float(ext.max()), 1e-30) * 1e-3)  # thin axes count as thin, not 0
    h = float((np.prod(flat) * per_cell / num_points) ** (1.0 / d))
    ids, dims = _cells(xc, lo, ext, h)
    occupied = np.count_nonzero(np.bincount(ids, minlength=int(np.prod(dims))))
    if num_points / occupied > 2 * per_cell:  # the points fill fewer dimensions (a surface)
        h *= (per_cell * occupied / num_points) ** 0.5
    while np.prod(np.maximum(np.ceil(ext / h), 1)) > max_cells:  # bounds the dense cell table
        h *= 1.1
    return h


def _build_level(xc, lo, ext, h: float, scale: float, max_window: int) -> GridLevel | None:
    """One level, or None when some 3^d block of cells holds more than max_window points."""
    num_points, d = xc.shape
    ids, dims = _cells(xc, lo, ext, h)
    num_cells = int(np.prod(dims))
    counts = np.bincount(ids, minlength=num_cells).astype(np.int32)
    block = counts.reshape(dims[::-1])
    for axis in range(d):  # 3-wide box sums, one axis at a time -> 3^d block sums
        summed = block.copy()
        lead = (slice(None),) * axis
        summed[lead + (slice(1, None),)] += block[lead + (slice(None, -1),)]
        summed[lead + (slice(None, -1),)] += block[lead + (slice(1, None),)]
        block = summed
    window = _bucket(int(block.max()))
    if window > max_window:
        return None
    # numpy radix-sorts 16-bit keys (4x faster than a 32-bit sort of 40k keys).
    keys = ids.astype(np.uint16) if num_cells <= 1 << 16 else ids
    order = np.argsort(keys, kind="stable").astype(np.int32)
    starts = np.full(_bucket(num_cells + 1), num_points, np.int32)
    starts[0] = 0
    np.cumsum(counts, out=starts[1 : num_cells + 1])
    sorted_points = np.zeros((d, num_points + window), xc.dtype)
    sorted_points[:, :num_points] = xc[order].T
    eps = float(np.finfo(xc.dtype).eps)
    arrays = (
        sorted_points,
        order,
        starts,
        np.asarray(h, xc.dtype),
        dims.astype(np.int32),
        np.asarray(16 * eps * (scale + 4 * h), xc.dtype),
    )
    chunk = int(np.clip((1 << 17) // window, 16, 4096))
    return GridLevel(*jax.device_put(arrays), window=window, chunk=chunk)


def build_grid_index(
    points: Any,
    *,
    cell_size: float | None = None,
    points_per_cell: float = 1.0,
    max_cells_per_point: float = 32.0,
    max_levels: int = 8,
) -> GridIndex:
    """Sorts `points` [P, d] (d <= 3, concrete float32/float64) into uniform grids on the host
    (like building a k-d tree). `cell_size` defaults to about `points_per_cell` points per occupied
    cell (smaller for points on a surface), with at most `max_cells_per_point * P` cells. Levels
    double the cell side while no 3^d block of cells holds P / 4 points; beyond that grid_nearest
    brute-forces.
    """
    if isinstance(points, jax.core.Tracer):
        raise ValueError(
            "build_grid_index needs concrete points (it runs on the host); build it outside jit "
            "or use impl='xla'"
        )
    pts = np.asarray(points)
    _check_inputs("build_grid_index", pts[:1], pts)
    num_points, d = pts.shape
    if d > 3 or num_points >= 2**30:
        raise ValueError(f"build_grid_index: points {pts.shape}: need d <= 3 and P < 2**30")
    centre = ((pts.min(0).astype(np.float64) + pts.max(0)) / 2).astype(pts.dtype)
    xc = pts - centre  # the same rounding as the device's `queries - centre`
    lo = xc.min(0)
    ext = (xc.max(0) - lo).astype(np.float64)
    if cell_size is not None and not cell_size > 0:
        raise ValueError(f"build_grid_index: cell_size={cell_size} must be > 0")
    max_cells = min(max(int(max_cells_per_point * num_points), 4096), 2**30)
    h = cell_size or _default_cell_size(xc, lo, ext, points_per_cell, max_cells)
    cells = np.prod(np.maximum(np.ceil(ext / h), 1))
    if cells > max_cells:
        raise ValueError(
            f"build_grid_index: cell_size={cell_size} gives {cells:.3g} cells over the extent "
            f"{ext.tolist()} of points {pts.shape}; at most max_cells_per_point * P = {max_cells}"
        )
    scale = float(np.abs(xc).max() + ext.max())
    levels = []
    for level in range(max_levels):
        max_window = num_points // 4 if level else 1 << 30
        grid = _build_level(xc, lo, ext, float(h) * 2.0**level, scale, max_window)
        if grid is None:
            break
        levels.append(grid)
        if grid.window >= num_points:
            break
    return GridIndex(*jax.device_put((pts, centre, lo)), levels=tuple(levels))


# ----------------------------------------------------------------------------------------------
# Jitted exact query.


def _level_search(
    level: GridLevel, lo: jax.Array, max_d2: jax.Array, qc: jax.Array, num_nearest: int = 0
) -> tuple[jax.Array, ...]:
    """Nearest among the 3^d cells around each centred query [n, d] -> (verified [n], index [n]).
    A query is also settled when every point is provably farther than sqrt(max_d2).
    num_nearest = k > 0 also returns the k nearest points of the searched cells [n, k] (by
    distance) and a bound [n]: every other point is at least that far from the query."""
    d = qc.shape[1]
    dims = level.dims
    cell = jnp.clip(jnp.floor((qc - lo) / level.cell), 0, dims - 1).astype(jnp.int32)
    strides = jnp.cumprod(jnp.concatenate([jnp.ones((1,), jnp.int32), dims[:-1]]))
    offsets = np.array(list(np.ndindex(*(3,) * (d - 1))), np.int32).reshape(3 ** (d - 1), d - 1) - 1
    other = cell[:, None, 1:] + offsets  # [n, rows, d - 1]: the rows of cells around the query
    row_ok = jnp.all((other >= 0) & (other < dims[1:]), axis=-1)
    base = jnp.sum(jnp.clip(other, 0, dims[1:] - 1) * strides[1:], axis=-1)
    first = base + jnp.maximum(cell[:, :1] - 1, 0)
    last = base + jnp.minimum(cell[:, :1] + 1, dims[0] - 1)
    start = jnp.where(row_ok, level.starts[first], 0)
    count = jnp.where(row_ok, level.starts[last + 1], 0) - start  # [n, rows]
    ends = jnp.cumsum(count, axis=1)
    # Candidate k of a query is at sorted position base[r] + k, r the first row whose running
    # count exceeds k: sum the steps of base over the rows k has passed (no gather).
    k = jnp.arange(level.window, dtype=jnp.int32)
    base = start - ends + count  # [n, rows]
    step = jnp.diff(base, axis=1)
    pos = base[:, :1] + k
    for r in range(len(offsets) - 1):
        pos = pos + jnp.where(k >= ends[:, r : r + 1], step[:, r : r + 1], 0)
    valid = k < ends[:, -1:]
    pos = jnp.where(valid, pos, 0)
    d2 = jnp.zeros(pos.shape, qc.dtype)
    for c in range(d):
        d2 = d2 + (level.sorted_points[c][pos] - qc[:, c : c + 1]) ** 2
    d2 = jnp.where(valid, d2, jnp.inf)
    low = jnp.min(d2, axis=1)
    col = jnp.min(jnp.where(d2 == low[:, None], k, level.window - 1), axis=1)
    found = jnp.take_along_axis(pos, col[:, None], axis=1)[:, 0]
    index = level.order[jnp.minimum(found, level.order.shape[0] - 1)]
    if num_nearest:  # the next nearest, one at a time (as the first), then the (k+1)-th distance
        cols, rest = [col], d2
        for _ in range(num_nearest - 1):
            rest = jnp.where(k == cols[-1][:, None], jnp.inf, rest)
            low_j = jnp.min(rest, axis=1)
            cols.append(jnp.min(jnp.where(rest == low_j[:, None], k, level.window - 1), axis=1))
        rest = jnp.where(k == cols[-1][:, None], jnp.inf, rest)
        beyond = jnp.min(rest, axis=1)  # inf when the cells hold at most num_nearest points
        near = jnp.take_along_axis(pos, jnp.stack(cols, 1), axis=1)
        near = level.order[jnp.minimum(near, level.order.shape[0] - 1)]
    # Every point outside the searched cells is at least `radius` away: the distance from the
    # query to the nearest face of the searched block that has cells beyond it.
    below = jnp.where(cell > 1, qc - (lo + (cell - 1).astype(qc.dtype) * level.cell), jnp.inf)
    above = jnp.where(cell + 2 < dims, lo + (cell + 2).astype(qc.dtype) * level.cell - qc, jnp.inf)
    radius = jnp.min(jnp.minimum(below, above), axis=1) - level.tol
    complete = ends[:, -1] <= level.window
    verified = complete & (radius > 0) & (low <= radius * radius)
    # Farther than max_distance from every point (the searched cells and all beyond `radius`):
    # any of them will do (max_d2 = inf never takes this branch).
    far = complete & (low > max_d2) & (radius > 0) & (radius * radius > max_d2)
    if not num_nearest:
        return verified | far, index
    bound = jnp.minimum(jnp.sqrt(beyond), radius)
    return verified | far, index, near, jnp.where(complete, bound, -jnp.inf)


def _resolve(pending, queries_c, search, chunk, outputs):
    """Runs `search` on the pending queries, `chunk` at a time: search(q) -> (settled, *values);
    writes the settled rows of the values into `outputs` (a tuple of [Q, ...] arrays) and
    clears them from `pending`. Returns (outputs, pending)."""
    total = queries_c.shape[0]
    num = jnp.sum(pending, dtype=jnp.int32)
    rows = jnp.nonzero(pending, size=total, fill_value=0)[0].astype(jnp.int32)
    rows = jnp.concatenate([rows, jnp.zeros((chunk,), jnp.int32)])

    def body(i, state):
        outputs, pending = state
        r = lax.dynamic_slice(rows, (i * chunk,), (chunk,))
        settled, *values = search(queries_c[r])
        target = jnp.where((i * chunk + jnp.arange(chunk) < num) & settled, r, total)
        outputs = tuple(
            o.at[target].set(v, mode="drop") for o, v in zip(outputs, values, strict=True)
        )
        return outputs, pending.at[target].set(False, mode="drop")

    return lax.fori_loop(0, (num + chunk - 1) // chunk, body, (outputs, pending))


def _search_all(
    index: GridIndex, queries_c, pending, outputs, max_d2, k: int = 0, chunks=None, brute_chunk=128
):
    """The pending queries through every level, then brute force (k > 0: with candidates)."""
    for i, level in enumerate(index.levels):
        search = functools.partial(_level_search, level, index.lo, max_d2, num_nearest=k)
        chunk = level.chunk if chunks is None else chunks[i]
        outputs, pending = _resolve(pending, queries_c, search, chunk, outputs)
    points_c = index.points - index.centre
    num_points = points_c.shape[0]

    tiles = nearest.NearestTiles(brute_chunk, 512)

    def brute(q):  # the XLA brute force of ops.nearest on one chunk of queries
        settled = jnp.ones(q.shape[:1], bool)
        if not k:
            return settled, nearest.nearest_neighbor(q, points_c, impl="xla", tiles=tiles)[0]
        kk = min(k + 1, num_points)
        near, d2 = nearest.k_nearest(q, points_c, kk, tiles=tiles)
        bound = jnp.sqrt(d2[:, k]) if kk > k else jnp.full(q.shape[:1], jnp.inf, q.dtype)
        near = jnp.pad(near[:, :k], ((0, 0), (0, k - min(kk, k))), mode="edge")
        return settled, near[:, 0], near, bound

    outputs, _ = _resolve(pending, queries_c, brute, brute_chunk, outputs)
    return outputs


@jax.jit
def _grid_nearest(index: GridIndex, queries: jax.Array, max_d2: jax.Array) -> jax.Array:
    queries_c = queries - index.centre
    found = jnp.zeros(queries.shape[:1], jnp.int32)
    pending = jnp.ones(queries.shape[:1], bool)
    return _search_all(index, queries_c, pending, (found,), max_d2)[0]


def grid_nearest(
    index: GridIndex, queries: jax.Array, *, max_distance: Any = None
) -> tuple[jax.Array, jax.Array]:
    """Exact nearest neighbour of `queries` [Q, d] among `index.points`, under jit.

    Level by level (cell side h, 2h, ...), a query is compared with every point in the 3^d cells
    around its own. The answer is kept only if it is provably the nearest: closer than the nearest
    face of the searched block beyond which cells exist (less a rounding slack). Queries that no
    level verifies are brute-forced, so the result is always exact; the speed depends on how many
    queries the fine levels verify (roughly uniform density, queries near the points).
    max_distance (scalar, may be traced; None = no limit): like cKDTree's distance_upper_bound,
    a query farther than it from every point gets some point farther than it (not necessarily
    the nearest), which spares the coarse levels and the brute force for far queries.
    Returns (index int32 [Q], sq_dist [Q]).
    """
    _check_inputs("grid_nearest", queries, index.points)
    if queries.shape[0] == 0:
        return jnp.zeros((0,), jnp.int32), jnp.zeros((0,), queries.dtype)
    dtype = jnp.result_type(queries)
    if max_distance is None:
        max_d2 = jnp.asarray(jnp.inf, dtype)
    else:
        max_d2 = jnp.square(jnp.asarray(max_distance, dtype))
    found = _grid_nearest(index, queries, max_d2)
    return found, _exact_sq_dist(queries, index.points, found)


# ----------------------------------------------------------------------------------------------
# Candidate cache for queries that move a little between calls.


class NearestCache(NamedTuple):
    """Candidates per query for `grid_nearest_cached`, for queries that move a little per call
    (an iterative registration's closest points). A pytree of arrays.

    queries: [Q, d] where each query was when its candidates were collected.
    candidates: [Q, k] int32 indices into the index's points: the k nearest there.
    bound: [Q] every point not among the candidates was at least this far from `queries`
      (-inf: no candidates yet).
    """

    queries: jax.Array
    candidates: jax.Array
    bound: jax.Array


def nearest_cache_init(num_queries: int, d: int, k: int = 8, dtype: Any = jnp.float32):
    """An empty `NearestCache` (every query searches the grid on the first call)."""
    if k < 1:
        raise ValueError(f"nearest_cache_init: k={k} must be >= 1")
    return NearestCache(
        queries=jnp.zeros((num_queries, d), dtype),
        candidates=jnp.zeros((num_queries, k), jnp.int32),
        bound=jnp.full((num_queries,), -jnp.inf, dtype),
    )


@jax.jit
def _grid_nearest_cached(index: GridIndex, queries, cache: NearestCache, max_d2):
    # A query that moved by delta from where its candidates were collected is at least
    # bound - delta from every other point: if its nearest candidate is closer, it is the nearest.
    delta = jnp.sqrt(jnp.sum((queries - cache.queries) ** 2, axis=-1))
    cand_d2 = jnp.sum((queries[:, None, :] - index.points[cache.candidates]) ** 2, axis=-1)
    low = jnp.min(cand_d2, axis=1)
    k = cache.candidates.shape[1]
    col = jnp.min(jnp.where(cand_d2 == low[:, None], jnp.arange(k), k - 1), axis=1)
    found = jnp.take_along_axis(cache.candidates, col[:, None], axis=1)[:, 0]
    margin = cache.bound - delta - index.levels[0].tol
    ok = (margin > 0) & ((low <= margin * margin) | ((low > max_d2) & (margin * margin > max_d2)))
    # The others search the grid, collecting new candidates where they are now. Small chunks:
    # usually few queries are pending.
    chunks = [int(np.clip((1 << 14) // level.window, 16, 512)) for level in index.levels]
    outputs = (found, cache.candidates, cache.bound)
    found, candidates, bound = _search_all(
        index, queries - index.centre, ~ok, outputs, max_d2, k=k, chunks=chunks, brute_chunk=32
    )
    new_queries = jnp.where(ok[:, None], cache.queries, queries)
    return found, NearestCache(new_queries, candidates, bound)


def grid_nearest_cached(
    index: GridIndex, queries: jax.Array, cache: NearestCache, *, max_distance: Any = None
) -> tuple[jax.Array, jax.Array, NearestCache]:
    """`grid_nearest` for queries that move a little between calls, with the same (exact) result.

    Each query first checks its cached candidates: if it moved by delta since they were
    collected and its nearest candidate is within bound - delta (less a rounding slack), that
    candidate is the nearest point. Only the other queries search the grid, which also collects
    their k nearest points and a new bound (the (k+1)-th distance, or the searched cells'
    radius). Start from `nearest_cache_init(Q, d, k)`; pass the returned cache to the next call
    (any cache returned for the same index and Q queries is valid, whatever the queries were).
    Returns (index int32 [Q], sq_dist [Q], cache).
    """
    _check_inputs("grid_nearest_cached", queries, index.points)
    q_shape = jnp.shape(queries)
    if cache.queries.shape != q_shape or cache.candidates.shape[0] != q_shape[0]:
        raise ValueError(
            f"grid_nearest_cached: cache for queries {cache.queries.shape}, got {q_shape}"
        )
    if q_shape[0] == 0:
        return jnp.zeros((0,), jnp.int32), jnp.zeros((0,), queries.dtype), cache
    dtype = jnp.result_type(queries)
    if max_distance is None:
        max_d2 = jnp.asarray(jnp.inf, dtype)
    else:
        max_d2 = jnp.square(jnp.asarray(max_distance, dtype))
    found, cache = _grid_nearest_cached(index, queries, cache, max_d2)
    return found, _exact_sq_dist(queries, index.points, found), cache
