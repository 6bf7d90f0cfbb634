"""AnKGE end to end: stage 1 trains the base KGE model, stage 2 AnKGE on it; `train_and_evaluate`.

    python -m experiments.ankge --config=experiments/configs/ankge.py:wn18rr_rotate_small \
        --workdir=DIR

Writes DIR/base/ (checkpoints, metrics.jsonl, params.npz, result.json), DIR/ankge/ (retrieval
cache, checkpoints, metrics.jsonl, result.json), DIR/results.json (base and AnKGE test metrics),
DIR/results.md and DIR/training_curve.png. A finished stage is read back from its result.json;
an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from models.kge import KGEModel
from research.ankge import analogy, evaluate, train_base
from research.datasets.kg import KG, add_reverse, load_kg, synthetic_kg
from research.datasets.paths import resolve_data_dir
from research.training import results
from research.training.loop import train_loop
from research.training.metrics import read_metrics
from research.training.parallel import data_mesh
from research.training.train_state import TrainState

Config = ml_collections.ConfigDict


def load_data(config: Config) -> KG:
    if not config.data_dir:
        s = config.synthetic
        return synthetic_kg(
            s.num_groups, group_size=s.group_size, num_relations=s.num_relations, seed=config.seed
        )
    return load_kg(resolve_data_dir(config.data_dir))


def make_model(config: Config, kg: KG) -> KGEModel:
    m = config.model
    return KGEModel(m.name, kg.num_entities, 2 * kg.num_relations, m.dim, m.gamma)


def base_recipe(config: Config) -> train_base.BaseRecipe:
    b = config.base
    return train_base.BaseRecipe(
        batch_size=b.batch_size,
        num_negatives=b.num_negatives,
        lr=b.lr,
        alpha_adv=b.alpha_adv,
        num_steps=b.num_steps,
        subsampling=b.subsampling,
        decay_at=b.decay_at,
        negative_groups=b.negative_groups,
    )


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _read_json(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, obj: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def train_base_model(
    config: Config, kg: KG, model: KGEModel, workdir: str
) -> tuple[dict[str, Any], dict[str, float]]:
    """Stage 1; returns (parameters as numpy, test metrics incl. train_seconds)."""
    params_path = os.path.join(workdir, "params.npz")
    done = _read_json(os.path.join(workdir, "result.json"))
    if done is not None and os.path.exists(params_path):
        logging.info("base model already trained: %s", done)
        return dict(np.load(params_path)), done
    recipe = base_recipe(config)
    mesh = data_mesh()
    k = config.steps_per_call
    num_steps = _round_up(recipe.num_steps, k)
    train = add_reverse(kg.train, kg.num_relations)
    weights = (
        train_base.subsampling_weights(train, model.num_relations)
        if recipe.subsampling
        else np.ones(len(train), np.float32)
    )
    batches = train_base.base_batches(
        train, weights, recipe.batch_size, seed=config.seed, steps_per_call=k
    )
    step_fn = train_base.make_base_step(model, recipe, mesh, k)
    key = jax.random.PRNGKey(config.seed)
    state = TrainState.create(
        model.init(key), train_base.make_optimizer(recipe), jax.random.fold_in(key, 1)
    )
    chunks = evaluate.Chunks(config.eval.query_chunk, config.eval.entity_chunk)
    valid = evaluate.subset(
        evaluate.make_eval_set(kg, "valid"), config.eval.valid_queries, config.seed
    )
    eval_fn = lambda s: {
        f"valid_{k}": v
        for k, v in evaluate.evaluate_base(model, s.params, valid, chunks).items()
        if k in ("mrr", "hits@10")
    }
    start = time.perf_counter()
    state = train_loop(
        workdir=workdir,
        state=state,
        train_step=step_fn,
        batch_fn=batches,
        num_steps=num_steps,
        mesh=mesh,
        checkpoint_every=_round_up(config.checkpoint_every, k),
        keep_checkpoints=1,
        log_every=config.log_every,
        steps_per_call=k,
        desc="base",
        eval_fn=eval_fn,
        eval_every=_round_up(config.base.eval_every, k) if config.base.eval_every else None,
    )
    train_seconds = time.perf_counter() - start
    params = jax.device_get(state.params)
    test = evaluate.evaluate_base(model, params, evaluate.make_eval_set(kg, "test"), chunks)
    metrics = {**test, "train_seconds": train_seconds, "train_steps": num_steps}
    metrics["triples_per_second"] = _median_rate(workdir) * recipe.batch_size
    np.savez(params_path, **{k: np.asarray(v) for k, v in params.items()})
    _write_json(os.path.join(workdir, "result.json"), metrics)
    return {k: np.asarray(v) for k, v in params.items()}, metrics


def _median_rate(workdir: str) -> float:
    """Median steps/s over the logged intervals without an evaluation (the first, which
    includes compilation, dropped)."""
    rates = [r["steps_per_s"] for r in read_metrics(workdir) if "eval/valid_mrr" not in r]
    rates = rates[1:] if len(rates) > 1 else rates
    return float(np.median(rates)) if rates else float("nan")


def _curve(workdir: str, key: str) -> tuple[list[float], list[float]]:
    recs = [r for r in read_metrics(workdir) if key in r]
    return [r["step"] for r in recs], [r[key] for r in recs]


def train_and_evaluate(config: Config, workdir: str) -> dict[str, float]:
    """Stage 1 (base model) and stage 2 (AnKGE); writes results.json / results.md / the plot."""
    kg = load_data(config)
    logging.info("knowledge graph: %s", kg.summary())
    model = make_model(config, kg)
    base_dir = os.path.join(workdir, "base")
    params, base_metrics = train_base_model(config, kg, model, base_dir)
    metrics = {f"base/{k}": v for k, v in base_metrics.items()}
    rows = [{"model": f"{model.name} (base)", **_row(base_metrics)}]
    curves = {"base loss": _curve(base_dir, "loss")}
    if config.ankge.enabled:
        ankge_dir = os.path.join(workdir, "ankge")
        ank_metrics = analogy.train_ankge(config, kg, model, params, ankge_dir)
        metrics.update({f"ankge/{k}": v for k, v in ank_metrics.items()})
        metrics["ankge_minus_base_mrr"] = ank_metrics["mrr"] - base_metrics["mrr"]
        rows.append({"model": f"AnKGE-{model.name}", **_row(ank_metrics)})
        curves["AnKGE loss"] = _curve(ankge_dir, "loss")
    plots = [_plot(workdir, base_dir, curves)]
    notes = (
        f"Preset `{config.preset}`, data `{config.data_dir or 'synthetic'}` "
        f"({kg.summary()}). Filtered ranking against all entities on test and reversed test "
        "(tail and head prediction), ties counted as the mean rank."
    )
    if "ankge/lambdas" in metrics:
        lam = ", ".join(f"{x:g}" for x in metrics["ankge/lambdas"])
        notes += f" AnKGE lambdas (ent, rel, triple) = ({lam})"
        if "ankge/valid_mrr" in metrics:
            notes += (
                f", chosen on validation among {metrics['ankge/lambda_grid_size']} triples "
                f"(`ankge/lambda_grid.json`): valid MRR {metrics['ankge/valid_mrr']:.4f}, base "
                f"(0, 0, 0) {metrics['ankge/valid_mrr_base']:.4f}, configured lambdas "
                f"{metrics['ankge/valid_mrr_configured']:.4f}."
            )
        else:
            notes += " (configured)."
    results.write_results(
        workdir, metrics, title="AnKGE", tables={"Test (filtered)": rows}, plots=plots, notes=notes
    )
    return metrics


def _row(m: dict[str, float]) -> dict[str, float]:
    return {k: m[k] for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10") if k in m}


def _plot(workdir: str, base_dir: str, curves: dict) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, (x, y) in curves.items():
        axes[0].plot(x, y, label=name)
    axes[0].set(xlabel="step", ylabel="loss", title="training loss")
    axes[0].legend()
    x, y = _curve(base_dir, "eval/valid_mrr")
    axes[1].plot(x, y, marker="o")
    axes[1].set(xlabel="base step", ylabel="valid MRR (filtered)", title="base model validation")
    for ax in axes:
        ax.grid(alpha=0.3)
    results.save_figure(fig, os.path.join(workdir, "training_curve.png"))
    return "training_curve.png"
