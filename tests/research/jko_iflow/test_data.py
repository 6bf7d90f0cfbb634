"""Tests of JKO-iFlow's data helpers (research/jko_iflow/data.py)."""

import numpy as np

from research.jko_iflow.data import epoch_batches


def test_epoch_batches_cover_each_epoch_once_and_are_pure():
    x = np.arange(20, dtype=np.float32)[:, None]
    fn = epoch_batches(x, 5, seed=1, steps_per_call=2, extra={"w": 0.5})
    first = fn(0)
    assert first["x"].shape == (2, 5, 1) and first["w"].shape == (2, 5)
    epoch = np.concatenate([fn(0)["x"].ravel(), fn(2)["x"].ravel()])
    assert sorted(epoch.tolist()) == list(range(20))
    np.testing.assert_array_equal(fn(2)["x"], epoch_batches(x, 5, seed=1, steps_per_call=2)(2)["x"])
    assert not np.array_equal(fn(4)["x"].ravel(), epoch[:10])  # a new order in the next epoch
