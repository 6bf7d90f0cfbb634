"""Config validation (research/jko_iflow/config_rules.py), the presets list and the binary's
one-line error for a bad value."""

import numpy as np
import pytest
from PIL import Image

from experiments.configs import jko_iflow as configs
from research.jko_iflow.config_rules import validate_config
from tests.binaries import assert_one_error_line, run_binary


def _tiny(**fields):
    config = configs.get_config("tiny")
    for name, value in fields.items():
        *parents, leaf = name.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("jko.batch_size", 0, "config.jko.batch_size = 0: must be > 0"),
        ("jko.batch_size", 254, "config.jko.batch_size = 254: must be divisible by the 4 devices"),
        ("jko.batch_size", 8192, "config.jko.batch_size = 8192: must be <= config.num_train"),
        ("jko.iters_per_block", -1, "config.jko.iters_per_block = -1: must be > 0"),
        ("jko.num_blocks", 0, "config.jko.num_blocks = 0: must be > 0"),
        ("jko.lr", 0.0, "config.jko.lr = 0.0: must be > 0"),
        ("jko.h0", 0.0, "config.jko.h0 = 0.0: must be > 0"),
        ("jko.num_substeps", 0, "config.jko.num_substeps = 0: must be > 0"),
        ("jko.step_sizes", (1.0, -1.0), r"config.jko.step_sizes = \(1.0, -1.0\)"),
        ("jko.step_sizes", (1.0,), r"config.jko.step_sizes = \(1.0,\).*num_blocks = 2"),
        ("jko.divergence", "bogus", "config.jko.divergence = 'bogus': must be one of exact"),
        ("jko.reparam.eta", 1.5, r"config.jko.reparam.eta = 1.5: must be in \[0, 1\]"),
        ("jko.stop_tol", -0.1, "config.jko.stop_tol = -0.1: must be >= 0"),
        ("model.width", 0, "config.model.width = 0: must be > 0"),
        ("model.depth", -1, "config.model.depth = -1: must be > 0"),
        ("num_train", 0, "config.num_train = 0: must be > 0"),
        ("num_test", -5, "config.num_test = -5: must be > 0"),
        ("seed", -1, "config.seed = -1: must be >= 0"),
        ("time_budget_s", -1.0, "config.time_budget_s = -1.0: must be >= 0"),
        ("steps_per_call", 0, "config.steps_per_call = 0: must be > 0"),
        ("baseline.lr", -1e-3, "config.baseline.lr = -0.001: must be > 0"),
        ("eval.solver", "euler", "config.eval.solver = 'euler': must be one of rk4, dopri5"),
        ("eval.num_permutations", 0, "config.eval.num_permutations = 0: must be > 0"),
        ("densities", "8gaussians,nope", "config.densities = '8gaussians,nope': 'nope' must be"),
        ("densities", " , ", "config.densities = ' , ': give comma-separated density names"),
    ],
)
def test_a_bad_value_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        validate_config(_tiny(**{field: value}))


def test_data_dir_is_given_exactly_for_densities_that_read_files(tmp_path):
    validate_config(configs.get_config("tiny"))
    validate_config(configs.get_config("gaussian"))
    with pytest.raises(ValueError, match="config.data_dir = .*synthetic or bundled"):
        validate_config(_tiny(data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="config.data_dir = '': density rose reads rose.png"):
        validate_config(_tiny(densities="8gaussians,rose"))
    with pytest.raises(ValueError, match="no such folder"):
        validate_config(_tiny(densities="rose", data_dir=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match=r"rose\.png does not exist \(density rose reads it\)"):
        validate_config(_tiny(densities="rose", data_dir=str(tmp_path)))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "rose.png")
    validate_config(_tiny(densities="rose", data_dir=str(tmp_path)))
    # Tabular benchmarks read <data_dir>/<name>/{train,val,test}.npy from the same folder.
    with pytest.raises(ValueError, match=r"power/train\.npy does not exist"):
        validate_config(_tiny(densities="power", data_dir=str(tmp_path), num_train=0))
    small = configs.get_config("small")
    small.data_dir = str(tmp_path)
    with pytest.raises(ValueError, match=r"tree\.png does not exist"):
        validate_config(small)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "tree.png")
    validate_config(small)


def test_the_binary_rejects_a_bad_value_with_one_line(tmp_path):
    proc = run_binary(
        "experiments.jko_iflow", "--config=experiments/configs/jko_iflow.py:tiny",
        "--config.jko.batch_size=0", f"--workdir={tmp_path / 'w'}",
    )  # fmt: skip
    line = assert_one_error_line(proc, "config.jko.batch_size = 0: must be > 0")
    assert line == "jko_iflow.py: error: ValueError: config.jko.batch_size = 0: must be > 0"
    assert not (tmp_path / "w").exists()  # nothing was started
