"""Energy terms of the registration and their MM surrogate, as pure jnp functions.

Variables. Node j carries X_j = [A_j^T; (p_j + t_j)^T], a [4, 3] block, so that the deformed
vertex is linear in X:  v_i' = sum_j w_ij [v_i - p_j, 1] X_j.  X: [r, 4, 3] (identity: A = I,
t = 0). The system below is in X flattened to [4r, 3] (row 4j + a).

Robust function. We use the Welsch function scaled by 2 nu^2,
  rho_nu(x) = 2 nu^2 (1 - exp(-x^2 / (2 nu^2))),
which is x^2 near 0, so that its MM surrogate at x0 is  rho(x0) + w (x^2 - x0^2)  with exactly
the weight w = exp(-x0^2 / (2 nu^2)) of the official code, and the balance of the terms does not
drift with nu (the unscaled psi = rho / (2 nu^2) would multiply the alignment by 1 / nu_a^2 at
every halving). `robust=False` gives the plain least-squares ("l2") variant, rho(x) = x^2, w = 1.

Energy  E(X) = sum_i rho_a(|v_i' - c(v_i')|)                        (alignment, c: closest point)
             + alpha' sum_(i->j) rho_r(s_ij |A_j(p_i - p_j) + p_j + t_j - p_i - t_i|)
             + beta' sum_j |A_j - proj_SO3(A_j)|_F^2
             + gamma sum_l |v_l' - q_l|^2                               (optional landmarks)
The surrogate at X0 fixes the closest points, the two Welsch weights and the rotations at X0;
it is a quadratic tr(X^T H X) - 2 tr(X^T b) + const, minimised by H X = b (H: [4r, 4r] SPD,
solved by `linalg.banded_solve`). Every surrogate also holds a small proximal term
sum lambda |X - X0|^2 (`DAMPING`, `PROXIMAL`), which keeps H positive definite when the weights
leave part of the graph without data (a node with no neighbours whose vertices are all rejected).

Point-to-plane alignment (an option; the official code has point-to-point only, `PlaneAlignment`)
uses rho_a((n_c . (v_i' - c))^2 + eps |v_i' - c|^2), n_c the target normal at the closest point
c; the small point-to-point part (eps = 0.1 by default, as in hybrid non-rigid ICP) pins the
tangential motion of nodes whose vertices see nearly parallel normals. The plane residual mixes
the three coordinate columns of X, so the surrogate becomes one quadratic in Y = vec(X)
([r, 12], Y_j[3a + c] = X_j[a, c]) with 12 x 12 node blocks: the data part
sum_i w_i (g_ij g_ik^T) (x) (n_i n_i^T) (g_ij = w_ij [v_i - p_j, 1]), every other term's 4 x 4
block B as B (x) I_3. Closest points beyond the Welsch cutoff are rejected (weight 0). The
closest point is still the nearest target vertex, which does not minimise the point-to-plane
residual, so E(T(X)) <= E(X) is no longer guaranteed for plain MM (as in point-to-plane ICP);
the Anderson safeguard compares true energies either way.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from research.amm_nrr.graph import DeformationGraph
from research.amm_nrr.linalg import Layout, banded_solve, make_layout


class Problem(NamedTuple):
    """The fixed arrays of one registration (normalised frame), a pytree of jax arrays.

    pair_vertex, pair_node: [nnz] int32; pair_vec: [nnz, 4] w_ij [v_i - p_j, 1].
    pp_vertex: [npp] int32, pp_block: [npp] int32, pp_geo: [npp, 4, 4]: every ordered pair (j, k)
      of nodes of vertex i with w_ij w_ik [v_i - p_j, 1][v_i - p_k, 1]^T; pp_block indexes the
      distinct node pairs `block_row`, `block_col` ([nb] int32).
    edge_from, edge_to: [e] int32; edge_vec: [e, 4] [p_i - p_j, 1]; edge_scale: [e].
    edge_blocks: [e, 4] int32, the blocks (j, j), (i, i), (j, i), (i, j) of each edge.
    diag_block: [r] int32, the block (j, j).
    node_component: [r] int32, the connected part of the graph each node belongs to.
    x0: [r, 4, 3] the identity deformation.
    landmark_vertex: [L] int32, landmark_target: [L, 3], landmark_weight: [] (L may be 0).
    alpha, beta: [] the rescaled weights alpha' and beta'.
    layout: where the node blocks go in the block-tridiagonal solve (`linalg.make_layout`).
    """

    pair_vertex: jax.Array
    pair_node: jax.Array
    pair_vec: jax.Array
    pp_vertex: jax.Array
    pp_block: jax.Array
    pp_geo: jax.Array
    block_row: jax.Array
    block_col: jax.Array
    edge_from: jax.Array
    edge_to: jax.Array
    edge_vec: jax.Array
    edge_scale: jax.Array
    edge_blocks: jax.Array
    diag_block: jax.Array
    node_component: jax.Array
    x0: jax.Array
    landmark_vertex: jax.Array
    landmark_target: jax.Array
    landmark_weight: jax.Array
    alpha: jax.Array
    beta: jax.Array
    layout: Layout


def node_components(edge_from: np.ndarray, edge_to: np.ndarray, r: int) -> np.ndarray:
    """[r] the connected part of each of r nodes under the edges (numbered from 0)."""
    links = scipy.sparse.coo_matrix((np.ones(edge_from.size), (edge_from, edge_to)), shape=(r, r))
    return scipy.sparse.csgraph.connected_components(links, directed=False)[1]


def make_problem(
    vertices: np.ndarray,
    graph: DeformationGraph,
    *,
    alpha: float,
    beta: float,
    dtype=jnp.float32,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    landmark_weight: float = 0.0,
) -> Problem:
    """Precomputes the fixed arrays from normalised source `vertices` [n, 3] and the graph.

    alpha' = alpha |E_directed| / n and beta' = beta r / n, the official rescaling.
    landmarks: (source vertex indices [L], normalised target positions [L, 3]).
    """
    v = np.asarray(vertices, np.float64)
    n, r = v.shape[0], graph.num_nodes
    pv, pn, w = graph.pair_vertex, graph.pair_node, graph.pair_weight
    pair_vec = w[:, None] * np.concatenate([v[pv] - graph.nodes[pn], np.ones((pv.size, 1))], 1)
    # Ordered node pairs per vertex: pairs are sorted by vertex, so the pairs of vertex i are
    # one contiguous run; take every (a, b) within each run.
    starts = np.searchsorted(pv, np.arange(n))
    counts = np.bincount(pv, minlength=n)
    rep = np.repeat(np.arange(pv.size), counts[pv])  # pair a, repeated count(i) times
    offs = np.arange(rep.size) - np.repeat(np.cumsum(counts[pv]) - counts[pv], counts[pv])
    other = starts[pv[rep]] + offs  # pair b
    a_idx, b_idx = rep, other
    key = pn[a_idx] * r + pn[b_idx]
    blocks, pp_block = np.unique(key, return_inverse=True)
    pp_geo = pair_vec[a_idx][:, :, None] * pair_vec[b_idx][:, None, :]
    block_of = {int(k): i for i, k in enumerate(blocks)}

    ef, et = graph.edge_from, graph.edge_to
    edge_vec = np.concatenate([graph.nodes[ef] - graph.nodes[et], np.ones((ef.size, 1))], 1)
    edge_blocks = np.array(
        [
            [
                block_of[int(j * r + j)],
                block_of[int(i * r + i)],
                block_of[int(j * r + i)],
                block_of[int(i * r + j)],
            ]
            for i, j in zip(ef, et, strict=True)
        ],
        np.int64,
    ).reshape(-1, 4)
    diag_block = np.array([block_of[j * r + j] for j in range(r)], np.int64)
    x0 = np.concatenate([np.broadcast_to(np.eye(3), (r, 3, 3)), graph.nodes[:, None, :]], 1)
    if landmarks is None:
        lv, lt = np.zeros((0,), np.int64), np.zeros((0, 3))
    else:
        lv, lt = np.asarray(landmarks[0], np.int64), np.asarray(landmarks[1], np.float64)
        if (
            lv.ndim != 1
            or lt.shape != (lv.size, 3)
            or (lv.size and (lv.min() < 0 or lv.max() >= n))
        ):
            raise ValueError(
                f"landmarks: need source indices [L] in [0, {n}) and targets [L, 3], got "
                f"{lv.shape} and {lt.shape}"
            )
    f = lambda x: jnp.asarray(x, dtype)
    i32 = lambda x: jnp.asarray(x, jnp.int32)
    return Problem(
        pair_vertex=i32(pv),
        pair_node=i32(pn),
        pair_vec=f(pair_vec),
        pp_vertex=i32(pv[a_idx]),
        pp_block=i32(pp_block),
        pp_geo=f(pp_geo),
        block_row=i32(blocks // r),
        block_col=i32(blocks % r),
        edge_from=i32(ef),
        edge_to=i32(et),
        edge_vec=f(edge_vec),
        edge_scale=f(graph.edge_scale),
        edge_blocks=i32(edge_blocks),
        diag_block=i32(diag_block),
        node_component=i32(node_components(ef, et, r)),
        x0=f(x0),
        landmark_vertex=i32(lv),
        landmark_target=f(lt),
        landmark_weight=f(landmark_weight),
        alpha=f(alpha * ef.size / n),
        beta=f(beta * r / n),
        layout=make_layout(blocks // r, blocks % r, r),
    )


# ----------------------------------------------------------------------------------------------
# Terms.


def rho(x2: jax.Array, nu: jax.Array | float, robust: bool = True) -> jax.Array:
    """Scaled Welsch of the squared residual x2: 2 nu^2 (1 - exp(-x2 / (2 nu^2))); x2 if not
    robust."""
    if not robust:
        return x2
    two_nu2 = 2.0 * nu * nu
    return -two_nu2 * jnp.expm1(-x2 / two_nu2)


def mm_weight(x2: jax.Array, nu: jax.Array | float, robust: bool = True) -> jax.Array:
    """d rho / d x2 = exp(-x2 / (2 nu^2)): the surrogate's weight (1 if not robust)."""
    if not robust:
        return jnp.ones_like(x2)
    return jnp.exp(-x2 / (2.0 * nu * nu))


def deform(problem: Problem, x: jax.Array, num_vertices: int) -> jax.Array:
    """[n, 3] deformed vertices v_i' = sum_j w_ij [v_i - p_j, 1] X_j, x: [r, 4, 3]."""
    per_pair = jnp.einsum("pa,pac->pc", problem.pair_vec, x[problem.pair_node])
    return jax.ops.segment_sum(per_pair, problem.pair_vertex, num_vertices, indices_are_sorted=True)


def edge_residuals(problem: Problem, x: jax.Array) -> jax.Array:
    """[e, 3] s_ij (A_j (p_i - p_j) + p_j + t_j - p_i - t_i) for each directed edge (i -> j)."""
    res = jnp.einsum("ea,eac->ec", problem.edge_vec, x[problem.edge_to]) - x[problem.edge_from, 3]
    return problem.edge_scale[:, None] * res


def project_rotations(x: jax.Array) -> jax.Array:
    """[r, 3, 3] proj_SO3 of X_j[:3] = A_j^T by batched SVD with the determinant fix (rows of the
    result: R_j^T, matching X's layout)."""
    u, _, vt = jnp.linalg.svd(x[:, :3, :])
    det = jnp.linalg.det(u @ vt)
    u = u.at[:, :, 2].multiply(det[:, None])
    return u @ vt


class PlaneAlignment(NamedTuple):
    """Point-to-plane alignment, a pytree. normals: [n, 3] unit target normals at each vertex's
    closest point (in `solver`, the target's [m, 3] vertex normals, gathered per iteration);
    point_weight: eps of the added eps |v_i' - c_i|^2 (keeps H definite where a node's vertices
    see nearly parallel normals, or none); max_distance: closest points farther than it are
    rejected (None: none)."""

    normals: jax.Array
    point_weight: jax.Array | float
    max_distance: jax.Array | float | None = None


def data_residual2(
    deformed: jax.Array,
    closest: jax.Array,
    plane: PlaneAlignment | None = None,
    rejected: jax.Array | None = None,
) -> jax.Array:
    """[n] squared alignment residuals: |v_i' - c_i|^2, or with `plane`
    (n_i . (v_i' - c_i))^2 + eps |v_i' - c_i|^2, inf for a closest point beyond max_distance
    (rho at its cap, weight 0: like point-to-plane ICP's maximum correspondence distance) and
    where `rejected` ([n] bool or None) is set (a match past the target's rim, a vertex whose
    nodes have no data: `solver`)."""
    diff = deformed - closest
    point2 = jnp.sum(diff**2, -1)
    r2 = point2
    if plane is not None:
        r2 = jnp.sum(diff * plane.normals, -1) ** 2 + plane.point_weight * point2
        if plane.max_distance is not None:
            r2 = jnp.where(point2 > plane.max_distance**2, jnp.inf, r2)
    return r2 if rejected is None else jnp.where(rejected, jnp.inf, r2)


def data_energy(
    deformed: jax.Array,
    closest: jax.Array,
    nu_a: jax.Array | float,
    robust: bool = True,
    plane: PlaneAlignment | None = None,
    rejected: jax.Array | None = None,
) -> jax.Array:
    """sum_i rho_a(residual_i^2) for deformed [n, 3] and closest target points [n, 3]
    (`data_residual2`)."""
    return jnp.sum(rho(data_residual2(deformed, closest, plane, rejected), nu_a, robust))


def reg_energy(
    problem: Problem, x: jax.Array, nu_r: jax.Array | float, robust: bool = True
) -> jax.Array:
    """alpha' sum_edges rho_r(|scaled edge residual|^2)."""
    r2 = jnp.sum(edge_residuals(problem, x) ** 2, -1)
    return problem.alpha * jnp.sum(rho(r2, nu_r, robust))


def rot_energy(problem: Problem, x: jax.Array) -> jax.Array:
    """beta' sum_j |A_j - proj_SO3(A_j)|_F^2."""
    return problem.beta * jnp.sum((x[:, :3, :] - project_rotations(x)) ** 2)


def landmark_energy(problem: Problem, deformed: jax.Array) -> jax.Array:
    """gamma sum_l |v_l' - q_l|^2 (0 without landmarks)."""
    diff = deformed[problem.landmark_vertex] - problem.landmark_target
    return problem.landmark_weight * jnp.sum(diff**2)


# ----------------------------------------------------------------------------------------------
# The MM surrogate: H X = b.


# The proximal term sum_(j, a) lambda_ja |X_ja - X0_ja|^2 added to every surrogate, with
# lambda_ja = DAMPING H_(ja, ja) + PROXIMAL (H: the surrogate's matrix without it, so the term is
# relative to each row's own scale, as Levenberg-Marquardt damping). Zero with zero gradient at
# X0, it keeps the surrogate a majorizer, and it keeps H positive definite whatever the weights:
# a node whose vertices are all rejected (Welsch weight 0) and that has no graph neighbours, or a
# connected part of the graph with no data at all, leaves H singular without it (the part's
# common translation is free), which float32 turns into NaN for every node. PROXIMAL alone
# would have to exceed float32's rounding of H's largest diagonal entries (~1e-7 x 500 on d2):
# 1e-6 still gave NaN there; DAMPING makes the smallest eigenvalue of the Jacobi-scaled H at
# least ~DAMPING, 800 float32 ulps, while damping each node's step by one part in 1e4.
DAMPING = 1e-4
PROXIMAL = 1e-6


class Surrogate(NamedTuple):
    """What the surrogate at X0 fixes: closest points [n, 3], data weights [n], edge weights [e],
    rotation targets [r, 3, 3] (R_j^T), for point-to-plane the `PlaneAlignment` at the closest
    points (no max_distance: rejected vertices have weight 0; None: point-to-point), and
    anchor: X0 [r, 4, 3], the centre of the proximal term."""

    closest: jax.Array
    data_weight: jax.Array
    edge_weight: jax.Array
    rotations: jax.Array
    plane: PlaneAlignment | None
    anchor: jax.Array


def make_surrogate(
    problem: Problem,
    x0: jax.Array,
    deformed0: jax.Array,
    closest: jax.Array,
    nu_a: jax.Array | float,
    nu_r: jax.Array | float,
    robust: bool = True,
    plane: PlaneAlignment | None = None,
    rejected: jax.Array | None = None,
) -> Surrogate:
    """The surrogate's fixed parts at X0 (deformed0 = deform(X0), closest = c(deformed0);
    plane: point-to-plane at the closest points; rejected: [n] bool, data weight 0)."""
    d2 = data_residual2(deformed0, closest, plane, rejected)
    e2 = jnp.sum(edge_residuals(problem, x0) ** 2, -1)
    return Surrogate(
        closest,
        mm_weight(d2, nu_a, robust),
        mm_weight(e2, nu_r, robust),
        project_rotations(x0),
        None if plane is None else plane._replace(max_distance=None),
        x0,
    )


def surrogate_energy(problem: Problem, s: Surrogate, x: jax.Array, num_vertices: int) -> jax.Array:
    """The quadratic part of the surrogate at X (constants dropped): for tests and diagnostics."""
    deformed = deform(problem, x, num_vertices)
    data = jnp.sum(s.data_weight * data_residual2(deformed, s.closest, s.plane))
    reg = problem.alpha * jnp.sum(s.edge_weight * jnp.sum(edge_residuals(problem, x) ** 2, -1))
    rot = problem.beta * jnp.sum((x[:, :3, :] - s.rotations) ** 2)
    blocks, _ = _assemble_undamped(problem, s, num_vertices)
    lam = proximal_weights(problem, blocks)  # [r, 4 or 12]
    step2 = ((x - s.anchor) ** 2).reshape(lam.shape + (-1,)).sum(-1)  # in the blocks' layout
    return data + reg + rot + landmark_energy(problem, deformed) + jnp.sum(lam * step2)


def assemble(problem: Problem, s: Surrogate, num_vertices: int) -> tuple[jax.Array, jax.Array]:
    """The surrogate tr(X^T H X) - 2 tr(X^T b) + const as H's distinct node blocks and b,
    including the proximal term (`proximal_weights`): see `_assemble_undamped` for the layouts."""
    blocks, rhs = _assemble_undamped(problem, s, num_vertices)
    lam = proximal_weights(problem, blocks)
    size = blocks.shape[-1]
    blocks = blocks.at[problem.diag_block].add(lam[:, :, None] * jnp.eye(size, dtype=lam.dtype))
    return blocks, rhs + lam[:, :, None] * s.anchor.reshape(rhs.shape)


def _assemble_undamped(
    problem: Problem, s: Surrogate, num_vertices: int
) -> tuple[jax.Array, jax.Array]:
    """The surrogate without the proximal term, tr(X^T H X) - 2 tr(X^T b) + const, as H's
    distinct node blocks and b: point-to-point: blocks [nb, 4, 4] (block (block_row,
    block_col)), b [r, 4, 3]; point-to-plane (s.plane set): blocks [nb, 12, 12], b [r, 12, 1] in
    Y = vec(X).
    Gathers and segment sums over the fixed pair structure, no dense [n, 4r] matrix.
    """
    r = problem.x0.shape[0]
    nb = problem.block_row.shape[0]
    dtype = problem.pair_vec.dtype
    plane = s.plane
    # Per-vertex |v_i' - q_i|^2 terms (point-to-point alignment or point-to-plane's eps part,
    # landmarks): weight and weighted target; point-to-plane adds w (n . c) n to the target.
    weight = s.data_weight
    target = s.data_weight[:, None] * s.closest
    if plane is not None:
        weight = plane.point_weight * weight
        target = (
            plane.point_weight * target
            + (s.data_weight * jnp.sum(s.closest * plane.normals, -1))[:, None] * plane.normals
        )
    num_landmarks = problem.landmark_vertex.shape[0]
    if num_landmarks:
        gamma = problem.landmark_weight
        weight = weight.at[problem.landmark_vertex].add(gamma)
        target = target.at[problem.landmark_vertex].add(gamma * problem.landmark_target)
    blocks = jax.ops.segment_sum(
        weight[problem.pp_vertex][:, None, None] * problem.pp_geo, problem.pp_block, nb
    )
    rhs = jax.ops.segment_sum(
        problem.pair_vec[:, :, None] * target[problem.pair_vertex][:, None, :],
        problem.pair_node,
        r,
    )
    # Regularisation: residual = g^T X_j - e4^T X_i, weight a = alpha' s^2 w.
    a = problem.alpha * s.edge_weight * problem.edge_scale**2
    g = problem.edge_vec
    e4 = jnp.zeros((4,), dtype).at[3].set(1.0)
    gg = g[:, :, None] * g[:, None, :]
    ge = g[:, :, None] * e4[None, None, :]
    ee = jnp.broadcast_to(e4[:, None] * e4[None, :], gg.shape)
    reg = a[:, None, None, None] * jnp.stack([gg, ee, -ge, -jnp.swapaxes(ge, 1, 2)], 1)
    blocks = blocks + jax.ops.segment_sum(reg.reshape(-1, 4, 4), problem.edge_blocks.ravel(), nb)
    # Rotation: beta' |X_j[:3] - R_j^T|^2.
    rot = jnp.zeros((4, 4), dtype).at[:3, :3].set(jnp.eye(3, dtype=dtype)) * problem.beta
    blocks = blocks.at[problem.diag_block].add(rot)
    rhs = rhs.at[:, :3, :].add(problem.beta * s.rotations)
    if plane is None:
        return blocks, rhs
    # Point-to-plane: n_i . v_i' = sum_j (g_ij (x) n_i) . Y_j, so the data block (j, k) is
    # sum_i w_i (g_ij g_ik^T) (x) (n_i n_i^T): segment sums of the 6 distinct entries of
    # w n n^T (96 numbers per vertex-node pair rather than 144), expanded per block.
    nx, ny, nz = plane.normals[:, 0], plane.normals[:, 1], plane.normals[:, 2]
    wnn = s.data_weight[:, None] * jnp.stack(
        [nx * nx, ny * ny, nz * nz, nx * ny, nx * nz, ny * nz], 1
    )
    data6 = jax.ops.segment_sum(
        problem.pp_geo[:, :, :, None] * wnn[problem.pp_vertex][:, None, None, :],
        problem.pp_block,
        nb,
    )  # [nb, 4, 4, 6]
    nn = data6[..., jnp.array([[0, 3, 4], [3, 1, 5], [4, 5, 2]])]  # [nb, 4, 4, 3, 3]
    eye = jnp.eye(3, dtype=dtype)
    coupled = (nn + blocks[:, :, :, None, None] * eye).transpose(0, 1, 3, 2, 4)
    return coupled.reshape(nb, 12, 12), rhs.reshape(r, 12, 1)


def proximal_weights(problem: Problem, blocks: jax.Array) -> jax.Array:
    """[r, s] lambda of the proximal term for H's node blocks [nb, s, s] without it: DAMPING x
    the diagonal of each node's own block + PROXIMAL."""
    diagonal = jnp.diagonal(blocks[problem.diag_block], axis1=1, axis2=2)
    return DAMPING * diagonal + PROXIMAL


def dense_system(
    problem: Problem, blocks: jax.Array, rhs: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """H [s r, s r] and b [s r, 3 or 1] as dense arrays from `assemble`'s blocks [nb, s, s] and
    rhs [r, s, c] (tests and small problems)."""
    r, size = problem.x0.shape[0], blocks.shape[-1]
    h = jnp.zeros((r, r, size, size), blocks.dtype)
    h = h.at[problem.block_row, problem.block_col].set(blocks)
    return h.transpose(0, 2, 1, 3).reshape(size * r, size * r), rhs.reshape(size * r, -1)


def minimise_surrogate(problem: Problem, s: Surrogate, num_vertices: int) -> jax.Array:
    """argmin_X of the surrogate, [r, 4, 3] (block-tridiagonal Cholesky, `linalg`)."""
    blocks, rhs = assemble(problem, s, num_vertices)
    return banded_solve(problem.layout, blocks, rhs).reshape(problem.x0.shape)
