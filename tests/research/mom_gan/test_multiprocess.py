"""The MoM-GAN binary as real processes: the `tiny` preset (shortened) as 2 processes x 2 CPU
devices (`experiments.launch`, gloo collectives) gives the results of 1 process x 4 devices.

A fit trains on one device per process (`gan.one_device_per_process_mesh`): 1 device in the
single process, 2 in the 2-process run, each process building its half of every batch. So the
parameters agree up to the order of the float additions over the split batch (measured: below
1e-8 here; the logged losses, float32, within 2e-7 relative), and the metrics computed from them
within 1e-6 relative.
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
CONFIG = "experiments/configs/mom_gan.py:tiny"
GANS = ("mom_gan",)  # an MLP generator, its discriminator under a median of means
OVERRIDES = (
    f"--config.methods=mean,{','.join(GANS)}",
    "--config.eps_values=0.2",
    *(f"--config.gans.{gan}.epochs=4" for gan in GANS),
    "--config.log_every_epochs=2",
)
RUNS = [f"runs/p2/eps0.2/{method}/seed0" for method in ("mean", *GANS)]


COMMAND = experiment_command("experiments.mom_gan", CONFIG, OVERRIDES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shortened tiny run as 1 process of 4 devices and as 2 processes of 2 devices."""
    return one_and_two_processes(COMMAND, tmp_path_factory.mktemp("mom_gan_runs"))


def assert_numbers_close(got, want, where):
    """{name: value}: the same names, numbers within METRICS_TOLERANCE (relative), timings
    skipped, nested values (a run's `_run_config`) equal."""
    assert_json_close(got, want, where, rel=METRICS_TOLERANCE, skip_timings=True)
    nested = [key for key, value in want.items() if isinstance(value, dict | list)]
    assert {k: got[k] for k in nested} == {k: want[k] for k in nested}, where


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_two_processes_give_the_results_of_one_process_of_four_devices(runs):
    one, two, stdout = runs
    assert "process 1 of 2: 2 local devices" in stdout
    want = read_json(one, "results.json")
    assert {f"p2/eps0.2/{gan}/mean_error" for gan in GANS} <= want.keys()
    assert_numbers_close(read_json(two, "results.json"), want, "results.json")
    for run in RUNS:
        assert_numbers_close(
            read_json(two, f"{run}/result.json"), read_json(one, f"{run}/result.json"), run
        )
    for run in RUNS[1:]:
        name = f"{run}/generator_params.npz"
        got, want_params = (npz_arrays(os.path.join(d, name)) for d in (two, one))
        assert_arrays_close(got, want_params, PARAMS_TOLERANCE, f"{name} ")
        curves = (os.path.join(d, run) for d in (two, one))
        assert_same_training_curve(
            *curves, run, steps=[8, 16], rel=METRICS_TOLERANCE, skip_timings=True
        )


@pytest.mark.slow
@pytest.mark.every_paper_multiprocess
def test_process_0_alone_writes_the_workdir(runs):
    one, two, _ = runs
    names = workdir_files(two)
    assert names == workdir_files(one)
    assert not [n for n in names if ".tmp" in n]
    expected = {"config.json", "results.json", "results.md"}
    expected |= {f"{run}/result.json" for run in RUNS}
    expected |= {
        f"{run}/{name}" for run in RUNS[1:] for name in ("metrics.jsonl", "generator_params.npz")
    }
    assert expected <= names
    for run in RUNS[1:]:  # one event file (process 1 writes none), one line per logged step
        assert len(os.listdir(os.path.join(two, run, "tensorboard"))) == 1
