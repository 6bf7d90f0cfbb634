"""experiments/bench/bifeat.py with experiments/bench/bifeat_profile.py on a toy graph: one row
per store, phase times that add up, the baseline's ratios at 1."""

import json
import time
from types import SimpleNamespace

import numpy as np
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
    assert "target epochs" not in saved["meta"]["part_seconds"]  # skipped before any work
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


def _fake_epoch_row(name, sampler, epoch_s, base=None):
    """An epoch row as `epoch_rows` makes it, from made-up timings (no training)."""
    compressed = name not in ("float32", "float32-device")
    store = SimpleNamespace(
        location="host" if name == "float32" else "device",
        nbytes=1000 if compressed else 16000,
        compression_ratio=16.0 if compressed else 1.0,
    )
    res = dict(
        steps=3,
        sampling_s=epoch_s / 2,
        loading_s=epoch_s / 4,
        compute_s=epoch_s / 4,
        split_epoch_s=epoch_s,
        epoch_s=epoch_s,
        transfer_bytes_per_batch=0 if sampler == "device" else 10,
        first_call_s=1.0,
        first_loss=3.0,
        final_loss=2.5,
    )
    return bifeat._epoch_row(name, sampler, store, res, base or res, 100, 8)


def test_gpu_check_runs_the_target_rows_first_when_the_rest_is_slow(monkeypatch, tmp_path):
    """The target rows come first and are all measured although the correctness part alone
    takes longer than the whole budget; what runs after it is cut by the budget."""
    calls = []

    def epoch_rows(setup, plan, *, baseline=None, deadline, log):
        calls.append(("epochs", tuple(plan)))
        rows = []
        for name, kind in plan:
            if time.perf_counter() > deadline:
                log(f"{name} ({kind} sampler): skipped (time budget spent)")
                continue
            epoch_s = {"float32": 3.0, "sq2": 0.75, "vq16x256": 1.5}.get(name, 2.0)
            rows.append(_fake_epoch_row(name, kind, epoch_s, baseline or (rows or [None])[0]))
        return rows

    def slow_store_rows(num_nodes, *, deadline, log):
        calls.append(("store rows",))
        time.sleep(1.0)  # longer than the budget
        return [bifeat.record("bifeat_store_rows", "sq2", (1,), "float32", 1.0, ok=True)]

    def compare(config, workdir, *, num_seeds, deadline, log):
        calls.append(("compare", num_seeds))
        return []

    monkeypatch.setattr(bifeat, "epoch_setup", lambda *a, **k: SimpleNamespace())
    monkeypatch.setattr(bifeat, "epoch_rows", epoch_rows)
    monkeypatch.setattr(bifeat, "store_rows", slow_store_rows)
    monkeypatch.setattr(bifeat, "compare_samplers", compare)
    monkeypatch.setattr(bifeat, "device_sampler_row", lambda setup, batches: calls.append("dsr"))
    logged = []
    rows = bifeat.gpu_check(quick=True, budget_s=0.5, out=str(tmp_path), log=logged.append)

    assert calls[:3] == [("epochs", bifeat.GPU_TARGET_ROWS), ("compare", 5), ("store rows",)]
    assert calls[-1] == ("epochs", bifeat.GPU_EXTRA_ROWS)  # called, but past the budget
    assert "dsr" not in calls  # the slow store rows used the time left
    n = len(bifeat.GPU_TARGET_ROWS)
    assert [(r["impl"], r["sampler"]) for r in rows[:n]] == list(bifeat.GPU_TARGET_ROWS)
    assert not any(r["op"] == "bifeat_epoch" for r in rows[n:])  # no extra epoch row
    (target,) = [r for r in rows if r["op"] == "bifeat_epoch_target"]
    assert target["met"] is True and target["best_speedup"] == pytest.approx(4.0)
    assert target["measured"] == "sq2:4.0x vq16x256:2.0x"
    losses = [r for r in rows if r["op"] == "bifeat_train_loss"]
    assert len(losses) == n and all(r["ok"] for r in losses)
    assert any("target (>= 3.0x" in line and "met (sq2:4.0x" in line for line in logged)
    assert any("sq1 (device sampler): skipped" in line for line in logged)
    saved = json.load(open(tmp_path / "bifeat_gpu_check.json"))
    assert set(saved["meta"]["part_seconds"]) == {
        "target epochs",
        "sampler comparison",
        "correctness",
        "extra epochs",
    }
    with pytest.raises(ValueError, match="target_share"):
        bifeat.gpu_check(budget_s=1, target_share=0.8, compare_share=0.3)


def test_target_and_loss_rows():
    base = _fake_epoch_row("float32", "host", 3.0)
    slow = _fake_epoch_row("sq2", "device", 1.5, base)  # 2x
    host_sq2 = _fake_epoch_row("sq2", "host", 0.5, base)  # 6x, but the host sampler
    fp_dev = _fake_epoch_row("float32-device", "device", 0.5, base)  # 6x, not compressed
    target = bifeat.target_row([base, slow, host_sq2, fp_dev])
    assert target["met"] is False and target["measured"] == "sq2:2.0x"
    assert bifeat.target_row([base, fp_dev])["met"] is None  # nothing to judge: not measured
    assert bifeat.target_row([base, _fake_epoch_row("sq2", "device", 1.0, base)])["met"] is True
    up = {**slow, "final_loss": 3.5}
    nan = {**slow, "first_loss": float("nan")}
    assert [r["ok"] for r in bifeat.loss_rows([base, up, nan])] == [True, False, False]
    failed = bifeat.failure_record("bifeat_epoch", "vq16x256", (100,), "float32", MemoryError())
    assert bifeat.loss_rows([failed]) == [] and bifeat.target_row([base, failed])["met"] is None
    table = bifeat.summary_table([base, failed])
    assert "float32" in table and "vq16x256" not in table


def test_epoch_rows_needs_a_host_baseline_first():
    with pytest.raises(ValueError, match="host sampler"):
        bifeat.epoch_rows(None, [("sq2", "device")])


def test_store_rows_match_decoded_codes():
    rows = bifeat.store_rows(600, schemes="float32,sq2,sq1+cache", log=lambda s: None)
    assert [r["impl"] for r in rows] == ["float32", "sq2", "sq1+cache"]
    assert all(r["ok"] for r in rows)
    assert rows[1]["max_rel_err"] < 1e-5 and np.isfinite(rows[2]["max_rel_err"])
    assert bifeat.store_rows(600, deadline=0, log=lambda s: None) == []
