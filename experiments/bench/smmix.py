"""Seconds per training step of SMMix vs CutMix (and Mixup, no mixing), side by side, and the
cost of SMMix's extra attention forward in units of one forward pass.

    python -m experiments.bench.smmix [--out=bench_out/smmix.json] [--models=small,deit_tiny]

Contenders (the real jitted data-parallel steps of research/smmix/steps.py on one device):
  forward     one eval-mode forward of the batch (the unit of the target)
  none        a training step without mixing
  cutmix      a training step with CutMix
  mixup       a training step with Mixup
  smmix_only  a training step that takes the SMMix branch every batch: the extra eval forward
              (attention of the unmixed batch, no gradient), window search, paste, token head,
              fine-grained and consistency losses
  smmix       the SMMix method as trained: SMMix or Mixup per batch (p = 0.5)
Target (issue): the extra attention forward costs no more than one forward pass, i.e.
(smmix_only - cutmix) / forward <= 1 (the paste, token head and losses are included in it).
Models: `small` is the digits preset's ViT (16 x 16, patch 2, batch 64); `deit_tiny` is DeiT-T
at 224 x 224 with a small batch (slow on a CPU).
"""

from __future__ import annotations

import resource
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from experiments.bench.timing import format_table, record, write_json
from experiments.configs.smmix import get_config
from research.smmix import steps
from research.smmix.mixing import MixOptions
from research.smmix.model import ModelOptions, make_model
from research.training.parallel import data_mesh, make_train_step, shard_batch
from research.training.train_state import TrainState

_OUT = flags.DEFINE_string("out", "bench_out/smmix.json", "JSON output path.")
_MODELS = flags.DEFINE_list("models", ["small"], "small (digits preset ViT) and/or deit_tiny.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per contender (median reported).")
_DEIT_BATCH = flags.DEFINE_integer("deit_batch", 8, "Batch size for deit_tiny.")

METHODS = ("none", "cutmix", "mixup", "smmix_only", "smmix")


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _time(fn, repeats: int, per_call: int) -> tuple[float, float, float]:
    """(median wall s, median process-CPU s, first call s) per step of `fn()`."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), _cpu()
        jax.block_until_ready(fn())
        walls.append((time.perf_counter() - t) / per_call)
        cpus.append((_cpu() - c) / per_call)
    return statistics.median(walls), statistics.median(cpus), first


def _config(name: str):
    config = get_config("small")
    if name == "deit_tiny":
        config = get_config("paper")
        config.train.batch_size = _DEIT_BATCH.value
        config.steps_per_call = 1
    elif name != "small":
        raise app.UsageError(f"--models: unknown model {name!r}; choose small or deit_tiny")
    return config


def bench_model(name: str, repeats: int) -> list[dict]:
    config = _config(name)
    k, b, s = config.steps_per_call, config.train.batch_size, config.data.image_size
    c = 1 if name == "small" else 3
    num_classes = 10 if name == "small" else 1000
    model = make_model(ModelOptions(**config.model), s, num_classes)
    mix = MixOptions(**config.mix)
    mesh = data_mesh(jax.local_devices()[:1])
    optimizer = steps.make_optimizer(steps.TrainOptions(**config.train), 1000, 10)
    params = model.init_params(jax.random.PRNGKey(0), (s, s, c))
    rng = np.random.default_rng(0)
    lead = (k, b) if k > 1 else (b,)
    host = {
        "images": rng.normal(size=(*lead, s, s, c)).astype(np.float32),
        "labels": rng.integers(0, 10, lead).astype(np.int32),
    }
    batch = shard_batch(host, mesh, steps_per_call=k)
    shape = [b, s, s, c]
    fwd = jax.jit(lambda p, x: model.apply(p, x, train=False)[0].logits)
    x = jax.device_put(host["images"].reshape(-1, s, s, c)[:b])
    wall_f, cpu_f, _ = _time(lambda: fwd(params, x), repeats, 1)
    rows = [record("forward", f"{name} eval forward", shape, "float32", wall_f, cpu_seconds=cpu_f)]
    times = {}
    for method in METHODS:
        step = make_train_step(
            steps.make_loss_fn(model, method, mix, num_classes),
            optimizer,
            mesh,
            steps_per_call=k,
            donate=False,
        )
        state = TrainState.create(params, optimizer, jax.random.PRNGKey(1))
        wall, cpu, first = _time(lambda: step(state, batch), repeats, k)  # noqa: B023
        times[method] = (wall, cpu)
        rows.append(
            record(
                "train_step",
                f"{name} {method}",
                shape,
                "float32",
                wall,
                baseline_seconds=times["cutmix"][0] if "cutmix" in times else None,
                cpu_seconds=cpu,
                compile_seconds=first,
                extra_vs_cutmix_in_forwards=(
                    (wall - times["cutmix"][0]) / wall_f if "cutmix" in times else None
                ),
                extra_cpu_vs_cutmix_in_forwards=(
                    (cpu - times["cutmix"][1]) / cpu_f if "cutmix" in times else None
                ),
            )
        )
    return rows


def main(argv: list[str]) -> None:
    del argv
    rows = []
    for name in _MODELS.value:
        rows += bench_model(name, _REPEATS.value)
    cols = [
        "op",
        "impl",
        "shape",
        "seconds",
        "cpu_seconds",
        "ratio_vs_baseline",
        "extra_vs_cutmix_in_forwards",
        "extra_cpu_vs_cutmix_in_forwards",
    ]
    print(format_table(rows, cols))
    print(
        "ratio_vs_baseline = cutmix step / this step; extra_*_in_forwards = (this step - cutmix "
        "step) / one eval forward (target for smmix_only: <= 1)."
    )
    write_json(_OUT.value, rows)


if __name__ == "__main__":
    app.run(main)
