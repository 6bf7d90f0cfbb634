"""The `tiny` preset end to end, and the config rules."""

import os

import pytest

from experiments.configs.mom_gan import get_config
from research.mom_gan.config_rules import validate_config
from research.mom_gan.train import train_and_evaluate
from research.training.errors import NonFiniteError
from research.training.results import read_results


@pytest.mark.slow
def test_tiny_preset_end_to_end(tmp_path):
    workdir = str(tmp_path)
    metrics = train_and_evaluate(get_config("tiny"), workdir)
    err = lambda eps, method: metrics[f"p2/eps{eps}/{method}/mean_error"]
    # Contamination at 5 * 1_p moves the sample mean by about eps * 5 * sqrt(2) = 1.4.
    assert 1.0 < err(0.2, "mean") < 1.8 and err(0.2, "inlier_mean") < 0.1
    assert err(0.2, "geo_median") < 0.5 * err(0.2, "mean")
    assert err(0.2, "robust_jsgan") < 0.5 * err(0.2, "mean")
    for method in ("gan", "mom_jsgan", "wgan", "mom_wgan", "mom_gan"):
        assert metrics[f"p2/eps0/{method}/sliced_w2"] < 1.0, method  # learned something
        assert metrics[f"p2/eps0/{method}/mmd"] >= 0.0
    assert read_results(workdir) == pytest.approx(metrics)
    for name in ("results.md", "mean_error_vs_eps.png", "runs/p2/eps0.2/mom_gan/seed0/result.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "results.md")) as f:
        assert "| mom_gan |" in f.read()


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("methods", "mean,bogus", "'bogus' must be one of"),
        ("eps_values", (0.0, 0.5), "each must be in"),
        ("dims", (0,), "must be positive integers"),
        ("gans.mom_gan.batch_size", 0, "must be > 0"),
        ("gans.mom_gan.num_blocks", 1000, "must be <= batch_size"),
        ("gans.mom_gan.clip", 0.0, "needs clip > 0 or gp_weight > 0"),
        ("gans.gan.clip", 0.01, "for wasserstein"),
        ("gans.wgan.avg_epochs", 100, "must be <= epochs"),
        ("contamination.outliers", "bogus", "must be one of"),
        ("num_train", 50, "must be <= num_train"),
    ],
)
def test_config_rules_name_the_field(field, value, message):
    config = get_config("tiny")
    config.update_from_flattened_dict({field: value})  # as --config.<field>=<value> would
    with pytest.raises(ValueError, match=message) as err:
        validate_config(config)
    assert str(err.value).startswith("config.")
    validate_config(get_config("small"))


def test_a_diverging_gan_is_recorded_left_out_of_the_mean_and_fails_the_run(tmp_path):
    config = get_config("tiny")
    config.methods = "mean,robust_jsgan"
    config.num_seeds = 2
    config.gans.robust_jsgan.lr_d = 1e38  # overflows to inf at once
    with pytest.raises(
        NonFiniteError, match=r"^4 of 8 fits diverged \(robust_jsgan p=2 eps=0 seed"
    ):
        train_and_evaluate(config, str(tmp_path))
    metrics = read_results(str(tmp_path))  # written before the error, plot included
    assert "p2/eps0.2/robust_jsgan/mean_error" not in metrics
    assert metrics["p2/eps0.2/mean/mean_error"] > 1.0
    assert os.path.exists(tmp_path / "mean_error_vs_eps.png")
    with open(tmp_path / "results.md") as f:
        assert "(2 of 2 diverged)" in f.read()
    with open(tmp_path / "runs/p2/eps0.2/robust_jsgan/seed0/result.json") as f:
        assert "the loss is" in f.read()
