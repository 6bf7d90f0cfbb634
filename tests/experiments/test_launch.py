"""experiments.launch: N local processes of one command, their output prefixed, a failure stops
the rest; experiment binaries refuse to run as several processes until they support it."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from experiments import launch
from tests.binaries import assert_one_error_line, run_binary
from tests.conftest import REPO_ROOT
from tests.research.training import toy_regression as toy


def run_launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "experiments.launch", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def script(tmp_path, text: str) -> str:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_parse_args_splits_the_launcher_flags_from_the_command():
    args, command = launch.parse_args(["--num_processes=3", "--", "python", "-m", "x", "--a=1"])
    assert (args.num_processes, args.port, args.cpu_devices_per_process) == (3, 0, 2)
    assert command == ["python", "-m", "x", "--a=1"]
    with pytest.raises(SystemExit):
        launch.parse_args(["--num_processes=2"])


def test_child_command_and_environment():
    assert launch.child_command(["prog", "--x"], "127.0.0.1:5", 2, 1) == [
        "prog",
        "--x",
        "--coordinator_address=127.0.0.1:5",
        "--num_processes=2",
        "--process_id=1",
    ]
    env = launch.child_env({"JAX_PLATFORMS": "cuda"}, cpu_devices=3)
    assert env["JAX_NUM_CPU_DEVICES"] == "3" and env["JAX_PLATFORMS"] == "cuda"
    env = launch.child_env({}, cpu_devices=0)
    assert "JAX_NUM_CPU_DEVICES" not in env and env["JAX_PLATFORMS"] == "cpu"
    assert launch.exit_status(-signal.SIGTERM) == 143 and launch.exit_status(3) == 3


def test_two_processes_run_and_their_output_is_prefixed(tmp_path):
    child = script(
        tmp_path,
        """
        import argparse
        from research.training import distributed

        parser = argparse.ArgumentParser()
        for name in ("coordinator_address", "num_processes", "process_id"):
            parser.add_argument("--" + name)
        a = parser.parse_args()
        distributed.initialize(a.coordinator_address, int(a.num_processes), int(a.process_id))
        import jax
        print(f"process_id={a.process_id} num_processes={a.num_processes} "
              f"devices={jax.device_count()} address={a.coordinator_address}")
        """,
    )
    proc = run_launch("--num_processes=2", "--", sys.executable, child)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "process_id=" in line]
    assert sorted(line.split(" address=")[0] for line in lines) == [
        "[0] process_id=0 num_processes=2 devices=4",
        "[1] process_id=1 num_processes=2 devices=4",
    ]
    assert len({line.split(" address=127.0.0.1:")[1] for line in lines}) == 1  # one port


def test_a_failing_process_stops_the_others_and_sets_the_status(tmp_path):
    pid_file = tmp_path / "pid"
    child = script(
        tmp_path,
        f"""
        import os, sys, time
        pid_file = {str(pid_file)!r}
        if sys.argv[-1] == "--process_id=1":
            while not os.path.exists(pid_file):  # process 0 is running
                time.sleep(0.05)
            print("failing", flush=True)
            sys.exit(3)
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pid_file + ".tmp", pid_file)
        time.sleep(60)
        """,
    )
    start = time.monotonic()
    proc = run_launch("--num_processes=2", "--", sys.executable, child, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert time.monotonic() - start < 30
    assert "[1] failing" in proc.stdout
    with pytest.raises(ProcessLookupError):  # process 0 was stopped
        os.kill(int(pid_file.read_text()), 0)


def test_stop_kills_a_process_that_ignores_sigterm():
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(1, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
    )
    proc.stdout.readline()  # the handler is installed
    start = time.monotonic()
    launch.stop([proc], grace=0.5)
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - start < 10
    proc.stdout.close()


def test_a_binary_not_written_for_several_processes_refuses_to_run_as_several(tmp_path):
    binary = script(
        tmp_path,
        """
        from experiments.app import run

        def train_and_evaluate(config, workdir):
            return {"trained": 1}

        if __name__ == "__main__":
            run(train_and_evaluate)  # multi_process not set
        """,
    )
    workdir = tmp_path / "run"
    proc = run_launch(
        "--num_processes=2",
        "--",
        sys.executable,
        binary,
        f"--config={toy.CONFIG_FILE}:tiny",
        f"--workdir={workdir}",
    )
    assert proc.returncode == 1, proc.stdout[-3000:]
    refusal = "error: child.py does not support several processes yet"
    refusals = [line for line in proc.stdout.splitlines() if refusal in line]
    assert sorted(line[:4] for line in refusals) == ["[0] ", "[1] "], proc.stdout[-3000:]
    assert not workdir.exists()  # refused before the workdir lock was taken


def test_partial_process_flags_are_one_error_line(tmp_path):
    proc = run_binary(
        "experiments.bifeat",
        "--config=experiments/configs/bifeat.py:tiny",
        f"--workdir={tmp_path}",
        "--num_processes=2",
        timeout=120,
    )
    assert_one_error_line(proc, "missing: --coordinator_address, --process_id")


def test_help_lists_the_process_flags():
    proc = run_binary("experiments.bifeat", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--coordinator_address=HOST:PORT --num_processes=N --process_id=I" in proc.stdout
