"""The ASCEND binary as real processes: the `tiny` preset (shortened: the ASCEND backbone alone, 4
steps, a 20-step feature classifier, 48 samples in 3 sampler batches) as 2 processes x 2 CPU
devices (`experiments.launch`, gloo collectives) gives the results of 1 process x 4 devices (the
same global batches; the same parameters and EMA up to the order of the cross-process
all-reduce's float additions; the same samples, 2 batches sampled by process 0 and 1 by process
1; the same feature classifier, trained and saved by process 0 and read back by process 1; the
same FD, precision and recall), and process 0 alone writes the workdir's files.
"""

import os

import numpy as np
import pytest

from research.ascend.data import DataOptions, load_images
from research.ascend.train import make_batch_fn
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
SAMPLES_TOLERANCE = 1e-5  # absolute, pixels in [-1, 1]; 2.1e-6 measured after 10 sampler steps
CONFIG = "experiments/configs/ascend.py:tiny"
OVERRIDES = (
    "--config.backbones=ascend",
    "--config.train.steps=4",
    "--config.log_every=2",
    "--config.checkpoint_every=4",
    "--config.eval.classifier_steps=20",
    "--config.eval.num_samples=48",
    "--config.eval.batch_size=16",  # 3 sampler batches: 2 for process 0, 1 for process 1
    "--config.eval.num_reference=128",
    "--config.eval.grid_size=48",  # samples.npy: every sample
)
RUN = os.path.join("runs", "ascend", "seed0")


COMMAND = experiment_command("experiments.ascend", CONFIG, OVERRIDES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shortened tiny run as 1 process of 4 devices and as 2 processes of 2 devices."""
    return one_and_two_processes(COMMAND, tmp_path_factory.mktemp("ascend_runs"))


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
    assert {"ascend/fd", "ascend/precision", "ascend/recall"} <= want.keys()
    params = [npz_arrays(os.path.join(d, RUN, "params.npz")) for d in (two, one)]
    assert {name.split("/")[0] for name in params[1]} == {"params", "ema"}
    assert_arrays_close(*params, PARAMS_TOLERANCE)
    # the samples, gathered from both processes' shares of the sampler's batches
    samples = [np.load(os.path.join(d, RUN, "samples.npy")) for d in (two, one)]
    assert samples[1].shape == (48, 16, 16, 1)
    np.testing.assert_allclose(*samples, rtol=0, atol=SAMPLES_TOLERANCE)
    curves = (os.path.join(two, RUN), os.path.join(one, RUN))
    assert_same_training_curve(*curves, steps=[2, 4], rel=METRICS_TOLERANCE)


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_process_0_alone_writes_the_workdir(runs):
    one, two, _ = runs
    names = workdir_files(two)
    assert names == workdir_files(one)
    assert not [n for n in names if ".tmp" in n]
    expected = {"config.json", "results.json", "results.md", "fd.png", "samples.png"}
    expected |= {"classifier.msgpack", "classifier.json"}
    run_files = ("params.npz", "result.json", "metrics.jsonl", "samples.png", "samples.npy")
    expected |= {os.path.join(RUN, f) for f in run_files}
    assert expected <= names
    assert len(os.listdir(os.path.join(two, RUN, "tensorboard"))) == 1  # process 1 writes none


def test_the_processes_rows_joined_are_the_global_batch():
    data = load_images(DataOptions(source="digits", image_size=8))

    def batch(rows=slice(None)):
        return make_batch_fn(data, 6, seed=3, random_flip=True, rows=rows)(5)

    whole, halves = batch(), [batch(slice(0, 3)), batch(slice(3, 6))]
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])
