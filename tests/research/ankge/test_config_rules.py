"""Config rules (validate_config before any work, check_against_graph before stage 1), the
PRESETS table, the FB15k-237 presets, and the binary's one-line error for a bad value."""

import os

import pytest

from experiments.configs import ankge as configs
from research.ankge.config_rules import check_against_graph, validate_config
from research.ankge.train import load_data, train_and_evaluate
from research.datasets.paths import resolve_data_dir
from tests.binaries import assert_one_error_line, run_binary


def tiny(**overrides):
    config = configs.get_config("tiny")
    for name, value in overrides.items():
        section, _, field = name.rpartition("__")
        (config[section] if section else config)[field] = value
    return config


@pytest.mark.parametrize("preset", list(configs.PRESETS))
def test_every_preset_passes_the_rules(preset):
    config = configs.get_config(preset)
    if config.data_dir and not os.path.isdir(resolve_data_dir(config.data_dir)):
        config.data_dir = ""  # data not shipped with this checkout: the rest still applies
    validate_config(config, num_devices=1)
    validate_config(config, num_devices=4)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"base__batch_size": 0}, r"config\.base\.batch_size = 0: must be > 0"),
        ({"base__batch_size": -4}, r"config\.base\.batch_size = -4: must be > 0"),
        ({"base__num_steps": 0}, r"config\.base\.num_steps = 0: must be > 0"),
        ({"base__num_negatives": 0}, r"config\.base\.num_negatives = 0: must be > 0"),
        ({"base__lr": -1e-3}, r"config\.base\.lr = -0\.001: must be > 0"),
        ({"base__lr": float("nan")}, r"config\.base\.lr = nan: must be finite"),
        ({"base__alpha_adv": -1.0}, r"config\.base\.alpha_adv = -1\.0: must be >= 0"),
        ({"base__negative_groups": -1}, r"config\.base\.negative_groups = -1: must be >= 0"),
        ({"model__dim": 0}, r"config\.model\.dim = 0: must be > 0"),
        ({"model__gamma": -6.0}, r"config\.model\.gamma = -6\.0: must be > 0"),
        ({"model__name": "complex"}, r"config\.model\.name = 'complex': must be one of transe"),
        ({"eval__query_chunk": 0}, r"config\.eval\.query_chunk = 0: must be > 0"),
        ({"eval__entity_chunk": -1}, r"config\.eval\.entity_chunk = -1: must be > 0"),
        ({"eval__valid_queries": -1}, r"config\.eval\.valid_queries = -1: must be >= 0"),
        ({"steps_per_call": 0}, r"config\.steps_per_call = 0: must be > 0"),
        ({"log_every": 0}, r"config\.log_every = 0: must be > 0"),
        ({"seed": -1}, r"config\.seed = -1: must be >= 0"),
        ({"synthetic__num_groups": 0}, r"config\.synthetic\.num_groups = 0: must be > 0"),
        ({"ankge__batch_size": 0}, r"config\.ankge\.batch_size = 0: must be > 0"),
        ({"ankge__num_steps": -5}, r"config\.ankge\.num_steps = -5: must be > 0"),
        ({"ankge__lr": 0.0}, r"config\.ankge\.lr = 0\.0: must be > 0"),
        ({"ankge__retrieval_chunk": 0}, r"config\.ankge\.retrieval_chunk = 0: must be > 0"),
        ({"ankge__triple_knn": 0}, r"config\.ankge\.triple_knn = 0: must be > 0"),
        ({"ankge__triple_ent_knn": 0}, r"config\.ankge\.triple_ent_knn = 0: must be > 0"),
        ({"ankge__ent_lambda": -0.1}, r"config\.ankge\.ent_lambda = -0\.1: must be >= 0"),
        ({"ankge__triple_knn": 61}, r"config\.ankge\.triple_knn = 61: must be <= the triple"),
        ({"ankge__lambda_grid": "0,x"}, r"config\.ankge\.lambda_grid = '0,x': lambda grid"),
        ({"ankge__lambda_grid": "0,-1"}, r"config\.ankge\.lambda_grid = '0,-1': every lambda"),
        ({"data_dir": "/no/such/kg"}, r"config\.data_dir = '/no/such/kg': no such folder"),
        # 128 / 4 devices = 32 positives per device, not a multiple of 5 groups
        ({"base__negative_groups": 5}, r"config\.base\.negative_groups = 5: must divide the"),
    ],
)
def test_bad_values_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        validate_config(tiny(**overrides), num_devices=4)


def test_batches_must_split_over_the_devices():
    with pytest.raises(ValueError, match=r"config\.base\.batch_size = 130: must be divisible by"):
        validate_config(tiny(base__batch_size=130), num_devices=4)
    with pytest.raises(ValueError, match=r"config\.ankge\.batch_size = 6: must be divisible by"):
        validate_config(tiny(ankge__batch_size=6), num_devices=4)


def test_retrieval_sizes_larger_than_the_graph_fail_before_stage_1(tmp_path):
    config = tiny(ankge__triple_rel_knn=9)  # the synthetic KG has 4 relations, 8 with reverses
    kg = load_data(config)
    with pytest.raises(ValueError, match=r"config\.ankge\.triple_rel_knn = 9: must be <= the 8"):
        check_against_graph(config, kg)
    with pytest.raises(ValueError, match=r"config\.ankge\.triple_ent_knn = 160: must be < the"):
        check_against_graph(tiny(ankge__triple_ent_knn=160), kg)
    with pytest.raises(ValueError, match=r"triple_rel_knn = 9"):
        train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "base")  # nothing trained
    check_against_graph(tiny(ankge__triple_rel_knn=9, ankge__enabled=False), kg)  # stage 1 only


def test_fb15k237_presets_follow_the_official_settings():
    small, wn_small = configs.get_config("fb15k237_rotate_small"), configs.get_config("small")
    for c in (small, configs.get_config("fb15k237_rotate")):
        assert c.data_dir == "../shared/data/kg/FB15k-237"
        assert (c.model.name, c.model.gamma, c.base.alpha_adv) == ("rotate", 9.0, 1.0)
        a = c.ankge
        assert (a.beta, a.ent_knn, a.rel_knn, a.triple_knn) == (1.0, 1, 1, 5)
        assert (a.triple_ent_knn, a.triple_rel_knn, a.regularization) == (1000, 40, 1e-7)
        assert (a.ent_lambda, a.rel_lambda, a.triple_lambda) == (0.01, 0.2, 0.05)
    for section, field in [
        ("model", "dim"),
        ("base", "batch_size"),
        ("base", "num_negatives"),
        ("base", "negative_groups"),
        ("base", "lr"),
        ("base", "num_steps"),
        ("ankge", "num_steps"),
        ("ankge", "lambda_grid"),
    ]:
        assert small[section][field] == wn_small[section][field], (section, field)
    full = configs.get_config("fb15k237_rotate")  # RotatE's best_config.sh for FB15k-237
    assert (full.model.dim, full.base.batch_size, full.base.num_negatives) == (1000, 1024, 256)
    assert (full.base.lr, full.base.num_steps, full.base.negative_groups) == (5e-5, 100_000, 0)


def test_binary_reports_a_bad_value_in_one_line(tmp_path):
    workdir = tmp_path / "w"
    proc = run_binary(
        "experiments.ankge", "--config=experiments/configs/ankge.py:tiny",
        f"--workdir={workdir}", "--config.base.batch_size=0",
    )  # fmt: skip
    assert_one_error_line(proc, "config.base.batch_size = 0: must be > 0")
    assert not os.path.exists(workdir / "base")


def test_lambda_settings_are_outside_the_run_identity():
    """A finished workdir may be re-run with other lambdas (stage 2 re-selects them on the
    trained analogy functions); every other stage-2 setting still belongs to the identity."""
    from research.training import identity  # research.ankge.train (imported) declares them

    config = configs.get_config("tiny")
    before = identity.fingerprint(identity.result_fields(config))
    config.ankge.lambda_grid = "0,0.1"
    config.ankge.triple_lambda = 0.3
    assert identity.fingerprint(identity.result_fields(config)) == before
    config.ankge.lr = 0.5
    assert identity.fingerprint(identity.result_fields(config)) != before
