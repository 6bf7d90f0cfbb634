"""The `tiny` preset end to end (base model, retrieval, AnKGE), resuming, and the combined
score: AnKGE differs from the base score exactly where an adaptive weight is non-zero."""

import dataclasses
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs.ankge import get_config
from research.ankge import analogy, evaluate, retriever, scoring
from research.ankge.analogy import AnKGEOptions
from research.ankge.train import eval_chunks, load_data, make_model, train_and_evaluate
from research.ankge.train_base import BaseRecipe
from research.datasets.kg import add_reverse
from research.training.results import read_results


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ankge_tiny"))
    config = get_config("tiny")
    return config, workdir, train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_tiny_preset_learns_and_writes_results(tiny_run):
    config, workdir, metrics = tiny_run
    kg = load_data(config)
    chance = np.mean(1.0 / np.arange(1, kg.num_entities + 1))
    assert metrics["base/mrr"] > 5 * chance
    assert metrics["ankge/mrr"] > 5 * chance
    assert metrics["base/train_steps"] == 300 and metrics["ankge/train_steps"] == 100
    assert read_results(workdir)["ankge/mrr"] == metrics["ankge/mrr"]
    for name in ("results.md", "training_curve.png", "ankge/retrieval.npz", "base/params.npz"):
        assert os.path.exists(os.path.join(workdir, name)), name
    # a second run reads both finished stages back
    again = train_and_evaluate(config, workdir)
    assert again["base/mrr"] == metrics["base/mrr"] and again["ankge/mrr"] == metrics["ankge/mrr"]


@pytest.mark.slow
def test_ankge_score_differs_from_base_only_where_weights_are_nonzero(tiny_run):
    config, workdir, _ = tiny_run
    kg = load_data(config)
    model = make_model(config, kg)
    base = {k: jnp.asarray(v) for k, v in np.load(os.path.join(workdir, "base/params.npz")).items()}
    ank = {
        k: jnp.asarray(v)
        for k, v in np.load(os.path.join(workdir, "ankge/analogy_params.npz")).items()
    }
    a = AnKGEOptions(**config.ankge)
    sizes = a.retrieval_sizes
    train = add_reverse(kg.train, kg.num_relations)
    weights = analogy.adaptive_weights(train, model.num_entities, model.num_relations, sizes)
    q = evaluate.make_eval_set(kg, "test").queries
    wr_ids, wr_val = analogy.relation_weight_lists(weights, q[:, 0], model.num_entities)
    # every entity of the synthetic graph has in-edges (triple-level weight > 0 everywhere), so
    # the triple level is switched off here to leave zero weights to check
    lambdas = (a.ent_lambda, a.rel_lambda, 0.0)
    args = {"base": base, "ank": ank, "w_ent": weights.ent, "w_tri": weights.triple}
    rows = {
        "hr": jnp.asarray(q[:, :2]),
        "wr_ids": jnp.asarray(wr_ids),
        "wr_val": jnp.asarray(wr_val),
    }
    all_ids = jnp.arange(model.num_entities, dtype=jnp.int32)
    ank_s = np.asarray(scoring.ankge_score_fn(model, a.beta, lambdas)(args, rows, all_ids))
    base_s = np.asarray(evaluate.base_score_fn(model)(base, {"hr": rows["hr"]}, all_ids))
    # the adaptive weights by brute force over the training triples
    true = {tuple(t) for t in train}
    w = np.zeros_like(base_s)
    for i, (h, r, _) in enumerate(q):
        for e in range(model.num_entities):
            n_h = sum((x, r, e) in true for x in range(model.num_entities))
            n_r = sum((h, y, e) in true for y in range(model.num_relations))
            n_t = len({(x, y) for (x, y, z) in true if z == e})
            w[i, e] = (
                lambdas[0] * min(1, n_h / a.ent_knn)
                + lambdas[1] * min(1, n_r / a.rel_knn)
                + lambdas[2] * min(1, n_t / a.triple_knn)
            )
    assert (w == 0).any() and (w > 0).any()
    np.testing.assert_array_equal(ank_s[w == 0], base_s[w == 0])
    assert np.mean(ank_s[w > 0] != base_s[w > 0]) > 0.99


@pytest.mark.slow
def test_lambdas_chosen_on_valid_reuse_the_trained_stage(tiny_run, tmp_path):
    config, workdir, metrics = tiny_run
    workdir = str(shutil.copytree(workdir, tmp_path / "run"))
    config = config.copy_and_resolve_references()
    config.ankge.lambda_grid = "0,0.1;0,0.05;0.1"
    got = train_and_evaluate(config, workdir)  # only the lambdas and the test evaluation rerun
    assert got["base/mrr"] == metrics["base/mrr"]
    assert got["ankge/train_seconds"] == metrics["ankge/train_seconds"]
    with open(os.path.join(workdir, "ankge/lambda_grid.json")) as f:
        table = json.load(f)["table"]
    # (0, 0, 0) first, then the configured lambdas, then the grid less the configured triple
    assert got["ankge/lambda_grid_size"] == len(table) == 2 + 4 - 1
    assert table[0]["lambdas"] == [0, 0, 0] and table[1]["lambdas"] == [0.1, 0.05, 0.1]
    best = max(table, key=lambda row: row["mrr"])
    assert got["ankge/lambdas"] == best["lambdas"] and got["ankge/valid_mrr"] == best["mrr"]
    assert got["ankge/valid_mrr_base"] == table[0]["mrr"]
    assert got["ankge/valid_mrr_configured"] == table[1]["mrr"]
    # the test metrics are those of the chosen lambdas
    kg = load_data(config)
    model = make_model(config, kg)
    load = lambda name: {k: jnp.asarray(v) for k, v in np.load(os.path.join(workdir, name)).items()}
    a = AnKGEOptions(**config.ankge)
    sizes = a.retrieval_sizes
    train = add_reverse(kg.train, kg.num_relations)
    want = scoring.evaluate_ankge(
        model,
        load("base/params.npz"),
        load("ankge/analogy_params.npz"),
        analogy.adaptive_weights(train, model.num_entities, model.num_relations, sizes),
        evaluate.make_eval_set(kg, "test"),
        beta=a.beta,
        lambdas=tuple(best["lambdas"]),
        chunks=eval_chunks(config),
    )
    assert got["ankge/mrr"] == want["mrr"]
    # a second run with the same settings reads the result back
    again = train_and_evaluate(config, workdir)
    assert again["ankge/mrr"] == got["ankge/mrr"]


@pytest.mark.parametrize("preset", ["tiny", "small", "wn18rr_transe", "fb15k237_hake"])
def test_config_sections_are_the_options_dataclasses(preset):
    config = get_config(preset)
    assert dataclasses.asdict(BaseRecipe(**config.base)) == config.base.to_dict()
    assert dataclasses.asdict(AnKGEOptions(**config.ankge)) == config.ankge.to_dict()
    assert AnKGEOptions(**config.ankge).retrieval_sizes == retriever.RetrievalSizes(
        config.ankge.ent_knn,
        config.ankge.rel_knn,
        config.ankge.triple_knn,
        config.ankge.triple_ent_knn,
        config.ankge.triple_rel_knn,
    )


@pytest.mark.parametrize("name", ["rotate", "hake"])
def test_self_loops_at_phase_zero_keep_the_loss_finite(name):
    """Self-loop triples (h, r, h) whose relation has phase 0 give an exact zero difference in
    the distance; training on them (the real data-parallel step, self-adversarial negatives,
    Adam) must keep the loss and every parameter finite (it turned NaN on WN18RR / FB15k-237)."""
    import jax

    from models.kge import KGEModel
    from research.ankge import train_base
    from research.training.parallel import data_mesh, shard_batch
    from research.training.train_state import TrainState

    num_entities, dim = 16, 8
    model = KGEModel(name, num_entities, 2, dim, 6.0)
    params = model.init(jax.random.PRNGKey(0))
    rel = params["relation"].at[0, :dim].set(0.0)  # phase 0 in every coordinate
    if name == "hake":
        rel = rel.at[0, dim : 2 * dim].set(1.0).at[0, 2 * dim :].set(0.0)
    params = {**params, "relation": rel}
    heads = np.arange(num_entities, dtype=np.int32)
    triples = np.stack([heads, np.zeros_like(heads), heads], axis=1)  # all self-loops
    recipe = BaseRecipe(batch_size=8, num_negatives=4, lr=1e-2, num_steps=20, eval_every=0)
    mesh = data_mesh()
    weights = np.ones(len(triples), np.float32)
    batches = train_base.base_batches(triples, weights, 8, seed=0, steps_per_call=5)
    step = train_base.make_base_step(model, recipe, mesh, 5)
    state = TrainState.create(params, train_base.make_optimizer(recipe), jax.random.PRNGKey(1))
    for call in range(4):
        state, metrics = step(state, shard_batch(batches(5 * call), mesh, steps_per_call=5))
        assert np.isfinite(float(metrics["loss"])), (call, metrics)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
