"""KGE scorers against direct numpy formulas; the looped-gradient tail matcher against autodiff;
the coordinate-scan pairwise matcher against broadcasting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.kge import MODELS, KGEModel, match_tails, pairwise_match, small_params

PI = np.pi


def _numpy_distance(name, h, r, t, rng_, pw=None, mw=None):
    """Direct per-triple formulas of the official code. h, r, t: [D*] float64 vectors."""
    if name == "transe":
        return np.sum(np.abs(h + r - t))
    if name == "rotate":
        d = len(r)
        theta = r / (rng_ / PI)
        hc = h[:d] + 1j * h[d:]
        tc = t[:d] + 1j * t[d:]
        return np.sum(np.abs(hc * np.exp(1j * theta) - tc))
    if name == "hake":
        d = len(h) // 2
        ph, mh = h[:d] / (rng_ / PI), h[d:]
        pt, mt = t[:d] / (rng_ / PI), t[d:]
        pr, mr, br = r[:d] / (rng_ / PI), np.abs(r[d : 2 * d]), np.minimum(r[2 * d :], 1.0)
        br = np.where(br < -mr, -mr, br)
        phase = np.sum(np.abs(np.sin((ph + pr - pt) / 2))) * pw
        return phase + np.linalg.norm(mh * (mr + br) - mt * (1 - br)) * mw
    d = len(h)
    hn, tn = h / np.linalg.norm(h), t / np.linalg.norm(t)
    return np.sum(np.abs(hn * r[:d] - tn * r[d:]))


@pytest.mark.parametrize("name", MODELS)
def test_distance_matches_numpy_formula(name):
    model = KGEModel(name, num_entities=7, num_relations=3, dim=5, gamma=6.0)
    params = model.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    # random (not just initial) values: moduli, negative biases below -|r_m|, etc.
    params["entity"] = jnp.asarray(rng.normal(size=params["entity"].shape), jnp.float32)
    params["relation"] = jnp.asarray(rng.normal(size=params["relation"].shape), jnp.float32)
    if name == "hake":
        params["phase_weight"], params["modulus_weight"] = jnp.float32(0.7), jnp.float32(1.3)
    ent, rel = np.asarray(params["entity"], np.float64), np.asarray(params["relation"], np.float64)
    # one (h, r) against all tails, by broadcasting
    got = model.distance(
        params, params["entity"][2][None], params["relation"][1][None], params["entity"]
    )
    want = [
        _numpy_distance(name, ent[2], rel[1], ent[t], model.embedding_range, 0.7, 1.3)
        for t in range(7)
    ]
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
    triples = jnp.asarray([[0, 2, 3], [6, 0, 6]])
    scores = model.score_ids(params, triples)
    want = [
        model.gamma - _numpy_distance(name, ent[h], rel[r], ent[t], model.embedding_range, 0.7, 1.3)
        for h, r, t in np.asarray(triples)
    ]
    np.testing.assert_allclose(np.asarray(scores), want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", MODELS)
def test_match_tails_values_and_gradients_equal_broadcasting(name):
    model = KGEModel(name, num_entities=11, num_relations=4, dim=6, gamma=9.0)
    params = model.init(jax.random.PRNGKey(3))
    key = jax.random.PRNGKey(4)
    h = jax.random.randint(key, (3, 2), 0, 11)
    r = jax.random.randint(jax.random.fold_in(key, 1), (3, 2), 0, 4)
    neg = jax.random.randint(jax.random.fold_in(key, 2), (3, 5), 0, 11)
    cot = jax.random.normal(jax.random.fold_in(key, 3), (3, 2, 5))

    def loss(params, looped):
        q = model.query(params, params["entity"][h], params["relation"][r])  # [G, M, D]
        tails = model.tail(params["entity"][neg])  # [G, N, D]
        if looped:
            d = match_tails(model, small_params(params), q, tails)
        else:
            q = jax.tree.map(lambda x: x[:, :, None], q)
            d = model.match(params, q, tails[:, None])
        return jnp.sum(d * cot), d

    (_, d1), g1 = jax.value_and_grad(loss, has_aux=True)(params, True)
    (_, d2), g2 = jax.value_and_grad(loss, has_aux=True)(params, False)
    np.testing.assert_allclose(d1, d2, rtol=1e-5, atol=1e-5)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("name", MODELS)
def test_pairwise_match_equals_broadcasting(name):
    """[Q, E] by the coordinate scan = match of the broadcast; paired mode reproduces each
    query's own entry of the block bit for bit."""
    model = KGEModel(name, num_entities=13, num_relations=4, dim=6, gamma=9.0)
    params = model.init(jax.random.PRNGKey(5))
    if name == "hake":
        params["phase_weight"], params["modulus_weight"] = jnp.float32(0.7), jnp.float32(1.3)
    h, r = jnp.array([0, 3, 7, 12, 5]), jnp.array([1, 0, 3, 2, 2])
    q = model.query(params, params["entity"][h], params["relation"][r])  # [Q, D']
    tails = model.tail(params["entity"])  # [E, D]
    got = pairwise_match(model, small_params(params), q, tails)
    want = model.match(params, jax.tree.map(lambda x: x[:, None], q), tails[None])
    assert got.shape == (5, 13)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    answers = jnp.array([4, 4, 0, 12, 9])
    alone = pairwise_match(model, small_params(params), q, tails[answers], paired=True)
    assert alone.shape == (5, 1)
    np.testing.assert_array_equal(alone[:, 0], got[jnp.arange(5), answers])


def test_init_ranges_and_shapes():
    for name in MODELS:
        model = KGEModel(name, num_entities=5, num_relations=2, dim=4, gamma=6.0)
        p = model.init(jax.random.PRNGKey(0))
        assert p["entity"].shape == (5, model.entity_dim)
        assert p["relation"].shape == (2, model.relation_dim)
        assert float(jnp.max(jnp.abs(p["entity"]))) <= model.embedding_range
    with pytest.raises(ValueError, match="unknown KGE model"):
        KGEModel("distmult", 5, 2, 4, 6.0)


def _self_loop_params(model, key):
    """Parameters where (0, 0, 0) is a self-loop whose distance is exactly 0 in some coordinate:
    relation 0 has phase 0 (RotatE), unit modulus and zero bias (HAKE), r_h = r_t (PairRE)."""
    params = model.init(key)
    rel = params["relation"]
    d = model.dim
    if model.name in ("transe", "rotate"):
        rel = rel.at[0, :2].set(0.0)
    elif model.name == "hake":
        rel = rel.at[0, :d].set(0.0).at[0, d : 2 * d].set(1.0).at[0, 2 * d :].set(0.0)
    else:
        rel = rel.at[0, d:].set(rel[0, :d])
    return {**params, "relation": rel}


@pytest.mark.parametrize("name", MODELS)
def test_self_loop_gradient_is_finite(name):
    """The gradient of a self-loop triple (h, r, h) with a zero difference is finite (it was
    NaN for RotatE, HAKE and PairRE through the square root of 0), in every scoring path."""
    model = KGEModel(name, num_entities=4, num_relations=2, dim=6, gamma=6.0)
    params = _self_loop_params(model, jax.random.PRNGKey(1))
    triple = jnp.array([[0, 0, 0], [1, 1, 2]])
    loss = lambda p: jnp.sum(model.score_ids(p, triple))
    grads = jax.grad(loss)(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads)), grads

    def tails_loss(p):
        ent, rel = p["entity"], p["relation"]
        q = model.query(p, ent[:1][:, None], rel[:1][:, None])  # [1, 1, D]
        return jnp.sum(match_tails(model, small_params(p), q, model.tail(ent)[None]))

    def pairwise_loss(p):
        ent, rel = p["entity"], p["relation"]
        q = model.query(p, ent[:1], rel[:1])
        return jnp.sum(pairwise_match(model, small_params(p), q, model.tail(ent)))

    for fn in (tails_loss, pairwise_loss):
        grads = jax.grad(fn)(params)
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads)), fn


def test_safe_sqrt_matches_sqrt_away_from_zero():
    from models.kge import safe_sqrt

    x = jnp.array([0.0, 1e-30, 0.25, 4.0, 9.0])
    np.testing.assert_array_equal(safe_sqrt(x), jnp.sqrt(x))
    grad = jax.vmap(jax.grad(safe_sqrt))(x)
    np.testing.assert_array_equal(grad[1:], jax.vmap(jax.grad(jnp.sqrt))(x[1:]))
    assert grad[0] == 0.0
