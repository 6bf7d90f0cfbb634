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

# loss_fn(params, batch, rng) -> (scalar loss, dict of scalar metrics), or with a model state
# loss_fn(params, model_state, batch, rng) -> (scalar loss, (dict of scalar metrics, new state))
LossFn = Callable[..., tuple[jax.Array, Any]]


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named `data` over `devices` (default: all local devices)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def queued_calls_can_deadlock(mesh: Mesh) -> bool:
    """True on a CPU mesh of more than one device, where each call of a program with collectives
    must finish before the next is dispatched. XLA:CPU (jaxlib 0.10.2) deadlocks when calls are
    queued behind each other: the queued calls' launcher threads block waiting for their inputs
    while the running call's all-reduce waits for a thread for its last device (reproduced with a
    shard_map + pmean step fed its own output, 2 or 4 devices on 2 cores: stuck within 100 calls,
    then the process aborts on XLA's rendezvous timeout; waiting for every call: no hang)."""
    return mesh.size > 1 and mesh.devices.flat[0].platform == "cpu"


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
    with_model_state: bool = False,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
    """A jitted data-parallel training step: `(state, batch) -> (state, metrics)`.

    Each device computes `loss_fn` on its shard of the batch; the gradient of the devices' mean
    loss (`lax.pmean`) is the global-batch gradient, and metrics are averaged over the `data`
    axis, so with equal shards the update equals the single-device update on the whole global
    batch (for any optimizer: tests compare SGD and Adam on 1 and 4 devices). The RNG passed to
    `loss_fn` is `fold_in(state.step_rng(), device_index)`.

    With `steps_per_call = K > 1` the batch leaves are [K, global_batch, ...] and K optimizer
    steps run inside one call (`lax.scan`), with no host round-trip in between; the returned
    metrics are those of the last step.

    With `with_model_state=True` the loss also reads and returns `state.model_state`:
    `loss_fn(params, model_state, batch, rng) -> (loss, (metrics, new_model_state))`. The new
    state must be the same on every device (average BatchNorm statistics with `lax.pmean`,
    gather what a pool stores with `lax.all_gather` over `DATA_AXIS`): it is kept replicated.
    """

    def device_mean_loss(params, *args):
        # The gradient is taken of the mean of the devices' losses: under shard_map the
        # gradient with respect to replicated parameters is then the global-batch gradient,
        # already the same on every device. (Differentiating each device's own loss and
        # averaging the gradients with pmean gives N times it on N devices: the transpose of
        # the parameters' implicit broadcast sums the devices' gradients.)
        loss, aux = loss_fn(params, *args)
        return lax.pmean(loss, DATA_AXIS), aux

    grad_fn = jax.value_and_grad(device_mean_loss, has_aux=True)

    def one_step(state: TrainState, batch: Any):
        rng = jax.random.fold_in(state.step_rng(), lax.axis_index(DATA_AXIS))
        if with_model_state:
            (loss, (aux, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng)
        else:
            (loss, aux), grads = grad_fn(state.params, batch, rng)
            model_state = state.model_state
        metrics = lax.pmean({"loss": loss, **aux}, DATA_AXIS)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state
        )
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
