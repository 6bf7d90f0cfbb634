"""research/bifeat/config_rules.py: `validate_config` rejects bad values with one ValueError
naming the field, its value and the rule; the binary turns it into one stderr line; the config
file's PRESETS describes every preset."""

import os
import re

import pytest

from experiments.configs.bifeat import get_config
from research.bifeat.config_rules import validate_config
from tests.binaries import assert_one_error_line, run_binary
from tests.conftest import SHARED_DATA


def _escape(text):
    return re.escape(text)


def test_presets_pass():
    validate_config(get_config("tiny"))
    if os.path.isdir(os.path.join(SHARED_DATA, "planetoid")):
        validate_config(get_config("small"))
        validate_config(get_config("edge_drop"))
    if not os.path.isdir(os.path.join(SHARED_DATA, "ogb")):  # not shipped here
        with pytest.raises(ValueError, match=_escape("config.data_dir = '../shared/data/ogb'")):
            validate_config(get_config("paper"))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("train.batch_size", 0, "config.train.batch_size = 0: must be > 0"),
        ("train.batch_size", 66, "config.train.batch_size = 66: must be divisible by the 4"),
        ("train.epochs", 0, "config.train.epochs = 0: must be > 0"),
        ("train.lr", -0.01, "config.train.lr = -0.01: must be > 0"),
        ("train.lr", 0.0, "config.train.lr = 0.0: must be > 0"),
        ("train.lr_decay", 1.5, "config.train.lr_decay = 1.5: must be in (0, 1]"),
        ("train.weight_decay", -1e-4, "config.train.weight_decay = -0.0001: must be >= 0"),
        ("train.fanouts", (0, 6), "config.train.fanouts = (0, 6): must be positive integers"),
        ("train.fanouts", (-4, 6), "config.train.fanouts = (-4, 6): must be positive integers"),
        ("train.fanouts", (4, 4, 4), "config.train.fanouts = (4, 4, 4): must have one entry per"),
        ("train.capacity_margin", 0.5, "config.train.capacity_margin = 0.5: must be >= 1"),
        ("train.calibrate_batches", -1, "config.train.calibrate_batches = -1: must be >= 0"),
        ("train.prefetch", 0, "config.train.prefetch = 0: must be > 0"),
        ("model.hidden", 0, "config.model.hidden = 0: must be > 0"),
        ("model.hidden", -32, "config.model.hidden = -32: must be > 0"),
        ("model.num_layers", 0, "config.model.num_layers = 0: must be > 0"),
        ("model.num_heads", 0, "config.model.num_heads = 0: must be > 0"),
        ("model.dropout", 1.5, "config.model.dropout = 1.5: must be in [0, 1)"),
        ("model.dropout", 1.0, "config.model.dropout = 1.0: must be in [0, 1)"),
        ("model.input_dropout", -0.1, "config.model.input_dropout = -0.1: must be in [0, 1)"),
        ("model.name", "gcn", "config.model.name = 'gcn': must be one of sage, gat"),
        ("num_seeds", 0, "config.num_seeds = 0: must be > 0"),
        ("seed", -1, "config.seed = -1: must be >= 0"),
        ("experiment", "ablation", "config.experiment = 'ablation': must be one of"),
        ("schemes", "float32,sq3", "config.schemes = 'float32,sq3': scheme 'sq3': sq bits"),
        ("schemes", "float32,fp16", "config.schemes = 'float32,fp16': unknown feature store"),
        ("schemes", "", "config.schemes = '': schemes must be a non-empty list"),
        ("cache_fraction", 1.5, "config.cache_fraction = 1.5: must be in [0, 1]"),
        ("gather_impl", "triton", "config.gather_impl = 'triton': must be one of auto"),
        ("feature_norm", "zscore", "config.feature_norm = 'zscore': must be one of none"),
        ("log_every", 0, "config.log_every = 0: must be > 0"),
        ("checkpoint_every_epochs", 0, "config.checkpoint_every_epochs = 0: must be > 0"),
        ("eval.mode", "exact", "config.eval.mode = 'exact': must be one of full, sampled"),
        ("eval.select", "best_test", "config.eval.select = 'best_test': must be one of"),
        ("eval.every_epochs", 0, "config.eval.every_epochs = 0: must be > 0"),
        ("eval.batch_size", 0, "config.eval.batch_size = 0: must be > 0"),
        ("quant.vq_max_iters", 0, "config.quant.vq_max_iters = 0: must be > 0"),
        ("quant.sample_rows", -5, "config.quant.sample_rows = -5: must be >= 0"),
        ("data.name", "imagenet", "config.data.name = 'imagenet': must be synthetic, cora"),
        ("data.sampler", "gpu", "config.data.sampler = 'gpu': must be one of host, device"),
        ("data.sampler", "device", "config.data.sampler = 'device': the device sampler needs"),
        ("data.synthetic.num_nodes", 0, "config.data.synthetic.num_nodes = 0: must be > 0"),
        ("data.synthetic.homophily", 2.0, "config.data.synthetic.homophily = 2.0: must be in"),
        ("data.synthetic.power_law_exponent", 1.0, "power_law_exponent = 1.0: must be > 1"),
        ("data.synthetic.split_fractions", (0.5, 0.5, 0.5), "each in [0, 1] and sum to"),
    ],
)
def test_bad_values_name_the_field(field, value, message):
    config = get_config("tiny")
    config.update_from_flattened_dict({field: value})  # as --config.<field>=<value> would
    with pytest.raises(ValueError, match=_escape(message)):
        validate_config(config)


def test_edge_drop_and_sampled_eval_rules():
    config = get_config("tiny")
    config.experiment = "edge_drop"
    config.edge_drop.modes = "random,hub"
    with pytest.raises(ValueError, match=_escape("config.edge_drop.modes = 'random,hub'")):
        validate_config(config)
    config.edge_drop.modes = "degree"
    config.edge_drop.fractions = (0.5, 1.2)
    with pytest.raises(ValueError, match=_escape("config.edge_drop.fractions = (0.5, 1.2)")):
        validate_config(config)
    config = get_config("tiny")
    config.eval.mode = "sampled"
    config.eval.batch_size = 1026
    with pytest.raises(ValueError, match=_escape("config.eval.batch_size = 1026: must be div")):
        validate_config(config)
    config.eval.batch_size = 1024
    config.eval.fanouts = (4,)
    with pytest.raises(ValueError, match=_escape("config.eval.fanouts = (4,): must have one")):
        validate_config(config)
    config.eval.fanouts = (4, 8)
    validate_config(config)


def test_device_sampler_with_device_stores_passes():
    config = get_config("tiny")
    config.data.sampler = "device"
    config.schemes = "float32-device,sq1,sq2+cache"
    validate_config(config)


def test_data_dir_only_for_data_sets_that_read_files(tmp_path):
    config = get_config("tiny")
    config.data_dir = str(tmp_path)
    with pytest.raises(ValueError, match="config.data_dir = .*synthetic or bundled"):
        validate_config(config)
    config.data.name = "cora"
    validate_config(config)  # the folder exists; the loader names a missing file
    config.data_dir = ""
    with pytest.raises(ValueError, match="config.data_dir = '': .*reads files"):
        validate_config(config)
    config.data_dir = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="config.data_dir = .*missing'?: no such folder"):
        validate_config(config)


def test_binary_reports_a_bad_value_in_one_line(tmp_path):
    proc = run_binary(
        "experiments.bifeat", "--config=experiments/configs/bifeat.py:tiny",
        f"--workdir={tmp_path / 'w'}", "--config.model.hidden=0",
    )  # fmt: skip
    assert_one_error_line(proc, "config.model.hidden = 0: must be > 0")
    assert not os.path.exists(tmp_path / "w" / "runs")  # rejected before any work
