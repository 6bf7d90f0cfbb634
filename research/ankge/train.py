"""AnKGE end to end: stage 1 trains the base KGE model, stage 2 AnKGE on it; `train_and_evaluate`.

    python -m experiments.ankge --config=experiments/configs/ankge.py:wn18rr_rotate_small \
        --workdir=DIR

Writes DIR/base/ (checkpoints, metrics.jsonl, params.npz, result.json), DIR/ankge/ (retrieval
cache, checkpoints, metrics.jsonl, analogy_params.npz, result.json, with a lambda grid
lambda_grid.json), DIR/results.json (base and AnKGE test metrics), DIR/results.md and
DIR/training_curve.png. A finished stage is read back from its result.json; an interrupted one
resumes from its last checkpoint.

Stage 1 is `train_base_model` (the recipe `train_base.BaseRecipe`, from `config.base`), stage 2
`train_ankge` (the settings `analogy.AnKGEOptions`, from `config.ankge`).

Several processes (`python -m experiments.launch --num_processes=N -- python -m
experiments.ankge ...`, or `srun`): both stages train data-parallel over every process's devices
(`distributed.global_mesh()`) on the same global batches as one process; the rankings and the
retrieval split their rows over the processes and gather them in every process (`evaluate`,
`retriever`), so every process returns the same metrics; process 0 alone writes the files
(`workdir.is_writer`), the others wait for it where they read one (`workdir.sync`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from models.kge import KGEModel, Params
from research.ankge import config_rules, evaluate, retriever, scoring, train_base
from research.ankge.analogy import (
    AdaptiveWeights,
    AnKGEOptions,
    adaptive_weights,
    analogy_loss,
    init_analogy,
)
from research.datasets.batching import EpochBatches
from research.datasets.kg import KG, add_reverse, load_kg, synthetic_kg
from research.datasets.paths import resolve_data_dir
from research.training import distributed, identity, results
from research.training import workdir as workdir_lib
from research.training.errors import TimeBudgetExceeded
from research.training.loop import round_to_calls, train_loop
from research.training.metrics import read_metrics, steady_steps_per_second
from research.training.parallel import make_train_step
from research.training.train_state import TrainState

Config = ml_collections.ConfigDict

# Stage 2 re-selects the lambdas on a finished run's trained analogy functions when these change
# (`train_ankge`'s stored settings), so a workdir may be re-run with other lambda settings.
LAMBDA_FIELDS = ("lambda_grid", "lambda_valid_queries", "ent_lambda", "rel_lambda", "triple_lambda")
identity.reevaluated_by_the_code(*(f"ankge.{name}" for name in LAMBDA_FIELDS))


def load_data(config: Config) -> KG:
    """The KG of `config.data_dir`, or the synthetic one (`config.synthetic`) when it is "".
    Every split must hold triples (an empty valid or test split would give NaN metrics)."""
    if not config.data_dir:
        s = config.synthetic
        return synthetic_kg(
            s.num_groups, group_size=s.group_size, num_relations=s.num_relations, seed=config.seed
        )
    data_dir = resolve_data_dir(config.data_dir)
    kg = load_kg(data_dir)
    for split in ("valid", "test"):
        if not len(kg.split(split)):
            raise ValueError(
                f"{os.path.join(data_dir, split + '.txt')}: no triples; AnKGE validates on "
                "valid.txt and reports test.txt, each needs at least one triple"
            )
    return kg


def load_params(path: str, expected: Params) -> dict[str, np.ndarray]:
    """The arrays saved at `path` (.npz) by a finished stage, checked against `expected` (the
    names and shapes, e.g. `jax.eval_shape` of the initialiser) and finite: a truncated, foreign
    or NaN file raises ValueError naming it instead of being evaluated."""
    try:
        with np.load(path) as f:
            arrays = {name: f[name] for name in f.files}
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - zipfile / pickle / format errors lack the path
        raise ValueError(
            f"{path}: cannot read the saved parameters ({type(err).__name__}: {err}); delete it "
            "to recompute the stage"
        ) from err
    want = {name: tuple(x.shape) for name, x in expected.items()}
    have = {name: tuple(x.shape) for name, x in arrays.items()}
    if have != want:
        raise ValueError(
            f"{path}: holds arrays {have}, the config's model expects {want}; delete it to "
            "recompute the stage"
        )
    for name, x in arrays.items():
        bad = ~np.isfinite(x)
        if bad.any():
            kinds = sorted({"NaN" if np.isnan(v) else str(v) for v in x[bad][:1000].tolist()})
            raise ValueError(
                f"{path}: array {name!r} {x.shape} holds {int(bad.sum())} non-finite values "
                f"({', '.join(kinds)}); delete it to recompute the stage"
            )
    return arrays


def make_model(config: Config, kg: KG) -> KGEModel:
    """`config.model` over the entities of `kg` and its relations with their reverses."""
    m = config.model
    return KGEModel(m.name, kg.num_entities, 2 * kg.num_relations, m.dim, m.gamma)


def eval_chunks(config: Config) -> evaluate.Chunks:
    """The ranking's block sizes (`config.eval`), for both stages."""
    return evaluate.Chunks(config.eval.query_chunk, config.eval.entity_chunk)


def train_base_for(
    config: Config, kg: KG, model: KGEModel, workdir: str, *, budget_s: float | None = None
) -> tuple[TrainState, dict[str, Any]]:
    """Stage 1's training (`config.base`) in `workdir` (checkpoints, metrics.jsonl), resumed from
    its last checkpoint, until `config.base.num_steps` or, with `budget_s`, the first call
    boundary after `budget_s` seconds of wall-clock time (compilation included; at least one
    call of `config.steps_per_call` steps runs: `train_loop`'s deadline). A budget stop saves the
    state reached (params and Adam state) as a checkpoint, so the next call continues from it: the
    learning-rate schedule, the batches and the negatives are functions of the step, so a run
    stopped and resumed any number of times ends with the parameters of an uninterrupted one.

    Returns (state, info): info = {"start_step", "step", "num_steps" (rounded to calls),
    "finished", "seconds", "stopped_by_budget"}.
    """
    recipe = train_base.BaseRecipe(**config.base)
    mesh = distributed.global_mesh()
    k = config.steps_per_call
    train = add_reverse(kg.train, kg.num_relations)
    weights = (
        train_base.subsampling_weights(train, model.num_relations)
        if recipe.subsampling
        else np.ones(len(train), np.float32)
    )
    batches = train_base.base_batches(
        train,
        weights,
        recipe.batch_size,
        seed=config.seed,
        steps_per_call=k,
        rows=distributed.process_rows(recipe.batch_size),
    )
    step_fn = train_base.make_base_step(model, recipe, mesh, k)
    key = jax.random.PRNGKey(config.seed)
    state = TrainState.create(
        model.init(key), train_base.make_optimizer(recipe), jax.random.fold_in(key, 1)
    )
    chunks = eval_chunks(config)
    valid = evaluate.subset(
        evaluate.make_eval_set(kg, "valid"), config.eval.valid_queries, config.seed
    )

    def eval_fn(s: TrainState) -> dict[str, float]:
        got = evaluate.evaluate_base(model, s.params, valid, chunks)
        return {f"valid_{name}": got[name] for name in ("mrr", "hits@10")}

    calls: list[int] = []  # the first step of each call (the first: where this run resumed)

    def batch_fn(step: int):
        calls.append(step)
        return batches(step)

    start = time.perf_counter()
    num_steps = round_to_calls(recipe.num_steps, k)
    stopped = False
    try:
        state = train_loop(
            workdir=workdir,
            state=state,
            train_step=step_fn,
            batch_fn=batch_fn,
            num_steps=recipe.num_steps,
            mesh=mesh,
            checkpoint_every=config.checkpoint_every,
            log_every=config.log_every,
            steps_per_call=k,
            desc="base",
            eval_fn=eval_fn,
            eval_every=recipe.eval_every or None,
            deadline=None if budget_s is None else time.monotonic() + budget_s,
        )
    except TimeBudgetExceeded as stop:
        stopped, state = True, stop.state
        logging.info("base: budget of %.0f s spent at step %d/%d", budget_s, stop.step, num_steps)
    step = int(jax.device_get(state.step))
    info = {
        "start_step": calls[0] if calls else step,
        "step": step,
        "num_steps": num_steps,
        "finished": step >= num_steps,
        "seconds": time.perf_counter() - start,
        "stopped_by_budget": stopped,
    }
    return state, info


def train_base_model(
    config: Config, kg: KG, model: KGEModel, workdir: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Stage 1; returns (parameters as numpy, test metrics incl. train_seconds, train_steps and
    triples_per_second). A finished stage (result.json and params.npz) is read back."""
    params_path = os.path.join(workdir, "params.npz")

    def compute() -> dict[str, Any]:
        state, info = train_base_for(config, kg, model, workdir)
        params = jax.device_get(state.params)
        chunks = eval_chunks(config)
        test = evaluate.evaluate_base(model, params, evaluate.make_eval_set(kg, "test"), chunks)
        rate = steady_steps_per_second(workdir)
        results.save_arrays(params_path, params)
        return {
            **test,
            "train_seconds": info["seconds"],
            "train_steps": info["num_steps"],
            "triples_per_second": float("nan") if rate is None else rate * config.base.batch_size,
        }

    metrics = results.cached_result(
        os.path.join(workdir, "result.json"), compute, reuse=lambda _: os.path.exists(params_path)
    )
    workdir_lib.sync("ankge: base params.npz written")  # process 0 writes it, every process reads
    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    return load_params(params_path, expected), metrics


def _train_analogy(
    options: AnKGEOptions,
    model: KGEModel,
    base: Params,
    train: np.ndarray,
    found: retriever.Retrieval,
    workdir: str,
    *,
    seed: int,
) -> Params:
    """Trains the analogy functions on the frozen `base` (checkpointed in workdir) over the
    training triples `train` [N, 3] and their retrievals `found`; returns them."""
    a = options
    k = a.steps_per_call

    def labels(params):  # train the analogy parameters, freeze the base embeddings
        return {
            "ank": jax.tree.map(lambda _: "train", params["ank"]),
            "base": jax.tree.map(lambda _: "frozen", params["base"]),
        }

    optimizer = optax.multi_transform(
        {"train": optax.adam(a.lr), "frozen": optax.set_to_zero()}, labels
    )

    def loss_fn(params, batch, rng):
        loss, aux = analogy_loss(
            model,
            params["base"],
            params["ank"],
            batch,
            alpha=a.alpha,
            beta=a.beta,
            per_sample_level_weights=a.per_sample_level_weights,
        )
        if a.regularization:
            cube = sum(jnp.sum(jnp.abs(x) ** 3) for x in jax.tree.leaves(params["ank"]))
            loss = loss + a.regularization * cube
        return loss, aux

    mesh = distributed.global_mesh()
    step_fn = make_train_step(loss_fn, optimizer, mesh, steps_per_call=k)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 2)
    params = {"ank": init_analogy(model, key), "base": base}
    state = TrainState.create(params, optimizer, jax.random.fold_in(key, 1))
    table = {
        "triples": train,
        "entity": found.entity,
        "relation": found.relation,
        "triple_entity": found.triple_entity,
        "triple_relation": found.triple_relation,
    }
    batch_size = min(a.batch_size, len(train) // mesh.size * mesh.size)
    rows = distributed.process_rows(batch_size)
    batch_fn = EpochBatches(table, batch_size, seed=(seed, 7), steps_per_call=k, rows=rows)
    state = train_loop(
        workdir=workdir,
        state=state,
        train_step=step_fn,
        batch_fn=batch_fn,
        num_steps=a.num_steps,
        mesh=mesh,
        checkpoint_every=a.num_steps,  # only at the end
        keep_checkpoints=1,
        log_every=a.log_every,
        steps_per_call=k,
        desc="ankge",
    )
    return jax.device_get(state.params["ank"])


def _selection_settings(options: AnKGEOptions) -> dict[str, Any]:
    """What decides the lambdas of the test evaluation (a result with other settings is
    re-evaluated)."""
    if options.lambda_grid:
        return {
            "lambda_grid": options.lambda_grid,
            "lambda_valid_queries": options.lambda_valid_queries,
        }
    return {"lambda_grid": "", "lambdas": list(options.lambdas)}


def _choose_lambdas(
    options: AnKGEOptions,
    kg: KG,
    model: KGEModel,
    base: Params,
    ank: Params,
    weights: AdaptiveWeights,
    workdir: str,
    *,
    seed: int,
    chunks: evaluate.Chunks,
) -> tuple[tuple[float, float, float], dict[str, Any]]:
    """The lambdas of `options.lambda_grid` with the best validation MRR and the metrics of the
    choice (valid_mrr of the chosen triple, valid_mrr_base, valid_mrr_configured,
    lambda_grid_size, lambda_grid_seconds); every triple's metrics go to lambda_grid.json."""
    configured = options.lambdas
    grid = scoring.parse_lambda_grid(options.lambda_grid, include=((0.0, 0.0, 0.0), configured))
    valid = evaluate.subset(evaluate.make_eval_set(kg, "valid"), options.lambda_valid_queries, seed)
    start = time.perf_counter()
    lambdas, table = scoring.select_lambdas(
        model, base, ank, weights, valid, grid, beta=options.beta, chunks=chunks
    )
    grid_seconds = time.perf_counter() - start
    by_triple = {tuple(row["lambdas"]): row for row in table}
    metrics = {
        "valid_mrr": by_triple[lambdas]["mrr"],
        "valid_mrr_base": by_triple[(0.0, 0.0, 0.0)]["mrr"],
        "valid_mrr_configured": by_triple[configured]["mrr"],
        "lambda_grid_size": len(grid),
        "lambda_grid_seconds": grid_seconds,
    }
    results.write_json(
        os.path.join(workdir, "lambda_grid.json"),
        {
            "split": "valid",
            "queries": len(valid.queries),
            "seed": seed,
            "lambda_grid": options.lambda_grid,
            "best": list(lambdas),
            "seconds": grid_seconds,
            "table": table,
        },
    )
    logging.info(
        "lambdas chosen on %d valid queries: %s (valid MRR %.4f; base %.4f, configured %.4f)",
        len(valid.queries),
        lambdas,
        metrics["valid_mrr"],
        metrics["valid_mrr_base"],
        metrics["valid_mrr_configured"],
    )
    return lambdas, metrics


def train_ankge(
    options: AnKGEOptions,
    kg: KG,
    model: KGEModel,
    base: Params,
    workdir: str,
    *,
    seed: int,
    chunks: evaluate.Chunks,
) -> dict[str, Any]:
    """Stage 2: retrieval (cached), analogy-function training, lambdas (configured, or chosen
    on validation when `options.lambda_grid` is set), test evaluation; returns test metrics
    plus `lambdas`, timings and, with a grid, `valid_mrr` (of the chosen triple),
    `valid_mrr_base`, `valid_mrr_configured` (the configured lambdas') and `lambda_grid_size`.

    A finished stage is read back from workdir/result.json when its lambda settings are the
    options'; otherwise trained parameters (workdir/analogy_params.npz) are reused and only
    the lambda selection and test evaluation run again."""
    settings = _selection_settings(options)
    previous: dict[str, Any] = {}  # a stored result with other settings: its timings are kept

    def same_settings(stored: dict[str, Any]) -> bool:
        previous.update(stored)
        # results written before a setting existed hold its default
        defaults = {"lambda_grid": "", "lambda_valid_queries": 0}
        defaults["lambdas"] = settings.get("lambdas")
        if all(stored.get(k, defaults[k]) == v for k, v in settings.items()):
            return True
        logging.info("AnKGE lambda settings changed (%s): re-evaluating", settings)
        return False

    def compute() -> dict[str, Any]:
        sizes = options.retrieval_sizes
        train = add_reverse(kg.train, kg.num_relations)
        ank_path = os.path.join(workdir, "analogy_params.npz")
        metrics: dict[str, Any] = {}
        trained = os.path.exists(ank_path)
        workdir_lib.sync("ankge: analogy_params.npz looked up")  # all decide before any writes
        if trained:  # trained before: reuse the parameters and the timings
            logging.info("reusing the trained analogy functions of %s", ank_path)
            expected = jax.eval_shape(lambda key: init_analogy(model, key), jax.random.PRNGKey(0))
            ank = {k: jnp.asarray(v) for k, v in load_params(ank_path, expected).items()}
            for k in ("retrieval_seconds", "train_seconds", "train_steps"):
                if k in previous:
                    metrics[k] = previous[k]
        else:
            start = time.perf_counter()
            found = retriever.cached_retrieve(
                os.path.join(workdir, "retrieval.npz"),
                model,
                base,
                train,
                sizes,
                chunk=options.retrieval_chunk,
                entity_chunk=chunks.entity,
            )
            metrics["retrieval_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
            ank = _train_analogy(options, model, base, train, found, workdir, seed=seed)
            metrics["train_seconds"] = time.perf_counter() - start
            metrics["train_steps"] = round_to_calls(options.num_steps, options.steps_per_call)
            results.save_arrays(ank_path, ank)
        weights = adaptive_weights(train, model.num_entities, model.num_relations, sizes)
        lambdas = options.lambdas
        if options.lambda_grid:
            lambdas, chosen = _choose_lambdas(
                options, kg, model, base, ank, weights, workdir, seed=seed, chunks=chunks
            )
            metrics.update(chosen)
        test = scoring.evaluate_ankge(
            model,
            base,
            ank,
            weights,
            evaluate.make_eval_set(kg, "test"),
            beta=options.beta,
            lambdas=lambdas,
            chunks=chunks,
        )
        metrics = {**test, **metrics, **settings, "lambdas": list(lambdas)}
        logging.info("AnKGE test: %s", metrics)
        return metrics

    return results.cached_result(os.path.join(workdir, "result.json"), compute, reuse=same_settings)


def _curve(workdir: str, key: str) -> tuple[list[float], list[float]]:
    recs = [r for r in read_metrics(workdir) if key in r]
    return [r["step"] for r in recs], [r[key] for r in recs]


def train_and_evaluate(config: Config, workdir: str) -> dict[str, float]:
    """Stage 1 (base model) and stage 2 (AnKGE); writes results.json / results.md / the plot."""
    options = AnKGEOptions(**config.ankge)
    kg = load_data(config)
    logging.info("knowledge graph: %s", kg.summary())
    config_rules.check_against_graph(config, kg)
    model = make_model(config, kg)
    base_dir = os.path.join(workdir, "base")
    with identity.without("ankge."):  # stage 1 does not read them: its results are shared
        params, base_metrics = train_base_model(config, kg, model, base_dir)
    metrics = {f"base/{k}": v for k, v in base_metrics.items()}
    rows = [{"model": f"{model.name} (base)", **_row(base_metrics)}]
    curves = {"base loss": _curve(base_dir, "loss")}
    if options.enabled:
        ankge_dir = os.path.join(workdir, "ankge")
        ank_metrics = train_ankge(
            options, kg, model, params, ankge_dir, seed=config.seed, chunks=eval_chunks(config)
        )
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
