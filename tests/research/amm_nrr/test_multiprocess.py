"""The AMM-NRR binary as real processes: the `tiny` preset (the synthetic pair) with a
two-level robustness sweep as 2 processes x 2 CPU devices (`experiments.launch`) gives the
results of 1 process x 4 devices, exactly.

The work items are split over the processes (`distributed.map_split`): the one pair goes
to process 0 (process 1 has none), the two sweep levels one to each process, and the results
are gathered in every process. Every registration runs whole in one process on one device, so
the numbers are the same bits in both layouts; only the timings differ. The sweep varies only
the noise (no outliers, no cut, the synthetic pair's grid), so every registration has the
pair's shapes and a process compiles each solver variant once.
"""

import os
import re

import pytest

from tests.binaries import (
    experiment_command,
    one_and_two_processes,
    printed_metrics,
    read_json,
    without_timings,
    workdir_files,
)

CONFIG = "experiments/configs/amm_nrr.py:tiny"
OVERRIDES = (
    "--config.robustness.enabled=True",
    "--config.robustness.levels=0,1",
    "--config.robustness.grid=16",
    "--config.robustness.density=1",
    "--config.robustness.outliers=0",
    "--config.robustness.cut=0",
)
RUN = "synthetic_aa"


COMMAND = experiment_command("experiments.amm_nrr", CONFIG, OVERRIDES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny run with the sweep as 1 process of 4 devices and as 2 processes of 2 devices."""
    return one_and_two_processes(COMMAND, tmp_path_factory.mktemp("amm_nrr_runs"))


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_two_processes_split_the_work_and_give_the_results_of_one_process(runs):
    one, two, stdout = runs
    assert "process 1 of 2: 2 local devices" in stdout
    for process, share in ((0, "pairs 1 to 1 of 1"), (1, "no pairs of 1")):
        assert re.search(rf"^\[{process}\] .*process {process}: {share}$", stdout, re.M), share
    for process in (0, 1):
        level = f"robustness levels {process + 1} to {process + 1} of 2"
        assert re.search(rf"^\[{process}\] .*process {process}: {level}$", stdout, re.M), level
    want = without_timings(read_json(one, "results.json"))
    assert {f"robustness/{level}/rmse_welsch" for level in (0, 1)} | {f"{RUN}/rmse_gt"} <= set(want)
    assert without_timings(read_json(two, "results.json")) == want
    got_log, want_log = (without_timings(read_json(d, f"{RUN}/log.json")) for d in (two, one))
    assert got_log == want_log and want_log["iterations"]
    with (
        open(os.path.join(one, RUN, "deformed.obj")) as f,
        open(os.path.join(two, RUN, "deformed.obj")) as g,
    ):
        assert g.read() == f.read()
    # Every process ends with every result (process 1 computed no pair), and prints them.
    for process in (0, 1):
        assert without_timings(printed_metrics(stdout, process)) == want


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_process_0_alone_writes_the_workdir(runs):
    one, two, _ = runs
    names = workdir_files(two, skip=())  # every file
    assert names == workdir_files(one, skip=())
    assert {"config.json", "results.json", "results.md", "robustness.png"} <= names
    assert {f"{RUN}/deformed.obj", f"{RUN}/log.json"} <= names
    assert not [n for n in names if ".tmp" in n]
