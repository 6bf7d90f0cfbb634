"""Configs of AMM-NRR (Yao, Deng, Xu, Zhang, TPAMI 2023): robust non-rigid registration by
Anderson-accelerated majorization-minimization.

    python -m experiments.amm_nrr --config=experiments/configs/amm_nrr.py:<preset> --workdir=DIR
    python -m experiments.amm_nrr --source=S.obj --target=T.obj --out=DIR [--radius=5 --alpha=100 \
        --beta=10 --use_aa=true]          # one pair (`paper` preset); --radius=5 is the authors'
                                          # default, without it the radius comes from the mesh

Presets (`PRESETS` below, listed by --help):
  tiny   seconds: a synthetic pair generated in code (bumpy square, smooth deformation, noise);
         `data_dir` is empty (the pair reads no files).
  small  the shared pairs d1 (radius 8) and d2 (radius 5), AA on and off, compared with the
         authors' s2tres.obj; plus the Welsch vs least-squares robustness sweep (3 levels).
  paper  the official weights (alpha 100, beta 10, AA on) on d1 and d2 with their example radii,
         AA and plain MM, and the full robustness sweep (5 levels).

`config.solver` holds the fields of `research.amm_nrr.solver.Options` (its defaults are the
official CLI's but two: the radius, 0 = from the mesh, where the authors' default is 5, and the
first Welsch parameter, `nu_start=median_or_tail`, where the official code's is `median`):
`--config.solver.alpha=100`, `--config.solver.dtype=float64`, `--config.solver.alignment=plane`,
`--config.solver.nu_start=median`, ... `solver.radius` is the explicit pair's node radius and
`solver.use_aa` the variant run first; the shared pairs, the synthetic pair and the robustness
sweep set their own radius. The binary's short flags map onto these fields
(`--alpha` -> `--config.solver.alpha`, see experiments/amm_nrr.py).

`--config.pairs=d1:8` picks shared pairs (NAME:RADIUS under `--config.data_dir`);
`--config.source/target` (or --source/--target) register one explicit pair instead (then
`data_dir` and `pairs` are not read: leave them at their defaults). A data folder given with
the synthetic pair is an error, and so is any value that breaks a rule of
research/amm_nrr/config_rules.py (checked before any work).
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import options_config, select_preset
from research.amm_nrr import config_rules, solver

# What each preset runs, its wall time on the 2-core CPU and what it needs (listed by --help).
PRESETS = {
    "tiny": "a synthetic pair generated in code, AA, at most 40 iterations per stage; about 8 s on "
    "the 2-core CPU (2026-12-04); no GPU, no data files",
    "small": "d1 (radius 8) and d2 (radius 5), AA and plain MM vs the authors' s2tres.obj, plus "
    "the 3-level robustness sweep; 75 s on the idle 2-core CPU (2026-12-04); no GPU; d1/d2 "
    "shipped in ../shared/data",
    "paper": "the official weights on d1 and d2, AA and plain MM, plus the 5-level robustness "
    "sweep; about 85 s on the 2-core CPU (2026-12-04); no GPU; d1/d2 shipped in "
    "../shared/data",
}


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data_dir = config_rules.DEFAULT_DATA_DIR  # the shared pairs' folder
    c.pairs = config_rules.DEFAULT_PAIRS  # NAME:RADIUS, comma-separated
    c.source = ""  # an explicit pair replaces `pairs` (left at its default)
    c.target = ""
    c.landmarks = ""  # file of `source_index target_index` lines, for the explicit pair
    c.compare_no_aa = True  # also run plain MM (same loop, AA off)
    c.solver = options_config(solver.Options)

    c.synthetic = ml_collections.ConfigDict()
    c.synthetic.enabled = False
    c.synthetic.grid = 16
    c.synthetic.density = 1  # target sampling / source sampling
    c.synthetic.amplitude = 0.01
    c.synthetic.noise = 0.002
    c.synthetic.radius = 3.0

    c.robustness = ml_collections.ConfigDict()
    c.robustness.enabled = False
    c.robustness.levels = (0.0, 0.5, 1.0)
    c.robustness.grid = 24
    c.robustness.density = 2
    c.robustness.radius = 3.0
    c.robustness.amplitude = 0.01
    c.robustness.noise = 0.005  # sigma / bbox diagonal at level 1
    c.robustness.outliers = 0.3  # outlier points / target points at level 1
    c.robustness.cut = 0.3  # fraction of the target cut away at level 1
    return c


def tiny() -> ml_collections.ConfigDict:
    c = base()
    c.synthetic.enabled = True
    c.data_dir = ""  # the synthetic pair reads no files
    c.compare_no_aa = False
    c.solver.max_iter = 40
    return c


def small() -> ml_collections.ConfigDict:
    c = base()
    c.robustness.enabled = True
    return c


def paper() -> ml_collections.ConfigDict:
    c = base()
    c.robustness.enabled = True
    c.robustness.levels = (0.0, 0.25, 0.5, 0.75, 1.0)
    return c


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return select_preset("amm_nrr", preset, {"tiny": tiny, "small": small, "paper": paper})
