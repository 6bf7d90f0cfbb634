"""Config validation (one ValueError naming field, value and rule) and the binary's --help."""

import subprocess
import sys

import ml_collections
import pytest

from research.training import config_checks as checks
from tests.conftest import REPO_ROOT
from tests.research.training import toy_regression as toy


def _config():
    c = ml_collections.ConfigDict()
    c.train = ml_collections.ConfigDict({"batch_size": 6, "lr": 0.1, "dropout": 0.5})
    c.data_dir = ""
    c.name = "sage"
    return c


@pytest.mark.parametrize(
    "check, value, message",
    [
        (lambda c: checks.positive(c, ["train.batch_size"]), 0, "config.train.batch_size = 0"),
        (lambda c: checks.positive(c, ["train.batch_size"]), -3, "must be > 0"),
        (lambda c: checks.non_negative(c, ["train.batch_size"]), -1, "must be >= 0"),
        (lambda c: checks.fraction(c, ["train.batch_size"]), 2, "must be in [0, 1]"),
        (lambda c: checks.divisible_by_devices(c, "train.batch_size", 4), 6, "the 4 devices"),
    ],
)
def test_rules_name_field_value_and_rule(check, value, message):
    config = _config()
    config.train.batch_size = value
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check(config)


def test_valid_configs_pass():
    config = _config()
    checks.positive(config, ["train.batch_size", "train.lr"])
    checks.fraction(config, ["train.dropout"])
    checks.divisible_by_devices(config, "train.batch_size", 2)
    checks.one_of(config, "name", ["sage", "gat"])
    checks.data_dir(config, uses_files=False)
    with pytest.raises(ValueError, match="config.name = 'gcn': must be one of sage, gat"):
        config.name = "gcn"
        checks.one_of(config, "name", ["sage", "gat"])


def test_name_lists():
    config = _config()
    config.name = " sage, gat ,"
    assert checks.name_list(config, "name", ["sage", "gat", "gcn"]) == ["sage", "gat"]
    for bad in ("sage,gin", "", " , "):
        config.name = bad
        with pytest.raises(ValueError, match="config.name = .*: give comma-separated names from"):
            checks.name_list(config, "name", ["sage", "gat"])


def test_a_data_folder_for_synthetic_data_is_an_error(tmp_path):
    config = _config()
    config.data_dir = str(tmp_path)
    checks.data_dir(config, uses_files=True)
    with pytest.raises(ValueError, match="synthetic or bundled"):
        checks.data_dir(config, uses_files=False)
    config.data_dir = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="no such folder"):
        checks.data_dir(config, uses_files=True)
    config.data_dir = ""
    with pytest.raises(ValueError, match="give their folder"):
        checks.data_dir(config, uses_files=True)


def test_help_lists_presets_and_fields():
    cmd = [sys.executable, "-m", toy.MODULE, f"--config={toy.CONFIG_FILE}:tiny", "--help"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "A tiny regression experiment" in out
    assert "tiny  40 steps of an 8-feature regression MLP" in out
    assert "  learning_rate = 0.05" in out and "  batch_size = 16" in out
    assert "--fresh" in out
