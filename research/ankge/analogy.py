"""Stage 2: AnKGE's analogy functions, their training objective and the combined score.

Analogy functions on the frozen base embeddings (official AnKnn):
    f_ent(h, r) = h * M_e[h] + beta * (r * M_r[r]) W        M_e, M_r ~ N(1, 0.1), W ~ N(0, 0.1)
    f_rel(r)    = r * M_r[r]
Per training triple and level l (entity, relation, triple), with the retrieved analogues
(`retriever.py`) averaged into a "virtual" target by softmax(-d):
    sim_l = ||f_l - virtual_l||_2,   dis_l = d(triple with f_l substituted),
    loss_l = -log sigmoid(-alpha * sim_l - dis_l)                        (alpha = 10)
    w_l = softmax(-[d_virtual_ent, d_virtual_rel, d_virtual_triple, d_base])_l   (no gradient)
    L = mean_b sum_l w_bl loss_bl
(`per_sample_level_weights=False` gives the official code's product of batch means,
mean_b(w_bl) * mean_b(loss_bl)). Score at test time, for a query (h, r) and candidate tail e:
    s = -d(h, r, e) + sum_l lambda_l * a_l(h, r, e) * (-d_l(e))
with the count-based adaptive weights of the training graph (official RevTestSampler)
    a_ent = min(1, #{h' : (h', r, e) in train} / ent_knn)
    a_rel = min(1, #{r' : (h, r', e) in train} / rel_knn)
    a_tri = min(1, #{(h', r') : (h', r', e) in train} / triple_knn).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
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
from research.ankge import evaluate, retriever
from research.datasets.batching import EpochBatches
from research.datasets.kg import KG, add_reverse, pair_counts
from research.training.loop import train_loop
from research.training.parallel import data_mesh, make_train_step
from research.training.train_state import TrainState

LEVELS = ("ent", "rel", "triple")


def init_analogy(model: KGEModel, key: jax.Array) -> Params:
    """M_e [E, De], M_r [num_rel, Dr] ~ N(1, 0.1); W [Dr, De] ~ N(0, 0.1)."""
    k1, k2, k3 = jax.random.split(key, 3)
    de, dr = model.entity_dim, model.relation_dim
    return {
        "ent_matrix": 1.0 + 0.1 * jax.random.normal(k1, (model.num_entities, de)),
        "rel_matrix": 1.0 + 0.1 * jax.random.normal(k2, (model.num_relations, dr)),
        "trans_matrix": 0.1 * jax.random.normal(k3, (dr, de)),
    }


def f_ent(base: Params, ank: Params, h: jax.Array, r: jax.Array, beta: float) -> jax.Array:
    """Entity-level analogy embedding of (h, r) ids [...] -> [..., De]."""
    out = base["entity"][h] * ank["ent_matrix"][h]
    if beta:
        out = out + beta * (f_rel(base, ank, r) @ ank["trans_matrix"])
    return out


def f_rel(base: Params, ank: Params, r: jax.Array) -> jax.Array:
    """Relation-level analogy embedding of r ids [...] -> [..., Dr]."""
    return base["relation"][r] * ank["rel_matrix"][r]


def _softmax_average(d: jax.Array, x: jax.Array) -> jax.Array:
    """sum_k softmax(-d)_k x_k: d [B, K], x [B, K, D] -> [B, D]."""
    return jnp.sum(jax.nn.softmax(-d, axis=-1)[..., None] * x, axis=1)


def analogy_loss(
    model: KGEModel,
    base: Params,
    ank: Params,
    batch: dict[str, jax.Array],
    *,
    alpha: float,
    beta: float,
    per_sample_level_weights: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The AnKGE objective of one batch: triples [B, 3] and the retrieval ids of each triple
    (entity [B, ent_knn], relation [B, rel_knn], triple_entity / triple_relation [B, k3])."""
    base = jax.lax.stop_gradient(base)
    ent, rel = base["entity"], base["relation"]
    h, r, t = (batch["triples"][:, i] for i in range(3))
    he, re_, te = ent[h], rel[r], ent[t]
    dist = lambda a, b, c: model.distance(base, a, b, c)
    # virtual targets from the retrieved analogues (no gradient: base frozen)
    e_emb, r_emb = ent[batch["entity"]], rel[batch["relation"]]
    virt_ent = _softmax_average(dist(e_emb, re_[:, None], te[:, None]), e_emb)
    virt_rel = _softmax_average(dist(he[:, None], r_emb, te[:, None]), r_emb)
    te_emb, tr_emb = ent[batch["triple_entity"]], rel[batch["triple_relation"]]
    d_tri = dist(te_emb, tr_emb, te[:, None])
    virt_te, virt_tr = _softmax_average(d_tri, te_emb), _softmax_average(d_tri, tr_emb)
    virt_triple = model.query_vector(base, model.query(base, virt_te, virt_tr))
    # analogy outputs
    a_ent, a_rel = f_ent(base, ank, h, r, beta), f_rel(base, ank, r)
    a_triple = model.query_vector(base, model.query(base, a_ent, a_rel))
    norm = lambda x: jnp.sqrt(jnp.sum(x * x, axis=-1))
    sim = (norm(a_ent - virt_ent), norm(a_rel - virt_rel), norm(a_triple - virt_triple))
    dis = (dist(a_ent, re_, te), dist(he, a_rel, te), dist(a_ent, a_rel, te))
    level = jnp.stack(
        [-jax.nn.log_sigmoid(-alpha * s - d) for s, d in zip(sim, dis, strict=True)], 1
    )
    w = jax.nn.softmax(
        -jnp.stack(
            [
                dist(virt_ent, re_, te),
                dist(he, virt_rel, te),
                dist(virt_te, virt_tr, te),
                dist(he, re_, te),
            ],
            axis=1,
        ),
        axis=1,
    )[:, :3]
    w = jax.lax.stop_gradient(w)
    if per_sample_level_weights:
        loss = jnp.mean(jnp.sum(w * level, axis=1))
    else:
        loss = jnp.sum(jnp.mean(w, axis=0) * jnp.mean(level, axis=0))
    aux = {f"{n}_loss": jnp.mean(level[:, i]) for i, n in enumerate(LEVELS)}
    aux.update({f"{n}_weight": jnp.mean(w[:, i]) for i, n in enumerate(LEVELS)})
    return loss, aux


@dataclasses.dataclass
class AdaptiveWeights:
    """Count-based weights from the (reverse-augmented) training triples.

    Attributes:
      ent: [num_rel, E] float32, a_ent(r, e).
      triple: [E] float32, a_tri(e).
      rel_keys, rel_counts: sorted int64 keys h * E + e and #{r'} of the (h, e) pairs.
    """

    ent: np.ndarray
    triple: np.ndarray
    rel_keys: np.ndarray
    rel_counts: np.ndarray


def adaptive_weights(
    train: np.ndarray, num_entities: int, num_relations: int, sizes: retriever.RetrievalSizes
) -> AdaptiveWeights:
    """`train` [N, 3]: reverse-augmented training triples (deduplicated here)."""
    train = np.unique(train, axis=0)
    ent = np.zeros((num_relations, num_entities), np.float32)
    np.add.at(ent, (train[:, 1], train[:, 2]), 1.0)
    triple = np.bincount(train[:, 2], minlength=num_entities).astype(np.float32)
    keys, counts = pair_counts(train[:, 0], train[:, 2], num_entities)
    return AdaptiveWeights(
        ent=np.minimum(1.0, ent / sizes.ent_knn),
        triple=np.minimum(1.0, triple / sizes.triple_knn),
        rel_keys=keys,
        rel_counts=np.minimum(1.0, counts / sizes.rel_knn).astype(np.float32),
    )


def relation_weight_lists(weights: AdaptiveWeights, heads: np.ndarray, num_entities: int):
    """Per query head: the entities e with a_rel(h, e) > 0 and the weights, padded ([Q, K]
    int32 with -1, [Q, K] float32)."""
    h_of_key = weights.rel_keys // num_entities
    lo = np.searchsorted(h_of_key, heads, side="left")
    hi = np.searchsorted(h_of_key, heads, side="right")
    width = max(int((hi - lo).max(initial=0)), 1)
    offs = np.arange(width)
    idx = np.minimum(lo[:, None] + offs, max(len(h_of_key) - 1, 0))
    valid = offs[None] < (hi - lo)[:, None]
    ids = np.where(valid, weights.rel_keys[idx] % num_entities, -1).astype(np.int32)
    vals = np.where(valid, weights.rel_counts[idx], 0.0).astype(np.float32)
    return ids, vals


def _relation_weights(ids: jax.Array, vals: jax.Array, cols: jax.Array) -> jax.Array:
    """a_rel at the candidate columns: ids / vals [Qc, K] (the query head's sparse list, -1
    padded); cols [1, Ec] (a contiguous entity chunk: scattered by offset) or [Qc, 1] (each
    query's answer: looked up in its list)."""
    if cols.shape[0] == ids.shape[0] and cols.shape[1] == 1:
        return jnp.sum(jnp.where(ids == cols, vals, 0.0), axis=1, keepdims=True)
    ec = cols.shape[1]
    local = ids - cols[0, 0]
    local = jnp.where((ids >= 0) & (local >= 0) & (local < ec), local, ec)
    rows = jnp.arange(ids.shape[0])[:, None]
    return jnp.zeros((ids.shape[0], ec), vals.dtype).at[rows, local].add(vals, mode="drop")


@functools.cache
def ankge_components_fn(
    model: KGEModel, beta: float, levels: tuple[bool, bool, bool] = (True, True, True)
):
    """`evaluate.ComponentsFn` of AnKGE: (-d, a_ent (-d_ent), a_rel (-d_rel), a_tri (-d_tri)),
    with only the levels flagged in `levels` (in order). args: {"base", "ank", "w_ent",
    "w_tri"}; rows: {"hr", "wr_ids", "wr_val"} (see `relation_weight_lists`)."""

    def components(args, rows, ent_ids):
        base, ank = args["base"], args["ank"]
        h, r = jnp.maximum(rows["hr"][:, 0], 0), jnp.maximum(rows["hr"][:, 1], 0)
        he, re_ = base["entity"][h], base["relation"][r]
        ae, ar = f_ent(base, ank, h, r, beta), f_rel(base, ank, r)
        cols = ent_ids[None] if ent_ids.ndim == 1 else ent_ids  # [1, Ec] or [Qc, 1]
        dist = evaluate.candidate_distances(model, base, ent_ids)
        d = lambda a, b: dist(model.query(base, a, b))
        out = [-d(he, re_)]
        if levels[0]:
            out.append(args["w_ent"][r[:, None], cols] * -d(ae, re_))
        if levels[1]:
            out.append(_relation_weights(rows["wr_ids"], rows["wr_val"], cols) * -d(he, ar))
        if levels[2]:
            out.append(args["w_tri"][cols] * -d(ae, ar))
        return tuple(out)

    return components


@functools.cache
def ankge_score_fn(model: KGEModel, beta: float, lambdas: tuple[float, float, float]):
    """`evaluate.ScoreFn` of AnKGE, `s = -d + sum_l lambda_l a_l (-d_l)` (added left to
    right, `evaluate.combine`); levels with lambda 0 are skipped. args / rows as
    `ankge_components_fn`."""
    levels = tuple(bool(x) for x in lambdas)
    components = ankge_components_fn(model, beta, levels)
    used = [float(x) for x in lambdas if x]

    def score(args, rows, ent_ids):
        return evaluate.combine(components(args, rows, ent_ids), used)

    return score


def _ankge_inputs(model, base, ank, weights, queries):
    wr_ids, wr_val = relation_weight_lists(weights, queries[:, 0], model.num_entities)
    args = {"base": base, "ank": ank, "w_ent": weights.ent, "w_tri": weights.triple}
    return jax.device_put(args), {"hr": queries[:, :2], "wr_ids": wr_ids, "wr_val": wr_val}


def ankge_ranks(
    model: KGEModel,
    base: Params,
    ank: Params,
    weights: AdaptiveWeights,
    eval_set: evaluate.EvalSet,
    *,
    beta: float,
    lambdas: tuple[float, float, float],
    chunks: evaluate.Chunks = evaluate.DEFAULT_CHUNKS,
) -> np.ndarray:
    """Filtered mean-tie ranks [Q] of the AnKGE score with `lambdas` (ent, rel, triple)."""
    q = eval_set.queries
    args, rows = _ankge_inputs(model, base, ank, weights, q)
    return evaluate.filtered_ranks(
        ankge_score_fn(model, float(beta), tuple(float(x) for x in lambdas)),
        args,
        rows,
        q[:, 2],
        eval_set.filter_tails,
        model.num_entities,
        chunks,
    )


def evaluate_ankge(
    model: KGEModel,
    base: Params,
    ank: Params,
    weights: AdaptiveWeights,
    eval_set: evaluate.EvalSet,
    *,
    beta: float,
    lambdas: tuple[float, float, float],
    chunks: evaluate.Chunks = evaluate.DEFAULT_CHUNKS,
) -> dict[str, float]:
    """MRR / MR / Hits@k of `ankge_ranks`, plus `eval_seconds`."""
    start = time.perf_counter()
    ranks = ankge_ranks(
        model, base, ank, weights, eval_set, beta=beta, lambdas=lambdas, chunks=chunks
    )
    metrics = evaluate.ranking_metrics(ranks)
    metrics["eval_seconds"] = time.perf_counter() - start
    return metrics


def ankge_grid_ranks(
    model: KGEModel,
    base: Params,
    ank: Params,
    weights: AdaptiveWeights,
    eval_set: evaluate.EvalSet,
    *,
    beta: float,
    lambda_grid: np.ndarray,
    chunks: evaluate.Chunks = evaluate.DEFAULT_CHUNKS,
) -> np.ndarray:
    """Ranks [G, Q] of the AnKGE score for every row of `lambda_grid` [G, 3] in one ranking
    pass (`evaluate.filtered_grid_ranks`: the base distance and the three level terms are
    computed once per chunk); row g equals `ankge_ranks(..., lambdas=lambda_grid[g])`."""
    q = eval_set.queries
    args, rows = _ankge_inputs(model, base, ank, weights, q)
    grid = np.asarray(lambda_grid, np.float32)
    if grid.ndim != 2 or grid.shape[1] != len(LEVELS):
        raise ValueError(f"lambda_grid must be [G, {len(LEVELS)}], got shape {grid.shape}")
    return evaluate.filtered_grid_ranks(
        ankge_components_fn(model, float(beta)),
        args,
        rows,
        q[:, 2],
        eval_set.filter_tails,
        model.num_entities,
        grid,
        chunks,
    )


def parse_lambda_grid(
    spec: str, include: tuple[tuple[float, float, float], ...] = ((0.0, 0.0, 0.0),)
) -> list[tuple[float, float, float]]:
    """Lambda triples (ent, rel, triple) of a grid spec: "v1,v2,..." (the same values for the
    three levels) or "e1,e2;r1,r2;t1,t2" (per level); their Cartesian product, after the
    triples of `include` (the base (0, 0, 0) by default), without duplicates, in that order."""
    parts = spec.split(";")
    if len(parts) == 1:
        parts = parts * len(LEVELS)
    if len(parts) != len(LEVELS):
        raise ValueError(f"lambda grid {spec!r}: one list, or one per level (ent;rel;triple)")
    try:
        values = [[float(v) for v in p.split(",") if v.strip()] for p in parts]
    except ValueError as e:
        raise ValueError(f"lambda grid {spec!r}: {e}") from None
    if not all(values):
        raise ValueError(f"lambda grid {spec!r}: a level has no values")
    out: list[tuple[float, float, float]] = []
    for t in list(include) + list(itertools.product(*values)):
        t = tuple(float(x) for x in t)
        if t not in out:
            out.append(t)
    return out


def select_lambdas(
    model: KGEModel,
    base: Params,
    ank: Params,
    weights: AdaptiveWeights,
    eval_set: evaluate.EvalSet,
    grid: list[tuple[float, float, float]],
    *,
    beta: float,
    chunks: evaluate.Chunks = evaluate.DEFAULT_CHUNKS,
) -> tuple[tuple[float, float, float], list[dict[str, Any]]]:
    """The triple of `grid` with the best MRR on `eval_set` (the first one on ties) and every
    triple's metrics (`lambdas`, mrr, mr, hits@1/3/10)."""
    ranks = ankge_grid_ranks(
        model, base, ank, weights, eval_set, beta=beta, lambda_grid=np.array(grid), chunks=chunks
    )
    table = [
        {"lambdas": list(t), **evaluate.ranking_metrics(r)}
        for t, r in zip(grid, ranks, strict=True)
    ]
    best = int(np.argmax([row["mrr"] for row in table]))
    return grid[best], table


def _train_analogy(
    config: ml_collections.ConfigDict,
    model: KGEModel,
    base: Params,
    train: np.ndarray,
    found: retriever.Retrieval,
    workdir: str,
) -> tuple[Params, int]:
    """Trains the analogy functions (checkpointed in workdir); returns them and the steps."""
    a = config.ankge
    k = a.steps_per_call
    num_steps = -(-a.num_steps // k) * k

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

    mesh = data_mesh()
    step_fn = make_train_step(loss_fn, optimizer, mesh, steps_per_call=k)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
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
    batch_fn = EpochBatches(table, batch_size, seed=(config.seed, 7), steps_per_call=k)
    state = train_loop(
        workdir=workdir,
        state=state,
        train_step=step_fn,
        batch_fn=batch_fn,
        num_steps=num_steps,
        mesh=mesh,
        checkpoint_every=num_steps,
        keep_checkpoints=1,
        log_every=a.log_every,
        steps_per_call=k,
        desc="ankge",
    )
    return jax.device_get(state.params["ank"]), num_steps


def _selection_settings(a: ml_collections.ConfigDict) -> dict[str, Any]:
    """What decides the lambdas of the test evaluation (a result with other settings is
    re-evaluated)."""
    if a.lambda_grid:
        return {"lambda_grid": a.lambda_grid, "lambda_valid_queries": a.lambda_valid_queries}
    return {"lambda_grid": "", "lambdas": [a.ent_lambda, a.rel_lambda, a.triple_lambda]}


def train_ankge(
    config: ml_collections.ConfigDict, kg: KG, model: KGEModel, base: Params, workdir: str
) -> dict[str, Any]:
    """Stage 2: retrieval (cached), analogy-function training, lambdas (configured, or chosen
    on validation when `ankge.lambda_grid` is set), test evaluation; returns test metrics plus
    `lambdas`, timings and, with a grid, `valid_mrr` (of the chosen triple), `valid_mrr_base`,
    `valid_mrr_configured` (the configured lambdas') and `lambda_grid_size`; the grid's
    validation metrics go to workdir/lambda_grid.json.

    A finished stage is read back from workdir/result.json when its lambda settings are the
    config's; otherwise trained parameters (workdir/analogy_params.npz) are reused and only
    the lambda selection and test evaluation run again."""
    import json

    a = config.ankge
    settings = _selection_settings(a)
    result_path = os.path.join(workdir, "result.json")
    previous = None
    if os.path.exists(result_path):
        with open(result_path) as f:
            previous = json.load(f)
        defaults = {
            "lambda_grid": "",
            "lambda_valid_queries": 0,
            "lambdas": settings.get("lambdas"),
        }
        if all(previous.get(k, defaults[k]) == v for k, v in settings.items()):
            return previous
        logging.info("AnKGE lambda settings changed (%s): re-evaluating", settings)
    sizes = retriever.RetrievalSizes(
        a.ent_knn, a.rel_knn, a.triple_knn, a.triple_ent_knn, a.triple_rel_knn
    )
    train = add_reverse(kg.train, kg.num_relations)
    ank_path = os.path.join(workdir, "analogy_params.npz")
    metrics: dict[str, Any] = {}
    if os.path.exists(ank_path):  # trained before: reuse the parameters and the timings
        logging.info("reusing the trained analogy functions of %s", ank_path)
        ank = {k: jnp.asarray(v) for k, v in np.load(ank_path).items()}
        for k in ("retrieval_seconds", "train_seconds", "train_steps"):
            if previous is not None and k in previous:
                metrics[k] = previous[k]
    else:
        start = time.perf_counter()
        found = retriever.cached_retrieve(
            os.path.join(workdir, "retrieval.npz"),
            model,
            base,
            train,
            sizes,
            chunk=a.retrieval_chunk,
            entity_chunk=config.eval.entity_chunk,
        )
        metrics["retrieval_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        ank, num_steps = _train_analogy(config, model, base, train, found, workdir)
        metrics["train_seconds"] = time.perf_counter() - start
        metrics["train_steps"] = num_steps
        np.savez(ank_path, **ank)
    weights = adaptive_weights(train, model.num_entities, model.num_relations, sizes)
    chunks = evaluate.Chunks(config.eval.query_chunk, config.eval.entity_chunk)
    configured = (float(a.ent_lambda), float(a.rel_lambda), float(a.triple_lambda))
    lambdas = configured
    if a.lambda_grid:
        grid = parse_lambda_grid(a.lambda_grid, include=((0.0, 0.0, 0.0), configured))
        valid = evaluate.subset(
            evaluate.make_eval_set(kg, "valid"), a.lambda_valid_queries, config.seed
        )
        start = time.perf_counter()
        lambdas, table = select_lambdas(
            model, base, ank, weights, valid, grid, beta=a.beta, chunks=chunks
        )
        grid_seconds = time.perf_counter() - start
        by_triple = {tuple(row["lambdas"]): row for row in table}
        metrics.update(
            valid_mrr=by_triple[lambdas]["mrr"],
            valid_mrr_base=by_triple[(0.0, 0.0, 0.0)]["mrr"],
            valid_mrr_configured=by_triple[configured]["mrr"],
            lambda_grid_size=len(grid),
            lambda_grid_seconds=grid_seconds,
        )
        with open(os.path.join(workdir, "lambda_grid.json"), "w") as f:
            json.dump(
                {
                    "split": "valid",
                    "queries": len(valid.queries),
                    "seed": config.seed,
                    "lambda_grid": a.lambda_grid,
                    "best": list(lambdas),
                    "seconds": grid_seconds,
                    "table": table,
                },
                f,
                indent=1,
            )
        logging.info(
            "lambdas chosen on %d valid queries: %s (valid MRR %.4f; base %.4f, configured %.4f)",
            len(valid.queries),
            lambdas,
            metrics["valid_mrr"],
            metrics["valid_mrr_base"],
            metrics["valid_mrr_configured"],
        )
    test = evaluate_ankge(
        model,
        base,
        ank,
        weights,
        evaluate.make_eval_set(kg, "test"),
        beta=a.beta,
        lambdas=lambdas,
        chunks=chunks,
    )
    metrics = {**test, **metrics, **settings, "lambdas": list(lambdas)}
    logging.info("AnKGE test: %s", metrics)
    with open(result_path, "w") as f:
        json.dump(metrics, f, indent=1, sort_keys=True)
    return metrics
