"""The defect_ae binary as real processes: the `tiny` preset (shortened: the L2 loss alone, 4
steps in calls of 2) as 2 processes x 2 CPU devices (`experiments.launch`, gloo collectives)
gives the results of 1 process x 4 devices (the same global batches of patches; the same
parameters up to the order of the cross-process all-reduce's float additions; the same
reconstructions, thresholds and scores, computed in every process), and process 0 alone writes
the workdir's files.

The L2 loss, not `tiny`'s SSIM + L1: the all-reduce adds the devices' gradients in another
order in the two layouts, and on `tiny` the SSIM + L1 autoencoder's first steps amplify those
last-bit differences through Adam into every parameter (7.6e-5 apart after these 4 steps at lr
2e-4, 1.8e-3 after 20; the threshold then moves by 7e-6 relative and the F1 / precision count
pixels on the other side of it). Under L2 the parameters stay within 1e-6 here (2.3e-6 after
20 steps).
"""

import os

import numpy as np
import pytest

from experiments.configs.defect_ae import get_config
from research.defect_ae import fit
from research.defect_ae.train import load_data
from tests.binaries import (
    assert_arrays_close,
    assert_json_close,
    assert_same_training_curve,
    experiment_command,
    npz_arrays,
    one_and_two_processes,
    read_json,
    without_timings,
    workdir_files,
)

PARAMS_TOLERANCE = 1e-6  # absolute: the all-reduce may add floats in another order
METRICS_TOLERANCE = 1e-6  # relative: losses and scores
CONFIG = "experiments/configs/defect_ae.py:tiny"
OVERRIDES = (
    "--config.losses=l2",
    "--config.train.steps=4",
    "--config.steps_per_call=2",  # batches [2, B, p, p, C]: each process keeps its rows of B
    "--config.log_every=2",
)
RUN = os.path.join("runs", "l2", "seed0")


COMMAND = experiment_command("experiments.defect_ae", CONFIG, OVERRIDES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shortened tiny run as 1 process of 4 devices and as 2 processes of 2 devices."""
    return one_and_two_processes(COMMAND, tmp_path_factory.mktemp("defect_ae_runs"))


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_two_processes_give_the_results_of_one_process_of_four_devices(runs):
    one, two, stdout = runs
    assert "process 1 of 2: 2 local devices" in stdout
    want, got = (read_json(d, "results.json") for d in (one, two))
    assert got.keys() == want.keys()
    assert_json_close(
        without_timings(got),
        without_timings(want),
        "results.json",
        rel=METRICS_TOLERANCE,
        nan_ok=True,
    )
    assert "ae_l2/pixel_auroc" in want and "pixel_gaussian/pixel_auroc" in want
    params = [npz_arrays(os.path.join(d, RUN, "params.npz")) for d in (two, one)]
    assert_arrays_close(*params, PARAMS_TOLERANCE)
    curves = (os.path.join(two, RUN), os.path.join(one, RUN))
    assert_same_training_curve(*curves, steps=[2, 4], rel=METRICS_TOLERANCE)


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_process_0_alone_writes_the_workdir(runs):
    one, two, _ = runs
    names = workdir_files(two)
    assert names == workdir_files(one)
    assert not [n for n in names if ".tmp" in n]
    expected = {"config.json", "results.json", "results.md", "detections_l2.png"}
    expected |= {os.path.join(RUN, f) for f in ("params.npz", "result.json", "metrics.jsonl")}
    expected.add(os.path.join("runs", "pixel_gaussian", "result.json"))
    assert expected <= names
    assert len(os.listdir(os.path.join(two, RUN, "tensorboard"))) == 1  # process 1 writes none


def test_the_processes_rows_joined_are_the_global_batch():
    images = load_data(get_config("tiny")).train.images
    opts = fit.TrainOptions(batch_size=6, patch_size=16)

    def batch(rows=slice(None)):
        return fit.make_batch_fn(images, opts, seed=0, steps_per_call=2, rows=rows)(4)["x"]

    whole, halves = batch(), [batch(slice(0, 3)), batch(slice(3, 6))]
    assert whole.shape == (2, 6, 16, 16, 1)
    np.testing.assert_array_equal(np.concatenate(halves, axis=1), whole)
