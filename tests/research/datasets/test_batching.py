"""research/datasets/batching.py: epoch-shuffled batches as a pure function of the step."""

import numpy as np
import pytest

from research.datasets.batching import EpochBatches, epoch_indices


def test_epoch_indices_visit_every_example_once_per_epoch():
    seen = np.concatenate([epoch_indices(10, 3, s, seed=0) for s in range(3)])
    assert len(set(seen.tolist())) == 9  # 3 batches of 3, the last incomplete batch dropped
    np.testing.assert_array_equal(epoch_indices(10, 3, 4, seed=0), epoch_indices(10, 3, 4, seed=0))
    with pytest.raises(ValueError, match="fewer than one batch"):
        epoch_indices(2, 3, 0, seed=0)


def test_epoch_batches_stack_steps_and_match_epoch_indices():
    tables = {"a": np.arange(20), "b": np.arange(20) * 10.0}
    batches = EpochBatches(tables, 4, seed=(3, 7), steps_per_call=3)
    out = batches(4)  # steps 4, 5 (epoch 0) and 6 (epoch 1)
    assert out["a"].shape == (3, 4) and out["b"].shape == (3, 4)
    np.testing.assert_array_equal(out["b"], out["a"] * 10.0)
    for k, step in enumerate(range(4, 7)):
        np.testing.assert_array_equal(out["a"][k], epoch_indices(20, 4, step, seed=(3, 7)))
    single = EpochBatches(tables, 4, seed=(3, 7))(6)
    np.testing.assert_array_equal(single["a"], out["a"][2])
    with pytest.raises(ValueError, match="number of rows"):
        EpochBatches({"a": np.arange(5), "b": np.arange(6)}, 2, seed=0)


def test_epoch_batches_rows_are_those_positions_of_the_whole_batch():
    tables = {"a": np.arange(20)}
    whole = EpochBatches(tables, 4, seed=1, steps_per_call=3)(4)["a"]
    halves = [
        EpochBatches(tables, 4, seed=1, steps_per_call=3, rows=r)(4)["a"]
        for r in (slice(0, 2), slice(2, 4))
    ]
    np.testing.assert_array_equal(np.concatenate(halves, axis=1), whole)
