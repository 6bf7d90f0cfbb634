r"""Runs an experiment binary as N processes of one JAX multi-process run, on this machine.

    python -m experiments.launch --num_processes=2 [--port=0] [--cpu_devices_per_process=2] -- \
        python -m experiments.<paper> --config=experiments/configs/<paper>.py:tiny --workdir=DIR

starts the command after `--` N times, each with `--coordinator_address=127.0.0.1:PORT
--num_processes=N --process_id=i` appended (a free PORT when --port=0), `JAX_NUM_CPU_DEVICES`
set to --cpu_devices_per_process (0 leaves the environment's count) and `JAX_PLATFORMS=cpu`
unless the environment sets it. Each output line is prefixed with `[i] `. When a process fails
the others are stopped (SIGTERM, SIGKILL after a grace period) and the launcher exits with its
status; it exits 0 when all succeed.

Under SLURM no launcher is needed: `srun --ntasks=N python -m experiments.<paper> ...` starts the
processes and `jax.distributed.initialize()` reads the SLURM variables itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

GRACE_SECONDS = 5.0


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The launcher's flags (before `--`) and the command to run (after it)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--num_processes", type=int, required=True)
    parser.add_argument("--port", type=int, default=0, help="coordinator port; 0 picks a free one")
    parser.add_argument("--cpu_devices_per_process", type=int, default=2)
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("give the command to run after `--`")
    if args.num_processes < 1:
        parser.error(f"--num_processes must be at least 1, not {args.num_processes}")
    return args, command


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_command(command: Sequence[str], address: str, num_processes: int, i: int) -> list[str]:
    flags = [f"--coordinator_address={address}", f"--num_processes={num_processes}"]
    return [*command, *flags, f"--process_id={i}"]


def child_env(env: Mapping[str, str], cpu_devices: int) -> dict[str, str]:
    """`env` with the CPU device count (jax 0.10 reads `JAX_NUM_CPU_DEVICES` as its
    `jax_num_cpu_devices` option, which wins over XLA_FLAGS' host device count), CPU unless
    `JAX_PLATFORMS` is set, and unbuffered Python output so that lines stream."""
    env = dict(env)
    if cpu_devices > 0:
        env["JAX_NUM_CPU_DEVICES"] = str(cpu_devices)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _stream(i: int, proc: subprocess.Popen, lock: threading.Lock) -> None:
    for line in proc.stdout:
        with lock:
            sys.stdout.write(f"[{i}] {line}" if line.endswith("\n") else f"[{i}] {line}\n")
            sys.stdout.flush()


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: 128 + N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _signal(procs: Sequence[subprocess.Popen], sig: int) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, sig)  # the child's process group: its own children too
        except (ProcessLookupError, PermissionError):
            pass


def stop(procs: Sequence[subprocess.Popen], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM to every running child, SIGKILL to those still running after `grace` seconds."""
    running = [p for p in procs if p.poll() is None]
    _signal(running, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(p.poll() is None for p in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal([p for p in running if p.poll() is None], signal.SIGKILL)
    for p in running:
        p.wait()


def wait_for_first_failure(procs: Sequence[subprocess.Popen]) -> int:
    """Waits until a child fails (its exit status) or all succeed (0)."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [code for code in codes if code]
        if failed:
            return exit_status(failed[0])
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.05)


def launch(
    command: Sequence[str],
    num_processes: int,
    *,
    port: int = 0,
    cpu_devices: int = 2,
    env: Mapping[str, str] | None = None,
) -> int:
    """Runs the N processes; the first non-zero exit status, or 0 when all succeed."""
    address = f"127.0.0.1:{port or free_port()}"
    env = child_env(os.environ if env is None else env, cpu_devices)
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    threads = []
    try:
        for i in range(num_processes):
            proc = subprocess.Popen(
                child_command(command, address, num_processes, i),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,  # its own process group: stop() reaches its children
            )
            procs.append(proc)
            threads.append(threading.Thread(target=_stream, args=(i, proc, lock), daemon=True))
            threads[-1].start()
        return wait_for_first_failure(procs)
    finally:
        stop(procs)
        for thread in threads:
            thread.join(timeout=2)


def main(argv: Sequence[str]) -> int:
    args, command = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        return launch(
            command, args.num_processes, port=args.port, cpu_devices=args.cpu_devices_per_process
        )
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
