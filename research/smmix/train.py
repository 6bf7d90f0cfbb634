"""SMMix training: every method x seed on one image data set; `train_and_evaluate`.

    python -m experiments.smmix --config=experiments/configs/smmix.py:small --workdir=DIR

Each (method, seed) trains one ViT in `DIR/runs/<method>/seed<k>/` (metrics.jsonl, TensorBoard,
checkpoints while it runs, `result.json` and the final `params.npz` when done; a re-run reads
finished runs back and resumes an unfinished one from its checkpoint). `DIR/results.{json,md}`
give top-1 mean / std per method, `DIR/top1.png` the bar plot and `DIR/smmix_mixtures.png` a
batch of SMMix mixtures.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from research.datasets import images as img
from research.smmix import plots, report, steps
from research.smmix.config_rules import validate_config
from research.smmix.data import ImageData, data_cache_dir, load_data, make_batch_fn
from research.smmix.setup import Setup, steps_per_epoch
from research.training import results
from research.training.checkpoint import delete_checkpoints
from research.training.distributed import global_mesh
from research.training.loop import round_to_calls, train_loop
from research.training.metrics import read_metrics, steady_steps_per_second
from research.training.prefetch import Prefetcher
from research.training.results import cached_result
from research.training.workdir import is_writer

Config = ml_collections.ConfigDict
__all__ = ["ImageData", "Runner", "load_data", "train_and_evaluate"]
PARAMS_FILE = "params.npz"  # a run's final parameters, in its workdir


class Runner(Setup):
    """`Setup` plus the resumable runs of `train_and_evaluate`, the mixing figure and notes."""

    def __init__(self, config: Config, data: ImageData):
        # The steps train_loop runs (whole jitted calls): the cosine schedule ends there.
        spe = steps_per_epoch(config, data, global_mesh().size)
        super().__init__(
            config, data, round_to_calls(config.train.epochs * spe, config.steps_per_call)
        )

    def mixtures_figure(self, path: str, params: Any) -> str:
        """SMMix mixtures of the first held-out (or training) images under `params`."""
        d, n = self.data, self.config.figure_images
        if d.test_x is not None:
            x, y = img.to_unit(d.test_x[:n]), d.test_y[:n]
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
        results.save_arrays(os.path.join(workdir, PARAMS_FILE), state.params)
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
        if c.figure_images and method in ("smmix", "smmix_only") and is_writer():
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
    data = load_data(config, data_cache_dir(config, workdir))
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
