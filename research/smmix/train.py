"""SMMix training: every method x seed on one image data set; `train_and_evaluate`.

    python -m experiments.smmix --config=experiments/configs/smmix.py:small --workdir=DIR

Each (method, seed) trains one ViT in `DIR/runs/<method>/seed<k>/` (metrics.jsonl, TensorBoard,
checkpoints while it runs, `result.json` when done; a re-run reads finished runs back and resumes
an unfinished one from its checkpoint). `DIR/results.{json,md}` give top-1 mean / std per method,
`DIR/top1.png` the bar plot and `DIR/smmix_mixtures.png` a batch of SMMix mixtures.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import jax
import ml_collections
import numpy as np

from research.datasets import images as img
from research.datasets.batching import epoch_indices
from research.datasets.paths import resolve_data_dir
from research.smmix import plots, report, steps
from research.smmix.config_rules import validate_config
from research.smmix.mixing import MixOptions
from research.smmix.model import ModelOptions, make_model
from research.training.checkpoint import delete_checkpoints
from research.training.loop import round_to_calls, train_loop
from research.training.metrics import read_metrics, steady_steps_per_second
from research.training.parallel import data_mesh, make_train_step
from research.training.prefetch import Prefetcher
from research.training.results import cached_result
from research.training.train_state import TrainState

Config = ml_collections.ConfigDict


@dataclass
class ImageData:
    """Training and evaluation data: in-memory arrays ([N, H, W, C] in [0, 1], labels [N]) or a
    streamed ImageFolder (`train_folder` / `eval_folder`, decoded per batch)."""

    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_labels: np.ndarray
    train_x: np.ndarray | None = None
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None
    train_folder: img.ImageFolder | None = None
    train_index: np.ndarray | None = None  # folder rows of the (possibly long-tailed) subset
    eval_folder: img.ImageFolder | None = None


def load_data(config: Config) -> ImageData:
    """The data of `config.data` (digits, or the ImageFolder tree at `config.data_dir`),
    long-tailed if asked."""
    d = config.data
    if d.name == "digits":
        s = img.load_digits(
            image_size=d.image_size, test_fraction=d.test_fraction, seed=d.split_seed
        )
        keep = _subset(s.train_y, d.imbalance_factor, d.split_seed)
        return ImageData(
            s.num_classes, s.train_x.shape[1:], s.mean, s.std, s.train_y[keep],
            train_x=s.train_x[keep], test_x=s.test_x, test_y=s.test_y,
        )  # fmt: skip
    if d.name != "folder":
        raise ValueError(f"config.data.name = {d.name!r}: must be one of digits, folder")
    if not config.data_dir:
        raise ValueError(
            f"config.data_dir = {config.data_dir!r}: must name the ImageFolder root for "
            "config.data.name = 'folder'"
        )
    root = resolve_data_dir(config.data_dir)
    train = img.ImageFolder(root, d.train_split)
    evals = img.ImageFolder(root, d.eval_split, classes=train.classes)
    keep = _subset(train.labels, d.imbalance_factor, d.split_seed)
    shape = (d.image_size, d.image_size, 3)
    mean, std = img.IMAGENET_MEAN, img.IMAGENET_STD
    if d.in_memory:
        return ImageData(
            train.num_classes, shape, mean, std, train.labels[keep],
            train_x=train.load_all(d.image_size, keep), test_x=evals.load_all(d.image_size),
            test_y=evals.labels,
        )  # fmt: skip
    return ImageData(
        train.num_classes, shape, mean, std, train.labels[keep],
        train_folder=train, train_index=keep, eval_folder=evals,
    )  # fmt: skip


def _subset(labels: np.ndarray, imbalance_factor: float, seed: int) -> np.ndarray:
    if imbalance_factor <= 1.0:
        return np.arange(len(labels))
    return img.long_tailed_indices(labels, imbalance_factor, seed=seed)


def make_batch_fn(config: Config, data: ImageData, seed: int):
    """`step -> {"images": [K, B, H, W, C], "labels": [K, B]}` (K = steps_per_call; no K axis
    when it is 1): shuffled each epoch, augmented on the host, normalized; pure in `step`."""
    a, t, k = config.augment, config.train, config.steps_per_call
    n = len(data.train_labels)

    def one(step: int) -> tuple[np.ndarray, np.ndarray]:
        idx = epoch_indices(n, t.batch_size, step, seed=seed)
        rng = np.random.default_rng([seed, step, 1])
        if data.train_x is None:
            x = data.train_folder.load(
                data.train_index[idx], image_size=config.data.image_size, train=True, rng=rng
            )
        else:
            x = img.pad_and_crop(data.train_x[idx], a.pad, rng)
            if a.flip:
                x = img.random_flip(x, rng)
        if a.rand_augment_ops:
            x = img.rand_augment(
                x, rng, num_ops=a.rand_augment_ops, magnitude=a.rand_augment_magnitude,
                magnitude_std=a.rand_augment_std, prob=a.rand_augment_prob,
            )  # fmt: skip
        return img.normalize(x, data.mean, data.std), data.train_labels[idx]

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        xs, ys = zip(*(one(s) for s in range(step, step + k)), strict=True)
        if k == 1:
            return {"images": xs[0], "labels": ys[0]}
        return {"images": np.stack(xs), "labels": np.stack(ys)}

    return batch_fn


def evaluate(config: Config, data: ImageData, predict, params: Any) -> float:
    """Top-1 of `params` on the held-out images (class-token head)."""
    bs = config.eval.batch_size
    if data.test_x is not None:
        x = img.normalize(data.test_x, data.mean, data.std)
        return steps.evaluate_top1(predict, params, x, data.test_y, bs)
    folder, correct = data.eval_folder, 0
    for start in range(0, len(folder), bs):
        idx = np.arange(start, min(start + bs, len(folder)))
        x = folder.load(idx, image_size=config.data.image_size, train=False)
        x = img.normalize(x, data.mean, data.std)
        correct += steps.evaluate_top1(predict, params, x, folder.labels[idx], bs) * len(idx)
    return correct / len(folder)


class Runner:
    """The model, optimizer and compiled steps shared by every seed of every method."""

    def __init__(self, config: Config, data: ImageData):
        self.config, self.data = config, data
        self.mix = MixOptions(**config.mix)
        t = steps.TrainOptions(**config.train)
        self.mesh = data_mesh()
        if t.batch_size % self.mesh.size or (t.batch_size // self.mesh.size) % 2:
            raise ValueError(
                f"config.train.batch_size {t.batch_size} must split into even per-device batches "
                f"over the {self.mesh.size} devices (mixing pairs image i with image B-1-i)"
            )
        self.steps_per_epoch = len(data.train_labels) // t.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(data.train_labels)} training images are fewer than one batch "
                f"(config.train.batch_size = {t.batch_size})"
            )
        # The steps train_loop runs (whole jitted calls): the cosine schedule ends there.
        self.num_steps = round_to_calls(t.epochs * self.steps_per_epoch, config.steps_per_call)
        self.model = make_model(
            ModelOptions(**config.model), config.data.image_size, data.num_classes
        )
        self.optimizer = steps.make_optimizer(t, self.num_steps, self.steps_per_epoch)
        self.predict = steps.make_predict(self.model)
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

    def init_state(self, seed: int) -> TrainState:
        key = jax.random.PRNGKey(seed)
        params = self.model.init_params(jax.random.fold_in(key, 1), self.data.image_shape)
        return TrainState.create(params, self.optimizer, jax.random.fold_in(key, 2))

    def eval_fn(self, state: TrainState) -> dict[str, float]:
        out = {"top1": evaluate(self.config, self.data, self.predict, state.params)}
        ema = steps.ema_params(state.opt_state)
        if ema is not None:
            out["top1_ema"] = evaluate(self.config, self.data, self.predict, ema)
        return out

    def mixtures_figure(self, path: str, params: Any) -> str:
        """SMMix mixtures of the first held-out (or training) images under `params`."""
        d, n = self.data, self.config.figure_images
        if d.test_x is not None:
            x, y = d.test_x[:n], d.test_y[:n]
        else:
            idx = np.arange(min(n, len(d.eval_folder)))
            x = d.eval_folder.load(idx, image_size=self.config.data.image_size, train=False)
            y = d.eval_folder.labels[idx]
        return plots.mixtures_figure(
            path, self.model, jax.device_get(params), x, y, img.normalize(x, d.mean, d.std),
            min_ratio=self.mix.min_side_ratio, max_ratio=self.mix.max_side_ratio,
        )  # fmt: skip

    def run(self, method: str, seed: int, workdir: str) -> dict[str, Any]:
        """Trains one model; returns (and writes) `result.json`, or reads a finished one back."""
        result = cached_result(
            os.path.join(workdir, "result.json"), lambda: self._train(method, seed, workdir)
        )
        if not self.config.keep_checkpoints:  # only once result.json is written
            delete_checkpoints(workdir)
        return result

    def _train(self, method: str, seed: int, workdir: str) -> dict[str, Any]:
        """Trains (or resumes) one (method, seed) in `workdir`; returns its result."""
        c = self.config
        start = time.perf_counter()
        with Prefetcher(
            make_batch_fn(c, self.data, seed), end=self.num_steps, depth=c.data.prefetch,
            stride=c.steps_per_call,
        ) as batch_fn:  # fmt: skip
            state = train_loop(
                workdir=workdir,
                state=self.init_state(seed),
                train_step=self.train_step(method),
                batch_fn=batch_fn,
                num_steps=self.num_steps,
                mesh=self.mesh,
                checkpoint_every=self.every(c.checkpoint_every_epochs),
                keep_checkpoints=1,
                log_every=c.log_every,
                steps_per_call=c.steps_per_call,
                desc=f"{method} seed {seed}",
                eval_fn=self.eval_fn,
                eval_every=self.every(c.eval.every_epochs),
            )
        seconds = time.perf_counter() - start
        records = read_metrics(workdir)
        last = [r for r in records if "eval/top1" in r][-1]
        rate = steady_steps_per_second(workdir)  # the first interval includes compilation
        result = dict(
            method=method,
            seed=seed,
            top1=last["eval/top1"],
            top1_ema=last.get("eval/top1_ema"),
            train_steps=self.num_steps,
            seconds=seconds,
            seconds_per_step=1.0 / rate if rate else None,
            smmix_fraction=float(np.mean([r["smmix"] for r in records])),
        )
        if c.figure_images and method in ("smmix", "smmix_only"):
            self.mixtures_figure(os.path.join(workdir, plots.FIGURE), state.params)
        return result

    def notes(self) -> str:
        """The run's setting, under the title of results.md."""
        c, t = self.config, self.config.train
        return (
            f"Data {c.data.name} at {c.data.image_size}x{c.data.image_size}, "
            f"{len(self.data.train_labels)} training images, ViT {c.model.size} "
            f"(patch {c.model.patch_size}), {self.num_steps} steps of batch {t.batch_size} "
            f"({t.epochs} epochs), {c.num_seeds} seed(s). Top-1 of the final model on the "
            "held-out split; std over seeds with ddof 1."
        )


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
    """Every method x seed of `config`; writes results.{json,md}, top1.png, the mixing figure."""
    start = time.perf_counter()
    validate_config(config)
    methods = steps.parse_methods(config.methods)
    data = load_data(config)
    runner = Runner(config, data)
    runs = []
    for k in range(config.num_seeds):
        for method in methods:
            seed = config.seed + k
            runs.append(
                runner.run(method, seed, os.path.join(workdir, "runs", method, f"seed{seed}"))
            )
    metrics = report.write_report(workdir, runs, notes=runner.notes(), figure_seed=config.seed)
    metrics["wall_seconds"] = time.perf_counter() - start
    return metrics
