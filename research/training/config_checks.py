"""Config validation before any work: one ValueError naming the field, its value and the rule.

Each paper's `validate_config(config)` (in its train.py, passed to `experiments.app.run`) lists
its rules with these helpers, so a zero batch size or a negative learning rate fails at once
with `config.train.batch_size = 0: must be > 0` instead of a traceback from deep inside.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import jax

from research.datasets.paths import resolve_data_dir


def field(config: Any, name: str) -> Any:
    """The value of the dotted field `name` (e.g. "train.batch_size") of a ConfigDict."""
    value = config
    for part in name.split("."):
        value = value[part]
    return value


def fail(name: str, value: Any, rule: str) -> ValueError:
    """The error every rule raises: `config.<name> = <value>: <rule>` (papers' own rules too)."""
    return ValueError(f"config.{name} = {value!r}: {rule}")


def positive(config: Any, names: Iterable[str]) -> None:
    """Every field in `names` is a number > 0."""
    for name in names:
        value = field(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise fail(name, value, "must be > 0")


def non_negative(config: Any, names: Iterable[str]) -> None:
    """Every field in `names` is a number >= 0."""
    for name in names:
        value = field(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise fail(name, value, "must be >= 0")


def fraction(config: Any, names: Iterable[str]) -> None:
    """Every field in `names` is a number in [0, 1]."""
    for name in names:
        value = field(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise fail(name, value, "must be in [0, 1]")


def one_of(config: Any, name: str, choices: Iterable[str]) -> None:
    """The field is one of `choices`."""
    choices = tuple(choices)
    value = field(config, name)
    if value not in choices:
        raise fail(name, value, f"must be one of {', '.join(map(str, choices))}")


def name_list(config: Any, name: str, choices: Iterable[str]) -> list[str]:
    """The names of the comma-separated field `name` (e.g. methods = "ce,dsb_ce"), each one of
    `choices`; at least one."""
    choices = tuple(choices)
    value = field(config, name)
    names = [n.strip() for n in str(value).split(",") if n.strip()]
    if not names or any(n not in choices for n in names):
        raise fail(name, value, f"give comma-separated names from {', '.join(choices)}")
    return names


def divisible_by_devices(config: Any, name: str, num_devices: int | None = None) -> None:
    """The global batch `name` splits evenly over the local devices (data parallelism)."""
    num_devices = num_devices or jax.local_device_count()
    value = field(config, name)
    if value % num_devices:
        raise fail(
            name,
            value,
            f"must be divisible by the {num_devices} devices (each takes an equal share)",
        )


def data_dir(config: Any, *, name: str = "data_dir", uses_files: bool) -> None:
    """A data folder is given exactly when the data set reads files: one for a synthetic or
    bundled data set would be silently ignored, so it is an error; a missing one is too."""
    value = field(config, name)
    if value and not uses_files:
        raise fail(
            name,
            value,
            "the chosen data set is synthetic or bundled and reads no folder; choose a data "
            "set that reads it (see --help) or leave the field empty",
        )
    if uses_files and not value:
        raise fail(name, value, "the chosen data set reads files: give their folder")
    if uses_files and not os.path.isdir(resolve_data_dir(value)):
        raise fail(name, value, "no such folder")
