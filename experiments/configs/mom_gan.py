"""Configs of MoM-GANs (Xie, Xu, Yao, Zhang, arXiv 2212.13741) against the robust JS-GAN,
(MoM-)WGAN, vanilla GAN and the classical location estimators.

    python -m experiments.mom_gan --config=experiments/configs/mom_gan.py:<preset> --workdir=DIR

Presets (`PRESETS` below: what each runs, its time on the 2-core CPU, what it needs):
  tiny   seconds: p = 2, eps in {0, 0.2}, every estimator, a few epochs; for tests.
  small  p in {2, 10, 50}, eps in {0, 0.05, 0.1, 0.2}, every estimator, 3 seeds.
  gao    the robust JS-GAN's setting: p = 100, eps = 0.2, n = 50,000, Q = N(5 1_p, I_p); every
         GAN with the location generator G(z) = z + b and the robust JS-GAN's schedule.
  paper  p in {2, 5, 10, 100}, eps in {0, 0.05, 0.1, 0.2}, n = 50,000, 3 seeds.

Override anything, e.g. `--config.contamination.outliers=cauchy`,
`--config.gans.mom_gan.num_blocks=12`.
`config.gans.<method>` holds the fields of `research.mom_gan.gan.GANOptions`; the defaults of
each method are `research.mom_gan.methods.GAN_METHODS`. Every data set is generated in code.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import options_config, select_preset
from research.mom_gan.contamination import Contamination
from research.mom_gan.methods import GAN_METHODS

ALL = "mean,coord_median,geo_median,inlier_mean,robust_jsgan,gan,mom_jsgan,wgan,mom_wgan,mom_gan"


def base(**schedule) -> ml_collections.ConfigDict:
    """Every GAN method of `GAN_METHODS`, with the schedule fields in `schedule` replaced."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 3
    c.methods = ALL
    c.dims = (2, 10, 50)
    c.eps_values = (0.0, 0.05, 0.1, 0.2)
    c.num_train = 50_000
    c.num_eval = 5000  # generated and clean hold-out points for sliced W2 and MMD
    c.contamination = options_config(Contamination)
    c.gans = ml_collections.ConfigDict(
        {name: options_config(opts, **schedule) for name, opts in GAN_METHODS.items()}
    )
    c.checkpoint_every_epochs = 50
    c.log_every_epochs = 25
    return c


def tiny() -> ml_collections.ConfigDict:
    c = base(batch_size=100, epochs=12, avg_epochs=0)
    c.num_seeds, c.dims, c.eps_values = 1, (2,), (0.0, 0.2)
    c.num_train, c.num_eval = 2000, 1000
    c.log_every_epochs = 6
    return c


def small() -> ml_collections.ConfigDict:
    c = base(batch_size=200, epochs=60)
    c.gans.robust_jsgan.avg_epochs = 10  # the last sixth of the epochs, as 25 of 150
    c.num_train = 10_000
    c.log_every_epochs = 20
    return c


def gao() -> ml_collections.ConfigDict:
    """Every GAN with the location generator G(z) = z + b started at the coordinate-wise median
    and the robust JS-GAN's schedule (150 epochs of batch 500, 5 D steps per G step, the last
    25 epochs averaged); each keeps its objective and optimiser. `mom_jsgan_k12` is MoM-JS-GAN
    with K = 12 blocks instead of the rule's."""
    c = base(generator="location", init="median", disc_hidden=(20,), batch_size=500, epochs=150)
    c.methods = (
        "mean,coord_median,geo_median,inlier_mean,robust_jsgan,mom_jsgan,mom_jsgan_k12,"
        "mom_wgan,mom_gan"
    )
    c.num_seeds, c.dims, c.eps_values = 3, (100,), (0.2,)
    for name in c.gans:
        c.gans[name].avg_epochs = 25
    # MoM-JS-GAN with the robust JS-GAN's discriminator and optimiser (Adam 1e-3 is for MLPs).
    c.gans.mom_jsgan.update(disc_activation="leaky_relu", optimizer="sgd", lr_d=0.2, lr_g=0.02)
    c.gans.mom_jsgan_k12 = c.gans.mom_jsgan.copy_and_resolve_references()
    c.gans.mom_jsgan_k12.num_blocks = 12
    return c


def paper() -> ml_collections.ConfigDict:
    c = base(batch_size=500, epochs=150)
    c.dims = (2, 5, 10, 100)
    return c


PRESETS = {
    "tiny": "p = 2, eps 0 and 0.2, every estimator, 12 epochs of 2,000 points; about 33 s on "
    "the 2-core CPU (experiments.reproduce, 2026-12-03); no GPU, no data files",
    "small": "p in {2, 10, 50} x eps in {0, 0.05, 0.1, 0.2} x every estimator x 3 seeds, "
    "10,000 points, 60 epochs; 14.4 min on the 2-core CPU beside another job (2026-12-03); "
    "no GPU, no data files",
    "gao": "the robust JS-GAN's setting (p = 100, eps = 0.2, n = 50,000, 150 epochs) for the "
    "robust JS-GAN, MoM-JS-GAN (K by rule and K = 12), MoM-WGAN and MoM-GAN, 3 seeds; "
    "4 min 2 s on the idle 2-core CPU (2026-12-03); no GPU, no data files",
    "paper": "p in {2, 5, 10, 100} x eps in {0, 0.05, 0.1, 0.2}, n = 50,000, 150 epochs, every "
    "estimator, 3 seeds; not run on the 2-core CPU (an estimated 3-5 h there, from the "
    "per-fit times of small and gao); no GPU needed, no data files",
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return select_preset(
        "mom_gan", preset, {"tiny": tiny, "small": small, "gao": gao, "paper": paper}
    )
