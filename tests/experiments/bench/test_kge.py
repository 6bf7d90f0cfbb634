"""`experiments/bench/kge.py`: the device check at quick sizes (synthetic WN18RR-shaped data),
`train_recipe` stopped by its budget and resumed (function and flags),
the retrieval timing, and the PyKEEN side: its triples mapped through entities.dict drop no
valid / test triple."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import app

from experiments.bench import kge
from models.kge import MODELS
from research.datasets.paths import REPO_ROOT
from tests.conftest import SHARED_DATA


def test_step_check_rows():
    rows = kge.step_check(("fused",), models=("hake",), groups=(4,))  # 2 compilations
    assert [r["impl"] for r in rows] == ["hake-fused-groups4"]
    assert all(r["ok"] and r["grad_rel_err"] <= 1e-4 for r in rows)
    assert all(r["loss_rel_err"] <= 1e-5 for r in rows)


@pytest.mark.slow  # ~40 s on the 2-core CPU: 9 compilations
def test_gpu_check_quick_runs_on_cpu():
    rows = kge.gpu_check(data_dir=None, quick=True, impls=("fused",))
    ops = [r["op"] for r in rows]
    assert ops == ["kge_step_check"] * 4 + ["kge_train_step", "kge_eval"]
    assert [r["impl"] for r in rows[:4]] == [f"{m}-fused" for m in MODELS]
    assert all(r["ok"] for r in rows)
    assert all(r["grad_rel_err"] <= 1e-4 for r in rows[:4])
    step = rows[4]
    assert step["impl"] == "rotate-wn18rr-official-fused"
    assert step["ms_per_step"] > 0 and step["compile_s"] > 0 and step["steps_per_s"] > 0
    assert rows[5]["seconds"] > 0


def test_train_recipe_stops_on_the_budget_and_resumes(tmp_path):
    out, ckpt = str(tmp_path / "out"), str(tmp_path / "ckpt")
    first = kge.train_recipe("", out, ckpt, 0.0, quick=True)  # one call of 10 steps
    assert (first["start_step"], first["step"], first["finished"]) == (0, 10, False)
    assert first["stopped_by_budget"] and np.isfinite(first["test"]["mrr"])
    with open(os.path.join(out, "train_recipe.json")) as f:
        assert json.load(f)["step"] == 10
    assert os.path.exists(os.path.join(out, "train_recipe_metrics.jsonl"))
    done = kge.train_recipe("", out, ckpt, 1e6, quick=True)
    assert (done["start_step"], done["step"], done["finished"]) == (10, 40, True)
    assert [s for s, _ in done["loss_curve"]] == [10, 20, 30, 40]
    assert [s for s, _ in done["valid_mrr_curve"]] == [20, 40]
    assert done["steady_ms_per_step"] > 0


def test_train_recipe_flags(tmp_path):
    cmd = [sys.executable, "-m", "experiments.bench.kge", "--train_recipe", "--quick"]
    run = lambda *extra: subprocess.run(
        [*cmd, *extra], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )
    bad = run(f"--out={tmp_path}")
    assert bad.returncode != 0 and "--train_recipe needs --ckpt_dir" in bad.stderr
    ok = run(f"--out={tmp_path}", f"--ckpt_dir={tmp_path / 'ckpt'}", "--budget_s=0", "--impl=fused")
    assert ok.returncode == 0, ok.stderr[-2000:]
    with open(tmp_path / "train_recipe.json") as f:
        got = json.load(f)
    assert (got["step"], got["step_impl"]) == (10, "fused")


def test_synthetic_fallback_has_wn18rr_sizes():
    kg = kge.synthetic_like_wn18rr()
    assert kg.summary() == {
        "name": "synthetic-wn18rr",
        "entities": 40943,
        "relations": 11,
        "train": 86835,
        "valid": 3034,
        "test": 3134,
    }


WN18RR = os.path.join(SHARED_DATA, "kg", "WN18RR")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(WN18RR), reason="shared WN18RR not present")
def test_pykeen_mapping_drops_no_triple():
    py = kge.pykeen_python("build/venv-pykeen", create=False)
    if py is None:
        pytest.skip("pykeen: not installed (build/venv-pykeen)")
    out = kge.run_pykeen(py, WN18RR, "transe", dim=8, batch=64, negatives=2, seconds=0.1)
    assert out["dropped"] == {"train": 0, "valid": 0, "test": 0}
    assert out["pos_per_s"] > 0


def test_retrieval_block_time_runs_on_a_small_graph():
    kg = kge.synthetic_like_wn18rr(scale=0.01)
    got = kge.retrieval_block_time(kg, dim=8, rows=4, pairs=8, triple_ent_knn=20, triple_rel_knn=3)
    assert all(np.isfinite(v) and v > 0 for v in got.values()), got
    assert got["total_triple_s"] == got["triple_s"] * 2 * len(kg.train) / 4


@pytest.mark.skipif(not os.path.isdir(WN18RR), reason="shared WN18RR not present")
def test_recipe_config_is_the_official_rotate_stage_1():
    config = kge.recipe_config(WN18RR, impl="checkpoint")
    assert config.data_dir == WN18RR and not config.ankge.enabled
    assert (config.model.name, config.model.dim, config.model.gamma) == ("rotate", 500, 6.0)
    b = config.base
    assert (b.batch_size, b.num_negatives, b.lr, b.alpha_adv) == (512, 1024, 5e-5, 0.5)
    assert (b.num_steps, b.negative_groups, b.step_impl, config.steps_per_call) == (
        80_000,
        0,
        "checkpoint",
        50,
    )
    with pytest.raises(ValueError, match="config.base.step_impl = 'pallas'"):
        kge.recipe_config(WN18RR, impl="pallas")


def test_fastest_impl_skips_failed_checks():
    step = lambda impl, s, ok=True: {
        "op": "kge_train_step",
        "step_impl": impl,
        "seconds": s,
        "ok": ok,
    }
    check = lambda impl, ok: {"op": "kge_step_check", "impl": f"hake-{impl}-groups4", "ok": ok}
    rows = [check("fused", True), check("checkpoint", True), step("fused", 2.0)]
    assert kge.fastest_impl([*rows, step("checkpoint", 1.0)]) == "checkpoint"
    assert kge.fastest_impl([*rows, step("checkpoint", 1.0, ok=False)]) == "fused"
    assert kge.fastest_impl([check("fused", False), *rows[1:]]) == "auto"


@pytest.mark.slow  # ~30 s on the 2-core CPU
def test_device_run_checks_then_trains_with_the_time_left(tmp_path):
    out, ckpt = str(tmp_path / "out"), str(tmp_path / "ckpt")
    got = kge.device_run("", out, ckpt, 1e6, impls=("checkpoint",), quick=True)
    assert all(r["ok"] for r in got["gpu_check"])
    assert got["train_recipe"]["step_impl"] == "checkpoint"
    assert got["train_recipe"]["finished"]  # the quick recipe's 40 steps fit
    assert sorted(os.listdir(out)) == [
        "kge_bench.json",
        "train_recipe.json",
        "train_recipe_metrics.jsonl",
    ]
    # a later call on the same machine trains on with the impl this check chose
    rows = kge.read_check_rows(os.path.join(ckpt, "kge_bench.json"))
    assert kge.fastest_impl(rows) == "checkpoint"


def test_read_check_rows_names_the_missing_file(tmp_path):
    with pytest.raises(app.UsageError, match="written by --device_run"):
        kge.read_check_rows(str(tmp_path / "kge_bench.json"))


def test_device_run_trains_after_a_failed_check_and_keeps_the_reserve(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(kge, "gpu_check", broken)
    ckpt = str(tmp_path / "ckpt")
    late = kge.device_run("", str(tmp_path / "late"), ckpt, 30.0, reserve_s=30.0, quick=True)
    assert late["gpu_check"] == "RuntimeError: no kernel"
    assert late["train_recipe"].startswith("no time left for training")
    got = kge.device_run("", str(tmp_path / "out"), ckpt, 1e6, quick=True)
    assert got["gpu_check"] == "RuntimeError: no kernel"
    assert (got["train_recipe"]["step"], got["train_recipe"]["step_impl"]) == (40, "reference")
