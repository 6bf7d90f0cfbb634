"""The estimators an experiment can compare (`config.methods`), and the GAN recipes' defaults.

Classical (no training): `mean` (sample mean, with the sample covariance), `coord_median`,
`geo_median`, and `inlier_mean`, the mean of the clean points only: an oracle that knows which
points are outliers, the error floor of the sample size.

GANs (`GAN_METHODS`, each a `gan.GANOptions`, overridable as `config.gans.<method>.<field>`).
Every MLP method takes 5 discriminator steps per generator step, so at equal epochs they take
equal numbers of steps.

- `robust_jsgan`: the robust JS-GAN of Gao et al. (their recipe: the `GANOptions` defaults).
- `gan`: a vanilla JS-GAN estimating the whole distribution: ReLU MLP generator (64-64) and
  discriminator (64-64), Adam lr 1e-3 (beta1 0.5).
- `mom_jsgan`: `gan` with the median-of-means real-data term, K by the contamination rule.
- `wgan`: the Wasserstein GAN as the MoM-WGAN code runs it: weight clipping 0.01, RMSprop lr
  5e-5, the same MLPs.
- `mom_wgan`: MoM-WGAN (Staerman et al.): `wgan` with the median-of-means real term over
  K = 12 blocks (their default).
- `mom_gan`: this paper's estimator: the IPM objective sup_D MoM_K[D(x)] - E D(G(z)) over a
  ReLU DNN discriminator kept bounded by clipping (`wgan`'s recipe), with K by the contamination
  rule (`objectives.blocks_for_contamination`: more than twice a batch's outliers).
- `wgan_gp`: Wasserstein with gradient penalty 10, Adam lr 1e-4 (0.5, 0.9).
"""

from __future__ import annotations

from research.mom_gan.estimators import CLASSICAL
from research.mom_gan.gan import GANOptions

_MLP = dict(generator="mlp", disc_hidden=(64, 64), disc_activation="relu", avg_epochs=0, d_steps=5)
_GAN = dict(_MLP, optimizer="adam", lr_d=1e-3, lr_g=1e-3)
_WGAN = dict(_MLP, objective="wasserstein", optimizer="rmsprop", lr_d=5e-5, lr_g=5e-5, clip=0.01)

GAN_METHODS: dict[str, GANOptions] = {
    "robust_jsgan": GANOptions(),
    "gan": GANOptions(**_GAN),
    "mom_jsgan": GANOptions(**_GAN, mom=True),
    "wgan": GANOptions(**_WGAN),
    "mom_wgan": GANOptions(**_WGAN, mom=True, num_blocks=12),
    "mom_gan": GANOptions(**_WGAN, mom=True),
    "wgan_gp": GANOptions(
        **{**_WGAN, "clip": 0.0, "optimizer": "adam", "lr_d": 1e-4, "lr_g": 1e-4},
        gp_weight=10.0,
        adam_b2=0.9,
    ),
}

ORACLE = "inlier_mean"
METHODS = (*CLASSICAL, ORACLE, *GAN_METHODS)
