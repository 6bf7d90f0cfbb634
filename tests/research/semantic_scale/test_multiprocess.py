"""The semantic-scale binary as real processes: a shortened `tiny` preset (digits-LT10, DSB-CE
through its phases: warm-up, re-weighting by the feature pool's semantic scales from epoch 2,
the learning-rate decay at epoch 3) as 2 processes x 2 CPU devices (`experiments.launch`, gloo
collectives) gives the results of 1 process x 4 devices: the same batches (each process builds
its rows with the whole batch's crops), the same test accuracy per class and semantic scales
(the test and training images' predictions split over the processes and gathered in every
process), the same parameters and model state (BatchNorm statistics, feature pool, scale
weights) up to the order of the cross-process all-reduce's float additions; every process
returns the metrics, and process 0 alone writes the workdir's files.
"""

import os

import numpy as np
import pytest

from tests.binaries import (
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

# Parameters (absolute), model state (relative to each array's largest magnitude: BatchNorm
# statistics and pooled features reach ~30) and metrics (relative or absolute).
TOLERANCE = 1e-6
# JSON values (results and training curves): numbers within TOLERANCE, relative or absolute,
# NaN equal to NaN (the marginal curve of a class with too few images)
JSON_TOLERANCES = dict(rel=TOLERANCE, abs=TOLERANCE, nan_ok=True)
CONFIG = "experiments/configs/semantic_scale.py:tiny"
OVERRIDES = (
    "--config.imbalance_factors=10",
    "--config.methods=dsb_ce",
    "--config.train.epochs=4",  # 8 steps per epoch
    "--config.train.warmup_epochs=1",
    "--config.train.reweight_epoch=2",
    "--config.train.decay_epochs=3",
    "--config.train.decay_factors=0.1",
    "--config.checkpoint_every_epochs=4",  # the final step only
    "--config.log_every=4",
    "--config.eval.batch_size=128",  # 450 test, 527 training images: blocks in both processes
)
RUN = os.path.join("runs", "digits", "digits-LT10", "dsb_ce", "seed0")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shortened run as 1 process of 4 devices and as 2 processes of 2 devices: both
    workdirs and the 2-process run's output (lines prefixed with [i] by the launcher)."""
    command = experiment_command("experiments.semantic_scale", CONFIG, OVERRIDES)
    return one_and_two_processes(command, tmp_path_factory.mktemp("semantic_scale_runs"))


def assert_close(got, want, where):
    """JSON values within `JSON_TOLERANCES`, timings left out of both, the rest equal."""
    got, want = without_timings(got), without_timings(want)
    assert_json_close(got, want, where, **JSON_TOLERANCES)


def assert_state_close(got, want):
    """The saved parameters within TOLERANCE, the model state within TOLERANCE x the largest
    magnitude of each array (at least 1): the same names, shapes and integer counters."""
    assert got.keys() == want.keys()
    for name, value in want.items():
        scale = 1.0 if name.startswith("params/") else max(1.0, float(np.abs(value).max()))
        np.testing.assert_allclose(got[name], value, rtol=0, atol=TOLERANCE * scale, err_msg=name)


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_two_processes_give_the_results_of_one_process_of_four_devices(runs):
    one, two, stdout = runs
    assert "process 1 of 2: 2 local devices" in stdout
    want = read_json(one, "results.json")
    assert_close(read_json(two, "results.json"), want, "results.json")
    result = read_json(one, f"{RUN}/result.json")
    assert len(result["class_accuracy"]) == 10 and "final_scale_weights" in result
    assert_close(read_json(two, f"{RUN}/result.json"), result, RUN)
    name = os.path.join(RUN, "params.npz")
    arrays = npz_arrays(os.path.join(one, name))
    assert {"params", "model_state"} == {key.split("/")[0] for key in arrays}
    assert "model_state/pool/features" in arrays and "model_state/batch_stats/bn1/var" in arrays
    assert_state_close(npz_arrays(os.path.join(two, name)), arrays)
    curves = (os.path.join(two, RUN), os.path.join(one, RUN))
    steps = [4, 8, 12, 16, 20, 24, 28, 32]
    assert_same_training_curve(*curves, steps=steps, **JSON_TOLERANCES)
    # Every process returns the run's metrics, and prints them.
    printed = [printed_metrics(stdout, i) for i in (0, 1)]
    assert_close(printed[1], printed[0], "process 1's metrics")
    assert_close(printed[0], want, "process 0's metrics")


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_process_0_alone_writes_the_workdir(runs):
    one, two, _ = runs
    names = workdir_files(two)
    assert names == workdir_files(one)
    assert not [n for n in names if ".tmp" in n]
    expected = {
        "config.json",
        "results.json",
        "results.md",
        "top1_digits.png",
        os.path.join(RUN, "result.json"),
        os.path.join(RUN, "metrics.jsonl"),
        os.path.join(RUN, "params.npz"),
    }
    assert expected <= names
    assert len(os.listdir(os.path.join(two, RUN, "tensorboard"))) == 1  # process 1 writes none
