"""Training the reconstruction network on patches of defect-free images, and reconstructing full
images with it.

`fit` runs the shared training loop (data-parallel step, orbax checkpoints with resume, metrics,
NaN guard): Adam on `reconstruction_loss` over random patches of the defect-free training
images (random flips), drawn on the host from a generator seeded by (seed, step), so a resumed
run sees the batches an uninterrupted one sees. The trained parameters are kept as
`params.npz` in the run's workdir.

Several processes (`research.training.distributed`): the step runs on the global mesh
(`distributed.global_mesh()`) and each process keeps only its rows of every global batch
(`make_batch_fn`'s `rows`), so the processes train on the batches of one process.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from models.autoencoder import ConvAutoencoder
from models.params import count_params
from research.datasets.defects import random_patches
from research.defect_ae import inspection, losses
from research.training import distributed, results
from research.training.loop import round_to_calls, train_loop
from research.training.metrics import steady_steps_per_second
from research.training.parallel import make_train_step
from research.training.prefetch import Prefetcher
from research.training.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """`models.autoencoder.ConvAutoencoder`'s fields (the channels come from the data)."""

    widths: tuple[int, ...] = (16, 32, 64)
    bottleneck: int = 16
    upsample: str = "subpixel"


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """loss: one of `losses.LOSSES`; l1_weight: w of SSIM + w L1; ssim_crop: SSIM over the
    patch interior only (see `losses.reconstruction_loss`); Adam at `lr` (2e-4, the public SSIM
    autoencoder's) for `steps` steps of `batch_size` random `patch_size` patches."""

    loss: str = "ssim_l1"
    l1_weight: float = 1.0
    ssim_crop: bool = True
    patch_size: int = 32
    batch_size: int = 32
    steps: int = 1500
    lr: float = 2e-4
    flip: bool = True


def make_model(opts: ModelOptions, channels: int) -> ConvAutoencoder:
    return ConvAutoencoder(channels=channels, **dataclasses.asdict(opts))


def make_loss_fn(model: ConvAutoencoder, opts: TrainOptions):
    """`(params, {"x": [B, p, p, C]}, rng) -> (loss, {})` of `opts` for the shared train step."""

    def loss_fn(params, batch, rng):
        del rng
        recon = model.apply(params, batch["x"])
        loss = losses.reconstruction_loss(
            opts.loss, batch["x"], recon, l1_weight=opts.l1_weight, ssim_crop=opts.ssim_crop
        )
        return loss, {}

    return loss_fn


def make_batch_fn(
    images: np.ndarray,
    opts: TrainOptions,
    seed: int,
    steps_per_call: int,
    rows: slice = slice(None),
):
    """`step -> {"x": [K, R, p, p, C]}` (no K axis when K = steps_per_call = 1); pure in step.

    Each step's B patches are drawn whole, whatever the number of processes, and only their
    `rows` (R of B; `distributed.process_rows(B)` in a run of several processes) are kept, so
    the processes' rows joined are the batch of one process. (`random_patches` cuts all B
    patches: cutting only the rows' would need a `rows` argument there.)
    """

    def one(step: int) -> np.ndarray:
        rng = np.random.default_rng([seed, step])
        return random_patches(images, opts.patch_size, opts.batch_size, rng, flip=opts.flip)[rows]

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        if steps_per_call == 1:
            return {"x": one(step)}
        return {"x": np.stack([one(s) for s in range(step, step + steps_per_call)])}

    return batch_fn


def fit(
    model_opts: ModelOptions,
    opts: TrainOptions,
    train_images: np.ndarray,
    seed: int,
    workdir: str,
    *,
    steps_per_call: int = 1,
    checkpoint_every: int = 500,
    log_every: int = 100,
) -> tuple[Any, dict[str, Any]]:
    """Trains (or resumes) one autoencoder on `train_images` [N, S, S, C] in [0, 1].

    Returns (params, info) with info: num_params, steps, seconds, seconds_per_step (steady
    state, compilation excluded) and the last logged training loss. Saves the parameters as
    `workdir/params.npz`.
    """
    model = make_model(model_opts, train_images.shape[-1])
    optimizer = optax.adam(opts.lr)

    loss_fn = make_loss_fn(model, opts)

    mesh = distributed.global_mesh()
    num_steps = round_to_calls(opts.steps, steps_per_call)
    key = jax.random.PRNGKey(seed)
    shape = (1, opts.patch_size, opts.patch_size, train_images.shape[-1])
    params = model.init(jax.random.fold_in(key, 1), jnp.zeros(shape, jnp.float32))
    start = time.perf_counter()
    with Prefetcher(
        make_batch_fn(
            train_images,
            opts,
            seed,
            steps_per_call,
            rows=distributed.process_rows(opts.batch_size),
        ),
        end=num_steps,
        stride=steps_per_call,
    ) as batch_fn:
        state = train_loop(
            workdir=workdir,
            state=TrainState.create(params, optimizer, jax.random.fold_in(key, 2)),
            train_step=make_train_step(loss_fn, optimizer, mesh, steps_per_call=steps_per_call),
            batch_fn=batch_fn,
            num_steps=num_steps,
            mesh=mesh,
            checkpoint_every=checkpoint_every,
            keep_checkpoints=1,
            log_every=log_every,
            steps_per_call=steps_per_call,
            desc=f"{opts.loss} seed {seed}",
        )
    rate = steady_steps_per_second(workdir)
    info = {
        "num_params": count_params(state.params),
        "steps": num_steps,
        "seconds": time.perf_counter() - start,
        "seconds_per_step": 1.0 / rate if rate else None,
    }
    params = jax.device_get(state.params)  # replicated: every process holds all of it
    results.save_arrays(os.path.join(workdir, "params.npz"), params)
    return params, info


@functools.lru_cache(maxsize=8)
def _jitted_apply(model: ConvAutoencoder):
    return jax.jit(model.apply)


def reconstruct(
    model_opts: ModelOptions, params: Any, images: np.ndarray, *, patch_size: int, stride: int
) -> np.ndarray:
    """Sliding-window reconstruction of full images [N, S, S, C] -> [N, S, S, C] (each pixel the
    mean over the windows of `patch_size` that cover it, at `stride`)."""
    apply = _jitted_apply(make_model(model_opts, images.shape[-1]))
    return inspection.sliding_window_reconstruct(
        lambda x: apply(params, x), images, patch_size=patch_size, stride=stride
    )
