"""research/smmix/data.py: an in-memory ImageFolder is decoded once into uint8 arrays, cached,
limited per class; batches and evaluation take uint8 and float images alike."""

import numpy as np

from experiments.configs.smmix import get_config
from research.smmix import data as smmix_data
from tests.experiments.bench.test_smmix_cifar10 import _folder


def test_an_in_memory_folder_is_cached_and_limited_per_class(tmp_path):
    config = get_config("cifar10_cpu")
    config.data_dir = _folder(tmp_path / "cifar", classes=3, train=6, test=4)
    config.data.train_per_class, config.data.eval_per_class = 4, 2
    cache = smmix_data.data_cache_dir(config, str(tmp_path / "work"))
    assert cache == str(tmp_path / "work" / "data_cache")
    first = smmix_data.load_data(config, cache)
    again = smmix_data.load_data(config, cache)
    assert not first.from_cache and again.from_cache
    assert first.train_x.dtype == np.uint8 and first.train_x.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(first.train_x, again.train_x)
    np.testing.assert_array_equal(np.bincount(first.train_labels), [4, 4, 4])
    np.testing.assert_array_equal(np.bincount(first.test_y), [2, 2, 2])
    config.train.batch_size, config.steps_per_call = 4, 1
    batch = smmix_data.make_batch_fn(config, first, seed=0)(0)
    assert batch["images"].dtype == np.float32 and batch["images"].shape == (4, 32, 32, 3)


def _parts_join_into_the_batch(config, data, step):
    """make_batch_fn's rows [0, B/4), [B/4, B) (as uneven processes would hold) concatenated
    along the batch axis equal the whole batch, images and labels, bit for bit."""
    b, axis = config.train.batch_size, 0 if config.steps_per_call == 1 else 1
    whole = smmix_data.make_batch_fn(config, data, seed=3, rows=slice(0, b))(step)
    parts = [
        smmix_data.make_batch_fn(config, data, seed=3, rows=rows)(step)
        for rows in (slice(0, b // 4), slice(b // 4, b))
    ]
    assert parts[0]["images"].shape[axis] == b // 4
    for key in ("images", "labels"):
        joined = np.concatenate([p[key] for p in parts], axis=axis)
        np.testing.assert_array_equal(joined, whole[key], err_msg=key)


def test_a_batchs_rows_built_apart_join_into_the_whole_batch(tmp_path):
    """Each process builds its rows only, with the whole batch's crops, flips and RandAugment
    draws: in memory (digits) and streamed from a folder (random resized crops)."""
    config = get_config("tiny")
    config.augment.flip, config.augment.rand_augment_ops = True, 2
    config.train.batch_size, config.steps_per_call = 16, 2
    digits = smmix_data.load_data(config)
    _parts_join_into_the_batch(config, digits, step=5)
    whole = smmix_data.make_batch_fn(config, digits, seed=3)(5)  # this process's rows: all
    assert whole["images"].shape[:2] == (2, 16)

    config = get_config("cifar10_cpu")
    config.data_dir = _folder(tmp_path / "cifar", classes=2, train=8, test=2)
    config.data.in_memory, config.data.image_size = False, 16
    config.data.train_per_class = config.data.eval_per_class = 0
    config.augment.rand_augment_ops = 1
    config.train.batch_size, config.steps_per_call = 8, 1
    _parts_join_into_the_batch(config, smmix_data.load_data(config), step=1)
