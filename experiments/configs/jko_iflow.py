"""Configs of JKO-iFlow (Xu, Cheng, Xie, NeurIPS 2023) vs an end-to-end CNF baseline.

    python -m experiments.jko_iflow --config=experiments/configs/jko_iflow.py:<preset> --workdir=DIR

Presets (`PRESETS` below: what each runs, its time on the 2-core CPU, what it needs):
  tiny      seconds: 8gaussians, 2 small blocks, for tests.
  small     about 31 minutes on the CPU: every 2D density (6 toy densities, the correlated
            Gaussian, rose, tree), JKO-iFlow vs the baseline at equal number of optimizer steps.
  rose      the rose image density in the setting measured with the official code on this CPU:
            8 blocks x 250 iterations, batch 2000, width 128, 3 RK4 sub-steps, lr 1e-4.
  gaussian  the correlated Gaussian N(0, [[7, 5], [5, 7]]) (closed-form NLL 4.4269).
  paper     the official recipe on rose: 8 blocks x 10,000 iterations (GPU).

Override anything, e.g. `--config.densities=rose,tree --config.jko.iters_per_block=500`.
`--config.data_dir` is the one data folder: it holds `<name>.png` for the image densities
(rose, tree) and `<name>/{train,val,test}.npy` for the tabular benchmarks
(`--config.densities=power --config.data_dir=DIR`); relative paths are relative to the
repository root. It is empty ("") when every chosen density is generated in code (the toy
densities and `gaussian`): a folder given for those is an error, as is a missing one for a
density that reads files (`research/jko_iflow/config_rules.py`).

The `model`, `jko` (with `jko.reparam`), `baseline` and `eval` sub-dicts are built from the
frozen options dataclasses `flow.ModelOptions`, `jko.JKOOptions`, `jko.BaselineOptions` and
`evaluate.EvalOptions` of `research/jko_iflow`, which hold the defaults; presets override them.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import options_config, select_preset
from research.jko_iflow.evaluate import EvalOptions
from research.jko_iflow.flow import ModelOptions
from research.jko_iflow.jko import BaselineOptions, JKOOptions


def base() -> ml_collections.ConfigDict:
    """The official setting on rose; the method sub-dicts hold the options dataclasses' defaults."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.densities = "rose"  # comma-separated: TOY_DENSITIES, rose, tree, or power/gas/...
    c.data_dir = "../shared/data/densities2d"  # rose.png, tree.png; "" for generated densities
    c.num_train = 500_000  # official ntr
    c.num_test = 50_000  # official nte
    c.steps_per_call = 25  # optimizer steps per host round-trip (lax.scan)
    c.checkpoint_every = 250
    c.log_every = 50
    c.time_budget_s = 0.0  # > 0: training stops (TimeBudgetExceeded) after this many seconds
    c.model = options_config(ModelOptions)  # the block field (models.flows.VelocityMLP)
    c.jko = options_config(JKOOptions)  # block-by-block training, c.jko.reparam nested
    c.baseline = options_config(BaselineOptions)  # the end-to-end CNF
    c.eval = options_config(EvalOptions)  # NLL, MMD, inversion, plots
    return c


def tiny() -> ml_collections.ConfigDict:
    c = base()
    c.densities = "8gaussians"
    c.data_dir = ""  # generated in code
    c.num_train, c.num_test = 4096, 2048
    c.steps_per_call, c.checkpoint_every, c.log_every = 10, 30, 10
    c.model.width, c.model.depth = 32, 2
    c.jko.num_blocks, c.jko.iters_per_block, c.jko.batch_size = 2, 60, 256
    c.jko.h0, c.jko.h_ratio = 1.0, 1.5
    c.jko.lr = 5e-3
    c.baseline.lr = 5e-3
    c.eval.num_nll, c.eval.num_mmd, c.eval.num_inversion = 512, 512, 256
    c.eval.num_permutations, c.eval.grid_size = 50, 0
    return c


def small() -> ml_collections.ConfigDict:
    c = base()
    c.densities = "checkerboard,8gaussians,pinwheel,2spirals,rings,moons,gaussian,rose,tree"
    c.num_train, c.num_test = 100_000, 20_000
    c.steps_per_call, c.checkpoint_every, c.log_every = 25, 100, 50
    c.model.width = 64
    c.jko.num_blocks, c.jko.iters_per_block, c.jko.batch_size = 4, 200, 1000
    c.jko.h0, c.jko.h_ratio = 0.5, 1.6
    c.jko.lr = 1e-3
    c.baseline.lr = 1e-3
    c.eval.num_nll, c.eval.num_mmd, c.eval.num_inversion = 5000, 5000, 1000
    c.eval.grid_size = 80
    return c


def rose() -> ml_collections.ConfigDict:
    c = base()  # the official JKO_rose.yaml, 250 instead of 10,000 iterations per block
    c.jko.stop_tol = 0.0  # the official rose run trains all 8 blocks
    c.baseline.enabled = False
    return c


def gaussian() -> ml_collections.ConfigDict:
    c = base()
    c.densities = "gaussian"
    c.data_dir = ""  # generated in code
    c.num_train, c.num_test = 100_000, 10_000  # official 2d_gaussian.yaml
    c.jko.num_blocks, c.jko.step_sizes, c.jko.num_substeps = 2, (10.0, 10.0), 5
    c.jko.iters_per_block = 500
    c.jko.lr = 1e-3
    c.baseline.enabled = False
    c.eval.num_nll = 10_000
    return c


def paper() -> ml_collections.ConfigDict:
    c = base()
    c.jko.iters_per_block = 10_000
    c.jko.stop_tol = 0.0
    c.jko.reparam.rounds, c.jko.reparam.iters_per_block = 1, 2000
    c.checkpoint_every = 1000
    return c


PRESETS = {
    "tiny": "8gaussians, 2 blocks x 60 iterations, width 32, JKO-iFlow and the baseline; "
    "about 32 s on the 2-core CPU (experiments.reproduce, 2026-12-03); no GPU, no data files",
    "small": "all nine 2D densities (toy, Gaussian, rose, tree), up to 4 blocks x 200 iterations, "
    "JKO-iFlow vs the baseline; about 25 min (1491 s) on the idle 2-core CPU (2026-12-03); no "
    "GPU; rose.png and tree.png, shipped in ../shared/data/densities2d",
    "rose": "rose, 8 blocks x 250 iterations, batch 2000, width 128 (the official code's measured "
    "setting), no baseline; about 5 min (297 s) on the idle 2-core CPU (2026-12-03); no GPU; "
    "rose.png, shipped in ../shared/data/densities2d",
    "gaussian": "correlated Gaussian (closed-form NLL 4.4269), 2 blocks x 500 iterations, no "
    "baseline; about 3.3 min (197 s) on the idle 2-core CPU (2026-12-03); no GPU, no data files",
    "paper": "the official rose recipe, 8 blocks x 10,000 iterations + one reparameterization "
    "round, with the baseline; not measured on the 2-core CPU (hours there); meant for a GPU; "
    "rose.png, shipped in ../shared/data/densities2d",
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return select_preset(
        "jko_iflow",
        preset,
        {"tiny": tiny, "small": small, "rose": rose, "gaussian": gaussian, "paper": paper},
    )
