"""The `tiny` preset end to end (JKO-iFlow and the baseline), and resuming block by block."""

import json
import os

import jax
import numpy as np
import pytest

from experiments.configs.jko_iflow import get_config
from models.flows import init_velocity
from research.datasets.densities import get_sampler
from research.jko_iflow import flow
from research.jko_iflow.evaluate import EvalOptions
from research.jko_iflow.flow import ModelOptions, Solver, make_model
from research.jko_iflow.jko import BaselineOptions, JKOOptions, ReparamOptions
from research.jko_iflow.train import (
    RunSettings,
    jko_optimizer,
    jko_train_step,
    push_through_block,
    run_deadline,
    train_and_evaluate,
    train_jko,
)
from research.training.errors import NonFiniteError, TimeBudgetExceeded
from research.training.results import read_results
from research.training.train_state import TrainState


def test_config_sub_dicts_read_back_as_options():
    config = get_config("gaussian")
    config.jko.reparam.rounds = 2  # as --config.jko.reparam.rounds=2 would
    opts = JKOOptions(**config.jko)
    assert opts.reparam == ReparamOptions(rounds=2)
    assert opts.step_sizes == (10.0, 10.0) and opts.block_step_sizes() == [10.0, 10.0]
    assert JKOOptions(**get_config("rose").jko) == JKOOptions(stop_tol=0.0)
    assert JKOOptions().block_step_sizes()[-1] == pytest.approx(0.25 * 1.4**7)
    assert BaselineOptions(**config.baseline) == BaselineOptions(enabled=False)
    assert make_model(ModelOptions(**config.model), 2).width == 128
    assert EvalOptions(**config.eval).flow_solver().kind == "dopri5"
    with pytest.raises(ValueError, match="jko.divergence='bogus'"):
        JKOOptions(divergence="bogus")
    with pytest.raises(ValueError, match="jko.step_sizes has 1 entries, fewer than 2"):
        JKOOptions(num_blocks=2, step_sizes=(1.0,))
    with pytest.raises(ValueError, match="eval.solver='euler'"):
        EvalOptions(solver="euler")


@pytest.mark.slow
def test_tiny_preset_end_to_end_then_resume_adds_a_block(tmp_path):
    workdir = str(tmp_path)
    config = get_config("tiny")
    metrics = train_and_evaluate(config, workdir)
    jko = {k.split("/", 2)[2]: v for k, v in metrics.items() if k.startswith("8gaussians/jko/")}
    assert jko["nll"] < jko["nll_standard_normal"] - 1.0  # learned far better than N(0, I)
    assert abs(jko["nll"] - jko["nll_rk4_1step"]) < 0.2
    assert jko["inversion_rms"] < 1e-4 and jko["inversion_max_abs"] < 1e-3
    assert jko["num_blocks"] == 2 and jko["train_steps"] == 120
    assert metrics["8gaussians/baseline/train_steps"] == 120  # equal budget
    assert metrics["8gaussians/baseline/nll"] < jko["nll_standard_normal"] - 1.0
    assert read_results(workdir)["8gaussians/jko/nll"] == jko["nll"]
    for name in ("results.md", "8gaussians/densities.png", "8gaussians/trajectory.png"):
        assert os.path.exists(os.path.join(workdir, name)), name

    # Re-running with one more block restores blocks 1-2 from their checkpoints and trains block 3,
    # then one round of time reparameterization refines all three blocks (10 steps each).
    info_path = os.path.join(workdir, "8gaussians/jko/block_01/block_info.json")
    with open(info_path) as f:
        info_before = json.load(f)
    config.jko.num_blocks = 3
    config.jko.reparam.rounds, config.jko.reparam.iters_per_block = 1, 10
    config.baseline.enabled = False
    metrics = train_and_evaluate(config, workdir)
    assert metrics["8gaussians/jko/num_blocks"] == 3
    assert metrics["8gaussians/jko/train_steps"] == 3 * 60 + 3 * 10
    with open(info_path) as f:
        assert json.load(f) == info_before
    assert os.path.exists(os.path.join(workdir, "8gaussians/jko/block_03/checkpoints/60"))
    with open(os.path.join(workdir, "8gaussians/jko_info.json")) as f:
        info = json.load(f)
    assert info["step_sizes"] != [1.0, 1.5, 2.25]  # reparameterized
    assert metrics["8gaussians/jko/nll"] < jko["nll_standard_normal"] - 1.0


def _tiny_field_and_data():
    model = make_model(ModelOptions(width=8, depth=1), 2)
    return model, get_sampler("8gaussians")(64, np.random.default_rng(0))


def test_a_block_that_sends_training_points_to_inf_is_named():
    model, x = _tiny_field_and_data()
    # Finite parameters can still overflow: a field scaled by 1e30 sends the points to inf.
    huge = jax.tree.map(lambda p: p * 1e30, init_velocity(model, jax.random.PRNGKey(0)))
    with pytest.raises(NonFiniteError, match=r"block_07: \d+ of the 64 training points pushed"):
        push_through_block(model, huge, x, solver=Solver("rk4", num_steps=1), name="block_07")


def test_non_finite_pushed_data_stop_training_in_that_block(tmp_path, monkeypatch):
    # Block 1's pushed data holding one NaN point stop the run in block 1, with a ValueError
    # naming it (before: block 2 trained on them and its NaN loss was caught a block later).
    model, x = _tiny_field_and_data()
    forward = flow.flow_forward

    def one_nan_point(*args, **kwargs):
        traj = forward(*args, **kwargs)
        return traj[:-1] + [traj[-1].at[3, 0].set(np.nan)]

    monkeypatch.setattr(flow, "flow_forward", one_nan_point)
    opts = JKOOptions(num_blocks=2, num_substeps=1, iters_per_block=5, batch_size=16, lr=1e-3)
    run = RunSettings(seed=0, steps_per_call=5, checkpoint_every=5, log_every=5)
    with pytest.raises(ValueError, match=r"block_01: 1 of the 64 training points .*first: row 3"):
        train_jko(opts, model, x, str(tmp_path), jax.random.PRNGKey(0), run=run)
    assert not (tmp_path / "block_02").exists()


@pytest.mark.parametrize("divergence", ["hutchinson", "exact"])
def test_scanned_call_of_k_iterations_equals_k_single_iteration_calls(divergence):
    # One jitted call runs K iterations (RK4 sub-steps, trace, loss, Adam update) in a lax.scan;
    # it must give the parameters and loss of K calls of one iteration on the same batches.
    model = make_model(ModelOptions(width=16, depth=2), 2)
    opts = JKOOptions(num_substeps=2, batch_size=32, lr=1e-2, divergence=divergence)
    k = 4
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.normal(size=(k, 32, 2)).astype(np.float32),
        "w2_weight": np.full((k, 32), 1.5, np.float32),
    }

    def initial_state():  # a fresh one per step function: the steps donate their input state
        return TrainState.create(
            init_velocity(model, jax.random.PRNGKey(0)), jko_optimizer(opts), jax.random.PRNGKey(1)
        )

    scanned, scanned_metrics = jko_train_step(opts, model, steps_per_call=k)(initial_state(), batch)
    single, state = jko_train_step(opts, model, steps_per_call=1), initial_state()
    for i in range(k):
        state, metrics = single(state, {name: leaf[i] for name, leaf in batch.items()})
    assert int(scanned.step) == int(state.step) == k
    for a, b in zip(jax.tree.leaves(scanned.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scanned_metrics["loss"], metrics["loss"], rtol=1e-5)
    # ... and the K iterations did train: the parameters moved from their initial values.
    init = jax.tree.leaves(init_velocity(model, jax.random.PRNGKey(0)))
    moved = [
        float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state.params), init, strict=True)
    ]
    assert max(moved) > 1e-3


def test_time_budget_stops_training_before_the_next_call(tmp_path):
    config = get_config("tiny")
    config.time_budget_s = 1e-9  # spent before the first jitted call
    with pytest.raises(TimeBudgetExceeded, match=r"block_01: the time budget .* at step 0;"):
        train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "8gaussians/jko/block_01/block_info.json").exists()
    assert run_deadline(config, 100.0) == pytest.approx(100.0)
    config.time_budget_s = 0.0
    assert run_deadline(config, 100.0) is None
