"""The rules a config of experiments/configs/amm_nrr.py must meet before any work starts.

`validate_config(config)` (passed to `experiments.app.run` by experiments/amm_nrr.py) raises
one ValueError naming the field, its value and the rule: `config.solver.radius = -1.0: must be
> 0`. Which pair is registered decides which fields are read:

- an explicit pair (`config.source` and `config.target`, the authors' --source/--target): the
  two files as given. `config.data_dir` and `config.pairs` are not read; their preset defaults
  (`DEFAULT_DATA_DIR`, `DEFAULT_PAIRS`) are left alone, any other value is an error (it would
  be silently ignored), and so are `synthetic.enabled` (two pairs asked for) and, as before, a
  source without a target;
- the synthetic pair (`synthetic.enabled`): no files; `config.data_dir` must be empty;
- otherwise the shared pairs `config.pairs` (NAME:RADIUS) under `config.data_dir`, which must
  then be an existing folder. With `pairs` empty only the robustness sweep (synthetic) runs, so
  the folder must be empty and the sweep enabled.
`config.landmarks` belongs to an explicit pair only.
"""

from __future__ import annotations

import math
from typing import Any

from research.amm_nrr.graph import SAMPLINGS
from research.amm_nrr.solver import NU_STARTS, UNMATCHED_REGS
from research.training import config_checks as checks

DEFAULT_DATA_DIR = "../shared/data/meshes/AMM_NRR"
DEFAULT_PAIRS = "d1:8,d2:5"  # NAME:RADIUS, comma-separated

ALIGNMENTS = ("point", "plane")
COVERAGES = ("auto", "geodesic", "euclidean")
DTYPES = ("float32", "float64")


def parse_pairs(pairs: str) -> list[tuple[str, float]]:
    """`config.pairs` ("d1:8,d2:5") as [(name, radius)]; a ValueError naming the field for an
    entry that is not NAME:RADIUS with a finite RADIUS > 0."""
    parsed = []
    for item in [p.strip() for p in pairs.split(",") if p.strip()]:
        name, _, radius = item.partition(":")
        try:
            value = float(radius)
        except ValueError:
            value = math.nan
        if not name or not (math.isfinite(value) and value > 0):
            raise checks.fail(
                "pairs", pairs, f"entry {item!r} is not NAME:RADIUS with a RADIUS > 0, e.g. d1:8"
            )
        parsed.append((name, value))
    return parsed


def _at_least(config: Any, names: list[str], low: int) -> None:
    for name in names:
        value = checks.field(config, name)
        if value < low:
            raise checks.fail(name, value, f"must be >= {low}")


def _check_solver(config: Any) -> None:
    checks.positive(config, [f"solver.{k}" for k in ("history", "max_iter", "tol")])
    checks.non_negative(  # radius 0: chosen from the mesh (graph.AUTO_RADIUS)
        config,
        [
            f"solver.{k}"
            for k in ("radius", "alpha", "beta", "landmark_weight", "plane_point_weight")
        ],
    )
    checks.one_of(config, "solver.alignment", ALIGNMENTS)
    checks.one_of(config, "solver.coverage", COVERAGES)
    checks.one_of(config, "solver.sampling", SAMPLINGS)
    checks.one_of(config, "solver.dtype", DTYPES)
    checks.one_of(config, "solver.nu_start", NU_STARTS)
    checks.one_of(config, "solver.unmatched_reg", UNMATCHED_REGS)
    if config.solver.reject_boundary and config.robustness.enabled:
        raise checks.fail(
            "solver.reject_boundary",
            True,
            "the robustness sweep's cut and outlier targets are point clouds, which have no rim; "
            "set it false or disable the sweep",
        )


def _check_synthetic(config: Any) -> None:
    """The synthetic pair's and the robustness sweep's settings (checked even when off: none of
    these values is ever meaningful)."""
    for group in ("synthetic", "robustness"):
        checks.positive(config, [f"{group}.{k}" for k in ("grid", "density", "radius")])
        _at_least(config, [f"{group}.grid"], 2)  # grid_surface needs 2 x 2 cells
        checks.non_negative(config, [f"{group}.{k}" for k in ("amplitude", "noise")])
    checks.non_negative(config, ["robustness.outliers"])  # outlier points / target points
    checks.fraction(config, ["robustness.cut"])
    levels = tuple(config.robustness.levels)
    if not levels or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in levels
    ):
        raise checks.fail(
            "robustness.levels", levels, "must be a non-empty list of levels in [0, 1]"
        )
    if config.robustness.cut * max(levels) >= 1:
        raise checks.fail(
            "robustness.cut",
            config.robustness.cut,
            f"cuts away the whole target at level {max(levels):g}; must be < 1 / that level",
        )


def _check_data(config: Any) -> None:
    """Which pair is registered, and the data folder exactly where it is read."""
    if config.source or config.target:
        if not (config.source and config.target):
            name = "target" if config.source else "source"
            raise checks.fail(
                name,
                config[name],
                "--source and --target (config.source / config.target) must be given together",
            )
        ignored = "is not read with an explicit --source/--target pair (its files are used as "
        if config.synthetic.enabled:
            raise checks.fail(
                "synthetic.enabled",
                True,
                "an explicit --source/--target pair replaces the synthetic pair; set it false "
                "or drop the explicit pair",
            )
        if config.data_dir not in ("", DEFAULT_DATA_DIR):
            raise checks.fail(
                "data_dir", config.data_dir, ignored + "given); leave it at its default"
            )
        if config.pairs not in ("", DEFAULT_PAIRS):
            raise checks.fail("pairs", config.pairs, ignored + "given); leave it at its default")
        return
    if config.landmarks:
        raise checks.fail(
            "landmarks",
            config.landmarks,
            "landmarks are index pairs of an explicit --source/--target pair; give that pair "
            "or leave the field empty",
        )
    if config.synthetic.enabled:
        checks.data_dir(config, uses_files=False)
        return
    pairs = parse_pairs(config.pairs)
    if not pairs and not config.robustness.enabled:
        raise checks.fail(
            "pairs",
            config.pairs,
            "nothing to register: list NAME:RADIUS pairs, enable the synthetic pair or the "
            "robustness sweep, or give --source/--target",
        )
    if pairs and not config.data_dir:
        raise checks.fail(
            "data_dir",
            "",
            f"the shared pairs (config.pairs = {config.pairs!r}) are read from this folder; give "
            f"it (e.g. {DEFAULT_DATA_DIR}), or use the tiny preset or --source/--target",
        )
    checks.data_dir(config, uses_files=bool(pairs))


def validate_config(config: Any) -> None:
    """Raises one ValueError naming the first field that breaks a rule (see the module)."""
    checks.non_negative(config, ["seed"])
    _check_solver(config)
    _check_synthetic(config)
    _check_data(config)
