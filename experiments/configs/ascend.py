"""Configs of ASCEND (arXiv 2212.13771): DDPM with a vanilla ViT, IU-ViT, ASCEND or a U-Net as the
denoiser, trained on the same batches and scored by the Frechet distance, precision and recall
on a classifier's features.

    python -m experiments.ascend --config=experiments/configs/ascend.py:<preset> --workdir=DIR

Presets (`PRESETS` below: what each runs, its time, what it needs):
  tiny     about a minute: scikit-learn's digits at 16x16, the four backbones, class-conditional
           with classifier-free guidance; for tests.
  small    MNIST 28x28 (`../shared/data/images/mnist`), the four backbones at matched parameters
           and equal steps, unconditional, 3 seeds; 76 min on the 2-core CPU.
  cifar10  CIFAR-10 32x32 with U-ViT-S/2's recipe (patch 2, width 512, 13 blocks, 8 heads; AdamW
           2e-4, weight decay 0.03, betas 0.99 / 0.999, 2.5k warm-up, batch 128) and DDPM's
           U-Net; for GPUs (override train.steps for a short run).
  paper    cifar10 at the papers' length (500k steps) with 50k samples from DDPM's 1,000-step
           ancestral sampler.

`config.model` holds `research.ascend.method.ModelOptions`, `config.diffusion`
`DiffusionOptions`, `config.train` `TrainOptions`, `config.sampler`
`research.ascend.diffusion.SamplerOptions`, `config.data` `research.ascend.data.DataOptions`.
`config.eval.features = "package.module:function"` plugs in another feature extractor (e.g. an
Inception-v3 port with its weights; research/ascend/README.md).
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import options_config, select_preset
from research.ascend.data import DataOptions
from research.ascend.diffusion import SamplerOptions
from research.ascend.method import DiffusionOptions, ModelOptions, TrainOptions

MNIST = "../shared/data/images/mnist"
CIFAR10 = "../shared/data/images/cifar10"


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 1
    c.backbones = "vit,iu_vit,ascend,unet"
    c.data = options_config(DataOptions)
    c.model = options_config(ModelOptions)
    c.diffusion = options_config(DiffusionOptions)
    c.train = options_config(TrainOptions)
    c.sampler = options_config(SamplerOptions)
    c.eval = ml_collections.ConfigDict(
        dict(
            num_samples=10_000,  # generated images scored per run
            batch_size=500,  # images per sampler call
            num_reference=10_000,  # training images the FD compares against
            nearest_k=3,  # precision / recall's k-th neighbour
            features="",  # "package.module:function": another feature extractor
            classifier_steps=3000,  # the feature classifier's training steps
            feature_dim=64,
            grid_size=64,  # samples saved as samples.png / samples.npy
        )
    )
    c.checkpoint_every = 5000
    c.log_every = 500
    c.prefetch = 2
    return c


def tiny() -> ml_collections.ConfigDict:
    c = base()
    c.data.update(source="digits", image_size=16)
    c.model.update(patch_size=4, hidden_dim=32, depth=5, num_heads=4, ascend_decoder_depth=1)
    c.model.update(
        unet_channels=16,
        unet_channel_mult=(1, 2),
        unet_num_res_blocks=1,
        unet_attention_resolutions=(8,),
        unet_num_groups=8,
        unet_dropout=0.0,
    )
    c.diffusion.update(class_conditional=True)
    c.train.update(batch_size=32, steps=40, lr=1e-3, b1=0.9, warmup_steps=10)
    c.train.update(ema_decay=0.999, ema_warmup=True)
    c.sampler.update(steps=10, guidance_scale=1.5)
    c.eval.update(
        num_samples=64, batch_size=64, num_reference=256, classifier_steps=100, grid_size=16
    )
    c.eval.feature_dim = 32
    c.checkpoint_every = 20
    c.log_every = 20
    return c


def small() -> ml_collections.ConfigDict:
    c = base()
    c.num_seeds = 3
    c.data.update(source="mnist", data_dir=MNIST)
    c.model.update(patch_size=4, hidden_dim=64, depth=7, num_heads=4, ascend_decoder_depth=2)
    c.model.update(
        unet_channels=16,  # 408,641 parameters against IU-ViT's 388,442
        unet_channel_mult=(1, 2, 2),
        unet_num_res_blocks=2,
        unet_attention_resolutions=(7,),
        unet_num_groups=8,
        unet_dropout=0.0,
    )
    c.train.update(batch_size=64, steps=1000, lr=1e-3, b1=0.9, warmup_steps=100)
    c.train.update(ema_decay=0.995, ema_warmup=True)
    c.eval.update(num_samples=500, batch_size=250, num_reference=10_000, classifier_steps=2000)
    c.checkpoint_every = 500
    c.log_every = 200
    return c


def cifar10() -> ml_collections.ConfigDict:
    c = base()
    c.data.update(source="cifar10", data_dir=CIFAR10, random_flip=True)
    c.train.update(batch_size=128, steps=500_000)
    c.eval.update(num_samples=10_000, classifier_steps=5000)
    return c


def paper() -> ml_collections.ConfigDict:
    c = cifar10()
    c.sampler.update(kind="ddpm")
    c.eval.update(num_samples=50_000, num_reference=50_000)
    return c


PRESETS = {
    "tiny": "digits 16x16, the four backbones (width 32) class-conditional with guidance, 40 "
    "steps, 64 samples; about 1 min on the 2-core CPU (2026-12-05); no GPU, no data files",
    "small": "MNIST 28x28 (../shared/data/images/mnist), the four backbones at matched "
    "parameters, unconditional, 1,000 steps of 64 x 3 seeds, 500 DDIM-50 samples each; 76 min "
    "on the 2-core CPU (2026-12-05, other jobs sharing it part of the time); no GPU",
    "cifar10": "CIFAR-10 (../shared/data/images/cifar10) with U-ViT-S/2's recipe and DDPM's "
    "U-Net, 500k steps; needs a GPU (override train.steps for a short run)",
    "paper": "cifar10 with 50k DDPM-1000 samples for the FD; needs a GPU (days per backbone)",
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return select_preset(
        "ascend", preset, {"tiny": tiny, "small": small, "cifar10": cifar10, "paper": paper}
    )
