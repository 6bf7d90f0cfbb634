"""Running experiment binaries as real processes in tests, and reading their one-line errors."""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from research.training.metrics import read_metrics
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


def experiment_command(module: str, config: str, overrides=()):
    """`workdir -> [python, -m, module, --config=config, *overrides, --workdir=workdir]`."""

    def command(workdir) -> list[str]:
        return [
            sys.executable,
            "-m",
            module,
            f"--config={config}",
            *overrides,
            f"--workdir={workdir}",
        ]

    return command


def one_and_two_processes(command, root, timeout: float = 300) -> tuple[str, str, str]:
    """`command(workdir)` run as 1 process of 4 CPU devices in `root/one_process` and as 2
    processes of 2 devices in `root/two_processes`, each run within `timeout` seconds (room for a
    loaded machine); returns both workdirs and the 2-process run's output (lines prefixed with
    [i] by the launcher)."""
    one, two = str(root / "one_process"), str(root / "two_processes")
    run_ok(command(one), cpu_env(devices=4), timeout=timeout)
    return one, two, run_ok(launched(command(two)), cpu_env(), timeout=timeout).stdout


def read_json(workdir: str, name: str):
    """The JSON value of the file `name` in `workdir`."""
    with open(os.path.join(workdir, name)) as f:
        return json.load(f)


def printed_metrics(stdout: str, process: int) -> dict:
    """The metrics (a JSON object, its lines from the last one that is `{`) that `process`
    printed at its end, read from the launcher's output (it prefixes their lines with [i])."""
    prefix = f"[{process}] "
    lines = [line[len(prefix) :] for line in stdout.splitlines() if line.startswith(prefix)]
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def workdir_files(workdir: str, skip=("checkpoints", "tensorboard")) -> set[str]:
    """Relative paths of the workdir's files, outside folders named in `skip`: by default the
    checkpoints' (orbax writes a folder per process there) and TensorBoard's (event files named
    by pid)."""
    out = set()
    for root, dirs, files in os.walk(workdir):
        dirs[:] = [d for d in dirs if d not in skip]
        out |= {os.path.relpath(os.path.join(root, f), workdir) for f in files}
    return out


# Keys of wall-clock figures, which differ between runs: `*seconds*` (`train_seconds`,
# `seconds_per_step`), `*per_second*`, rates and durations ending `_s` (`steps_per_s`,
# `images_per_s`, `solve_s`) or `_ms` (`train_step_ms`), and `time` (a solver log's).
TIMINGS = re.compile(r"seconds|per_second|_s$|_ms$|^time$")


def without_timings(record):
    """A JSON value with every key that names a wall-clock figure (`TIMINGS`, at any depth)
    left out."""
    if isinstance(record, dict):
        return {k: without_timings(v) for k, v in record.items() if not TIMINGS.search(k)}
    if isinstance(record, list):
        return [without_timings(v) for v in record]
    return record


def assert_json_close(
    got,
    want,
    where: str = "",
    *,
    rel: float = 1e-6,
    abs: float = 1e-12,  # noqa: A002 (pytest.approx's name)
    nan_ok: bool = False,
    rel_where: dict[str, float] | None = None,
    skip_timings: bool = False,
) -> None:
    """JSON values alike: objects with the same keys and lists of the same length, compared
    element by element; floats within `rel` (relative) or `abs` (absolute) of their twin (NaN
    equal to NaN only with `nan_ok`); everything else equal. `rel_where` maps a part of the path
    (`where/key[i]...`) to the relative tolerance of the floats under it. `skip_timings`: keys
    matching `TIMINGS` must be on both sides, their values are not compared (leave them out of
    both with `without_timings` to let either side lack them)."""
    kwargs = dict(rel=rel, abs=abs, nan_ok=nan_ok, rel_where=rel_where, skip_timings=skip_timings)
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            if not (skip_timings and TIMINGS.search(key)):
                assert_json_close(got[key], want[key], f"{where}/{key}", **kwargs)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_json_close(g, w, f"{where}[{i}]", **kwargs)
    elif isinstance(want, float):
        tolerance = next((t for part, t in (rel_where or {}).items() if part in where), rel)
        if nan_ok and math.isnan(want):
            assert isinstance(got, float) and math.isnan(got), where
        else:
            assert got == pytest.approx(want, rel=tolerance, abs=abs), where
    else:
        assert got == want, where


def npz_arrays(*path: str) -> dict:
    """The arrays of an .npz file (at `os.path.join(*path)`), by name."""
    with np.load(os.path.join(*path)) as f:
        return {k: f[k] for k in f.files}


def assert_arrays_close(got: dict, want: dict, atol: float, label: str = "") -> None:
    """The same names, and every array within `atol` (absolute) of its twin."""
    assert got.keys() == want.keys(), label
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=atol, err_msg=f"{label}{key}")


def assert_same_training_curve(got_dir, want_dir, where="", *, steps=None, **tolerances):
    """The metrics.jsonl of two runs alike: the same logged steps (`steps`, when given), every
    record with the same names and its values within `tolerances` (`assert_json_close`'s),
    timings left out of both (or, with `skip_timings=True`, on both sides but not compared).
    Returns both curves, (got, want), for further checks."""
    got, want = read_metrics(got_dir), read_metrics(want_dir)
    assert [r["step"] for r in got] == [r["step"] for r in want], where
    if steps is not None:
        assert [r["step"] for r in want] == list(steps), where
    if not tolerances.get("skip_timings"):
        got, want = without_timings(got), without_timings(want)
    assert_json_close(got, want, f"{where} metrics.jsonl", **tolerances)
    return got, want
