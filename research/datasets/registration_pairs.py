"""Non-rigid registration pairs with ground-truth correspondence, generated from any base mesh.

A pair is (source, target, truth): the source is the base mesh; the target samples a deformed
copy of it (the source subdivided once at its edge midpoints, so the target is twice as fine and
not vertex-for-vertex the source), then corrupted; truth [n, 3] is where each source vertex goes
under the same deformation. Three deformation families, each a map of points that the source and
its subdivision share:

- `rbf_warp`: a smooth warp, the sum of Gaussian bumps (width `RBF_WIDTH` x the diagonal) at
  random vertices with random displacements, plus a small random rotation;
- `bend_twist`: the mesh's principal axis bent into a circular arc (total angle `BEND`) and
  twisted about itself (total angle `TWIST`);
- `articulated`: a rigid part motion, the vertices beyond a cut across the principal axis (the
  last `PART` fraction along it) rotated by `JOINT_ANGLE` about a joint axis through the cut:
  most of the surface does not move.

and four corruptions of the target: `clean`; `noise` (Gaussian, sigma `NOISE` x the source's
mean edge length per coordinate); `outliers` (`OUTLIERS` x the target's vertex count extra points
uniform in its bounding box enlarged 10%, in no face); `partial` (the target's `CUT` fraction
farthest along the source's second principal axis, at a random end, cut away with their faces,
so the cut takes a side of the surface rather than one end of it; source vertices whose true
position lies in the cut-away part are outside the overlap).

`registration_errors` reports the RMSE over all source vertices and over the overlapping ones,
both over the bounding-box diagonal of the truth.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from research.datasets.meshes import Mesh, mean_edge_length, rotation_matrix

FAMILIES = ("rbf_warp", "bend_twist", "articulated")
CORRUPTIONS = ("clean", "noise", "outliers", "partial")

RBF_BUMPS = 6  # Gaussian bumps of the smooth warp
RBF_WIDTH = 0.25  # their width / bounding-box diagonal
RBF_AMPLITUDE = 0.04  # their displacement / diagonal
RBF_ROTATION = 0.1  # radians, standard deviation of the warp's rotation angle
BEND = np.pi / 4  # total bend angle along the principal axis
TWIST = np.pi / 6  # total twist angle about it
PART = 0.2  # fraction of the principal axis's extent that moves in the articulated family
JOINT_ANGLE = np.pi / 6  # rotation of the articulated part
NOISE = 0.3  # sigma / the source's mean edge length
OUTLIERS = 0.2  # extra points / target vertices
CUT = 0.2  # fraction of the target's vertices cut away


@dataclasses.dataclass(frozen=True)
class RegistrationPair:
    """name: "<family>/<corruption>"; source: Mesh [n]; target: Mesh (faces kept where the
    corruption leaves them); truth: [n, 3] the source vertices' true positions; overlap: [n] bool,
    source vertices whose true position the target still covers (all but `partial`'s cut)."""

    name: str
    source: Mesh
    target: Mesh
    truth: np.ndarray
    overlap: np.ndarray


def subdivide(mesh: Mesh) -> Mesh:
    """One midpoint subdivision: every triangle into four, new vertices at the edge midpoints
    (appended after the originals, which keep their indices)."""
    if mesh.is_point_cloud:
        raise ValueError("subdivide: the mesh has no faces")
    v, f = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
    n = v.shape[0]
    edges = mesh.edges()  # [e, 2], i < j, sorted
    mid = n + np.arange(len(edges))
    key = edges[:, 0] * n + edges[:, 1]

    def midpoint(a, b):
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        return mid[np.searchsorted(key, lo * n + hi)]

    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
    faces = np.concatenate(
        [np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))]
    )
    return Mesh(np.concatenate([v, (v[edges[:, 0]] + v[edges[:, 1]]) / 2]), faces)


def principal_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre [3], axes [3, 3]): the centroid and the principal axes as rows, by decreasing
    extent (right-handed)."""
    p = np.asarray(points, np.float64)
    centre = p.mean(0)
    _, _, vt = np.linalg.svd(p - centre, full_matrices=False)
    if np.linalg.det(vt) < 0:
        vt[2] *= -1
    return centre, vt


def rbf_warp(rng: np.random.Generator, base: np.ndarray):
    """The smooth-warp family for base vertices [n, 3]: returns f: points [k, 3] -> [k, 3]."""
    diag = float(np.linalg.norm(base.max(0) - base.min(0)))
    centres = base[rng.choice(len(base), RBF_BUMPS, replace=False)]
    disp = rng.normal(size=(RBF_BUMPS, 3))
    disp *= RBF_AMPLITUDE * diag / np.linalg.norm(disp, axis=1, keepdims=True)
    axis = rng.normal(size=3)
    rot = rotation_matrix(axis / np.linalg.norm(axis), rng.normal() * RBF_ROTATION)
    centre = base.mean(0)
    width2 = 2 * (RBF_WIDTH * diag) ** 2

    def field(points):
        p = np.asarray(points, np.float64)
        bumps = np.exp(-np.sum((p[:, None] - centres[None]) ** 2, -1) / width2)  # [k, bumps]
        return (p - centre) @ rot.T + centre + bumps @ disp

    return field


def bend_twist(rng: np.random.Generator, base: np.ndarray):
    """The bend-and-twist family: the principal axis u bent towards the second axis v into an
    arc of total angle BEND, and the cross-sections twisted about u by up to TWIST (signs
    random). Returns f: points [k, 3] -> [k, 3]."""
    centre, (u, v, w) = principal_frame(base)
    s0 = (base - centre) @ u
    length = float(s0.max() - s0.min())
    bend = BEND * rng.choice([-1.0, 1.0])
    twist = TWIST * rng.choice([-1.0, 1.0])
    radius = length / bend  # of the bent axis

    def field(points):
        q = np.asarray(points, np.float64) - centre
        s, h, z = q @ u, q @ v, q @ w
        tau = twist * s / length  # twist: rotate (h, z) about u
        h, z = h * np.cos(tau) - z * np.sin(tau), h * np.sin(tau) + z * np.cos(tau)
        theta = s / radius  # bend: the line h = 0 onto the arc of this radius
        s_new = (radius - h) * np.sin(theta)
        h_new = radius - (radius - h) * np.cos(theta)
        return centre + s_new[:, None] * u + h_new[:, None] * v + z[:, None] * w

    return field


def articulated(rng: np.random.Generator, base: np.ndarray):
    """The articulated family: the part of the mesh beyond a cut across the principal axis u
    (the last PART of its extent, at a random end) rotated rigidly by JOINT_ANGLE about an axis
    perpendicular to u through the centre of the cut. Returns f: points [k, 3] -> [k, 3]."""
    centre, (u, v, w) = principal_frame(base)
    u = u * rng.choice([-1.0, 1.0])
    s0 = (base - centre) @ u
    cut = s0.max() - PART * (s0.max() - s0.min())
    near = np.abs(s0 - cut) <= 0.05 * (s0.max() - s0.min())
    joint = base[near].mean(0) if near.any() else centre + cut * u
    joint = joint - ((joint - centre) @ u - cut) * u  # on the cut plane
    phi = rng.uniform(0, 2 * np.pi)
    axis = np.cos(phi) * v + np.sin(phi) * w
    rot = rotation_matrix(axis, JOINT_ANGLE * rng.choice([-1.0, 1.0]))

    def field(points):
        p = np.asarray(points, np.float64)
        moving = (p - centre) @ u > cut
        out = p.copy()
        out[moving] = (p[moving] - joint) @ rot.T + joint
        return out

    return field


_FIELDS = {"rbf_warp": rbf_warp, "bend_twist": bend_twist, "articulated": articulated}


def make_pair(base: Mesh, family: str, corruption: str, *, seed: int = 0) -> RegistrationPair:
    """The pair of `family` x `corruption` on `base` (a triangle mesh, the source). The
    deformation depends on (seed, family) only, so the corruptions of one family share it."""
    if family not in _FIELDS:
        raise ValueError(f"make_pair: family {family!r}, expected one of {FAMILIES}")
    if corruption not in CORRUPTIONS:
        raise ValueError(f"make_pair: corruption {corruption!r}, expected one of {CORRUPTIONS}")
    if base.is_point_cloud:
        raise ValueError("make_pair: the base mesh needs faces (the target subdivides them)")
    source = Mesh(np.asarray(base.vertices, np.float64), np.asarray(base.faces, np.int64))
    field = _FIELDS[family](np.random.default_rng([seed, FAMILIES.index(family)]), source.vertices)
    fine = subdivide(source)
    truth = field(source.vertices)
    points = field(fine.vertices)
    faces = fine.faces
    overlap = np.ones(len(truth), bool)
    rng = np.random.default_rng([seed, FAMILIES.index(family), 1 + CORRUPTIONS.index(corruption)])
    if corruption == "noise":
        points = points + rng.normal(size=points.shape) * NOISE * mean_edge_length(source)
    elif corruption == "outliers":
        lo, hi = points.min(0), points.max(0)
        pad = 0.1 * (hi - lo)
        extra = rng.uniform(lo - pad, hi + pad, size=(int(round(OUTLIERS * len(points))), 3))
        points = np.concatenate([points, extra])
    elif corruption == "partial":  # across the second principal axis: a side, not an end
        direction = principal_frame(source.vertices)[1][1] * rng.choice([-1.0, 1.0])
        threshold = np.quantile(points @ direction, 1.0 - CUT)
        keep = points @ direction <= threshold
        new_index = np.cumsum(keep) - 1
        faces = new_index[faces[keep[faces].all(1)]]
        points = points[keep]
        overlap = truth @ direction <= threshold
    return RegistrationPair(f"{family}/{corruption}", source, Mesh(points, faces), truth, overlap)


def make_pairs(base: Mesh, *, seed: int = 0) -> list[RegistrationPair]:
    """Every family x corruption on `base` (12 pairs)."""
    return [make_pair(base, f, c, seed=seed) for f in FAMILIES for c in CORRUPTIONS]


def rmse(deformed: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root mean squared vertex error of deformed [n, 3] against truth [n, 3] (over the vertices
    of the bool `mask` [n], default all), divided by the truth's bounding-box diagonal."""
    diag = float(np.linalg.norm(truth.max(0) - truth.min(0)))
    sq = np.sum((np.asarray(deformed, np.float64) - truth) ** 2, -1)
    return float(np.sqrt(sq[mask].mean() if mask is not None else sq.mean()) / diag)


def registration_errors(deformed: np.ndarray, pair: RegistrationPair) -> dict[str, float]:
    """{rmse, rmse_overlap}: `rmse` over all source vertices and over the overlapping ones."""
    return {
        "rmse": rmse(deformed, pair.truth),
        "rmse_overlap": rmse(deformed, pair.truth, pair.overlap),
    }
