"""The image sets a diffusion model trains on, as float32 [N, H, W, C] in [-1, 1].

    data = load_images(DataOptions(source="mnist", data_dir="../shared/data/images/mnist"))
    data.train_x   # [60000, 28, 28, 1] in [-1, 1]; data.train_y [60000] int32

Sources: "digits" (scikit-learn's bundled 8x8 digits, upsampled; offline, no files), "mnist"
(the four IDX files), "cifar10" (an ImageFolder `train/<class>/*.jpg` + `test/...`, or the
original python batches `data_batch_1..5` / `test_batch`, or the `cifar-10-python.tar.gz`
archive; told apart by what `data_dir` holds).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from research.datasets import images
from research.datasets.paths import resolve_data_dir

SOURCES = ("digits", "mnist", "cifar10")


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """source: one of SOURCES; data_dir: its folder (empty for digits); image_size: side of the
    images (0: the source's own, 28 for MNIST, 32 for CIFAR-10; digits: 8 upsampled to it,
    default 16); max_train: keep the first this many training images (0: all); random_flip:
    training batches flip each image left-right with probability 1/2 (U-ViT's CIFAR-10)."""

    source: str = "digits"
    data_dir: str = ""
    image_size: int = 0
    max_train: int = 0
    random_flip: bool = False


@dataclasses.dataclass
class ImageData:
    """train_x / test_x: float32 [N, H, W, C] in [-1, 1]; train_y / test_y: int32 [N]."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def describe(self) -> str:
        h, w, c = self.image_shape
        return (
            f"{self.name}: {len(self.train_x)} training and {len(self.test_x)} test images of "
            f"{h}x{w}x{c}, {self.num_classes} classes"
        )


def to_signed(unit: np.ndarray) -> np.ndarray:
    """[0, 1] images -> [-1, 1] float32 (x * 2 - 1)."""
    return (np.asarray(unit, np.float32) * 2.0 - 1.0).astype(np.float32)


def _cifar10(root: str, image_size: int, cache_dir: str) -> images.ImageSplits:
    batches = os.path.isfile(root) or any(
        os.path.exists(os.path.join(root, name)) for name in ("data_batch_1", "cifar-10-batches-py")
    )
    if batches:
        return images.load_cifar10_batches(root)
    split = {}
    for name in ("train", "test"):
        folder = images.ImageFolder(root, name)
        side = image_size or 32
        if cache_dir:
            raw, _ = folder.load_all_cached(side, cache_dir)
        else:
            raw = folder.load_all_uint8(side)
        split[name] = (raw.astype(np.float32) / 255.0, folder.labels, folder.num_classes)
    (train_x, train_y, k), (test_x, test_y, _) = split["train"], split["test"]
    return images.ImageSplits(train_x, train_y, test_x, test_y, k, (0.0,) * 3, (1.0,) * 3)


def load_images(options: DataOptions, *, cache_dir: str = "") -> ImageData:
    """The train / test images of `options` in [-1, 1]. `cache_dir` (e.g. in the run's workdir)
    keeps the decoded images of an ImageFolder for the next run; "" decodes them every time."""
    source = options.source
    if source == "digits":
        if options.data_dir:
            raise ValueError(
                "the digits are bundled with scikit-learn; data_dir must be empty, got "
                f"{options.data_dir!r}"
            )
        splits = images.load_digits(image_size=options.image_size or 16)
    elif source in ("mnist", "cifar10"):
        if not options.data_dir:
            raise ValueError(f"source {source!r} needs data_dir (its folder)")
        root = resolve_data_dir(options.data_dir)
        if source == "mnist":
            splits = images.load_mnist(root)
        else:
            splits = _cifar10(root, options.image_size, cache_dir)
    else:
        raise ValueError(f"unknown image source {source!r}; choose from {', '.join(SOURCES)}")
    train_x, train_y = splits.train_x, splits.train_y
    if options.max_train:
        train_x, train_y = train_x[: options.max_train], train_y[: options.max_train]
    test_x = splits.test_x
    side = options.image_size
    if side and source != "digits" and train_x.shape[1] != side:
        train_x, test_x = (
            images.resize_bilinear(train_x, side),
            images.resize_bilinear(test_x, side),
        )
    return ImageData(
        source,
        to_signed(train_x),
        np.asarray(train_y, np.int32),
        to_signed(test_x),
        np.asarray(splits.test_y, np.int32),
        splits.num_classes,
    )
