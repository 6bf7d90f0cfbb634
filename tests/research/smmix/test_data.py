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
