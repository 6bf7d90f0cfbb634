"""DDPM in JAX: noise schedules, the forward process, the epsilon-prediction loss, and the DDPM
ancestral and DDIM samplers with classifier-free guidance, each a `lax.scan` under `jit`.

    schedule = make_schedule("linear", 1000)             # DDPM: beta 1e-4 .. 0.02
    x_t = q_sample(schedule, x0, t, noise)               # x0, noise: [B, H, W, C]; t: [B] int
    loss = epsilon_loss(eps_fn, schedule, x0, y, key)    # mean squared error on epsilon
    sample = make_sampler(eps_fn, schedule, SamplerOptions(kind="ddim", steps=50), shape)
    images = sample(params, key, labels)                 # [B, H, W, C], labels [B] int32

`eps_fn(params, x_t, t, y) -> epsilon` is the denoiser (`y` [B] int32 class labels, where the
label `null_label` means "no class": classifier-free guidance trains with labels dropped to it).

Conventions follow the official code: DDPM's (hojonathanho/diffusion) linear schedule, posterior
and `clip_denoised` (x0 predicted from epsilon, clipped to [-1, 1], then the posterior mean);
Nichol & Dhariwal's cosine schedule (s = 0.008, betas capped at 0.999); DDIM's
(ermongroup/ddim) uniform time-step skip with alpha-bar = 1 before the first step, so its last
update returns the predicted x0; guidance as Ho & Salimans, eps = eps_u + s (eps_c - eps_u), with
s = 1 the plain conditional model (no unconditional pass).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
EpsFn = Callable[[Any, Array, Array, Array], Array]

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")


class Schedule(NamedTuple):
    """The discrete forward process of T steps (float32 arrays [T]).

    betas[t] is the variance added at step t (t = 0 .. T-1, DDPM's t = 1 .. T);
    alphas_cumprod[t] = prod_{s <= t} (1 - betas[s]), so x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps.
    """

    betas: Array
    alphas_cumprod: Array

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])


def make_schedule(
    kind: str, num_steps: int = 1000, *, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Schedule:
    """`linear`: betas evenly from beta_start to beta_end (DDPM's 1e-4 .. 0.02 at T = 1000);
    `cosine`: alpha-bar(t) = f(t) / f(0), f(t) = cos^2(((t / T) + s) / (1 + s) pi / 2), s = 0.008,
    betas = 1 - alpha-bar(t + 1) / alpha-bar(t) capped at 0.999 (Nichol & Dhariwal 2021).
    Computed in float64, stored as float32."""
    if num_steps < 1:
        raise ValueError(f"a schedule needs at least one step, got {num_steps}")
    if kind == "linear":
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        betas = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    elif kind == "cosine":
        s = 0.008
        f = np.cos((np.arange(num_steps + 1) / num_steps + s) / (1 + s) * np.pi / 2) ** 2
        betas = np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    else:
        raise ValueError(f"unknown noise schedule {kind!r}; choose from {', '.join(SCHEDULES)}")
    return Schedule(
        jnp.asarray(betas, jnp.float32), jnp.asarray(np.cumprod(1.0 - betas), jnp.float32)
    )


def _per_sample(values: Array, t: Array, ndim: int) -> Array:
    """values[t] reshaped to [B, 1, ..., 1] to broadcast against [B, ...] of rank `ndim`."""
    return values[t].reshape((-1,) + (1,) * (ndim - 1))


def q_sample(schedule: Schedule, x0: Array, t: Array, noise: Array) -> Array:
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise. x0, noise: [B, ...]; t: [B] int."""
    a = _per_sample(schedule.alphas_cumprod, t, x0.ndim)
    return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise


def epsilon_loss(
    eps_fn: Callable[[Array, Array, Array], Array],
    schedule: Schedule,
    x0: Array,
    y: Array,
    key: Array,
    *,
    label_dropout: float = 0.0,
    null_label: int = 0,
) -> Array:
    """DDPM's simple loss: E_{t ~ U{0..T-1}, eps ~ N(0, I)} ||eps - eps_fn(x_t, t, y)||^2,
    averaged over every pixel and channel. x0: [B, H, W, C]; y: [B] int32. With
    `label_dropout` > 0 each label is replaced by `null_label` with that probability
    (classifier-free guidance's joint training of the conditional and unconditional model).
    `eps_fn(x_t, t, y)` closes over the parameters (and the dropout key, if any)."""
    k_t, k_noise, k_drop = jax.random.split(key, 3)
    t = jax.random.randint(k_t, (x0.shape[0],), 0, schedule.num_steps)
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
    if label_dropout > 0:
        dropped = jax.random.bernoulli(k_drop, label_dropout, y.shape)
        y = jnp.where(dropped, null_label, y)
    prediction = eps_fn(q_sample(schedule, x0, t, noise), t, y)
    return jnp.mean(jnp.square(prediction.astype(jnp.float32) - noise))


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
    """How images are drawn from a trained denoiser.

    kind: "ddpm" (ancestral, every one of the T steps) or "ddim" (`steps` evenly skipped steps).
    steps: DDIM's number of steps (ignored by ddpm).
    eta: DDIM's stochasticity (0: deterministic DDIM; 1: DDPM-like variance).
    variance: DDPM's sigma_t^2: "small" = the posterior variance beta~_t (DDPM's
      `fixedsmall`), "large" = beta_t (`fixedlarge`, DDPM's CIFAR-10 setting).
    clip_denoised: clip the predicted x0 to [-1, 1] at every step (as DDPM's code).
    guidance_scale: s in eps_u + s (eps_c - eps_u); 1 uses the conditional model alone, 0 the
      unconditional one.
    """

    kind: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    variance: str = "large"
    clip_denoised: bool = True
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.kind!r}; choose from {', '.join(SAMPLERS)}")
        if self.variance not in ("small", "large"):
            raise ValueError(f"sampler variance must be 'small' or 'large', got {self.variance!r}")
        if self.steps < 1:
            raise ValueError(f"the sampler needs at least one step, got {self.steps}")
        if self.eta < 0:
            raise ValueError(f"DDIM's eta must be >= 0, got {self.eta}")


def guided_eps(
    eps_fn: EpsFn, params: Any, x: Array, t: Array, y: Array, scale: float, null_label: int
) -> Array:
    """Classifier-free guidance in one batched call: eps_u + scale (eps_c - eps_u); with
    scale == 1 only the conditional pass runs. x: [B, ...]; t, y: [B]."""
    if scale == 1.0:
        return eps_fn(params, x, t, y)
    both = eps_fn(
        params,
        jnp.concatenate([x, x]),
        jnp.concatenate([t, t]),
        jnp.concatenate([y, jnp.full_like(y, null_label)]),
    )
    cond, uncond = jnp.split(both, 2)
    return uncond + scale * (cond - uncond)


def ddim_timesteps(num_steps: int, steps: int) -> np.ndarray:
    """DDIM's uniform skip: 0, k, 2k, ... with k = T // steps (ermongroup/ddim `skip_type`
    "uniform"); at most T steps."""
    skip = max(num_steps // steps, 1)
    return np.arange(0, num_steps, skip)[:steps]


def make_sampler(
    eps_fn: EpsFn,
    schedule: Schedule,
    options: SamplerOptions,
    shape: tuple[int, ...],
    *,
    null_label: int = 0,
) -> Callable[[Any, Array, Array], Array]:
    """A jitted `(params, key, labels [B]) -> images [B, *shape]`: x_T ~ N(0, I), then the
    reverse process as one `lax.scan` (no host round-trips). `shape` is one image's
    (H, W, C); labels are ignored by an unconditional `eps_fn` (pass zeros)."""
    betas = schedule.betas
    a = schedule.alphas_cumprod
    a_prev = jnp.concatenate([jnp.ones(1), a[:-1]])
    opts = options

    def predict_x0(params, x, t, y):
        eps = guided_eps(
            eps_fn, params, x, jnp.full(x.shape[:1], t), y, opts.guidance_scale, null_label
        )
        x0 = (x - jnp.sqrt(1.0 - a[t]) * eps) / jnp.sqrt(a[t])
        if opts.clip_denoised:
            x0 = jnp.clip(x0, -1.0, 1.0)
        return x0, eps

    if opts.kind == "ddpm":
        posterior_var = betas * (1.0 - a_prev) / (1.0 - a)
        sigma2 = posterior_var if opts.variance == "small" else betas  # t = 0 adds no noise
        coef_x0 = jnp.sqrt(a_prev) * betas / (1.0 - a)
        coef_xt = jnp.sqrt(1.0 - betas) * (1.0 - a_prev) / (1.0 - a)
        timesteps = jnp.arange(schedule.num_steps)[::-1]

        def step(carry, t):
            x, key, params, y = carry
            key, k = jax.random.split(key)
            x0, _ = predict_x0(params, x, t, y)
            mean = coef_x0[t] * x0 + coef_xt[t] * x
            noise = jax.random.normal(k, x.shape, x.dtype)
            x = mean + jnp.where(t > 0, jnp.sqrt(sigma2[t]), 0.0) * noise
            return (x, key, params, y), None

    else:
        seq = ddim_timesteps(schedule.num_steps, opts.steps)
        prev = np.concatenate([[-1], seq[:-1]])  # the step each update lands on
        a_at = lambda t: jnp.where(t >= 0, a[jnp.maximum(t, 0)], 1.0)  # noqa: E731

        def step(carry, inputs):
            x, key, params, y = carry
            t, t_prev = inputs
            key, k = jax.random.split(key)
            x0, eps = predict_x0(params, x, t, y)
            at, ap = a[t], a_at(t_prev)
            sigma = opts.eta * jnp.sqrt((1.0 - ap) / (1.0 - at) * (1.0 - at / ap))
            if opts.clip_denoised:  # the epsilon consistent with the clipped x0
                eps = (x - jnp.sqrt(at) * x0) / jnp.sqrt(1.0 - at)
            direction = jnp.sqrt(jnp.maximum(1.0 - ap - sigma**2, 0.0)) * eps
            noise = jax.random.normal(k, x.shape, x.dtype)
            x = jnp.sqrt(ap) * x0 + direction + sigma * noise
            return (x, key, params, y), None

        timesteps = (jnp.asarray(seq[::-1]), jnp.asarray(prev[::-1]))

    @jax.jit
    def sample(params: Any, key: Array, labels: Array) -> Array:
        k_init, k_steps = jax.random.split(key)
        x = jax.random.normal(k_init, (labels.shape[0], *shape), jnp.float32)
        (x, _, _, _), _ = jax.lax.scan(step, (x, k_steps, params, labels), timesteps)
        return x

    return sample
