"""Semantic-scale experiments: every data set x version x seed x method; `train_and_evaluate`.

    python -m experiments.semantic_scale --config=experiments/configs/semantic_scale.py:small \
        --workdir=DIR

Each run trains one classifier in `DIR/runs/<data set>/<version>/<method>/seed<k>/`
(metrics.jsonl, TensorBoard, checkpoints while it runs, `result.json` and the final parameters
and model state `params.npz` when done; a re-run reads finished runs back and resumes an
unfinished one). A result holds the per-class test accuracy, the training counts and the
semantic scale of every class measured on the final model's features of its training images,
and the marginal-effect curve of those features. `DIR/results.{json,md}` and the figures
summarise them (research/semantic_scale/report.py).

In a run of several processes (`experiments.launch`) each process builds its rows of every
batch (`make_batch_fn`) and predicts a share of the test and training images
(`predict_split`), gathered in every process, so every process measures what one process does;
process 0 writes the files.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from models.classifiers import make_classifier
from research.datasets import images as img
from research.datasets.batching import epoch_indices
from research.semantic_scale import data as data_lib
from research.semantic_scale import report, scale, steps
from research.semantic_scale.config_rules import dataset_list, method_list, validate_config
from research.training import distributed, results
from research.training.checkpoint import delete_checkpoints
from research.training.loop import train_loop
from research.training.metrics import steady_steps_per_second
from research.training.parallel import DATA_AXIS, make_train_step
from research.training.prefetch import Prefetcher
from research.training.results import cached_result
from research.training.train_state import TrainState

Config = ml_collections.ConfigDict
MARGINAL_SIZES = (2, 4, 8, 16, 32, 64, 128, 256, 512)
PARAMS_FILE = "params.npz"  # a run's final parameters and model state, in its workdir


def make_batch_fn(config: Config, split: data_lib.Split, seed: int, rows: slice | None = None):
    """`step -> {"images": [R, H, W, C], "labels": [R]}`: rows `rows` (default: this
    process's, `distributed.process_rows(B)`; all B in a single process) of the global batch,
    shuffled each epoch (seeded by the training seed), padded-and-cropped (and flipped) on the
    host, normalised; pure in `step`. The rows' images and crops are those of the whole batch,
    so every process's rows join into the batch one process builds."""
    batch_size = config.train.batch_size
    part = img.BatchRows(distributed.process_rows(batch_size) if rows is None else rows, batch_size)

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        idx = epoch_indices(len(split.train_y), batch_size, step, seed=seed)[part.rows]
        rng = np.random.default_rng([seed, step, 1])
        x = img.pad_and_crop(split.train_x[idx], split.pad, rng, rows=part)
        if split.flip:
            x = img.random_flip(x, rng, rows=part)
        return {"images": img.normalize(x, split.mean, split.std), "labels": split.train_y[idx]}

    return batch_fn


def class_accuracy(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[C] accuracy of argmax(logits [N, C]) on each class's examples (NaN for an absent one)."""
    correct = np.argmax(logits, -1) == labels
    return np.array(
        [correct[labels == c].mean() if (labels == c).any() else np.nan for c in range(num_classes)]
    )


def predict_split(
    predict, variables: Any, images: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """`steps.predict_all` of images [N, H, W, C]: logits [N, C] and features [N, p]. In a run
    of several processes each process predicts a share of whole batches (`distributed.share_of`,
    the batches one process predicts) on its own devices, and every process gets all N rows
    (`distributed.gather`, copied): those one process computes."""
    mine, size = distributed.share_of(len(images), multiple=batch_size)
    logits, features = steps.predict_all(predict, variables, images[mine], batch_size)
    return (
        distributed.gather(logits, size, len(images)),
        distributed.gather(features, size, len(images)),
    )


class Runner:
    """Trains and measures every method and seed on one version of one data set."""

    def __init__(self, config: Config, split: data_lib.Split):
        self.config, self.split = config, split
        t = steps.TrainOptions(**config.train)
        self.mesh = distributed.global_mesh()  # every process's devices
        self.steps_per_epoch = len(split.train_y) // t.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{split.label}: {len(split.train_y)} training images are fewer than one batch "
                f"(config.train.batch_size = {t.batch_size})"
            )
        self.num_steps = t.epochs * self.steps_per_epoch
        self.reweight_step = t.reweight_epoch * self.steps_per_epoch
        self.optimizer = steps.make_optimizer(t, self.steps_per_epoch)
        # The semantic scales of the training images' pixels: the same for every method and seed.
        self.pixel_scales = scale.class_scales(
            split.train_x.reshape(len(split.train_y), -1), split.train_y, split.num_classes,
            d=config.dsb.d, normalize=config.dsb.normalize,
        )  # fmt: skip
        self._compiled: dict[str, tuple] = {}

    def compiled(self, method: str) -> tuple[Any, Any, Any]:
        """(model, jitted train step, jitted predict) of `method`, built once and reused by
        every seed."""
        if method not in self._compiled:
            c, m = self.config, self.config.model
            kwargs = {"feature_dim": m.feature_dim} if m.name == "small_cnn" else {}
            model = make_classifier(
                m.name, self.split.num_classes, normed_head=steps.METHODS[method].normed_head,
                bn_axis_name=DATA_AXIS, **kwargs,
            )  # fmt: skip
            loss_fn = steps.make_loss_fn(
                model, method, self.split.counts, steps.LossOptions(**c.loss),
                steps.DSBOptions(**c.dsb), self.reweight_step,
            )  # fmt: skip
            train_step = make_train_step(loss_fn, self.optimizer, self.mesh, with_model_state=True)
            self._compiled[method] = (model, train_step, steps.make_predict(model))
        return self._compiled[method]

    def run(self, method: str, seed: int, workdir: str) -> dict[str, Any]:
        """Trains one model; returns (and writes) `result.json`, or reads a finished one back."""
        result = cached_result(
            os.path.join(workdir, "result.json"), lambda: self._train(method, seed, workdir)
        )
        if not self.config.keep_checkpoints:
            delete_checkpoints(workdir)
        return result

    def _train(self, method: str, seed: int, workdir: str) -> dict[str, Any]:
        c, split = self.config, self.split
        model, train_step, predict = self.compiled(method)
        start = time.perf_counter()
        with Prefetcher(
            make_batch_fn(c, split, seed), end=self.num_steps, depth=c.data.prefetch
        ) as batch_fn:
            state = train_loop(
                workdir=workdir,
                state=steps.init_state(
                    model,
                    method,
                    split.train_x.shape[1:],
                    split.num_classes,
                    self.optimizer,
                    steps.DSBOptions(**c.dsb),
                    jax.random.PRNGKey(seed),
                ),  # fmt: skip
                train_step=train_step,
                batch_fn=batch_fn,
                num_steps=self.num_steps,
                mesh=self.mesh,
                checkpoint_every=max(1, c.checkpoint_every_epochs * self.steps_per_epoch),
                keep_checkpoints=1,
                log_every=c.log_every,
                desc=f"{split.label} {method} seed {seed}",
            )
        seconds = time.perf_counter() - start
        state = jax.device_get(state)  # replicated: every process holds all of it
        results.save_arrays(
            os.path.join(workdir, PARAMS_FILE),
            {"params": state.params, "model_state": state.model_state},
        )
        return self.measure(method, seed, predict, state, seconds, workdir)

    def measure(
        self, method: str, seed: int, predict, state: TrainState, seconds: float, workdir: str
    ) -> dict[str, Any]:
        """The run's result: test accuracy per class and the semantic scales of the final
        model's features of the (unaugmented) training images (the predictions split over the
        processes of a run of several processes, `predict_split`)."""
        c, split = self.config, self.split
        variables = {"params": state.params}
        if "batch_stats" in state.model_state:
            variables["batch_stats"] = state.model_state["batch_stats"]
        bs = c.eval.batch_size
        test_logits, _ = predict_split(
            predict, variables, img.normalize(split.test_x, split.mean, split.std), bs
        )
        _, train_features = predict_split(
            predict, variables, img.normalize(split.train_x, split.mean, split.std), bs
        )
        options = dict(d=c.dsb.d, normalize=c.dsb.normalize)
        acc = class_accuracy(test_logits, split.test_y, split.num_classes)
        rate = steady_steps_per_second(workdir)
        result = dict(
            method=method,
            dataset=split.name,
            version=split.label,
            imbalance_factor=split.imbalance_factor,
            seed=seed,
            top1=float(np.mean(np.argmax(test_logits, -1) == split.test_y)),
            class_accuracy=acc.tolist(),
            counts=split.counts.tolist(),
            scales=scale.class_scales(
                train_features, split.train_y, split.num_classes, **options
            ).tolist(),
            pixel_scales=self.pixel_scales.tolist(),
            marginal_sizes=list(MARGINAL_SIZES),
            marginal=scale.marginal_effect(
                train_features,
                split.train_y,
                split.num_classes,
                MARGINAL_SIZES,
                seed=seed,
                **options,
            ).tolist(),  # fmt: skip
            train_steps=self.num_steps,
            seconds=seconds,
            seconds_per_step=1.0 / rate if rate else None,
        )
        if "scale_weights" in state.model_state:
            result["final_scale_weights"] = np.asarray(state.model_state["scale_weights"]).tolist()
        return result


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
    """Every data set x version x seed x method of `config`; writes results.{json,md} and the
    figures."""
    start = time.perf_counter()
    validate_config(config)
    methods = method_list(config)
    runs = []
    for name in dataset_list(config):
        full = data_lib.load_full(config, name)
        for factor in config.imbalance_factors:
            runner = Runner(config, data_lib.make_split(full, name, factor, config))
            for k in range(config.num_seeds):
                seed = config.seed + k
                for method in methods:
                    where = os.path.join(
                        workdir, "runs", name, runner.split.label, method, f"seed{seed}"
                    )
                    runs.append(runner.run(method, seed, where))
    metrics = report.write_report(workdir, runs, config)
    metrics["wall_seconds"] = time.perf_counter() - start
    return metrics
