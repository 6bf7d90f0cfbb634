"""Configs of the lightweight reconstruction network for unsupervised surface defect detection
(arXiv 2212.12878): a convolutional autoencoder trained on defect-free images only, under the
losses L2 / L1 / SSIM / SSIM + L1, against a non-learned per-pixel Gaussian.

    python -m experiments.defect_ae --config=experiments/configs/defect_ae.py:<preset> --workdir=DIR

Presets (`PRESETS` below: what each runs, its time on the 2-core CPU, what it needs):
  tiny   seconds: synthetic textures with planted spots and scratches; for tests.
  small  Magnetic Tile (../shared/data/images/magnetic-tile-defect) at 128x128: train on part
         of Free, test on held-out Free and Blowhole / Break / Crack; 4 losses x 3 seeds.
  mvtec  one MVTec AD category (--config.data.data_dir=DIR --config.data.category=carpet).
  paper  Magnetic Tile at 256x256 with the public SSIM autoencoder's widths and patch size.

Override anything, e.g. `--config.losses=ssim_l1 --config.train.steps=3000`.
`config.train` holds `research.defect_ae.fit.TrainOptions` but its `loss` (set per run from
`config.losses`), `config.model` `fit.ModelOptions`, `config.inspect`
`evaluate.InspectOptions`.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import options_config, select_preset
from research.defect_ae.evaluate import InspectOptions
from research.defect_ae.fit import ModelOptions, TrainOptions

MAGNETIC_TILE = "../shared/data/images/magnetic-tile-defect"


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 3
    c.losses = "l2,l1,ssim,ssim_l1"
    c.baseline = True
    c.data = ml_collections.ConfigDict(
        dict(
            source="magnetic_tile",  # or "synthetic", "mvtec"
            data_dir=MAGNETIC_TILE,
            classes="Free,Blowhole,Break,Crack",  # magnetic_tile: the first is defect-free
            category="",  # mvtec
            image_size=128,
            channels=1,
            val_fraction=0.2,
            test_fraction=0.2,
            split_seed=0,
            num_free=0,  # synthetic
            num_defective=0,  # synthetic
        )
    )
    c.model = options_config(ModelOptions)
    c.train = options_config(TrainOptions)
    del c.train["loss"]  # each run's loss comes from c.losses
    # SSIM over every pixel of the 32x32 training patches: averaged over the interior only (as
    # skimage and tf.image.ssim), the 5-pixel band at each patch border (53% of its pixels) is
    # never trained under the SSIM loss and the sliding-window reconstruction shows a grid
    # there. The `paper` preset's 128x128 patches keep the interior mean.
    c.train.ssim_crop = False
    c.inspect = options_config(InspectOptions)
    # One optimizer step per jitted call: under lax.scan (steps_per_call > 1) XLA:CPU runs
    # these convolutions about 10x slower per step (56 vs 578 ms measured, batch 32 of 32x32).
    c.steps_per_call = 1
    c.checkpoint_every = 500
    c.log_every = 100
    c.figure_images = 1  # test images per class in the detection figure (0: none)
    return c


def tiny() -> ml_collections.ConfigDict:
    c = base()
    c.num_seeds = 1
    c.losses = "l2,ssim_l1"
    c.data.update(source="synthetic", data_dir="", image_size=64, num_free=48, num_defective=16)
    c.train.update(steps=200, batch_size=16)
    c.log_every = 50
    return c


def small() -> ml_collections.ConfigDict:
    return base()


def mvtec() -> ml_collections.ConfigDict:
    c = base()
    c.data.update(source="mvtec", data_dir="", category="carpet", image_size=256, channels=3)
    c.data.val_fraction = 0.1
    c.train.update(patch_size=64, steps=10_000)
    c.model.update(widths=(32, 64, 128, 128), bottleneck=32)
    return c


def paper() -> ml_collections.ConfigDict:
    c = base()
    c.data.image_size = 256
    c.train.update(patch_size=128, steps=20_000, ssim_crop=True)
    c.model.update(widths=(32, 64, 128, 128), bottleneck=32)
    return c


PRESETS = {
    "tiny": "synthetic 64x64 textures with planted spots and scratches, L2 and SSIM + L1, 200 "
    "steps; 43 s on the 2-core CPU (2026-12-04); no GPU, no data files",
    "small": "Magnetic Tile at 128x128, 4 losses x 3 seeds of 1,500 steps and the per-pixel "
    "Gaussian; 21 min 40 s on the 2-core CPU (2026-12-04); no GPU; needs "
    "../shared/data/images/magnetic-tile-defect",
    "mvtec": "one MVTec AD category at 256x256 (RGB), 64x64 patches, 10,000 steps, 4 losses x 3 "
    "seeds; not measured (no MVTec AD data on this machine; a GPU is advised); needs "
    "--config.data.data_dir",
    "paper": "Magnetic Tile at 256x256, 128x128 patches, widths 32-64-128-128, 20,000 steps, "
    "4 losses x 3 seeds; not run on the 2-core CPU (a GPU is advised)",
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return select_preset(
        "defect_ae", preset, {"tiny": tiny, "small": small, "mvtec": mvtec, "paper": paper}
    )
