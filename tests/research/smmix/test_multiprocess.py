"""The SMMix binary as real processes: a shortened `tiny` preset on a small in-memory ImageFolder
(RandAugment and flips on, EMA on) as 2 processes x 2 CPU devices (`experiments.launch`, gloo
collectives) gives the results of 1 process x 4 devices: the same batches (each process builds
its rows with the whole batch's augmentation), the same top-1 (the evaluation batches split over
the processes and the predictions gathered), the same parameters up to the order of the
cross-process all-reduce's float additions; every process returns the metrics, and process 0
alone writes the workdir's files, the decoded data cache included.
"""

import os

import numpy as np
import pytest

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
from tests.experiments.bench.test_smmix_cifar10 import _folder

# Parameters (absolute) and metrics (relative or absolute: the consistency loss is a difference
# of near-equal predictions, ~5e-5, whose last bits move with the all-reduce's order).
TOLERANCE = 1e-6
CONFIG = "experiments/configs/smmix.py:tiny"
OVERRIDES = (
    "--config.methods=smmix_only",  # SMMix on every step (compiles faster than smmix)
    "--config.data.name=folder",
    "--config.data.eval_split=test",
    "--config.data.image_size=16",
    "--config.augment.flip=True",
    "--config.augment.rand_augment_ops=2",
    "--config.model.depth=1",
    "--config.train.batch_size=32",  # 64 training images: 2 steps per epoch
    "--config.train.epochs=4",
    "--config.train.ema_decay=0.9",
    "--config.steps_per_call=2",
    "--config.log_every=2",
    "--config.checkpoint_every_epochs=4",  # the final step only
    "--config.eval.every_epochs=2",
    "--config.eval.batch_size=16",  # 32 held-out images: one evaluation batch per process
)
RUN = os.path.join("runs", "smmix_only", "seed0")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shortened run as 1 process of 4 devices and as 2 processes of 2 devices: both
    workdirs and the 2-process run's output (lines prefixed with [i] by the launcher)."""
    root = tmp_path_factory.mktemp("smmix_runs")
    data_dir = _folder(root / "images", classes=4, train=16, test=8, size=20)

    overrides = (*OVERRIDES, f"--config.data_dir={data_dir}")
    return one_and_two_processes(experiment_command("experiments.smmix", CONFIG, overrides), root)


def assert_close(got, want, where):
    """JSON values: numbers within TOLERANCE, relative or absolute, timings left out of both,
    the rest equal."""
    assert_json_close(
        without_timings(got), without_timings(want), where, rel=TOLERANCE, abs=TOLERANCE
    )


def without_key_bias(params):
    """The parameters without the attention's key bias (the middle third of `attn/qkv/bias`,
    laid out [q | k | v]). It has no effect on the outputs (the softmax over the keys ignores a
    shift shared by all of them), so its gradient is 0 in exact arithmetic and roundoff in
    floats, which Adam scales up to updates of ~1e-5 that differ with the order of the
    all-reduce's additions: not a property of the data, so not compared."""
    out = dict(params)
    for name, value in params.items():
        if name.endswith("attn/qkv/bias"):
            query, _, value_bias = np.split(value, 3)
            out[name] = np.concatenate([query, value_bias])
    return out


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_two_processes_give_the_results_of_one_process_of_four_devices(runs):
    one, two, stdout = runs
    assert "process 1 of 2: 2 local devices" in stdout
    want = read_json(one, "results.json")
    assert_close(read_json(two, "results.json"), want, "results.json")
    assert_close(read_json(two, f"{RUN}/result.json"), read_json(one, f"{RUN}/result.json"), RUN)
    got, want_params = (npz_arrays(os.path.join(d, RUN, "params.npz")) for d in (two, one))
    assert any(name.endswith("attn/qkv/bias") for name in want_params)
    assert_arrays_close(
        without_key_bias(got), without_key_bias(want_params), TOLERANCE, "params.npz "
    )
    curves = (os.path.join(two, RUN), os.path.join(one, RUN))
    got_log, _ = assert_same_training_curve(
        *curves, steps=[2, 4, 6, 8], rel=TOLERANCE, abs=TOLERANCE
    )
    assert [r["step"] for r in got_log if "eval/top1_ema" in r] == [4, 8]
    # Every process returns the run's metrics (the predictions gathered in each), and prints them.
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
        "top1.png",
        os.path.join(RUN, "smmix_mixtures.png"),
        os.path.join(RUN, "result.json"),
        os.path.join(RUN, "metrics.jsonl"),
        os.path.join(RUN, "params.npz"),
    }
    assert expected <= names
    # the decoded folders, cached by process 0 (one file per split) and read by process 1
    assert sorted(os.listdir(os.path.join(two, "data_cache"))) == sorted(
        os.listdir(os.path.join(one, "data_cache"))
    )
    assert len(os.listdir(os.path.join(two, "data_cache"))) == 2
    assert len(os.listdir(os.path.join(two, RUN, "tensorboard"))) == 1  # process 1 writes none
