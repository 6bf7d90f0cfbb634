"""experiments/bench/bifeat.py with experiments/bench/bifeat_profile.py on a toy graph: one row
per store, phase times that add up, the baseline's ratios at 1."""

import json

import pytest

from experiments.bench import bifeat, bifeat_profile
from research.bifeat.stores import build_store
from research.datasets.graphs import synthetic_graph


@pytest.mark.slow  # ~25 s on a 2-core CPU: two stores, each compiled and timed
def test_epoch_benchmark_rows():
    rows = bifeat.run_benchmark(
        num_nodes=4000,
        num_features=16,
        train_nodes=256,
        schemes="float32,sq2",
        device_schemes="sq2",
        hidden=16,
        batch_size=32,
        fanouts=(2, 3),
        log=lambda s: None,
    )
    assert [(r["impl"], r["sampler"]) for r in rows] == [
        ("float32", "host"),
        ("sq2", "host"),
        ("sq2", "device"),
    ]
    for r in rows:
        assert r["steps"] == 2  # 256 seeds / (32 per device x 4 devices)
        split = r["sampling_s"] + r["loading_s"] + r["compute_s"]
        assert r["split_epoch_s"] == pytest.approx(split)
        assert r["input_nodes_per_batch"] > 0 and r["first_call_s"] > 0
        assert (r["transfer_bytes_per_batch"] > 0) == (r["sampler"] == "host")
    assert rows[0]["ratio_vs_baseline"] == pytest.approx(1.0)
    assert rows[1]["compression"] > 10
    assert "float32" in bifeat.summary_table(rows)


def test_compare_samplers_and_its_deadline(tmp_path):
    config = bifeat.cora_config(quick=True)  # tiny synthetic graph, float32-device, 2 epochs
    rows = bifeat.compare_samplers(config, str(tmp_path), num_seeds=2, log=lambda s: None)
    runs = {r["impl"]: r for r in rows if r["op"] == "bifeat_sampler_run"}
    assert runs["host"]["num_seeds"] == runs["device"]["num_seeds"] == 2
    assert runs["device"]["test_acc_mean"] > 0.7  # 4 classes: chance 0.25
    (check,) = [r for r in rows if r["op"] == "bifeat_sampler_accuracy"]
    assert check["ok"] is True and abs(check["diff_points"]) < 5
    assert bifeat.compare_samplers(config, str(tmp_path / "b"), num_seeds=2, deadline=0) == []
    config.schemes = "float32-device,sq2"
    with pytest.raises(ValueError, match="one scheme"):
        bifeat.compare_samplers(config, str(tmp_path), num_seeds=1)


def test_gpu_check_stops_at_its_budget(tmp_path):
    rows = bifeat.gpu_check(quick=True, budget_s=0, out=str(tmp_path), log=lambda s: None)
    assert rows == []  # every row starts after the deadline: skipped
    saved = json.load(open(tmp_path / "bifeat_gpu_check.json"))
    assert saved["meta"]["budget_s"] == 0 and saved["meta"]["quick"] is True
    logged = []
    missing = str(tmp_path / "no_cora")
    assert bifeat.gpu_check(budget_s=0, cora_dir=missing, log=logged.append) == []
    assert any("Cora not found" in line and "tiny graph instead" in line for line in logged)


def test_sampling_times_host_vs_device():
    graph = synthetic_graph(4000, num_features=8, num_classes=4, seed=0)
    setup = bifeat_profile.make_setup(
        graph, train_nodes=256, fanouts=(2, 3), batch_size=32, hidden=8, calibrate_batches=2
    )
    res = bifeat_profile.sampling_times(setup, build_store("sq2", graph.features, setup.mesh))
    assert set(res) == {
        f"{k}_{t}" for k in ("host", "device") for t in ("first_call_s", "per_batch_s")
    } | {"device_vs_host"}
    assert all(v > 0 for v in res.values())


def test_device_sampler_row():
    graph = synthetic_graph(4000, num_features=8, num_classes=4, seed=0)
    setup = bifeat_profile.make_setup(
        graph, train_nodes=256, fanouts=(2, 3), batch_size=32, hidden=8, calibrate_batches=2
    )
    row = bifeat.device_sampler_row(setup, batches=2)
    assert row["ok"] is True and row["rule_violations"] == 0
