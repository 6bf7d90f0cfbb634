"""No silent wrong results: run identity, NaN guards, checkpoint integrity, one writer per
workdir. The binary cases run the toy experiment as real processes."""

import glob
import json
import os
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from research.training import identity, results
from research.training.checkpoint import Checkpointer
from research.training.errors import NonFiniteError, RunMismatchError
from tests.binaries import error_lines
from tests.conftest import REPO_ROOT
from tests.research.training import toy_regression as toy


def run_toy(workdir, *extra, check=False):
    cmd = [sys.executable, "-m", toy.MODULE, f"--config={toy.CONFIG_FILE}:tiny"]
    cmd += [f"--workdir={workdir}", *extra]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=check)


def params_of(workdir):
    with np.load(os.path.join(workdir, "final_params.npz")) as f:
        return {k: f[k] for k in f.files}


def test_rerun_with_another_config_stops_and_fresh_starts_over(tmp_path):
    workdir = str(tmp_path / "w")
    run_toy(workdir, check=True)
    before = params_of(workdir)
    for extra, field in [
        (("--config.learning_rate=1e30",), "learning_rate 0.05 -> 1e+30"),
        (("--config.hidden=64",), "hidden 16 -> 64"),
    ]:
        proc = run_toy(workdir, *extra)
        assert proc.returncode == 1
        (line,) = error_lines(proc)
        assert f"workdir {workdir} holds runs of a different config ({field})" in line
        assert "--fresh" in line
    # Nothing was reused, quarantined or overwritten.
    assert not os.path.exists(os.path.join(workdir, "checkpoints_unreadable"))
    assert json.load(open(os.path.join(workdir, "config.json")))["hidden"] == 16
    for k, v in params_of(workdir).items():
        np.testing.assert_array_equal(v, before[k])
    # Selection and bookkeeping fields may change; --fresh starts over with the new config.
    run_toy(workdir, "--config.log_every=10", check=True)
    run_toy(workdir, "--config.hidden=8", "--fresh", check=True)
    assert params_of(workdir)["['params']['Dense_0']['kernel']"].shape == (8, 1)  # hidden 8


def test_a_checkpoint_of_another_run_raises_instead_of_being_quarantined(tmp_path):
    config = toy.get_config("tiny")
    workdir = str(tmp_path / "w")
    with identity.running(config):
        toy.train_and_evaluate(config, workdir)
    config.learning_rate = 0.5
    with identity.running(config), pytest.raises(RunMismatchError, match="learning_rate"):
        toy.train_and_evaluate(config, workdir)
    # Without an identity (library use) a shape change is still told apart from corruption.
    config.hidden = 64
    with pytest.raises(RunMismatchError, match="other shapes"):
        toy.train_and_evaluate(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["20", "30", "40"]


def test_a_stage_narrowed_with_without_is_shared_by_runs_differing_only_outside_it(tmp_path):
    path = str(tmp_path / "base" / "result.json")
    first = {"base": {"lr": 1.0}, "ankge": {"steps": 10}}

    def stage(config, compute):
        with identity.running(config), identity.without("ankge."):
            return results.cached_result(path, compute)

    stage(first, lambda: {"mrr": 0.5})
    assert json.load(open(path))["_run_config"] == {"base.lr": 1.0}
    recomputed = lambda: pytest.fail("the finished stage was recomputed")
    assert stage({**first, "ankge": {"steps": 20}}, recomputed)["mrr"] == 0.5
    with pytest.raises(RunMismatchError, match="base.lr 1.0 -> 2.0"):
        stage({**first, "base": {"lr": 2.0}}, recomputed)
    # a result stored under the whole identity (before the stage was narrowed) still matches
    with identity.running(first):
        results.cached_result(str(tmp_path / "wide.json"), lambda: {"mrr": 0.25})
    with identity.running({**first, "ankge": {"steps": 20}}), identity.without("ankge."):
        assert results.cached_result(str(tmp_path / "wide.json"), recomputed)["mrr"] == 0.25


def test_nan_loss_stops_with_the_step_and_keeps_the_last_finite_checkpoint(tmp_path):
    workdir = str(tmp_path / "w")
    proc = run_toy(workdir, "--config.nan_from_step=23")
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert "the loss is nan at step 25" in line and "last finite checkpoint: step 20" in line
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int)[-1] == "20"
    assert not os.path.exists(os.path.join(workdir, "final_params.npz"))


def test_a_state_with_nan_is_never_saved(tmp_path):
    checkpointer = Checkpointer(str(tmp_path / "ckpt"), save_every=1)
    checkpointer.save(1, {"w": jnp.ones(3)})
    with pytest.raises(NonFiniteError, match=r"step 2 holds NaN.*last finite checkpoint: step 1"):
        checkpointer.save(2, {"w": jnp.array([1.0, jnp.nan, 0.0])})
    checkpointer.close()
    assert checkpointer.all_steps() == [1]


def _overwrite_with_random_bytes(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True)]
    data = [f for f in files if os.path.isfile(f) and "/d/" in f]  # the array chunks
    assert data
    rng = np.random.default_rng(0)
    for f in data:
        size = os.path.getsize(f)
        with open(f, "r+b") as fh:
            fh.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())


def test_checkpoint_overwritten_with_random_bytes_is_quarantined(tmp_path):
    reference = str(tmp_path / "reference")
    run_toy(reference, check=True)
    workdir = str(tmp_path / "w")
    run_toy(workdir, check=True)
    _overwrite_with_random_bytes(os.path.join(workdir, "checkpoints", "40"))
    proc = run_toy(workdir, check=True)
    assert "checkpoints/40 is unusable" in proc.stderr
    assert os.listdir(os.path.join(workdir, "checkpoints_unreadable"))
    assert "resuming toy from step 30" in proc.stderr
    for k, v in params_of(reference).items():
        np.testing.assert_array_equal(params_of(workdir)[k], v)


def test_checksum_mismatch_and_non_finite_checkpoints_fall_back(tmp_path, caplog):
    directory = str(tmp_path / "ckpt")
    checkpointer = Checkpointer(directory, save_every=1)
    for step in (1, 2, 3):
        checkpointer.save(step, {"w": jnp.full(3, float(step))})
    checkpointer.close()
    meta = os.path.join(directory + "_meta", "3.json")
    record = json.load(open(meta))
    json.dump({**record, "sha256": "0" * 64}, open(meta, "w"))
    restored, step = Checkpointer(directory, save_every=1).restore_latest({"w": jnp.zeros(3)})
    assert step == 2 and float(restored["w"][0]) == 2.0
    assert "do not match the checksum" in caplog.text


def test_a_second_run_on_a_workdir_in_use_stops_naming_the_holder(tmp_path):
    workdir = str(tmp_path / "w")
    cmd = [sys.executable, "-m", toy.MODULE, f"--config={toy.CONFIG_FILE}:tiny"]
    first = subprocess.Popen(
        [*cmd, f"--workdir={workdir}", "--config.step_sleep=0.1"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(workdir, "config.json")):
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
        second = run_toy(workdir)
        assert second.returncode == 1
        (line,) = error_lines(second)
        assert f"workdir {workdir} is in use by process {first.pid}" in line
    finally:
        first.kill()
        first.wait()
    # The lock dies with its holder (even by SIGKILL): the next run proceeds and resumes.
    run_toy(workdir, "--config.step_sleep=0.1", check=True)
    assert os.path.exists(os.path.join(workdir, "final_params.npz"))


def test_a_workdir_under_a_file_is_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    proc = run_toy(str(a_file / "sub"))
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert "Not a directory" in line and str(a_file / "sub") in line
