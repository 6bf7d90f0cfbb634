"""The SSRN binary as real processes: the `tiny` preset (shortened: the ssrn method alone, a few
steps, test chunks of 8 queries so that both processes predict a share) as 2 processes x 2 CPU
devices (`experiments.launch`, gloo collectives) gives the results of 1 process x 4 devices
(the same global batches, siamese offsets included; the same test metrics; the same parameters
up to the order of the cross-process all-reduce's float additions), and process 0 alone writes
the workdir's files.

The all-reduce adds the devices' gradients in another order in the two layouts, and Adam turns
the last-bit differences of gradients that are zero in exact arithmetic into updates of up to
its learning rate: the biases that a softmax is invariant to (`SOFTMAX_INVARIANT`: the start
and end logits', the attention keys', the query pooling's) differ by up to 9e-5 after these 4
steps (7e-4 after 20) and are not compared; every other parameter agrees within 1.2e-7 here.
"""

import os
import re

import numpy as np
import pytest

from experiments.configs.ssrn import get_config
from research.ssrn import method
from research.ssrn.sources import load_data
from research.ssrn.train import make_batch_fn
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

PARAMS_TOLERANCE = 1e-6  # absolute
# Biases that only shift the logits of a softmax: their gradient is float noise (module docstring).
SOFTMAX_INVARIANT = re.compile(r"net/(start|end)/bias$|/key/bias$|QueryConcat_0/Dense_0/bias$")
METRICS_TOLERANCE = 1e-6  # relative: losses and test metrics
CONFIG = "experiments/configs/ssrn.py:tiny"
OVERRIDES = (
    "--config.methods=ssrn",
    "--config.train.steps=4",
    "--config.log_every=2",
    "--config.decode.batch_size=8",  # 24 test queries: 16 for process 0, 8 for process 1
)
RUN = os.path.join("runs", "N16", "ssrn", "seed0")


COMMAND = experiment_command("experiments.ssrn", CONFIG, OVERRIDES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shortened tiny run as 1 process of 4 devices and as 2 processes of 2 devices."""
    return one_and_two_processes(COMMAND, tmp_path_factory.mktemp("ssrn_runs"))


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_two_processes_give_the_results_of_one_process_of_four_devices(runs):
    one, two, stdout = runs
    assert "process 1 of 2: 2 local devices" in stdout
    want, got = (read_json(d, "results.json") for d in (one, two))
    assert got.keys() == want.keys()
    assert_json_close(
        without_timings(got), without_timings(want), "results.json", rel=METRICS_TOLERANCE
    )
    assert "N16/ssrn/refined_r1_iou0.5" in want
    got_params, want_params = (npz_arrays(os.path.join(d, RUN, "params.npz")) for d in (two, one))
    assert got_params.keys() == want_params.keys()
    noise = {name for name in want_params if SOFTMAX_INVARIANT.search(name)}
    assert len(noise) == 6  # start, end, 3 encoders' attention keys, the query pooling
    assert_arrays_close(
        {k: v for k, v in got_params.items() if k not in noise},
        {k: v for k, v in want_params.items() if k not in noise},
        PARAMS_TOLERANCE,
    )
    curves = (os.path.join(two, RUN), os.path.join(one, RUN))
    assert_same_training_curve(*curves, steps=[2, 4], rel=METRICS_TOLERANCE)


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_process_0_alone_writes_the_workdir(runs):
    one, two, _ = runs
    names = workdir_files(two)
    assert names == workdir_files(one)
    assert not [n for n in names if ".tmp" in n]
    expected = {"config.json", "results.json", "results.md"}
    expected |= {os.path.join(RUN, f) for f in ("params.npz", "result.json", "metrics.jsonl")}
    assert expected <= names
    assert len(os.listdir(os.path.join(two, RUN, "tensorboard"))) == 1  # process 1 writes none


def test_the_processes_rows_joined_are_the_global_batch():
    queries = load_data(get_config("tiny")).train
    siamese = method.SiameseOptions(num_siamese=3)

    def batch(rows=slice(None)):
        return make_batch_fn(queries, 6, siamese, 0, 16, rows=rows)(5)

    whole, halves = batch(), [batch(slice(0, 3)), batch(slice(3, 6))]
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])
