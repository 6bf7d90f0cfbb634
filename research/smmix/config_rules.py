"""`validate_config`: the rules an SMMix config must meet, checked before any work.

`experiments/smmix.py` passes it to `experiments.app.run`, so a bad value ends the run with one
line naming the field (`config.train.batch_size = 0: must be > 0`) instead of a traceback from
deep inside the schedule or the model; `train_and_evaluate` checks it too.
"""

from __future__ import annotations

from typing import Any

import jax

from models.vit import SIZES
from research.smmix import steps
from research.training import config_checks as checks

DATA_SETS = ("digits", "folder")  # config.data.name
SMMIX_KINDS = ("smmix", "smmix_only")  # steps.METHODS kinds that draw SMMix windows


def validate_config(config: Any, num_devices: int | None = None) -> None:
    """Raises ValueError naming the first field of `config` that breaks a rule.

    num_devices: the devices the global batch is split over (default: every process's).
    """
    num_devices = num_devices or jax.device_count()
    steps.parse_methods(config.methods)  # names config.methods and the known methods
    checks.non_negative(config, ["seed", "figure_images"])
    checks.positive(config, ["num_seeds", "steps_per_call", "checkpoint_every_epochs", "log_every"])
    _data(config)
    _model(config)
    _train(config, num_devices)
    _mix(config)
    checks.positive(config, ["eval.batch_size", "eval.every_epochs"])


def _data(config: Any) -> None:
    d = config.data
    checks.one_of(config, "data.name", DATA_SETS)
    try:
        checks.data_dir(config, uses_files=d.name == "folder")
    except ValueError as err:
        if d.name == "folder":
            raise
        raise ValueError(
            f"{err} (config.data.name = {d.name!r}; --config.data.name=folder reads an "
            "ImageFolder <data_dir>/<split>/<class>/*)"
        ) from None
    if d.name == "folder":
        for name in ("data.train_split", "data.eval_split"):
            if not checks.field(config, name):
                raise checks.fail(name, checks.field(config, name), "must name a sub-folder")
    checks.positive(config, ["data.image_size", "data.prefetch"])
    checks.non_negative(config, ["data.split_seed", "data.train_per_class", "data.eval_per_class"])
    if d.eval_per_class and d.name == "folder" and not d.in_memory:
        raise checks.fail(
            "data.eval_per_class",
            d.eval_per_class,
            "needs config.data.in_memory = True (a streamed evaluation folder is read whole)",
        )
    if not 0 < d.test_fraction < 1:
        raise checks.fail("data.test_fraction", d.test_fraction, "must be in (0, 1)")
    if not d.imbalance_factor >= 1:
        raise checks.fail("data.imbalance_factor", d.imbalance_factor, "must be >= 1 (1: balanced)")
    checks.non_negative(
        config,
        ["augment.pad", "augment.rand_augment_ops", "augment.rand_augment_magnitude",
         "augment.rand_augment_std"],
    )  # fmt: skip
    checks.fraction(config, ["augment.rand_augment_prob"])


def _model(config: Any) -> None:
    m = config.model
    checks.one_of(config, "model.size", tuple(SIZES))
    checks.positive(
        config,
        ["model.patch_size", "model.hidden_dim", "model.depth", "model.num_heads",
         "model.mlp_ratio"],
    )  # fmt: skip
    if not 0 <= m.drop_path < 1:
        raise checks.fail("model.drop_path", m.drop_path, "must be in [0, 1)")
    if config.data.image_size % m.patch_size:
        raise checks.fail(
            "data.image_size",
            config.data.image_size,
            f"must be a multiple of config.model.patch_size = {m.patch_size}",
        )
    if m.size == "mini" and m.hidden_dim % m.num_heads:
        raise checks.fail(
            "model.hidden_dim",
            m.hidden_dim,
            f"must be divisible by config.model.num_heads = {m.num_heads}",
        )


def _train(config: Any, num_devices: int) -> None:
    t = config.train
    checks.positive(config, ["train.batch_size", "train.epochs", "train.base_lr"])
    checks.non_negative(
        config,
        ["train.warmup_epochs", "train.warmup_lr", "train.min_lr", "train.weight_decay",
         "train.grad_clip"],
    )  # fmt: skip
    if not 0 <= t.ema_decay < 1:
        raise checks.fail("train.ema_decay", t.ema_decay, "must be in [0, 1) (0: no EMA)")
    checks.divisible_by_devices(config, "train.batch_size", num_devices)
    if (t.batch_size // num_devices) % 2:
        raise checks.fail(
            "train.batch_size",
            t.batch_size,
            f"must split into even per-device batches over the {num_devices} devices "
            "(mixing pairs image i with image B-1-i of each device's shard)",
        )


def _mix(config: Any) -> None:
    m = config.mix
    checks.fraction(config, ["mix.label_smoothing", "mix.switch_prob", "mix.cutmix_switch_prob"])
    checks.positive(config, ["mix.mixup_alpha", "mix.cutmix_alpha"])
    checks.non_negative(config, ["mix.fine_weight", "mix.consistency_weight"])
    kinds = {steps.METHODS[name][0] for name in steps.parse_methods(config.methods)}
    if kinds & set(SMMIX_KINDS):
        side = config.data.image_size // config.model.patch_size
        lo, hi = int(side * m.min_side_ratio), int(side * m.max_side_ratio)
        if not 1 <= lo <= hi <= side:
            raise checks.fail(
                "mix.min_side_ratio",
                m.min_side_ratio,
                f"with config.mix.max_side_ratio = {m.max_side_ratio} gives SMMix window "
                f"sides {lo}..{hi} of the {side}-patch grid; need 1 <= min <= max <= {side}",
            )
