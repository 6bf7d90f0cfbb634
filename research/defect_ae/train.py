"""Defect detection by reconstruction: `train_and_evaluate`.

    python -m experiments.defect_ae --config=experiments/configs/defect_ae.py:small --workdir=DIR

The defect-free images are split (seeded by `config.data.split_seed`, the same split for every
seed and loss) into training, validation and test images; every defective image is a test image.
For each training seed and loss in `config.losses` one autoencoder is trained on patches of the
training images (`DIR/runs/<loss>/seed<k>/`: checkpoints, metrics, `result.json`); full images
are reconstructed with a sliding window, the residual maps of the validation images set the
threshold, and the test images are scored (`evaluate.evaluate_detector`). The non-learned
per-pixel Gaussian (`pixel_gaussian`) is scored the same way, once. Then `DIR/results.{json,md}`
and `DIR/detections_<loss>.png` (input, reconstruction, residual, predicted mask and truth).

Several processes (`research.training.distributed`): the autoencoders train on the global mesh
as `fit` says; the reconstructions and every score are computed in every process on its host
copy of the trained parameters, on its own devices: the computation of one process, so every
process ends with its numbers. Process 0 alone writes the files (`workdir.is_writer`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from research.datasets import defects
from research.datasets.paths import resolve_data_dir
from research.defect_ae import evaluate, fit, report
from research.defect_ae.config_rules import loss_list
from research.training import results

Config = ml_collections.ConfigDict
BASELINE = "pixel_gaussian"


@dataclasses.dataclass(frozen=True)
class Splits:
    """Defect-free training and validation images, and the test images (both kinds)."""

    train: defects.InspectionImages
    val: defects.InspectionImages
    test: defects.InspectionImages


def load_data(config: Config) -> Splits:
    """The images of `config.data` split into training / validation / test."""
    d = config.data
    size, channels = d.image_size, d.channels
    if d.source == "mvtec":
        root = resolve_data_dir(d.data_dir)
        good = defects.load_mvtec(root, d.category, "train", image_size=size, channels=channels)
        test = defects.load_mvtec(root, d.category, "test", image_size=size, channels=channels)
        order = np.random.default_rng(d.split_seed).permutation(len(good))
        num_val = max(1, round(d.val_fraction * len(good)))
        return Splits(
            train=good.subset(np.sort(order[num_val:])),
            val=good.subset(np.sort(order[:num_val])),
            test=test,
        )
    if d.source == "magnetic_tile":
        everything = defects.load_magnetic_tile(
            resolve_data_dir(d.data_dir),
            image_size=size,
            channels=channels,
            classes=[c.strip() for c in d.classes.split(",")],
        )
    else:
        everything = defects.synthetic_textures(
            d.num_free, d.num_defective, image_size=size, seed=d.split_seed, channels=channels
        )
    train, val, test = defects.split_defect_free(
        everything.labels,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=d.split_seed,
    )
    return Splits(everything.subset(train), everything.subset(val), everything.subset(test))


def inspect_options(config: Config) -> evaluate.InspectOptions:
    opts = evaluate.InspectOptions(**config.inspect)
    if not opts.stride:
        opts = dataclasses.replace(opts, stride=max(1, config.train.patch_size // 2))
    return opts


def run_one(
    config: Config, data: Splits, loss: str, seed: int, workdir: str, figure: str = ""
) -> dict[str, Any]:
    """Trains and scores the autoencoder of one (loss, seed) in `workdir`; writes the detection
    figure to the path `figure` when it is given."""
    model_opts = fit.ModelOptions(**config.model)
    train_opts = fit.TrainOptions(**{**config.train, "loss": loss})
    opts = inspect_options(config)
    params, info = fit.fit(
        model_opts,
        train_opts,
        data.train.images,
        seed,
        workdir,
        steps_per_call=config.steps_per_call,
        checkpoint_every=config.checkpoint_every,
        log_every=config.log_every,
    )

    def inspect(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reconstructions [N, S, S, C] and residuals [N, S, S] of `images`."""
        recons = fit.reconstruct(
            model_opts, params, images, patch_size=train_opts.patch_size, stride=opts.stride
        )
        return recons, evaluate.residual_maps(
            images, recons, opts.residual, l1_weight=opts.l1_weight
        )

    val_recon, val_residuals = inspect(data.val.images)
    start = time.perf_counter()  # compiled by the validation images: the steady throughput
    test_recon, test_residuals = inspect(data.test.images)
    images_per_s = len(data.test) / (time.perf_counter() - start)
    out = evaluate.evaluate_detector(val_residuals, test_residuals, data.test, opts)
    out.update(evaluate.pixel_auroc_by_residual(data.test, test_recon, l1_weight=opts.l1_weight))
    out.update(info, images_per_s=images_per_s)
    out.update(evaluate.reconstruction_quality(data.val.images, val_recon))
    if out["val_contrast"] < evaluate.GREY_CONTRAST:
        out["warnings"].append(
            f"reconstructions lost the texture (contrast {out['val_contrast']:.2f} of the input)"
        )
    if figure:
        report.detections_figure(
            figure,
            data.test,
            test_recon,
            test_residuals,
            out["threshold"],
            opts,
            per_class=config.figure_images,
        )
    return out


def run_baseline(data: Splits, opts: evaluate.InspectOptions) -> dict[str, Any]:
    """The per-pixel Gaussian floor, scored like the autoencoders."""
    start = time.perf_counter()
    val = evaluate.pixel_gaussian_residuals(data.train.images, data.val.images)
    test = evaluate.pixel_gaussian_residuals(data.train.images, data.test.images)
    seconds = time.perf_counter() - start
    out = evaluate.evaluate_detector(val, test, data.test, opts)
    out["images_per_s"] = (len(data.val) + len(data.test)) / max(seconds, 1e-9)
    return out


def _figure_path(config: Config, workdir: str, loss: str, seed: int) -> str:
    """Where the first seed of each loss draws its detections ("" for no figure)."""
    if not config.figure_images or seed != config.seed:
        return ""
    return os.path.join(workdir, f"detections_{loss}.png")


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
    """Every (loss, seed) of `config` and the baseline; returns the flat metrics."""
    data = load_data(config)
    logging.info(
        "%d training, %d validation, %d test images (%s) at %dx%d",
        len(data.train),
        len(data.val),
        len(data.test),
        report.class_counts(data.test),
        config.data.image_size,
        config.data.image_size,
    )
    opts = inspect_options(config)
    runs: list[dict[str, Any]] = []
    if config.baseline:
        r = results.cached_result(
            os.path.join(workdir, "runs", BASELINE, "result.json"),
            lambda: run_baseline(data, opts),
        )
        runs.append({"detector": BASELINE, "seed": None, **r})
    for seed in range(config.seed, config.seed + config.num_seeds):
        for loss in loss_list(config):
            rdir = os.path.join(workdir, "runs", loss, f"seed{seed}")
            r = results.cached_result(
                os.path.join(rdir, "result.json"),
                lambda lo=loss, s=seed, w=rdir: run_one(
                    config, data, lo, s, w, figure=_figure_path(config, workdir, lo, s)
                ),
            )
            logging.info(
                "%s seed %d: pixel AUROC %.4f, PRO %.4f, image AUROC %.4f",
                loss,
                seed,
                r["pixel_auroc"],
                r["pro"],
                r["image_auroc_max"] if r["image_auroc_max"] is not None else float("nan"),
            )
            runs.append({"detector": f"ae_{loss}", "seed": seed, **r})
    return report.write_report(workdir, config, data, runs)
