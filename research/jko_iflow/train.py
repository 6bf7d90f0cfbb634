"""JKO-iFlow training (block by block) and the end-to-end CNF baseline; `train_and_evaluate`.

    python -m experiments.jko_iflow --config=experiments/configs/jko_iflow.py:small --workdir=DIR

For each density in `config.densities` (comma-separated) the run writes `DIR/<density>/`:
`jko/block_XX/` (checkpoints and metrics of block XX; a re-run resumes in the block it stopped
in), `jko/refineR_block_XX/` (reparameterization rounds), `baseline/`, each method's final
block parameters `<method>/params.npz`, plots; and `DIR/results.*`.

Only this module reads the config: its sub-dicts come back as the methods' options
(`config.model` -> `flow.ModelOptions`, `config.jko` -> `jko.JKOOptions`, `config.baseline` ->
`jko.BaselineOptions`, `config.eval` -> `evaluate.EvalOptions`), its run-wide fields as
`RunSettings`.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
import zlib
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from absl import logging

from models.flows import VelocityMLP, init_velocity
from research.jko_iflow import evaluate, flow, jko, plots
from research.jko_iflow.config_rules import density_names, validate_config
from research.jko_iflow.data import epoch_batches, load_data
from research.jko_iflow.evaluate import EvalOptions
from research.jko_iflow.flow import ModelOptions
from research.jko_iflow.jko import BaselineOptions, JKOOptions
from research.training import results
from research.training.distributed import global_mesh, process_rows
from research.training.errors import NonFiniteError
from research.training.loop import round_to_calls, train_loop
from research.training.metrics import steady_steps_per_second
from research.training.parallel import make_train_step
from research.training.train_state import TrainState

Config = ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The run-wide fields every training loop of a density uses (`--config.seed`,
    `--config.steps_per_call`, `--config.checkpoint_every`, `--config.log_every`), and the
    `time.monotonic()` deadline from `--config.time_budget_s` (None: no limit)."""

    seed: int
    steps_per_call: int  # optimizer steps per jitted call (lax.scan)
    checkpoint_every: int
    log_every: int
    deadline: float | None = None  # training stops past it (TimeBudgetExceeded)

    @classmethod
    def from_config(cls, config: Config, *, deadline: float | None = None) -> RunSettings:
        return cls(
            config.seed, config.steps_per_call, config.checkpoint_every, config.log_every, deadline
        )


def run_deadline(config: Config, start: float) -> float | None:
    """The `time.monotonic()` deadline of a run started at `start` (None when
    `config.time_budget_s` is 0: no limit)."""
    return start + config.time_budget_s if config.time_budget_s > 0 else None


class NonFiniteDataError(NonFiniteError, ValueError):
    """The training data pushed through a trained block hold NaN or infinity: the next block
    would train on them (one line, exit status 1, like the loop's NaN guard)."""


def push_through_block(
    model: VelocityMLP, params: Any, x: np.ndarray, *, solver: flow.Solver, name: str
) -> np.ndarray:
    """`x` [N, d] pushed through one trained block; raises NonFiniteDataError naming the block
    when a pushed point is NaN or infinite (finite parameters can still overflow)."""
    x_next = np.asarray(flow.flow_forward(model, [params], x, solver=solver)[-1])
    bad = ~np.all(np.isfinite(x_next), axis=-1)
    if bad.any():
        raise NonFiniteDataError(
            f"{name}: {int(bad.sum())} of the {len(x)} training points pushed through the trained "
            f"block are NaN or infinite (first: row {int(np.argmax(bad))}); the next block would "
            "train on them; lower config.jko.lr or check the data"
        )
    return x_next


def make_optimizer(lr: float, clip: float) -> optax.GradientTransformation:
    """Adam after clipping the global gradient norm (official: lr 1e-4, clip 1.0)."""
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr))


def _seconds_per_step(workdir: str) -> float | None:
    """Steady-state seconds per optimizer step of the loop in `workdir` (None before any record)."""
    rate = steady_steps_per_second(workdir)
    return None if rate is None else 1.0 / rate


def _loop(run: RunSettings, workdir: str, state, step_fn, batch_fn, num_steps: int, desc: str):
    """`train_loop` with the run's settings on every process's devices; returns (final state,
    on the host, wall seconds of this call). Every process leaves it once process 0 has written
    the loop's metrics (which `_seconds_per_step` reads)."""
    start = time.perf_counter()
    state = train_loop(
        workdir=workdir,
        state=state,
        train_step=step_fn,
        batch_fn=batch_fn,
        num_steps=num_steps,
        mesh=global_mesh(),
        checkpoint_every=run.checkpoint_every,
        log_every=run.log_every,
        steps_per_call=run.steps_per_call,
        desc=desc,
        deadline=run.deadline,
        min_calls=0,  # the run's blocks share one deadline: a spent one stops the next block
    )
    seconds = time.perf_counter() - start
    return jax.device_get(state), seconds


def jko_optimizer(opts: JKOOptions) -> optax.GradientTransformation:
    return make_optimizer(opts.lr, opts.grad_clip)


def jko_train_step(
    opts: JKOOptions,
    model: VelocityMLP,
    mesh: jax.sharding.Mesh | None = None,
    *,
    steps_per_call: int,
):
    """The jitted data-parallel JKO step: `(state, {"x", "w2_weight"}) -> (state, metrics)`, one
    compiled step for every block (h_k enters through the batch's `w2_weight = 1 / (2 h_k)`).
    Batch leaves are [steps_per_call, B, ...] (or [B, ...] for one step per call)."""
    s = opts.num_substeps

    def loss_fn(params, batch, rng):
        x = batch["x"]
        eps = jax.random.normal(rng, (s,) + x.shape, x.dtype)  # one probe per RK4 step
        return jko.jko_block_loss(
            model, params, x, eps, batch["w2_weight"], num_steps=s, divergence=opts.divergence
        )

    return make_train_step(
        loss_fn, jko_optimizer(opts), mesh or global_mesh(), steps_per_call=steps_per_call
    )


def baseline_train_step(
    opts: JKOOptions,
    baseline: BaselineOptions,
    model: VelocityMLP,
    mesh: jax.sharding.Mesh | None = None,
    *,
    num_blocks: int,
    key: jax.Array,
    steps_per_call: int,
) -> tuple[Any, TrainState]:
    """The baseline's jitted step `(state, {"x"}) -> (state, metrics)` and its initial state:
    `num_blocks` independently initialised fields, stacked on a leading axis. RK4 sub-steps,
    divergence and clipping come from the JKO options, the learning rate from `baseline`."""
    s = opts.num_substeps
    optimizer = make_optimizer(baseline.lr, opts.grad_clip)
    keys = jax.random.split(jax.random.fold_in(key, 2 * 10**6), num_blocks)
    stacked = jax.vmap(lambda k: init_velocity(model, k))(keys)

    def loss_fn(params, batch, rng):
        x = batch["x"]
        eps = jax.random.normal(rng, (num_blocks, s) + x.shape, x.dtype)
        return jko.cnf_nll_loss(model, params, x, eps, num_steps=s, divergence=opts.divergence)

    step_fn = make_train_step(
        loss_fn, optimizer, mesh or global_mesh(), steps_per_call=steps_per_call
    )
    return step_fn, TrainState.create(stacked, optimizer, jax.random.fold_in(key, 3 * 10**6))


def train_jko(
    opts: JKOOptions,
    model: VelocityMLP,
    train_x: np.ndarray,
    workdir: str,
    key: jax.Array,
    *,
    run: RunSettings,
) -> tuple[list[Any], dict[str, Any]]:
    """Trains JKO-iFlow block by block on `train_x` [N, d]; returns (block parameters, info).

    Block k starts from block k-1's parameters (warm start), is trained on the training data
    pushed through blocks 1..k-1 (frozen), then the data is pushed through it with the training
    discretisation (RK4, `num_substeps` steps). Training stops adding blocks once a block moves
    the data by less than `stop_tol` (`jko.movement_ratio`; 0 disables the rule). Then
    `reparam.rounds` rounds of adaptive time reparameterization: new h_k equalising the blocks'
    movement, and every block retrained (`reparam.iters_per_block` steps) on data pushed
    through the refined blocks. Each block's steps are rounded up to whole calls
    (`round_to_calls`); `info["train_steps"]` counts the steps actually run.
    """
    optimizer = jko_optimizer(opts)
    s = opts.num_substeps
    step_fn = jko_train_step(opts, model, steps_per_call=run.steps_per_call)
    push_solver = flow.Solver("rk4", num_steps=s)
    h = opts.block_step_sizes()

    def train_block(params, x, k, h_k, num_steps, name):
        bdir = os.path.join(workdir, name)
        steps = round_to_calls(num_steps, run.steps_per_call)
        state = TrainState.create(
            params, optimizer, jax.random.fold_in(key, zlib.crc32(name.encode()))
        )
        batch_fn = epoch_batches(
            x,
            opts.batch_size,
            seed=run.seed * 1000 + k,
            steps_per_call=run.steps_per_call,
            extra={"w2_weight": 1.0 / (2.0 * h_k)},
            rows=process_rows(opts.batch_size),
        )
        state, seconds = _loop(run, bdir, state, step_fn, batch_fn, steps, name)
        x_next = push_through_block(model, state.params, x, solver=push_solver, name=name)
        sub = slice(0, min(len(x), 20000))
        # A re-run reads a finished block's info back (its training time is the first run's).
        info = results.cached_result(
            os.path.join(bdir, "block_info.json"),
            lambda: {
                "h": h_k,
                "steps": steps,
                "train_seconds": seconds,
                "seconds_per_step": _seconds_per_step(bdir),
                "movement_ratio": jko.movement_ratio(x[sub], x_next[sub]),
            },
        )
        logging.info("%s: %s", name, info)
        return state.params, x_next, info

    params = init_velocity(model, jax.random.fold_in(key, 10**6))
    blocks, infos, x = [], [], train_x
    for k in range(opts.num_blocks):
        params, x, info = train_block(
            params, x, k, h[k], opts.iters_per_block, f"block_{k + 1:02d}"
        )
        blocks.append(params)
        infos.append(info)
        if info["movement_ratio"] < opts.stop_tol:
            logging.info(
                "stopping rule: block %d moved the data by ratio %.4g",
                k + 1,
                info["movement_ratio"],
            )
            break
    h = h[: len(blocks)]
    rc = opts.reparam
    for r in range(rc.rounds):
        sub = train_x[: min(len(train_x), 20000)]
        moves = jko.block_movements(flow.flow_forward(model, blocks, sub, solver=push_solver))
        h = jko.reparameterize(h, moves, eta=rc.eta, h_max=rc.h_max)
        logging.info("reparameterization %d: movements %s -> h %s", r + 1, moves, h)
        x = train_x
        for k in range(len(blocks)):
            name = f"refine{r + 1}_block_{k + 1:02d}"
            blocks[k], x, info = train_block(blocks[k], x, k, h[k], rc.iters_per_block, name)
            infos.append(info)
    total_steps = sum(i["steps"] for i in infos)
    rates = [i["seconds_per_step"] for i in infos if i["seconds_per_step"]]
    summary = {
        "num_blocks": len(blocks),
        "train_steps": total_steps,
        "train_seconds": sum(i["train_seconds"] for i in infos),
        "seconds_per_step": statistics.median(rates) if rates else float("nan"),
        "step_sizes": h,
        "blocks": infos,
    }
    return blocks, summary


def train_baseline(
    opts: JKOOptions,
    baseline: BaselineOptions,
    model: VelocityMLP,
    train_x: np.ndarray,
    workdir: str,
    key: jax.Array,
    *,
    run: RunSettings,
    num_blocks: int,
    num_steps: int,
) -> tuple[list[Any], dict[str, Any]]:
    """The same `num_blocks` fields stacked into one CNF, trained end to end by maximum
    likelihood with the Hutchinson trace (FFJORD) for `num_steps` optimizer steps, rounded up
    to whole calls (`info["train_steps"]` counts the steps actually run)."""
    num_steps = round_to_calls(num_steps, run.steps_per_call)
    step_fn, state = baseline_train_step(
        opts, baseline, model, num_blocks=num_blocks, key=key, steps_per_call=run.steps_per_call
    )
    batch_fn = epoch_batches(
        train_x,
        opts.batch_size,
        seed=run.seed * 1000 + 999,
        steps_per_call=run.steps_per_call,
        rows=process_rows(opts.batch_size),
    )
    state, seconds = _loop(run, workdir, state, step_fn, batch_fn, num_steps, "baseline")
    info = results.cached_result(
        os.path.join(workdir, "block_info.json"),
        lambda: {
            "train_steps": num_steps,
            "train_seconds": seconds,
            "seconds_per_step": _seconds_per_step(workdir),
        },
    )
    blocks = [jax.tree.map(lambda a, i=i: a[i], state.params) for i in range(num_blocks)]
    return blocks, info


def run_density(
    config: Config, name: str, workdir: str, *, deadline: float | None = None
) -> tuple[dict[str, float], list[str]]:
    """Trains and evaluates JKO-iFlow (and the baseline) on one density; returns flat metrics
    `{method/metric: value}` and the plot paths (relative to `workdir`'s parent). Training
    raises TimeBudgetExceeded past `deadline` (`time.monotonic()`; None: no limit)."""
    data = load_data(
        name,
        data_dir=config.data_dir,
        num_train=config.num_train,
        num_test=config.num_test,
        seed=config.seed,
    )
    dim = data["train"].shape[1]
    model = flow.make_model(ModelOptions(**config.model), dim)
    opts, baseline = JKOOptions(**config.jko), BaselineOptions(**config.baseline)
    eval_opts = EvalOptions(**config.eval)
    run = RunSettings.from_config(config, deadline=deadline)
    key = jax.random.PRNGKey(config.seed)
    solver = eval_opts.flow_solver()
    methods: dict[str, tuple[list[Any], dict[str, Any]]] = {}
    methods["jko"] = train_jko(
        opts, model, data["train"], os.path.join(workdir, "jko"), key, run=run
    )
    if baseline.enabled:
        jko_blocks, jko_info = methods["jko"]
        methods["baseline"] = train_baseline(
            opts,
            baseline,
            model,
            data["train"],
            os.path.join(workdir, "baseline"),
            key,
            run=run,
            num_blocks=len(jko_blocks),
            num_steps=baseline.num_steps or jko_info["train_steps"],
        )
    metrics, samples, grids = {}, {}, {}
    for method, (blocks, info) in methods.items():
        named = {f"block_{k + 1:02d}": params for k, params in enumerate(blocks)}
        results.save_arrays(os.path.join(workdir, method, "params.npz"), named)
        m, extra = evaluate.evaluate_flow(
            model,
            blocks,
            data["test"],
            key=jax.random.fold_in(key, 7),
            opts=eval_opts,
            train_steps=info["train_steps"],
            true_logpdf=data["true_logpdf"],
        )
        m.update(train_seconds=info["train_seconds"], seconds_per_step=info["seconds_per_step"])
        m["num_blocks"] = float(len(blocks))
        metrics.update({f"{method}/{k}": v for k, v in m.items()})
        samples[method] = extra["samples"]
        if dim == 2 and eval_opts.grid_size:
            grids[method] = evaluate.density_grid(
                model, blocks, num=eval_opts.grid_size, solver=solver
            )
    results.write_json(os.path.join(workdir, "jko_info.json"), methods["jko"][1])
    # This density's metrics, written as it finishes (results.json comes after every density).
    results.write_json(os.path.join(workdir, "metrics.json"), metrics)
    figs = []
    if dim == 2:
        test = data["test"][: eval_opts.num_mmd]
        figs.append(
            plots.density_figure(
                os.path.join(workdir, "densities.png"), test, grids, samples, title=name
            )
        )
        traj = flow.flow_forward(model, methods["jko"][0], data["test"][:3000], solver=solver)
        figs.append(
            plots.trajectory_figure(
                os.path.join(workdir, "trajectory.png"), traj, title=f"{name}: JKO-iFlow blocks"
            )
        )
    parent = os.path.dirname(workdir)
    return metrics, [os.path.relpath(p, parent) for p in figs]


METRIC_COLUMNS = (
    "nll",
    "nll_rk4_1step",
    "nll_true",
    "mmd",
    "mmd_floor",
    "mmd_test_p_value",
    "inversion_max_abs",
    "train_steps",
    "train_seconds",
    "seconds_per_step",
    "num_blocks",
)


def train_and_evaluate(config: Config, workdir: str) -> dict[str, float]:
    """Runs every density of `config.densities`; writes results.json / results.md / plots.
    The config is checked first (`config_rules.validate_config`). With `config.time_budget_s`
    > 0, training raises TimeBudgetExceeded once that many seconds have passed since the call
    (data loading included; evaluation is not interrupted)."""
    deadline = run_deadline(config, time.monotonic())
    validate_config(config)
    names = density_names(config)
    all_metrics: dict[str, float] = {}
    rows, figs = [], []
    for name in names:
        metrics, density_figs = run_density(
            config, name, os.path.join(workdir, name), deadline=deadline
        )
        all_metrics.update({f"{name}/{k}": v for k, v in metrics.items()})
        figs += density_figs
        for method in ("jko", "baseline"):
            if f"{method}/nll" in metrics:
                row = {"density": name, "method": method}
                row.update({c: metrics.get(f"{method}/{c}") for c in METRIC_COLUMNS})
                rows.append(row)
    wins = [
        all_metrics[f"{n}/jko/nll"] <= all_metrics[f"{n}/baseline/nll"]
        for n in names
        if f"{n}/baseline/nll" in all_metrics
    ]
    if wins:
        all_metrics["jko_nll_at_or_below_baseline"] = float(sum(wins))
        all_metrics["num_compared"] = float(len(wins))
    notes = (
        f"Preset `{config.preset}`. NLL in nats on held-out samples, accurate integration "
        f"({config.eval.solver}, tol {config.eval.tol}) with exact traces; `nll_rk4_1step` is the "
        "official code's evaluation (one RK4 step per block). MMD: Gaussian kernel, bandwidth "
        "0.1 x median distance (official); `mmd_floor` is the same statistic between two halves "
        "of the test data. `mmd_test_p_value`: permutation test, median-heuristic bandwidth. "
        "Baseline: same fields stacked into one CNF, maximum likelihood, same number of steps."
    )
    results.write_results(
        workdir,
        all_metrics,
        title="JKO-iFlow vs end-to-end CNF",
        tables={"Results": rows},
        plots=figs,
        notes=notes,
    )
    return all_metrics
