"""GAN fits: each GAN estimator recovers a clean Gaussian's mean; averaging, resuming."""

import dataclasses

import jax
import numpy as np
import pytest

from research.mom_gan import gan
from research.mom_gan.contamination import Contamination, huber_sample
from research.mom_gan.methods import GAN_METHODS

# A short schedule for every method: 2,000 points, batches of 100, 5 D steps per G step.
SHORT = dict(batch_size=100, epochs=40, avg_epochs=10)


def fit_clean(method, tmp_path, dim=2, **overrides):
    opts = dataclasses.replace(GAN_METHODS[method], **{**SHORT, **overrides})
    x, _ = huber_sample(0, 2000, dim, 0.0, Contamination())
    x = x + 1.5  # the clean mean is 1.5 * 1_p
    params, info = gan.fit(opts, x, 0.0, 0, str(tmp_path / method))
    est = gan.estimate(opts, params, dim, num_samples=4000, seed=1)
    return est, info, opts


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,overrides,tol",
    [
        ("robust_jsgan", dict(init="zero", lr_g=0.1), 0.15),
        ("mom_jsgan", dict(num_blocks=5), 0.3),
        ("mom_gan", dict(num_blocks=5, lr_d=1e-3, lr_g=1e-3), 0.3),
        ("wgan_gp", dict(lr_d=5e-3, lr_g=5e-3), 0.3),
    ],
)
def test_each_gan_recovers_a_clean_gaussian_mean(method, overrides, tol, tmp_path):
    """`gan` and `wgan` are `mom_jsgan` and `mom_gan` with one block, `mom_wgan` is `mom_gan`
    with 12: these four cover every objective, generator family and optimiser."""
    est, info, opts = fit_clean(method, tmp_path, **overrides)
    assert info["generator_iterations"] == opts.epochs * opts.iters_per_epoch(2000)
    assert np.linalg.norm(est["mean"] - 1.5) < tol, est["mean"]  # from 0 (or an MLP's output)
    assert est["samples"].shape == (4000, 2)


def test_location_fit_averages_the_last_epochs_and_resumes(tmp_path):
    opts = dataclasses.replace(GAN_METHODS["robust_jsgan"], batch_size=100, epochs=6, avg_epochs=2)
    x, _ = huber_sample(0, 1000, 3, 0.1, Contamination())
    step = gan.make_train_step(opts, 3, 1, opts.iters_per_epoch(1000))
    batch_fn = gan.epoch_batches(x, opts, seed=0)
    state = gan.init_state(opts, x, seed=0)
    np.testing.assert_allclose(state.g_params["params"]["bias"], np.median(x, 0), rtol=1e-6)
    snapshots = []
    for epoch in range(opts.epochs):
        state, metrics = step(state, batch_fn(epoch * 2))  # 2 generator iterations per epoch
        snapshots.append(np.asarray(state.g_params["params"]["bias"]))
    assert int(state.step) == 12 and int(state.avg_count) == 2
    np.testing.assert_allclose(state.avg_params["params"]["bias"], sum(snapshots[-2:]), rtol=1e-5)
    assert set(metrics) == {"loss", "g_loss", "d_real"}

    # fit() = the same epochs through the shared loop; a second call resumes at the end.
    params, _ = gan.fit(opts, x, 0.1, 0, str(tmp_path))
    np.testing.assert_allclose(params["params"]["bias"], sum(snapshots[-2:]) / 2, rtol=1e-5)
    again, _ = gan.fit(opts, x, 0.1, 0, str(tmp_path))
    np.testing.assert_array_equal(again["params"]["bias"], params["params"]["bias"])


def test_location_scale_estimate_reads_the_covariance():
    opts = dataclasses.replace(GAN_METHODS["robust_jsgan"], generator="location_scale")
    x = np.zeros((10, 2), np.float32)
    state = gan.init_state(opts, x, seed=0)
    params = jax.tree.map(np.asarray, state.g_params)
    params["params"]["scale"] = np.array([[2.0, 0.0], [1.0, 1.0]], np.float32)
    est = gan.estimate(opts, params, 2, num_samples=50_000, seed=0)
    np.testing.assert_allclose(est["cov"], [[4.0, 2.0], [2.0, 2.0]])
    np.testing.assert_allclose(np.cov(est["samples"], rowvar=False), est["cov"], atol=0.1)


def test_options_name_a_bad_choice_and_a_too_large_block_count():
    with pytest.raises(ValueError, match="objective = 'tv'"):
        gan.GANOptions(objective="tv")
    with pytest.raises(ValueError, match="num_blocks = 600 exceeds the batch size 500"):
        gan.GANOptions(mom=True, num_blocks=600).blocks(0.1)
    assert gan.GANOptions(mom=True).blocks(0.2) == 201 and gan.GANOptions().blocks(0.2) == 1
    with pytest.raises(ValueError, match="make no generator iteration"):
        gan.GANOptions().iters_per_epoch(100)
