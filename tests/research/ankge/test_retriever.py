"""The retriever against brute force on a tiny graph, for every base model; cache checks."""

import jax
import numpy as np
import pytest

from models.kge import MODELS, KGEModel
from research.ankge import retriever
from research.datasets.kg import add_reverse, synthetic_kg


def _brute_force(model, params, triples, sizes):
    p = jax.tree.map(np.asarray, params)
    dist = lambda h, r, t: np.array(
        model.distance(params, p["entity"][h], p["relation"][r], p["entity"][t])
    )
    n_ent, n_rel = model.num_entities, model.num_relations
    out = {k: [] for k in ("entity", "relation", "triple_entity", "triple_relation")}
    for h, r, t in triples:
        de = dist(np.arange(n_ent), np.full(n_ent, r), np.full(n_ent, t))
        de[t] = np.inf
        ent_order = np.argsort(de, kind="stable")
        dr = dist(np.full(n_rel, h), np.arange(n_rel), np.full(n_rel, t))
        rel_order = np.argsort(dr, kind="stable")
        ce, cr = ent_order[: sizes.triple_ent_knn], rel_order[: sizes.triple_rel_knn]
        pairs = [(e, q) for e in ce for q in cr]
        dp = np.array([dist(e, q, t) for e, q in pairs])
        best = np.argsort(dp, kind="stable")[: sizes.triple_knn]
        out["entity"].append(ent_order[: sizes.ent_knn])
        out["relation"].append(rel_order[: sizes.rel_knn])
        out["triple_entity"].append([pairs[i][0] for i in best])
        out["triple_relation"].append([pairs[i][1] for i in best])
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("name", MODELS)
def test_retrieval_matches_brute_force(name):
    kg = synthetic_kg(6, group_size=3, num_relations=2, seed=0)
    model = KGEModel(name, kg.num_entities, 4, 4, 6.0)
    params = model.init(jax.random.PRNGKey(1))
    triples = add_reverse(kg.train, kg.num_relations)[:40]
    sizes = retriever.RetrievalSizes(
        ent_knn=2, rel_knn=2, triple_knn=3, triple_ent_knn=5, triple_rel_knn=3
    )
    got = retriever.retrieve(model, params, triples, sizes, chunk=8, entity_chunk=7)
    want = _brute_force(model, params, triples, sizes)
    np.testing.assert_array_equal(got.entity, want["entity"])
    np.testing.assert_array_equal(got.relation, want["relation"])
    # the triple level: same pairs (order among exact ties aside)
    for i in range(len(triples)):
        assert set(zip(got.triple_entity[i], got.triple_relation[i], strict=True)) == set(
            zip(want["triple_entity"][i], want["triple_relation"][i], strict=True)
        ), i
    assert not np.any(got.entity == triples[:, 2:3])  # t excluded at the entity level


def test_cache_round_trip_and_mismatch(tmp_path):
    kg = synthetic_kg(5, group_size=2, num_relations=2, seed=0)
    model = KGEModel("transe", kg.num_entities, 4, 3, 6.0)
    params = model.init(jax.random.PRNGKey(0))
    triples = add_reverse(kg.train, 2)
    sizes = retriever.RetrievalSizes(1, 1, 2, 4, 2)
    path = str(tmp_path / "r.npz")
    a = retriever.cached_retrieve(path, model, params, triples, sizes, chunk=16)
    b = retriever.cached_retrieve(path, model, params, triples, sizes)
    np.testing.assert_array_equal(a.triple_entity, b.triple_entity)
    with pytest.raises(ValueError, match="cached retrieval has"):
        retriever.cached_retrieve(
            path, model, params, triples, retriever.RetrievalSizes(2, 1, 2, 4, 2)
        )
    with pytest.raises(ValueError, match="lower ankge.triple_ent_knn"):
        retriever.retrieve(model, params, triples, retriever.RetrievalSizes(1, 1, 2, 400, 2))
