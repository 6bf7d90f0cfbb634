"""Filtered ranking on a hand-made graph (ties by mean rank, chunk padding), and against brute
force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.kge import KGEModel
from research.ankge import evaluate
from research.datasets.kg import KG, add_reverse, synthetic_kg


def _hand_made():
    """7 entities on a line (TransE, dim 1, integer positions: exact scores), relation +1."""
    pos = np.array([0, 1, 2, 2, 3, 5, 1], np.float32)  # entities 2, 3 tie; 1, 6 tie
    kg = KG(
        "hand",
        [f"e{i}" for i in range(7)],
        ["next"],
        train=np.array([[0, 0, 1], [1, 0, 2]], np.int32),
        valid=np.array([[4, 0, 5]], np.int32),
        test=np.array([[1, 0, 3], [0, 0, 6], [3, 0, 4]], np.int32),
    )
    model = KGEModel("transe", 7, 2, 1, 6.0)
    params = {
        "entity": jnp.asarray(pos[:, None]),
        "relation": jnp.asarray([[1.0], [-1.0]]),  # reverse relation: -1
    }
    return kg, model, params


def _brute_force(kg, model, params, queries):
    ent, rel = np.asarray(params["entity"]), np.asarray(params["relation"])
    all_true = np.concatenate([kg.train, kg.valid, kg.test])
    true = {tuple(t) for t in add_reverse(all_true, kg.num_relations)}
    ranks = []
    for h, r, t in queries:
        s = -np.abs(ent[h] + rel[r] - ent).sum(-1)
        others = [e for e in range(len(ent)) if e != t and (h, r, e) not in true]
        greater = sum(s[e] > s[t] for e in others)
        equal = sum(s[e] == s[t] for e in others)
        ranks.append(1 + greater + 0.5 * equal)
    return np.array(ranks)


@pytest.mark.parametrize(
    "chunks", [evaluate.Chunks(2, 2), evaluate.Chunks(3, 4), evaluate.Chunks()]
)
def test_filtered_mean_tie_ranks_on_hand_made_graph(chunks):
    kg, model, params = _hand_made()
    es = evaluate.make_eval_set(kg, "test")
    ranks = evaluate.filtered_ranks(
        evaluate.base_score_fn(model),
        params,
        {"hr": es.queries[:, :2]},
        es.queries[:, 2],
        es.filter_tails,
        7,
        chunks,
    )
    # (1, +1, 3): h + r = 2; entity 2 (pos 2) is a train answer of (1, next): filtered, so
    # nothing beats or ties 3 -> rank 1. Unfiltered it would be a tie (rank 1.5).
    # (0, +1, 6): h + r = 1; entities 1 (pos 1, filtered: train answer) and 6 tie -> 1;
    #   next best distance 1: entities 0, 2, 3 -> not better -> rank 1.
    # (3, +1, 4): h + r = 3 -> 4 is exact -> rank 1 (entities 2, 3 at distance 1 are worse).
    # reversed: (3, -1, 1): 1 -> pos 1; entity 6 also pos 1 (tie, not a true triple) -> 1.5
    #           (6, -1, 0): pos 0 -> entity 0 only -> 1
    #           (4, -1, 3): pos 2 -> entities 2 and 3 tie -> 1.5
    np.testing.assert_array_equal(ranks, [1, 1, 1, 1.5, 1, 1.5])
    np.testing.assert_array_equal(ranks, _brute_force(kg, model, params, es.queries))
    m = evaluate.ranking_metrics(ranks)
    assert m["hits@1"] == pytest.approx(4 / 6) and m["mr"] == pytest.approx(7 / 6)


def test_ranks_match_brute_force_on_random_embeddings_with_ties():
    kg = synthetic_kg(8, group_size=3, num_relations=2, seed=3)
    model = KGEModel("transe", kg.num_entities, 4, 3, 6.0)
    rng = np.random.default_rng(0)
    params = {  # small integers: many exact ties
        "entity": jnp.asarray(rng.integers(-2, 3, (kg.num_entities, 3)), jnp.float32),
        "relation": jnp.asarray(rng.integers(-1, 2, (4, 3)), jnp.float32),
    }
    es = evaluate.make_eval_set(kg, "test")
    got = evaluate.evaluate_base(model, params, es, evaluate.Chunks(5, 7))
    ranks = _brute_force(kg, model, params, es.queries)
    assert got["mrr"] == pytest.approx(np.mean(1 / ranks))
    assert got["mr"] == pytest.approx(np.mean(ranks))
    assert np.any(ranks != np.round(ranks))  # ties were exercised


def test_rotate_ranks_match_dense_numpy():
    kg = synthetic_kg(10, group_size=2, num_relations=2, seed=2)
    model = KGEModel("rotate", kg.num_entities, 4, 4, 6.0)
    params = model.init(jax.random.PRNGKey(5))
    es = evaluate.make_eval_set(kg, "test")
    ranks = evaluate.filtered_ranks(
        evaluate.base_score_fn(model),
        params,
        {"hr": es.queries[:, :2]},
        es.queries[:, 2],
        es.filter_tails,
        model.num_entities,
        evaluate.Chunks(4, 8),
    )
    ent, rel = params["entity"], params["relation"]
    s = -np.asarray(
        model.distance(
            params, ent[es.queries[:, 0]][:, None], rel[es.queries[:, 1]][:, None], ent[None]
        )
    )
    true = {tuple(t) for t in add_reverse(np.concatenate([kg.train, kg.valid, kg.test]), 2)}
    for i, (h, r, t) in enumerate(es.queries):
        keep = [e for e in range(kg.num_entities) if e != t and (h, r, e) not in true]
        assert ranks[i] == 1 + np.sum(s[i, keep] > s[i, t]) + 0.5 * np.sum(s[i, keep] == s[i, t])


def test_missing_answer_in_filter_is_an_error():
    kg, model, params = _hand_made()
    es = evaluate.make_eval_set(kg, "test")
    with pytest.raises(ValueError, match="missing from its filter list"):
        evaluate.filtered_ranks(
            evaluate.base_score_fn(model),
            params,
            {"hr": es.queries[:, :2]},
            es.queries[:, 2],
            np.full_like(es.filter_tails, -1),
            7,
        )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_rank_worst(bad):
    """A diverged model must not score a perfect MRR: NaN / infinite candidates never rank above
    the answer, and a NaN / infinite answer ranks below every unfiltered candidate."""
    kg = synthetic_kg(8, group_size=3, num_relations=2, seed=3)
    model = KGEModel("transe", kg.num_entities, 4, 3, 6.0)
    params = model.init(jax.random.PRNGKey(0))
    es = evaluate.make_eval_set(kg, "test")
    unfiltered = np.array(
        [kg.num_entities - np.sum(row >= 0) for row in es.filter_tails], np.float64
    )  # candidates left after filtering (the answer is in its filter list)
    everything_bad = {k: jnp.full_like(v, bad) for k, v in params.items()}
    got = evaluate.evaluate_base(model, everything_bad, es, evaluate.Chunks(5, 7))
    assert got["mrr"] == pytest.approx(np.mean(1 / (1 + unfiltered)))
    assert got["mrr"] < 0.2

    # Only entity 0 non-finite: for the queries that neither start nor end at it, the ranks equal
    # those of a model in which entity 0 is farther than everything.
    def ranks(p):
        return evaluate.filtered_ranks(
            evaluate.base_score_fn(model), p, {"hr": es.queries[:, :2]}, es.queries[:, 2],
            es.filter_tails, kg.num_entities, evaluate.Chunks(5, 7),
        )  # fmt: skip

    poisoned = ranks({**params, "entity": params["entity"].at[0].set(bad)})
    far = ranks({**params, "entity": params["entity"].at[0].set(1e6)})
    away = (es.queries[:, 0] != 0) & (es.queries[:, 2] != 0)
    assert away.sum() > 5
    np.testing.assert_array_equal(poisoned[away], far[away])
