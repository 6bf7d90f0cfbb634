"""The rules an AnKGE config must satisfy, checked before any work (`validate_config`), and the
ones that need the loaded graph's sizes (`check_against_graph`, before stage 1 trains).

Each failure is one ValueError naming the field, its value and the rule, e.g.
`config.base.batch_size = 0: must be > 0`, instead of a traceback hours later (a retrieval size
larger than the graph used to fail only after stage 1 had trained).
"""

from __future__ import annotations

import math
from typing import Any

import jax

from models.kge import MODELS
from research.ankge import scoring, train_base
from research.datasets.kg import KG
from research.training import config_checks, identity

POSITIVE = (
    "model.dim",
    "model.gamma",
    "steps_per_call",
    "checkpoint_every",
    "log_every",
    "base.batch_size",
    "base.num_negatives",
    "base.lr",
    "base.num_steps",
    "base.decay",
    "eval.query_chunk",
    "eval.entity_chunk",
    "ankge.ent_knn",
    "ankge.rel_knn",
    "ankge.triple_knn",
    "ankge.triple_ent_knn",
    "ankge.triple_rel_knn",
    "ankge.retrieval_chunk",
    "ankge.batch_size",
    "ankge.lr",
    "ankge.num_steps",
    "ankge.steps_per_call",
    "ankge.log_every",
)
NON_NEGATIVE = (
    "seed",
    "base.alpha_adv",  # 0: uniform weights over the negatives
    "base.negative_groups",  # 0: every positive draws its own negatives
    "base.decay_at",  # > 1 moves the learning-rate step past the end
    "base.eval_every",  # 0: validation only at the end
    "eval.valid_queries",  # 0: all
    "ankge.beta",
    "ankge.alpha",
    "ankge.regularization",
    "ankge.ent_lambda",
    "ankge.rel_lambda",
    "ankge.triple_lambda",
    "ankge.lambda_valid_queries",  # 0: all
)
SYNTHETIC = ("synthetic.num_groups", "synthetic.group_size", "synthetic.num_relations")


def validate_config(config: Any, num_devices: int | None = None) -> None:
    """Raises ValueError naming the first field that breaks a rule (sizes, step counts, learning
    rates and chunks > 0; weights, temperatures and lambdas >= 0; every float finite; a known
    model; batches split over the devices, by default every process's (`jax.device_count()`:
    a run of several processes trains over all of them); an existing data folder; a parsable
    lambda grid)."""
    num_devices = num_devices or jax.device_count()
    for name, value in identity.flatten(config.to_dict()).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise config_checks.fail(name, value, "must be finite")
    config_checks.one_of(config, "model.name", MODELS)
    config_checks.one_of(config, "base.step_impl", train_base.STEP_IMPLS)
    config_checks.positive(config, POSITIVE)
    config_checks.non_negative(config, NON_NEGATIVE)
    # "" = the synthetic KG (`config.synthetic`); otherwise the folder must exist
    config_checks.data_dir(config, uses_files=bool(config.data_dir))
    if not config.data_dir:
        config_checks.positive(config, SYNTHETIC)
    config_checks.divisible_by_devices(config, "base.batch_size", num_devices)
    groups = config.base.negative_groups
    per_device = config.base.batch_size // num_devices
    if groups and per_device % groups:
        raise config_checks.fail(
            "base.negative_groups",
            groups,
            f"must divide the per-device batch (config.base.batch_size {config.base.batch_size} "
            f"/ {num_devices} devices = {per_device})",
        )
    config_checks.divisible_by_devices(config, "ankge.batch_size", num_devices)
    a = config.ankge
    if a.triple_knn > a.triple_ent_knn * a.triple_rel_knn:
        raise config_checks.fail(
            "ankge.triple_knn",
            a.triple_knn,
            f"must be <= the triple-level candidates config.ankge.triple_ent_knn x "
            f"triple_rel_knn = {a.triple_ent_knn} x {a.triple_rel_knn}",
        )
    if a.lambda_grid:
        try:
            grid = scoring.parse_lambda_grid(a.lambda_grid)
        except ValueError as err:
            raise config_checks.fail("ankge.lambda_grid", a.lambda_grid, str(err)) from None
        if not all(math.isfinite(x) and x >= 0 for t in grid for x in t):
            raise config_checks.fail(
                "ankge.lambda_grid", a.lambda_grid, "every lambda must be finite and >= 0"
            )


def check_against_graph(config: Any, kg: KG) -> None:
    """The rules that need the graph: retrieval sizes within its entities and relations (the
    triple level ranks `triple_ent_knn` entities other than the tail and `triple_rel_knn` of
    the 2R relations with reverses)."""
    a = config.ankge
    if not a.enabled:
        return
    num_entities, num_relations = kg.num_entities, 2 * kg.num_relations
    for name in ("ent_knn", "triple_ent_knn"):
        if a[name] > num_entities - 1:
            raise config_checks.fail(
                f"ankge.{name}",
                a[name],
                f"must be < the {num_entities} entities of {kg.name} (the tail is excluded)",
            )
    for name in ("rel_knn", "triple_rel_knn"):
        if a[name] > num_relations:
            raise config_checks.fail(
                f"ankge.{name}",
                a[name],
                f"must be <= the {num_relations} relations of {kg.name} (with reverses)",
            )
