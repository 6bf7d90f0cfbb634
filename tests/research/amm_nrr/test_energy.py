"""Energy terms vs finite differences, the MM surrogate's majorization, the assembled system and
the block-tridiagonal solve, on small random problems in float64, for point-to-point and
point-to-plane alignment."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.amm_nrr import energy as E
from research.amm_nrr import solver
from research.amm_nrr.graph import build_graph, normalise
from research.datasets.meshes import Mesh, grid_surface

NU_A, NU_R = 0.02, 0.05


@pytest.fixture(scope="module")
def setup():
    with jax.enable_x64(True):
        mesh = grid_surface(8)
        v = normalise(mesh.vertices, mesh.vertices).apply(mesh.vertices)
        graph = build_graph(mesh, v, 2.5)
        rng = np.random.default_rng(0)
        landmarks = (np.array([3, 40]), v[[3, 40]] + 0.01)
        problem = E.make_problem(
            v,
            graph,
            alpha=100.0,
            beta=10.0,
            dtype=jnp.float64,
            landmarks=landmarks,
            landmark_weight=0.5,
        )
        closest = jnp.asarray(v + 0.02 * rng.normal(size=v.shape))
        normals = rng.normal(size=v.shape)
        normals = jnp.asarray(normals / np.linalg.norm(normals, axis=1, keepdims=True))
        yield problem, v.shape[0], closest, normals, rng


ALIGNMENTS = ["point", "plane"]


def _plane(setup, alignment):
    return E.PlaneAlignment(setup[3], 0.1) if alignment == "plane" else None


def _random_x(problem, rng, scale=0.05):
    return problem.x0 + scale * jnp.asarray(rng.normal(size=problem.x0.shape))


def _terms(problem, n, closest, robust, plane=None):
    """Each term as a function of X (fixed closest points and normals for the data term)."""
    return {
        "data": lambda x: E.data_energy(E.deform(problem, x, n), closest, NU_A, robust, plane),
        "reg": lambda x: E.reg_energy(problem, x, NU_R, robust),
        "rot": lambda x: E.rot_energy(problem, x),
        "landmarks": lambda x: E.landmark_energy(problem, E.deform(problem, x, n)),
    }


@pytest.mark.parametrize("alignment", ALIGNMENTS)
@pytest.mark.parametrize("robust", [True, False])
def test_terms_match_finite_differences(setup, robust, alignment):
    problem, n, closest, _, rng = setup
    with jax.enable_x64(True):
        x = _random_x(problem, rng)
        direction = jnp.asarray(rng.normal(size=x.shape))
        terms = _terms(problem, n, closest, robust, _plane(setup, alignment))
        for name, fn in terms.items():
            eps = 1e-6
            fd = (fn(x + eps * direction) - fn(x - eps * direction)) / (2 * eps)
            ad = jnp.vdot(jax.grad(fn)(x), direction)
            np.testing.assert_allclose(fd, ad, rtol=1e-6, atol=1e-9, err_msg=name)


def test_rho_is_scaled_welsch():
    with jax.enable_x64(True):
        x2 = jnp.linspace(0.0, 0.01, 7)
        nu = 0.03
        np.testing.assert_allclose(
            E.rho(x2, nu), 2 * nu**2 * (1 - np.exp(-np.asarray(x2) / (2 * nu**2))), rtol=1e-12
        )
        # d rho / d x2 is the MM weight.
        grad = jax.vmap(jax.grad(lambda t: E.rho(t, nu)))(x2)
        np.testing.assert_allclose(grad, E.mm_weight(x2, nu), rtol=1e-12)


@pytest.mark.parametrize("alignment", ALIGNMENTS)
@pytest.mark.parametrize("robust", [True, False])
def test_surrogate_majorizes_and_touches(setup, robust, alignment):
    """E(X) <= S(X; X0) for random X, equality and equal gradients at X0 (closest points and
    normals fixed)."""
    problem, n, closest, _, rng = setup
    plane = _plane(setup, alignment)
    with jax.enable_x64(True):
        x0 = _random_x(problem, rng)
        d0 = E.deform(problem, x0, n)
        s = E.make_surrogate(problem, x0, d0, closest, NU_A, NU_R, robust, plane)

        def energy(x):
            return sum(fn(x) for fn in _terms(problem, n, closest, robust, plane).values())

        def surrogate(x):  # with the constants that make it touch E at X0
            return E.surrogate_energy(problem, s, x, n) + (
                energy(x0) - E.surrogate_energy(problem, s, x0, n)
            )

        np.testing.assert_allclose(surrogate(x0), energy(x0), rtol=1e-12)
        np.testing.assert_allclose(jax.grad(surrogate)(x0), jax.grad(energy)(x0), atol=1e-9)
        for scale in (1e-3, 1e-2, 0.1, 1.0):
            x = x0 + scale * jnp.asarray(rng.normal(size=x0.shape))
            assert energy(x) <= surrogate(x) + 1e-12, scale


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_assembled_system_is_the_surrogate(setup, alignment):
    """tr(X^T H X) - 2 tr(X^T b) has the surrogate's gradient and Hessian; the minimiser of the
    block-tridiagonal solve equals the dense solve. Point-to-plane: H is 12r x 12r in vec(X)."""
    problem, n, closest, _, rng = setup
    plane = _plane(setup, alignment)
    with jax.enable_x64(True):
        x0 = _random_x(problem, rng)
        d0 = E.deform(problem, x0, n)
        s = E.make_surrogate(problem, x0, d0, closest, NU_A, NU_R, plane=plane)
        blocks, rhs = E.assemble(problem, s, n)
        h, b = E.dense_system(problem, blocks, rhs)
        r = problem.x0.shape[0]
        assert h.shape == ((4 * r,) * 2 if plane is None else (12 * r,) * 2)
        np.testing.assert_allclose(h, h.T, atol=1e-12)
        assert np.linalg.eigvalsh(np.asarray(h)).min() > 0
        x = _random_x(problem, rng)
        grad = jax.grad(lambda y: E.surrogate_energy(problem, s, y, n))(x)
        flat = lambda y: y.reshape(b.shape[0], -1)  # [4r, 3], or vec(X) [12r, 1]
        np.testing.assert_allclose(flat(grad), 2 * (h @ flat(x) - b), rtol=1e-9, atol=1e-9)
        dense = np.linalg.solve(np.asarray(h), np.asarray(b))
        banded = E.minimise_surrogate(problem, s, n)
        np.testing.assert_allclose(flat(banded), dense, rtol=1e-8, atol=1e-10)
        # The minimiser does not raise the surrogate, hence (MM) not the energy either.
        assert E.surrogate_energy(problem, s, banded, n) <= E.surrogate_energy(problem, s, x0, n)


def test_rotation_projection_is_orthonormal():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        x = jnp.asarray(rng.normal(size=(6, 4, 3)))
        r = np.asarray(E.project_rotations(x))
        np.testing.assert_allclose(
            r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12
        )
        np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
        # It is the closest rotation: no random rotation is closer.
        for _ in range(20):
            q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
            q *= np.linalg.det(q)
            dist_r = np.linalg.norm(np.asarray(x[0, :3]) - r[0])
            assert dist_r <= np.linalg.norm(np.asarray(x[0, :3]) - q) + 1e-12


def test_point_to_plane_residual():
    """(n . d)^2 + eps |d|^2, and max_distance gates pairs by their point distance: beyond it
    the term is at its cap 2 nu^2 with MM weight 0, whatever the plane residual."""
    with jax.enable_x64(True):
        deformed = jnp.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        closest = jnp.array([[0.01, 0.0, 0.002], [1.0, 0.0, 0.002]])  # in-plane offset 0.01 / 1
        normals = jnp.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
        eps = 0.1
        plane = E.PlaneAlignment(normals, eps, max_distance=0.5)
        r2 = E.data_residual2(deformed, closest, plane)
        near = 0.002**2 + eps * (0.01**2 + 0.002**2)
        np.testing.assert_allclose(r2[0], near, rtol=1e-12)
        assert np.isinf(r2[1])
        np.testing.assert_allclose(E.rho(r2, NU_A), [E.rho(near, NU_A), 2 * NU_A**2])
        np.testing.assert_allclose(E.mm_weight(r2, NU_A)[1], 0.0)
        ungated = E.data_residual2(deformed, closest, plane._replace(max_distance=None))
        np.testing.assert_allclose(ungated[1], 0.002**2 + eps * (1.0 + 0.002**2), rtol=1e-12)


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_rejected_matches_cost_the_cap_and_weigh_nothing(setup, alignment):
    """A rejected vertex (a match past the target's rim) adds rho's cap 2 nu_a^2 whatever its
    residual, with MM weight 0; the other vertices' terms and weights are unchanged."""
    problem, n, closest, _, rng = setup
    plane = _plane(setup, alignment)
    rejected = jnp.asarray(rng.random(n) < 0.3)
    with jax.enable_x64(True):
        x0 = _random_x(problem, rng)
        d0 = E.deform(problem, x0, n)
        kept = E.rho(E.data_residual2(d0, closest, plane), NU_A)
        np.testing.assert_allclose(
            E.data_energy(d0, closest, NU_A, plane=plane, rejected=rejected),
            jnp.sum(jnp.where(rejected, 2 * NU_A**2, kept)),
            rtol=1e-12,
        )
        plain = E.make_surrogate(problem, x0, d0, closest, NU_A, NU_R, plane=plane)
        s = E.make_surrogate(problem, x0, d0, closest, NU_A, NU_R, plane=plane, rejected=rejected)
        np.testing.assert_array_equal(s.data_weight, jnp.where(rejected, 0.0, plain.data_weight))


def _with_data_less_parts():
    """A grid plus two parts far from it: a small grid (a connected part of the deformation
    graph) and a single triangle (one node with no graph neighbours). Returns (mesh, vertex
    mask of the two far parts)."""
    main, patch = grid_surface(6), grid_surface(2)
    tri = Mesh(
        np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [0.0, 0.15, 0.0]]), np.array([[0, 1, 2]])
    )
    parts, faces, offset = [], [], 0
    for mesh, shift in ((main, 0.0), (patch, 3.0), (tri, 6.0)):
        parts.append(mesh.vertices + [shift, 0.0, 0.0])
        faces.append(mesh.faces + offset)
        offset += len(mesh.vertices)
    far = np.arange(offset) >= len(main.vertices)
    return Mesh(np.concatenate(parts), np.concatenate(faces)), far


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_parts_without_data_stay_put_in_float32(alignment, monkeypatch):
    """When every vertex of a part of the graph is rejected (data weight 0: beyond the Welsch
    cutoff), the proximal term keeps H positive definite: the float32 solve is finite and those
    nodes keep X0. Without it the same solve is NaN for every node."""
    mesh, far = _with_data_less_parts()
    v = normalise(mesh.vertices, mesh.vertices).apply(mesh.vertices)
    graph = build_graph(mesh, v, 2.5)
    degree = np.bincount(graph.edge_from, minlength=graph.num_nodes)
    far_nodes = far[graph.node_index]
    assert np.any(far_nodes & (degree == 0)) and np.any(far_nodes & (degree > 0))
    problem = E.make_problem(v, graph, alpha=100.0, beta=10.0, dtype=jnp.float32)
    rng = np.random.default_rng(0)
    closest = jnp.asarray(v + 0.01 * rng.normal(size=v.shape), jnp.float32)
    normals = jnp.asarray(np.tile([0.0, 0.0, 1.0], (len(v), 1)), jnp.float32)
    plane = E.PlaneAlignment(normals, 0.1) if alignment == "plane" else None
    n = len(v)
    deformed = E.deform(problem, problem.x0, n)
    s = E.make_surrogate(problem, problem.x0, deformed, closest, NU_A, NU_R, plane=plane)
    s = s._replace(data_weight=jnp.where(jnp.asarray(far), 0.0, s.data_weight))
    x = E.minimise_surrogate(problem, s, n)
    assert np.isfinite(np.asarray(x)).all()
    # float32 solve: the free mode has eigenvalue ~DAMPING, so it is accurate to ~1e-4 (of the
    # bounding-box diagonal, 1 here).
    np.testing.assert_allclose(x[far_nodes], problem.x0[far_nodes], atol=1e-4)
    assert np.abs(np.asarray(x - problem.x0)[~far_nodes]).max() > 1e-3  # the rest moved
    monkeypatch.setattr(E, "DAMPING", 0.0)
    monkeypatch.setattr(E, "PROXIMAL", 0.0)
    assert not np.isfinite(np.asarray(E.minimise_surrogate(problem, s, n))).any()


def test_parts_without_data_are_held_through_a_whole_float32_solve():
    """The grid registered onto itself moved by 0.01, with the two far parts (no target near
    them): unmatched_reg=quadratic finds their nodes unmatched in every stage, drops their data
    and holds the parts where they are (float32: a free rigid motion would otherwise drift by
    its rounding, ~1e-4 per iteration), while the grid registers."""
    mesh, far = _with_data_less_parts()
    grid = grid_surface(6)
    target = Mesh(grid.vertices + [0.0, 0.0, 0.01], grid.faces)
    options = solver.Options(radius=2.5, unmatched_reg="quadratic")
    res = solver.register(mesh, target, options)
    assert all(stage["unmatched_nodes"] > 0 for stage in res.stages)
    moved = np.linalg.norm(res.deformed - mesh.vertices, axis=1)
    assert moved[far].max() < 1e-6, moved[far].max()
    np.testing.assert_allclose(moved[~far], 0.01, atol=2e-3)


def test_node_components_and_the_held_parts_by_hand():
    """Nodes 0-1-2 linked, 3-4 linked, 5 alone: three parts. With nodes 1, 3, 4 and 5 unmatched
    the parts {3, 4} and {5} have no data and are held; node 1 is not (0 and 2 have data). The
    vertices of only unmatched nodes lose their data term: vertex 0 (nodes 0, 1) keeps it."""
    ef, et = np.array([0, 1, 1, 2, 3, 4]), np.array([1, 0, 2, 1, 4, 3])
    component = E.node_components(ef, et, 6)
    assert len(set(component[[0, 1, 2]])) == 1 and component[3] == component[4]
    assert len({component[0], component[3], component[5]}) == 3
    problem = types.SimpleNamespace(  # only the fields the two functions read
        x0=jnp.zeros((6, 4, 3)),
        node_component=jnp.asarray(component),
        pair_vertex=jnp.asarray([0, 0, 1, 2, 3]),  # vertex i's nodes
        pair_node=jnp.asarray([0, 1, 1, 3, 5]),
    )
    unmatched = jnp.asarray([False, True, False, True, True, True])
    held = solver.parts_without_data(problem, unmatched)
    np.testing.assert_array_equal(held, [False, False, False, True, True, True])
    dropped = solver.vertices_of_unmatched_nodes(problem, unmatched, 4)
    np.testing.assert_array_equal(dropped, [False, True, True, True])
