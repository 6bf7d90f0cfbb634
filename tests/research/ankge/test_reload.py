"""What a finished run's files are checked for when they are read back instead of recomputed:
base/params.npz and ankge/analogy_params.npz (finite, the model's names and shapes, readable),
ankge/retrieval.npz (readable, ids within the graph), and the splits of a data folder."""

import json
import os
import re

import jax
import numpy as np
import pytest

from experiments.configs.ankge import get_config
from research.ankge import retriever
from research.ankge import train as train_lib
from research.ankge.analogy import AnKGEOptions, init_analogy
from research.ankge.train import eval_chunks, load_data, make_model, train_ankge, train_base_model
from research.datasets.kg import write_kg


@pytest.fixture(scope="module")
def setup():
    config = get_config("tiny")
    kg = load_data(config)
    return config, kg, make_model(config, kg)


def _finished_base(workdir, model, **edit):
    """A finished stage 1 in workdir: result.json and params.npz (arrays edited by `edit`)."""
    params = {k: np.asarray(v) for k, v in model.init(jax.random.PRNGKey(0)).items()}
    params.update(edit)
    os.makedirs(workdir, exist_ok=True)
    np.savez(os.path.join(workdir, "params.npz"), **params)
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump({"mrr": 0.5}, f)
    return params


def test_a_finished_base_stage_is_read_back_when_its_params_are_sound(setup, tmp_path):
    config, kg, model = setup
    params = _finished_base(str(tmp_path), model)
    got, metrics = train_base_model(config, kg, model, str(tmp_path))
    assert metrics == {"mrr": 0.5}
    for name, x in params.items():
        np.testing.assert_array_equal(got[name], x)


@pytest.mark.parametrize("bad, what", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_base_params_raise_naming_the_file(setup, tmp_path, bad, what):
    config, kg, model = setup
    entity = np.asarray(model.init(jax.random.PRNGKey(0))["entity"]).copy()
    entity[3, 1] = entity[7, 0] = bad
    _finished_base(str(tmp_path), model, entity=entity)
    path = os.path.join(str(tmp_path), "params.npz")
    match = rf"{re.escape(path)}: array 'entity' \(160, 32\) holds 2 non-finite values \({what}\)"
    with pytest.raises(ValueError, match=match):
        train_base_model(config, kg, model, str(tmp_path))


def test_base_params_of_another_shape_or_truncated_raise_naming_the_file(setup, tmp_path):
    config, kg, model = setup
    _finished_base(str(tmp_path), model, entity=np.zeros((160, 8), np.float32))
    path = os.path.join(str(tmp_path), "params.npz")
    with pytest.raises(ValueError, match=rf"{re.escape(path)}: holds arrays .*expects"):
        train_base_model(config, kg, model, str(tmp_path))
    _finished_base(str(tmp_path), model)
    with open(path, "rb") as f:
        head = f.read(200)
    with open(path, "wb") as f:
        f.write(head)
    with pytest.raises(ValueError, match=rf"{re.escape(path)}: cannot read the saved parameters"):
        train_base_model(config, kg, model, str(tmp_path))


def test_non_finite_analogy_params_raise_naming_the_file(setup, tmp_path):
    config, kg, model = setup
    base = {k: np.asarray(v) for k, v in model.init(jax.random.PRNGKey(0)).items()}
    ank = {k: np.asarray(v).copy() for k, v in init_analogy(model, jax.random.PRNGKey(1)).items()}
    ank["trans_matrix"][0, 0] = np.nan
    np.savez(tmp_path / "analogy_params.npz", **ank)
    path = str(tmp_path / "analogy_params.npz")
    with pytest.raises(
        ValueError, match=rf"{re.escape(path)}: array 'trans_matrix' .* 1 non-finite"
    ):
        train_ankge(
            AnKGEOptions(**config.ankge),
            kg,
            model,
            base,
            str(tmp_path),
            seed=0,
            chunks=eval_chunks(config),
        )


def test_load_params_checks_names(setup, tmp_path):
    _, _, model = setup
    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    np.savez(tmp_path / "p.npz", entity=np.zeros((160, 32), np.float32))
    with pytest.raises(ValueError, match=r"p.npz: holds arrays \{'entity'"):
        train_lib.load_params(str(tmp_path / "p.npz"), expected)


def test_a_cached_retrieval_with_ids_outside_the_graph_raises(setup, tmp_path):
    _, kg, model = setup
    sizes = retriever.RetrievalSizes(1, 1, 2, 4, 2)
    n = 6
    found = retriever.Retrieval(
        entity=np.zeros((n, 1), np.int32),
        relation=np.full((n, 1), model.num_relations, np.int32),  # one past the last relation
        triple_entity=np.zeros((n, 2), np.int32),
        triple_relation=np.zeros((n, 2), np.int32),
    )
    path = str(tmp_path / "retrieval.npz")
    found.save(path)
    triples = np.zeros((n, 3), np.int32)
    params = model.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=rf"{re.escape(path)}: cached relation ids span \[8, 8\]"):
        retriever.cached_retrieve(path, model, params, triples, sizes)
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match=rf"{re.escape(path)}: cannot read the cached retrieval"):
        retriever.cached_retrieve(path, model, params, triples, sizes)


def test_an_empty_test_split_is_an_error_naming_the_file(setup, tmp_path):
    config, kg, _ = setup
    write_kg(kg, str(tmp_path))
    open(tmp_path / "test.txt", "w").close()
    config = config.copy_and_resolve_references()
    config.data_dir = str(tmp_path)
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'test.txt'))}: no triples"):
        load_data(config)
