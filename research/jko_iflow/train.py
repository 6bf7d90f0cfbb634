"""JKO-iFlow training (block by block) and the end-to-end CNF baseline; `train_and_evaluate`.

    python -m experiments.jko_iflow --config=experiments/configs/jko_iflow.py:small --workdir=DIR

For each density in `config.densities` (comma-separated) the run writes `DIR/<density>/`:
`jko/block_XX/` (checkpoints and metrics of block XX; a re-run resumes in the block it stopped
in), `jko/refineR_block_XX/` (reparameterization rounds), `baseline/`, plots; and `DIR/results.*`.
"""

from __future__ import annotations

import json
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
from research.jko_iflow.data import epoch_batches, load_data
from research.training import results
from research.training.loop import train_loop
from research.training.metrics import read_metrics
from research.training.parallel import data_mesh, make_train_step
from research.training.train_state import TrainState

Config = ml_collections.ConfigDict


def make_model(config: Config, dim: int) -> VelocityMLP:
    m = config.model
    return VelocityMLP(dim, m.width, m.depth, m.beta, m.time_dependent)


def make_optimizer(lr: float, clip: float) -> optax.GradientTransformation:
    """Adam after clipping the global gradient norm (official: lr 1e-4, clip 1.0)."""
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr))


def seconds_per_step(workdir: str) -> float | None:
    """Steady-state seconds per optimizer step from a loop's metrics.jsonl (first record, which
    includes compilation, dropped)."""
    try:
        rates = [r["steps_per_s"] for r in read_metrics(workdir)]
    except FileNotFoundError:
        return None
    rates = rates[1:] if len(rates) > 1 else rates
    return 1.0 / statistics.median(rates) if rates else None


def _loop(config: Config, workdir: str, state, step_fn, batch_fn, num_steps: int, desc: str):
    """`train_loop` with the run's settings; returns (final state, wall seconds of this call)."""
    start = time.perf_counter()
    state = train_loop(
        workdir=workdir,
        state=state,
        train_step=step_fn,
        batch_fn=batch_fn,
        num_steps=num_steps,
        mesh=data_mesh(),
        checkpoint_every=config.checkpoint_every,
        log_every=config.log_every,
        steps_per_call=config.steps_per_call,
        desc=desc,
    )
    return jax.device_get(state), time.perf_counter() - start


def _finish_block(workdir: str, info: dict[str, Any]) -> dict[str, Any]:
    """Reads `block_info.json` of a finished block (resume), or writes `info` as it."""
    path = os.path.join(workdir, "block_info.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    with open(path, "w") as f:
        json.dump(info, f, indent=1)
    return info


def jko_optimizer(config: Config) -> optax.GradientTransformation:
    return make_optimizer(config.jko.lr, config.jko.grad_clip)


def jko_train_step(config: Config, model: VelocityMLP, mesh: jax.sharding.Mesh | None = None):
    """The jitted data-parallel JKO step: `(state, {"x", "w2_weight"}) -> (state, metrics)`, one
    compiled step for every block (h_k enters through the batch's `w2_weight = 1 / (2 h_k)`)."""
    jc, s = config.jko, config.jko.num_substeps

    def loss_fn(params, batch, rng):
        x = batch["x"]
        eps = jax.random.normal(rng, (s,) + x.shape, x.dtype)  # one probe per RK4 step
        return jko.jko_block_loss(
            model, params, x, eps, batch["w2_weight"], num_steps=s, divergence=jc.divergence
        )

    return make_train_step(
        loss_fn, jko_optimizer(config), mesh or data_mesh(), steps_per_call=config.steps_per_call
    )


def baseline_train_step(
    config: Config,
    model: VelocityMLP,
    mesh: jax.sharding.Mesh | None = None,
    *,
    num_blocks: int,
    key: jax.Array | None = None,
) -> tuple[Any, TrainState]:
    """The baseline's jitted step `(state, {"x"}) -> (state, metrics)` and its initial state:
    `num_blocks` independently initialised fields, stacked on a leading axis."""
    s = config.jko.num_substeps
    key = jax.random.PRNGKey(config.seed) if key is None else key
    optimizer = make_optimizer(config.baseline.lr, config.jko.grad_clip)
    keys = jax.random.split(jax.random.fold_in(key, 2 * 10**6), num_blocks)
    stacked = jax.vmap(lambda k: init_velocity(model, k))(keys)

    def loss_fn(params, batch, rng):
        x = batch["x"]
        eps = jax.random.normal(rng, (num_blocks, s) + x.shape, x.dtype)
        return jko.cnf_nll_loss(
            model, params, x, eps, num_steps=s, divergence=config.jko.divergence
        )

    step_fn = make_train_step(
        loss_fn, optimizer, mesh or data_mesh(), steps_per_call=config.steps_per_call
    )
    return step_fn, TrainState.create(stacked, optimizer, jax.random.fold_in(key, 3 * 10**6))


def train_jko(
    config: Config, model: VelocityMLP, train_x: np.ndarray, workdir: str, key: jax.Array
) -> tuple[list[Any], dict[str, Any]]:
    """Trains JKO-iFlow block by block; returns (block parameters, training info).

    Block k starts from block k-1's parameters (warm start), is trained on the training data
    pushed through blocks 1..k-1 (frozen), then the data is pushed through it with the training
    discretisation (RK4, `num_substeps` steps). Training stops adding blocks once a block moves
    the data by less than `stop_tol` (`jko.movement_ratio`; 0 disables the rule). Then
    `reparam.rounds` rounds of adaptive time reparameterization: new h_k equalising the blocks'
    movement, and every block retrained (`reparam.iters_per_block` steps) on data pushed
    through the refined blocks.
    """
    jc = config.jko
    optimizer = jko_optimizer(config)
    s = jc.num_substeps
    step_fn = jko_train_step(config, model)
    push_solver = flow.Solver("rk4", num_steps=s)
    push = lambda p, x: np.asarray(flow.flow_forward(model, [p], x, solver=push_solver)[-1])
    h = list(jc.step_sizes) if jc.step_sizes else jko.step_sizes(jc.h0, jc.h_ratio, jc.num_blocks)
    if len(h) < jc.num_blocks:
        raise ValueError(f"jko.step_sizes has {len(h)} entries, fewer than {jc.num_blocks} blocks")

    def train_block(params, x, k, h_k, num_steps, name):
        bdir = os.path.join(workdir, name)
        state = TrainState.create(
            params, optimizer, jax.random.fold_in(key, zlib.crc32(name.encode()))
        )
        batch_fn = epoch_batches(
            x,
            jc.batch_size,
            seed=config.seed * 1000 + k,
            steps_per_call=config.steps_per_call,
            extra={"w2_weight": 1.0 / (2.0 * h_k)},
        )
        state, seconds = _loop(config, bdir, state, step_fn, batch_fn, num_steps, name)
        x_next = push(state.params, x)
        sub = slice(0, min(len(x), 20000))
        info = _finish_block(
            bdir,
            {
                "h": h_k,
                "steps": num_steps,
                "train_seconds": seconds,
                "seconds_per_step": seconds_per_step(bdir),
                "movement_ratio": jko.movement_ratio(x[sub], x_next[sub]),
            },
        )
        logging.info("%s: %s", name, info)
        return state.params, x_next, info

    params = init_velocity(model, jax.random.fold_in(key, 10**6))
    blocks, infos, x = [], [], train_x
    for k in range(jc.num_blocks):
        params, x, info = train_block(params, x, k, h[k], jc.iters_per_block, f"block_{k + 1:02d}")
        blocks.append(params)
        infos.append(info)
        if info["movement_ratio"] < jc.stop_tol:
            logging.info(
                "stopping rule: block %d moved the data by ratio %.4g",
                k + 1,
                info["movement_ratio"],
            )
            break
    h = h[: len(blocks)]
    rc = config.jko.reparam
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
    config: Config,
    model: VelocityMLP,
    train_x: np.ndarray,
    workdir: str,
    key: jax.Array,
    *,
    num_blocks: int,
    num_steps: int,
) -> tuple[list[Any], dict[str, Any]]:
    """The same `num_blocks` fields stacked into one CNF, trained end to end by maximum
    likelihood with the Hutchinson trace (FFJORD) for `num_steps` optimizer steps."""
    step_fn, state = baseline_train_step(config, model, num_blocks=num_blocks, key=key)
    batch_fn = epoch_batches(
        train_x,
        config.jko.batch_size,
        seed=config.seed * 1000 + 999,
        steps_per_call=config.steps_per_call,
    )
    state, seconds = _loop(config, workdir, state, step_fn, batch_fn, num_steps, "baseline")
    info = _finish_block(
        workdir,
        {
            "train_steps": num_steps,
            "train_seconds": seconds,
            "seconds_per_step": seconds_per_step(workdir),
        },
    )
    blocks = [jax.tree.map(lambda a, i=i: a[i], state.params) for i in range(num_blocks)]
    return blocks, info


def run_density(config: Config, name: str, workdir: str) -> tuple[dict[str, float], list[str]]:
    """Trains and evaluates JKO-iFlow (and the baseline) on one density; returns flat metrics
    `{method/metric: value}` and the plot paths (relative to `workdir`'s parent)."""
    data = load_data(
        name,
        data_dir=config.data_dir,
        tabular_dir=config.tabular_dir,
        num_train=config.num_train,
        num_test=config.num_test,
        seed=config.seed,
    )
    dim = data["train"].shape[1]
    model = make_model(config, dim)
    key = jax.random.PRNGKey(config.seed)
    ec = config.eval
    solver = flow.Solver(ec.solver, num_steps=ec.rk4_steps, rtol=ec.tol, atol=ec.tol)
    methods: dict[str, tuple[list[Any], dict[str, Any]]] = {}
    methods["jko"] = train_jko(config, model, data["train"], os.path.join(workdir, "jko"), key)
    if config.baseline.enabled:
        jko_blocks, jko_info = methods["jko"]
        steps = config.baseline.num_steps or jko_info["train_steps"]
        steps = -(-steps // config.steps_per_call) * config.steps_per_call
        methods["baseline"] = train_baseline(
            config,
            model,
            data["train"],
            os.path.join(workdir, "baseline"),
            key,
            num_blocks=len(jko_blocks),
            num_steps=steps,
        )
    metrics, samples, grids = {}, {}, {}
    for method, (blocks, info) in methods.items():
        m, extra = evaluate.evaluate_flow(
            model,
            blocks,
            data["test"],
            key=jax.random.fold_in(key, 7),
            eval_solver=solver,
            train_steps=info["train_steps"],
            num_nll=ec.num_nll,
            num_mmd=ec.num_mmd,
            num_inversion=ec.num_inversion,
            num_test_permutations=ec.num_permutations,
            true_logpdf=data["true_logpdf"],
        )
        m.update(train_seconds=info["train_seconds"], seconds_per_step=info["seconds_per_step"])
        m["num_blocks"] = float(len(blocks))
        metrics.update({f"{method}/{k}": v for k, v in m.items()})
        samples[method] = extra["samples"]
        if dim == 2 and ec.grid_size:
            grids[method] = evaluate.density_grid(model, blocks, num=ec.grid_size, solver=solver)
    with open(os.path.join(workdir, "jko_info.json"), "w") as f:
        json.dump(methods["jko"][1], f, indent=1)
    with open(os.path.join(workdir, "metrics.json"), "w") as f:  # this density's, as it finishes
        json.dump(metrics, f, indent=1, sort_keys=True)
    figs = []
    if dim == 2:
        test = data["test"][: ec.num_mmd]
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
    """Runs every density of `config.densities`; writes results.json / results.md / plots."""
    names = [n.strip() for n in config.densities.split(",") if n.strip()]
    if not names:
        raise ValueError("--config.densities is empty; give comma-separated density names")
    all_metrics: dict[str, float] = {}
    rows, figs = [], []
    for name in names:
        metrics, density_figs = run_density(config, name, os.path.join(workdir, name))
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
