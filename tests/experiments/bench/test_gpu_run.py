"""experiments/bench/gpu_run.sh: the device call's stages (run on a GPU machine; here only what
needs no GPU: its syntax, the stage list in its header, an unknown stage)."""

import os
import re
import subprocess

from tests.conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "experiments", "bench", "gpu_run.sh")


def test_the_header_lists_exactly_the_stages_the_script_runs():
    text = open(SCRIPT).read()
    header = re.search(r"\(stages: ([^;]+);", text.replace("\n#", " ")).group(1).split()
    cases = re.findall(r"^    (\w+)\)", text, flags=re.MULTILINE)
    assert sorted(header) == sorted(cases)
    default = re.search(r"STAGES=\$\{\*:-([^}]+)\}", text).group(1).split()
    assert set(default) <= set(cases)


def test_an_unknown_stage_fails_with_its_name(tmp_path):
    subprocess.run(["bash", "-n", SCRIPT], check=True)
    env = {**os.environ, "OUT": str(tmp_path)}
    got = subprocess.run(
        ["bash", SCRIPT, "no_such_stage"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert got.returncode == 2 and "unknown stage no_such_stage" in got.stdout
