"""Mesh I/O round trips (OBJ, PLY ascii and binary; meshes and point clouds) and errors."""

import re

import numpy as np
import pytest

from research.datasets.meshes import (
    Mesh,
    boundary_directions,
    grid_surface,
    load_mesh,
    save_mesh,
    smooth_deformation,
    vertex_normals,
)


@pytest.mark.parametrize(
    "name,binary,atol", [("m.obj", False, 1e-15), ("m.ply", False, 1e-6), ("m.ply", True, 1e-6)]
)
@pytest.mark.parametrize("cloud", [False, True])
def test_round_trip(tmp_path, name, binary, atol, cloud):
    mesh = grid_surface(5)
    rng = np.random.default_rng(0)
    vertices = mesh.vertices + rng.normal(size=mesh.vertices.shape) * 0.01
    mesh = Mesh(vertices[::-1].copy(), None if cloud else mesh.faces[:, ::-1].copy())
    path = save_mesh(str(tmp_path / name), mesh, binary=binary)
    back = load_mesh(path)
    # PLY stores float32 vertices (trimesh's writer); OBJ keeps 17 digits.
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=atol * 4, rtol=atol)
    if cloud:
        assert back.faces is None
    else:
        np.testing.assert_array_equal(back.faces, mesh.faces)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.obj"):
        load_mesh(str(tmp_path / "nope.obj"))
    with pytest.raises(ValueError, match=r"m\.stl.*unsupported"):
        load_mesh(str(tmp_path / "m.stl"))
    bad = tmp_path / "bad.ply"
    bad.write_text("ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2\n")
    with pytest.raises(ValueError, match="bad.ply"):
        load_mesh(str(bad))
    with pytest.raises(ValueError, match="binary"):
        save_mesh(str(tmp_path / "x.obj"), grid_surface(2), binary=True)
    with pytest.raises(ValueError, match="outside"):
        Mesh(np.zeros((3, 3)), np.array([[0, 1, 3]]))


def test_smooth_deformation_is_a_shared_field():
    rng = np.random.default_rng(0)
    coarse, fine = grid_surface(4), grid_surface(8)
    field = smooth_deformation(rng, coarse.vertices.min(0), coarse.vertices.max(0), amplitude=0.1)
    # Coarse vertices are fine vertices (every other one): the same field moves them alike.
    idx = np.arange(81).reshape(9, 9)[::2, ::2].ravel()
    np.testing.assert_allclose(field(coarse.vertices), field(fine.vertices)[idx], atol=1e-12)
    assert np.abs(field(coarse.vertices) - coarse.vertices).max() > 1e-3


def test_vertex_normals_of_a_mesh_and_a_point_cloud():
    """Unit normals of z = f(x, y) are +-(-f_x, -f_y, 1) / |.|: area-weighted face normals of the
    mesh, and principal axes of neighbourhoods for the same vertices as a point cloud."""
    n, bump = 40, 0.05
    mesh = grid_surface(n, bump=bump)
    x, y = mesh.vertices[:, 0], mesh.vertices[:, 1]
    fx = bump * 2 * np.pi * np.cos(2 * np.pi * x) * np.cos(np.pi * y)
    fy = -bump * np.pi * np.sin(2 * np.pi * x) * np.sin(np.pi * y)
    exact = np.stack([-fx, -fy, np.ones_like(x)], 1)
    exact /= np.linalg.norm(exact, axis=1, keepdims=True)
    interior = (x > 0.05) & (x < 0.95) & (y > 0.05) & (y < 0.95)
    for surface in (mesh, Mesh(mesh.vertices)):
        normals = vertex_normals(surface)
        np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, rtol=1e-12)
        cosine = np.abs(np.sum(normals * exact, 1))[interior]
        assert cosine.min() > 0.995, cosine.min()
    with pytest.raises(ValueError, match=">= 3 points"):
        vertex_normals(Mesh(np.zeros((2, 3))))


@pytest.mark.parametrize(
    "name,text,expected",
    [
        (
            "nan.obj",
            "v 0 0 0\nv 1 0 0\nv 0 1 nan\nf 1 2 3\n",
            r"1 of 3 vertices .*NaN or inf.*vertex 2",
        ),
        (
            "inf.ply",
            "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
            "property float z\nend_header\n0 0 0\n1 inf 0\n0 1 0\n",
            r"1 of 3 vertices .*NaN or inf.*vertex 1",
        ),
        ("empty.obj", "", r"empty file; expected"),
        ("empty.ply", "", r"empty file; expected"),
        ("words.obj", "hello world\n", r"no vertices found; expected"),
        ("range.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 5\n", r"cannot parse as OBJ.*expected"),
        (
            "range.ply",
            "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
            "property float z\nelement face 1\nproperty list uchar int vertex_indices\n"
            "end_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
            r"face indices span \[0, 7\], outside \[0, 3\)",
        ),
    ],
)
def test_bad_files_name_the_file_and_what_was_expected(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": .*" + expected):
        load_mesh(str(path))


def test_a_truncated_binary_ply_names_the_file(tmp_path):
    path = save_mesh(str(tmp_path / "m.ply"), grid_surface(4), binary=True)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(path) + r": cannot parse as PLY"):
        load_mesh(path)


def test_boundary_directions_by_hand():
    """The unit square as two triangles plus a vertex in no face: the four corners are on the
    rim, each pointing out along the sum of its two rim edges' outward normals (the diagonal is
    shared by both faces); the loose vertex is not on any rim. A point cloud has no rim."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 1]], np.float64)
    square = Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]))
    expected = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0], [0, 0, 0]]) / np.sqrt(2)
    np.testing.assert_allclose(boundary_directions(square), expected, atol=1e-12)
    closed = Mesh(v[:4], np.array([[0, 1, 2], [0, 2, 3], [0, 2, 1], [0, 3, 2]]))
    np.testing.assert_array_equal(boundary_directions(closed), 0.0)  # every edge in two faces
    with pytest.raises(ValueError, match="point cloud"):
        boundary_directions(Mesh(v))
