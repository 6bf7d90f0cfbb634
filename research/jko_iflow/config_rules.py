"""`validate_config`: the rules a JKO-iFlow config must meet, checked before any work.

`experiments/jko_iflow.py` passes it to `experiments.app.run` and `train_and_evaluate` calls it
too, so a bad value fails at once with one line naming the field (`config.jko.batch_size = 0:
must be > 0`) instead of a ZeroDivisionError, or a silent untrained flow, deep inside a run.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from research.datasets import densities
from research.datasets.paths import resolve_data_dir
from research.jko_iflow import flow, ode
from research.training import config_checks as checks

KNOWN_DENSITIES = (
    densities.TOY_DENSITIES + densities.IMAGE_DENSITIES + tuple(densities.TABULAR_DIMS)
)


def density_names(config: ml_collections.ConfigDict) -> list[str]:
    """The names in `config.densities` (comma-separated)."""
    return [n.strip() for n in config.densities.split(",") if n.strip()]


def is_tabular(name: str) -> bool:
    """A tabular benchmark (`<data_dir>/<name>/{train,val,test}.npy`), any letter case."""
    return name.lower() in densities.TABULAR_DIMS


def data_files(name: str, data_dir: str) -> list[str]:
    """The files density `name` reads from `data_dir` (none for a density generated in code)."""
    folder = resolve_data_dir(data_dir) if data_dir else ""
    if is_tabular(name):
        return [os.path.join(folder, name.lower(), f"{s}.npy") for s in ("train", "val", "test")]
    if name in densities.IMAGE_DENSITIES:
        return [os.path.join(folder, f"{name}.png")]
    return []


def _check_densities(config: ml_collections.ConfigDict) -> list[str]:
    names = density_names(config)
    if not names:
        raise ValueError(
            f"config.densities = {config.densities!r}: give comma-separated density names "
            f"({', '.join(KNOWN_DENSITIES)})"
        )
    for name in names:
        if name not in KNOWN_DENSITIES and not is_tabular(name):
            raise ValueError(
                f"config.densities = {config.densities!r}: {name!r} must be one of "
                f"{', '.join(KNOWN_DENSITIES)}"
            )
    return names


def _check_data_dir(config: ml_collections.ConfigDict, names: list[str]) -> None:
    """`config.data_dir` is given exactly when a chosen density reads files, and holds them."""
    readers = [n for n in names if data_files(n, "x")]
    if readers and not config.data_dir:  # before the generic rule: name the density and files
        raise ValueError(
            f"config.data_dir = '': density {readers[0]} reads "
            f"{', '.join(os.path.basename(p) for p in data_files(readers[0], 'x'))} from a data "
            "folder; give the folder (rose, tree: ../shared/data/densities2d)"
        )
    checks.data_dir(config, uses_files=bool(readers))
    for name in readers:
        for path in data_files(name, config.data_dir):
            if not os.path.isfile(path):
                raise ValueError(
                    f"config.data_dir = {config.data_dir!r}: {path} does not exist (density "
                    f"{name} reads it)"
                )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first field of `config` that breaks a rule."""
    names = _check_densities(config)
    checks.non_negative(config, ["seed", "time_budget_s"])
    checks.positive(config, ["steps_per_call", "checkpoint_every", "log_every"])
    sampled = [n for n in names if not is_tabular(n)]  # 2D densities draw num_train points
    # Tabular splits are capped by num_train / num_test when positive (0: the whole split).
    (checks.positive if sampled else checks.non_negative)(config, ["num_train", "num_test"])
    checks.positive(config, ["model.width", "model.depth", "model.beta"])
    checks.positive(
        config,
        [
            "jko.num_blocks",
            "jko.h0",
            "jko.h_ratio",
            "jko.num_substeps",
            "jko.iters_per_block",
            "jko.batch_size",
            "jko.lr",
            "jko.grad_clip",
        ],
    )
    checks.one_of(config, "jko.divergence", ode.DIVERGENCES)
    # Split over every process's devices (jax.device_count() is the local count in one process).
    checks.divisible_by_devices(config, "jko.batch_size", jax.device_count())
    if sampled and config.jko.batch_size > config.num_train:
        raise ValueError(
            f"config.jko.batch_size = {config.jko.batch_size}: must be <= config.num_train = "
            f"{config.num_train} (one batch of training points)"
        )
    step_sizes = tuple(config.jko.step_sizes)
    if step_sizes and (
        len(step_sizes) < config.jko.num_blocks
        or not all(isinstance(h, (int, float)) and h > 0 for h in step_sizes)
    ):
        raise ValueError(
            f"config.jko.step_sizes = {step_sizes!r}: must be empty (h0 * h_ratio^k) or hold "
            f"config.jko.num_blocks = {config.jko.num_blocks} step sizes, each > 0"
        )
    checks.non_negative(config, ["jko.stop_tol", "jko.reparam.rounds"])
    checks.fraction(config, ["jko.reparam.eta"])
    checks.positive(config, ["jko.reparam.h_max", "jko.reparam.iters_per_block"])
    checks.positive(config, ["baseline.lr"])
    checks.non_negative(config, ["baseline.num_steps"])
    checks.one_of(config, "eval.solver", flow.SOLVERS)
    checks.positive(
        config,
        [
            "eval.tol",
            "eval.rk4_steps",
            "eval.num_nll",
            "eval.num_mmd",
            "eval.num_inversion",
            "eval.num_permutations",
        ],
    )
    checks.non_negative(config, ["eval.grid_size"])
    _check_data_dir(config, names)
