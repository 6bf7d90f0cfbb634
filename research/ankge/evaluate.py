"""Filtered link-prediction ranking against all entities, chunked and fully on the device.

Each query `(h, r)` with answer `t` (test triples and their reverses `(t, r + R, h)`, i.e. tail
and head prediction) is scored against every entity. Other true tails (train + valid + test,
`research.datasets.kg.filter_index`) are removed before ranking: they get score -inf in the
chunk they fall in (a scatter of the query's padded filter list). **Ties count as the mean rank**:

    rank = 1 + #{e unfiltered : s_e > s_t} + #{e unfiltered, e != t : s_e == s_t} / 2

A NaN or infinite score counts as the worst: such a candidate is never above the answer, and
such an answer is below every unfiltered candidate (a diverged model ranks last, not first).

The answer's own score `s_t` comes from the same scoring function with one tail per query (the
same elementwise operations and reduction over the embedding axis as the chunks). Queries are
processed in chunks of `query_chunk`, entities in chunks of `entity_chunk` (`lax.map` over query
chunks, `lax.scan` over entity chunks): memory is O(query_chunk x entity_chunk) whatever the
graph size.

`filtered_grid_ranks` ranks G scores that are weighted sums of the same components
`c_0 + w_1 c_1 + ... + w_L c_L` (AnKGE's base distance and level terms, one weight vector per
lambda triple) in one pass: the components are computed once per block, the G scores formed
and counted one after the other; memory O(query_chunk x entity_chunk x (L + 1)).

In a run of several processes (`research.training.distributed`) each process ranks a contiguous
share of the queries on its own devices and the ranks are gathered in every process
(`distributed.share_of`, `distributed.gather`), so every process computes the metrics from all
of them.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from models.kge import KGEModel, Params, pairwise_match, small_params
from research.datasets.kg import KG, eval_queries, filter_index
from research.training import distributed

# score_fn(args, rows, ent_ids) -> scores (higher is better). `rows` is the per-query pytree
# (leading axis Qc, e.g. {"hr": [Qc, 2]}); `ent_ids` is either [Ec] int32, a contiguous range of
# candidate tails shared by all queries (-> [Qc, Ec]), or [Qc, 1], one tail per query (-> [Qc, 1]).
ScoreFn = Callable[[Any, Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Chunks:
    """Chunk sizes of the ranking (queries x entities per block)."""

    query: int = 256
    entity: int = 4096


DEFAULT_CHUNKS = Chunks()


def _pad_rows(tree: Any, multiple: int) -> tuple[Any, int]:
    n = len(jax.tree.leaves(tree)[0])
    pad = (-n) % multiple

    def pad_leaf(x):
        x = np.asarray(x)
        fill = -1 if np.issubdtype(x.dtype, np.integer) else 0
        return np.concatenate([x, np.full((pad,) + x.shape[1:], fill, x.dtype)])

    return jax.tree.map(pad_leaf, tree), n


# components_fn(args, rows, ent_ids) -> (c_0, c_1, ..., c_L), each broadcastable to the
# [Qc, Ec] (or [Qc, 1]) scores of a `ScoreFn`; the score of a weight vector w [L] is
# `combine(components, w)` = c_0 + w_1 c_1 + ... + w_L c_L, added left to right.
ComponentsFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, ...]]


def combine(components: tuple[jax.Array, ...], weights: Any) -> jax.Array:
    """`c_0 + w[0] * c_1 + w[1] * c_2 + ...`, left to right. A weight given as a Python number
    0 skips its term (same value: adding `0 * c` of a finite `c` changes nothing)."""
    s = components[0]
    for i, c in enumerate(components[1:]):
        w = weights[i]
        if isinstance(w, (int, float)) and w == 0:
            continue
        s = s + w * c
    return s


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _grid_ranks_jit(components_fn, num_entities, qc, ec, args, rows, answers, filt, weights):
    nq = answers.shape[0] // qc
    n_ech = -(-num_entities // ec)
    n_grid = weights.shape[0]
    reshape = lambda x: x.reshape((nq, qc) + x.shape[1:])
    chunks = (jax.tree.map(reshape, rows), reshape(answers), reshape(filt))
    row_idx = jnp.arange(qc)[:, None]

    def per_query_chunk(chunk):
        rows_c, ans_c, filt_c = chunk
        safe_ans = jnp.clip(ans_c, 0, num_entities - 1)
        target_c = tuple(
            jnp.broadcast_to(c, (qc, 1))[:, 0]
            for c in components_fn(args, rows_c, safe_ans[:, None])
        )
        target = jax.vmap(lambda w: combine(target_c, w))(weights)  # [G, Qc]

        def per_entity_chunk(carry, start):
            greater, equal = carry  # [G, Qc]
            ids = start + jnp.arange(ec, dtype=jnp.int32)
            comps = components_fn(args, rows_c, jnp.minimum(ids, num_entities - 1))
            comps = tuple(jnp.broadcast_to(c, (qc, ec)) for c in comps)
            # the candidates that count: not padding, not filtered (the answer is filtered too)
            local = filt_c - start
            local = jnp.where((filt_c >= 0) & (local >= 0) & (local < ec), local, ec)
            keep = jnp.broadcast_to(ids[None, :] < num_entities, (qc, ec))
            keep = keep.at[row_idx, local].set(False, mode="drop")

            def per_weight(_, xs):  # one [Qc, Ec] score block at a time
                w, t = xs
                s = combine(comps, w)
                # A NaN or infinite score is the worst possible: such a candidate never ranks
                # above the answer, and such an answer ranks below every candidate (a NaN
                # compares as "not better", which would otherwise rank every answer first).
                t_bad = ~jnp.isfinite(t)[:, None]
                above = keep & (t_bad | (jnp.isfinite(s) & (s > t[:, None])))
                tied = keep & ~t_bad & (s == t[:, None])
                return None, (
                    jnp.sum(above, axis=1, dtype=jnp.int32),
                    jnp.sum(tied, axis=1, dtype=jnp.int32),
                )

            _, (g, e) = jax.lax.scan(per_weight, None, (weights, target))
            return (greater + g, equal + e), None

        zeros = jnp.zeros((n_grid, qc), jnp.int32)
        starts = jnp.arange(n_ech, dtype=jnp.int32) * ec
        (greater, equal), _ = jax.lax.scan(per_entity_chunk, (zeros, zeros), starts)
        return 1.0 + greater.astype(jnp.float32) + 0.5 * equal.astype(jnp.float32)  # [G, Qc]

    ranks = jax.lax.map(per_query_chunk, chunks)  # [nq, G, Qc]
    return jnp.moveaxis(ranks, 1, 0).reshape(n_grid, -1)


def _check_filter(answers: np.ndarray, filter_tails: np.ndarray) -> None:
    if filter_tails.ndim != 2 or len(filter_tails) != len(answers):
        raise ValueError(
            f"filter_tails must be [Q={len(answers)}, K], got shape {filter_tails.shape}"
        )
    if not np.all((filter_tails == answers[:, None]).any(axis=1)):
        bad = int(np.argmin((filter_tails == answers[:, None]).any(axis=1)))
        raise ValueError(f"query {bad}: its answer {answers[bad]} is missing from its filter list")


def filtered_grid_ranks(
    components_fn: ComponentsFn,
    args: Any,
    rows: Any,
    answers: np.ndarray,
    filter_tails: np.ndarray,
    num_entities: int,
    weights: np.ndarray,
    chunks: Chunks = DEFAULT_CHUNKS,
) -> np.ndarray:
    """Filtered mean-tie ranks [G, Q] float32 of `answers` under each of the G scores
    `combine(components, weights[g])`, in one ranking pass.

    The components are computed once per (query chunk, entity chunk); the G scores are then
    formed and counted one after the other (`lax.scan`), so memory is O(query_chunk x
    entity_chunk x (L + 1)) whatever G. Ranks equal those of `filtered_ranks` with a score
    function that returns `combine(components, weights[g])` (same operations, same order).
    Several processes: each ranks its share of the queries, every process returns all ranks
    (a collective: every process must call it with the same queries).

    Args:
      components_fn: see `ComponentsFn`; must be hashable (module-level or cached).
      weights: [G, L] float32, one weight vector per score.
      Others: as `filtered_ranks`.
    """
    answers = np.asarray(answers, np.int32)
    filter_tails = np.asarray(filter_tails, np.int32)
    weights = np.asarray(weights, np.float32)
    if weights.ndim != 2 or len(weights) == 0:
        raise ValueError(f"weights must be [G >= 1, L], got shape {weights.shape}")
    _check_filter(answers, filter_tails)
    qc = max(1, min(chunks.query, len(answers)))
    ec = max(1, min(chunks.entity, num_entities))
    if distributed.is_multi_process():
        return _grid_ranks_over_processes(
            components_fn, args, rows, answers, filter_tails, num_entities, weights, qc, ec
        )
    (rows, answers_p, filt), n = _pad_rows((rows, answers, filter_tails), qc)
    ranks = _grid_ranks_jit(
        components_fn, num_entities, qc, ec, args, rows, answers_p, filt, weights
    )
    return np.asarray(ranks)[:, :n]


def _grid_ranks_over_processes(
    components_fn, args, rows, answers, filter_tails, num_entities, weights, qc, ec
) -> np.ndarray:
    """`filtered_grid_ranks` in a run of several processes: each process ranks its contiguous
    share of the queries (`distributed.share_of`) on its own devices, in blocks of the same
    `qc` x `ec` as one process would, and the ranks [G, Q] are gathered in every process (copied,
    not added: the same ranks as one process computes, in every process)."""
    mine, size = distributed.share_of(len(answers))
    local = np.zeros((len(weights), 0), np.float32)
    if mine.stop > mine.start:
        part = jax.tree.map(lambda x: np.asarray(x)[mine], (rows, answers, filter_tails))
        (rows_p, answers_p, filt), n = _pad_rows(part, qc)
        ranks = _grid_ranks_jit(
            components_fn,
            num_entities,
            qc,
            ec,
            distributed.process_local(args),
            rows_p,
            answers_p,
            filt,
            weights,
        )
        local = np.asarray(ranks)[:, :n]
    return distributed.gather(local, size, len(answers), axis=1)


def filtered_ranks(
    score_fn: ScoreFn,
    args: Any,
    rows: Any,
    answers: np.ndarray,
    filter_tails: np.ndarray,
    num_entities: int,
    chunks: Chunks = DEFAULT_CHUNKS,
) -> np.ndarray:
    """Filtered mean-tie ranks [Q] float32 of `answers` [Q] among all entities.

    Args:
      score_fn: see `ScoreFn`; must be a hashable function (module-level or a cached partial).
      args: device pytree passed to `score_fn` (the parameters).
      rows: per-query pytree with leading axis Q.
      filter_tails: [Q, K] int32 true tails to skip (padded with -1); must contain the answer.
    """
    no_weights = np.zeros((1, 0), np.float32)  # one score: the single component itself
    return filtered_grid_ranks(
        _single_component(score_fn),
        args,
        rows,
        answers,
        filter_tails,
        num_entities,
        no_weights,
        chunks,
    )[0]


@functools.cache
def _single_component(score_fn: ScoreFn) -> ComponentsFn:
    """`score_fn` as a `ComponentsFn` with one component (cached: a static argument of jit)."""
    return lambda args, rows, ent_ids: (score_fn(args, rows, ent_ids),)


def ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    """MRR, MR and Hits@1/3/10 of (mean-tie) ranks."""
    ranks = np.asarray(ranks, np.float64)
    return {
        "mrr": float(np.mean(1.0 / ranks)),
        "mr": float(np.mean(ranks)),
        "hits@1": float(np.mean(ranks <= 1)),
        "hits@3": float(np.mean(ranks <= 3)),
        "hits@10": float(np.mean(ranks <= 10)),
    }


def candidate_distances(
    model: KGEModel, params: Params, ent_ids: jax.Array
) -> Callable[[Any], jax.Array]:
    """`q -> d(q, candidates)` for a `ScoreFn`'s candidates (their tails gathered once): ent_ids
    [Ec] shared by the queries -> [Qc, Ec], or [Qc, 1], one per query -> [Qc, 1]; q leaves
    [Qc, D'] (`model.query`). A scan over the embedding coordinates
    (`models.kge.pairwise_match`): both forms add the same terms in the same order, so an
    answer scored alone ties exactly with its copy in a block."""
    tails = model.tail(params["entity"][ent_ids.reshape(-1)])
    small, paired = small_params(params), ent_ids.ndim == 2
    return lambda q: pairwise_match(model, small, q, tails, paired=paired)


@functools.cache
def base_score_fn(model: KGEModel) -> ScoreFn:
    """`ScoreFn` of a base model: rows {"hr": [Qc, 2]} (head, relation ids)."""

    def score(params, rows, ent_ids):
        hr = rows["hr"]
        h = params["entity"][jnp.maximum(hr[:, 0], 0)]
        r = params["relation"][jnp.maximum(hr[:, 1], 0)]
        return -candidate_distances(model, params, ent_ids)(model.query(params, h, r))

    return score


@dataclasses.dataclass
class EvalSet:
    """The queries of one split with their filter lists (built once, reused every evaluation).

    Attributes:
      queries: [Q, 3] (h, r, answer) with reverses (Q = 2 x split size).
      filter_tails: [Q, K] int32.
    """

    split: str
    queries: np.ndarray
    filter_tails: np.ndarray


def make_eval_set(kg: KG, split: str) -> EvalSet:
    queries = eval_queries(kg, split)
    return EvalSet(split, queries, filter_index(kg, queries).tails)


def subset(eval_set: EvalSet, n: int, seed: int) -> EvalSet:
    """`n` queries of `eval_set` drawn without replacement with `seed` (kept in order); all of
    them when `n` is 0 or >= their number."""
    if not n or n >= len(eval_set.queries):
        return eval_set
    idx = np.sort(np.random.default_rng(seed).choice(len(eval_set.queries), n, replace=False))
    return EvalSet(eval_set.split, eval_set.queries[idx], eval_set.filter_tails[idx])


def evaluate_base(
    model: KGEModel, params: Any, eval_set: EvalSet, chunks: Chunks = DEFAULT_CHUNKS
) -> dict[str, float]:
    """Filtered MRR / MR / Hits@k of a base model on both directions, plus `eval_seconds`."""
    start = time.perf_counter()
    ranks = filtered_ranks(
        base_score_fn(model),
        params,
        {"hr": eval_set.queries[:, :2]},
        eval_set.queries[:, 2],
        eval_set.filter_tails,
        model.num_entities,
        chunks,
    )
    metrics = ranking_metrics(ranks)
    metrics["eval_seconds"] = time.perf_counter() - start
    return metrics
