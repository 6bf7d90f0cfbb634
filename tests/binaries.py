"""Running experiment binaries as real processes in tests, and reading their one-line errors."""

import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO_ROOT


def run_binary(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m module *args` from the repository root; stdout / stderr captured as text."""
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr lines that are not absl log records (those start with I/W/E and a date)."""
    return [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and not (line[:1] in "IWE" and line[1:5].isdigit())
    ]


def assert_one_error_line(proc: subprocess.CompletedProcess, expected: str) -> str:
    """The run failed with exit status 1 and exactly one error line, containing `expected`."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert expected in lines[0], lines[0]
    return lines[0]


def launched(command: list[str], num_processes: int = 2) -> list[str]:
    """`command` started as `num_processes` local processes of 2 CPU devices each
    (`experiments.launch`)."""
    launcher = [sys.executable, "-m", "experiments.launch", f"--num_processes={num_processes}"]
    return [*launcher, "--cpu_devices_per_process=2", "--", *command]


def cpu_env(devices: int | None = None) -> dict[str, str]:
    """The environment of a CPU-only child; `devices` sets its CPU device count."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    if devices:
        env["JAX_NUM_CPU_DEVICES"] = str(devices)
    return env


def run_ok(
    cmd: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess:
    """Runs `cmd` from the repository root and asserts it exits 0 (its output tail if not)."""
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def one_and_two_processes(command, root) -> tuple[str, str, str]:
    """`command(workdir)` run as 1 process of 4 CPU devices in `root/one_process` and as 2
    processes of 2 devices in `root/two_processes`; returns both workdirs and the 2-process
    run's output (lines prefixed with [i] by the launcher)."""
    one, two = str(root / "one_process"), str(root / "two_processes")
    run_ok(command(one), cpu_env(devices=4))
    return one, two, run_ok(launched(command(two)), cpu_env()).stdout


def npz_arrays(path: str) -> dict:
    """The arrays of an .npz file, by name."""
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def assert_arrays_close(got: dict, want: dict, atol: float, label: str = "") -> None:
    """The same names, and every array within `atol` (absolute) of its twin."""
    assert got.keys() == want.keys(), label
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=atol, err_msg=f"{label}{key}")
