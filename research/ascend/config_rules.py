"""`validate_config`: the rules an ascend config must meet, checked before any work (one
ValueError naming the field, its value and the rule)."""

from __future__ import annotations

import ml_collections

from models.diffusion_vit import CONDITIONINGS
from research.ascend import diffusion
from research.ascend.data import SOURCES
from research.ascend.method import BACKBONES
from research.training import config_checks as checks


def backbone_names(config: ml_collections.ConfigDict) -> list[str]:
    """The backbones to compare (`config.backbones`, comma-separated names of BACKBONES)."""
    return checks.name_list(config, "backbones", BACKBONES)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for the first rule `config` breaks."""
    m, ev = config.model, config.eval
    checks.positive(config, ["num_seeds", "checkpoint_every", "log_every", "prefetch"])
    checks.non_negative(config, ["seed", "data.image_size", "data.max_train"])
    checks.one_of(config, "data.source", SOURCES)
    checks.data_dir(config, name="data.data_dir", uses_files=config.data.source != "digits")
    names = backbone_names(config)
    checks.one_of(config, "model.conditioning", CONDITIONINGS)
    checks.positive(
        config,
        ["model.patch_size", "model.hidden_dim", "model.num_heads", "model.mlp_ratio"]
        + ["model.unet_channels", "model.unet_num_res_blocks", "model.unet_num_groups"],
    )
    if m.hidden_dim % m.num_heads:
        raise checks.fail(
            "model.hidden_dim", m.hidden_dim, f"must be divisible by num_heads {m.num_heads}"
        )
    if m.depth < 3 or m.depth % 2 == 0:
        raise checks.fail(
            "model.depth", m.depth, "must be odd and >= 3 (encoder + middle + decoder)"
        )
    if "ascend" in names and not 1 <= m.ascend_decoder_depth < (m.depth - 1) // 2:
        raise checks.fail(
            "model.ascend_decoder_depth",
            m.ascend_decoder_depth,
            f"ASCEND's decoder must be shallower than its encoder: 1..{(m.depth - 1) // 2 - 1} "
            f"for depth {m.depth}",
        )
    checks.fraction(config, ["model.unet_dropout", "diffusion.label_dropout"])
    checks.one_of(config, "diffusion.schedule", diffusion.SCHEDULES)
    checks.positive(config, ["diffusion.num_steps", "train.batch_size", "train.steps", "train.lr"])
    checks.non_negative(config, ["train.weight_decay", "train.warmup_steps", "train.clip_norm"])
    checks.fraction(config, ["train.b1", "train.b2", "train.ema_decay"])
    checks.divisible_by_devices(config, "train.batch_size")
    checks.one_of(config, "sampler.kind", diffusion.SAMPLERS)
    checks.one_of(config, "sampler.variance", ("small", "large"))
    checks.positive(config, ["sampler.steps"])
    checks.non_negative(config, ["sampler.eta", "sampler.guidance_scale"])
    if config.sampler.guidance_scale != 1.0 and not config.diffusion.class_conditional:
        raise checks.fail(
            "sampler.guidance_scale",
            config.sampler.guidance_scale,
            "guidance needs a class-conditional model (diffusion.class_conditional=True)",
        )
    checks.positive(
        config,
        ["eval.num_samples", "eval.batch_size", "eval.num_reference", "eval.nearest_k"]
        + ["eval.classifier_steps", "eval.feature_dim", "eval.grid_size"],
    )
    if ev.nearest_k >= ev.num_samples:
        raise checks.fail("eval.nearest_k", ev.nearest_k, "must be below eval.num_samples")
    if ev.num_reference < ev.num_samples:
        raise checks.fail(
            "eval.num_reference",
            ev.num_reference,
            "must be >= eval.num_samples (precision / "
            "recall compare equal numbers of real and generated images)",
        )
