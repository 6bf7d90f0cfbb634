"""Configs of "Delving into Semantic Scale Imbalance" (Ma, Jiao et al., ICLR 2023): the semantic
scale of classes against per-class accuracy, and DSB learning against the long-tailed baselines.

    python -m experiments.semantic_scale --config=experiments/configs/semantic_scale.py:<preset> \
        --workdir=DIR

Presets:
  tiny        seconds: digits-LT (imbalance 10) and balanced digits, a small CNN, CE / LDAM-DRW /
              DSB-CE, 1 seed, 12 epochs.
  small       the CPU study: MNIST-LT (head class 200 images) and digits-LT at imbalance 100 / 50
              / 10 and their sample-balanced versions, the small CNN, every method, 3 seeds.
  cifar10_lt  the LDAM-DRW recipe on CIFAR-10-LT (imbalance 100), ResNet-32, CE / LDAM-DRW /
              DSB-CE, 200 epochs (GPU).
  paper       `cifar10_lt` at imbalance 100 and 10 with every method and 3 seeds (GPU).

Override anything, e.g. `--config.methods=ce,dsb_ce --config.imbalance_factors=100,1`,
`--config.data.mnist_dir=PATH` (relative paths are relative to the repository root),
`--config.dsb.alpha=0.5`. research/semantic_scale/config_rules.py lists the rules.

`train`, `loss` and `dsb` are built from the options dataclasses in
research/semantic_scale/steps.py, which hold the LDAM-DRW defaults and document each field.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import options_config, select_preset
from research.semantic_scale import steps

ALL_METHODS = ",".join(steps.METHODS)
MNIST_DIR = "../shared/data/images/mnist"
CIFAR10_DIR = "../shared/data/images/cifar10"

# What each preset runs, its wall time on the 2-core CPU (research/semantic_scale/README.md)
# and what it needs; `python -m experiments.semantic_scale --help` prints it.
PRESETS = {
    "tiny": "digits-LT10 and balanced digits, small CNN, CE / LDAM-DRW / DSB-CE, 1 seed, 12 "
    "epochs; 28 s on the 2-core CPU (2026-12-04); no GPU, no data files",
    "small": "MNIST-LT (head class 200) and digits-LT at 100 / 50 / 10 + balanced, small CNN, 9 "
    "methods x 3 seeds, 30 epochs; about 29 min on the 2-core CPU (2026-12-04); no GPU; needs "
    "../shared/data/images/mnist",
    "cifar10_lt": "CIFAR-10-LT (100), ResNet-32, CE / LDAM-DRW / DSB-CE, 200 epochs, 1 seed; not "
    "run here (about 10 h per run on the 2-core CPU: 1.86 s per step); a GPU and "
    "../shared/data/images/cifar10",
    "paper": "CIFAR-10-LT at 100 and 10, ResNet-32, 9 methods x 3 seeds, 200 epochs; not run "
    "here; a GPU and ../shared/data/images/cifar10",
}


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 3
    c.methods = ALL_METHODS
    c.datasets = "digits"  # comma-separated: digits, mnist, cifar10
    c.imbalance_factors = (100.0, 50.0, 10.0, 1.0)  # 1: the sample-balanced version
    c.checkpoint_every_epochs = 10
    c.keep_checkpoints = False  # delete a run's checkpoints once its result.json is written
    c.log_every = 100

    c.data = ml_collections.ConfigDict()
    c.data.mnist_dir = ""  # the idx files; "" unless config.datasets has mnist
    c.data.cifar10_dir = ""  # train/<class>/*, test/<class>/*; "" unless it has cifar10
    c.data.max_per_class = 0  # a cap on n_max, the head class's images (0: the smallest count)
    c.data.subset_seed = 0  # which images the long-tailed / balanced subsets keep
    c.data.split_seed = 0  # digits: the held-out quarter
    c.data.prefetch = 2

    c.model = ml_collections.ConfigDict()
    c.model.name = "small_cnn"  # or resnet32
    c.model.feature_dim = 64  # small_cnn's feature (penultimate) width

    # The LDAM-DRW recipe, scaled to the preset's epochs below.
    c.train = options_config(steps.TrainOptions)
    c.loss = options_config(steps.LossOptions)
    c.dsb = options_config(steps.DSBOptions)

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 500

    c.analysis = ml_collections.ConfigDict()
    c.analysis.many_shot = 100  # many-shot classes: more training images than this
    c.analysis.few_shot = 20  # few-shot classes: fewer than this
    return c


def _cpu_schedule(c: ml_collections.ConfigDict, epochs: int) -> None:
    """The LDAM-DRW schedule compressed to `epochs` (a few hundred steps): a linear warm-up over
    2 epochs, lr x 0.1 at 80% and x 0.01 at 90%, re-weighting (DRW, DSB) from half way. With the
    recipe's x 0.01 at 80% and re-weighting from there, the last few dozen steps move the
    weights too little for re-weighting to matter: DSB-CE made every test prediction of CE on
    digits-LT10. Without a warm-up, class-balanced CE diverged to a constant prediction in its
    first steps at lr 0.1 (MNIST-LT10, loss 7.4 at step 2)."""
    c.train.epochs = epochs
    c.train.warmup_epochs = 2.0
    c.train.decay_epochs = (round(0.8 * epochs), round(0.9 * epochs))
    c.train.decay_factors = (0.1, 0.01)
    c.train.reweight_epoch = epochs // 2
    c.checkpoint_every_epochs = max(1, epochs // 4)


def tiny() -> ml_collections.ConfigDict:
    c = base()
    c.num_seeds = 1
    c.methods = "ce,ldam_drw,dsb_ce"
    c.imbalance_factors = (10.0, 1.0)
    c.train.batch_size = 64
    _cpu_schedule(c, 12)
    c.log_every = 20
    return c


def small() -> ml_collections.ConfigDict:
    c = base()
    c.datasets = "mnist,digits"
    c.data.mnist_dir = MNIST_DIR
    c.data.max_per_class = 200  # MNIST-LT100: 200 ... 2 images per class; balanced: 2,000
    # (digits has 130 to 137 training images per class: its n_max is 130)
    c.train.batch_size = 64
    _cpu_schedule(c, 30)
    return c


def cifar10_lt() -> ml_collections.ConfigDict:
    c = base()
    c.num_seeds = 1
    c.methods = "ce,ldam_drw,dsb_ce"
    c.datasets = "cifar10"
    c.data.cifar10_dir = CIFAR10_DIR
    c.imbalance_factors = (100.0,)
    c.model.name = "resnet32"
    c.eval.batch_size = 1000
    return c


def paper() -> ml_collections.ConfigDict:
    c = cifar10_lt()
    c.num_seeds = 3
    c.methods = ALL_METHODS
    c.imbalance_factors = (100.0, 10.0)
    return c


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return select_preset(
        "semantic_scale",
        preset,
        {"tiny": tiny, "small": small, "cifar10_lt": cifar10_lt, "paper": paper},
    )
