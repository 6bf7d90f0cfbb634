"""Running experiment binaries as real processes in tests, and reading their one-line errors."""

import subprocess
import sys

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
