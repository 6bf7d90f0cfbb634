"""The data sets of the semantic-scale experiments, in long-tailed and sample-balanced versions.

  digits   scikit-learn's bundled 8 x 8 digits at 16 x 16 (offline): about 133 training images
           per class, a stratified held-out quarter (`data.split_seed`)
  mnist    MNIST from its idx files (`data.mnist_dir`), 28 x 28, the standard 10,000 test images
  cifar10  CIFAR-10 as an ImageFolder (`data.cifar10_dir`: train/<class>/*, test/<class>/*)

A version is chosen by its imbalance factor: > 1 gives the exponential profile of CIFAR-LT
(class c keeps n_max x factor^(-c / (C - 1)) training images, classes in label order); 1 gives
the sample-balanced version, n_max images of every class. n_max is the smallest class count,
capped at `data.max_per_class` when that is not 0. Which images a class keeps is a seeded choice by
`data.subset_seed`, fixed separately from the training seed (the CE baseline moves by about 3
points with the subset). The test sets are the standard (balanced) ones in every version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from research.datasets import images as img
from research.datasets.paths import resolve_data_dir

DATASETS = ("digits", "mnist", "cifar10")
# The training augmentation of each data set: zero-pad and random crop by `pad` pixels, and
# horizontal flips (the LDAM-DRW CIFAR recipe: pad 4 + flip; digits must not be flipped).
AUGMENT = {"digits": (2, False), "mnist": (2, False), "cifar10": (4, True)}
DATA_DIR_FIELD = {"mnist": "data.mnist_dir", "cifar10": "data.cifar10_dir"}


@dataclass
class Split:
    """One version of a data set: training images [N, H, W, C] in [0, 1] with labels [N], the
    held-out images and labels, class counts [C] of the training images."""

    name: str
    imbalance_factor: float
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    counts: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int
    flip: bool

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def label(self) -> str:
        """'mnist-LT100' or 'mnist-balanced'."""
        if self.imbalance_factor == 1:
            return f"{self.name}-balanced"
        return f"{self.name}-LT{self.imbalance_factor:g}"


def load_full(config: Any, name: str) -> img.ImageSplits:
    """The whole data set `name` (train and test) as in-memory arrays."""
    d = config.data
    if name == "digits":
        return img.load_digits(image_size=16, test_fraction=0.25, seed=d.split_seed)
    if name == "mnist":
        return img.load_mnist(resolve_data_dir(d.mnist_dir))
    if name == "cifar10":
        root = resolve_data_dir(d.cifar10_dir)
        train = img.ImageFolder(root, "train")
        test = img.ImageFolder(root, "test", classes=train.classes)
        x = train.load_all(32)
        mean, std = tuple(x.mean((0, 1, 2)).tolist()), tuple(x.std((0, 1, 2)).tolist())
        return img.ImageSplits(
            x, train.labels, test.load_all(32), test.labels, train.num_classes, mean, std
        )
    raise ValueError(f"data set {name!r}: must be one of {', '.join(DATASETS)}")


def make_split(full: img.ImageSplits, name: str, imbalance_factor: float, config: Any) -> Split:
    """The long-tailed (factor > 1) or sample-balanced (factor 1) version of `full`."""
    d = config.data
    smallest = int(np.bincount(full.train_y, minlength=full.num_classes).min())
    n_max = min(d.max_per_class, smallest) if d.max_per_class else smallest
    if imbalance_factor == 1:
        keep = img.balanced_indices(full.train_y, n_max, seed=d.subset_seed)
    else:
        keep = img.long_tailed_indices(
            full.train_y, imbalance_factor, seed=d.subset_seed, n_max=n_max
        )
    y = full.train_y[keep]
    pad, flip = AUGMENT[name]
    return Split(
        name=name,
        imbalance_factor=float(imbalance_factor),
        train_x=full.train_x[keep],
        train_y=y,
        test_x=full.test_x,
        test_y=full.test_y,
        counts=img.class_counts(y, full.num_classes),
        mean=full.mean,
        std=full.std,
        pad=pad,
        flip=flip,
    )


def shot_groups(counts: np.ndarray, many: int, few: int) -> dict[str, np.ndarray]:
    """Class masks [C] by training count: many-shot (> many), medium ([few, many]), few-shot
    (< few); CIFAR-LT's 100 / 20 by default."""
    counts = np.asarray(counts)
    return {
        "many": counts > many,
        "medium": (counts <= many) & (counts >= few),
        "few": counts < few,
    }
