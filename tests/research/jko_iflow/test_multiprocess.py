"""The JKO-iFlow binary as real processes: the `tiny` preset (shortened: 20 steps per block, no
baseline, a cheap RK4 evaluation) as 2 processes x 2 CPU devices (`experiments.launch`, gloo
collectives) gives the results of 1 process x 4 devices.

Each block trains data-parallel over the 4 devices of either layout (each process building its
rows of every batch), so the block parameters agree up to the order of the cross-process
all-reduce's float additions (measured: 2.7e-7; the logged float32 losses within 2e-7
relative), and the evaluation, which every process runs whole on its own device, gives the
NLL and MMD within 1e-6 relative. The inversion errors are the float32 round-off of a forward
and backward trip (~1e-5): they move with the last bits of the parameters (measured: 0.2%
relative) and are compared within 1%.
"""

import os

import pytest

from tests.binaries import (
    assert_arrays_close,
    assert_json_close,
    assert_same_training_curve,
    experiment_command,
    npz_arrays,
    one_and_two_processes,
    read_json,
    workdir_files,
)

PARAMS_TOLERANCE = 1e-6  # absolute
METRICS_TOLERANCE = 1e-6  # relative
INVERSION_TOLERANCE = 1e-2  # relative, for the round-off measures `inversion_*`
# JSON values (results and training curves): numbers within their tolerance, timings skipped
# (on both sides all the same), everything else equal
JSON_TOLERANCES = dict(
    rel=METRICS_TOLERANCE, rel_where={"inversion_": INVERSION_TOLERANCE}, skip_timings=True
)
CONFIG = "experiments/configs/jko_iflow.py:tiny"
OVERRIDES = (
    "--config.jko.iters_per_block=20",
    "--config.checkpoint_every=20",
    "--config.baseline.enabled=False",
    "--config.eval.solver=rk4",
    "--config.eval.rk4_steps=2",
    "--config.eval.num_nll=256",
    "--config.eval.num_mmd=256",
    "--config.eval.num_inversion=128",
    "--config.eval.num_permutations=20",
)
DENSITY = "8gaussians"
BLOCKS = ("block_01", "block_02")


COMMAND = experiment_command("experiments.jko_iflow", CONFIG, OVERRIDES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shortened tiny run as 1 process of 4 devices and as 2 processes of 2 devices."""
    return one_and_two_processes(COMMAND, tmp_path_factory.mktemp("jko_iflow_runs"))


def assert_close(got, want, where):
    """JSON values within `JSON_TOLERANCES`."""
    assert_json_close(got, want, where, **JSON_TOLERANCES)


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_two_processes_give_the_results_of_one_process_of_four_devices(runs):
    one, two, stdout = runs
    assert "process 1 of 2: 2 local devices" in stdout
    want = read_json(one, "results.json")
    assert {f"{DENSITY}/jko/{m}" for m in ("nll", "mmd", "inversion_max_abs")} <= want.keys()
    assert want[f"{DENSITY}/jko/num_blocks"] == 2
    assert_close(read_json(two, "results.json"), want, "results.json")
    for name in ("jko_info.json", "metrics.json"):
        assert_close(read_json(two, f"{DENSITY}/{name}"), read_json(one, f"{DENSITY}/{name}"), name)
    name = f"{DENSITY}/jko/params.npz"
    got_params, want_params = (npz_arrays(os.path.join(d, name)) for d in (two, one))
    assert {key.split("/")[0] for key in want_params} == set(BLOCKS)
    assert_arrays_close(got_params, want_params, PARAMS_TOLERANCE, f"{name} ")
    for block in BLOCKS:  # the training curves
        curves = (os.path.join(d, DENSITY, "jko", block) for d in (two, one))
        assert_same_training_curve(*curves, block, steps=[10, 20], **JSON_TOLERANCES)


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_process_0_alone_writes_the_workdir(runs):
    one, two, _ = runs
    names = workdir_files(two)
    assert names == workdir_files(one)
    assert not [n for n in names if ".tmp" in n]
    expected = {"config.json", "results.json", "results.md"}
    expected |= {
        f"{DENSITY}/{name}" for name in ("jko_info.json", "metrics.json", "jko/params.npz")
    }
    expected |= {f"{DENSITY}/{name}.png" for name in ("densities", "trajectory")}
    for block in BLOCKS:
        expected |= {
            f"{DENSITY}/jko/{block}/{name}" for name in ("metrics.jsonl", "block_info.json")
        }
        # one event file (process 1 writes none)
        assert len(os.listdir(os.path.join(two, DENSITY, "jko", block, "tensorboard"))) == 1
    assert expected <= names
