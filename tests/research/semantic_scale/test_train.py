"""The data versions, the config rules and the `tiny` preset end to end."""

import json
import os

import numpy as np
import pytest

from experiments.configs.semantic_scale import get_config
from research.semantic_scale import data, train
from research.semantic_scale.config_rules import validate_config


def test_a_batchs_rows_built_apart_join_into_the_whole_batch():
    """Each process builds its rows only, with the whole batch's crops and flips: rows
    [0, 16) and [16, 64) (as uneven processes would hold) join into the whole batch, bit for bit,
    and this process (the only one) builds all the rows."""
    config = get_config("tiny")
    split = data.make_split(data.load_full(config, "digits"), "digits", 10.0, config)
    split.flip = True  # digits are not flipped in training; the rows must be flipped alike
    whole = train.make_batch_fn(config, split, seed=1)(9)
    parts = [train.make_batch_fn(config, split, seed=1, rows=rows)(9) for rows in
             (slice(0, 16), slice(16, 64))]  # fmt: skip
    assert whole["images"].shape[0] == config.train.batch_size == 64
    assert parts[0]["images"].shape[0] == 16
    for key in ("images", "labels"):
        joined = np.concatenate([p[key] for p in parts])
        np.testing.assert_array_equal(joined, whole[key], err_msg=key)


def test_long_tailed_and_balanced_versions_have_the_profile_counts():
    config = get_config("tiny")
    full = data.load_full(config, "digits")
    lt = data.make_split(full, "digits", 10.0, config)
    n_max = int(np.bincount(full.train_y).min())
    want = [int(n_max * 10.0 ** (-c / 9)) for c in range(10)]
    assert lt.counts.tolist() == want and lt.label == "digits-LT10"
    assert len(lt.test_y) == len(full.test_y)  # the held-out set stays balanced
    config.data.max_per_class = 1000  # a cap: digits' smallest class has fewer
    assert data.make_split(full, "digits", 10.0, config).counts.tolist() == want
    config.data.max_per_class = 50
    bal = data.make_split(full, "digits", 1.0, config)
    assert bal.counts.tolist() == [50] * 10 and bal.label == "digits-balanced"
    # The subset seed picks the images; the same seed picks the same ones.
    again = data.make_split(full, "digits", 1.0, config)
    np.testing.assert_array_equal(bal.train_x, again.train_x)
    config.data.subset_seed = 1
    assert not np.array_equal(bal.train_x, data.make_split(full, "digits", 1.0, config).train_x)
    groups = data.shot_groups(np.array([500, 100, 50, 20, 19]), 100, 20)
    assert groups["many"].tolist() == [True, False, False, False, False]
    assert groups["medium"].tolist() == [False, True, True, True, False]
    assert groups["few"].tolist() == [False, False, False, False, True]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("methods", "ce,nope", "config.methods = 'ce,nope': give comma-separated names"),
        ("datasets", "digits,svhn", "config.datasets"),
        ("imbalance_factors", (100.0, 0.5), "config.imbalance_factors"),
        ("train.decay_factors", (0.1,), "config.train.decay_factors"),
        ("loss.cb_beta", 1.0, "config.loss.cb_beta"),
        ("dsb.floor", 2.0, "config.dsb.floor"),
        ("data.mnist_dir", "../shared/data/images/mnist", "config.data.mnist_dir"),
        ("model.name", "vgg", "config.model.name"),
    ],
)
def test_config_rules_name_the_field(field, value, message):
    config = get_config("tiny")
    parent, _, leaf = field.rpartition(".")
    (config[parent] if parent else config)[leaf] = value
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_mnist_needs_its_folder():
    config = get_config("tiny")
    config.datasets = "mnist"
    with pytest.raises(ValueError, match="config.data.mnist_dir = ''"):
        validate_config(config)


@pytest.mark.slow
def test_tiny_preset_learns_and_writes_the_report(tmp_path):
    config = get_config("tiny")
    metrics = train.train_and_evaluate(config, str(tmp_path))
    for version in ("digits-LT10", "digits-balanced"):
        for method in ("ce", "ldam_drw", "dsb_ce"):
            assert metrics[f"{version}/{method}/top1_mean"] > 0.5, (version, method, metrics)
    assert np.isfinite(metrics["digits-balanced/ce/pearson_scale"])
    assert np.isnan(metrics["digits-balanced/ce/pearson_count"])  # equal counts
    run = tmp_path / "runs" / "digits" / "digits-LT10" / "dsb_ce" / "seed0"
    result = json.load(open(run / "result.json"))
    assert len(result["class_accuracy"]) == len(result["scales"]) == 10
    assert np.mean(result["final_scale_weights"]) == pytest.approx(1.0, rel=1e-4)
    assert not os.path.exists(run / "checkpoints")
    md = open(tmp_path / "results.md").read()
    assert "DSB-CE against the baselines" in md and "r(acc, S)" in md
    for name in ("top1_digits.png", "scatter_digits.png", "marginal_digits.png"):
        assert os.path.getsize(tmp_path / name) > 1000, name
    again = train.train_and_evaluate(config, str(tmp_path))  # finished runs are read back
    assert again["digits-LT10/dsb_ce/top1_mean"] == metrics["digits-LT10/dsb_ce/top1_mean"]


def test_cifar10_folder_and_mnist_files_load_into_versions(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c in range(3):
            folder = tmp_path / "cifar" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    config = get_config("cifar10_lt")
    config.data.cifar10_dir = str(tmp_path / "cifar")
    validate_config(config)
    full = data.load_full(config, "cifar10")
    assert full.train_x.shape == (18, 32, 32, 3) and full.test_x.shape == (6, 32, 32, 3)
    lt = data.make_split(full, "cifar10", 6.0, config)
    assert lt.counts.tolist() == [6, int(6 * 6.0**-0.5), 1] and (lt.pad, lt.flip) == (4, True)
    assert len(full.mean) == 3
