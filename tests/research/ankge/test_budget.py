"""Stage 1 under a wall-clock budget (`train_base_for`): a run stopped at call boundaries and
resumed from its checkpoints ends with exactly the parameters of an uninterrupted run."""

import jax
import numpy as np

from experiments.configs.ankge import get_config
from research.ankge.train import load_data, make_model, train_base_for


def _config():
    config = get_config("tiny")
    config.base.num_steps, config.steps_per_call = 20, 5
    config.checkpoint_every, config.log_every, config.base.eval_every = 10, 5, 10
    return config


def test_budget_stops_resume_to_the_uninterrupted_parameters(tmp_path):
    config = _config()
    kg = load_data(config)
    model = make_model(config, kg)
    whole, info = train_base_for(config, kg, model, str(tmp_path / "whole"))
    assert info == {**info, "start_step": 0, "step": 20, "finished": True}
    assert not info["stopped_by_budget"]
    steps = []
    while True:  # budget 0: one call of 5 steps per invocation, then a checkpoint
        state, info = train_base_for(config, kg, model, str(tmp_path / "parts"), budget_s=0.0)
        steps.append((info["start_step"], info["step"], info["stopped_by_budget"]))
        if info["finished"]:
            break
        assert len(steps) < 6
    assert steps == [(0, 5, True), (5, 10, True), (10, 15, True), (15, 20, False)]
    got, want = jax.device_get(state.params), jax.device_get(whole.params)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    opt_got, opt_want = jax.device_get(state.opt_state), jax.device_get(whole.opt_state)
    for a, b in zip(jax.tree.leaves(opt_got), jax.tree.leaves(opt_want), strict=True):
        np.testing.assert_array_equal(a, b)
    # a finished run is not trained further
    _, again = train_base_for(config, kg, model, str(tmp_path / "parts"), budget_s=0.0)
    assert (again["start_step"], again["step"], again["finished"]) == (20, 20, True)


def test_a_large_budget_runs_to_the_end(tmp_path):
    config = _config()
    kg = load_data(config)
    model = make_model(config, kg)
    _, info = train_base_for(config, kg, model, str(tmp_path), budget_s=1e6)
    assert (info["step"], info["finished"], info["stopped_by_budget"]) == (20, True, False)
