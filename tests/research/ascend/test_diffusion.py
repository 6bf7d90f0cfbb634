"""The DDPM core: schedules, forward marginals, the loss, and both samplers against an exact
denoiser of Gaussian data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.ascend import diffusion


def test_linear_schedule_matches_ddpm():
    s = diffusion.make_schedule("linear", 1000)
    np.testing.assert_allclose(s.betas[np.array([0, -1])], [1e-4, 0.02], rtol=1e-6)
    expected = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(s.alphas_cumprod, expected, rtol=1e-5)
    assert float(s.alphas_cumprod[-1]) < 1e-4  # x_T is almost pure noise


def test_cosine_schedule_follows_its_closed_form():
    s = diffusion.make_schedule("cosine", 1000)
    f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    t = np.array([0, 100, 500, 900])
    np.testing.assert_allclose(s.alphas_cumprod[t], f(t + 1) / f(0), rtol=1e-4, atol=1e-7)
    assert float(s.betas.max()) <= 0.999 + 1e-6  # the cap, in float32


def test_bad_schedule_arguments_raise():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        diffusion.make_schedule("quadratic")
    with pytest.raises(ValueError, match="beta_start"):
        diffusion.make_schedule("linear", beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="unknown sampler"):
        diffusion.SamplerOptions(kind="euler")


@pytest.mark.parametrize("kind", diffusion.SCHEDULES)
def test_forward_marginals_match_the_closed_form(kind):
    """x_t = q_sample(x0, t, eps) over many eps: mean sqrt(a_t) x0, variance 1 - a_t."""
    s = diffusion.make_schedule(kind, 1000)
    x0 = jnp.full((20000, 1), 0.7)
    for step in (0, 250, 999):
        t = jnp.full((20000,), step)
        noise = jax.random.normal(jax.random.PRNGKey(step), x0.shape)
        xt = np.asarray(diffusion.q_sample(s, x0, t, noise))
        a = float(s.alphas_cumprod[step])
        assert abs(xt.mean() - np.sqrt(a) * 0.7) < 4 * np.sqrt((1 - a) / 20000) + 1e-6
        assert abs(xt.var() - (1 - a)) < 0.05 * (1 - a) + 1e-7


def test_epsilon_loss_is_zero_for_the_true_noise_and_drops_labels():
    s = diffusion.make_schedule("linear", 100)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (16, 4, 4, 1))
    key = jax.random.PRNGKey(1)
    # Recover the noise the loss draws: same key split as inside epsilon_loss.
    k_t, k_noise, _ = jax.random.split(key, 3)
    t_drawn = jax.random.randint(k_t, (16,), 0, 100)
    noise = jax.random.normal(k_noise, x0.shape)
    seen = {}

    def oracle(xt, t, y):
        seen["y"] = y
        np.testing.assert_array_equal(t, t_drawn)
        return noise

    y = jnp.arange(16) % 3
    loss = diffusion.epsilon_loss(oracle, s, x0, y, key, label_dropout=0.5, null_label=3)
    assert float(loss) == 0.0
    dropped = np.asarray(seen["y"]) == 3
    assert 0 < dropped.sum() < 16  # some labels dropped to the null label, some kept
    np.testing.assert_array_equal(np.asarray(seen["y"])[~dropped], np.asarray(y)[~dropped])
    zero = diffusion.epsilon_loss(lambda xt, t, y: jnp.zeros_like(xt), s, x0, y, key)
    np.testing.assert_allclose(zero, jnp.mean(noise**2), rtol=1e-6)


def _gaussian_denoiser(schedule, mean, std):
    """The exact E[eps | x_t] for data ~ N(mean, std^2 I): x_t ~ N(sqrt(a) m, a s^2 + 1 - a)."""

    def eps_fn(params, x, t, y):
        a = schedule.alphas_cumprod[t].reshape((-1,) + (1,) * (x.ndim - 1))
        m = mean + params * y.reshape((-1,) + (1,) * (x.ndim - 1))  # class c shifts the mean
        return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * m) / (a * std**2 + 1 - a)

    return eps_fn


@pytest.mark.parametrize(
    "options",
    [
        diffusion.SamplerOptions(kind="ddpm", variance="small", clip_denoised=False),
        diffusion.SamplerOptions(kind="ddpm", variance="large", clip_denoised=False),
        # DDIM is a first-order solver: exact at every step; at 50 steps the std of this narrow
        # Gaussian comes out 0.178 (its discretisation error, 0.196 at 200 steps).
        diffusion.SamplerOptions(kind="ddim", steps=1000, clip_denoised=False),
        diffusion.SamplerOptions(kind="ddim", steps=1000, eta=1.0, clip_denoised=False),
    ],
    ids=["ddpm-small", "ddpm-large", "ddim", "ddim-eta1"],
)
def test_samplers_recover_gaussian_data_from_the_exact_denoiser(options):
    schedule = diffusion.make_schedule("linear", 1000)
    mean, std = 0.3, 0.2
    sample = diffusion.make_sampler(
        _gaussian_denoiser(schedule, mean, std), schedule, options, (2,)
    )
    x = np.asarray(sample(jnp.float32(0.0), jax.random.PRNGKey(0), jnp.zeros(4000, jnp.int32)))
    assert np.all(np.isfinite(x))
    # 8000 values: the mean's s.e. is 0.2 / 90 = 0.002; the std's about 0.0016.
    assert abs(x.mean() - mean) < 0.01
    assert abs(x.std() - std) < 0.012


def test_ddim_timesteps_are_ddim_uniform_skip():
    np.testing.assert_array_equal(diffusion.ddim_timesteps(1000, 50)[:3], [0, 20, 40])
    assert len(diffusion.ddim_timesteps(1000, 50)) == 50
    assert len(diffusion.ddim_timesteps(10, 50)) == 10


def test_guidance_extrapolates_from_the_unconditional_model():
    """With class c shifting the data mean by c * 0.5, scale s moves the mean by s * c * 0.5
    (the guided epsilon of Gaussian data is the epsilon of the mean u + s (c - u))."""
    schedule = diffusion.make_schedule("linear", 1000)
    eps_fn = _gaussian_denoiser(schedule, 0.0, 0.1)
    labels = jnp.ones(2000, jnp.int32)
    for scale in (0.0, 1.0, 2.0):
        options = diffusion.SamplerOptions(steps=200, guidance_scale=scale, clip_denoised=False)
        sample = diffusion.make_sampler(eps_fn, schedule, options, (1,), null_label=0)
        x = np.asarray(sample(jnp.float32(0.5), jax.random.PRNGKey(1), labels))
        assert abs(x.mean() - 0.5 * scale) < 0.02, scale


def test_clipping_keeps_samples_in_range():
    schedule = diffusion.make_schedule("linear", 1000)
    eps_fn = _gaussian_denoiser(schedule, 0.9, 0.5)  # much of the data lies beyond 1
    sample = diffusion.make_sampler(
        eps_fn, schedule, diffusion.SamplerOptions(steps=20, clip_denoised=True), (3,)
    )
    x = np.asarray(sample(jnp.float32(0.0), jax.random.PRNGKey(2), jnp.zeros(500, jnp.int32)))
    assert x.max() <= 1.0 + 1e-5 and x.min() >= -1.0 - 1e-5
