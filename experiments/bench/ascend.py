"""Training-step time and sampling rate of the diffusion backbones, side by side.

    python -m experiments.bench.ascend [--preset=small] [--batch_size=0] [--rounds=5] \
        [--sample_batch=250] [--out=bench_out/ascend.json]

Each backbone of the preset (vanilla ViT, IU-ViT, ASCEND, U-Net at the preset's sizes and image
shape) runs its real jitted training step (`parallel.make_train_step` over the DDPM loss, AdamW
and the EMA) on one device; every round times `steps` steps of each backbone in turn, so they
share the machine's state, and the median over rounds is reported. Sampling: one call of the
jitted DDIM sampler (`config.sampler`, 50 steps by default) on `sample_batch` images, compiled
ahead. `ratio` = the U-Net's time / the backbone's (> 1: faster than the U-Net).
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
from absl import app, flags

from experiments.bench.timing import block, format_table, record, write_json
from experiments.configs.ascend import get_config
from models.params import count_params
from research.ascend import diffusion, method
from research.training.parallel import data_mesh, make_train_step, replicate, shard_batch
from research.training.train_state import TrainState

IMAGE_SHAPES = {"tiny": (16, 16, 1), "small": (28, 28, 1), "cifar10": (32, 32, 3)}

flags.DEFINE_string("preset", "small", "ascend preset whose model sizes are timed")
flags.DEFINE_integer("batch_size", 0, "training batch (0: the preset's)")
flags.DEFINE_integer("rounds", 5, "timed rounds (median reported)")
flags.DEFINE_integer("steps", 5, "training steps per backbone per round")
flags.DEFINE_integer("sample_batch", 250, "images per sampler call")
flags.DEFINE_string("out", "", "JSON file for the records")
FLAGS = flags.FLAGS


def contenders(preset: str, batch_size: int):
    """{backbone: (step, state, batch, sampler, params count)} at the preset's sizes."""
    config = get_config(preset)
    shape = IMAGE_SHAPES[preset]
    batch_size = batch_size or config.train.batch_size
    mesh = data_mesh(jax.local_devices()[:1])
    opts = method.ModelOptions(**config.model)
    diff = method.DiffusionOptions(**config.diffusion)
    num_classes = 10 if diff.class_conditional else 0
    schedule = diffusion.make_schedule(diff.schedule, diff.num_steps)
    optimizer = method.make_optimizer(method.TrainOptions(**config.train))
    rng = np.random.default_rng(0)
    batch = {
        "images": rng.uniform(-1, 1, (batch_size, *shape)).astype(np.float32),
        "labels": rng.integers(0, 10, batch_size).astype(np.int32),
    }
    sampler = diffusion.SamplerOptions(**config.sampler)
    out = {}
    for name in config.backbones.split(","):
        model = method.make_backbone(opts, name, num_classes)
        params = method.init_params(model, shape, jax.random.PRNGKey(0))
        loss_fn = method.make_loss_fn(model, schedule, diff, 10)
        step = make_train_step(loss_fn, optimizer, mesh, donate=False)
        state = replicate(TrainState.create(params, optimizer, jax.random.PRNGKey(1)), mesh)
        sample = diffusion.make_sampler(method.eps_fn(model), schedule, sampler, shape)
        out[name] = (step, state, shard_batch(batch, mesh), sample, count_params(params))
    return out, batch_size, shape


def main(argv: list[str]) -> None:
    del argv
    runs, batch_size, shape = contenders(FLAGS.preset, FLAGS.batch_size)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for step, state, batch, _, _ in runs.values():
        block(step(state, batch))  # compile
    for _ in range(FLAGS.rounds):
        for name, (step, state, batch, _, _) in runs.items():
            start = time.perf_counter()
            s = state
            for _ in range(FLAGS.steps):
                s, metrics = step(s, batch)
            block(metrics)
            times[name].append((time.perf_counter() - start) / FLAGS.steps)
    step_s = {name: statistics.median(t) for name, t in times.items()}
    sample_s = {}
    labels = np.zeros(FLAGS.sample_batch, np.int32)
    for name, (_, state, _, sample, _) in runs.items():
        key = jax.random.PRNGKey(0)
        compiled = sample.lower(state.params, key, labels).compile()
        start = time.perf_counter()
        block(compiled(state.params, key, labels))
        sample_s[name] = time.perf_counter() - start
    base = "unet" if "unet" in runs else next(iter(runs))
    rows = []
    for name, (*_, num_params) in runs.items():
        rows.append(
            record(
                "train_step",
                name,
                (batch_size, *shape),
                "float32",
                step_s[name],
                baseline_seconds=step_s[base],
                num_params=num_params,
            )
        )
        rows.append(
            record(
                "sample_ddim",
                name,
                (FLAGS.sample_batch, *shape),
                "float32",
                sample_s[name],
                baseline_seconds=sample_s[base],
                images_per_s=FLAGS.sample_batch / sample_s[name],
            )
        )
    print(f"preset {FLAGS.preset}, {jax.devices()[0].device_kind}, baseline {base}")
    print(
        format_table(
            rows,
            ["op", "impl", "shape", "seconds", "ratio_vs_baseline", "num_params", "images_per_s"],
        )
    )
    if FLAGS.out:
        write_json(FLAGS.out, rows)


if __name__ == "__main__":
    app.run(main)
