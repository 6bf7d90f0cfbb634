"""Surface-defect inspection data for unsupervised defect detection (a model trained on
defect-free images only): the Magnetic Tile and MVTec AD folder layouts, a synthetic texture
set generated in code, a train / validation / test split of the defect-free images, and
random training patches.

    data = load_magnetic_tile("../shared/data/images/magnetic-tile-defect", image_size=128)
    train, val, test = split_defect_free(data.labels, val_fraction=0.1, test_fraction=0.2, seed=0)
    x = random_patches(data.images[train], 32, 128, np.random.default_rng(0))  # [128, 32, 32, 1]

Images are float32 [N, S, S, C] in [0, 1], masks bool [N, S, S] (True on defect pixels), labels
int32 [N] (0 = defect-free). Every image is resized to S x S with Pillow's bilinear filter. A mask
is binarised at MASK_THRESHOLD at its own size, then resized by area: a resized mask pixel is a
defect pixel when any defect pixel lies in its footprint (box-filter coverage > 0). This keeps
thin cracks: with a coverage >= 0.5 rule, 62 of 115 Blowhole and 37 of 57 Crack masks of Magnetic
Tile would be empty at 32 x 32. The cost is a border of at most one resized pixel.

A file that cannot be decoded raises ValueError naming it; a file-system error (missing file, no
permission) stays the OSError naming the file; a missing mask is a FileNotFoundError naming the
image and the mask path expected.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from research.datasets.images import open_image

MASK_THRESHOLD = 128  # mask pixels >= this (0..255) are defect


@dataclasses.dataclass(frozen=True)
class InspectionImages:
    """images [N, S, S, C] float32 in [0, 1]; masks [N, S, S] bool (True on defect pixels);
    labels [N] int32 (0 = defect-free, k > 0 = defect class classes[k]);
    classes: tuple[str, ...] with classes[0] the defect-free class ("Free", "good", ...);
    paths: tuple[str, ...] (source file of each image; "" for synthetic)."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    paths: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.images)
        sizes = (len(self.masks), len(self.labels), len(self.paths))
        if sizes != (n, n, n):
            raise ValueError(
                f"InspectionImages: {n} images but {sizes[0]} masks, {sizes[1]} labels and "
                f"{sizes[2]} paths (expected one of each per image)"
            )

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray | Sequence[int]) -> InspectionImages:
        """The images at `indices` (integer indices or a boolean mask [N]), same classes."""
        idx = np.arange(len(self))[np.asarray(indices)]
        return InspectionImages(
            self.images[idx],
            self.masks[idx],
            self.labels[idx],
            self.classes,
            tuple(self.paths[int(i)] for i in idx),
        )

    @staticmethod
    def concatenate(parts: Sequence[InspectionImages]) -> InspectionImages:
        """The parts one after another; all must have the same classes (else ValueError)."""
        if not parts:
            raise ValueError("InspectionImages.concatenate needs at least one part")
        for k, part in enumerate(parts):
            if part.classes != parts[0].classes:
                raise ValueError(
                    f"InspectionImages.concatenate: part {k} has classes {part.classes}, "
                    f"part 0 has {parts[0].classes} (expected the same classes)"
                )
            if part.images.shape[1:] != parts[0].images.shape[1:]:
                raise ValueError(
                    f"InspectionImages.concatenate: part {k} has image shape "
                    f"{part.images.shape[1:]}, part 0 has {parts[0].images.shape[1:]}"
                )
        return InspectionImages(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.masks for p in parts]),
            np.concatenate([p.labels for p in parts]),
            parts[0].classes,
            tuple(path for p in parts for path in p.paths),
        )


def _load(
    items: Sequence[tuple[str, str | None, int]], classes: tuple[str, ...], size: int, channels: int
) -> InspectionImages:
    """(image path, mask path or None for an all-clear mask, label) -> InspectionImages."""
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if size < 1:
        raise ValueError(f"image_size must be >= 1, got {size}")
    n = len(items)
    images = np.empty((n, size, size, channels), np.float32)
    masks = np.zeros((n, size, size), bool)
    for k, (path, mask_path, _) in enumerate(items):
        with open_image(path, "L" if channels == 1 else "RGB") as im:
            image_size = im.size
            resized = np.asarray(im.resize((size, size), Image.BILINEAR), np.float32) / 255.0
            images[k] = resized.reshape(size, size, channels)
        if mask_path is None:
            continue
        if not os.path.isfile(mask_path):
            raise FileNotFoundError(f"{path}: no mask; expected the mask file {mask_path}")
        with open_image(mask_path, "L") as m:
            if m.size != image_size:
                raise ValueError(
                    f"{mask_path}: mask is {m.size[0]}x{m.size[1]} (width x height) but its image "
                    f"{path} is {image_size[0]}x{image_size[1]} (expected the same size)"
                )
            binary = (np.asarray(m) >= MASK_THRESHOLD).astype(np.float32)
        coverage = Image.fromarray(binary, "F").resize((size, size), Image.BOX)
        masks[k] = np.asarray(coverage) > 0
    labels = np.asarray([label for _, _, label in items], np.int32)
    return InspectionImages(images, masks, labels, classes, tuple(p for p, _, _ in items))


def _files(folder: str, extension: str, layout: str) -> list[str]:
    """Sorted names of the `extension` files in `folder` (FileNotFoundError / ValueError)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder {folder} does not exist; expected the layout {layout}")
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(extension))
    if not names:
        raise ValueError(f"{folder} has no {extension} images; expected the layout {layout}")
    return names


def load_magnetic_tile(
    root: str,
    *,
    image_size: int,
    channels: int = 1,
    classes: Sequence[str] = ("Free", "Blowhole", "Break", "Crack"),
) -> InspectionImages:
    """The Magnetic Tile defect set: `root/MT_<Class>/Imgs/<stem>.jpg`, each with the same-size
    grayscale mask `<stem>.png` (0..255, anti-aliased). Only `classes` are loaded; classes[0]
    must be "Free" (label 0), the others get labels 1.. in the given order; files are sorted by
    name within a class. Returns images [N, image_size, image_size, channels] (channels 1:
    grayscale, 3: RGB) and masks [N, image_size, image_size] (see the module docstring)."""
    classes = tuple(classes)
    if not classes or classes[0] != "Free" or len(set(classes)) != len(classes):
        raise ValueError(f"classes must start with 'Free' and have no repeats, got {classes}")
    layout = "<root>/MT_<Class>/Imgs/<name>.jpg with the mask <name>.png"
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Magnetic Tile folder {root} does not exist; expected {layout}")
    items: list[tuple[str, str | None, int]] = []
    for label, name in enumerate(classes):
        folder = os.path.join(root, f"MT_{name}", "Imgs")
        for f in _files(folder, ".jpg", layout):
            stem = os.path.join(folder, f[: -len(".jpg")])
            items.append((stem + f[-4:], stem + ".png", label))
    return _load(items, classes, image_size, channels)


def load_mvtec(
    root: str, category: str, split: str, *, image_size: int, channels: int = 3
) -> InspectionImages:
    """One MVTec AD category. split "train": `root/<category>/train/good/*.png`, all label 0
    with all-clear masks; split "test": `root/<category>/test/<defect>/*.png` with classes
    ("good", *the other defect folder names sorted); a defect image `<name>.png` needs the
    binary mask `root/<category>/ground_truth/<defect>/<name>_mask.png`. The train split gets
    the classes of the test folder when it exists (so the splits concatenate), else ("good",).
    Returns images [N, image_size, image_size, channels] and masks [N, image_size, image_size]."""
    if split not in ("train", "test"):
        raise ValueError(f"MVTec split must be 'train' or 'test', got {split!r}")
    base = os.path.join(root, category)
    layout = "<root>/<category>/{train/good,test/<defect>}/*.png, ground_truth/<defect>/*_mask.png"
    if not os.path.isdir(base):
        raise FileNotFoundError(f"MVTec category folder {base} does not exist; expected {layout}")
    test_dir = os.path.join(base, "test")
    defects: list[str] = []
    if split == "test" or os.path.isdir(test_dir):
        if not os.path.isdir(test_dir):
            raise FileNotFoundError(f"folder {test_dir} does not exist; expected {layout}")
        folders = (e.name for e in os.scandir(test_dir) if e.is_dir())
        defects = sorted(name for name in folders if name != "good")
    classes = ("good", *defects)
    items: list[tuple[str, str | None, int]] = []
    if split == "train":
        folder = os.path.join(base, "train", "good")
        items = [(os.path.join(folder, f), None, 0) for f in _files(folder, ".png", layout)]
    else:
        good = os.path.join(test_dir, "good")
        if os.path.isdir(good):
            items = [(os.path.join(good, f), None, 0) for f in _files(good, ".png", layout)]
        for label, defect in enumerate(defects, start=1):
            folder = os.path.join(test_dir, defect)
            truth = os.path.join(base, "ground_truth", defect)
            for f in _files(folder, ".png", layout):
                mask = os.path.join(truth, f[: -len(".png")] + "_mask.png")
                items.append((os.path.join(folder, f), mask, label))
        if not items:
            raise ValueError(f"{test_dir} has no image folders; expected {layout}")
    return _load(items, classes, image_size, channels)


def _texture(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """[n, size, size] stationary textures in [0.3, 0.7]: three gratings whose orientations and
    periods (5..12 px) are shared by every image (random phases per image), amplitude 0.14 in
    all, plus Gaussian-smoothed noise (sigma 1.5 px) scaled to at most 0.06."""
    theta = rng.uniform(0, np.pi, 3)
    freq = 1.0 / rng.uniform(5.0, 12.0, 3)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    proj = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy  # [3, S, S]
    phase = rng.uniform(0, 2 * np.pi, (n, 3, 1, 1))
    gratings = np.sin(2 * np.pi * freq[:, None, None] * proj + phase).sum(1) * (0.14 / 3)
    k = np.fft.fftfreq(size)
    gain = np.exp(-2 * (np.pi * 1.5) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2))  # Gaussian
    noise = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, size, size))) * gain).real
    noise = np.clip(noise / np.sqrt(np.mean(gain**2)), -2.5, 2.5) * (0.06 / 2.5)
    return np.clip(0.5 + gratings + noise, 0.1, 0.9)


def synthetic_textures(
    num_free: int, num_defective: int, *, image_size: int, seed: int, channels: int = 1
) -> InspectionImages:
    """Synthetic inspection images, a pure function of `seed`: `num_free` defect-free textures
    (label 0) then `num_defective` defective ones alternating "spot" (1) and "scratch" (2).
    classes ("Free", "spot", "scratch"). Textures lie in [0.3, 0.7] (see `_texture`); a defect
    shifts the texture by 0.4 darker or brighter (random per image, clipped to [0, 1]), so every
    defect pixel differs from the texture under it by >= 0.3. spot: a rotated ellipse with semi-
    axes in [2, image_size / 8]; scratch: a segment 1 or 2 px wide, image_size / 4..1/2 long.
    The mask [N, S, S] is exactly the changed region. Images [N, S, S, channels] (3: grey RGB)."""
    if image_size < 8:
        raise ValueError(f"synthetic_textures needs image_size >= 8, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if num_free < 0 or num_defective < 0:
        raise ValueError(f"image counts must be >= 0, got {num_free} and {num_defective}")
    rng = np.random.default_rng(seed)
    n, s = num_free + num_defective, image_size
    x = _texture(n, s, rng)
    masks = np.zeros((n, s, s), bool)
    labels = np.zeros(n, np.int32)
    yy, xx = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    for i in range(num_free, n):
        labels[i] = 1 + (i - num_free) % 2
        if labels[i] == 1:  # spot
            ry, rx = rng.uniform(2.0, max(2.0, s / 8), 2)
            cy, cx = rng.integers(int(np.ceil(max(ry, rx))), s - int(np.ceil(max(ry, rx))), 2)
            a = rng.uniform(0, np.pi)
            u = np.cos(a) * (yy - cy) + np.sin(a) * (xx - cx)
            v = -np.sin(a) * (yy - cy) + np.cos(a) * (xx - cx)
            region = (u / ry) ** 2 + (v / rx) ** 2 <= 1.0
        else:  # scratch: pixels within width / 2 of a segment inside the image
            width = int(rng.integers(1, 3))
            length, angle = rng.uniform(s / 4, s / 2), rng.uniform(0, 2 * np.pi)
            d = length * np.array([np.sin(angle), np.cos(angle)])
            lo, hi = np.ceil(np.maximum(0, -d)), np.floor(np.minimum(s - 2, s - 2 - d))
            # from a pixel centre (width 1) or a pixel corner (width 2): never an empty mask
            p0 = rng.integers(lo, hi + 1) + (width - 1) / 2
            t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / (d @ d), 0, 1)
            region = np.hypot(yy - p0[0] - t * d[0], xx - p0[1] - t * d[1]) <= width / 2
        shift = 0.4 if rng.random() < 0.5 else -0.4
        x[i] = np.where(region, np.clip(x[i] + shift, 0.0, 1.0), x[i])
        masks[i] = region
    images = np.repeat(x[..., None], channels, axis=-1).astype(np.float32)
    return InspectionImages(images, masks, labels, ("Free", "spot", "scratch"), ("",) * n)


def split_defect_free(
    labels: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) indices into `labels` [N]: a permutation of the label-0
    indices seeded by `seed` gives round(n * val_fraction) validation and round(n *
    test_fraction) test images, the rest train (each must be >= 1, else ValueError); the test
    indices also hold every defective index (label > 0). Sorted int64 arrays."""
    labels = np.asarray(labels)
    free = np.flatnonzero(labels == 0)
    n = len(free)
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    if min(n_val, n_test, n - n_val - n_test) < 1:
        raise ValueError(
            f"{n} defect-free images give {n - n_val - n_test} train, {n_val} validation and "
            f"{n_test} test images at val_fraction={val_fraction}, "
            f"test_fraction={test_fraction} (expected >= 1 of each)"
        )
    perm = np.random.default_rng(seed).permutation(free)
    val, test = perm[:n_val], perm[n_val : n_val + n_test]
    test = np.concatenate([test, np.flatnonzero(labels > 0)])
    return tuple(np.sort(a).astype(np.int64) for a in (perm[n_val + n_test :], val, test))


def random_patches(
    images: np.ndarray, patch_size: int, count: int, rng: np.random.Generator, *, flip: bool = True
) -> np.ndarray:
    """[count, p, p, C] float32 patches of images [N, H, W, C]: a random image and top-left
    corner each, and with `flip` a horizontal and a vertical flip each with probability 1/2.
    ValueError when patch_size exceeds H or W."""
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"random_patches needs images [N >= 1, H, W, C], got {images.shape}")
    _, h, w, _ = images.shape
    if not 1 <= patch_size <= min(h, w):
        raise ValueError(f"patch_size {patch_size} does not fit in {h}x{w} images")
    which = rng.integers(0, len(images), count)
    top = rng.integers(0, h - patch_size + 1, count)
    left = rng.integers(0, w - patch_size + 1, count)
    step = np.arange(patch_size)
    rows = top[:, None] + step  # [count, p]
    cols = left[:, None] + step
    if flip:
        rows = np.where(rng.random(count)[:, None] < 0.5, rows[:, ::-1], rows)
        cols = np.where(rng.random(count)[:, None] < 0.5, cols[:, ::-1], cols)
    return images[which[:, None, None], rows[:, :, None], cols[:, None, :]].astype(np.float32)
