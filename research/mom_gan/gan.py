"""Training one GAN estimator on a contaminated sample, and reading its estimate back.

`GANOptions` (one per method, `config.gans.<method>`) says everything a fit needs: the
objective and whether its real-data term is a median of means, the generator family and the
discriminator, the optimisers and the schedule. One generator iteration is `d_steps`
discriminator steps, each on a fresh real batch, followed by one generator step (the robust
JS-GAN code's schedule: every batch trains D, every `d_steps`-th also G). One epoch is
`n // (batch_size d_steps)` generator iterations over a fresh shuffle of the sample; a jitted
call runs one epoch (`lax.scan`) with no host round-trip.

The estimate is the generator's parameters averaged over the ends of the last `avg_epochs`
epochs (the robust JS-GAN code averages its location over the last 25 of 150 epochs), or the
final parameters when `avg_epochs` is 0.

A fit trains on one device per process (`one_device_per_process_mesh`): one device in a single
process; in a run of several processes each builds its rows of every batch and jit computes the
whole batch's MoM selection across them.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from models.gan import (
    ACTIVATIONS,
    Discriminator,
    LocationGenerator,
    LocationScaleGenerator,
    MLPGenerator,
)
from research.mom_gan import objectives
from research.training.distributed import process_rows
from research.training.loop import train_loop
from research.training.parallel import data_mesh

GENERATORS = ("location", "location_scale", "mlp")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
INITS = ("median", "zero")


@dataclasses.dataclass(frozen=True)
class GANOptions:
    """One GAN estimator. The defaults are the robust JS-GAN recipe (Gao et al.,
    `zhuwzh/Robust-GAN-Center`): JS objective, G(z) = z + b started at the coordinate-wise
    median, a p-20-1 LeakyReLU(0.2) discriminator, SGD lr 0.2 (D) / 0.02 (G), 5 D steps per G
    step, batch 500, 150 epochs, the location averaged over the last 25."""

    objective: str = "js"  # objectives.OBJECTIVES
    mom: bool = False  # median-of-means real-data term
    num_blocks: int = 0  # MoM blocks K; 0: objectives.blocks_for_contamination(eps, batch)
    generator: str = "location"  # GENERATORS
    generator_hidden: tuple[int, ...] = (64, 64)  # of the mlp generator
    latent_dim: int = 0  # of the mlp generator; 0: the data dimension
    init: str = "median"  # start of a location generator's bias (INITS)
    disc_hidden: tuple[int, ...] = (20,)
    disc_activation: str = "leaky_relu"  # models.gan.ACTIVATIONS
    optimizer: str = "sgd"  # OPTIMIZERS, for both networks
    lr_d: float = 0.2
    lr_g: float = 0.02
    adam_b1: float = 0.5
    adam_b2: float = 0.999
    d_steps: int = 5  # discriminator steps per generator step
    clip: float = 0.0  # Wasserstein: clip every critic weight to [-clip, clip] after its step
    gp_weight: float = 0.0  # Wasserstein: gradient-penalty weight (WGAN-GP: 10)
    batch_size: int = 500
    epochs: int = 150
    avg_epochs: int = 25

    def __post_init__(self):
        for name, value, choices in (
            ("objective", self.objective, objectives.OBJECTIVES),
            ("generator", self.generator, GENERATORS),
            ("init", self.init, INITS),
            ("disc_activation", self.disc_activation, tuple(ACTIVATIONS)),
            ("optimizer", self.optimizer, OPTIMIZERS),
        ):
            if value not in choices:
                raise ValueError(f"{name} = {value!r}: must be one of {', '.join(choices)}")
        object.__setattr__(self, "generator_hidden", tuple(self.generator_hidden))
        object.__setattr__(self, "disc_hidden", tuple(self.disc_hidden))

    def blocks(self, eps: float) -> int:
        """The MoM block count K at contamination eps (1: no MoM)."""
        if not self.mom:
            return 1
        k = self.num_blocks or objectives.blocks_for_contamination(eps, self.batch_size)
        if k > self.batch_size:
            raise ValueError(f"num_blocks = {k} exceeds the batch size {self.batch_size}")
        return k

    def iters_per_epoch(self, num_train: int) -> int:
        """Generator iterations per epoch (whole batches only)."""
        iters = num_train // (self.batch_size * self.d_steps)
        if iters < 1:
            raise ValueError(
                f"{num_train} training points make no generator iteration of "
                f"{self.d_steps} batches of {self.batch_size}"
            )
        return iters


@flax.struct.dataclass
class GANState:
    """Both networks, their optimiser states, the running parameter average and the RNG.

    step: generator iterations done; avg_params / avg_count: the sum and number of generator
    parameter snapshots taken at epoch ends inside the averaging window."""

    step: jax.Array
    g_params: Any
    d_params: Any
    g_opt: Any
    d_opt: Any
    avg_params: Any
    avg_count: jax.Array
    rng: jax.Array


def make_generator(opts: GANOptions, dim: int) -> tuple[nn.Module, int]:
    """(generator module, latent dimension)."""
    if opts.generator == "location":
        return LocationGenerator(dim), dim
    if opts.generator == "location_scale":
        return LocationScaleGenerator(dim), dim
    return MLPGenerator(dim, opts.generator_hidden), opts.latent_dim or dim


def make_optimizer(opts: GANOptions, lr: float) -> optax.GradientTransformation:
    if opts.optimizer == "sgd":
        return optax.sgd(lr)
    if opts.optimizer == "adam":
        return optax.adam(lr, b1=opts.adam_b1, b2=opts.adam_b2)
    # PyTorch's RMSprop (the MoM-WGAN code): smoothing 0.99, eps added outside the square root.
    return optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False)


def init_state(opts: GANOptions, x: np.ndarray, seed: int) -> GANState:
    """A fresh state for data x [n, p]; a location generator's bias starts at `opts.init`."""
    dim = x.shape[1]
    generator, latent = make_generator(opts, dim)
    key_g, key_d, key_run = jax.random.split(jax.random.PRNGKey(seed), 3)
    g_params = generator.init(key_g, jnp.zeros((1, latent)))
    if opts.generator != "mlp" and opts.init == "median":
        bias = jnp.asarray(np.median(x, axis=0), jnp.float32)
        g_params = {"params": {**g_params["params"], "bias": bias}}
    d_params = Discriminator(opts.disc_hidden, opts.disc_activation).init(
        key_d, jnp.zeros((1, dim))
    )
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        d_params=d_params,
        g_opt=make_optimizer(opts, opts.lr_g).init(g_params),
        d_opt=make_optimizer(opts, opts.lr_d).init(d_params),
        avg_params=jax.tree.map(jnp.zeros_like, g_params),
        avg_count=jnp.zeros((), jnp.int32),
        rng=jnp.asarray(key_run, jnp.uint32),
    )


@functools.lru_cache(maxsize=64)
def make_train_step(opts: GANOptions, dim: int, num_blocks: int, iters_per_epoch: int):
    """The jitted epoch `(state, {"x": [iters, B, d_steps, p]}) -> (state, metrics)`.

    Cached on its arguments, so every fit of one method and dimension reuses one compilation.
    Metrics (of the epoch's last iteration): `loss` (discriminator), `g_loss`, `d_real` (its
    real-data term, over the median block under MoM).
    """
    generator, latent = make_generator(opts, dim)
    disc = Discriminator(opts.disc_hidden, opts.disc_activation)
    g_tx, d_tx = make_optimizer(opts, opts.lr_g), make_optimizer(opts, opts.lr_d)
    avg_start = (opts.epochs - opts.avg_epochs) * iters_per_epoch  # first iteration averaged

    def d_step(g_params, carry, real):
        d_params, d_opt, key = carry
        key, k_z, k_blocks, k_gp = jax.random.split(key, 4)
        fake = generator.apply(g_params, jax.random.normal(k_z, (real.shape[0], latent)))

        def loss_fn(d_params):
            score = lambda x: disc.apply(d_params, x)
            loss, real_term = objectives.discriminator_loss(
                opts.objective, score(real), score(fake), k_blocks, num_blocks
            )
            if opts.gp_weight:
                loss += opts.gp_weight * objectives.gradient_penalty(score, real, fake, k_gp)
            return loss, real_term

        (loss, real_term), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
        updates, d_opt = d_tx.update(grads, d_opt, d_params)
        d_params = optax.apply_updates(d_params, updates)
        if opts.clip:
            d_params = jax.tree.map(lambda w: jnp.clip(w, -opts.clip, opts.clip), d_params)
        return (d_params, d_opt, key), (loss, real_term)

    def iteration(state: GANState, real: jax.Array):
        key = jax.random.fold_in(state.rng, state.step)
        k_d, k_z = jax.random.split(key)
        (d_params, d_opt, _), (d_losses, real_terms) = lax.scan(
            functools.partial(d_step, state.g_params), (state.d_params, state.d_opt, k_d), real
        )
        z = jax.random.normal(k_z, (real.shape[1], latent))

        def g_loss_fn(g_params):
            return objectives.generator_loss(
                opts.objective, disc.apply(d_params, generator.apply(g_params, z))
            )

        g_loss, grads = jax.value_and_grad(g_loss_fn)(state.g_params)
        updates, g_opt = g_tx.update(grads, state.g_opt, state.g_params)
        g_params = optax.apply_updates(state.g_params, updates)
        done = state.step + 1
        take = (done % iters_per_epoch == 0) & (done > avg_start)
        avg_params = jax.tree.map(
            lambda s, p: s + jnp.where(take, p, 0), state.avg_params, g_params
        )
        state = state.replace(
            step=done,
            g_params=g_params,
            d_params=d_params,
            g_opt=g_opt,
            d_opt=d_opt,
            avg_params=avg_params,
            avg_count=state.avg_count + take.astype(jnp.int32),
        )
        return state, {"loss": d_losses[-1], "g_loss": g_loss, "d_real": real_terms[-1]}

    def epoch(state: GANState, batch):
        real = jnp.swapaxes(batch["x"], 1, 2)  # [iters, d_steps, B, p]
        state, metrics = lax.scan(iteration, state, real)
        return state, jax.tree.map(lambda m: m[-1], metrics)

    return jax.jit(epoch, donate_argnums=(0,))


def epoch_batches(x: np.ndarray, opts: GANOptions, seed: int, *, rows: slice = slice(None)):
    """`step -> {"x": [iters, R, d_steps, p]}`: the epoch starting at generator iteration
    `step`, a shuffle of x [n, p] seeded by (seed, epoch), so a resumed fit sees the same
    batches. R are the `rows` of each batch of B (all B by default; in a run of several
    processes this process's, `distributed.process_rows(B, mesh)`): the epoch's shuffle is
    drawn whole and cut to `rows`, so the processes' rows together are one process's batches. The
    batch axis comes second, where the training loop splits a call's batch over the mesh."""
    iters = opts.iters_per_epoch(len(x))
    shape = (iters, opts.d_steps, opts.batch_size)

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, step // iters])
        order = rng.permutation(len(x))[: np.prod(shape)].reshape(shape)
        return {"x": x[order.transpose(0, 2, 1)[:, rows]]}

    return batch_fn


def one_device_per_process_mesh() -> jax.sharding.Mesh:
    """The `data` mesh over the first device of every process: one device in a single process
    (a fit is too small to gain from splitting its batches over several), and in a run of
    several processes the fewest devices that span them all, as `train_loop` needs."""
    firsts = {}
    for device in jax.devices():  # process 0's devices first
        firsts.setdefault(device.process_index, device)
    return data_mesh(list(firsts.values()))


def fit(
    opts: GANOptions,
    x: np.ndarray,
    eps: float,
    seed: int,
    workdir: str,
    *,
    desc: str = "gan",
    checkpoint_every_epochs: int = 50,
    log_every_epochs: int = 10,
) -> tuple[Any, dict[str, float]]:
    """Trains the GAN on x [n, p] (contamination eps sets the MoM block count); returns
    (generator parameters of the estimate, info: seconds, iterations, K)."""
    dim = x.shape[1]
    iters = opts.iters_per_epoch(len(x))
    num_blocks = opts.blocks(eps)
    step = make_train_step(opts, dim, num_blocks, iters)
    mesh = one_device_per_process_mesh()
    rows = process_rows(opts.batch_size, mesh)
    start = time.perf_counter()
    state = train_loop(
        workdir=workdir,
        state=init_state(opts, x, seed),
        train_step=step,
        batch_fn=epoch_batches(x, opts, seed, rows=rows),
        num_steps=opts.epochs * iters,
        mesh=mesh,
        checkpoint_every=checkpoint_every_epochs * iters,
        keep_checkpoints=1,
        log_every=log_every_epochs * iters,
        steps_per_call=iters,
        desc=desc,
    )
    state = jax.device_get(state)
    if opts.avg_epochs and int(state.avg_count):
        params = jax.tree.map(lambda s: s / state.avg_count, state.avg_params)
    else:
        params = state.g_params
    info = {
        "seconds": time.perf_counter() - start,
        "generator_iterations": int(state.step),
        "num_blocks": num_blocks,
    }
    return params, info


def estimate(
    opts: GANOptions, params: Any, dim: int, *, num_samples: int, seed: int
) -> dict[str, Any]:
    """The fitted distribution: `samples` [num_samples, p], `mean` [p], and `cov` [p, p]
    (None for the location generator, whose covariance is fixed at I)."""
    generator, latent = make_generator(opts, dim)
    z = jax.random.normal(jax.random.PRNGKey(seed), (num_samples, latent))
    samples = np.asarray(generator.apply(params, z), np.float64)
    if opts.generator == "location":
        return {"samples": samples, "mean": np.asarray(params["params"]["bias"]), "cov": None}
    if opts.generator == "location_scale":
        a = np.asarray(params["params"]["scale"], np.float64)
        return {"samples": samples, "mean": np.asarray(params["params"]["bias"]), "cov": a @ a.T}
    cov = np.atleast_2d(np.cov(samples, rowvar=False))
    return {"samples": samples, "mean": samples.mean(axis=0), "cov": cov}
