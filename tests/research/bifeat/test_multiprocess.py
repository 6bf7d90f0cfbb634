"""The BiFeat binary as real processes: the `tiny` preset (shortened: two stores, 2 epochs,
sampled evaluation) as 2 processes x 2 CPU devices (`experiments.launch`, gloo collectives)
gives the results of 1 process x 4 devices: every process samples only its devices'
sub-batches, so both layouts train on the same batches and reach the same parameters (up to the
order of the cross-process all-reduce's float additions: 9e-8 here); the sampled evaluation,
split over the processes by device, gives exactly the same accuracies; every process returns
the run's metrics, and process 0 alone writes the workdir's files.

The stores cover both kinds: `float32` gathers on the host (its centring shift added on the
device), `sq2+cache` is a quantized table with a float32 cache replicated over the mesh.
"""

import os

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
CONFIG = "experiments/configs/bifeat.py:tiny"
SCHEMES = ("float32", "sq2+cache")
OVERRIDES = (
    f"--config.schemes={','.join(SCHEMES)}",
    "--config.train.epochs=2",  # 10 steps an epoch
    "--config.eval.every_epochs=1",
    "--config.checkpoint_every_epochs=1",
    "--config.eval.mode=sampled",  # 7 batches of 128 seeds over the val and test nodes
    "--config.eval.batch_size=128",
    "--config.keep_checkpoints=True",  # and the final parameters, params.npz
)


COMMAND = experiment_command("experiments.bifeat", CONFIG, OVERRIDES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shortened tiny run as 1 process of 4 devices and as 2 processes of 2 devices."""
    return one_and_two_processes(COMMAND, tmp_path_factory.mktemp("bifeat_runs"))


def run_dir(workdir, scheme):
    return os.path.join(workdir, "runs", scheme, "seed0")


def assert_close(got, want, where):
    """JSON values: numbers within TOLERANCE (relative), everything else equal; wall-clock
    figures left out of both (either may lack them)."""
    assert_json_close(without_timings(got), without_timings(want), where, rel=TOLERANCE)


@pytest.mark.slow
def test_two_processes_give_the_results_of_one_process_of_four_devices(runs):
    one, two, stdout = runs
    assert "process 1 of 2: 2 local devices" in stdout
    want = read_json(one, "results.json")
    assert_close(read_json(two, "results.json"), want, "results.json")
    assert {f"{s}/test_acc_mean" for s in SCHEMES} <= want.keys()
    for scheme in SCHEMES:
        got_dir, want_dir = run_dir(two, scheme), run_dir(one, scheme)
        params = [npz_arrays(os.path.join(d, "params.npz")) for d in (got_dir, want_dir)]
        assert_arrays_close(*params, TOLERANCE, f"{scheme} ")
        results = [read_json(d, "result.json") for d in (got_dir, want_dir)]
        assert_close(*results, f"{scheme} result.json")
        curves = assert_same_training_curve(
            got_dir, want_dir, scheme, steps=[10, 20], rel=TOLERANCE
        )
        for g, w in zip(*curves, strict=True):
            # the sampled evaluation's predictions, split over the processes: the same ones
            accuracies = ("eval/val_acc", "eval/test_acc", "eval/dropped_nodes")
            assert [g[k] for k in accuracies] == [w[k] for k in accuracies], scheme
    # Every process returns the run's metrics, and prints them.
    printed = [without_timings(printed_metrics(stdout, i)) for i in (0, 1)]
    for key in printed[0]:
        assert printed[1][key] == printed[0][key], key
    assert_close(printed[0], read_json(two, "results.json"), "printed")


@pytest.mark.slow
def test_process_0_alone_writes_the_workdir(runs):
    one, two, _ = runs
    names = workdir_files(two)
    assert names == workdir_files(one)
    assert not [n for n in names if ".tmp" in n]
    expected = {"config.json", "results.json", "results.md", "accuracy_vs_compression.png"}
    for scheme in SCHEMES:
        expected |= {f"runs/{scheme}/seed0/{f}" for f in ("metrics.jsonl", "result.json")}
        expected.add(f"runs/{scheme}/seed0/params.npz")
        # one event file, one line per logged step (process 1 writes none); the last checkpoint
        assert len(os.listdir(os.path.join(run_dir(two, scheme), "tensorboard"))) == 1
        steps = [r["step"] for r in read_metrics(run_dir(two, scheme))]
        assert steps == sorted(set(steps)) and steps
        assert os.listdir(os.path.join(run_dir(two, scheme), "checkpoints")) == ["20"]
    assert expected <= names
