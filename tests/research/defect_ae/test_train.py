"""The `tiny` preset end to end, the baseline, and the config rules."""

import os
import re

import jax
import numpy as np
import pytest

from experiments.configs.defect_ae import get_config
from research.defect_ae import evaluate, fit, losses
from research.defect_ae.config_rules import validate_config
from research.defect_ae.train import load_data, train_and_evaluate
from research.training.results import read_results


@pytest.mark.slow
def test_tiny_preset_end_to_end(tmp_path):
    workdir = str(tmp_path)
    config = get_config("tiny")
    metrics = train_and_evaluate(config, workdir)
    for detector in ("pixel_gaussian", "ae_l2", "ae_ssim_l1"):
        for metric in ("image_auroc_max", "pixel_auroc", "pro", "f1"):
            value = metrics[f"{detector}/{metric}"]
            assert 0.0 <= value <= 1.0, (detector, metric)
    # The planted defects are visible: the trained detector finds them far above chance.
    assert metrics["ae_ssim_l1/pixel_auroc"] > 0.9
    assert metrics["ae_ssim_l1/image_auroc_max"] > 0.8
    assert metrics["ae_ssim_l1/num_params"] > 1000 and metrics["ae_ssim_l1/images_per_s"] > 0
    assert read_results(workdir) == pytest.approx(metrics)
    for name in ("results.md", "detections_ssim_l1.png", "runs/l2/seed0/result.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "results.md")) as f:
        text = f.read()
    assert "| ae_ssim_l1 |" in text and "| pixel_gaussian |" in text and "spot" in text
    # A re-run reads every finished result back.
    assert train_and_evaluate(config, workdir) == pytest.approx(metrics)


def test_splits_keep_defects_out_of_training():
    data = load_data(get_config("tiny"))
    assert (data.train.labels == 0).all() and (data.val.labels == 0).all()
    assert not data.train.masks.any()
    assert (data.test.labels > 0).sum() == get_config("tiny").data.num_defective
    assert len(set(data.train.paths) & set(data.test.paths)) <= 1  # synthetic paths are ""


def test_pixel_gaussian_residual_is_the_per_pixel_z_score():
    rng = np.random.default_rng(0)
    train = rng.uniform(size=(20, 8, 8, 1)).astype(np.float32)
    x = rng.uniform(size=(3, 8, 8, 1)).astype(np.float32)
    expected = np.abs(x - train.mean(0)) / np.maximum(train.std(0), 1e-2)
    got = evaluate.pixel_gaussian_residuals(train, x)
    np.testing.assert_allclose(got, expected[..., 0], rtol=1e-5)


@pytest.mark.parametrize("name", ["l2", "ssim_l1"])
@pytest.mark.parametrize("ssim_crop", [True, False])
def test_the_training_loss_is_the_configured_loss(name, ssim_crop):
    model = fit.make_model(fit.ModelOptions(widths=(4,), bottleneck=2), 1)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 1))
    params = model.init(jax.random.PRNGKey(1), x)
    opts = fit.TrainOptions(loss=name, l1_weight=0.5, ssim_crop=ssim_crop)
    loss, _ = fit.make_loss_fn(model, opts)(params, {"x": x}, None)
    expected = losses.reconstruction_loss(
        name, x, model.apply(params, x), l1_weight=0.5, ssim_crop=ssim_crop
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("losses", "l2,bogus", "comma-separated names"),
        ("data.source", "bogus", "must be one of"),
        ("data.data_dir", "/x", "reads no folder"),
        ("data.test_fraction", 0.9, "must leave defect-free training images"),
        ("model.widths", (16, 0), "positive integers"),
        ("train.patch_size", 36, "divisible by 2^len(model.widths) = 8"),
        ("train.patch_size", 128, "must be <= data.image_size"),
        ("train.lr", 0.0, "must be > 0"),
        ("inspect.residual", "l2", "must be one of"),
        ("inspect.percentile", 0.0, "must be in (0, 100]"),
    ],
)
def test_config_rules_name_the_field(field, value, message):
    config = get_config("tiny")
    config.update_from_flattened_dict({field: value})  # as --config.<field>=<value> would
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        validate_config(config)
    assert str(err.value).startswith("config.")
    validate_config(get_config("small"))
