"""`Setup`: the model, optimizer, compiled training steps (one per method) and evaluation that
every seed of every method of one SMMix config shares. `train.Runner` adds the resumable runs,
figures and notes; `experiments.bench.smmix_cifar10` trains in a time budget with it.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from research.smmix import steps
from research.smmix.data import ImageData, evaluate
from research.smmix.mixing import MixOptions
from research.smmix.model import ModelOptions, make_model
from research.training.distributed import global_mesh
from research.training.parallel import make_train_step
from research.training.train_state import TrainState

Config = ml_collections.ConfigDict


def steps_per_epoch(config: Config, data: ImageData, num_devices: int) -> int:
    """Whole batches in one pass over the training images; ValueError for a batch that does not
    split into even per-device halves or exceeds the training set."""
    b = config.train.batch_size
    if b % num_devices or (b // num_devices) % 2:
        raise ValueError(
            f"config.train.batch_size {b} must split into even per-device batches "
            f"over the {num_devices} devices (mixing pairs image i with image B-1-i)"
        )
    n = len(data.train_labels) // b
    if n == 0:
        raise ValueError(
            f"{len(data.train_labels)} training images are fewer than one batch "
            f"(config.train.batch_size = {b})"
        )
    return n


class Setup:
    """The model, optimizer and compiled steps shared by every seed of every method."""

    def __init__(self, config: Config, data: ImageData, num_steps: int | None = None):
        """num_steps: the learning-rate schedule's length (default: config.train.epochs of
        steps); a state can change it (`init_state(seed, num_steps)`) without recompiling."""
        self.config, self.data = config, data
        self.mix = MixOptions(**config.mix)
        t = steps.TrainOptions(**config.train)
        self.mesh = global_mesh()  # every process's devices
        self.steps_per_epoch = steps_per_epoch(config, data, self.mesh.size)
        self.num_steps = num_steps or t.epochs * self.steps_per_epoch
        self.model = make_model(
            ModelOptions(**config.model), config.data.image_size, data.num_classes
        )
        self.optimizer = steps.make_optimizer(t, self.num_steps, self.steps_per_epoch)
        self.predict = steps.make_predict(self.model)
        # One compiled initialisation (eager flax init dispatches every op: seconds per seed).
        self._init_params = jax.jit(self.model.init_params, static_argnums=1)
        self._steps: dict[str, Any] = {}

    def every(self, epochs: float) -> int:
        """`epochs` as a step count (at least 1); train_loop rounds it up to whole calls."""
        return max(1, int(round(epochs * self.steps_per_epoch)))

    def train_step(self, method: str):
        if method not in self._steps:  # one compilation per method, reused by every seed
            loss = steps.make_loss_fn(self.model, method, self.mix, self.data.num_classes)
            self._steps[method] = make_train_step(
                loss, self.optimizer, self.mesh, steps_per_call=self.config.steps_per_call
            )
        return self._steps[method]

    def init_state(self, seed: int, num_steps: int | None = None) -> TrainState:
        """A fresh state of `seed`; `num_steps` (default: the config's) sets the length of its
        learning-rate schedule (warm-up as config.train.warmup_epochs / epochs of it), which
        the compiled steps read from the state."""
        key = jax.random.PRNGKey(seed)
        params = self._init_params(jax.random.fold_in(key, 1), tuple(self.data.image_shape))
        state = TrainState.create(params, self.optimizer, jax.random.fold_in(key, 2))
        if num_steps is None or num_steps == self.num_steps:
            return state
        t = self.config.train
        warmup = max(int(round(t.warmup_epochs / t.epochs * num_steps)), 1)
        return state.replace(
            opt_state=steps.set_schedule(state.opt_state, warmup, max(num_steps, warmup + 1))
        )

    def eval_fn(self, state: TrainState) -> dict[str, float]:
        out = {"top1": evaluate(self.config, self.data, self.predict, state.params)}
        ema = steps.ema_params(state.opt_state)
        if ema is not None:
            out["top1_ema"] = evaluate(self.config, self.data, self.predict, ema)
        return out
