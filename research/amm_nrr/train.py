"""AMM-NRR runs: register the configured pairs (AA and plain MM), write meshes, logs, results.

    python -m experiments.amm_nrr --config=experiments/configs/amm_nrr.py:small --workdir=DIR
    python -m experiments.amm_nrr --source=S.obj --target=T.ply --out=DIR [--radius=5 ...]

Each run (pair x variant) writes `DIR/<pair>_<aa|mm>/deformed.<ext>` (source units, source
connectivity) and `log.json` (per iteration: stage, energy, time, accepted); `DIR/results.json`
holds the flat metrics and `DIR/results.md` the tables (and the robustness plot).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from research.amm_nrr import robustness, solver
from research.amm_nrr.config_rules import parse_pairs
from research.amm_nrr.graph import normalise
from research.datasets import registration_pairs
from research.datasets.meshes import Mesh, load_mesh, save_mesh
from research.datasets.paths import resolve_data_dir
from research.training import distributed, results
from research.training import workdir as workdir_lib

Config = ml_collections.ConfigDict


@dataclasses.dataclass
class Pair:
    name: str
    source: Mesh
    target: Mesh
    radius: float
    ext: str = ".obj"
    truth: np.ndarray | None = None  # [n, 3] known correspondence (synthetic / same connectivity)
    official: np.ndarray | None = None  # [n, 3] the authors' result s2tres.obj
    landmarks: np.ndarray | None = None  # [L, 2] (source index, target index)


def load_landmarks(path: str, num_source: int, num_target: int) -> np.ndarray:
    """The authors' landmark file: one `source_index target_index` pair per line (blank lines
    and `#` comments skipped). Returns [L, 2] int64; a ValueError names the file and the line
    of anything else (not two integers, an index out of range) and an empty file."""
    expected = (
        "expected 'source_index target_index' (integers, source in "
        f"[0, {num_source}), target in [0, {num_target}))"
    )
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err}); {expected}") from err
    pairs = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            i, j = (int(part) for part in text.split())
        except ValueError:
            i = j = -1
        if not (0 <= i < num_source and 0 <= j < num_target):
            raise ValueError(f"{path}, line {number}: {expected}, got {line.strip()!r}")
        pairs.append((i, j))
    if not pairs:
        raise ValueError(f"{path}: no landmark pairs found; {expected}, one pair per line")
    return np.asarray(pairs, np.int64)


def options_from(config: Config, radius: float, use_aa: bool) -> solver.Options:
    """`config.solver` (the fields of `solver.Options`) with this run's radius and AA switch."""
    return dataclasses.replace(solver.Options(**config.solver), radius=radius, use_aa=use_aa)


def load_pairs(config: Config) -> list[Pair]:
    """The explicit --source/--target pair, the synthetic pair, or the named shared pairs."""
    if config.source or config.target:
        if not (config.source and config.target):
            raise ValueError("--source and --target (config.source/target) must be given together")
        src, tgt = load_mesh(config.source), load_mesh(config.target)
        truth = (
            tgt.vertices
            if len(tgt.vertices) == len(src.vertices)
            and (
                tgt.faces is not None
                and src.faces is not None
                and np.array_equal(tgt.faces, src.faces)
            )
            else None
        )
        ext = os.path.splitext(config.source)[1].lower()
        lm = None
        if config.landmarks:
            lm = load_landmarks(config.landmarks, len(src.vertices), len(tgt.vertices))
        return [Pair("pair", src, tgt, config.solver.radius, ext, truth, landmarks=lm)]
    if config.synthetic.enabled:
        s = config.synthetic
        pair = robustness.make_pair(
            np.random.default_rng(config.seed),
            grid=s.grid,
            density=s.density,
            amplitude=s.amplitude,
            noise=s.noise,
        )
        return [Pair("synthetic", pair.source, pair.target, s.radius, truth=pair.truth)]
    root = resolve_data_dir(config.data_dir)
    pairs = []
    for name, radius in parse_pairs(config.pairs):
        folder = os.path.join(root, name)
        official = os.path.join(folder, "s2tres.obj")
        pairs.append(
            Pair(
                name,
                load_mesh(os.path.join(folder, "source.obj")),
                load_mesh(os.path.join(folder, "target.obj")),
                radius,
                official=load_mesh(official).vertices if os.path.exists(official) else None,
            )
        )
    return pairs


def _aa_speedup(aa: solver.Result, mm: solver.Result) -> dict[str, float]:
    """Stage 0 (same start, same nu): iterations AA needs to reach the energy plain MM has after
    all its stage-0 iterations, and the ratio."""
    e_mm = mm.stages[0]["energy"]
    trace = [r["accepted_energy"] for r in aa.log if r["stage"] == 0]
    hit = next((i + 1 for i, e in enumerate(trace) if e <= e_mm), None)
    mm_iters = mm.stages[0]["iterations"]
    return {
        "aa_iters_to_mm_energy": hit if hit is not None else float("nan"),
        "mm_iters": mm_iters,
        "aa_iteration_ratio": mm_iters / hit if hit else float("nan"),
    }


def run_pair(config: Config, pair: Pair, use_aa: bool) -> tuple[dict, Any]:
    """Registers `pair` (AA or plain MM); returns (its table row, the solver's Result)."""
    options = options_from(config, pair.radius, use_aa)
    label = f"pair {pair.name} ({'AA' if use_aa else 'plain MM'})"
    res = solver.register(pair.source, pair.target, options, landmarks=pair.landmarks, label=label)
    solver.check_finite(res, label)
    scale = normalise(pair.source.vertices, pair.target.vertices).scale
    suffix = "_plane" if options.alignment == "plane" else ""
    run = f"{pair.name}_{'aa' if use_aa else 'mm'}{suffix}"
    row: dict[str, Any] = {
        "run": run,
        "radius": res.radius,
        "nodes": res.num_nodes,
        "iterations": res.iterations,
        "solve_s": res.solve_seconds,
        "solve_cpu_s": res.solve_cpu_seconds,
        "compile_s": res.compile_seconds,
        "total_s": res.solve_seconds + res.compile_seconds + res.setup_seconds,
        "fit_source": solver.fit_metric(pair.source.vertices, pair.target.vertices, scale),
        "fit": solver.fit_metric(res.deformed, pair.target.vertices, scale),
    }
    if pair.truth is not None:
        row["rmse_gt"] = registration_pairs.rmse(res.deformed, pair.truth)
    if pair.official is not None:
        row["fit_official"] = solver.fit_metric(pair.official, pair.target.vertices, scale)
        dist = np.linalg.norm(res.deformed - pair.official, axis=1) / scale
        row["dist_to_official_mean"], row["dist_to_official_max"] = dist.mean(), dist.max()
    logging.info("%s: %s", run, row)
    return row, res


def register_pair(config: Config, pair: Pair) -> dict[str, Any]:
    """Every variant of `pair` (AA, and plain MM if config.compare_no_aa): {"rows": one table
    row per variant, "speed": `_aa_speedup` (None unless both ran), "outputs": per variant
    {"run", "deformed" [n, 3], "log": {"stages", "iterations"}}, what `write_outputs` saves}."""
    first = config.solver.use_aa
    variants = [first] + ([not first] if config.compare_no_aa else [])
    rows, outputs, done = [], [], {}
    for use_aa in variants:
        row, done[use_aa] = run_pair(config, pair, use_aa)
        rows.append(row)
        outputs.append(
            {
                "run": row["run"],
                "deformed": done[use_aa].deformed,
                "log": {"stages": done[use_aa].stages, "iterations": done[use_aa].log},
            }
        )
    speed = _aa_speedup(done[True], done[False]) if len(done) == 2 else None
    return {"rows": rows, "speed": speed, "outputs": outputs}


def write_outputs(workdir: str, pair: Pair, outputs: list[dict[str, Any]]) -> None:
    """Each variant's `DIR/<run>/deformed.<ext>` (source connectivity) and `log.json`; process 0
    alone writes them in a run of several processes."""
    if not workdir_lib.is_writer():
        return
    for out in outputs:
        folder = os.path.join(workdir, out["run"])
        deformed = np.asarray(out["deformed"], np.float64)
        save_mesh(os.path.join(folder, "deformed" + pair.ext), Mesh(deformed, pair.source.faces))
        with open(os.path.join(folder, "log.json"), "w") as f:
            json.dump(out["log"], f, indent=1)


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
    """Registers every configured pair (AA, and plain MM if config.compare_no_aa); runs the
    robustness sweep if enabled (not with an explicit --source/--target pair). Returns the flat
    metrics written to results.json. In a run of several processes the pairs, and the sweep's
    levels, are split over the processes (`distributed.map_split`) and every process returns
    the metrics of all of them; process 0 alone writes the files."""
    os.makedirs(workdir, exist_ok=True)
    rows, metrics, speed = [], {}, []
    pairs = load_pairs(config)
    for pair, done in zip(
        pairs,
        distributed.map_split(lambda p: register_pair(config, p), pairs, what="pairs"),
        strict=True,
    ):
        write_outputs(workdir, pair, done["outputs"])
        rows += done["rows"]
        for row in done["rows"]:
            metrics.update({f"{row['run']}/{k}": v for k, v in row.items() if k != "run"})
        if done["speed"] is not None:
            speed.append({"pair": pair.name, **done["speed"]})
            metrics.update({f"{pair.name}/{k}": v for k, v in done["speed"].items()})
    tables = {"registration": rows}
    if speed:
        tables["AA vs plain MM, stage 0"] = speed
    plots = []
    if config.robustness.enabled and not config.source:  # not for one explicit pair (CLI)
        r = config.robustness
        options = options_from(config, r.radius, config.solver.use_aa)
        sweep = distributed.map_split(
            lambda level: robustness.sweep(
                [level],
                options,
                seed=config.seed,
                grid=r.grid,
                density=r.density,
                amplitude=r.amplitude,
                noise=r.noise,
                outliers=r.outliers,
                cut=r.cut,
            )[0],
            list(r.levels),
            what="robustness levels",
        )
        tables["robustness: RMSE / bbox diagonal vs ground truth"] = sweep
        for row in sweep:
            metrics[f"robustness/{row['level']:g}/rmse_welsch"] = row["rmse_welsch"]
            metrics[f"robustness/{row['level']:g}/rmse_l2"] = row["rmse_l2"]
        levels = [row["level"] for row in sweep]
        results.line_plot(
            os.path.join(workdir, "robustness.png"),
            {
                "Welsch (ours)": (levels, [row["rmse_welsch"] for row in sweep]),
                "least squares (l2)": (levels, [row["rmse_l2"] for row in sweep]),
                "initial": (levels, [row["rmse_initial"] for row in sweep]),
            },
            xlabel="corruption level (noise, outliers, cut-away)",
            ylabel="RMSE / bbox diagonal",
            title="Robustness on synthetic pairs",
        )
        plots.append("robustness.png")
    results.write_results(
        workdir,
        metrics,
        title="AMM-NRR: non-rigid registration",
        tables=tables,
        plots=plots,
        notes="Times in seconds on this CPU (shared, noisy); fit = mean NN distance to the "
        "target / joint bbox diagonal.",
    )
    return metrics
