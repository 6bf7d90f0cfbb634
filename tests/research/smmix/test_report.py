"""research/smmix/report.py (seed statistics, results files) and the options read back from
every preset of experiments/configs/smmix.py."""

import dataclasses
import json

import numpy as np
import pytest

from experiments.configs.smmix import get_config
from research.smmix import report, steps
from research.smmix.mixing import MixOptions
from research.smmix.model import ModelOptions


@pytest.mark.parametrize("preset", ["tiny", "small", "small_lt", "paper"])
def test_every_preset_reads_back_as_options(preset):
    config = get_config(preset)
    for options, sub in ((MixOptions, config.mix), (ModelOptions, config.model)):
        assert dataclasses.asdict(options(**sub)) == sub.to_dict()
    assert steps.TrainOptions(**config.train).batch_size == config.train.batch_size


def test_base_options_are_the_dataclass_defaults_and_flags_override_them():
    config = get_config("small")
    assert MixOptions(**config.mix) == MixOptions()
    assert ModelOptions(**config.model) == ModelOptions()
    assert steps.TrainOptions(**config.train) == steps.TrainOptions(epochs=150)
    config.mix.switch_prob = 1.0  # as --config.mix.switch_prob=1.0
    assert MixOptions(**config.mix).switch_prob == 1.0


def _runs(method: str, top1: list[float]) -> list[dict]:
    return [
        dict(method=method, seed=k, top1=v, top1_ema=None, seconds=10.0 + k,
             seconds_per_step=0.1, smmix_fraction=0.5)
        for k, v in enumerate(top1)
    ]  # fmt: skip


def test_summary_and_differences_use_the_sample_std(tmp_path):
    smmix, cutmix = [0.9, 0.95, 0.92], [0.8, 0.85, 0.83]
    runs = _runs("smmix", smmix) + _runs("cutmix", cutmix) + _runs("none", [0.7])
    rows = {r["method"]: r for r in report.summarize(runs)}
    assert rows["smmix"]["top1_mean"] == pytest.approx(np.mean(smmix))
    assert rows["smmix"]["top1_std"] == pytest.approx(np.std(smmix, ddof=1))
    assert rows["none"]["top1_std"] == 0.0 and rows["smmix"]["seconds_per_run"] == 11.0
    d = report.compare(list(rows.values()), "smmix", "cutmix")
    se = np.sqrt(np.var(smmix, ddof=1) / 3 + np.var(cutmix, ddof=1) / 3)
    assert d.diff == pytest.approx(np.mean(smmix) - np.mean(cutmix))
    assert d.stderr == pytest.approx(se) and d.z == pytest.approx(d.diff / se)
    assert report.compare(list(rows.values()), "smmix", "mixup") is None

    metrics = report.write_report(str(tmp_path), runs, notes="a note", figure_seed=0)
    assert metrics["diff/smmix-cutmix_points"] == pytest.approx(100 * d.diff)
    assert json.load(open(tmp_path / "results.json"))["smmix/seeds"] == 3
    md = open(tmp_path / "results.md").read()
    assert "a note" in md and "| smmix - none |" in md and "n/a (1 seed)" in md
    assert (tmp_path / "top1.png").exists()
