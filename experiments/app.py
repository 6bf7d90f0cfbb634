"""The short absl binary every experiment uses.

    python -m experiments.<paper> --config=experiments/configs/<paper>.py:<preset> --workdir=DIR \
        [--config.some.value=...]

`experiments/<paper>.py` is two lines: import the paper's `train_and_evaluate` and call
`run(train_and_evaluate)`. Re-running the same command on the same `--workdir` resumes.
"""

from __future__ import annotations

import ast
import json
import logging as pylogging
import os
import sys
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from research.training.metrics import write_config

TrainAndEvaluate = Callable[[ml_collections.ConfigDict, str], dict[str, Any]]


def _define_flags() -> None:
    if "workdir" in flags.FLAGS:
        return
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Config file and preset, e.g. experiments/configs/<paper>.py:tiny; override any value "
        "with --config.<name>=<value>.",
        lock_config=True,
    )
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
    flags.mark_flags_as_required(["config", "workdir"])


class _DropInfoFrom(pylogging.Filter):
    """Drops INFO/DEBUG records logged from files under the given package folders."""

    def __init__(self, *packages: str):
        super().__init__()
        self._needles = tuple(f"{os.sep}{p}{os.sep}" for p in packages)

    def filter(self, record: pylogging.LogRecord) -> bool:
        noisy = any(n in record.pathname for n in self._needles)
        return record.levelno >= pylogging.WARNING or not noisy


def _quiet_library_logs() -> None:
    """Keeps the run's own INFO lines, hides orbax's per-save INFO chatter."""
    logging.get_absl_handler().addFilter(_DropInfoFrom("orbax"))


def _one_line(err: BaseException) -> str:
    """An exception as one readable line (absl/ml_collections messages span several)."""
    message = str(err)
    if isinstance(err, (AttributeError, KeyError)):
        try:  # ml_collections wraps the KeyError text in quotes with escaped newlines
            message = ast.literal_eval(message)
        except (ValueError, SyntaxError):
            pass
        message = f"unknown config field {message}"
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if isinstance(err, OSError):  # config file missing or not importable
        return f"cannot load the --config file: {lines[-1]}"
    if any(line.startswith("Traceback") for line in lines):  # get_config raised
        return lines[0].split("Error whilst parsing config file")[0] + lines[-1]
    return " ".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
    """Parses flags; on any problem prints one line naming it and exits with status 2."""
    try:
        remaining = flags.FLAGS(argv)
        flags.FLAGS.config.keys()  # a config file that failed to load raises only when used
        return remaining
    except Exception as err:  # noqa: BLE001 - every parsing failure becomes one line
        print(f"{os.path.basename(argv[0])}: error: {_one_line(err)}", file=sys.stderr)
        sys.exit(2)


def run(train_and_evaluate: TrainAndEvaluate) -> None:
    """Parses `--config` and `--workdir`, then runs `train_and_evaluate(config, workdir)`."""
    _define_flags()

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected positional arguments: {' '.join(argv[1:])}")
        config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
        _quiet_library_logs()
        os.makedirs(workdir, exist_ok=True)
        write_config(workdir, config)
        metrics = train_and_evaluate(config, workdir)
        print(json.dumps(metrics, indent=2, sort_keys=True, default=str))

    app.run(main, flags_parser=parse_flags)
