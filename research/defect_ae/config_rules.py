"""`validate_config`: the rules a defect_ae config must meet, checked before any work (one
ValueError naming the field, its value and the rule)."""

from __future__ import annotations

import ml_collections

from models.autoencoder import UPSAMPLES
from research.defect_ae import inspection, losses
from research.training import config_checks as checks

SOURCES = ("synthetic", "magnetic_tile", "mvtec")


def loss_list(config: ml_collections.ConfigDict) -> list[str]:
    """The loss names of the comma-separated `config.losses`."""
    return [n.strip() for n in config.losses.split(",") if n.strip()]


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for the first rule `config` breaks."""
    d, t, m, i = config.data, config.train, config.model, config.inspect
    checks.positive(config, ["num_seeds", "steps_per_call", "checkpoint_every", "log_every"])
    checks.non_negative(config, ["seed", "figure_images"])
    names = loss_list(config)
    if not names or any(n not in losses.LOSSES for n in names):
        raise checks.fail(
            "losses", config.losses, f"give comma-separated names from {', '.join(losses.LOSSES)}"
        )
    checks.one_of(config, "data.source", SOURCES)
    checks.data_dir(config, name="data.data_dir", uses_files=d.source != "synthetic")
    if d.source == "mvtec" and not d.category:
        raise checks.fail("data.category", d.category, "name the MVTec AD category (e.g. carpet)")
    checks.one_of(config, "data.channels", (1, 3))
    checks.positive(config, ["data.image_size", "data.val_fraction"])
    checks.fraction(config, ["data.val_fraction", "data.test_fraction"])
    if d.source != "mvtec" and d.val_fraction + d.test_fraction >= 1:
        raise checks.fail(
            "data.test_fraction",
            d.test_fraction,
            f"+ data.val_fraction ({d.val_fraction}) must leave defect-free training images",
        )
    if d.source == "synthetic":
        checks.positive(config, ["data.num_free", "data.num_defective"])
    checks.positive(config, ["model.bottleneck"])
    if not m.widths or any(not isinstance(w, int) or w < 1 for w in m.widths):
        raise checks.fail("model.widths", m.widths, "must be positive integers")
    checks.one_of(config, "model.upsample", UPSAMPLES)
    checks.positive(config, ["train.patch_size", "train.batch_size", "train.steps", "train.lr"])
    checks.non_negative(config, ["train.l1_weight", "inspect.l1_weight"])
    checks.divisible_by_devices(config, "train.batch_size")
    factor = 2 ** len(m.widths)
    if t.patch_size % factor:
        raise checks.fail(
            "train.patch_size", t.patch_size, f"must be divisible by 2^len(model.widths) = {factor}"
        )
    if t.patch_size > d.image_size:
        raise checks.fail(
            "train.patch_size", t.patch_size, f"must be <= data.image_size ({d.image_size})"
        )
    checks.one_of(config, "inspect.residual", inspection.RESIDUALS)
    if not 0 < i.percentile <= 100:
        raise checks.fail("inspect.percentile", i.percentile, "must be in (0, 100]")
    checks.non_negative(config, ["inspect.opening_radius", "inspect.min_area", "inspect.stride"])
