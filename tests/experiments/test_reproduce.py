"""experiments/reproduce.py: runs papers as binaries, keeps going on failure, writes REPORT.md."""

import subprocess
import sys

from experiments import reproduce
from tests.conftest import REPO_ROOT
from tests.research.training.toy_regression import CONFIG_FILE, MODULE


def test_report_collects_results_and_failures(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(reproduce, "binary_module", lambda p: MODULE)
    monkeypatch.setattr(reproduce, "config_path", lambda p: CONFIG_FILE)
    out = str(tmp_path)
    ok = reproduce.run_paper("toy", "tiny", out, fresh=True)
    broken = reproduce.run_paper("broken", "no_such_preset", out, fresh=True)
    assert ok["ok"] and not ok["error"]
    assert not broken["ok"] and "unknown preset 'no_such_preset'" in broken["error"]

    report = open(reproduce.write_report(out, "tiny", [ok, broken])).read()
    assert "| [toy](#toy) | ok |" in report
    assert "| [broken](#broken) | FAILED |" in report
    assert "## Toy regression" in report and "test_mse" in report
    assert f"python -m {MODULE}" in report


def test_unknown_paper_is_rejected(tmp_path):
    cmd = [sys.executable, "-m", "experiments.reproduce", "--papers=nope", f"--out={tmp_path}"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "unknown paper(s) nope" in proc.stderr
