"""experiments/bench/smmix_cifar10.py: the budgeted CIFAR-10 entry at a tiny size on a synthetic
ImageFolder (seconds on the CPU; CutMix, whose step compiles fast: the SMMix step is tested in
test_train.py), its epoch choice and its tables."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from experiments.bench import smmix_cifar10

TINY = {
    "model.hidden_dim": 16,
    "model.depth": 1,
    "model.num_heads": 2,
    "model.drop_path": 0.0,
    "train.batch_size": 8,
    "steps_per_call": 2,
    "augment.rand_augment_ops": 1,
    "eval.batch_size": 16,
}


class FakeClock:
    """`smmix_cifar10.Clock` on a fake time that moves only when a test says (`advance`), so the
    budget tests do not depend on how fast the machine compiles or trains."""

    def __init__(self, budget_s):
        self.budget_s, self.now = budget_s, 0.0

    def elapsed(self):
        return self.now

    def left(self):
        return self.budget_s - self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch):
    """The run's clock (set when run_cifar10 creates it); `seconds_per_call` (default 0) is
    added to it by every training call, probe calls included."""
    holder = {"clock": None, "seconds_per_call": 0.0}

    def make(budget_s):
        holder["clock"] = FakeClock(budget_s)
        return holder["clock"]

    call = smmix_cifar10._call

    def timed_call(*args):
        out = call(*args)
        holder["clock"].advance(holder["seconds_per_call"])
        return out

    monkeypatch.setattr(smmix_cifar10, "Clock", make)
    monkeypatch.setattr(smmix_cifar10, "_call", timed_call)
    return holder


def _folder(root, classes=2, train=8, test=4, size=32):
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{i:04d}.png")
    return str(root)


def test_a_tiny_budgeted_run_trains_every_method_and_writes_its_tables(tmp_path, fake_clock):
    data = _folder(tmp_path / "cifar")
    out = tmp_path / "out"
    lines = []
    result = smmix_cifar10.run_cifar10(  # the fake clock stands still: the budget is never spent
        data, str(out), budget_s=300, methods="cutmix", seeds=[0, 1],
        overrides={**TINY, "train.epochs": 2}, log=lines.append,
    )  # fmt: skip
    assert result["status"] == "done"
    assert result["epochs"] == 2 and not result["fewer_epochs_than_preset"]  # capped at 2
    assert result["steps_per_run"] == 2 * 2  # 16 images / batch 8 = 2 steps = 1 call
    assert result["compilations_per_method"] == {"cutmix": 1}  # probe and both seeds: one
    runs = result["runs"]
    assert [(r["method"], r["seed"]) for r in runs] == [("cutmix", 0), ("cutmix", 1)]
    assert all(r["complete"] and r["steps"] == 4 and 0 <= r["top1"] <= 1 for r in runs)
    assert set(result["probe"]) == {"cutmix"}
    assert result["host_seconds_per_step"] > 0
    # 2 seeds x `workers` calls built up front, each taking `workers` x its per-call seconds
    assert result["host_first_calls_wall_s"] >= result["host_seconds_per_step"] * 2
    for p in result["probe"].values():  # planned with the slower of the device and the host
        assert p["seconds_per_step"] == max(
            p["device_seconds_per_step"], result["host_seconds_per_step"]
        )
    saved = json.load(open(out / "cifar10_budget.json"))
    assert saved["summary"][0]["method"] == "cutmix" and saved["summary"][0]["seeds"] == 2
    assert saved["differences"] == []  # SMMix's comparisons: test_summary_tables_judge_...
    assert not saved["data"]["from_cache"] and os.listdir(out / "data_cache")
    md = open(out / "results.md").read()
    assert "| cutmix | 2 |" in md
    assert any("ms / step" in line for line in lines) and md.splitlines()[-1] in lines[-1]


def test_a_spent_budget_still_writes_results(tmp_path, fake_clock, monkeypatch):
    load = smmix_cifar10.load_data

    def slow_load(*args):  # loading spends the whole budget
        data = load(*args)
        fake_clock["clock"].advance(2.0)
        return data

    monkeypatch.setattr(smmix_cifar10, "load_data", slow_load)
    data = _folder(tmp_path / "cifar")
    result = smmix_cifar10.run_cifar10(
        data, str(tmp_path / "out"), budget_s=1.0, methods="none", seeds=[0],
        overrides=TINY, log=lambda s: None,
    )  # fmt: skip
    assert result["status"] == "budget spent while compiling" and result["probe"] == {}
    saved = json.load(open(tmp_path / "out" / "cifar10_budget.json"))
    assert saved["summary"] == [] and "runs" not in saved


def test_a_budget_spent_by_the_first_compilation_stops_before_training(tmp_path, fake_clock):
    fake_clock["seconds_per_call"] = 2.0  # the first (compiling) call spends the 1 s budget
    data = _folder(tmp_path / "cifar")
    lines = []
    result = smmix_cifar10.run_cifar10(
        data, str(tmp_path / "out"), budget_s=1.0, methods="none", seeds=[0],
        overrides=TINY, log=lines.append, workers=1,
    )  # fmt: skip
    assert result["status"] == "budget spent while compiling" and result["probe"] == {}
    assert lines[-1].startswith("budget spent after compiling none")  # the first call only


def test_a_budget_spent_while_training_stops_the_run_and_skips_the_rest(tmp_path, fake_clock):
    # every call takes 1 fake second: 2 probe calls, then 8 of the first run's 20 calls fit
    # in the 10 s budget; the run is evaluated, reported incomplete, and seed 1 is skipped.
    fake_clock["seconds_per_call"] = 1.0
    data = _folder(tmp_path / "cifar")
    lines = []
    result = smmix_cifar10.run_cifar10(
        data, str(tmp_path / "out"), budget_s=10.0, methods="none", seeds=[0, 1],
        overrides={**TINY, "train.epochs": 20}, probe_calls=2, log=lines.append,
    )  # fmt: skip
    assert result["status"] == "done" and result["epochs"] == 20  # planned with the real steps
    first, second = result["runs"]
    assert not first["complete"] and first["steps"] == 8 * 2 and 0 <= first["top1"] <= 1
    assert second == dict(method="none", seed=1, complete=False, skipped=True)
    assert result["summary"] == []  # incomplete runs stay out of the table
    assert any("16/40 steps" in line and "stopped by the budget" in line for line in lines)


def test_choose_epochs_fills_the_budget_and_respects_the_preset():
    kwargs = dict(
        seconds_per_step={"a": 0.01, "b": 0.03}, steps_per_run_epoch=100, num_seeds=3,
        eval_seconds=1.0,
    )  # fmt: skip
    # one epoch of every run: (0.01 + 0.03) x 100 x 3 = 12 s; evaluations 2 x 3 x 1 = 6 s
    assert smmix_cifar10.choose_epochs(seconds_left=6 + 12 * 7.5, max_epochs=100, **kwargs) == 7
    assert smmix_cifar10.choose_epochs(seconds_left=6 + 12 * 7.5, max_epochs=5, **kwargs) == 5
    assert smmix_cifar10.choose_epochs(seconds_left=3, max_epochs=5, **kwargs) == 1


def test_summary_tables_judge_differences_against_the_seed_spread():
    runs = [dict(method="cutmix", seed=s, top1=v) for s, v in enumerate([0.50, 0.51, 0.49])]
    runs += [dict(method="smmix", seed=s, top1=v) for s, v in enumerate([0.60, 0.61, 0.59])]
    rows, diffs, text = smmix_cifar10.summary_tables(runs)
    assert rows[1]["top1_mean"] == pytest.approx(0.60)
    assert rows[1]["top1_std"] == pytest.approx(0.01)
    assert diffs == [
        dict(comparison="smmix - cutmix", diff_points=pytest.approx(10.0),
             stderr_points=pytest.approx(100 * np.sqrt(2 * 0.01**2 / 3)),
             z=pytest.approx(10 / (100 * np.sqrt(2 * 0.01**2 / 3))), exceeds_seed_spread="true")
    ]  # fmt: skip
    assert "| smmix | 3 | 60.00 ± 1.00 | 60.00, 61.00, 59.00 |" in text


def test_bad_arguments_fail_before_any_work(tmp_path):
    data = _folder(tmp_path / "cifar")
    with pytest.raises(ValueError, match="budget_s = 0: must be > 0"):
        smmix_cifar10.run_cifar10(data, str(tmp_path / "o"), 0)
    with pytest.raises(ValueError, match="config has no field 'batch'"):
        smmix_cifar10.run_cifar10(data, str(tmp_path / "o"), 10, overrides={"train.batch": 8})
    with pytest.raises(ValueError, match="config.methods"):
        smmix_cifar10.run_cifar10(data, str(tmp_path / "o"), 10, methods="smmixx")
    with pytest.raises(ValueError, match="matmul_precision"):
        smmix_cifar10.run_cifar10(data, str(tmp_path / "o"), 10, matmul_precision="half")


def test_ahead_batches_are_the_batch_function_in_call_order_and_reuse_ready_ones():
    built = []

    def batch_fn(step):
        built.append(step)
        return np.full(2, step)

    seconds, ready = smmix_cifar10.time_host_batches(batch_fn, stride=3, workers=2)
    assert seconds > 0 and sorted(ready) == [0, 1] and sorted(built) == [0, 3]
    source = smmix_cifar10.AheadBatches(batch_fn, 3, workers=2, depth=3, ready=ready)
    try:
        for call in range(5):
            np.testing.assert_array_equal(source(call), [3 * call] * 2)
    finally:
        source.close()
    assert built.count(0) == built.count(3) == 1  # ready calls are not built again
    assert {6, 9, 12} <= set(built)  # (calls 5 and 6 may be cancelled by close)
