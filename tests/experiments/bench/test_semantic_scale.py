"""experiments/bench/semantic_scale.py: one row per contender, CE the baseline."""

import pytest

from experiments.bench import semantic_scale


@pytest.mark.slow  # ~20 s on a 2-core CPU: three steps compiled, one round each
def test_step_benchmark_rows():
    rows = semantic_scale.bench_model("small_cnn", rounds=1)
    assert [r["impl"] for r in rows] == [
        "small_cnn ce", "small_cnn dsb_ce", "small_cnn dsb_ce/1"
    ]  # fmt: skip
    assert rows[0]["cost_vs_ce"] == pytest.approx(1.0)
    for r in rows:
        assert r["seconds"] > 0 and r["compile_seconds"] > 0
        assert r["cost_vs_ce"] == pytest.approx(r["seconds"] / rows[0]["seconds"])
