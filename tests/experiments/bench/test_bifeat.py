"""experiments/bench/bifeat.py with experiments/bench/bifeat_profile.py on a toy graph: one row
per store, phase times that add up, the baseline's ratios at 1."""

import pytest

from experiments.bench import bifeat


@pytest.mark.slow  # ~25 s on a 2-core CPU: two stores, each compiled and timed
def test_epoch_benchmark_rows():
    rows = bifeat.run_benchmark(
        num_nodes=4000,
        num_features=16,
        train_nodes=256,
        schemes="float32,sq2",
        hidden=16,
        batch_size=32,
        fanouts=(2, 3),
        log=lambda s: None,
    )
    assert [r["impl"] for r in rows] == ["float32", "sq2"]
    for r in rows:
        assert r["steps"] == 2  # 256 seeds / (32 per device x 4 devices)
        split = r["sampling_s"] + r["loading_s"] + r["compute_s"]
        assert r["split_epoch_s"] == pytest.approx(split)
        assert r["transfer_bytes_per_batch"] > 0 and r["input_nodes_per_batch"] > 0
    assert rows[0]["ratio_vs_baseline"] == pytest.approx(1.0)
    assert rows[1]["compression"] > 10
    assert "float32" in bifeat.summary_table(rows)
