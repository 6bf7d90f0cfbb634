"""AnKGE's score, its filtered ranking, and the lambdas chosen on validation.

For a query (h, r) and a candidate tail e (`analogy.py` for f_ent, f_rel and the weights a_l):
    s = -d(h, r, e) + lambda_ent a_ent (-d(f_ent(h, r), r, e))
                    + lambda_rel a_rel (-d(h, f_rel(r), e))
                    + lambda_tri a_tri (-d(f_ent(h, r), f_rel(r), e))
ranked against all entities by `evaluate.filtered_ranks`; a grid of lambda triples [G, 3] is
ranked in one pass (`evaluate.filtered_grid_ranks`: the four terms once per block) and
`select_lambdas` keeps the triple with the best validation MRR.
"""

from __future__ import annotations

import functools
import itertools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from models.kge import KGEModel, Params
from research.ankge import evaluate
from research.ankge.analogy import (
    LEVELS,
    AdaptiveWeights,
    f_ent,
    f_rel,
    relation_weight_lists,
)


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


def _ankge_inputs(
    model: KGEModel, base: Params, ank: Params, weights: AdaptiveWeights, queries: np.ndarray
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(args, rows) of `ankge_components_fn` for `queries` [Q, 3]: the tables on the device,
    and per query hr [Q, 2] and its head's relation-weight list wr_ids / wr_val [Q, K]."""
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
