"""The rules of a BiFeat config: `validate_config(config)` raises one ValueError naming the
field, its value and the rule (`config.train.batch_size = 0: must be > 0`), before any work.

`experiments/bifeat.py` passes it to `experiments.app.run`, so a bad flag ends the binary with
that one line instead of a traceback from deep inside (or a silently meaningless run).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from research.bifeat.stores import parse_schemes
from research.datasets.graph_files import PLANETOID_NAMES
from research.training import config_checks as checks

Config = ml_collections.ConfigDict

EXPERIMENTS = ("schemes", "edge_drop")
MODELS = ("sage", "gat")
GATHER_IMPLS = ("auto", "xla", "pallas")
FEATURE_NORMS = ("none", "center")
EVAL_MODES = ("full", "sampled")
EVAL_SELECTS = ("best_val", "last")
EDGE_DROP_MODES = ("random", "degree")
SAMPLERS = ("host", "device")
# Prefixes of the data sets read in the OGB layout (research.datasets.graph_files.load_graph).
OGB_PREFIXES = ("ogbn", "mag240m")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def uses_files(config: Config) -> bool:
    """Whether `config.data.name` reads files from `config.data_dir` (all but `synthetic`)."""
    return config.data.name != "synthetic"


def _fanouts(config: Config, name: str, *, allow_empty: bool = False) -> None:
    """`name` holds one positive integer fan-out per layer (`()` allowed when `allow_empty`)."""
    value = checks.field(config, name)
    fanouts = tuple(value) if isinstance(value, (tuple, list)) else value
    if allow_empty and fanouts == ():
        return
    if not isinstance(fanouts, tuple) or not all(_is_int(k) and k > 0 for k in fanouts):
        raise checks.fail(name, fanouts, "must be positive integers, one per layer")
    if len(fanouts) != config.model.num_layers:
        raise checks.fail(
            name,
            fanouts,
            f"must have one entry per layer (config.model.num_layers = {config.model.num_layers})",
        )


def _below_one(config: Config, names: list[str]) -> None:
    """Dropout rates: in [0, 1) (a rate of 1 drops every unit; the model would output only its
    biases and predict one class for every node)."""
    for name in names:
        value = checks.field(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise checks.fail(name, value, "must be in [0, 1)")


def _data(config: Config) -> None:
    name = config.data.name
    if not (name == "synthetic" or name in PLANETOID_NAMES or str(name).startswith(OGB_PREFIXES)):
        raise checks.fail(
            "data.name",
            name,
            f"must be synthetic, {', '.join(PLANETOID_NAMES)}, ogbn-* or mag240m* "
            "(the OGB node-property layout)",
        )
    checks.data_dir(config, uses_files=uses_files(config))  # also: "" for a data set on files
    if name != "synthetic":
        return
    checks.positive(
        config,
        [f"data.synthetic.{k}" for k in ("num_nodes", "num_features", "num_classes", "avg_degree")],
    )
    checks.fraction(config, ["data.synthetic.homophily"])
    checks.non_negative(config, ["data.synthetic.feature_signal", "data.synthetic.seed"])
    exponent = config.data.synthetic.power_law_exponent
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or not exponent > 1:
        raise checks.fail("data.synthetic.power_law_exponent", exponent, "must be > 1")
    split = tuple(config.data.synthetic.split_fractions)
    if len(split) != 3 or not all(0 <= f <= 1 for f in split) or sum(split) > 1:
        raise checks.fail(
            "data.synthetic.split_fractions",
            split,
            "must be 3 fractions (train, val, test), each in [0, 1] and sum to at most 1",
        )


def validate_config(config: Config) -> None:
    """Raises ValueError naming the first field of `config` that breaks a rule."""
    checks.one_of(config, "experiment", EXPERIMENTS)
    try:
        schemes = parse_schemes(config.schemes)
    except ValueError as err:
        raise checks.fail("schemes", config.schemes, str(err)) from None
    checks.one_of(config, "data.sampler", SAMPLERS)
    if config.data.sampler == "device" and any(s.method == "float32" for s in schemes):
        raise checks.fail(
            "data.sampler",
            config.data.sampler,
            "the device sampler needs device-resident stores, and the float32 store gathers "
            "on the host: use float32-device (or drop float32 from config.schemes)",
        )
    # seeds feed numpy's default_rng([seed, ...]), which rejects negative entropy
    checks.positive(config, ["num_seeds"])
    checks.non_negative(config, ["seed"])
    checks.fraction(config, ["cache_fraction"])
    checks.one_of(config, "gather_impl", GATHER_IMPLS)
    checks.one_of(config, "feature_norm", FEATURE_NORMS)
    checks.positive(config, ["checkpoint_every_epochs", "log_every"])
    _data(config)

    checks.one_of(config, "model.name", MODELS)
    checks.positive(config, ["model.hidden", "model.num_layers", "model.num_heads"])
    _below_one(config, ["model.dropout", "model.input_dropout"])

    t = "train."
    checks.positive(config, [t + "batch_size", t + "epochs", t + "lr", t + "prefetch"])
    checks.divisible_by_devices(config, t + "batch_size")
    _fanouts(config, t + "fanouts")
    lr_decay = config.train.lr_decay
    if (
        isinstance(lr_decay, bool)
        or not isinstance(lr_decay, (int, float))
        or not 0 < lr_decay <= 1
    ):
        raise checks.fail(t + "lr_decay", lr_decay, "must be in (0, 1] (a factor per epoch)")
    checks.non_negative(config, [t + "weight_decay", t + "calibrate_batches"])
    margin = config.train.capacity_margin
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 1:
        raise checks.fail(
            t + "capacity_margin",
            margin,
            "must be >= 1 (node capacities are this multiple of the largest sampled count; "
            "below 1 batches drop sampled nodes)",
        )

    checks.one_of(config, "eval.mode", EVAL_MODES)
    checks.one_of(config, "eval.select", EVAL_SELECTS)
    checks.positive(config, ["eval.every_epochs", "eval.batch_size"])
    if config.eval.mode == "sampled":
        checks.divisible_by_devices(config, "eval.batch_size")
        _fanouts(config, "eval.fanouts", allow_empty=True)

    checks.non_negative(config, ["quant.sample_rows"])
    checks.positive(config, ["quant.vq_max_iters"])

    if config.experiment == "edge_drop":
        modes = [m.strip() for m in config.edge_drop.modes.split(",") if m.strip()]
        if not modes or any(m not in EDGE_DROP_MODES for m in modes):
            raise checks.fail(
                "edge_drop.modes",
                config.edge_drop.modes,
                f"must be a comma-separated list of {', '.join(EDGE_DROP_MODES)}",
            )
        fractions = tuple(config.edge_drop.fractions)
        if not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 <= f <= 1
            for f in fractions
        ):
            raise checks.fail("edge_drop.fractions", fractions, "must be fractions in [0, 1]")
