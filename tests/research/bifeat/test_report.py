"""research/bifeat/report.py: seed statistics (sample std, Welch standard error of the
difference from float32) and the markdown tables."""

import math
from types import SimpleNamespace

import pytest

from research.bifeat import report


def _runs(scheme, accs, store_bytes=100.0):
    return [
        dict(
            scheme=scheme,
            seed=k,
            test_acc=a,
            val_acc=a - 0.01,
            last_test_acc=a - 0.02,
            store_bytes=store_bytes,
            compression_ratio=4.0,
            seconds=1.0,
        )
        for k, a in enumerate(accs)
    ]


def test_summarize_uses_sample_std_and_welch_stderr():
    runs = _runs("float32", [0.80, 0.82, 0.84]) + _runs("sq1", [0.70, 0.71, 0.72])
    base, sq1 = report.summarize(runs)
    assert base["test_acc_mean"] == pytest.approx(0.82)
    assert base["test_acc_std"] == pytest.approx(0.02)  # ddof 1 (ddof 0 would be 0.0163)
    assert sq1["test_acc_std"] == pytest.approx(0.01)
    se = 100 * math.sqrt(0.02**2 / 3 + 0.01**2 / 3)
    assert sq1["delta_vs_float32_points"] == pytest.approx(-11.0)
    assert sq1["delta_vs_float32_stderr_points"] == pytest.approx(se)
    assert sq1["delta_vs_float32_z"] == pytest.approx(-11.0 / se)
    assert sq1["exceeds_seed_spread"] is True
    assert base["delta_vs_float32_points"] == 0.0 and base["exceeds_seed_spread"] is None
    cells = report.table_rows([base, sq1])
    assert cells[1]["s.e. of Δ (points)"] == f"{se:.2f}"
    assert cells[1]["exceeds seed spread (> 2 s.e.)"] == "yes"
    assert cells[0]["s.e. of Δ (points)"] == ""
    assert all("|" not in str(v) for row in cells for v in [*row, *row.values()])


def test_small_differences_and_single_seeds():
    runs = _runs("float32", [0.80, 0.84]) + _runs("sq8", [0.81, 0.82])
    assert report.summarize(runs)[1]["exceeds_seed_spread"] is False
    one = report.summarize(_runs("float32", [0.8]) + _runs("sq2", [0.7]))
    assert one[1]["test_acc_std"] == 0.0 and one[1]["delta_vs_float32_stderr_points"] is None
    assert report.table_rows(one)[1]["exceeds seed spread (> 2 s.e.)"] == "n/a (1 seed)"
    alone = report.summarize(_runs("sq2", [0.7, 0.8]))[0]
    assert alone["delta_vs_float32_points"] is None and alone["exceeds_seed_spread"] is None


def test_edge_drop_table(tmp_path):
    graph = SimpleNamespace(name="toy", num_nodes=10)  # all the report reads of the graph
    per_variant = {
        ("none", 0.0, 40): _runs("float32", [0.8, 0.82]) + _runs("sq2", [0.79, 0.8]),
        ("random", 0.5, 20): _runs("float32", [0.7, 0.72]) + _runs("sq2", [0.6, 0.61]),
    }
    metrics = report.write_edge_drop_results(str(tmp_path), graph, per_variant, notes="Toy.")
    assert metrics["random-0.5/sq2/exceeds_seed_spread"] is True
    md = (tmp_path / "results.md").read_text()
    assert "sample standard deviation (ddof 1)" in md and "Toy." in md
    assert "| random | 0.5 | 2.00 | sq2 | 60.50 ± 0.71 | 10.50 |" in md
