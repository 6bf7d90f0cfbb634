"""`validate_config`: the rules a MoM-GAN config must meet, checked before any work (one
ValueError naming the field, its value and the rule)."""

from __future__ import annotations

import jax
import ml_collections

from research.mom_gan import contamination, estimators, gan, methods, objectives
from research.training import config_checks as checks


def _check_gan(config: ml_collections.ConfigDict, method: str) -> None:
    prefix = f"gans.{method}"
    if method not in config.gans:
        raise checks.fail("methods", config.methods, f"{method!r} has no config.gans.{method}")
    g = config.gans[method]
    checks.positive(config, [f"{prefix}.{f}" for f in ("batch_size", "epochs", "d_steps")])
    checks.positive(config, [f"{prefix}.lr_d", f"{prefix}.lr_g"])
    # A fit trains on one device per process (gan.one_device_per_process_mesh).
    checks.divisible_by_devices(config, f"{prefix}.batch_size", jax.process_count())
    checks.non_negative(
        config, [f"{prefix}.{f}" for f in ("clip", "gp_weight", "avg_epochs", "num_blocks")]
    )
    checks.one_of(config, f"{prefix}.objective", objectives.OBJECTIVES)
    checks.one_of(config, f"{prefix}.generator", gan.GENERATORS)
    checks.one_of(config, f"{prefix}.optimizer", gan.OPTIMIZERS)
    checks.one_of(config, f"{prefix}.init", gan.INITS)
    if g.avg_epochs > g.epochs:
        raise checks.fail(f"{prefix}.avg_epochs", g.avg_epochs, f"must be <= epochs ({g.epochs})")
    if g.num_blocks > g.batch_size:
        raise checks.fail(
            f"{prefix}.num_blocks", g.num_blocks, f"must be <= batch_size ({g.batch_size})"
        )
    if g.batch_size * g.d_steps > config.num_train:
        raise checks.fail(
            f"{prefix}.batch_size",
            g.batch_size,
            f"x d_steps ({g.d_steps}) must be <= num_train ({config.num_train}): one generator "
            "iteration takes d_steps batches",
        )
    if g.objective == "js" and (g.clip or g.gp_weight):
        raise checks.fail(f"{prefix}.clip", g.clip, "clipping and gp_weight are for wasserstein")
    if g.objective == "wasserstein" and not (g.clip or g.gp_weight):
        raise checks.fail(
            f"{prefix}.clip", g.clip, "a Wasserstein critic needs clip > 0 or gp_weight > 0"
        )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for the first rule `config` breaks."""
    checks.positive(config, ["num_train", "num_eval", "num_seeds"])
    checks.non_negative(config, ["seed"])
    names = [m.strip() for m in config.methods.split(",") if m.strip()]
    if not names:
        raise checks.fail("methods", config.methods, "give comma-separated method names")
    for name in names:
        if name not in methods.METHODS and name not in config.gans:
            raise checks.fail(
                "methods", config.methods, f"{name!r} must be one of {', '.join(methods.METHODS)}"
            )
        if name not in estimators.CLASSICAL and name != methods.ORACLE:
            _check_gan(config, name)
    if not config.dims or any(not isinstance(d, int) or d < 1 for d in config.dims):
        raise checks.fail("dims", config.dims, "must be positive integers")
    if not config.eps_values or any(not 0 <= e < 0.5 for e in config.eps_values):
        raise checks.fail("eps_values", config.eps_values, "each must be in [0, 0.5)")
    checks.one_of(config, "contamination.clean", contamination.CLEAN)
    checks.one_of(config, "contamination.outliers", contamination.OUTLIERS)
    if config.contamination.clean == "mixture2d" and tuple(config.dims) != (2,):
        raise checks.fail("dims", config.dims, "the mixture2d clean distribution needs dims = (2,)")
