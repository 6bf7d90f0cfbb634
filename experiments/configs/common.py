"""Shared helpers for the per-paper config files (`experiments/configs/<paper>.py`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ml_collections

PRESETS = ("tiny", "small", "paper")


def select_preset(
    paper: str, preset: str | None, builders: Mapping[str, Callable[[], ml_collections.ConfigDict]]
) -> ml_collections.ConfigDict:
    """Builds the config of `preset` from `builders`; a clear ValueError for unknown names.

    `preset` comes from the `--config=experiments/configs/<paper>.py:<preset>` suffix; without
    a suffix the `tiny` preset is used.
    """
    preset = preset or "tiny"
    if preset not in builders:
        raise ValueError(
            f"unknown preset {preset!r} for {paper}; available presets: {', '.join(builders)}"
        )
    config = builders[preset]()
    config.preset = preset
    return config
