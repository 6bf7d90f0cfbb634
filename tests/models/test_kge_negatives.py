"""`negative_distances`: every impl against the reference (`match_tails` on gathered tails),
values and gradients with respect to the small parameters, the queries and the whole table."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.kge import MODELS, NEGATIVE_IMPLS, KGEModel, negative_distances, small_params


def _inputs(name, groups, per_group, negatives, seed=0):
    model = KGEModel(name, num_entities=23, num_relations=6, dim=6, gamma=6.0)
    key = jax.random.PRNGKey(seed)
    params = model.init(key)
    # generic values (HAKE starts with moduli 1, biases 0; PairRE normalises rows)
    params = jax.tree.map(
        lambda x: x + 0.3 * jax.random.normal(jax.random.fold_in(key, x.size), x.shape), params
    )
    k1, k2, k3 = jax.random.split(jax.random.fold_in(key, 7), 3)
    b = groups * per_group
    h = jax.random.randint(k1, (b,), 0, model.num_entities)
    r = jax.random.randint(k2, (b,), 0, model.num_relations)
    neg = jax.random.randint(k3, (groups, negatives), 0, model.num_entities)
    return model, params, h, r, neg


def _loss(model, impl, params, h, r, neg, cotangent):
    ent, rel = params["entity"], params["relation"]
    q = model.query(params, ent[h][:, None, :], rel[r][:, None, :])
    g = neg.shape[0]
    q = jax.tree.map(lambda x: x.reshape((g, -1, x.shape[-1])), q)
    d = negative_distances(model, small_params(params), q, ent, neg, impl=impl)
    return jnp.sum(d * cotangent), d


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("groups,per_group", [(4, 1), (2, 3)])  # per positive / shared
def test_impls_match_the_reference(name, groups, per_group):
    model, params, h, r, neg = _inputs(name, groups, per_group, negatives=5)
    cot = jax.random.uniform(jax.random.PRNGKey(3), (groups, per_group, 5))
    got = {}
    for impl in NEGATIVE_IMPLS:
        fn = jax.value_and_grad(functools.partial(_loss, model, impl), has_aux=True)
        got[impl] = jax.jit(fn)(params, h, r, neg, cot)
    (_, d_ref), g_ref = got.pop("reference")
    assert d_ref.shape == (groups, per_group, 5)
    assert np.count_nonzero(np.abs(np.asarray(g_ref["entity"])).sum(-1)) > 0
    for impl, ((_, d), g) in got.items():
        np.testing.assert_allclose(d, d_ref, rtol=1e-5, atol=1e-6, err_msg=impl)
        assert set(g) == set(g_ref)
        for k in g_ref:
            np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-5, atol=1e-6, err_msg=f"{impl} {k}")


@pytest.mark.parametrize("impl", NEGATIVE_IMPLS)
def test_repeated_negative_ids_accumulate(impl):
    model, params, h, r, _ = _inputs("rotate", 1, 2, 3)
    q = model.query(params, params["entity"][h][None], params["relation"][r][None])  # [1, 2, D]

    def table_grad(neg):
        fn = lambda ent: jnp.sum(negative_distances(model, {}, q, ent, neg, impl=impl))
        return jax.grad(fn)(params["entity"])

    twice, once = table_grad(jnp.array([[4, 4, 9]])), table_grad(jnp.array([[4]]))
    np.testing.assert_allclose(twice[4], 2 * once[4], rtol=1e-6)
    assert np.abs(np.asarray(twice[4])).sum() > 0
    np.testing.assert_array_equal(np.delete(np.asarray(twice), [4, 9], axis=0), 0.0)


def test_unknown_impl_is_an_error():
    model, params, h, r, neg = _inputs("rotate", 2, 1, 3)
    with pytest.raises(ValueError, match="unknown negative_distances impl 'pallas'"):
        _loss(model, "pallas", params, h, r, neg, 1.0)
