"""Configs of SMMix (Chen et al., ICCV 2023): self-motivated image mixing for ViTs, with the
no-mixing / Mixup / CutMix baselines and the SMMix ablations.

    python -m experiments.smmix --config=experiments/configs/smmix.py:<preset> --workdir=DIR

Presets:
  tiny    seconds: digits at 16 x 16, a 2-block ViT, none / CutMix / SMMix, 1 seed, 12 epochs.
  small   0.7-2 CPU hours: scikit-learn digits upsampled to 16 x 16 (patch 2: an 8 x 8 grid), a
          mini ViT (width 48, 3 blocks, 3 heads), 150 epochs, methods none / Mixup / CutMix /
          SMMix / SMMix without the fine-grained loss / SMMix without consistency, 3 seeds each.
  small_lt  `small` on a long-tailed digits training set (imbalance factor 10), 80 epochs,
          none / CutMix / SMMix, 3 seeds.
  cifar10  the GPU preset: CIFAR-10 32 x 32 from ../shared/data/images/cifar10, a ViT of
          DeiT-T width (192, 3 heads, 6 blocks, patch 4: 64 tokens), the official recipe scaled
          to it (RandAugment m9-mstd0.5, pad-4 crop + flip, drop-path 0.1, label smoothing 0.1),
          batch 256, 200 epochs, the 6 methods x 3 seeds; `experiments.bench.smmix_cifar10.
          run_cifar10` runs it in a time budget with fewer epochs.
  cifar10_cpu  `cifar10` on 200 / 50 images per class (train / test), the mini ViT (width 48,
          3 blocks) at patch 4, batch 64, 10 epochs, no RandAugment, none / CutMix / SMMix x 2
          seeds, on the CPU.
  paper   the official recipe (GPU): DeiT-T (patch 16, 224 x 224) on ImageNet-1k in the
          ImageFolder layout `<data_dir>/{train,val}/<class>/*.JPEG`, 300 epochs, batch 1024
          (lr 5e-4 x 1024 / 512), AdamW wd 0.05, cosine with 5 warm-up epochs, RandAugment
          m9-mstd0.5 (2 ops), drop-path 0.1, label smoothing 0.1, no random erasing and no
          repeated augmentation, SMMix with Mixup (Beta(0.8, 0.8)) switching per batch.

Override anything, e.g. `--config.methods=cutmix,smmix --config.num_seeds=1`,
`--config.data.name=folder --config.data_dir=PATH` (CIFAR-style folders; relative paths are
relative to the repository root; a data_dir with the bundled digits is an error),
`--config.data.imbalance_factor=10` (long-tailed subset), `--config.train.ema_decay=0.9998`.
research/smmix/config_rules.py lists the rules every value must meet.

`model`, `train` and `mix` are built from the method's options dataclasses, which hold their
defaults and document each field: `research.smmix.model.ModelOptions`,
`research.smmix.steps.TrainOptions` and `research.smmix.mixing.MixOptions`
(`--config.mix.switch_prob=1.0` etc.).
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import options_config, select_preset
from research.smmix import mixing, model, steps

SMALL_METHODS = "none,mixup,cutmix,smmix,smmix_no_fine,smmix_no_con"

# What each preset runs, its wall time on the 2-core CPU (research/smmix/README.md) and what it
# needs; `python -m experiments.smmix --help` prints it.
PRESETS = {
    "tiny": "digits 16x16, 2-block ViT, none/CutMix/SMMix, 1 seed, 12 epochs; about 71 s on the "
    "2-core CPU (experiments.reproduce, 2026-12-03); no GPU, no data files (digits ship with "
    "scikit-learn)",
    "small": "digits 16x16, mini ViT, 6 methods x 3 seeds, 150 epochs (56,700 steps); about "
    "65 min on the idle 2-core CPU (217 s per run on average over the 10 of 18 runs that ran "
    "alone, 2026-12-03); no GPU, no data files",
    "small_lt": "small on long-tailed digits (imbalance 10), none/CutMix/SMMix x 3 seeds, 80 "
    "epochs; 14 min wall and CPU on the 2-core CPU, beside another job (2026-12-03); no GPU, "
    "no data files",
    "cifar10": "CIFAR-10 32x32 (ImageFolder in ../shared/data/images/cifar10), ViT width 192 / "
    "6 blocks / patch 4, RandAugment, 6 methods x 3 seeds, 200 epochs; not run in full (GPU; "
    "experiments.bench.smmix_cifar10.run_cifar10 runs it with fewer epochs in a time budget)",
    "cifar10_cpu": "CIFAR-10 subset (2,000 train / 500 test), mini ViT (width 48, 3 blocks) at "
    "patch 4, none/CutMix/SMMix x 2 seeds, 10 epochs; 572 s wall / 284 s CPU on the 2-core CPU "
    "beside three other jobs, first decode of the JPEGs included (2026-12-04); needs the "
    "CIFAR-10 folder, no GPU",
    "paper": "DeiT-T on ImageNet-1k, 300 epochs, Mixup/CutMix vs SMMix; not run here, no time "
    "measured; needs GPUs and ImageNet-1k in ImageFolder layout (not in ../shared/data)",
}


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 3
    c.methods = SMALL_METHODS
    c.steps_per_call = 10  # optimizer steps per jitted call (lax.scan)
    c.checkpoint_every_epochs = 10
    c.keep_checkpoints = False  # delete a run's checkpoints once its result.json is written
    c.log_every = 50
    c.figure_images = 8  # SMMix mixtures drawn in smmix_mixtures.png (0: no figure)

    # The ImageFolder root of data.name = "folder"; "" for the bundled digits (a folder given
    # with digits is an error, not silently ignored).
    c.data_dir = ""

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # or "folder": <data_dir>/<train_split|eval_split>/<class>/*
    c.data.train_split = "train"
    c.data.eval_split = "val"
    c.data.in_memory = True  # folder: decode everything once (CIFAR-size) or stream (ImageNet)
    c.data.image_size = 16
    c.data.test_fraction = 0.25  # digits: stratified held-out share
    c.data.split_seed = 0  # digits: the same split for every seed
    c.data.imbalance_factor = 1.0  # > 1: long-tailed training subset (n_max / n_min)
    c.data.train_per_class = 0  # > 0: that many training images per class (long-tailed: head)
    c.data.eval_per_class = 0  # > 0: that many held-out images per class (in-memory data)
    # In-memory folders are decoded once into uint8 arrays cached here, keyed by the folder's
    # contents; "" = <workdir>/data_cache (the shared data folder is read-only).
    c.data.cache_dir = ""
    c.data.prefetch = 2

    c.augment = ml_collections.ConfigDict()
    c.augment.pad = 2  # in-memory data: zero-pad and random crop (0: off)
    c.augment.flip = False  # horizontal flips change digits' meaning
    c.augment.rand_augment_ops = 0  # CPU presets: off (the short schedules underfit with it)
    c.augment.rand_augment_magnitude = 5.0
    c.augment.rand_augment_std = 0.5
    c.augment.rand_augment_prob = 0.5

    # The base (CPU digits) setting of these three is the options dataclasses' defaults.
    c.model = options_config(model.ModelOptions)
    c.train = options_config(steps.TrainOptions)
    c.mix = options_config(mixing.MixOptions)

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 512
    c.eval.every_epochs = 10
    return c


def tiny() -> ml_collections.ConfigDict:
    c = base()
    c.methods = "none,cutmix,smmix"
    c.num_seeds = 1
    c.model.depth, c.model.hidden_dim, c.model.num_heads = 2, 32, 2
    c.train.epochs = 12
    c.train.base_lr = 6.4e-2  # 8e-3 at batch 64: the 2-block ViT leaves its plateau sooner
    c.train.warmup_epochs = 1.0
    c.steps_per_call = 21  # one epoch per call
    c.checkpoint_every_epochs = 4
    c.eval.every_epochs = 4
    c.figure_images = 4
    return c


def small() -> ml_collections.ConfigDict:
    """The CPU setting of base() trained for 150 epochs (3,150 steps): at 30 epochs every
    method still under-fits and mixing only slows learning (research/smmix/README.md)."""
    c = base()
    c.train.epochs = 150
    c.checkpoint_every_epochs = 50
    c.eval.every_epochs = 25
    return c


def small_lt() -> ml_collections.ConfigDict:
    """`small` on a long-tailed digits training set (imbalance 10: 133 down to 13 images per
    class, 570 in all) for 80 epochs (as many steps as `small`): none / CutMix / SMMix."""
    c = base()
    c.methods = "none,cutmix,smmix"
    c.data.imbalance_factor = 10.0
    c.train.epochs = 80
    c.checkpoint_every_epochs = 40
    c.eval.every_epochs = 20
    return c


def paper() -> ml_collections.ConfigDict:
    c = base()
    c.num_seeds = 1
    c.methods = "mixup_cutmix,smmix"
    c.data_dir = "../shared/data/imagenet"
    c.data.name = "folder"
    c.data.in_memory = False
    c.data.image_size = 224
    c.data.prefetch = 4
    c.augment.pad = 0
    c.augment.rand_augment_ops = 2
    c.augment.flip = True
    c.augment.rand_augment_magnitude = 9.0
    c.model.size = "tiny"
    c.model.patch_size = 16
    c.model.drop_path = 0.1
    c.train.batch_size = 1024
    c.train.warmup_epochs = 5.0
    c.train.epochs = 300
    c.train.base_lr = 5e-4
    c.train.min_lr = 1e-5
    c.steps_per_call = 1
    c.checkpoint_every_epochs = 1
    c.keep_checkpoints = True
    c.log_every = 100
    c.eval.batch_size = 1000
    c.eval.every_epochs = 10
    return c


def cifar10() -> ml_collections.ConfigDict:
    """The GPU preset: CIFAR-10 (50,000 / 10,000 images at 32 x 32) with the official SMMix
    recipe scaled to it. A ViT of DeiT-T's width and heads (192, 3) at half its depth (6
    blocks), patch 4 (an 8 x 8 grid of 64 tokens + the class token), drop-path 0.1; DeiT's
    AdamW wd 0.05, label smoothing 0.1, Mixup 0.8 / CutMix 1.0 / SMMix (switch 0.5) and
    RandAugment m9-mstd0.5 (2 ops); CIFAR's pad-4 random crop and flip replace the random
    resized crop. Batch 256, base lr 2e-3 per 512 (peak 1e-3), 200 epochs with 5 warm-up (as DeiT),
    6 methods x 3 seeds. `experiments.bench.smmix_cifar10.run_cifar10` runs it in a time budget
    with fewer epochs."""
    c = base()
    c.data_dir = "../shared/data/images/cifar10"
    c.data.name = "folder"
    c.data.eval_split = "test"
    c.data.image_size = 32
    c.data.prefetch = 4
    c.augment.pad = 4
    c.augment.flip = True
    c.augment.rand_augment_ops = 2
    c.augment.rand_augment_magnitude = 9.0
    c.model.size = "mini"
    c.model.patch_size = 4
    c.model.hidden_dim, c.model.depth, c.model.num_heads = 192, 6, 3
    c.model.drop_path = 0.1
    c.train.batch_size = 256
    c.train.epochs = 200
    c.train.base_lr = 2e-3
    c.train.warmup_epochs = 5.0
    c.steps_per_call = 39  # 195 steps per epoch = 5 calls
    c.checkpoint_every_epochs = 20
    c.log_every = 195
    c.eval.batch_size = 1000
    c.eval.every_epochs = 20
    return c


def cifar10_cpu() -> ml_collections.ConfigDict:
    """`cifar10` on a subset for the 2-core CPU: 200 training and 50 test images per class
    (2,000 / 500), the digits presets' mini ViT (width 48, 3 blocks, 3 heads) at patch 4,
    batch 64, 10 epochs (1 warm-up), RandAugment and drop-path off (as in the other CPU
    presets: short schedules under-fit with them), none / CutMix / SMMix x 2 seeds."""
    c = cifar10()
    c.methods = "none,cutmix,smmix"
    c.num_seeds = 2
    c.data.train_per_class = 200
    c.data.eval_per_class = 50
    c.data.prefetch = 2
    c.augment.rand_augment_ops = 0
    c.model.hidden_dim, c.model.depth, c.model.num_heads = 48, 3, 3
    c.model.drop_path = 0.0
    c.train.batch_size = 64
    c.train.epochs = 10
    c.train.warmup_epochs = 1.0
    c.steps_per_call = 31  # 2,000 / 64 = 31 steps per epoch: one call
    c.checkpoint_every_epochs = 10
    c.log_every = 31
    c.eval.batch_size = 500
    c.eval.every_epochs = 5
    return c


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return select_preset(
        "smmix",
        preset,
        {
            "tiny": tiny,
            "small": small,
            "small_lt": small_lt,
            "cifar10": cifar10,
            "cifar10_cpu": cifar10_cpu,
            "paper": paper,
        },
    )
