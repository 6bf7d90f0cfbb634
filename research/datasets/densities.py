"""Densities for normalizing flows: 2D toy densities, image densities, tabular benchmarks.

- 2D densities generated in code (FFJORD's toy set): checkerboard, 8gaussians, pinwheel,
  2spirals, rings, moons; and `gaussian`, the correlated Gaussian N(0, [[7, 5], [5, 7]]) of the
  official JKO-iFlow config, with a closed-form density (`gaussian_logpdf`).
- Image densities (JKO-iFlow's rose and tree): a pixel is drawn with probability proportional to
  (max grey - grey), so dark strokes are dense, mapped to [-4, 4]^2 (x from the column, y from the
  row, upright) and jittered with Gaussian noise of std (8 / (2 w), 8 / (2 h)).
- Tabular benchmarks (POWER, GAS, MINIBOONE, BSDS300) as preprocessed `.npy` splits:
  `<dir>/<name>/{train,val,test}.npy`, float arrays [N, d].

Every sampler is `(num, rng: np.random.Generator) -> float32 [num, 2]`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

Sampler = Callable[[int, np.random.Generator], np.ndarray]

GAUSSIAN_COV = np.array([[7.0, 5.0], [5.0, 7.0]])
TABULAR_DIMS = {"power": 6, "gas": 8, "miniboone": 43, "bsds300": 63}
IMAGE_DENSITIES = ("rose", "tree")
TOY_DENSITIES = ("checkerboard", "8gaussians", "pinwheel", "2spirals", "rings", "moons", "gaussian")


def checkerboard(num: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on the dark squares of a 4 x 4 checkerboard on [-4, 4]^2."""
    x1 = rng.random(num) * 4 - 2
    x2 = rng.random(num) - rng.integers(0, 2, num) * 2 + np.floor(x1) % 2
    return (np.stack([x1, x2], 1) * 2).astype(np.float32)


def eight_gaussians(num: int, rng: np.random.Generator) -> np.ndarray:
    """Eight Gaussians (std 0.5 / 1.414) on a circle of radius 4 / 1.414."""
    s = 1 / math.sqrt(2)
    centers = 4 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
    points = rng.normal(size=(num, 2)) * 0.5 + centers[rng.integers(0, 8, num)]
    return (points / 1.414).astype(np.float32)


def pinwheel(num: int, rng: np.random.Generator) -> np.ndarray:
    """Five curved arms (radial std 0.3, tangential std 0.1, rate 0.25), scaled by 2."""
    num_classes, rate = 5, 0.25
    rads = np.linspace(0, 2 * np.pi, num_classes, endpoint=False)
    features = rng.normal(size=(num, 2)) * np.array([0.3, 0.1])
    features[:, 0] += 1.0
    labels = rng.integers(0, num_classes, num)
    angles = rads[labels] + rate * np.exp(features[:, 0])
    rot = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], 1)
    rot = rot.reshape(num, 2, 2)
    return (2 * np.einsum("ti,tij->tj", features, rot)).astype(np.float32)


def two_spirals(num: int, rng: np.random.Generator) -> np.ndarray:
    """Two interleaved spirals (FFJORD's `2spirals`)."""
    half = num // 2
    n = np.sqrt(rng.random((num - half, 1))) * 540 * (2 * np.pi) / 360
    d1 = np.concatenate([-np.cos(n) * n, np.sin(n) * n], 1) + rng.random((num - half, 2)) * 0.5
    x = np.concatenate([d1, -d1[:half]], 0) / 3
    x = x + rng.normal(size=x.shape) * 0.1
    return rng.permutation(x).astype(np.float32)


def rings(num: int, rng: np.random.Generator) -> np.ndarray:
    """Four concentric rings of radii 3, 2.25, 1.5, 0.75 with Gaussian noise of std 0.08."""
    radius = np.array([1.0, 0.75, 0.5, 0.25])[rng.integers(0, 4, num)] * 3.0
    angle = rng.random(num) * 2 * np.pi
    x = np.stack([np.cos(angle), np.sin(angle)], 1) * radius[:, None]
    return (x + rng.normal(size=x.shape) * 0.08).astype(np.float32)


def moons(num: int, rng: np.random.Generator) -> np.ndarray:
    """Two interleaving half circles with noise 0.1, scaled by 2 and shifted by (-1, -0.2).

    As FFJORD's `moons` (sklearn's make_moons), with uniformly random angles instead of
    sklearn's evenly spaced ones, so that it is a density rather than a grid.
    """
    angle = rng.random(num) * np.pi
    upper = rng.random(num) < 0.5
    x = np.where(upper, np.cos(angle), 1 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    pts = np.stack([x, y], 1) + rng.normal(size=(num, 2)) * 0.1
    return (pts * 2 + np.array([-1.0, -0.2])).astype(np.float32)


def correlated_gaussian(num: int, rng: np.random.Generator) -> np.ndarray:
    """N(0, [[7, 5], [5, 7]]), the official code's 2D Gaussian config."""
    return rng.multivariate_normal(np.zeros(2), GAUSSIAN_COV, size=num).astype(np.float32)


def gaussian_logpdf(x: np.ndarray, cov: np.ndarray = GAUSSIAN_COV) -> np.ndarray:
    """log N(x; 0, cov) per row: x [N, d] -> float64 [N]."""
    x = np.asarray(x, np.float64)
    d = x.shape[-1]
    prec = np.linalg.inv(cov)
    _, logdet = np.linalg.slogdet(cov)
    quad = np.einsum("ni,ij,nj->n", x, prec, x)
    return -0.5 * (quad + logdet + d * math.log(2 * math.pi))


def gaussian_entropy(cov: np.ndarray = GAUSSIAN_COV) -> float:
    """Differential entropy (= expected NLL) of N(0, cov): 4.4269 nats for the default."""
    d = cov.shape[0]
    return float(0.5 * (d * (1 + math.log(2 * math.pi)) + np.linalg.slogdet(cov)[1]))


TOY_SAMPLERS: dict[str, Sampler] = {
    "checkerboard": checkerboard,
    "8gaussians": eight_gaussians,
    "pinwheel": pinwheel,
    "2spirals": two_spirals,
    "rings": rings,
    "moons": moons,
    "gaussian": correlated_gaussian,
}


def read_grey_image(path: str) -> np.ndarray:
    """The image at `path` as float64 grey levels [h, w] (row 0 = top). Errors name the path."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.exists(path):
        raise FileNotFoundError(f"image density file {path} does not exist")
    try:
        with Image.open(path) as img:
            if img.mode == "F":  # float pixels: convert("L") would turn a NaN into 0 (black)
                _check_finite(path, np.asarray(img), "pixel values")
            grey = np.asarray(img.convert("L"), np.float64)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read {path} as an image: {err}") from err
    if grey.ndim != 2 or min(grey.shape) < 2:
        raise ValueError(f"{path}: expected a 2D image of at least 2 x 2 pixels, got {grey.shape}")
    _check_finite(path, grey, "grey levels")
    return grey


def _check_finite(path: str, values: np.ndarray, what: str) -> None:
    """ValueError naming `path`, the count of NaN / infinite entries and the first one's index."""
    if not np.issubdtype(values.dtype, np.floating):
        return
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{path}: {int(np.isnan(values).sum())} NaN and {int(np.isinf(values).sum())} "
            f"infinite {what} (first at index {first}); expected finite numbers"
        )


def image_sampler(grey: np.ndarray) -> Sampler:
    """A sampler for the density of a grey image [h, w] (row 0 = top), as the official code.

    Pixel (row r, column c) has weight `max(grey) - grey[r, c]`; it maps to
    x = -4 + 8 c / (w - 1), y = 4 - 8 r / (h - 1) (upright), plus N(0, diag(8/(2w), 8/(2h))^2).
    """
    h, w = grey.shape
    if not np.all(np.isfinite(grey)):
        raise ValueError("image density: the grey levels hold NaN or infinite values")
    weight = (grey.max() - grey)[::-1].reshape(-1)  # flip rows: row 0 of `weight` is the bottom
    if weight.sum() <= 0:
        raise ValueError("image density: the image is uniform, every pixel has weight zero")
    probs = weight / weight.sum()
    xx, yy = np.meshgrid(np.linspace(-4, 4, w), np.linspace(-4, 4, h))
    means = np.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    std = np.array([8 / w / 2, 8 / h / 2])

    def sample(num: int, rng: np.random.Generator) -> np.ndarray:
        idx = rng.choice(len(probs), size=num, p=probs)
        return (means[idx] + rng.normal(size=(num, 2)) * std).astype(np.float32)

    return sample


def load_image_density(data_dir: str, name: str) -> Sampler:
    """The sampler of `<data_dir>/<name>.png` (e.g. rose, tree). Errors name the file."""
    path = os.path.join(data_dir, f"{name}.png")
    grey = read_grey_image(path)
    try:
        return image_sampler(grey)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def get_sampler(name: str, data_dir: str | None = None) -> Sampler:
    """Sampler of a 2D density: one of TOY_DENSITIES, or the image `<data_dir>/<name>.png`."""
    if name in TOY_SAMPLERS:
        return TOY_SAMPLERS[name]
    if name in IMAGE_DENSITIES or (
        data_dir and os.path.exists(os.path.join(data_dir, f"{name}.png"))
    ):
        if not data_dir:
            raise ValueError(f"density {name!r} is an image density and needs a data_dir")
        return load_image_density(data_dir, name)
    known = ", ".join(TOY_DENSITIES + IMAGE_DENSITIES)
    raise ValueError(f"unknown 2D density {name!r}; known: {known}")


def load_tabular(data_dir: str, name: str) -> dict[str, np.ndarray]:
    """The preprocessed splits of a tabular benchmark: {"train", "val", "test"} -> float32 [N, d].

    Reads `<data_dir>/<name>/{train,val,test}.npy` (no pickles). `name` is one of TABULAR_DIMS
    (the expected d is checked) or any other folder name (d taken from the train split).
    Raises FileNotFoundError / ValueError naming the file for a missing or malformed split.
    """
    folder = os.path.join(data_dir, name)
    expected_d = TABULAR_DIMS.get(name.lower())
    splits = {}
    for split in ("train", "val", "test"):
        path = os.path.join(folder, f"{split}.npy")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"tabular split {path} does not exist (expected {folder}/{{train,val,test}}.npy)"
            )
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path} is not a readable .npy array: {err}") from err
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(
                f"{path}: expected a numeric array [N, d], got {arr.dtype} {arr.shape}"
            )
        d = expected_d or splits.get("train", arr).shape[1]
        if arr.shape[1] != d or arr.shape[0] == 0:
            raise ValueError(f"{path}: expected shape [N > 0, {d}] for {name}, got {arr.shape}")
        _check_finite(path, arr, "values")
        splits[split] = arr.astype(np.float32)
    return splits
