"""The generated-pairs benchmark (`robustness.benchmark_pairs` / `summarise_benchmark`): one row
per pair and variant, a failed solve kept as a NaN row with its message, and the summary."""

import numpy as np
import pytest

from research.amm_nrr import robustness, solver
from research.datasets import registration_pairs as rp
from research.datasets.meshes import grid_surface
from research.training.errors import NonFiniteError


def test_benchmark_rows_and_summary(monkeypatch):
    base = grid_surface(10)
    pairs = {"grid": [rp.make_pair(base, "rbf_warp", c) for c in ("clean", "partial")]}
    variants = {
        "welsch": solver.Options(radius=3.0, max_iter=20),
        "l2": solver.Options(radius=3.0, max_iter=20, robust=False),
    }
    register = solver.register

    def failing_l2_on_partial(source, target, options, label):
        if not options.robust and "partial" in label:
            raise NonFiniteError(f"{label}: the energy is nan at iteration 3 of stage 0")
        return register(source, target, options, label=label)

    monkeypatch.setattr(solver, "register", failing_l2_on_partial)
    rows = robustness.benchmark_pairs(pairs, variants)
    assert [(r["corruption"], r["variant"]) for r in rows] == [
        ("clean", "welsch"),
        ("clean", "l2"),
        ("partial", "welsch"),
        ("partial", "l2"),
    ]
    for r in rows[:3]:
        assert r["error"] == "" and r["nodes"] > 0 and np.isfinite(r["rmse_overlap"])
    assert rows[0]["rmse"] < rows[0]["rmse_initial"] and rows[1]["rmse"] < rows[1]["rmse_initial"]
    assert np.isnan(rows[3]["rmse"]) and "iteration 3 of stage 0" in rows[3]["error"]
    summary = robustness.summarise_benchmark(rows, list(variants))
    clean, partial = summary
    assert (clean["metric"], partial["metric"]) == ("rmse", "rmse_overlap")
    assert clean["welsch"] == pytest.approx(rows[0]["rmse"])
    assert partial["initial"] == pytest.approx(rows[2]["rmse_overlap_initial"])
    assert np.isnan(partial["l2"]) and partial["l2 NaN / not improved"] == "1 / 1"
    assert clean["welsch NaN / not improved"] == "0 / 0"
