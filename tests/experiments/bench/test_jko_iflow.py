"""The JKO-iFlow device entry points (`gpu_check`, `run_rose`) at tiny sizes on the CPU."""

import json

import numpy as np
import pytest

from experiments.bench import jko_iflow
from experiments.configs.jko_iflow import get_config


def test_gpu_check_quick_times_both_traces_with_compile_separate():
    rows = jko_iflow.gpu_check(quick=True, repeats=2)
    assert [r["impl"].split(",")[1].strip() for r in rows] == ["hutchinson trace", "exact trace"]
    for r in rows:
        assert r["ok"] and r["ms_per_iter"] == pytest.approx(1e3 * r["seconds"])
        assert 0 < r["seconds"] and r["compile_seconds"] >= 0
        assert r["first_call_seconds"] >= r["compile_seconds"]
        assert r["ratio_vs_official_gpu_low"] == pytest.approx(0.04 / r["seconds"])
        assert r["ratio_vs_official_gpu_high"] == pytest.approx(0.07 / r["seconds"])
        assert r["meets_target"] is False  # only ever true on a GPU
    assert [r["preset_divergence"] for r in rows] == [True, False]  # rose uses Hutchinson


def test_gpu_check_skips_what_is_left_once_its_budget_is_spent():
    rows = jko_iflow.gpu_check(quick=True, repeats=1, budget_s=0.0)
    assert rows[0]["ok"] and "skipped" not in rows[0]  # the first trace is always timed
    assert rows[1]["skipped"] == "budget of 0 s spent" and "ok" not in rows[1]


def _tiny_config():
    config = get_config("tiny")
    config.baseline.enabled = False
    config.jko.iters_per_block = 10
    return config


def test_run_rose_over_budget_stops_and_says_so(tmp_path):
    summary = jko_iflow.run_rose(str(tmp_path), 1e-9, config=_tiny_config())
    assert summary["status"] == "budget exceeded" and summary["nll"] is None
    with open(tmp_path / "jko_rose.json") as f:
        assert json.load(f)["status"] == "budget exceeded"


@pytest.mark.slow  # 12-24 s on the 2-core CPU (evaluation and compilation, not the 20 steps)
def test_run_rose_end_to_end_reports_nll_beside_the_recorded_one(tmp_path):
    summary = jko_iflow.run_rose(str(tmp_path), 600.0, config=_tiny_config())
    assert summary["status"] == "ok" and summary["density"] == "8gaussians"
    assert np.isfinite(summary["nll"]) and summary["recorded_nll"] == 3.012
    assert summary["nll_minus_recorded"] == pytest.approx(summary["nll"] - 3.012)
    assert summary["train_steps"] == 2 * 10
    assert summary["estimated_s_at_5ms_per_iter"] == pytest.approx(
        20 * 0.005 + summary["wall_s"] - summary["train_seconds"]
    )
    with open(tmp_path / "jko_rose.json") as f:
        assert json.load(f)["nll"] == summary["nll"]


def test_run_rose_needs_one_density(tmp_path):
    config = _tiny_config()
    config.densities = "8gaussians,moons"
    with pytest.raises(ValueError, match="run_rose runs one density"):
        jko_iflow.run_rose(str(tmp_path), 10.0, config=config)
