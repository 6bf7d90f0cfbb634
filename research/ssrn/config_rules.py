"""`validate_config`: the rules an ssrn config must meet, checked before any work (one ValueError
naming the field, its value and the rule)."""

from __future__ import annotations

import ml_collections

from models.grounding import ENCODERS
from research.training import config_checks as checks

METHODS = ("base", "siamese", "ssrn")
SOURCES = ("synthetic", "charades", "activitynet", "tacos")


def name_lists(config: ml_collections.ConfigDict) -> tuple[list[int], list[str]]:
    """The sampled position counts (`config.sampled_positions`, comma-separated integers) and the
    method names (`config.methods`)."""
    text = str(config.sampled_positions)
    try:
        positions = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        positions = []
    if not positions or any(p < 2 for p in positions):
        raise checks.fail("sampled_positions", text, "give comma-separated integers >= 2")
    return positions, checks.name_list(config, "methods", METHODS)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for the first rule `config` breaks."""
    d, m, s = config.data, config.model, config.siamese
    checks.positive(config, ["num_seeds", "checkpoint_every", "log_every", "prefetch"])
    checks.non_negative(config, ["seed"])
    checks.one_of(config, "data.source", SOURCES)
    checks.data_dir(config, name="data.data_dir", uses_files=d.source != "synthetic")
    if d.source == "synthetic":
        checks.positive(config, ["data.num_videos", "data.dim", "data.min_frames"])
        checks.non_negative(config, ["data.noise"])
        if not 0 < d.test_fraction < 1:
            raise checks.fail("data.test_fraction", d.test_fraction, "must be in (0, 1)")
        if d.max_frames < d.min_frames:
            raise checks.fail("data.max_frames", d.max_frames, "must be >= data.min_frames")
    else:
        needed = ["train_file", "test_file", "features"]
        needed += ["durations_file"] if d.source == "charades" else []
        for name in needed:
            if not d[name]:
                raise checks.fail(f"data.{name}", d[name], f"{d.source} needs it (see --help)")
    checks.one_of(config, "model.encoder", ENCODERS)
    checks.positive(
        config,
        [
            "model.dim",
            "model.word_dim",
            "model.num_heads",
            "model.encoder_blocks",
            "model.max_words",
        ],
    )
    checks.fraction(config, ["model.dropout"])
    if m.dim % m.num_heads:
        raise checks.fail(
            "model.dim", m.dim, f"must be divisible by model.num_heads ({m.num_heads})"
        )
    checks.positive(config, ["train.batch_size", "train.steps", "train.lr", "train.clip_norm"])
    checks.non_negative(config, ["train.weight_decay", "train.highlight_weight", "train.extend"])
    checks.fraction(config, ["train.warmup_fraction"])
    checks.divisible_by_devices(config, "train.batch_size")
    checks.non_negative(config, ["siamese.num_siamese", "siamese.loss_weight"])
    methods = name_lists(config)[1]
    needed = 2 if "ssrn" in methods else 1 if "siamese" in methods else 0
    if s.num_siamese < needed:
        raise checks.fail(
            "siamese.num_siamese",
            s.num_siamese,
            f"the methods {config.methods!r} need >= {needed} siamese sequences (ssrn 2: with "
            "one, the affinity's row softmax is always 1)",
        )
    if not 0 < s.offset_spread <= 0.5:
        raise checks.fail("siamese.offset_spread", s.offset_spread, "must be in (0, 0.5] strides")
    checks.fraction(config, ["siamese.weight"])
    checks.positive(config, ["siamese.temperature", "siamese.projection_dim"])
    checks.positive(config, ["decode.top_k", "decode.batch_size"])
    checks.non_negative(config, ["decode.max_span_positions"])
    if config.decode.top_k < 5:
        raise checks.fail("decode.top_k", config.decode.top_k, "must be >= 5 (R@5)")
