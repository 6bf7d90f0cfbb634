"""The shared training library in several processes, proven on the toy trainer run as real
processes: 2 processes x 2 CPU devices (`experiments.launch`, gloo collectives) train exactly as
1 process x 4 devices, process 0 alone writes the workdir's files, a run that loses a process
after its first checkpoint resumes from it and ends as the uninterrupted run does, a broken
checkpoint is moved away once, and a workdir locked by another run stops every process."""

import fcntl
import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from research.training.metrics import read_metrics
from tests.binaries import (
    assert_arrays_close,
    assert_same_training_curve,
    cpu_env,
    launched,
    npz_arrays,
    one_and_two_processes,
    read_json,
    run_ok,
)
from tests.conftest import REPO_ROOT
from tests.research.training import toy_regression as toy

TOLERANCE = 1e-6  # the cross-process all-reduce may add floats in another order
TIMEOUT = 120


def toy_command(workdir, *extra):
    cmd = [sys.executable, "-m", toy.MODULE, f"--config={toy.CONFIG_FILE}:tiny"]
    return [*cmd, f"--workdir={workdir}", *extra]


def params_of(workdir):
    return npz_arrays(os.path.join(workdir, "final_params.npz"))


def assert_same_params(got, want):
    assert_arrays_close(got, want, TOLERANCE)


def assert_same_metrics(got_dir, want_dir):
    assert_same_training_curve(got_dir, want_dir, skip_timings=True, rel=0, abs=TOLERANCE)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The toy run as 1 process of 4 devices and as 2 processes of 2 devices."""
    return one_and_two_processes(toy_command, tmp_path_factory.mktemp("runs"))


def test_two_processes_train_as_one_process_of_four_devices(runs):
    one, two, stdout = runs
    assert "[1] " in stdout and "process 1 of 2: 2 local devices" in stdout
    assert_same_params(params_of(two), params_of(one))
    assert_same_metrics(two, one)
    results = [read_json(d, "results.json") for d in (one, two)]
    assert results[1]["test_mse"] == pytest.approx(results[0]["test_mse"], abs=TOLERANCE)
    # Every process returns the run's metrics; both print them.
    assert stdout.count('"test_mse"') == 2


def test_process_0_alone_writes_the_workdir(runs):
    _, two, _ = runs
    records = read_metrics(two)
    assert [r["step"] for r in records] == list(range(5, 41, 5))  # one line per logged step
    assert len(os.listdir(os.path.join(two, "tensorboard"))) == 1  # one event file
    names = set(os.listdir(two))
    assert {"config.json", "results.json", "results.md", "final_params.npz"} <= names
    assert not [n for n in names if ".tmp" in n]
    assert read_json(two, "config.json")["hidden"] == 16
    assert sorted(os.listdir(os.path.join(two, "checkpoints")), key=int) == ["20", "30", "40"]
    meta = sorted(os.listdir(os.path.join(two, "checkpoints_meta")))
    assert meta == ["20.json", "30.json", "40.json"]


def _child(launcher, process_id, deadline):
    """The launcher's child process `process_id`."""
    flag = f"--process_id={process_id}"
    while time.time() < deadline:
        for child in psutil.Process(launcher.pid).children():
            try:
                if flag in child.cmdline():
                    return child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.02)
    pytest.fail(f"no child with {flag}")


def test_a_process_killed_after_the_first_checkpoint_resumes_to_the_same_result(runs, tmp_path):
    _, reference, _ = runs
    workdir = tmp_path / "killed"
    command = launched(toy_command(workdir, "--config.step_sleep=0.05"))
    launcher = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=cpu_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + TIMEOUT
        process_1 = _child(launcher, 1, deadline)
        checkpoints = workdir / "checkpoints"
        while not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
            assert launcher.poll() is None, "the run ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint appeared in time"
            time.sleep(0.02)
        process_1.send_signal(signal.SIGKILL)
        # The launcher sees process 1 die and stops process 0.
        assert launcher.wait(timeout=60) == 128 + signal.SIGKILL
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert not (workdir / "final_params.npz").exists(), "the run finished before the kill"

    rerun = run_ok(command, cpu_env())
    resumed = [line for line in rerun.stdout.splitlines() if "resuming toy from step" in line]
    assert sorted(line[:4] for line in resumed) == ["[0] ", "[1] "], rerun.stdout[-4000:]
    assert_same_params(params_of(workdir), params_of(reference))
    assert_same_metrics(str(workdir), reference)


def test_a_broken_checkpoint_is_moved_once_and_every_process_resumes_from_the_previous(
    runs, tmp_path
):
    _, reference, _ = runs
    workdir = tmp_path / "broken"
    shutil.copytree(reference, workdir)
    chunks = glob.glob(str(workdir / "checkpoints" / "40" / "**" / "d" / "*"), recursive=True)
    assert chunks
    rng = np.random.default_rng(0)
    for chunk in chunks:  # the array data, overwritten with random bytes
        with open(chunk, "r+b") as f:
            f.write(rng.integers(0, 256, os.path.getsize(chunk), dtype=np.uint8).tobytes())
    rerun = run_ok(launched(toy_command(workdir)), cpu_env())
    lines = rerun.stdout.splitlines()
    for needle in ("checkpoints/40 is unusable", "resuming toy from step 30"):
        found = [line[:4] for line in lines if needle in line]
        assert sorted(found) == ["[0] ", "[1] "], (needle, rerun.stdout[-4000:])
    moved = sorted(os.listdir(workdir / "checkpoints_unreadable"))  # by process 0 alone
    assert len(moved) == 2 and moved[0].startswith("40-") and moved[1] == f"{moved[0]}.meta.json"
    assert sorted(os.listdir(workdir / "checkpoints"), key=int) == ["20", "30", "40"]
    assert_same_params(params_of(workdir), params_of(reference))


def test_a_workdir_locked_by_another_run_stops_every_process_with_one_line(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    fd = os.open(workdir / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        proc = subprocess.run(
            launched(toy_command(workdir)),
            cwd=REPO_ROOT,
            env=cpu_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    finally:
        os.close(fd)
    assert proc.returncode == 1, proc.stdout[-4000:]
    errors = sorted(line for line in proc.stdout.splitlines() if ": error: " in line)
    assert len(errors) == 2, proc.stdout[-4000:]
    assert errors[0].startswith("[0] ") and f"in use by process {os.getpid()}" in errors[0]
    assert errors[1].startswith("[1] ") and "process 0 of this run could not lock" in errors[1]
    assert sorted(os.listdir(workdir)) == [".lock"]  # nothing written
