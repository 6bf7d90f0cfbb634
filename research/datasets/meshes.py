"""Triangle meshes and point clouds: OBJ / PLY (ASCII and binary) I/O and synthetic surfaces.

Reading and writing go through trimesh with `process=False`, so vertices keep their order and
count (no merging, no removal of unreferenced vertices): registration results are compared
vertex by vertex. A file with vertices but no faces loads as a point cloud (`faces=None`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import trimesh

_FORMATS = (".obj", ".ply")


@dataclasses.dataclass(frozen=True)
class Mesh:
    """vertices: [n, 3] float64; faces: [f, 3] int64 vertex indices, or None for a point cloud."""

    vertices: np.ndarray
    faces: np.ndarray | None = None

    def __post_init__(self):
        v = np.asarray(self.vertices)
        if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] == 0:
            raise ValueError(f"Mesh: vertices must be [n, 3] with n >= 1, got {v.shape}")
        if self.faces is not None:
            f = np.asarray(self.faces)
            if f.ndim != 2 or f.shape[1] != 3:
                raise ValueError(f"Mesh: faces must be [f, 3] triangles, got {f.shape}")
            if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
                raise ValueError(
                    f"Mesh: face indices span [{f.min()}, {f.max()}], outside [0, {v.shape[0]})"
                )

    @property
    def is_point_cloud(self) -> bool:
        return self.faces is None or len(self.faces) == 0

    def edges(self) -> np.ndarray:
        """[e, 2] int64 unique undirected edges (i < j) of the faces; empty for a point cloud."""
        if self.is_point_cloud:
            return np.zeros((0, 2), np.int64)
        f = np.asarray(self.faces, np.int64)
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        e.sort(axis=1)
        return np.unique(e, axis=0)


def boundary_directions(mesh: Mesh) -> np.ndarray:
    """[n, 3]: at each boundary vertex (on an edge that only one face uses: the rim of a hole or
    a cut) the unit direction out of the surface across its rim, zero elsewhere. Each boundary
    edge (a, b) of face (a, b, k) contributes the unit vector in the face's plane perpendicular
    to ab, pointing away from k; a vertex sums its boundary edges' and normalises (a zero sum,
    a rim folded back on itself, stays zero)."""
    if mesh.is_point_cloud:
        raise ValueError("boundary_directions: the mesh has no faces (a point cloud has no rim)")
    v, f = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
    corners = np.concatenate([f, np.roll(f, -1, 1), np.roll(f, -2, 1)])  # (a, b, k) per edge
    key = np.sort(corners[:, :2], axis=1)
    _, inverse, uses = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    a, b, k = corners[uses[inverse.ravel()] == 1].T
    along = v[b] - v[a]
    along /= np.maximum(np.linalg.norm(along, axis=1, keepdims=True), 1e-300)
    inward = v[k] - v[a]
    inward -= np.sum(inward * along, 1, keepdims=True) * along
    out = -inward / np.maximum(np.linalg.norm(inward, axis=1, keepdims=True), 1e-300)
    total = np.zeros_like(v)
    np.add.at(total, a, out)
    np.add.at(total, b, out)
    norm = np.linalg.norm(total, axis=1, keepdims=True)
    return np.where(norm > 1e-12, total / np.maximum(norm, 1e-300), 0.0)


def mean_edge_length(mesh: Mesh, vertices: np.ndarray | None = None) -> float:
    """Mean length of the mesh's unique edges (vertices default to the mesh's)."""
    v = mesh.vertices if vertices is None else vertices
    e = mesh.edges()
    if len(e) == 0:
        raise ValueError("mean_edge_length: the mesh has no faces (a point cloud has no edges)")
    return float(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1).mean())


def vertex_normals(mesh: Mesh, *, neighbours: int = 10) -> np.ndarray:
    """[n, 3] unit vertex normals: area-weighted face normals of a mesh; for a point cloud (or a
    mesh vertex that no face touches) the smallest principal axis of its `neighbours` nearest
    points. Orientation is arbitrary for point clouds (point-to-plane residuals do not care)."""
    v = np.asarray(mesh.vertices, np.float64)
    normals = np.zeros_like(v)
    if not mesh.is_point_cloud:
        f = np.asarray(mesh.faces, np.int64)
        area_normal = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # 2 x area
        for corner in range(3):
            np.add.at(normals, f[:, corner], area_normal)
    length = np.linalg.norm(normals, axis=1)
    missing = np.flatnonzero(length == 0)
    if missing.size:
        from scipy.spatial import cKDTree

        k = min(neighbours, v.shape[0])
        if k < 3:
            raise ValueError(f"vertex_normals: need >= 3 points for a normal, got {v.shape[0]}")
        _, idx = cKDTree(v).query(v[missing], k=k)
        local = v[idx] - v[idx].mean(1, keepdims=True)  # [m, k, 3]
        _, eigvec = np.linalg.eigh(np.einsum("mki,mkj->mij", local, local))
        normals[missing] = eigvec[:, :, 0]  # eigenvalues ascending
        length[missing] = 1.0
    return normals / length[:, None]


def _check_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FORMATS:
        raise ValueError(f"{path}: unsupported mesh format {ext!r}; expected one of {_FORMATS}")
    return ext


def load_mesh(path: str) -> Mesh:
    """Reads an OBJ or PLY (ASCII or binary) triangle mesh or point cloud, vertex order kept.

    Every problem with the file (missing, empty, unparsable, no vertices, NaN or infinite
    coordinates, face indices out of range) raises an error naming `path` and what was expected.
    """
    ext = _check_format(path)
    expected = f"expected a triangle mesh or point cloud in {ext[1:].upper()} format"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: mesh file not found")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file; {expected}")
    try:
        loaded = trimesh.load(path, process=False, maintain_order=True, force=None)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: cannot parse as {ext[1:].upper()} ({err}); {expected}") from err
    if isinstance(loaded, trimesh.Scene):
        geoms = list(loaded.geometry.values())
        if not geoms:
            raise ValueError(f"{path}: no vertices found; {expected}")
        if len(geoms) != 1:
            raise ValueError(f"{path}: expected one mesh or point cloud, found {len(geoms)}")
        loaded = geoms[0]
    vertices = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), np.float64)
    if vertices.ndim != 2 or vertices.shape[0] == 0:
        raise ValueError(f"{path}: no vertices found; {expected}")
    bad = np.flatnonzero(~np.isfinite(vertices).all(axis=1))
    if bad.size:
        raise ValueError(
            f"{path}: {bad.size} of {len(vertices)} vertices hold NaN or infinite coordinates "
            f"(first: vertex {bad[0]} = {vertices[bad[0]].tolist()}, 0-based); expected finite "
            "x y z"
        )
    faces = getattr(loaded, "faces", None)
    faces = None if faces is None or len(faces) == 0 else np.asarray(faces, np.int64)
    try:
        return Mesh(vertices, faces)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def save_mesh(path: str, mesh: Mesh, *, binary: bool = False) -> str:
    """Writes `mesh` as OBJ (always ASCII) or PLY (`binary` selects binary little-endian)."""
    ext = _check_format(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if mesh.is_point_cloud:
        geom = trimesh.PointCloud(np.asarray(mesh.vertices, np.float64))
    else:
        geom = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    if ext == ".ply":
        data = trimesh.exchange.ply.export_ply(geom, encoding="binary" if binary else "ascii")
    else:
        if binary:
            raise ValueError(f"{path}: OBJ is a text format; binary=True applies to PLY only")
        # Full precision (trimesh's default of 8 digits would round the vertices).
        data = trimesh.exchange.obj.export_obj(geom, digits=17, include_normals=False)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(path, mode) as f:
        f.write(data)
    return path


# ----------------------------------------------------------------------------------------------
# Synthetic surfaces.


def grid_surface(n: int = 24, *, size: float = 1.0, bump: float = 0.15) -> Mesh:
    """A bumpy height-field square: (n + 1)^2 vertices, 2 n^2 triangles, regular edges."""
    if n < 2:
        raise ValueError(f"grid_surface: n={n} must be >= 2")
    s = np.linspace(0.0, size, n + 1)
    x, y = np.meshgrid(s, s, indexing="ij")
    z = bump * size * np.sin(2.0 * np.pi * x / size) * np.cos(np.pi * y / size)
    vertices = np.stack([x, y, z], -1).reshape(-1, 3)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate(
        [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)]
    )
    return Mesh(vertices, faces)


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """[3, 3] rotation by `angle` about the unit `axis` [3] (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def smooth_deformation(
    rng: np.random.Generator,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    amplitude: float,
    num_waves: int = 4,
):
    """A random smooth deformation of the box [lo, hi] (3-vectors): a small random rotation plus
    `num_waves` low-frequency sine displacement fields, of size `amplitude` x the box diagonal.
    Returns f: points [k, 3] -> deformed points [k, 3] (the same field for any points, so a
    source and a denser target can share it)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    diag = max(float(np.linalg.norm(hi - lo)), 1e-12)
    freqs = rng.normal(size=(num_waves, 3)) * 1.5
    phases = rng.uniform(0, 2 * np.pi, size=num_waves)
    dirs = rng.normal(size=(num_waves, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    angle = rng.normal() * 0.1
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    rot = rotation_matrix(axis, angle)
    centre = (lo + hi) / 2

    def field(points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, np.float64)
        u = (pts - lo) / diag
        disp = np.sin(u @ freqs.T * np.pi + phases) @ dirs * (amplitude * diag / num_waves)
        return (pts - centre) @ rot.T + centre + disp

    return field
