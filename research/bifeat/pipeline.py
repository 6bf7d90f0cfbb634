"""Mini-batch pipeline of BiFeat training: epochs of sampled-subgraph batches, the loss, evaluation.

Data parallelism: the global batch of seed nodes is cut into one sub-batch per device; each is
sampled separately (as every GPU of the official multi-GPU code samples its own blocks) and the
sub-batches are stacked, so every batch leaf is `[num_devices, ...]` and the train step
(`research.training.parallel.make_train_step`) hands each device its `[1, ...]` slice.
`DeviceSampledBatches` builds the same batches on the device (the JAX sampler, one compiled
call per step); `make_batches` picks the batcher of a sampler.

Several processes (`research.training.distributed`): the mesh spans every process's devices.
The host batcher samples only this process's devices' sub-batches (`rows`, a contiguous range of
the mesh's devices: the leaves are `[local devices, ...]`, and `distributed.assemble_batch` joins
the processes' rows); the device batcher's shard_map already builds global arrays. Sampled
evaluation predicts each batch on the whole mesh and reads every device's predictions in every
process (`distributed.all_rows`), so every process gets one process's accuracies.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from models.gnn import Block, blocks_from_fanout
from research.bifeat.sampler import (
    DeviceNeighborSampler,
    NeighborSampler,
    batch_key,
    stack_batches,
)
from research.bifeat.stores import FeatureStore
from research.datasets.graphs import Graph
from research.training import distributed
from research.training.parallel import DATA_AXIS, shard_batch

# Sampled-batch leaves the device step uses ("x" is the store's prepared array).
DEVICE_KEYS = ("x", "labels", "seed_mask")


class SampledSubgraphBatches:
    """`step -> batch` of sampled subgraphs: epochs over the seed `nodes` in a random order per
    epoch, `global_batch` seeds per step (the last step of an epoch may be partial: masked seed
    slots), each device's seeds expanded into its sampled blocks; pure in `step`.

    (Not the generic table batcher `research.datasets.batching.EpochBatches`: this one samples
    a neighbourhood per step and gathers its input features from a `FeatureStore`.)

    The batch is a dict of numpy `[num_devices, ...]` arrays: `x` (`store.prepare` of the input
    nodes), `labels`, `seed_mask`, `senders_<l>`, `edge_mask_<l>`, plus host-side `dropped`.
    With `rows` (a range of the devices, e.g. one process's: `distributed.process_rows`) it
    samples only those devices' sub-batches, each exactly as with all devices, and the leaves
    are `[len(rows), ...]`.
    """

    def __init__(
        self,
        graph: Graph,
        nodes: np.ndarray,
        sampler: NeighborSampler,
        store: FeatureStore,
        *,
        num_devices: int,
        seed: int,
        shuffle: bool = True,
        rows: slice = slice(None),
    ):
        self.graph, self.nodes, self.sampler, self.store = graph, np.asarray(nodes), sampler, store
        self.num_devices, self.seed, self.shuffle = num_devices, seed, shuffle
        self.devices = range(num_devices)[rows]  # the devices whose sub-batches this one samples
        self.global_batch = sampler.batch_size * num_devices
        self.steps_per_epoch = max(1, -(-len(self.nodes) // self.global_batch))
        self._perm: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.nodes
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.nodes))
        return self._perm[1]

    def seeds(self, step: int) -> list[np.ndarray]:
        """The per-device seed lists of `step` (every device's)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        chunk = self.order(epoch)[i * self.global_batch : (i + 1) * self.global_batch]
        b = self.sampler.batch_size
        return [chunk[d * b : (d + 1) * b] for d in range(self.num_devices)]

    def sample(self, step: int) -> dict[str, np.ndarray]:
        """Sampling only (no features): the stacked blocks of `step` (`rows`' devices)."""
        seeds = self.seeds(step)
        per_device = [
            self.sampler.sample(seeds[d], np.random.default_rng([self.seed, step, d, 1]))
            for d in self.devices
        ]
        batch = stack_batches(per_device)
        batch["labels"] = self.graph.labels[batch["seeds"]]
        return batch

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        batch = self.sample(step)
        batch["x"] = self.store.prepare(batch.pop("input_nodes"))
        return batch


class DeviceSampledBatches:
    """`SampledSubgraphBatches` with the sampling on the device (`config.data.sampler="device"`):
    the same interface and batch keys, but every leaf is a jax array sharded over the data mesh
    (`[num_devices, ...]`), built by one compiled call from the step index alone.

    The epoch order is `jax.random.permutation` of the seed nodes keyed by (seed, epoch) (not the
    host batcher's numpy order), device d's seeds are its slice of the step's global batch (the
    last step of an epoch may be partial: masked slots), its blocks are
    `DeviceNeighborSampler.blocks` keyed by `batch_key(seed, step, d)`, and labels and the
    store's ids (`x`: the input node ids; the store's `features` gathers on the device) stay on
    the device: nothing per batch crosses the host. `dropped` is a `[num_devices]` int32 array.
    Needs a device-resident store (`store.location == "device"`). On a mesh spanning several
    processes every leaf is a global array (each process computes its devices' sub-batches).
    """

    def __init__(
        self,
        graph: Graph,
        nodes: np.ndarray,
        sampler: DeviceNeighborSampler,
        store: FeatureStore,
        *,
        mesh: Mesh,
        seed: int,
        shuffle: bool = True,
    ):
        if store.location != "device":
            raise ValueError(
                f"device sampling needs a device-resident feature store; {store.scheme.name!r} "
                "gathers on the host (use float32-device or a compressed scheme, or "
                "config.data.sampler='host')"
            )
        self.graph, self.sampler, self.store, self.mesh = graph, sampler, store, mesh
        self.nodes = np.asarray(nodes, np.int32)
        if not len(self.nodes):
            raise ValueError("no seed nodes to sample batches from")
        self.num_devices, self.seed, self.shuffle = mesh.size, seed, shuffle
        self.global_batch = sampler.batch_size * self.num_devices
        self.steps_per_epoch = max(1, -(-len(self.nodes) // self.global_batch))
        self._consts = distributed.replicate(
            (sampler.indptr, sampler.indices, self.nodes, np.asarray(graph.labels, np.int32)), mesh
        )
        self._fn = _device_batch_program(sampler, mesh, shuffle)

    def seeds(self, step: int) -> list[np.ndarray]:
        """The per-device seed lists of `step` (fetched from the device)."""
        batch = self.sample(step)
        seeds, mask = distributed.all_rows(batch["seeds"]), distributed.all_rows(batch["seed_mask"])
        return [s[m] for s, m in zip(seeds, mask, strict=True)]

    def sample(self, step: int) -> dict[str, jax.Array]:
        """Sampling only: the blocks of `step` (`input_nodes`, no features), on the device."""
        # numpy scalars: jit takes them as replicated over the mesh, also over several processes
        return self._fn(self._consts, np.int32(self.seed), np.int32(step))

    def __call__(self, step: int) -> dict[str, jax.Array]:
        batch = self.sample(step)
        batch["x"] = self.store.prepare(batch.pop("input_nodes"))
        return batch


def _device_seeds(nodes, seed, step, device, *, batch_size: int, num_devices: int, shuffle: bool):
    """Device `device`'s seeds of `step` ([batch_size] int32, 0 in padding) and their mask:
    its slice of the step's global batch in the epoch's order (`nodes` permuted by
    `PRNGKey(seed)` folded with 0 and the epoch when `shuffle`)."""
    global_batch = batch_size * num_devices
    steps_per_epoch = max(1, -(-nodes.shape[0] // global_batch))
    epoch, i = step // steps_per_epoch, step % steps_per_epoch
    if shuffle:
        perm_key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 0), epoch)
        nodes = jax.random.permutation(perm_key, nodes)
    at = i * global_batch + device * batch_size + jnp.arange(batch_size)
    mask = at < nodes.shape[0]
    return jnp.where(mask, nodes[jnp.minimum(at, nodes.shape[0] - 1)], 0), mask


@functools.lru_cache(maxsize=16)
def _device_batch_program(sampler: DeviceNeighborSampler, mesh: Mesh, shuffle: bool) -> Callable:
    """`(consts, seed, step) -> batch dict` of `DeviceSampledBatches`, one jitted shard_map per
    (sampler, mesh, shuffle), so every run (seed) with the same sampler shares the compilation.
    consts: (indptr, indices, seed nodes, labels), replicated."""

    def per_device(consts, seed, step):
        indptr, indices, nodes, labels = consts
        device = jax.lax.axis_index(DATA_AXIS)
        seeds, mask = _device_seeds(
            nodes,
            seed,
            step,
            device,
            batch_size=sampler.batch_size,
            num_devices=mesh.size,
            shuffle=shuffle,
        )
        mb = sampler.blocks(indptr, indices, seeds, mask, batch_key(seed, step, device))
        out = {
            "input_nodes": mb.input_nodes,
            "input_mask": mb.input_mask,
            "seeds": mb.seeds,
            "seed_mask": mb.seed_mask,
            "dropped": mb.dropped,
            "labels": labels[mb.seeds],
        }
        for layer in range(sampler.num_layers):
            out[f"senders_{layer}"] = mb.senders[layer]
            out[f"edge_mask_{layer}"] = mb.edge_mask[layer]
        return jax.tree.map(lambda a: a[None], out)

    return jax.jit(
        jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=(PartitionSpec(),) * 3,
            out_specs=PartitionSpec(DATA_AXIS),
        )
    )


def make_batches(
    graph: Graph,
    nodes: np.ndarray,
    sampler: NeighborSampler | DeviceNeighborSampler,
    store: FeatureStore,
    *,
    mesh: Mesh,
    seed: int,
    shuffle: bool = True,
) -> SampledSubgraphBatches | DeviceSampledBatches:
    """The batcher of `sampler`'s kind: `DeviceSampledBatches` for a `DeviceNeighborSampler`,
    else `SampledSubgraphBatches` (in a run of several processes, of this process's devices of
    `mesh`, which spans them all: `distributed.process_rows`)."""
    if isinstance(sampler, DeviceNeighborSampler):
        return DeviceSampledBatches(
            graph, nodes, sampler, store, mesh=mesh, seed=seed, shuffle=shuffle
        )
    rows = distributed.process_rows(mesh.size) if distributed.is_multi_process() else slice(None)
    return SampledSubgraphBatches(
        graph, nodes, sampler, store, num_devices=mesh.size, seed=seed, shuffle=shuffle, rows=rows
    )


def device_batch(batch: dict[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """The leaves of a sampled batch that go to the device."""
    keys = list(DEVICE_KEYS)
    keys += [f"{p}_{layer}" for layer in range(num_layers) for p in ("senders", "edge_mask")]
    return {k: batch[k] for k in keys}


def _blocks(batch: dict[str, jax.Array], caps: tuple[int, ...]) -> list[Block]:
    num_layers = len(caps) - 1
    return blocks_from_fanout(
        [batch[f"senders_{layer}"] for layer in range(num_layers)],
        [batch[f"edge_mask_{layer}"] for layer in range(num_layers)],
        caps[1:],
    )


def make_loss_fn(model: nn.Module, caps: tuple[int, ...]) -> Callable:
    """`loss(params, batch, rng) -> (loss, {"accuracy"})` on one device's `[1, ...]` batch:
    softmax cross-entropy averaged over the valid seeds."""

    def loss_fn(params, batch, rng):
        b = jax.tree.map(lambda a: a[0], batch)
        logits = model.apply(params, b["x"], _blocks(b, caps), train=True, rngs={"dropout": rng})
        mask = b["seed_mask"].astype(jnp.float32)
        count = jnp.maximum(mask.sum(), 1.0)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, b["labels"])
        correct = (jnp.argmax(logits, -1) == b["labels"]).astype(jnp.float32)
        return (ce * mask).sum() / count, {"accuracy": (correct * mask).sum() / count}

    return loss_fn


def make_optimizer(
    lr: float, *, decay: float, steps_per_epoch: int, weight_decay: float = 0.0
) -> optax.GradientTransformation:
    """Adam with the learning rate multiplied by `decay` after every epoch (BiFeat: 0.003, 0.98)
    and, optionally, PyTorch-style (coupled) L2 weight decay."""
    schedule = optax.exponential_decay(lr, steps_per_epoch, decay, staircase=True)
    adam = optax.adam(schedule)
    return optax.chain(optax.add_decayed_weights(weight_decay), adam) if weight_decay else adam


def train_step_with_store(train_step: Callable, store: FeatureStore) -> Callable:
    """Wraps a `make_train_step` step: the batch's `x` goes through `store.features` first."""

    def step(state, batch):
        return train_step(state, {**batch, "x": store.features(batch["x"])})

    return step


# ----------------------------------------------------------------------------- evaluation


def full_graph_block(graph: Graph) -> Block:
    """The whole graph as one block: destination i receives from its CSR neighbours."""
    receivers = np.repeat(np.arange(graph.num_nodes, dtype=np.int32), graph.degrees())
    return Block(
        jnp.asarray(graph.indices),
        jnp.asarray(receivers),
        jnp.ones(graph.num_edges, bool),
        graph.num_nodes,
    )


def make_full_predict(model: nn.Module, graph: Graph) -> Callable[[Any, np.ndarray], np.ndarray]:
    """`(params, x [N, D]) -> predicted class [N]`: every layer on the full graph (exact
    full-neighbour inference; for graphs whose activations fit in memory)."""
    block = full_graph_block(graph)
    num_layers = model.num_layers

    @jax.jit
    def predict(params, x):
        logits = model.apply(params, x, [block] * num_layers, train=False)
        return jnp.argmax(logits, -1)

    return lambda params, x: np.asarray(predict(params, x))


def make_sampled_predict(
    model: nn.Module, caps: tuple[int, ...], mesh: Mesh, store: FeatureStore
) -> Callable[[Any, dict[str, np.ndarray]], np.ndarray]:
    """`(params, sampled batch) -> predictions [num_devices, batch]` (data parallel; on a mesh
    spanning several processes the batch is this process's devices' rows or global arrays, and
    every process gets every device's predictions)."""
    spec = PartitionSpec(DATA_AXIS)

    def per_device(params, batch):
        b = jax.tree.map(lambda a: a[0], batch)
        logits = model.apply(params, b["x"], _blocks(b, caps), train=False)
        return jnp.argmax(logits, -1)[None]

    predict = jax.jit(
        jax.shard_map(per_device, mesh=mesh, in_specs=(PartitionSpec(), spec), out_specs=spec)
    )
    num_layers = len(caps) - 1
    place_batch = distributed.assemble_batch if distributed.is_multi_process() else shard_batch

    def run(params, batch):
        dev = place_batch(device_batch(batch, num_layers), mesh)
        dev["x"] = store.features(dev["x"])
        return distributed.all_rows(predict(params, dev))

    return run


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(pred == labels)) if len(labels) else float("nan")


def evaluate_sampled(
    predict: Callable,
    params: Any,
    batches: SampledSubgraphBatches | DeviceSampledBatches,
    splits: dict[str, np.ndarray],
) -> dict[str, float]:
    """Accuracy per split with sampled blocks; `batches` iterates over the concatenated split
    nodes in order (shuffle off). Also returns `dropped_nodes` (capacity overflows, normally 0).
    In a run of several processes every process returns the accuracies of all devices' batches
    (each process samples its devices' sub-batches, `make_batches`)."""
    preds, nodes, dropped = [], [], 0
    for step in range(batches.steps_per_epoch):
        batch = batches(step)
        dropped += int(distributed.all_rows(batch["dropped"]).sum())
        mask = distributed.all_rows(batch["seed_mask"])
        preds.append(predict(params, batch)[mask])
        # = concatenated batches.seeds(step)
        nodes.append(distributed.all_rows(batch["seeds"])[mask])
    pred = np.full(batches.graph.num_nodes, -1, np.int64)
    pred[np.concatenate(nodes)] = np.concatenate(preds)
    labels = batches.graph.labels
    out = {f"{name}_acc": accuracy(pred[ids], labels[ids]) for name, ids in splits.items()}
    return {**out, "dropped_nodes": float(dropped)}
