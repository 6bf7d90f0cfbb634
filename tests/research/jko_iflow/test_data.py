"""Tests of JKO-iFlow's data helpers (research/jko_iflow/data.py)."""

import os

import numpy as np
import pytest

from research.jko_iflow.data import epoch_batches, load_data


def test_epoch_batches_cover_each_epoch_once_and_are_pure():
    x = np.arange(20, dtype=np.float32)[:, None]
    fn = epoch_batches(x, 5, seed=1, steps_per_call=2, extra={"w": 0.5})
    first = fn(0)
    assert first["x"].shape == (2, 5, 1) and first["w"].shape == (2, 5)
    epoch = np.concatenate([fn(0)["x"].ravel(), fn(2)["x"].ravel()])
    assert sorted(epoch.tolist()) == list(range(20))
    np.testing.assert_array_equal(fn(2)["x"], epoch_batches(x, 5, seed=1, steps_per_call=2)(2)["x"])
    assert not np.array_equal(fn(4)["x"].ravel(), epoch[:10])  # a new order in the next epoch


def test_load_data_reads_tabular_splits_from_data_dir_and_names_a_missing_folder(tmp_path):
    os.makedirs(tmp_path / "power")
    for split, n in (("train", 30), ("val", 5), ("test", 10)):
        np.save(tmp_path / "power" / f"{split}.npy", np.ones((n, 6)))
    data = load_data("power", data_dir=str(tmp_path), num_train=20, num_test=0, seed=0)
    assert data["train"].shape == (20, 6) and data["test"].shape == (10, 6)
    with pytest.raises(FileNotFoundError, match=r"--config.data_dir=''\) does not exist"):
        load_data("rose", data_dir="", num_train=10, num_test=10, seed=0)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_data("gas", data_dir=str(tmp_path / "missing"), num_train=10, num_test=10, seed=0)
