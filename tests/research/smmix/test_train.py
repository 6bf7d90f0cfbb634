"""research/smmix/train.py end to end (the `tiny` preset) and the data-parallel SMMix step."""

import json
import os

import jax
import numpy as np
import pytest

from experiments.configs.smmix import get_config
from research.smmix import steps, train
from research.smmix.mixing import MixOptions
from research.smmix.model import ModelOptions, make_model
from research.training.parallel import data_mesh, make_train_step, shard_batch
from research.training.train_state import TrainState


@pytest.mark.slow
def test_tiny_preset_learns_writes_results_and_the_figure(tmp_path):
    config = get_config("tiny")
    metrics = train.train_and_evaluate(config, str(tmp_path))
    assert metrics["none/top1_mean"] > 0.3, metrics  # 10 classes: chance is 0.1
    for method in ("cutmix", "smmix"):  # mixing learns slower in 252 steps, still above chance
        assert metrics[f"{method}/top1_mean"] > 0.15, (method, metrics)
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["smmix/top1_mean"] == metrics["smmix/top1_mean"]
    md = open(tmp_path / "results.md").read()
    assert "Top-1 per method" in md and "smmix - cutmix" in md
    for name in ("top1.png", "smmix_mixtures.png"):
        assert os.path.getsize(tmp_path / name) > 1000, name
    result = json.load(open(tmp_path / "runs" / "smmix" / "seed0" / "result.json"))
    assert 0.0 < result["smmix_fraction"] <= 1.0 and result["train_steps"] == 12 * 21
    assert not os.path.exists(tmp_path / "runs" / "smmix" / "seed0" / "checkpoints")
    again = train.train_and_evaluate(config, str(tmp_path))  # finished runs are read back
    assert again["smmix/top1_mean"] == metrics["smmix/top1_mean"]


def _step_setup(method: str, ema: float = 0.0):
    config = get_config("tiny")
    config.train.ema_decay = ema
    model = make_model(ModelOptions(**config.model), config.data.image_size, 10)
    optimizer = steps.make_optimizer(steps.TrainOptions(**config.train), 100, 10)
    mesh = data_mesh()  # 4 fake CPU devices: the pairs (i, B-1-i) are formed per device
    loss_fn = steps.make_loss_fn(model, method, MixOptions(**config.mix), 10)
    step = make_train_step(loss_fn, optimizer, mesh)
    params = model.init_params(jax.random.PRNGKey(0), (16, 16, 1))
    state = TrainState.create(params, optimizer, jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    batch = {
        "images": rng.normal(size=(16, 16, 16, 1)).astype(np.float32),
        "labels": rng.integers(0, 10, 16).astype(np.int32),
    }
    return step, state, shard_batch(batch, mesh)


@pytest.mark.parametrize(
    "method, fine, con", [("smmix_only", True, True), ("smmix_no_fine", False, True)]
)
def test_smmix_step_runs_data_parallel_with_its_losses(method, fine, con):
    step, state, batch = _step_setup(method, ema=0.9)
    used = []
    for _ in range(6):
        state, m = step(state, batch)
        m = jax.device_get(m)
        assert np.isfinite(m["loss"])
        used.append(m["smmix"])
        if m["smmix"] == 1.0:
            assert (m["loss_fine"] > 0) == fine and m["loss_con"] >= 0
            total = m["loss_cls"] + m["loss_fine"] + m["loss_con"]
            np.testing.assert_allclose(m["loss"], total, rtol=1e-5)
    if method == "smmix_only":
        assert all(u == 1.0 for u in used)
    else:  # SMMix or Mixup per batch (each device draws its own switch: means in [0, 1])
        assert 0.0 <= min(used) and max(used) <= 1.0
    ema = steps.ema_params(state.opt_state)
    assert ema is not None
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), ema, state.params)
    assert max(jax.tree.leaves(diff)) > 0  # the EMA lags the weights


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="config.methods"):
        steps.parse_methods("none,fmix")
    config = get_config("tiny")
    config.train.batch_size = 12  # 3 per device: odd
    with pytest.raises(ValueError, match="even per-device batches"):
        train.Runner(config, train.load_data(config))
    config = get_config("tiny")
    config.data.name = "folder"
    with pytest.raises(ValueError, match="data_dir"):
        train.load_data(config)
