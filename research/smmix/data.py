"""SMMix's data: digits or an ImageFolder (in memory, decoded once and cached, or streamed),
its subsets, the host-side training batches and the held-out evaluation.

In a run of several processes each process builds its rows of every training batch
(`distributed.process_rows`, augmented as in the whole batch) and predicts a share of the
held-out images (`distributed.share_of`, gathered in every process); process 0 writes the data
cache and the others read it.

Imports only numpy, jax and the method's own modules (no plotting or logging libraries), so the
device entry `experiments.bench.smmix_cifar10` can use it on a bare accelerator machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import ml_collections
import numpy as np

from research.datasets import images as img
from research.datasets.batching import epoch_indices
from research.datasets.paths import resolve_data_dir
from research.smmix import steps
from research.training import distributed
from research.training import workdir as workdir_lib

Config = ml_collections.ConfigDict


@dataclass
class ImageData:
    """Training and evaluation data: in-memory arrays ([N, H, W, C], float32 in [0, 1] or
    uint8 0..255 as decoded from a folder; labels [N]) or a streamed ImageFolder
    (`train_folder` / `eval_folder`, decoded per batch)."""

    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_labels: np.ndarray
    train_x: np.ndarray | None = None
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None
    train_folder: img.ImageFolder | None = None
    train_index: np.ndarray | None = None  # folder rows of the (possibly long-tailed) subset
    eval_folder: img.ImageFolder | None = None
    load_seconds: float | None = None  # in-memory folder: decoding or reading the cache
    from_cache: bool | None = None  # in-memory folder: both splits read from the cache


def data_cache_dir(config: Config, workdir: str) -> str:
    """Where decoded in-memory folders are cached: `config.data.cache_dir` (relative to the
    repository root) or `<workdir>/data_cache` (the shared data folder is read-only)."""
    if config.data.cache_dir:
        return resolve_data_dir(config.data.cache_dir)
    return os.path.join(workdir, "data_cache")


def load_data(config: Config, cache_dir: str | None = None) -> ImageData:
    """The data of `config.data` (digits, or the ImageFolder tree at `config.data_dir`),
    long-tailed or limited per class if asked. An in-memory folder is decoded once into uint8
    arrays cached in `cache_dir` (keyed by the folders' contents; None: no cache)."""
    d = config.data
    if d.name == "digits":
        s = img.load_digits(
            image_size=d.image_size, test_fraction=d.test_fraction, seed=d.split_seed
        )
        keep = _subset(s.train_y, d.imbalance_factor, d.train_per_class, d.split_seed)
        test = _subset(s.test_y, 1.0, d.eval_per_class, d.split_seed)
        return ImageData(
            s.num_classes, s.train_x.shape[1:], s.mean, s.std, s.train_y[keep],
            train_x=s.train_x[keep], test_x=s.test_x[test], test_y=s.test_y[test],
        )  # fmt: skip
    if d.name != "folder":
        raise ValueError(f"config.data.name = {d.name!r}: must be one of digits, folder")
    if not config.data_dir:
        raise ValueError(
            f"config.data_dir = {config.data_dir!r}: must name the ImageFolder root for "
            "config.data.name = 'folder'"
        )
    root = resolve_data_dir(config.data_dir)
    train = img.ImageFolder(root, d.train_split)
    evals = img.ImageFolder(root, d.eval_split, classes=train.classes)
    keep = _subset(train.labels, d.imbalance_factor, d.train_per_class, d.split_seed)
    test = _subset(evals.labels, 1.0, d.eval_per_class, d.split_seed)
    shape = (d.image_size, d.image_size, 3)
    mean, std = img.IMAGENET_MEAN, img.IMAGENET_STD
    if d.in_memory:
        start, hits = time.perf_counter(), []
        arrays = []
        for folder in (train, evals):
            if cache_dir is None:
                arrays.append(folder.load_all_uint8(d.image_size, workers=os.cpu_count() or 1))
                hits.append(False)
            else:
                x, hit = _load_cached(folder, d.image_size, cache_dir)
                arrays.append(x)
                hits.append(hit)
        return ImageData(
            train.num_classes, shape, mean, std, train.labels[keep],
            train_x=arrays[0][keep], test_x=arrays[1][test], test_y=evals.labels[test],
            load_seconds=time.perf_counter() - start, from_cache=all(hits),
        )  # fmt: skip
    return ImageData(
        train.num_classes, shape, mean, std, train.labels[keep],
        train_folder=train, train_index=keep, eval_folder=evals,
    )  # fmt: skip


def _load_cached(
    folder: img.ImageFolder, image_size: int, cache_dir: str
) -> tuple[np.ndarray, bool]:
    """`folder.load_all_cached`: uint8 [N, image_size, image_size, 3] and whether it was read
    from the cache. In a run of several processes process 0 decodes the folder and writes the
    cache first, and the others then read it."""

    def load() -> tuple[np.ndarray, bool]:
        return folder.load_all_cached(image_size, cache_dir, workers=os.cpu_count() or 1)

    if workdir_lib.is_writer():
        loaded = load()
    workdir_lib.sync(f"smmix: {folder.folder} at {image_size}px cached in {cache_dir}")
    if not workdir_lib.is_writer():
        loaded = load()
    return loaded


def _subset(labels: np.ndarray, imbalance_factor: float, per_class: int, seed: int) -> np.ndarray:
    """Rows kept of a split: long-tailed (head class `per_class` or the smallest class count),
    `per_class` of every class drawn with `seed`, or all (per_class 0)."""
    if imbalance_factor > 1.0:
        return img.long_tailed_indices(labels, imbalance_factor, seed=seed, n_max=per_class or None)
    if per_class:
        return img.balanced_indices(labels, per_class, seed=seed)
    return np.arange(len(labels))


def make_batch_fn(config: Config, data: ImageData, seed: int, rows: slice | None = None):
    """`step -> {"images": [K, R, H, W, C], "labels": [K, R]}` (K = steps_per_call; no K axis
    when it is 1): rows `rows` (default: this process's, `distributed.process_rows(B)`; all B
    in a single process) of the global batch, shuffled each epoch, augmented on the host,
    normalized; pure in `step`. The rows' images and augmentations are those of the whole
    batch, so every process's rows join into the batch one process builds."""
    a, t, k = config.augment, config.train, config.steps_per_call
    n = len(data.train_labels)
    part = img.BatchRows(
        distributed.process_rows(t.batch_size) if rows is None else rows, t.batch_size
    )

    def one(step: int) -> tuple[np.ndarray, np.ndarray]:
        idx = epoch_indices(n, t.batch_size, step, seed=seed)  # [B]: the global batch
        rng = np.random.default_rng([seed, step, 1])
        if data.train_x is None:
            x = data.train_folder.load(
                data.train_index[idx], image_size=config.data.image_size, train=True, rng=rng,
                rows=part,
            )  # fmt: skip
        else:
            x = img.pad_and_crop(img.to_unit(data.train_x[idx[part.rows]]), a.pad, rng, rows=part)
            if a.flip:
                x = img.random_flip(x, rng, rows=part)
        if a.rand_augment_ops:
            x = img.rand_augment(
                x, rng, num_ops=a.rand_augment_ops, magnitude=a.rand_augment_magnitude,
                magnitude_std=a.rand_augment_std, prob=a.rand_augment_prob, rows=part,
            )  # fmt: skip
        return img.normalize(x, data.mean, data.std), data.train_labels[idx[part.rows]]

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        xs, ys = zip(*(one(s) for s in range(step, step + k)), strict=True)
        if k == 1:
            return {"images": xs[0], "labels": ys[0]}
        return {"images": np.stack(xs), "labels": np.stack(ys)}

    return batch_fn


def evaluate(config: Config, data: ImageData, predict, params: Any) -> float:
    """Top-1 of `params` on the held-out images (class-token head).

    In a run of several processes each process predicts a share of whole evaluation batches
    (`distributed.share_of`, the batches one process predicts) on its own devices with its
    copy of `params`, and the predictions are gathered in every process: every process returns
    the top-1 of one process."""
    bs = config.eval.batch_size
    params = distributed.process_local(params)
    labels = data.test_y if data.test_x is not None else data.eval_folder.labels  # [N]
    mine, size = distributed.share_of(len(labels), multiple=bs)
    predicted = [np.zeros(0, np.int32)]  # this process's predicted classes, per batch
    for start in range(mine.start, mine.stop, bs):
        idx = np.arange(start, min(start + bs, mine.stop))
        if data.test_x is not None:
            x = img.to_unit(data.test_x[idx])
        else:
            x = data.eval_folder.load(idx, image_size=config.data.image_size, train=False)
        x = img.normalize(x, data.mean, data.std)
        predicted.append(steps.predict_classes(predict, params, x, bs))
    everyone = distributed.gather(np.concatenate(predicted), size, len(labels))  # [N]
    return int((everyone == labels).sum()) / len(labels)
