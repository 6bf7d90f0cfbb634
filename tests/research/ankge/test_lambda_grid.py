"""Lambdas chosen on validation: the one-pass grid ranking equals separate AnKGE evaluations
(exactly, ties included), lambda (0, 0, 0) is the base model, and the grid spec."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.kge import KGEModel
from research.ankge import analogy, evaluate, retriever, scoring
from research.datasets.kg import add_reverse, synthetic_kg

SIZES = retriever.RetrievalSizes(1, 1, 3, 10, 2)
CHUNKS = evaluate.Chunks(5, 7)  # padding of both the queries and the entities
GRID = [(0.0, 0.0, 0.0), (0.1, 0.05, 0.1), (0.5, 0.0, 0.25), (0.0, 1.0, 0.0), (2.0, 0.5, 1.0)]


def _setup(name):
    kg = synthetic_kg(6, group_size=3, num_relations=2, seed=4)
    model = KGEModel(name, kg.num_entities, 2 * kg.num_relations, 4, 6.0)
    key = jax.random.PRNGKey(1)
    if name == "transe":  # small integers and exact lambdas: many exact ties
        rng = np.random.default_rng(0)
        base = {
            "entity": jnp.asarray(rng.integers(-2, 3, (kg.num_entities, 4)), jnp.float32),
            "relation": jnp.asarray(rng.integers(-1, 2, (model.num_relations, 4)), jnp.float32),
        }
        ank = {
            "ent_matrix": jnp.asarray(rng.integers(0, 3, (kg.num_entities, 4)), jnp.float32),
            "rel_matrix": jnp.asarray(rng.integers(0, 3, (model.num_relations, 4)), jnp.float32),
            "trans_matrix": jnp.zeros((4, 4)),
        }
    else:
        base = model.init(key)
        ank = analogy.init_analogy(model, jax.random.fold_in(key, 1))
        ank = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(key, x.shape), ank)
    train = add_reverse(kg.train, kg.num_relations)
    weights = analogy.adaptive_weights(train, model.num_entities, model.num_relations, SIZES)
    return kg, model, base, ank, weights


@pytest.mark.parametrize("name,beta", [("rotate", 0.5), ("transe", 0.0)])
def test_grid_ranks_equal_separate_evaluations(name, beta):
    kg, model, base, ank, weights = _setup(name)
    es = evaluate.make_eval_set(kg, "test")
    grid = scoring.ankge_grid_ranks(
        model, base, ank, weights, es, beta=beta, lambda_grid=np.array(GRID), chunks=CHUNKS
    )
    assert grid.shape == (len(GRID), len(es.queries))
    for g, lambdas in enumerate(GRID):
        alone = scoring.ankge_ranks(
            model, base, ank, weights, es, beta=beta, lambdas=lambdas, chunks=CHUNKS
        )
        np.testing.assert_array_equal(grid[g], alone, err_msg=str(lambdas))
    base_ranks = evaluate.filtered_ranks(
        evaluate.base_score_fn(model),
        base,
        {"hr": es.queries[:, :2]},
        es.queries[:, 2],
        es.filter_tails,
        model.num_entities,
        CHUNKS,
    )
    np.testing.assert_array_equal(grid[0], base_ranks)
    assert not np.array_equal(grid[1], base_ranks)  # the level terms do change the ranking
    if name == "transe":
        assert np.any(grid != np.round(grid))  # ties were exercised
    got = scoring.evaluate_ankge(
        model, base, ank, weights, es, beta=beta, lambdas=GRID[1], chunks=CHUNKS
    )
    assert got["mrr"] == evaluate.ranking_metrics(grid[1])["mrr"]


def test_select_lambdas_takes_the_best_valid_mrr_first_on_ties():
    kg, model, base, ank, weights = _setup("rotate")
    es = evaluate.make_eval_set(kg, "valid")
    grid = GRID + [(0.0, 0.0, 0.0)]  # a duplicate of the first: ties never pick the later one
    best, table = scoring.select_lambdas(
        model, base, ank, weights, es, grid, beta=0.0, chunks=CHUNKS
    )
    mrrs = [row["mrr"] for row in table]
    assert [tuple(row["lambdas"]) for row in table] == grid
    assert best == grid[int(np.argmax(mrrs))] and max(mrrs) == mrrs[grid.index(best)]
    assert mrrs[0] == mrrs[-1]


def test_parse_lambda_grid():
    grid = scoring.parse_lambda_grid("0,0.1", include=((0, 0, 0), (0.1, 0.05, 0.1)))
    assert grid[:2] == [(0.0, 0.0, 0.0), (0.1, 0.05, 0.1)]
    assert len(grid) == 2 + 8 - 1  # (0, 0, 0) only once
    assert set(grid[2:]) == {(a, b, c) for a in (0, 0.1) for b in (0, 0.1) for c in (0, 0.1)} - {
        (0, 0, 0)
    }
    per_level = scoring.parse_lambda_grid("0.1; 0,0.2 ;0.3")
    assert per_level == [(0.0, 0.0, 0.0), (0.1, 0.0, 0.3), (0.1, 0.2, 0.3)]
    for bad in ("0,x", "0;1", "0;;1"):
        with pytest.raises(ValueError, match="lambda grid"):
            scoring.parse_lambda_grid(bad)
