"""ASCEND's comparison of diffusion backbones: `train_and_evaluate`.

    python -m experiments.ascend --config=experiments/configs/ascend.py:small --workdir=DIR

For every backbone in `config.backbones` (vanilla ViT, IU-ViT, ASCEND, U-Net) and seed, one DDPM
is trained on the same global batches (`DIR/runs/<backbone>/seed<k>/`: checkpoints, metrics,
`samples.png`, `result.json`) and its EMA weights sample `eval.num_samples` images, scored by the
Frechet distance, precision and recall on the features of a classifier trained once on the same
data (`DIR/classifier.msgpack`; or the extractor `eval.features` names). Then
`DIR/results.{json,md}`, `DIR/fd.png` and `DIR/samples.png` (one grid per backbone). Each
run's final parameters and their EMA are kept as `params.npz` (`params/...`, `ema/...`).

Several processes (`research.training.distributed`): every process trains on the global mesh
(`distributed.global_mesh()`) and builds only its rows of each global batch (`make_batch_fn`'s
`rows`); the sampler's batches are split over the processes and the images gathered in every
process (`draw_samples`); the features and scores are computed in every process on its own
devices, so every process ends with the numbers of one process. Process 0 alone writes the
files, the image cache and the feature classifier, and the others wait for those they read
(`workdir.sync`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from models.params import count_params
from research.ascend import diffusion, evaluation, method, report
from research.ascend.config_rules import backbone_names
from research.ascend.data import DataOptions, ImageData, load_images
from research.training import distributed, results
from research.training import workdir as workdir_lib
from research.training.loop import train_loop
from research.training.metrics import steady_steps_per_second
from research.training.parallel import make_train_step
from research.training.prefetch import Prefetcher
from research.training.train_state import TrainState

Config = ml_collections.ConfigDict


def make_batch_fn(
    data: ImageData, batch_size: int, seed: int, random_flip: bool, rows: slice = slice(None)
):
    """`step -> {"images" [R, H, W, C], "labels" [R]}`: the `rows` (R of B; all of them by
    default, `distributed.process_rows(B)` in a run of several processes) of a global batch of
    B = `batch_size` training images drawn with replacement (and flipped left-right with
    probability 1/2 if `random_flip`), a pure function of (seed, step), so every backbone, a
    resumed run and any number of processes see the same global batches. The indices and flips
    are drawn for the whole batch; only the rows' images are gathered."""

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, step])
        indices = rng.integers(0, len(data.train_x), size=batch_size)[rows]
        images = data.train_x[indices]
        if random_flip:
            flip = (rng.random(batch_size) < 0.5)[rows]
            images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
        return {"images": images, "labels": data.train_y[indices]}

    return batch_fn


def feature_extractor(config: Config, data: ImageData, workdir: str) -> evaluation.FeatureExtractor:
    """`eval.features` ("module:function") if set, else the classifier trained on `data` once
    and kept in `workdir/classifier.msgpack`. Several processes: process 0 trains and saves it,
    the others read it back once it is written."""
    if config.eval.features:
        return evaluation.load_feature_extractor(config.eval.features)
    path = os.path.join(workdir, "classifier.msgpack")
    cached = os.path.exists(path)
    workdir_lib.sync("ascend: classifier cache looked up")  # all decide before any writes
    trains = not cached and workdir_lib.is_writer()
    if trains:
        extractor, accuracy = evaluation.train_feature_classifier(
            data.train_x,
            data.train_y,
            data.num_classes,
            test_x=data.test_x,
            test_y=data.test_y,
            steps=config.eval.classifier_steps,
            feature_dim=config.eval.feature_dim,
            seed=config.seed,
        )
        extractor.save(path)
    if not cached:
        workdir_lib.sync("ascend: classifier cache written")
    if not trains:
        extractor = evaluation.ClassifierFeatures.load(path)
        accuracy = extractor.accuracy(data.test_x, data.test_y)
    logging.info("feature classifier: test accuracy %.2f%%", 100 * accuracy)
    results.write_json(os.path.join(workdir, "classifier.json"), {"test_accuracy": accuracy})
    return extractor


def draw_samples(
    sample, params: Any, num_samples: int, batch_size: int, num_classes: int, seed: int
) -> tuple[np.ndarray, float]:
    """`num_samples` images [N, H, W, C] from the jitted sampler in batches of `batch_size`
    (labels cycling over the classes; batch i sampled with `fold_in(key(seed), i)`), and the
    sampling rate in images/s (compilation excluded: the sampler is compiled ahead of the
    timed calls).

    `params` must be this process's (host or local-device) copy. In a run of several processes
    each process samples a contiguous share of the batches (`distributed.share_of`) on its own
    devices and the images are gathered in every process: the images of one process, since a
    batch's key and labels do not depend on who samples it.
    """
    labels = np.arange(-(-num_samples // batch_size) * batch_size, dtype=np.int32)
    labels = labels % num_classes if num_classes else np.zeros_like(labels)
    labels = labels.reshape(-1, batch_size)  # [num_batches, batch_size]
    key = jax.random.PRNGKey(seed)
    compiled = sample.lower(params, key, labels[0]).compile()
    share, size = distributed.share_of(len(labels))
    start = time.perf_counter()
    batches = [
        np.asarray(compiled(params, jax.random.fold_in(key, i), labels[i]))
        for i in range(len(labels))[share]
    ]  # each [batch_size, H, W, C]
    if batches:
        images = np.stack(batches)
    else:  # no share
        out = jax.eval_shape(sample, params, key, labels[0])
        images = np.zeros((0, *out.shape), out.dtype)
    if distributed.is_multi_process():
        images = distributed.gather(images, size, len(labels))
    rate = labels.size / (time.perf_counter() - start)
    return np.concatenate(images)[:num_samples], rate


def run_one(
    config: Config,
    data: ImageData,
    backbone: str,
    seed: int,
    workdir: str,
    extractor: evaluation.FeatureExtractor,
    reference: np.ndarray,
) -> dict[str, Any]:
    """Trains and evaluates one (backbone, seed); returns its metrics."""
    train_opts = method.TrainOptions(**config.train)
    diff_opts = method.DiffusionOptions(**config.diffusion)
    num_classes = data.num_classes if diff_opts.class_conditional else 0
    model = method.make_backbone(method.ModelOptions(**config.model), backbone, num_classes)
    schedule = diffusion.make_schedule(diff_opts.schedule, diff_opts.num_steps)
    key = jax.random.PRNGKey(seed)
    params = method.init_params(model, data.image_shape, key)
    optimizer = method.make_optimizer(train_opts)
    mesh = distributed.global_mesh()
    batch_fn = make_batch_fn(
        data,
        train_opts.batch_size,
        seed,
        config.data.random_flip,
        rows=distributed.process_rows(train_opts.batch_size),
    )
    start = time.perf_counter()
    with Prefetcher(batch_fn, end=train_opts.steps, depth=config.prefetch) as batches:
        state = train_loop(
            workdir=workdir,
            state=TrainState.create(params, optimizer, jax.random.fold_in(key, 1)),
            train_step=make_train_step(
                method.make_loss_fn(model, schedule, diff_opts, data.num_classes), optimizer, mesh
            ),
            batch_fn=batches,
            num_steps=train_opts.steps,
            mesh=mesh,
            checkpoint_every=config.checkpoint_every,
            keep_checkpoints=1,
            log_every=config.log_every,
            desc=f"{backbone} seed {seed}",
        )
    train_seconds = time.perf_counter() - start
    ema = jax.device_get(method.ema_params(state.opt_state))  # replicated: all in every process
    results.save_arrays(
        os.path.join(workdir, "params.npz"), {"params": jax.device_get(state.params), "ema": ema}
    )
    sampler = diffusion.SamplerOptions(**config.sampler)
    sample = diffusion.make_sampler(
        method.eps_fn(model), schedule, sampler, data.image_shape, null_label=data.num_classes
    )
    ev = config.eval
    images, images_per_s = draw_samples(
        sample, ema, ev.num_samples, ev.batch_size, num_classes, seed + 10_000
    )
    if workdir_lib.is_writer():
        evaluation.save_image_grid(images[: ev.grid_size], os.path.join(workdir, "samples.png"))
        np.save(os.path.join(workdir, "samples.npy"), images[: ev.grid_size])
    fake = evaluation.extract_features(extractor, images)
    rate = steady_steps_per_second(workdir)
    return {
        **evaluation.sample_quality(reference, fake, ev.nearest_k),
        "num_params": count_params(ema),
        "train_step_ms": 1000.0 / rate if rate else None,
        "sampling_images_per_s": images_per_s,
        "train_seconds": train_seconds,
    }


def load_data(config: Config, workdir: str) -> ImageData:
    """`config.data`'s images, decoded images cached in `workdir/cache` (`load_images`).
    Several processes: process 0 loads them first (writing the cache), the others after it."""
    options, cache_dir = DataOptions(**config.data), os.path.join(workdir, "cache")
    data = load_images(options, cache_dir=cache_dir) if workdir_lib.is_writer() else None
    workdir_lib.sync("ascend: image cache written")
    return data if data is not None else load_images(options, cache_dir=cache_dir)


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
    """Every (backbone, seed) of `config`; returns the flat metrics (`report.write_report`)."""
    data = load_data(config, workdir)
    logging.info("%s", data.describe())
    extractor = feature_extractor(config, data, workdir)
    ev = config.eval
    chosen = np.random.default_rng(0).permutation(len(data.train_x))[: ev.num_reference]
    reference = evaluation.extract_features(extractor, data.train_x[chosen])
    held_out = evaluation.extract_features(extractor, data.test_x[: ev.num_samples])
    floor = evaluation.sample_quality(reference, held_out, ev.nearest_k)
    logging.info("held-out test images against the reference: %s", floor)
    runs = []
    for backbone in backbone_names(config):
        for seed in range(config.seed, config.seed + config.num_seeds):
            rdir = os.path.join(workdir, "runs", backbone, f"seed{seed}")
            r = results.cached_result(
                os.path.join(rdir, "result.json"),
                lambda b=backbone, s=seed, w=rdir: run_one(
                    config, data, b, s, w, extractor, reference
                ),
            )
            logging.info(
                "%s seed %d: FD %.3f, precision %.3f, recall %.3f",
                backbone,
                seed,
                r["fd"],
                r["precision"],
                r["recall"],
            )
            runs.append({"backbone": backbone, "seed": seed, **r})
    return report.write_report(workdir, data.describe(), runs, floor)
