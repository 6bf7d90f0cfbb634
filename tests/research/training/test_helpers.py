"""The small shared helpers: step rounding, steady-state rate, cached results, seed statistics."""

import json
import math
import os

import numpy as np
import pytest

from research.training import stats
from research.training.loop import round_to_calls
from research.training.metrics import MetricWriter, steady_steps_per_second
from research.training.results import cached_result


@pytest.mark.parametrize("count, k, expected", [(0, 5, 0), (1, 5, 5), (10, 5, 10), (11, 5, 15)])
def test_round_to_calls(count, k, expected):
    assert round_to_calls(count, k) == expected


def test_round_to_calls_rejects_bad_counts():
    with pytest.raises(ValueError, match="steps_per_call"):
        round_to_calls(10, 0)


def test_steady_rate_drops_the_compiling_interval(tmp_path):
    workdir = str(tmp_path)
    assert steady_steps_per_second(workdir) is None
    writer = MetricWriter(workdir)
    for step, rate in [(10, 1.0), (20, 50.0), (30, 70.0), (40, 60.0)]:
        writer.write(step, {"loss": 0.1, "steps_per_s": rate})
    writer.close()
    assert steady_steps_per_second(workdir) == 60.0


def test_cached_result_computes_once_then_reads_back(tmp_path):
    path = os.path.join(tmp_path, "run", "result.json")
    calls = []

    def compute():
        calls.append(1)
        return {"acc": np.float32(0.5), "lambdas": np.array([0.1, 0.2])}

    first = cached_result(path, compute)
    second = cached_result(path, compute)
    assert len(calls) == 1
    assert second == {"acc": 0.5, "lambdas": [0.1, 0.2]}
    assert first["acc"] == second["acc"]
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp" in f]
    # A stored result that the caller refuses is computed again and replaced.
    third = cached_result(path, lambda: {"acc": 0.7}, reuse=lambda old: old["acc"] > 0.6)
    assert third == {"acc": 0.7} and json.load(open(path)) == {"acc": 0.7}


def test_seed_summary_uses_the_sample_std():
    s = stats.seed_summary([1.0, 2.0, 3.0, 4.0])
    assert s.mean == 2.5 and s.n == 4
    assert s.std == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s.stderr == pytest.approx(s.std / 2)
    one = stats.seed_summary([0.7])
    assert one.std == 0.0 and one.stderr == 0.0


def test_difference_against_its_standard_error():
    a, b = stats.seed_summary([1.0, 1.2, 1.1]), stats.seed_summary([0.0, 0.2, 0.1])
    d = stats.difference(a, b)
    assert d.diff == pytest.approx(1.0)
    assert d.stderr == pytest.approx(math.sqrt(2 * (0.1**2 / 3)))
    assert d.exceeds_spread()
    assert not stats.difference(a, stats.seed_summary([1.05, 1.3, 0.9])).exceeds_spread()
    assert stats.difference(stats.seed_summary([1.0]), stats.seed_summary([1.0])).z == 0.0


def test_log_line_is_short():
    from research.training.loop import log_line

    scalars = {"loss": 0.123456, "positive_loss": 0.5, "negative_loss": 0.7, "steps_per_s": 12.34}
    scalars["eval/valid_mrr"] = 0.4567
    assert log_line(scalars) == "loss 0.1235, valid_mrr 0.4567 (12.3 steps/s)"


def test_tensorboard_opens_the_event_files(tmp_path):
    """TensorBoard itself (installed with the dev requirements) reads what MetricWriter wrote."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = MetricWriter(str(tmp_path))
    for step in (10, 20):
        writer.write(step, {"loss": 1.0 / step, "eval/valid_mrr": 0.25})
    writer.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("loss")] == [(10, 0.1), (20, 0.05)]
    assert "eval/valid_mrr" in events.Tags()["scalars"]


def test_mean_std_text_is_the_table_cell_of_a_summary():
    assert stats.mean_std_text(stats.seed_summary([1.0, 2.0, 3.0]), 2) == "2.00 ± 1.00"
    assert stats.mean_std_text(stats.seed_summary([0.123456]), 3) == "0.123"  # one seed
    assert stats.mean_std_text(None, 3) == ""
