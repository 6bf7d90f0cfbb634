"""The short absl binary every experiment uses.

    python -m experiments.<paper> --config=experiments/configs/<paper>.py:<preset> --workdir=DIR \
        [--config.some.value=...]

`experiments/<paper>.py` is two lines: import the paper's `train_and_evaluate` and call
`run(train_and_evaluate)`. Re-running the same command on the same `--workdir` resumes.

A binary whose `train_and_evaluate` supports several processes calls
`run(train_and_evaluate, multi_process=True)` and runs under `python -m experiments.launch` or
`srun`; its processes share the `--workdir`, which must be on a file system all of them see.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging as pylogging
import os
import sys
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import registry
from research.training import distributed, identity
from research.training import workdir as workdir_lib
from research.training.errors import RunError, RunMismatchError
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
    flags.DEFINE_bool(
        "fresh",
        False,
        "Delete the workdir's previous runs (checkpoints, results, logs) and start over; "
        "needed to reuse a workdir with a different config.",
    )
    flags.DEFINE_string(
        "coordinator_address",
        "",
        "host:port of process 0's coordinator, for a run of several processes (set by "
        "`python -m experiments.launch`; under SLURM `srun` sets everything itself).",
    )
    flags.DEFINE_integer("num_processes", 0, "Number of processes of a multi-process run.")
    flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
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


def _load_config_module(path: str):
    spec = importlib.util.spec_from_file_location("_config_for_help", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def help_text(argv: list[str]) -> str:
    """The binary's docstring, its presets (the config module's `PRESETS`: what each runs, its
    time on the 2-core CPU, what it needs), every config field with its default, the flags."""
    main = sys.modules["__main__"]
    paper = (getattr(main, "__spec__", None) and main.__spec__.name or "").rsplit(".", 1)[-1]
    given = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    path = given[0].split(":", 1)[0] if given else registry.config_path(paper)
    module = _load_config_module(path)
    preset = given[0].split(":", 1)[1] if given and ":" in given[0] else None
    config = module.get_config(preset)
    lines = [(main.__doc__ or "").strip(), "", f"Presets (--config={path}:<preset>):"]
    presets = getattr(module, "PRESETS", {})
    width = max((len(name) for name in presets), default=0)
    lines += [f"  {name:<{width}}  {text}" for name, text in presets.items()]
    lines += [
        "",
        f"Config fields with their values in the {config.preset!r} preset (override any with "
        "--config.<field>=<value>):",
    ]
    lines += [f"  {name} = {value!r}" for name, value in identity.flatten(config.to_dict()).items()]
    lines += [
        "",
        "Flags:",
        "  --workdir=DIR  checkpoints, metrics and results; re-running the same command resumes",
        "  --fresh        delete the workdir's previous runs and start over",
        "  --verbosity=1  full tracebacks instead of one-line errors",
        "  --coordinator_address=HOST:PORT --num_processes=N --process_id=I",
        "                 one of N processes of a multi-process run (experiments.launch sets them)",
    ]
    return "\n".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
    """Parses flags; on any problem prints one line naming it and exits with status 2.
    `--help` / `-h` prints `help_text` and exits with status 0."""
    if any(a in ("--help", "-h", "--helpshort") for a in argv[1:]):
        try:
            print(help_text(argv))
        except Exception as err:  # noqa: BLE001 - a broken config file is reported, not raised
            print(f"{os.path.basename(argv[0])}: error: {_one_line(err)}", file=sys.stderr)
            sys.exit(2)
        sys.exit(0)
    try:
        remaining = flags.FLAGS(argv)
        flags.FLAGS.config.keys()  # a config file that failed to load raises only when used
        return remaining
    except Exception as err:  # noqa: BLE001 - every parsing failure becomes one line
        print(f"{os.path.basename(argv[0])}: error: {_one_line(err)}", file=sys.stderr)
        sys.exit(2)


# Errors that end a run with one line (the traceback only with --verbosity=1): the run's own
# (NaN, config mismatch, locked workdir), bad values (config validation, malformed data) and
# I/O (missing or unreadable files, a workdir under a file).
ONE_LINE_ERRORS = (RunError, ValueError, OSError)


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, *, fresh: bool) -> None:
    """Starts over (`fresh`) or checks that the workdir's previous runs are of this config,
    then writes config.json. Call with the workdir lock held.

    In a multi-process run every process calls it: process 0 clears the workdir while the
    others wait, every process checks config.json (so all stop on a mismatch), and process 0
    writes it."""
    if fresh and workdir_lib.is_writer():
        workdir_lib.clear(workdir)
    workdir_lib.sync(f"prepare_workdir {os.path.abspath(workdir)}")
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            stored = identity.result_fields(json.load(f))
        current = identity.result_fields(config)
        if identity.fingerprint(stored) != identity.fingerprint(current):
            raise RunMismatchError(
                f"workdir {workdir} holds runs of a different config "
                f"({identity.describe_difference(stored, current)}); use another --workdir, or "
                "--fresh to delete its runs and start over"
            )
    write_config(workdir, config)


def run(
    train_and_evaluate: TrainAndEvaluate,
    validate: Callable[[ml_collections.ConfigDict], None] | None = None,
    *,
    multi_process: bool = False,
) -> None:
    """Parses `--config`, `--workdir` and `--fresh`, then runs `train_and_evaluate(config,
    workdir)` holding the workdir's lock, with the config's identity checked and stored.

    `validate(config)` runs first and raises ValueError naming a bad field. A `ONE_LINE_ERRORS`
    error ends the run with one line on stderr and exit status 1.

    Before anything touches jax, the process joins a multi-process run when the flags
    (`--coordinator_address`, `--num_processes`, `--process_id`) or the environment (SLURM) say
    so (`distributed.initialize`). Only a `train_and_evaluate` written for several processes may
    run in one: unless `multi_process` is True, a run of several processes stops with one line.
    In a run of several processes only process 0 takes the workdir lock and writes config.json
    (`workdir.locked`, `prepare_workdir`); every process runs `train_and_evaluate`.
    """
    _define_flags()

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected positional arguments: {' '.join(argv[1:])}")
        config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
        _quiet_library_logs()
        try:
            distributed.initialize(
                flags.FLAGS.coordinator_address, flags.FLAGS.num_processes, flags.FLAGS.process_id
            )
            if distributed.is_multi_process():
                logging.info("%s", distributed.describe_layout())
                if not multi_process:
                    raise MultiProcessUnsupportedError(
                        f"{_binary_name()} does not support several processes yet (this is "
                        f"process {distributed.process_index()} of "
                        f"{distributed.process_count()}); run it as one process"
                    )
            if validate is not None:
                validate(config)
            with workdir_lib.locked(workdir), identity.running(config):
                prepare_workdir(workdir, config, fresh=flags.FLAGS.fresh)
                metrics = train_and_evaluate(config, workdir)
        except ONE_LINE_ERRORS as err:
            if flags.FLAGS.verbosity >= 1:
                raise
            print(f"{os.path.basename(sys.argv[0])}: error: {_error_line(err)}", file=sys.stderr)
            sys.exit(1)
        print(json.dumps(metrics, indent=2, sort_keys=True, default=str))

    app.run(main, flags_parser=parse_flags)


class MultiProcessUnsupportedError(RunError):
    """The experiment was started as several processes but runs only as one."""


def _binary_name() -> str:
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else os.path.basename(sys.argv[0])


def _error_line(err: BaseException) -> str:
    """The error as one line; an OSError keeps the file it names."""
    if isinstance(err, OSError) and err.filename and str(err.filename) not in str(err):
        return f"{err.strerror or err}: {err.filename}"
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text if isinstance(err, RunError) else f"{type(err).__name__}: {text}"
