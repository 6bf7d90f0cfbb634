"""research/smmix/config_rules.py: a bad config value fails before any work with one error that
names the field; experiments/configs/smmix.py lists its presets in PRESETS."""

import os
import re

import pytest

from experiments.configs.smmix import get_config
from research.datasets.paths import resolve_data_dir
from research.smmix.config_rules import validate_config
from tests.binaries import assert_one_error_line, run_binary


@pytest.mark.parametrize("preset", ["tiny", "small", "small_lt"])
def test_the_cpu_presets_pass(preset):
    validate_config(get_config(preset))  # 4 fake devices in the tests
    validate_config(get_config(preset), num_devices=1)  # the binary on a plain CPU


@pytest.mark.parametrize("preset", ["cifar10", "cifar10_cpu"])
def test_the_cifar10_presets_pass_and_need_their_folder(preset):
    config = get_config(preset)
    config.data_dir = "../shared/data/images/cifar10"  # checked for existence: use a real one
    if not os.path.isdir(resolve_data_dir(config.data_dir)):
        pytest.skip("no ../shared/data/images/cifar10")
    validate_config(config)
    validate_config(config, num_devices=1)
    assert config.data.image_size // config.model.patch_size == 8  # 64 patch tokens
    config.data_dir = "../shared/data/images/no_such_cifar"
    with pytest.raises(ValueError, match="no_such_cifar"):
        validate_config(config)


def test_a_streamed_folder_cannot_limit_its_evaluation_images(tmp_path):
    config = get_config("cifar10_cpu")
    config.data_dir, config.data.in_memory = str(tmp_path), False
    with pytest.raises(ValueError, match="config.data.eval_per_class = 50: needs"):
        validate_config(config)


def test_the_paper_preset_needs_its_imagenet_folder(tmp_path):
    config = get_config("paper")
    with pytest.raises(ValueError, match="config.data_dir = '../shared/data/imagenet': no such"):
        validate_config(config)
    config.data_dir = str(tmp_path)
    validate_config(config, num_devices=8)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("train.batch_size", 0, "config.train.batch_size = 0: must be > 0"),
        ("train.batch_size", -8, "config.train.batch_size = -8: must be > 0"),
        ("train.epochs", 0, "config.train.epochs = 0: must be > 0"),
        ("data.train_per_class", -1, "config.data.train_per_class = -1: must be >= 0"),
        ("train.base_lr", -1e-3, "config.train.base_lr = -0.001: must be > 0"),
        ("train.warmup_epochs", -1.0, "config.train.warmup_epochs = -1.0: must be >= 0"),
        ("train.weight_decay", -0.05, "config.train.weight_decay = -0.05"),
        ("train.ema_decay", 1.0, "config.train.ema_decay = 1.0: must be in \\[0, 1\\)"),
        ("model.depth", 0, "config.model.depth = 0: must be > 0"),
        ("model.hidden_dim", -48, "config.model.hidden_dim = -48: must be > 0"),
        ("model.num_heads", 0, "config.model.num_heads = 0: must be > 0"),
        ("model.hidden_dim", 33, "config.model.hidden_dim = 33: must be divisible by "
         "config.model.num_heads = 2"),
        ("model.patch_size", 0, "config.model.patch_size = 0: must be > 0"),
        ("model.patch_size", 3, "config.data.image_size = 16: must be a multiple of "
         "config.model.patch_size = 3"),
        ("model.size", "huge", "config.model.size = 'huge': must be one of"),
        ("model.drop_path", 1.0, "config.model.drop_path = 1.0"),
        ("num_seeds", 0, "config.num_seeds = 0: must be > 0"),
        ("steps_per_call", 0, "config.steps_per_call = 0: must be > 0"),
        ("eval.batch_size", 0, "config.eval.batch_size = 0: must be > 0"),
        ("eval.every_epochs", 0, "config.eval.every_epochs = 0: must be > 0"),
        ("checkpoint_every_epochs", -1, "config.checkpoint_every_epochs = -1"),
        ("methods", "none,fmix", "config.methods='none,fmix': unknown method"),
        ("data.name", "cifar", "config.data.name = 'cifar': must be one of digits, folder"),
        ("data.image_size", 0, "config.data.image_size = 0: must be > 0"),
        ("data.test_fraction", 0.0, "config.data.test_fraction = 0.0: must be in \\(0, 1\\)"),
        ("data.imbalance_factor", 0.5, "config.data.imbalance_factor = 0.5: must be >= 1"),
        ("augment.pad", -2, "config.augment.pad = -2: must be >= 0"),
        ("augment.rand_augment_prob", 1.5, "config.augment.rand_augment_prob = 1.5"),
        ("mix.label_smoothing", 1.5, "config.mix.label_smoothing = 1.5: must be in \\[0, 1\\]"),
        ("mix.switch_prob", -0.1, "config.mix.switch_prob = -0.1"),
        ("mix.mixup_alpha", 0.0, "config.mix.mixup_alpha = 0.0: must be > 0"),
        ("mix.cutmix_alpha", -1.0, "config.mix.cutmix_alpha = -1.0: must be > 0"),
        ("mix.min_side_ratio", 0.1, "config.mix.min_side_ratio = 0.1: .* sides 0..6 of the "
         "8-patch grid"),
        ("mix.fine_weight", -1.0, "config.mix.fine_weight = -1.0: must be >= 0"),
    ],
)  # fmt: skip
def test_a_bad_value_names_the_field(field, value, message):
    config = get_config("tiny")
    config.update_from_flattened_dict({field: value})  # as --config.<field>=<value> would
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_the_global_batch_must_split_into_even_per_device_batches():
    config = get_config("tiny")
    config.train.batch_size = 62
    with pytest.raises(ValueError, match="config.train.batch_size = 62: .* the 4 devices"):
        validate_config(config)
    config.train.batch_size = 12  # 3 per device: image i has no partner B-1-i of its own
    with pytest.raises(ValueError, match="config.train.batch_size = 12: .*even per-device"):
        validate_config(config)
    validate_config(config, num_devices=2)  # 6 per device
    config.train.batch_size = 63
    with pytest.raises(ValueError, match="config.train.batch_size = 63: .*even per-device"):
        validate_config(config, num_devices=1)


def test_a_data_dir_is_given_exactly_for_the_folder_data_set(tmp_path):
    config = get_config("tiny")
    config.data_dir = str(tmp_path)  # digits are bundled: the folder would be ignored
    with pytest.raises(ValueError, match=f"config.data_dir = '{re.escape(str(tmp_path))}': "
                       ".*synthetic or bundled.*--config.data.name=folder"):  # fmt: skip
        validate_config(config)
    config.data.name = "folder"
    validate_config(config)
    config.data_dir = ""
    with pytest.raises(ValueError, match="config.data_dir = '': the chosen data set reads files"):
        validate_config(config)
    config.data_dir = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="config.data_dir = .*missing': no such folder"):
        validate_config(config)
    assert "data_dir" not in get_config("tiny").data  # one field name in every paper


def test_the_binary_rejects_a_bad_value_with_one_line(tmp_path):
    proc = run_binary(
        "experiments.smmix", "--config=experiments/configs/smmix.py:tiny",
        f"--workdir={tmp_path / 'w'}", "--config.train.batch_size=0",
    )  # fmt: skip
    line = assert_one_error_line(proc, "config.train.batch_size = 0: must be > 0")
    assert line == "smmix.py: error: ValueError: config.train.batch_size = 0: must be > 0"
    assert not (tmp_path / "w").exists()  # nothing was written
