"""A tiny regression experiment used to test the shared machinery in research/training.

It follows the pattern of every paper: `get_config(preset)`, `train_and_evaluate(config,
workdir)` and a two-line binary:

    python -m tests.research.training.toy_regression \
        --config=tests/research/training/toy_regression.py:tiny --workdir=DIR

It runs as several processes too (the pattern for a multi-process trainer):

    python -m experiments.launch --num_processes=2 -- python -m \
        tests.research.training.toy_regression --config=...:tiny --workdir=DIR
"""

import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.app import run
from experiments.configs.common import select_preset
from research.training import distributed, results
from research.training.loop import train_loop
from research.training.parallel import make_train_step
from research.training.train_state import TrainState
from research.training.workdir import is_writer

NUM_FEATURES = 8
MODULE = "tests.research.training.toy_regression"  # for `python -m`
CONFIG_FILE = "tests/research/training/toy_regression.py"  # for `--config=` (from the repo root)


PRESETS = {"tiny": "40 steps of an 8-feature regression MLP; about 5 s on the 2-core CPU"}


def get_config(preset=None):
    def tiny():
        c = ml_collections.ConfigDict()
        c.seed = 0
        c.batch_size = 16
        c.num_steps = 40
        c.checkpoint_every = 10
        c.log_every = 5
        c.learning_rate = 0.05
        c.hidden = 16
        c.step_sleep = 0.0  # seconds per step, so a test can kill the process half way
        c.nan_from_step = -1  # >= 0: batches from this step on hold NaN (tests the NaN guard)
        return c

    return select_preset("toy_regression", preset, {"tiny": tiny})


class MLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):  # x: [B, NUM_FEATURES] -> [B]
        return nn.Dense(1)(nn.tanh(nn.Dense(self.hidden)(x)))[:, 0]


def make_batch(seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
    """Deterministic in (seed, step): x [B, 8], y [B]."""
    rng = np.random.default_rng([seed, step])
    x = rng.normal(size=(batch_size, NUM_FEATURES)).astype(np.float32)
    w = np.linspace(-1, 1, NUM_FEATURES, dtype=np.float32)
    y = np.sin(x @ w) + 0.05 * rng.normal(size=batch_size).astype(np.float32)
    return {"x": x, "y": y}


def loss_fn(model):
    def loss(params, batch, rng):
        del rng
        err = model.apply(params, batch["x"]) - batch["y"]
        return jnp.mean(err**2), {"mae": jnp.mean(jnp.abs(err))}

    return loss


def train_and_evaluate(config, workdir):
    model = MLP(config.hidden)
    params = model.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, NUM_FEATURES)))
    optimizer = optax.adam(config.learning_rate)
    state = TrainState.create(params, optimizer, jax.random.PRNGKey(config.seed))
    mesh = distributed.global_mesh()  # every process's devices
    step_fn = make_train_step(loss_fn(model), optimizer, mesh)
    rows = distributed.process_rows(config.batch_size)

    def batch_fn(step):  # this process's rows (synthetic: drawn whole, then cut)
        if config.step_sleep:
            time.sleep(config.step_sleep)
        batch = make_batch(config.seed, step, config.batch_size)
        if 0 <= config.nan_from_step <= step:
            batch["x"][0, 0] = np.nan
        return {name: leaf[rows] for name, leaf in batch.items()}

    state = train_loop(
        workdir=workdir,
        state=state,
        train_step=step_fn,
        batch_fn=batch_fn,
        num_steps=config.num_steps,
        mesh=mesh,
        checkpoint_every=config.checkpoint_every,
        log_every=config.log_every,
        desc="toy",
    )
    params = jax.device_get(state.params)  # replicated: every process holds all of it
    if is_writer():
        flat = jax.tree_util.tree_leaves_with_path(params)
        np.savez(
            os.path.join(workdir, "final_params.npz"),
            **{jax.tree_util.keystr(k): v for k, v in flat},
        )
    test = make_batch(config.seed + 1, 0, 256)
    mse = float(jnp.mean((model.apply(params, test["x"]) - test["y"]) ** 2))
    metrics = {"test_mse": mse, "baseline_mse": float(np.var(test["y"])), "steps": config.num_steps}
    results.write_results(workdir, metrics, title="Toy regression")
    return metrics


if __name__ == "__main__":
    run(train_and_evaluate, multi_process=True)
