"""The `tiny` preset end to end, the training batches, the data sources and the config rules."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from experiments.configs.ascend import get_config
from research.ascend.config_rules import validate_config
from research.ascend.data import DataOptions, load_images
from research.ascend.train import make_batch_fn, train_and_evaluate
from research.datasets.paths import resolve_data_dir
from research.training.results import read_results


@pytest.mark.slow
def test_tiny_preset_end_to_end(tmp_path):
    workdir = str(tmp_path)
    config = get_config("tiny")
    validate_config(config)
    metrics = train_and_evaluate(config, workdir)
    for name in ("vit", "iu_vit", "ascend", "unet"):
        assert metrics[f"{name}/fd"] > 0
        assert 0 <= metrics[f"{name}/precision"] <= 1 and 0 <= metrics[f"{name}/recall"] <= 1
        assert metrics[f"{name}/sampling_images_per_s"] > 0
        assert metrics[f"{name}/train_step_ms"] > 0
        with open(os.path.join(workdir, "runs", name, "seed0", "metrics.jsonl")) as f:
            losses = [json.loads(line)["loss"] for line in f if '"loss"' in line]
        assert losses[-1] < losses[0], losses  # it learns
        grid = Image.open(os.path.join(workdir, "runs", name, "seed0", "samples.png"))
        assert grid.size[0] > 4 * 16
    # held-out real images score far better than 40-step models: the metric separates them
    assert metrics["held_out/fd"] < 0.1 * min(metrics[f"{n}/fd"] for n in ("vit", "unet"))
    assert metrics["held_out/precision"] > 0.9
    assert read_results(workdir) == pytest.approx(metrics)
    for name in ("results.md", "fd.png", "samples.png", "classifier.msgpack"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert train_and_evaluate(config, workdir) == pytest.approx(metrics)  # read back


def test_training_batches_are_pure_in_the_step_and_flip_on_request():
    data = load_images(DataOptions(source="digits", image_size=8))
    batch_fn = make_batch_fn(data, 16, seed=3, random_flip=False)
    a, b = batch_fn(5), batch_fn(5)
    np.testing.assert_array_equal(a["images"], b["images"])
    assert not np.array_equal(a["images"], batch_fn(6)["images"])
    assert a["images"].shape == (16, 8, 8, 1) and a["labels"].shape == (16,)
    assert a["images"].min() >= -1 and a["images"].max() <= 1
    flipped = make_batch_fn(data, 16, seed=3, random_flip=True)(5)
    same = [np.array_equal(f, x) for f, x in zip(flipped["images"], a["images"], strict=True)]
    mirrored = [
        np.array_equal(f, x[:, ::-1]) for f, x in zip(flipped["images"], a["images"], strict=True)
    ]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and not all(same)


def _write_folder(root, split, per_class):
    for c, name in enumerate(("cat", "dog")):
        os.makedirs(os.path.join(root, split, name))
        for i in range(per_class):
            pixels = np.full((32, 32, 3), 40 * c + i, np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, split, name, f"{i:04d}.png"))


def test_cifar10_image_folders_load_in_signed_range(tmp_path):
    root = str(tmp_path / "cifar")
    _write_folder(root, "train", 3)
    _write_folder(root, "test", 2)
    data = load_images(
        DataOptions(source="cifar10", data_dir=root), cache_dir=str(tmp_path / "cache")
    )
    assert data.train_x.shape == (6, 32, 32, 3) and data.test_x.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(data.train_y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(data.train_x[4, 0, 0], 2 * 41 / 255 - 1, rtol=1e-6)
    assert data.num_classes == 2


def test_mnist_from_the_shared_folder_if_present():
    mnist = resolve_data_dir("../shared/data/images/mnist")
    if not os.path.isdir(mnist):
        pytest.skip("no shared MNIST here")
    data = load_images(DataOptions(source="mnist", data_dir=mnist, max_train=100))
    assert data.train_x.shape == (100, 28, 28, 1) and len(data.test_x) == 10000
    assert data.train_x.min() == -1.0 and data.train_x.max() == 1.0
    np.testing.assert_array_equal(data.train_y[:5], [5, 0, 4, 1, 9])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("backbones", "vit,resnet", "comma-separated names"),
        ("model.depth", 6, "odd"),
        ("model.ascend_decoder_depth", 2, "shallower"),
        ("model.hidden_dim", 30, "divisible by num_heads"),
        ("diffusion.schedule", "quadratic", "must be one of linear, cosine"),
        ("sampler.kind", "euler", "must be one of ddpm, ddim"),
        ("eval.num_reference", 10, "equal numbers"),
        ("data.data_dir", "/tmp", "synthetic or bundled"),
        ("train.batch_size", 0, "must be > 0"),
    ],
)
def test_config_rules_name_the_field(field, value, message):
    config = get_config("tiny")
    config.update_from_flattened_dict({field: value})  # as --config.<field>=<value> would
    with pytest.raises(ValueError, match=f"config.{field}") as err:
        validate_config(config)
    assert message in str(err.value)


def test_guidance_needs_a_conditional_model():
    config = get_config("tiny")
    config.diffusion.class_conditional = False
    with pytest.raises(ValueError, match="config.sampler.guidance_scale"):
        validate_config(config)
