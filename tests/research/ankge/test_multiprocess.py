"""The AnKGE binary as real processes: the `tiny` preset (shortened, with a lambda grid) as 2
processes x 2 CPU devices (`experiments.launch`, gloo collectives) gives the results of 1 process
x 4 devices (the same ranks, so the same metrics; the same retrieval; the same parameters up to
the order of the cross-process all-reduce's float additions), every process returns them, and
process 0 alone writes the workdir's files.

The steps are shortened (50 base, 25 AnKGE) for time and for the parameter tolerance: the
all-reduce adds the devices' gradients in another order in the two layouts, and Adam turns the
last-bit differences of gradients that are ~0 into updates of up to its learning rate, so the
parameters drift apart with the steps (full `tiny`, 300 + 100 steps: 1.1e-5 for the base
entities, 4.4e-5 for a few elements of the analogy functions; the test metrics still agree
exactly there). Here they stay below 1e-6.
"""

import os

import numpy as np
import pytest

from research.training.metrics import read_metrics
from tests.binaries import (
    assert_arrays_close,
    assert_json_close,
    assert_same_training_curve,
    experiment_command,
    npz_arrays,
    one_and_two_processes,
    printed_metrics,
    read_json,
    without_timings,
    workdir_files,
)

TOLERANCE = 1e-6  # parameters (absolute) and metrics (relative)
CONFIG = "experiments/configs/ankge.py:tiny"
OVERRIDES = (
    "--config.base.num_steps=50",
    "--config.ankge.num_steps=25",
    "--config.ankge.lambda_grid=0,0.1",  # the validation grid too: 9 lambda triples
)
RANKING = ("mrr", "mr", "hits@1", "hits@3", "hits@10")


COMMAND = experiment_command("experiments.ankge", CONFIG, OVERRIDES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shortened tiny run as 1 process of 4 devices and as 2 processes of 2 devices."""
    return one_and_two_processes(COMMAND, tmp_path_factory.mktemp("ankge_runs"))


@pytest.mark.slow
def test_two_processes_give_the_results_of_one_process_of_four_devices(runs):
    one, two, stdout = runs
    assert "process 1 of 2: 2 local devices" in stdout
    want, got = read_json(one, "results.json"), read_json(two, "results.json")
    assert_json_close(got, want, "results.json", rel=TOLERANCE, skip_timings=True)
    for stage in ("base", "ankge"):
        assert {f"{stage}/{m}" for m in RANKING} <= want.keys()
    assert "ankge/valid_mrr" in want and want["ankge/lambda_grid_size"] == 9
    # the validation grid: every triple's metrics (its ranks, split over the processes)
    grids = [read_json(d, "ankge/lambda_grid.json") for d in (two, one)]
    assert_json_close(grids[0]["table"], grids[1]["table"], "lambda_grid.json", rel=TOLERANCE)
    # the retrieval (its blocks split over the processes): the same ids
    for name, ids in npz_arrays(one, "ankge/retrieval.npz").items():
        got_ids = npz_arrays(two, "ankge/retrieval.npz")[name]
        np.testing.assert_array_equal(got_ids, ids, err_msg=name)
    for name in ("base/params.npz", "ankge/analogy_params.npz"):
        assert_arrays_close(npz_arrays(two, name), npz_arrays(one, name), TOLERANCE, f"{name} ")
    for stage in ("base", "ankge"):  # the training curves: losses and validation metrics
        curves = (os.path.join(two, stage), os.path.join(one, stage))
        assert_same_training_curve(*curves, stage, rel=TOLERANCE)
    # Every process returns the run's metrics (the ranks gathered in each), and prints them.
    printed = [without_timings(printed_metrics(stdout, i)) for i in (0, 1)]
    for key in printed[0]:
        assert printed[1][key] == printed[0][key], key
        assert_json_close(printed[0][key], got[key], key, rel=TOLERANCE)


@pytest.mark.slow
def test_process_0_alone_writes_the_workdir(runs):
    one, two, _ = runs
    names = workdir_files(two)
    assert names == workdir_files(one)
    assert not [n for n in names if ".tmp" in n]
    expected = {
        "config.json",
        "results.json",
        "results.md",
        "training_curve.png",
        "base/params.npz",
        "base/result.json",
        "base/metrics.jsonl",
        "ankge/retrieval.npz",
        "ankge/analogy_params.npz",
        "ankge/lambda_grid.json",
        "ankge/result.json",
        "ankge/metrics.jsonl",
    }
    assert expected <= names
    for stage in ("base", "ankge"):
        # one event file, one line per logged step (process 1 writes none)
        assert len(os.listdir(os.path.join(two, stage, "tensorboard"))) == 1
        steps = [r["step"] for r in read_metrics(os.path.join(two, stage))]
        assert steps == sorted(set(steps)) and steps
        assert os.listdir(os.path.join(two, stage, "checkpoints")) == [
            "50" if stage == "base" else "25"
        ]
