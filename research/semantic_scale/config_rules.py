"""`validate_config`: the rules a semantic_scale config must meet, checked before any work (one
ValueError naming the field, its value and the rule)."""

from __future__ import annotations

from typing import Any

import jax

from models.classifiers import CLASSIFIERS
from research.semantic_scale import data, steps
from research.training import config_checks as checks


def method_list(config: Any) -> list[str]:
    """The method names of the comma-separated `config.methods` (steps.METHODS)."""
    return checks.name_list(config, "methods", steps.METHODS)


def dataset_list(config: Any) -> list[str]:
    """The data set names of the comma-separated `config.datasets`."""
    return checks.name_list(config, "datasets", data.DATASETS)


def validate_config(config: Any) -> None:
    """Raises ValueError for the first rule `config` breaks."""
    method_list(config)
    names = dataset_list(config)
    for name, field in data.DATA_DIR_FIELD.items():
        checks.data_dir(config, name=field, uses_files=name in names)
    checks.non_negative(config, ["seed", "data.max_per_class", "data.subset_seed"])
    checks.positive(
        config, ["num_seeds", "checkpoint_every_epochs", "log_every", "eval.batch_size"]
    )
    factors = config.imbalance_factors
    if not factors or any(
        isinstance(f, bool) or not isinstance(f, (int, float)) or f < 1 for f in factors
    ):
        raise checks.fail(
            "imbalance_factors", factors, "give numbers >= 1 (1: the sample-balanced version)"
        )
    checks.one_of(config, "model.name", CLASSIFIERS)
    checks.positive(config, ["model.feature_dim"])
    t = config.train
    checks.positive(config, ["train.batch_size", "train.epochs", "train.lr"])
    checks.non_negative(
        config, ["train.weight_decay", "train.warmup_epochs", "train.reweight_epoch"]
    )
    checks.fraction(config, ["train.momentum"])
    # over every process's devices (the local ones in a single process)
    checks.divisible_by_devices(config, "train.batch_size", jax.device_count())
    if len(t.decay_epochs) != len(t.decay_factors):
        raise checks.fail(
            "train.decay_factors", t.decay_factors, "need one factor per train.decay_epochs entry"
        )
    if list(t.decay_epochs) != sorted(t.decay_epochs):
        raise checks.fail("train.decay_epochs", t.decay_epochs, "must be increasing")
    checks.non_negative(config, ["loss.focal_gamma", "loss.ldam_max_margin", "loss.la_tau"])
    checks.positive(config, ["loss.ldam_scale"])
    if not 0 <= config.loss.cb_beta < 1:
        raise checks.fail("loss.cb_beta", config.loss.cb_beta, "must be in [0, 1)")
    checks.positive(config, ["dsb.pool_size", "dsb.every", "dsb.d", "dsb.floor"])
    checks.non_negative(config, ["dsb.alpha"])
    if config.dsb.floor > 1:
        raise checks.fail("dsb.floor", config.dsb.floor, "must be in (0, 1]")
    checks.positive(config, ["analysis.many_shot", "analysis.few_shot"])
