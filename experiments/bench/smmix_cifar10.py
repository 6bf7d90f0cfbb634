"""SMMix vs its baselines on CIFAR-10 within a time budget on one accelerator: `run_cifar10`.

    from experiments.bench.smmix_cifar10 import run_cifar10
    run_cifar10("../shared/data/images/cifar10", "$OUT/smmix", budget_s=150)

The run (every number printed and written to `out_dir/cifar10_budget.json`):
  1. loads CIFAR-10 (decoded once into uint8 arrays, cached in `cache_dir`, keyed by the folder's
     contents; the load time and whether it came from the cache are reported);
  2. times the host's batch building (augmentation in `workers` threads), then compiles one
     training step per method (`steps_per_call` steps in one `lax.scan`; the same
     program serves every seed and every epoch count: the learning-rate schedule's lengths are
     in the optimizer state) and runs `probe_calls` calls of it from a throw-away state: the
     first call's time (compilation + one call) and the steady seconds per step are reported;
  3. chooses the epochs E that let every method x seed finish in what is left of the budget
     (the same E for every run, at most the preset's; printed, and said in the result when it is
     fewer than the preset's), the warm-up scaled as the preset's warm-up / epochs;
  4. trains seed by seed (every method of a seed before the next seed) and evaluates the final
     model's top-1 on the test split;
  5. writes `cifar10_budget.json` (after every run, so a killed process leaves its finished runs)
     and `results.md`: top-1 mean, sample std and per seed per method, and each SMMix
     difference against its Welch standard error with whether it exceeds the seed spread.

The budget counts from the call (data loading and compilation included). A run is stopped at the
first call boundary after which no call and final evaluation would fit; it is evaluated and
reported as incomplete (and left out of the mean / std table), and the runs after it are skipped.

Imports only numpy, jax / flax / optax, ml_collections and the method's own modules (Pillow
decodes the JPEGs when there is no cache), so it runs on a bare accelerator machine; it runs on
CPUs too (tested at tiny sizes).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments.configs.smmix import get_config
from research.datasets import images as img
from research.smmix import steps
from research.smmix.config_rules import validate_config
from research.smmix.data import load_data, make_batch_fn
from research.smmix.setup import Setup
from research.training import stats
from research.training.parallel import replicate, shard_batch
from research.training.train_state import TrainState

MATMUL_PRECISIONS = ("default", "tensorfloat32", "bfloat16", "float32")


class Clock:
    """Seconds since the start and left of the budget."""

    def __init__(self, budget_s: float):
        self.start, self.budget_s = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


class AheadBatches:
    """`call index -> host batch` of `batch_fn(call x stride)`, built `depth` calls ahead by
    `workers` threads (numpy's augmentations release the GIL for most of their work); calls in
    `ready` (built before, e.g. while timing the host) are returned as they are."""

    def __init__(
        self,
        batch_fn: Callable[[int], Any],
        stride: int,
        workers: int,
        depth: int,
        ready: Mapping[int, Any] | None = None,
    ):
        self.batch_fn, self.stride, self.depth = batch_fn, stride, depth
        self.ready = ready or {}
        self.pool = ThreadPoolExecutor(max(workers, 1))
        self.pending: dict[int, Any] = {}

    def __call__(self, call: int) -> Any:
        for k in range(call, call + self.depth):
            if k not in self.pending and k not in self.ready:
                self.pending[k] = self.pool.submit(self.batch_fn, k * self.stride)
        if call in self.ready:
            return self.ready[call]
        return self.pending.pop(call).result()

    def close(self) -> None:
        for f in self.pending.values():
            f.cancel()
        self.pool.shutdown(wait=True)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """Sets dotted fields (`{"train.batch_size": 128}`) of `config`; an unknown field raises
    ValueError naming it."""
    for name, value in overrides.items():
        *parents, leaf = name.split(".")
        node = config
        for p in parents:
            if p not in node:
                raise ValueError(f"override {name!r}: config has no field {p!r}")
            node = node[p]
        if leaf not in node:
            raise ValueError(f"override {name!r}: config has no field {leaf!r}")
        node[leaf] = value


def choose_epochs(
    *,
    seconds_left: float,
    seconds_per_step: Mapping[str, float],
    steps_per_run_epoch: int,
    num_seeds: int,
    eval_seconds: float,
    max_epochs: int,
) -> int:
    """The most epochs E (1..max_epochs) such that every method x seed trains E epochs and is
    evaluated once in `seconds_left`: sum over methods of seconds_per_step x
    steps_per_run_epoch x E x num_seeds + (methods x seeds) x eval_seconds <= seconds_left.
    At least 1 (the budget check then stops what does not fit)."""
    per_epoch = sum(seconds_per_step.values()) * steps_per_run_epoch * num_seeds
    evals = len(seconds_per_step) * num_seeds * eval_seconds
    if per_epoch <= 0:
        raise ValueError(f"seconds_per_step must be positive, got {dict(seconds_per_step)}")
    return int(min(max(math.floor((seconds_left - evals) / per_epoch), 1), max_epochs))


def summary_tables(results: Sequence[Mapping[str, Any]]) -> tuple[list[dict], list[dict], str]:
    """Per-method rows (top-1 mean, sample std, per seed), the SMMix differences (Welch
    standard error, whether |diff| > 2 s.e.) and both as a markdown text; `results` holds the
    complete runs only (`method`, `seed`, `top1`)."""
    rows, by = [], {}
    for method in dict.fromkeys(r["method"] for r in results):
        values = [r["top1"] for r in results if r["method"] == method]
        by[method] = stats.seed_summary(values)
        s = by[method]
        rows.append(
            dict(method=method, seeds=s.n, top1_mean=s.mean, top1_std=s.std, per_seed=values)
        )
    diffs = []
    for a, b in steps.COMPARISONS:
        if a in by and b in by:
            d = stats.difference(by[a], by[b])
            spread = (
                "n/a (1 seed)" if min(by[a].n, by[b].n) < 2 else str(d.exceeds_spread()).lower()
            )
            diffs.append(
                dict(
                    comparison=f"{a} - {b}",
                    diff_points=100 * d.diff,
                    stderr_points=100 * d.stderr,
                    z=d.z,
                    exceeds_seed_spread=spread,
                )
            )
    lines = ["| method | seeds | top-1 % (mean ± std) | per seed |", "|---|---|---|---|"]
    for r in rows:
        per = ", ".join(f"{100 * v:.2f}" for v in r["per_seed"])
        lines.append(
            f"| {r['method']} | {r['seeds']} | {100 * r['top1_mean']:.2f} ± "
            f"{100 * r['top1_std']:.2f} | {per} |"
        )
    if diffs:
        lines += [
            "",
            "| comparison | Δ top-1 (points) | std. error | Δ / s.e. | exceeds the seed spread |",
            "|---|---|---|---|---|",
        ]
        for d in diffs:
            lines.append(
                f"| {d['comparison']} | {d['diff_points']:+.2f} | {d['stderr_points']:.2f} | "
                f"{d['z']:.2f} | {d['exceeds_seed_spread']} |"
            )
    return rows, diffs, "\n".join(lines)


def time_host_batches(
    batch_fn: Callable[[int], Any], stride: int, workers: int
) -> tuple[float, dict[int, Any]]:
    """Builds the first `workers` calls' batches at once in `workers` threads (as
    `AheadBatches` does while training); returns the wall seconds per call, the host's rate,
    which bounds the training rate when it is slower than the device's, and the batches by
    call index (the first calls of every run of that seed)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        batches = list(pool.map(batch_fn, [c * stride for c in range(workers)]))
    return (time.perf_counter() - start) / workers, dict(enumerate(batches))


def _time_evaluation(setup: Setup, state: TrainState, result: dict, log) -> float:
    """Compiles the evaluation's forward and times one steady batch of it; returns the
    estimated seconds of one evaluation (steady batch x batches, host normalisation included:
    it runs on the batch too)."""
    bs, n = setup.config.eval.batch_size, len(setup.data.test_y)
    images = setup.data.test_x[:bs]
    times = []
    for _ in range(2):
        t = time.perf_counter()
        steps.evaluate_top1(
            setup.predict, state.params, img.normalize(img.to_unit(images), setup.data.mean,
            setup.data.std), setup.data.test_y[:bs], bs,
        )  # fmt: skip
        times.append(time.perf_counter() - t)
    seconds = times[1] * -(-n // bs)
    result["eval"] = dict(first_batch_s=times[0], steady_batch_s=times[1], estimate_s=seconds)
    log(
        f"evaluation: first batch {times[0]:.2f} s (compilation), then {times[1]:.3f} s per "
        f"batch of {bs}: {seconds:.2f} s for the {n} test images"
    )
    return seconds


def _call(step, state, host_batch, mesh, k):
    state, metrics = step(state, shard_batch(host_batch, mesh, steps_per_call=k))
    return state, jax.device_get(metrics)  # waits for the call


def run_cifar10(
    data_dir: str,
    out_dir: str,
    budget_s: float,
    *,
    methods: Sequence[str] | str | None = None,
    seeds: Sequence[int] | None = None,
    preset: str = "cifar10",
    cache_dir: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    matmul_precision: str = "default",
    probe_calls: int = 3,
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Trains and evaluates `methods` x `seeds` of `preset` on the ImageFolder `data_dir`
    (`train/`, `test/`) in `budget_s` seconds (module docstring); returns the JSON it writes.

    methods: default the preset's (cifar10: none, mixup, cutmix, smmix, smmix_no_fine,
    smmix_no_con); seeds: default 0..num_seeds-1 of the preset (cifar10: 3). cache_dir: the
    decoded-array cache (default `out_dir/data_cache`). overrides: dotted config fields. matmul_
    precision: `jax.default_matmul_precision` of every compiled program ("default": the backend's
    float32 matmuls, TF32 tensor cores on recent NVIDIA GPUs; "bfloat16": one bf16 pass).
    probe_calls: calls of each method's step timed before the epochs are chosen (the first
    includes compilation). workers: threads building host batches (default: the CPU count).
    Raises ValueError for a bad argument or config value before any training.
    """
    clock = Clock(float(budget_s))
    if budget_s <= 0:
        raise ValueError(f"budget_s = {budget_s}: must be > 0")
    if probe_calls < 2:
        raise ValueError(f"probe_calls = {probe_calls}: must be >= 2 (one compiles, one times)")
    if matmul_precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul_precision = {matmul_precision!r}: one of {MATMUL_PRECISIONS}")
    config = get_config(preset)
    config.data_dir = data_dir
    if methods is not None:
        config.methods = methods if isinstance(methods, str) else ",".join(methods)
    seeds = list(range(config.num_seeds)) if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: need at least one seed")
    config.num_seeds, config.seed = len(seeds), seeds[0]
    apply_overrides(config, overrides or {})
    validate_config(config)
    method_list = steps.parse_methods(config.methods)
    os.makedirs(out_dir, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    device = jax.devices()[0]
    log(
        f"smmix cifar10: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"budget {budget_s:.0f} s, preset {preset}, methods {','.join(method_list)}, seeds "
        f"{seeds}, matmul precision {matmul_precision}"
    )

    data = load_data(config, cache_dir or os.path.join(out_dir, "data_cache"))
    log(
        f"data: {len(data.train_labels)} train / {len(data.test_y)} test images, loaded in "
        f"{data.load_seconds:.2f} s ({'cache' if data.from_cache else 'decoded, cache written'})"
    )
    precision = None if matmul_precision == "default" else matmul_precision
    result: dict[str, Any] = dict(
        preset=preset,
        device=f"{device.device_kind} ({jax.default_backend()})",
        jax=jax.__version__,
        budget_s=float(budget_s),
        methods=method_list,
        seeds=seeds,
        matmul_precision=matmul_precision,
        data=dict(
            train_images=int(len(data.train_labels)),
            test_images=int(len(data.test_y)),
            load_seconds=data.load_seconds,
            from_cache=data.from_cache,
        ),
        model=config.model.to_dict(),
        train=config.train.to_dict(),
        steps_per_call=config.steps_per_call,
        preset_epochs=int(config.train.epochs),
    )
    with jax.default_matmul_precision(precision):
        _run(config, data, method_list, seeds, out_dir, clock, probe_calls, workers, log, result)
    return result


def _run(config, data, method_list, seeds, out_dir, clock, probe_calls, workers, log, result):
    setup = Setup(config, data)
    k, spe = config.steps_per_call, setup.steps_per_epoch
    calls_per_epoch = -(-spe // k)  # whole calls: the last one may run into the next epoch
    result["steps_per_epoch"] = spe
    result["steps_per_run_epoch"] = calls_per_epoch * k

    # The first `workers` calls of every seed, built now (the first seed's timed: the host's
    # rate), so that no run waits for its first batches.
    first_batches, times = {}, []
    for seed in seeds:
        seconds, first_batches[seed] = time_host_batches(
            make_batch_fn(config, data, seed), k, workers
        )
        times.append(seconds)
    host_s = times[0]

    def batches(seed: int) -> AheadBatches:
        return AheadBatches(
            make_batch_fn(config, data, seed), k, workers, depth=workers + 1,
            ready=first_batches[seed],
        )  # fmt: skip

    def write(status: str) -> None:
        result["status"] = status
        result["elapsed_s"] = clock.elapsed()
        done = [r for r in result.get("runs", []) if r["complete"]]
        rows, diffs, text = summary_tables(done)
        result["summary"], result["differences"] = rows, diffs
        with open(os.path.join(out_dir, "cifar10_budget.json"), "w") as f:
            json.dump(result, f, indent=1, default=float)
        with open(os.path.join(out_dir, "results.md"), "w") as f:
            f.write(f"# SMMix on CIFAR-10 in a {result['budget_s']:.0f} s budget\n\n")
            f.write(f"{result.get('note', '')}\n\n{text}\n")
        result["table"] = text

    # 1. The host's batch rate (above), then each method's step compiled and timed on the
    # device (throw-away states of the first seed); a step takes the slower of the two.
    # `times` are seconds per call (wall / workers): the wall time of the prebuilding is
    # workers x their sum.
    result["host_seconds_per_step"] = host_s / k
    result["host_first_calls_wall_s"] = workers * sum(times)
    log(
        f"host batches: {1e3 * host_s / k:.2f} ms / step ({workers} threads, {k} steps of "
        f"{config.train.batch_size} images per call); the first {workers} calls of "
        f"{len(seeds)} seed(s) built in {workers * sum(times):.2f} s (wall)"
    )
    probe: dict[str, Any] = {}
    result["probe"] = probe
    eval_seconds = None
    for method in method_list:
        if clock.left() <= 0:
            write("budget spent while compiling")
            log(f"budget spent while compiling ({method}); nothing trained")
            return
        step = setup.train_step(method)
        state = replicate(setup.init_state(seeds[0]), setup.mesh)
        source = batches(seeds[0])
        times = []
        try:
            for c in range(probe_calls):
                if c and clock.left() <= 0:
                    break
                host = source(c)
                t = time.perf_counter()
                state, metrics = _call(step, state, host, setup.mesh, k)
                times.append(time.perf_counter() - t)
        finally:
            source.close()
        if len(times) < 2:
            write("budget spent while compiling")
            log(f"budget spent after compiling {method} ({times[0]:.2f} s); nothing trained")
            return
        device_sps = statistics.median(times[1:]) / k
        sps = max(device_sps, host_s / k)
        probe[method] = dict(
            first_call_s=times[0], steady_call_s=times[1:], device_seconds_per_step=device_sps,
            seconds_per_step=sps, compile_s_estimate=times[0] - device_sps * k,
            loss=float(metrics["loss"]),
        )  # fmt: skip
        log(
            f"{method}: first call {times[0]:.2f} s (compilation + {k} steps), then "
            f"{1e3 * device_sps:.2f} ms / step on the device; planned with {1e3 * sps:.2f} ms / "
            f"step ({'host' if sps > device_sps else 'device'}-bound; {spe} steps / epoch: "
            f"{sps * spe:.2f} s)"
        )
        if eval_seconds is None:
            eval_seconds = _time_evaluation(setup, state, result, log)
        del state

    # 2. Epochs that fit.
    left = clock.left()
    epochs = choose_epochs(
        seconds_left=0.97 * left,
        seconds_per_step={m: probe[m]["seconds_per_step"] for m in method_list},
        steps_per_run_epoch=calls_per_epoch * k,
        num_seeds=len(seeds),
        eval_seconds=eval_seconds,
        max_epochs=int(config.train.epochs),
    )
    num_steps = epochs * calls_per_epoch * k
    fewer = epochs < config.train.epochs
    result["epochs"], result["steps_per_run"] = epochs, num_steps
    result["fewer_epochs_than_preset"] = fewer
    result["note"] = (
        f"{epochs} epochs ({num_steps} steps of batch {config.train.batch_size}) per run, "
        f"chosen to fit {left:.0f} s left of the {result['budget_s']:.0f} s budget"
        + (" (nothing fits: every run is skipped)" if left <= 0 else "")
        + (
            f": fewer epochs than the preset ({config.train.epochs})"
            if fewer
            else f": the preset's {config.train.epochs}"
        )
        + f". Model: ViT width {config.model.hidden_dim}, {config.model.depth} blocks, patch "
        f"{config.model.patch_size}; matmul precision {result['matmul_precision']}. Top-1 of the "
        "final model on the test split; std over seeds with ddof 1; a difference exceeds the "
        "seed spread when it is more than 2 Welch standard errors."
    )
    log(result["note"])

    # 3. Train seed by seed.
    runs: list[dict[str, Any]] = []
    result["runs"] = runs
    for seed in seeds:
        for method in method_list:
            if clock.left() < eval_seconds + probe[method]["seconds_per_step"] * k:
                runs.append(dict(method=method, seed=seed, complete=False, skipped=True))
                log(f"{method} seed {seed}: skipped (budget spent)")
                continue
            runs.append(
                _train_one(setup, method, seed, num_steps, batches, clock, eval_seconds, probe, log)
            )
            write("running")
    # One compiled program per method for every seed and epoch count (jax's cache of each
    # jitted step; None where this jax version does not expose it).
    result["compilations_per_method"] = {
        m: getattr(setup.train_step(m), "_cache_size", lambda: None)() for m in method_list
    }
    write("done")
    log(f"compiled programs per method: {result['compilations_per_method']}")
    log(result["table"])


def _train_one(setup, method, seed, num_steps, batches, clock, eval_seconds, probe, log):
    """One (method, seed) run of `num_steps` steps, stopped early when the budget would not
    leave time for the next call and the evaluation; evaluated at the end."""
    k = setup.config.steps_per_call
    step = setup.train_step(method)
    state: TrainState = replicate(setup.init_state(seed, num_steps), setup.mesh)
    source = batches(seed)
    start, done, smmix, losses = time.perf_counter(), 0, [], []
    call_s = probe[method]["seconds_per_step"] * k
    try:
        for c in range(num_steps // k):
            if clock.left() < eval_seconds + call_s:
                break
            state, metrics = _call(step, state, source(c), setup.mesh, k)
            done += k
            smmix.append(float(metrics["smmix"]))
            losses.append(float(metrics["loss"]))
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"{method} seed {seed}: loss {losses[-1]} at step {done}")
    finally:
        source.close()
    train_s = time.perf_counter() - start
    top1 = setup.eval_fn(state)["top1"]
    complete = done == num_steps
    log(
        f"{method} seed {seed}: top-1 {100 * top1:.2f}% after {done}/{num_steps} steps "
        f"({train_s:.1f} s{'' if complete else ', stopped by the budget'}), last loss "
        f"{losses[-1] if losses else float('nan'):.3f}"
    )
    return dict(
        method=method, seed=seed, top1=float(top1), steps=done, complete=complete,
        train_seconds=train_s, seconds_per_step=train_s / max(done, 1),
        last_loss=losses[-1] if losses else None,
        smmix_fraction=float(np.mean(smmix)) if smmix else None,
    )  # fmt: skip
