"""Data parallelism over all local devices with pmap semantics, written with `jax.shard_map`.

`jax.pmap` is in maintenance mode (it is implemented on top of `shard_map`); a one-axis `data`
mesh with gradients averaged by `lax.pmean` gives the same semantics on CPUs, GPUs and TPUs.
The state is replicated, the batch is split on its leading axis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from research.training.train_state import TrainState

DATA_AXIS = "data"

# loss_fn(params, batch, rng) -> (scalar loss, dict of scalar metrics)
LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named `data` over `devices` (default: all local devices)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_divisible(batch: Any, num_shards: int, *, axis: int = 0) -> None:
    """Raises ValueError unless every leaf's `axis` dimension splits evenly into `num_shards`."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        shape = np.shape(leaf)
        if len(shape) <= axis or shape[axis] % num_shards:
            name = jax.tree_util.keystr(path) or "batch"
            raise ValueError(
                f"global batch {name} has shape {shape}: its axis {axis} must be divisible by "
                f"the {num_shards} devices of the data mesh (choose a batch size that is a "
                f"multiple of {num_shards})"
            )


def shard_batch(batch: Any, mesh: Mesh, *, steps_per_call: int = 1) -> Any:
    """Places `batch` on `mesh`, split over devices along the batch axis.

    With `steps_per_call == 1` leaves are [global_batch, ...]; otherwise they are
    [steps_per_call, global_batch, ...] and the second axis is split.
    """
    axis = 0 if steps_per_call == 1 else 1
    check_divisible(batch, mesh.size, axis=axis)
    spec = PartitionSpec(DATA_AXIS) if axis == 0 else PartitionSpec(None, DATA_AXIS)
    return jax.device_put(batch, NamedSharding(mesh, spec))


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    steps_per_call: int = 1,
    donate: bool = True,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
    """A jitted data-parallel training step: `(state, batch) -> (state, metrics)`.

    Each device computes `loss_fn` and its gradient on its shard of the batch; gradients and
    metrics are averaged over the `data` axis (`lax.pmean`), so with equal shards the update
    equals the single-device update on the whole global batch. The RNG passed to `loss_fn` is
    `fold_in(state.step_rng(), device_index)`.

    With `steps_per_call = K > 1` the batch leaves are [K, global_batch, ...] and K optimizer
    steps run inside one call (`lax.scan`), with no host round-trip in between; the returned
    metrics are those of the last step.
    """

    def one_step(state: TrainState, batch: Any):
        rng = jax.random.fold_in(state.step_rng(), lax.axis_index(DATA_AXIS))
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
        grads = lax.pmean(grads, DATA_AXIS)
        metrics = lax.pmean({"loss": loss, **aux}, DATA_AXIS)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    if steps_per_call == 1:
        per_device, batch_spec = one_step, PartitionSpec(DATA_AXIS)
    else:

        def per_device(state, batches):
            state, metrics = lax.scan(one_step, state, batches)
            return state, jax.tree.map(lambda m: m[-1], metrics)

        batch_spec = PartitionSpec(None, DATA_AXIS)

    sharded = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(PartitionSpec(), batch_spec),
        out_specs=(PartitionSpec(), PartitionSpec()),
    )
    return jax.jit(sharded, donate_argnums=(0,) if donate else ())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of `tree` on all devices of `mesh` (replicated)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
