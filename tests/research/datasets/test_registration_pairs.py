"""The registration benchmark generator: subdivision, the deformation families' ground truth,
the corruptions, and the error report."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from research.datasets import registration_pairs as rp
from research.datasets.meshes import Mesh, grid_surface, mean_edge_length


@pytest.fixture(scope="module")
def base():
    return grid_surface(12)


def test_subdivide_keeps_the_vertices_and_splits_every_triangle(base):
    fine = rp.subdivide(base)
    n, e, f = len(base.vertices), len(base.edges()), len(base.faces)
    assert fine.vertices.shape == (n + e, 3) and fine.faces.shape == (4 * f, 3)
    np.testing.assert_array_equal(fine.vertices[:n], base.vertices)
    edges = base.edges()
    np.testing.assert_allclose(
        fine.vertices[n:], (base.vertices[edges[:, 0]] + base.vertices[edges[:, 1]]) / 2
    )

    def area(mesh):
        a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
        return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()

    np.testing.assert_allclose(area(fine), area(base), rtol=1e-12)  # planar split
    assert len(fine.edges()) == 2 * e + 3 * f  # each edge halved, 3 new edges per triangle


@pytest.mark.parametrize("family", rp.FAMILIES)
def test_the_clean_target_holds_the_truth(base, family):
    """The target's first n vertices are the source's vertices under the same deformation as the
    truth (the subdivision keeps them first), and the deformation moves the surface."""
    pair = rp.make_pair(base, family, "clean")
    n = len(base.vertices)
    np.testing.assert_array_equal(pair.target.vertices[:n], pair.truth)
    assert pair.overlap.all()
    assert rp.registration_errors(pair.source.vertices, pair)["rmse"] > 0.005
    np.testing.assert_allclose(rp.registration_errors(pair.truth, pair)["rmse"], 0.0)


def test_articulated_moves_one_part_rigidly(base):
    pair = rp.make_pair(base, "articulated", "clean")
    moved = np.linalg.norm(pair.truth - pair.source.vertices, axis=1) > 1e-12
    assert 0.05 < moved.mean() < 0.5
    part, image = pair.source.vertices[moved], pair.truth[moved]
    dist = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)
    np.testing.assert_allclose(dist(image), dist(part), atol=1e-12)  # rigid


def test_bend_twist_keeps_lengths_along_the_axis(base):
    """The bend maps the principal axis onto an arc of the same length (an isometry there)."""
    field = rp.bend_twist(np.random.default_rng(0), base.vertices)
    centre, axes = rp.principal_frame(base.vertices)
    line = centre + np.linspace(-0.5, 0.5, 201)[:, None] * axes[0]
    image = field(line)
    np.testing.assert_allclose(np.linalg.norm(np.diff(image, axis=0), axis=1).sum(), 1.0, rtol=1e-4)
    assert np.linalg.norm(image[-1] - image[0]) < 0.99  # bent


def test_corruptions(base):
    clean = rp.make_pair(base, "rbf_warp", "clean")
    m = len(clean.target.vertices)
    noise = rp.make_pair(base, "rbf_warp", "noise")
    np.testing.assert_array_equal(noise.truth, clean.truth)  # one deformation per family
    sigma = np.std(noise.target.vertices - clean.target.vertices)
    np.testing.assert_allclose(sigma, rp.NOISE * mean_edge_length(base), rtol=0.05)
    outliers = rp.make_pair(base, "rbf_warp", "outliers")
    assert len(outliers.target.vertices) == m + round(rp.OUTLIERS * m)
    np.testing.assert_array_equal(outliers.target.vertices[:m], clean.target.vertices)
    partial = rp.make_pair(base, "rbf_warp", "partial")
    np.testing.assert_allclose(len(partial.target.vertices) / m, 1 - rp.CUT, atol=0.02)
    assert 0.6 < partial.overlap.mean() < 0.95
    # Overlapping source vertices keep their true position in the target, the others do not.
    d, _ = cKDTree(partial.target.vertices).query(partial.truth)
    assert np.all(d[partial.overlap] == 0) and np.all(d[~partial.overlap] > 0)
    assert partial.target.faces.max() < len(partial.target.vertices)


def test_errors_report_and_bad_input(base):
    pair = rp.make_pair(base, "rbf_warp", "partial")
    diag = np.linalg.norm(pair.truth.max(0) - pair.truth.min(0))
    shifted = pair.truth + np.array([0.0, 0.0, 0.01 * diag])
    errors = rp.registration_errors(shifted, pair)
    np.testing.assert_allclose([errors["rmse"], errors["rmse_overlap"]], [0.01, 0.01])
    with pytest.raises(ValueError, match="family 'twist'"):
        rp.make_pair(base, "twist", "clean")
    with pytest.raises(ValueError, match="corruption 'blur'"):
        rp.make_pair(base, "rbf_warp", "blur")
    with pytest.raises(ValueError, match="needs faces"):
        rp.make_pair(Mesh(base.vertices), "rbf_warp", "clean")
    assert [p.name for p in rp.make_pairs(base)][:2] == ["rbf_warp/clean", "rbf_warp/noise"]
