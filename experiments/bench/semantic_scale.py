"""Seconds per training step of DSB learning against plain cross-entropy, side by side.

    python -m experiments.bench.semantic_scale [--out=bench_out/semantic_scale.json] \
        [--models=small_cnn,resnet32] [--rounds=7]

Both contenders are the real jitted steps of research/semantic_scale/steps.py on one device:
  ce        cross-entropy (the step every baseline shares, up to its loss arithmetic)
  dsb_ce    the same step plus the feature pool push, the scale recomputation every
            `dsb.every` steps (C Cholesky factorisations of p x p) and the weighted loss
  dsb_ce/1  DSB recomputing the scales at every step (the worst case of `every`)
Each round runs `every` steps of each contender in turn (so the recomputation is amortised as in
training, and the contenders share the machine's state); the median over rounds is reported.
Target (issue): dsb_ce / ce <= 1.10. Models: `small_cnn` at 28 x 28 x 1, batch 64 (the `small`
preset's MNIST setting); `resnet32` at 32 x 32 x 3, batch 128 (the CIFAR recipe).
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
from absl import app, flags

from experiments.bench.timing import block, format_table, record, write_json
from models.classifiers import make_classifier
from research.semantic_scale import steps
from research.training.parallel import DATA_AXIS, data_mesh, make_train_step, shard_batch

SETTINGS = {"small_cnn": ((28, 28, 1), 64), "resnet32": ((32, 32, 3), 128)}
COUNTS = np.array([500, 299, 179, 107, 64, 38, 23, 13, 8, 5])  # a long-tailed profile


def contenders(name: str) -> dict[str, tuple]:
    """{label: (jitted step, initial state, steps per round)} on one device."""
    shape, _ = SETTINGS[name]
    mesh = data_mesh(jax.local_devices()[:1])
    optimizer = steps.make_optimizer(steps.TrainOptions(), steps_per_epoch=100)
    model = make_classifier(name, 10, bn_axis_name=DATA_AXIS)
    every = steps.DSBOptions().every
    out = {}
    for label, method, dsb in (
        ("ce", "ce", steps.DSBOptions()),
        ("dsb_ce", "dsb_ce", steps.DSBOptions()),
        ("dsb_ce/1", "dsb_ce", steps.DSBOptions(every=1)),
    ):
        loss_fn = steps.make_loss_fn(model, method, COUNTS, steps.LossOptions(), dsb, 0)
        step = make_train_step(loss_fn, optimizer, mesh, with_model_state=True, donate=False)
        state = steps.init_state(model, method, shape, 10, optimizer, dsb, jax.random.PRNGKey(0))
        out[label] = (step, state, every)
    return out


def bench_model(name: str, rounds: int) -> list[dict]:
    shape, batch_size = SETTINGS[name]
    rng = np.random.default_rng(0)
    mesh = data_mesh(jax.local_devices()[:1])
    batch = shard_batch(
        {
            "images": rng.normal(size=(batch_size, *shape)).astype(np.float32),
            "labels": rng.integers(0, 10, batch_size).astype(np.int32),
        },
        mesh,
    )
    runs = contenders(name)
    states = {}
    for label, (step, state, _) in runs.items():  # compile and warm up
        t = time.perf_counter()
        states[label] = block(step(state, batch)[0])
        runs[label] = (*runs[label], time.perf_counter() - t)
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(rounds):
        for label, (step, _, n, _) in runs.items():
            state = states[label]
            t = time.perf_counter()
            for _ in range(n):
                state, _ = step(state, batch)
            block(state)
            times[label].append((time.perf_counter() - t) / n)
            states[label] = state
    base = statistics.median(times["ce"])
    return [
        record(
            "train_step",
            f"{name} {label}",
            [batch_size, *shape],
            "float32",
            statistics.median(t),
            baseline_seconds=base,
            compile_seconds=runs[label][3],
            cost_vs_ce=statistics.median(t) / base,
        )  # fmt: skip
        for label, t in times.items()
    ]


def _define_flags() -> None:
    """Flags of this binary only: defined at run time so tests can import this module beside
    other binaries that define --out."""
    flags.DEFINE_string("out", "bench_out/semantic_scale.json", "JSON output path.")
    flags.DEFINE_list("models", ["small_cnn", "resnet32"], "small_cnn and/or resnet32.")
    flags.DEFINE_integer("rounds", 7, "Timed rounds per contender (median reported).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    rows = []
    for name in f.models:
        if name not in SETTINGS:
            raise app.UsageError(f"--models: unknown model {name!r}; choose from {list(SETTINGS)}")
        rows += bench_model(name, f.rounds)
    print(format_table(rows, ["impl", "shape", "seconds", "cost_vs_ce", "compile_seconds"]))
    print("cost_vs_ce = this step / the CE step (target for dsb_ce: <= 1.10)")
    write_json(f.out, rows)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
