"""The registration: nu stages of safeguarded Anderson-accelerated MM, each one jitted
`lax.while_loop` (`ops.anderson.anderson_mm`), closest points by
`ops.nearest_grid.grid_nearest_cached` (exact; each source vertex keeps its `CANDIDATES` nearest
target points between iterations and searches the grid only when they no longer prove the
answer; the cache carries across stages).

One stage is one compiled call (the stage count is ~3-6, so the host only sees stage
boundaries, which is where the nu schedule, the Anderson reset and the per-stage timing live).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree
from threadpoolctl import threadpool_limits

from ops.anderson import anderson_mm
from ops.nearest_grid import (
    GridIndex,
    NearestCache,
    build_grid_index,
    grid_nearest,
    grid_nearest_cached,
    nearest_cache_init,
)
from research.amm_nrr import energy as E
from research.amm_nrr.graph import build_graph, normalise
from research.datasets.meshes import Mesh, boundary_directions, mean_edge_length, vertex_normals
from research.training.errors import NonFiniteError


@dataclasses.dataclass(frozen=True)
class Options:
    """The registration's options, defaults from the official CLI except `radius` (from the mesh;
    the authors' default is 5) and `nu_start` (the official code's is "median", which is 0 when
    most of the surface is in place). The single source
    of these defaults: experiments/configs/amm_nrr.py turns this class into `config.solver`.
    alignment="plane" is point-to-plane along the target's vertex normals
    (`meshes.vertex_normals`) plus plane_point_weight x point-to-point, a coupled 12r x 12r
    solve; "point" is the official code's point-to-point."""

    radius: float = 0.0  # node radius / mean edge length (the authors' CLI: 5); 0: from the mesh
    # (graph.AUTO_RADIUS x the bounding-box diagonal, at least graph.AUTO_MIN_EDGES)
    alpha: float = 100.0  # official CLI weights, rescaled inside (alpha |E| / n, beta r / n)
    beta: float = 10.0
    use_aa: bool = True  # False: plain MM (same loop, AA off)
    history: int = 5  # Anderson history m
    max_iter: int = 100  # per nu stage
    tol: float = 1e-5  # max vertex displacement, normalised units
    robust: bool = True  # False: the least-squares (l2) variant
    dtype: str = "float32"  # or "float64": every stage (register switches jax's x64 mode on)
    coverage: str = "auto"  # geodesic (meshes) / euclidean (point clouds)
    # node sampling, graph.SAMPLINGS: "current" (increasing x, coverage approximated by `coverage`)
    # or "authors" (the official code's: decreasing x, exact geodesics; needs pygeodesic)
    sampling: str = "current"
    landmark_weight: float = 1.0
    alignment: str = "point"  # or "plane": point-to-plane along the target's vertex normals
    plane_point_weight: float = 0.1  # plane: share of point-to-point added to the plane residual
    nu_start: str = "median_or_tail"  # the first stage's nu_a, NU_STARTS ("median": official)
    # True: a source vertex whose closest target vertex lies on the target's boundary (an edge of
    # one face: the rim of a hole or of a cut) and that lies past the rim is rejected, as a vertex
    # beyond the Welsch cutoff (`Rims`)
    reject_boundary: bool = False
    # edges of nodes without data in a stage, UNMATCHED_REGS: "welsch" (the official code) or
    # "quadratic" (least squares, so those nodes follow their neighbours)
    unmatched_reg: str = "welsch"


def cutoff(dtype) -> float:
    """Closest points farther than cutoff x nu_a need not be exact: their Welsch weight
    exp(-c^2 / 2) is below half an ulp of 1, so rho = 2 nu_a^2 (1 - w) and the weight are what
    any point that far gives, to rounding (5.8 in float32, 8.6 in float64). grid_nearest's
    max_distance then spares them the coarse levels and the brute force (source vertices with
    no counterpart in a partial target)."""
    return float(np.sqrt(2.0 * np.log(2.0 / np.finfo(dtype).eps)))


class Rims(NamedTuple):
    """The target's rim for `Options.reject_boundary`: direction [m, 3], at each boundary vertex
    the unit direction out of the surface across the rim, zero elsewhere
    (`meshes.boundary_directions`); beyond: [] (normalised units). A source vertex whose closest
    target vertex c is on the rim is rejected when it lies more than `beyond` past the rim,
    (v' - c) . direction_c > beyond: the part of the source beyond a cut or a hole of the target
    stops being pulled onto its edge, while a rim the two meshes share keeps its matches."""

    direction: jax.Array
    beyond: jax.Array


def past_the_rim(rims: Rims, deformed: jax.Array, closest: jax.Array, found: jax.Array):
    """[n] bool: the deformed vertices [n, 3] whose closest target vertex (index found [n],
    position closest [n, 3]) is on the rim and which lie more than rims.beyond past it."""
    return jnp.sum((deformed - closest) * rims.direction[found], -1) > rims.beyond


def _energy_and_surrogate(
    problem, index, x, nu_a, nu_r, n, robust, cache=None, plane=None, rims=None, dropped=None
):
    deformed = E.deform(problem, x, n)
    far = cutoff(deformed.dtype) * nu_a if robust else None
    if cache is None:
        found, _ = grid_nearest(index, deformed, max_distance=far)
    else:
        found, _, cache = grid_nearest_cached(index, deformed, cache, max_distance=far)
    closest = index.points[found]
    if plane is not None:
        # A vertex with no target point within `far` is rejected: its closest point is not
        # searched exactly, and a far point can have a small plane residual.
        plane = plane._replace(normals=plane.normals[found], max_distance=far)
    rejected = dropped
    if rims is not None:
        past = past_the_rim(rims, deformed, closest, found)
        rejected = past if dropped is None else past | dropped
    s = E.make_surrogate(problem, x, deformed, closest, nu_a, nu_r, robust, plane, rejected)
    energy = (
        E.data_energy(deformed, closest, nu_a, robust, plane, rejected)
        + E.reg_energy(problem, x, nu_r, robust)
        + E.rot_energy(problem, x)
        + E.landmark_energy(problem, deformed)
    )
    return energy, s, cache


def mm_step(
    problem,
    index,
    x,
    nu_a,
    nu_r,
    n: int,
    robust: bool = True,
    cache=None,
    plane=None,
    rims=None,
    dropped=None,
):
    """The MM map: (T(X), E(X)) with T(X) the minimiser of the surrogate at X ([r, 4, 3]).
    With a `NearestCache` (closest points by `grid_nearest_cached`, the same points):
    (T(X), E(X), new cache). plane: `E.PlaneAlignment` with the target's [m, 3] vertex normals
    (point-to-plane) or None. rims: `Rims` (`Options.reject_boundary`) or None. dropped: [n]
    bool, vertices without a data term (`vertices_of_unmatched_nodes`), or None."""
    energy, s, new_cache = _energy_and_surrogate(
        problem, index, x, nu_a, nu_r, n, robust, cache, plane, rims, dropped
    )
    if cache is None:
        return E.minimise_surrogate(problem, s, n), energy
    return E.minimise_surrogate(problem, s, n), energy, new_cache


# Regularisation of nodes without data (`Options.unmatched_reg`): a node whose vertices' mean
# data weight, sum_i w_ij exp(-d_i^2 / 2 nu_a^2) / sum_i w_ij, is below UNMATCHED_WEIGHT (as if
# every vertex were 3 nu_a from the target) has no alignment term left to hold it; "quadratic"
# makes its edges least-squares for the stage, so the node follows its neighbours smoothly
# instead of staying wherever earlier stages left it.
UNMATCHED_REGS = ("welsch", "quadratic")
UNMATCHED_WEIGHT = 0.01


def unmatched_nodes(problem: E.Problem, data_weight: jax.Array) -> jax.Array:
    """[r] bool: nodes whose vertices' mean data weight (data_weight: [n], the surrogate's) is
    below UNMATCHED_WEIGHT; the mean weighs each vertex by its node weight w_ij."""
    r = problem.x0.shape[0]
    w = problem.pair_vec[:, 3]  # pair_vec = w_ij [v_i - p_j, 1]
    total = jax.ops.segment_sum(w, problem.pair_node, r)
    matched = jax.ops.segment_sum(w * data_weight[problem.pair_vertex], problem.pair_node, r)
    return matched < UNMATCHED_WEIGHT * total


def parts_without_data(problem: E.Problem, unmatched: jax.Array) -> jax.Array:
    """[r] bool: the nodes of the connected parts of the graph whose nodes are all `unmatched`
    ([r] bool). Nothing determines where such a part goes (its edges and rotations allow any
    rigid motion): with its vertices' data dropped, a float32 solve still moves it along that
    free motion by its rounding, ~3e-4 of the diagonal per iteration for a loose 32-vertex piece
    of d2 (none in float64), so `run_stage` holds it where the stage found it."""
    r = problem.x0.shape[0]
    has_data = jax.ops.segment_max((~unmatched).astype(jnp.int32), problem.node_component, r)
    return has_data[problem.node_component] == 0


def vertices_of_unmatched_nodes(problem: E.Problem, unmatched: jax.Array, n: int) -> jax.Array:
    """[n] bool: the vertices all of whose nodes are `unmatched` ([r] bool). They lose their
    data term for the stage, so that a node without data follows its neighbours (least-squares
    edges) with nothing left of its vertices' small data weights pulling it elsewhere."""
    of_unmatched = unmatched[problem.pair_node].astype(jnp.int32)
    return jax.ops.segment_min(of_unmatched, problem.pair_vertex, n) > 0


@functools.partial(
    jax.jit, static_argnames=("n", "use_aa", "history", "max_iter", "tol", "unmatched_reg")
)
def run_stage(
    problem: E.Problem,
    index: GridIndex,
    x: jax.Array,
    nu_a: jax.Array,
    nu_r: jax.Array,
    cache: NearestCache,
    plane: E.PlaneAlignment | None = None,
    rims: Rims | None = None,
    *,
    n: int,
    use_aa: bool,
    history: int,
    max_iter: int,
    tol: float,
    unmatched_reg: str = "welsch",
):
    """One nu stage: anderson_mm (or plain MM) from x [r, 4, 3]; returns (x, AndersonInfo,
    cache, the number of unmatched nodes). `cache` (closest-point candidates of the source
    vertices) carries across stages. plane: point-to-plane alignment (the target's [m, 3] vertex
    normals), None for point-to-point. rims: `Rims` (`Options.reject_boundary`) or None.
    The least-squares variant runs through the same function with huge nu (`L2_NU`).
    unmatched_reg="quadratic": the edges of the nodes unmatched at x (`unmatched_nodes`) run at
    nu_r = L2_NU and the vertices of only such nodes lose their data term, for the whole stage
    (one energy per stage); a connected part of the graph with no matched node stays where it
    is (`parts_without_data`).

    Stopping rule of the official code (AMM_NRR `DoNonRigid`): the largest vertex displacement
    between consecutive iterates, i.e. from the accepted point to the next one (the Anderson
    point with AA, T(x) without), below `tol` (normalised units)."""
    unmatched = held = jnp.zeros((problem.x0.shape[0],), bool)
    dropped = None
    if unmatched_reg == "quadratic":
        _, s, _ = _energy_and_surrogate(problem, index, x, nu_a, nu_r, n, True, cache, plane, rims)
        unmatched = unmatched_nodes(problem, s.data_weight)
        dropped = vertices_of_unmatched_nodes(problem, unmatched, n)
        held = parts_without_data(problem, unmatched)
        free = unmatched[problem.edge_from] | unmatched[problem.edge_to]
        nu_r = jnp.where(free, jnp.asarray(L2_NU, nu_r.dtype), nu_r)  # [e]

    def displacement(x_, gx):
        moved = E.deform(problem, gx - x_, n)  # deform is linear in X
        return jnp.sqrt(jnp.max(jnp.sum(moved**2, -1)))

    def step(x_, cache_):
        gx, energy, cache_ = mm_step(
            problem, index, x_, nu_a, nu_r, n, cache=cache_, plane=plane, rims=rims, dropped=dropped
        )
        return jnp.where(held[:, None, None], x_, gx), energy, cache_

    x, info, cache = anderson_mm(
        step,
        None,
        x,
        m=history,
        max_iter=max_iter,
        tol=tol,
        use_aa=use_aa,
        residual_fn=displacement,
        stop_on="step",
        aux=cache,
    )
    return x, info, cache, jnp.sum(unmatched)


# Closest-point candidates kept per source vertex between iterations (`grid_nearest_cached`).
CANDIDATES = 4

# nu for the least-squares variant: rho_nu(x) = x^2 (1 + O(x^2 / nu^2)) and weight 1 to
# rounding; one compiled stage function serves both variants.
L2_NU = 1e6


@jax.jit
def _initial_closest(index: GridIndex, queries: jax.Array, cache: NearestCache):
    """Squared closest-point distances of the undeformed source (for nu_a0) and the filled
    candidate cache that the first stage starts from."""
    _, sq_dist, cache = grid_nearest_cached(index, queries, cache)
    return sq_dist, cache


# nu_a of the first stage. "median" (the official code): the median closest-point distance from
# the source to the target. It is 0 when most of the surface is already in place (an articulated
# motion of one part), and the moving part then starts beyond the Welsch cutoff. "tail": at least
# the TAIL_PERCENTILE-th percentile of the closest-point distances, the smaller of the two
# directions: a part that moved is far in both directions, the target's outliers only from the
# target, the source's part without a counterpart (partial overlap) only from the source.
# "median_or_tail" (the default): the median unless it is below the last stage's nu (most of the
# surface in place), then "tail". Always "tail" registers bend-and-twist pairs better, but on d2
# (a real scan pair with parts missing from the target) it pulls the unmatched parts onto the
# target: 0.031 from the authors' result instead of 0.002 (research/amm_nrr/README.md).
NU_STARTS = ("median_or_tail", "median", "tail")
TAIL_PERCENTILE = 99.0


def initial_nu(
    source_to_target: np.ndarray,
    target_to_source: Callable[[], np.ndarray],
    rule: str,
    nu_min: float,
) -> float:
    """nu_a of the first stage by `rule` (NU_STARTS) from the closest-point distances [n] of the
    source's vertices to the target and [m] of the target's to the source (normalised units; the
    latter computed only if the rule needs them); nu_min: the last stage's nu_a."""
    median = float(np.median(source_to_target))
    if rule == "median" or (rule == "median_or_tail" and median >= nu_min):
        return median
    if rule in ("tail", "median_or_tail"):
        tail = min(
            float(np.percentile(source_to_target, TAIL_PERCENTILE)),
            float(np.percentile(target_to_source(), TAIL_PERCENTILE)),
        )
        return max(median, tail)
    raise ValueError(f"initial_nu: rule {rule!r}, expected one of {NU_STARTS}")


def last_nu(mean_edge: float) -> float:
    """nu_a of the last stage: the mean edge length l / sqrt(3)."""
    return mean_edge / np.sqrt(3.0)


def nu_schedule(nu_a0: float, mean_edge: float, robust: bool = True) -> list[tuple[float, float]]:
    """[(nu_a, nu_r)] per stage: nu_a from nu_a0 (`initial_nu`), halved down to l / sqrt(3) (the
    last stage runs at the minimum); nu_r from 3 l, halved alongside.
    robust=False: as many stages, all at L2_NU (the same iteration budget)."""
    nu_min = last_nu(mean_edge)
    nu_a, nu_r = max(nu_a0, nu_min), 3.0 * mean_edge
    stages = [(nu_a, nu_r)]
    while nu_a > nu_min:
        nu_a, nu_r = max(nu_a / 2, nu_min), nu_r / 2
        stages.append((nu_a, nu_r))
    return stages if robust else [(L2_NU, L2_NU)] * len(stages)


# The most recently used compiled functions kept (two per registration shape). Every pair has its
# own shapes, and each compiled solver maps ~1100 memory regions for its code: a process that
# registered ~60 differently shaped pairs hit the kernel's limit of 65530 maps ("LLVM ERROR:
# Unable to allocate section memory"). jax's own caches hold every executable too, so an
# eviction also clears them (`jax.clear_caches`; other jitted functions recompile on next use).
COMPILED_KEPT = 8
_COMPILED: collections.OrderedDict[Any, Any] = collections.OrderedDict()


def _compiled(fn, args: tuple, static: dict[str, Any]):
    """fn lowered and compiled ahead of time for these argument shapes, so that the solve time
    excludes compilation; cached per (function, shapes, static values, grid meta), the
    COMPILED_KEPT most recent."""
    leaves, treedef = jax.tree.flatten(args)
    key = (fn, treedef, tuple((x.shape, x.dtype) for x in leaves), tuple(sorted(static.items())))
    if key not in _COMPILED:
        if len(_COMPILED) >= COMPILED_KEPT:
            _COMPILED.popitem(last=False)
            jax.clear_caches()
        _COMPILED[key] = fn.lower(*args, **static).compile()
    _COMPILED.move_to_end(key)
    return _COMPILED[key]


@dataclasses.dataclass
class Result:
    """deformed: [n, 3] in the source's units; x: [r, 4, 3] the node variables (normalised
    frame); log: one dict per iteration; the rest scalars."""

    deformed: np.ndarray
    x: np.ndarray
    iterations: int
    solve_seconds: float
    solve_cpu_seconds: float  # process CPU time of the solve, all threads (steadier under load)
    compile_seconds: float
    setup_seconds: float
    num_nodes: int
    radius: float  # the node radius used, in mean edge lengths
    stages: list[dict[str, Any]]
    log: list[dict[str, Any]]


# Fewer vertices than this give no meaningful distances to set the graph and nu from (one vertex:
# infinite Welsch parameters and a NaN energy).
MIN_VERTICES = 4


def register(
    source: Mesh,
    target: Mesh,
    options: Options = Options(),
    *,
    landmarks: np.ndarray | None = None,
    label: str = "registration",
) -> Result:
    """Registers `source` onto `target`. landmarks: [L, 2] (source index, target index) or None.

    solve_seconds excludes compilation (each jitted function is compiled ahead of time) and the
    host set-up (graph, grid index), which setup_seconds reports. A NaN or infinite energy stops
    the solve at the end of its stage with NonFiniteError naming `label`, the stage and the
    iteration (`stop_if_not_finite`).
    """
    for name, mesh in (("source", source), ("target", target)):
        if len(mesh.vertices) < MIN_VERTICES:
            raise ValueError(
                f"the {name} has {len(mesh.vertices)} vertex(es); a registration needs at least "
                f"{MIN_VERTICES} (the node radius, the Welsch parameters and the normalisation "
                "come from distances between vertices)"
            )
    if options.dtype not in ("float32", "float64"):
        raise ValueError(f"Options.dtype={options.dtype!r}: expected float32 or float64")
    if options.nu_start not in NU_STARTS:
        raise ValueError(f"Options.nu_start={options.nu_start!r}: expected one of {NU_STARTS}")
    if options.alignment not in ("point", "plane"):
        raise ValueError(f"Options.alignment={options.alignment!r}: expected point or plane")
    if options.unmatched_reg not in UNMATCHED_REGS:
        raise ValueError(
            f"Options.unmatched_reg={options.unmatched_reg!r}: expected one of {UNMATCHED_REGS}"
        )
    # float64 arrays exist only with jax's x64 mode: switched on for this call when it is off.
    x64 = options.dtype == "float64" and not jax.config.jax_enable_x64
    with jax.enable_x64(True) if x64 else contextlib.nullcontext():
        return _register(source, target, options, landmarks, label)


def _register(source, target, options, landmarks, label) -> Result:
    dtype = jnp.dtype(options.dtype)
    t0 = time.perf_counter()
    norm = normalise(source.vertices, target.vertices)
    src, tgt = norm.apply(source.vertices), norm.apply(target.vertices)
    graph = build_graph(
        source, src, options.radius or None, coverage=options.coverage, sampling=options.sampling
    )
    lm = None
    if landmarks is not None:
        landmarks = np.asarray(landmarks, np.int64)
        if landmarks.ndim != 2 or landmarks.shape[1] != 2:
            raise ValueError(f"landmarks: expected [L, 2] index pairs, got {landmarks.shape}")
        lm = (landmarks[:, 0], tgt[landmarks[:, 1]])
    problem = E.make_problem(
        src,
        graph,
        alpha=options.alpha,
        beta=options.beta,
        dtype=dtype,
        landmarks=lm,
        landmark_weight=options.landmark_weight,
    )
    index = build_grid_index(np.asarray(tgt, dtype))
    plane = None
    if options.alignment == "plane":  # the normalisation is a uniform scaling: normals unchanged
        plane = E.PlaneAlignment(
            jnp.asarray(vertex_normals(target), dtype),
            jnp.asarray(options.plane_point_weight, dtype),
        )
    rims = None
    if options.reject_boundary:
        if target.is_point_cloud:
            raise ValueError(
                "Options.reject_boundary: the target is a point cloud; only a mesh's faces "
                "define a rim"
            )
        rims = Rims(
            jnp.asarray(boundary_directions(target), dtype),
            jnp.asarray(mean_edge_length(target, tgt), dtype),
        )
    n = src.shape[0]
    setup = time.perf_counter() - t0

    with threadpool_limits(limits=1, user_api="blas"):
        return _solve(
            problem, index, plane, rims, src, tgt, graph, norm, options, setup, n, dtype, label
        )


def stop_if_not_finite(stage: dict[str, Any], energies: np.ndarray, label: str) -> None:
    """Raises NonFiniteError when the accepted energies [iterations] of a finished stage hold
    a NaN or infinity, naming `label`, the stage, its nu_a and the first such iteration."""
    bad = np.flatnonzero(~np.isfinite(energies))
    if bad.size:
        i = int(bad[0])
        raise NonFiniteError(
            f"{label}: the energy is {energies[i]} at iteration {i} of stage {stage['stage']} "
            f"(nu_a={stage['nu_a']:.3g}); the registration stopped there and wrote nothing"
        )


def _solve(
    problem, index, plane, rims, src, tgt, graph, norm, options, setup, n, dtype, label
) -> Result:
    # Runs with single-threaded BLAS: jaxlib's LAPACK calls (Cholesky, triangular solves on
    # <= 100 x 100 blocks) go to scipy's OpenBLAS, whose threads spin against XLA's own on a
    # 2-core CPU; measured 0.1 ms vs 12-16 ms for one 96 x 96 solve under load.
    t0 = time.perf_counter()
    src_d = jnp.asarray(src, dtype)
    cache = nearest_cache_init(n, src.shape[1], CANDIDATES, dtype)
    init_fn = _compiled(_initial_closest, (index, src_d, cache), {})
    nu0 = jnp.asarray(1.0, dtype)
    static = dict(
        n=n,
        use_aa=options.use_aa,
        history=options.history,
        max_iter=options.max_iter,
        tol=options.tol,
        unmatched_reg=options.unmatched_reg if options.robust else "welsch",
    )
    stage_args = (problem, index, problem.x0, nu0, nu0, cache, plane, rims)
    stage_fn = _compiled(run_stage, stage_args, static)
    compile_seconds = time.perf_counter() - t0

    t0, c0 = time.perf_counter(), time.process_time()
    d0, cache = init_fn(index, src_d, cache)
    d0 = np.sqrt(np.asarray(d0, np.float64))
    target_to_source = lambda: cKDTree(src).query(tgt)[0]
    nu_a0 = initial_nu(d0, target_to_source, options.nu_start, last_nu(graph.mean_edge))
    schedule = nu_schedule(nu_a0, graph.mean_edge, options.robust)
    x = problem.x0
    stages, log, total = [], [], 0
    for k, (nu_a, nu_r) in enumerate(schedule):
        start = time.perf_counter() - t0
        nus = jnp.asarray(nu_a, dtype), jnp.asarray(nu_r, dtype)
        x, info, cache, unmatched = stage_fn(problem, index, x, *nus, cache, plane, rims)
        info = jax.device_get(info)
        end = time.perf_counter() - t0
        it = int(info.iterations)
        stages.append(
            dict(
                stage=k,
                nu_a=nu_a,
                nu_r=nu_r,
                iterations=it,
                energy=float(info.energy),
                accepted=int(info.accepted),
                rejected=int(info.rejected),
                converged=bool(info.converged),
                residual=float(info.residual),
                unmatched_nodes=int(unmatched),
                seconds=end - start,
            )
        )
        for i in range(it):  # per-iteration time: the stage's time spread evenly
            log.append(
                dict(
                    stage=k,
                    iteration=total + i,
                    energy=float(info.candidate_trace[i]),
                    accepted_energy=float(info.energy_trace[i]),
                    accepted=bool(info.candidate_trace[i] == info.energy_trace[i]),
                    time=start + (end - start) * (i + 1) / it,
                )
            )
        total += it
        stop_if_not_finite(stages[-1], np.asarray(info.energy_trace[:it]), label)
    deformed = np.asarray(E.deform(problem, x, n), np.float64)
    solve_seconds = time.perf_counter() - t0
    solve_cpu_seconds = time.process_time() - c0
    return Result(
        deformed=norm.undo(deformed),
        x=np.asarray(x),
        iterations=total,
        solve_seconds=solve_seconds,
        solve_cpu_seconds=solve_cpu_seconds,
        compile_seconds=compile_seconds,
        setup_seconds=setup,
        num_nodes=graph.num_nodes,
        radius=graph.radius / graph.mean_edge,
        stages=stages,
        log=log,
    )


def check_finite(result: Result, label: str) -> None:
    """Raises NonFiniteError (one line naming `label` and the stage) when a stage ended with a
    NaN or infinite energy or the deformed vertices are not all finite: such a result must not
    be written or scored."""
    for stage in result.stages:
        if not np.isfinite(stage["energy"]):
            raise NonFiniteError(
                f"{label}: the registration's energy is {stage['energy']} in stage "
                f"{stage['stage']} (nu_a={stage['nu_a']:.3g}, after {stage['iterations']} "
                "iterations); no result was written for it"
            )
    bad = np.flatnonzero(~np.isfinite(result.deformed).all(axis=1))
    if bad.size:
        raise NonFiniteError(
            f"{label}: {bad.size} of {len(result.deformed)} deformed vertices are NaN or "
            f"infinite after the last stage ({len(result.stages) - 1}; first: vertex {bad[0]}); "
            "no result was written for it"
        )


def fit_metric(deformed: np.ndarray, target: np.ndarray, scale: float) -> float:
    """Mean nearest-neighbour distance from deformed [n, 3] to target vertices [m, 3], divided by
    `scale` (the joint bounding-box diagonal of source and target), in float64 (k-d tree)."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(np.asarray(target, np.float64)).query(np.asarray(deformed, np.float64))
    return float(d.mean() / scale)
