"""Shared helpers for the per-paper config files (`experiments/configs/<paper>.py`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

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


def options_config(options: Any, **overrides: Any) -> ml_collections.ConfigDict:
    """A ConfigDict of a method's frozen options dataclass (its defaults, then `overrides`).

    The dataclass is the single source of the defaults; the method reads the (flag-overridden)
    values back with `Options(**config.<name>)`, so no ConfigDict travels into method code.
    """
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"expected an options dataclass, got {type(options).__name__}")
    if isinstance(options, type):
        options = options()
    return ml_collections.ConfigDict(dataclasses.asdict(dataclasses.replace(options, **overrides)))
