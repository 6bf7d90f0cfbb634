"""Time one training epoch per feature store, split into sampling / feature loading / compute.

The measuring half of the BiFeat benchmark (`experiments/bench/bifeat.py` and its `gpu_check()`).
Two measurements per store, on the same batches:

- phase split: every mini-batch runs its phases one after the other, each waited for
  (`block_until_ready`): sampling (numpy, host), feature loading (`store.prepare` on the host,
  the transfer, `store.features` on the device), compute (the jitted train step);
- pipelined epoch: the training loop as `research/bifeat/train.py` runs it (sampling and the
  host part of loading in the prefetch thread, no waits between steps), wall time of the epoch.

With `sampler="device"` the sampling phase is the JAX sampler (`DeviceSampledBatches`, waited
for), loading is the store's device gather of device-side ids (nothing transferred), and the
pipelined epoch has no prefetch thread (the calls are dispatched asynchronously). The first
call (compilation of sampling, gather and step) is timed separately (`first_call_s`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from models.gnn import GraphSAGE, blocks_from_fanout
from research.bifeat import pipeline
from research.bifeat.sampler import DeviceNeighborSampler, NeighborSampler, calibrate_caps
from research.bifeat.stores import FeatureStore
from research.datasets.graphs import Graph
from research.training.parallel import (
    data_mesh,
    make_train_step,
    queued_calls_can_deadlock,
    replicate,
    shard_batch,
)
from research.training.prefetch import Prefetcher
from research.training.train_state import TrainState


@dataclasses.dataclass
class EpochSetup:
    """What every store's epoch shares: graph, training nodes, sampler, model and train step."""

    graph: Graph
    train_nodes: np.ndarray
    sampler: NeighborSampler
    model: GraphSAGE
    train_step: Any
    init_state: TrainState
    mesh: Any
    device_sampler: DeviceNeighborSampler

    @property
    def num_layers(self) -> int:
        return len(self.sampler.fanouts)


def make_setup(
    graph: Graph,
    *,
    train_nodes: int,
    fanouts: Sequence[int] = (5, 10, 15),
    batch_size: int = 1000,
    hidden: int = 256,
    lr: float = 0.003,
    calibrate_batches: int = 16,
    seed: int = 0,
) -> EpochSetup:
    """The BiFeat recipe (GraphSAGE, hidden 256, fan-outs 5/10/15, batch 1000 per device) on
    `train_nodes` random training nodes (one epoch = ceil(train_nodes / global batch) steps)."""
    mesh = data_mesh()
    if train_nodes > len(graph.train_idx):
        raise ValueError(
            f"train_nodes {train_nodes} exceeds the graph's {len(graph.train_idx)} training nodes"
        )
    nodes = np.random.default_rng(seed).choice(graph.train_idx, train_nodes, replace=False)
    sampler = NeighborSampler(graph.indptr, graph.indices, fanouts, batch_size)
    if calibrate_batches:
        caps = calibrate_caps(sampler, nodes, num_batches=calibrate_batches, seed=seed)
        sampler = NeighborSampler(graph.indptr, graph.indices, fanouts, batch_size, caps)
    model = GraphSAGE(hidden, graph.num_classes, num_layers=len(fanouts))
    steps = -(-train_nodes // (batch_size * mesh.size))
    optimizer = pipeline.make_optimizer(lr, decay=0.98, steps_per_epoch=steps)
    caps = sampler.caps

    @jax.jit  # one program: op by op, the parameter and optimizer-state init compile dozens
    def init(key):
        x = jnp.zeros((caps[0], graph.num_features), jnp.float32)
        blocks = blocks_from_fanout(
            [jnp.zeros(caps[i + 1] * k, jnp.int32) for i, k in enumerate(fanouts)],
            [jnp.zeros(caps[i + 1] * k, bool) for i, k in enumerate(fanouts)],
            caps[1:],
        )
        return TrainState.create(model.init(key, x, blocks, train=False), optimizer, key)

    # host copy: the donating train step must not consume the template's buffers
    state = jax.device_get(init(jax.random.PRNGKey(seed)))
    step = make_train_step(pipeline.make_loss_fn(model, caps), optimizer, mesh)
    device_sampler = DeviceNeighborSampler(sampler, mesh)  # same caps; CSR on the device
    return EpochSetup(graph, nodes, sampler, model, step, state, mesh, device_sampler)


SAMPLERS = ("host", "device")


def _batches(setup: EpochSetup, store: FeatureStore, seed: int, sampler: str):
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    return pipeline.make_batches(
        setup.graph,
        setup.train_nodes,
        setup.device_sampler if sampler == "device" else setup.sampler,
        store,
        mesh=setup.mesh,
        seed=seed,
    )


def profile_epoch(
    setup: EpochSetup,
    store: FeatureStore,
    *,
    sampler: str = "host",
    warmup: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Phase-split and pipelined timings of one epoch with `store` (module docstring).

    Returns seconds per epoch (`sampling_s`, `loading_s`, `compute_s`, their sum
    `split_epoch_s`, and `epoch_s` pipelined), per-batch means (`*_per_batch_s`), the number of
    steps, bytes transferred per batch, the mean number of input nodes, the training loss of
    the pipelined epoch's first and last step, and `first_call_s` / `steady_call_s`: the first
    warm-up step (compilation included) and the mean of the others (`warmup >= 2`).
    """
    batches = _batches(setup, store, seed, sampler)
    steps = batches.steps_per_epoch
    step_fn = pipeline.train_step_with_store(setup.train_step, store)
    num_layers = setup.num_layers
    state = replicate(setup.init_state, setup.mesh)
    warm = []
    for step in range(max(warmup, 1)):  # compile, and warm the caches
        t0 = time.perf_counter()
        dev = shard_batch(pipeline.device_batch(batches(step), num_layers), setup.mesh)
        state, metrics = step_fn(state, dev)
        jax.block_until_ready(metrics)
        warm.append(time.perf_counter() - t0)

    times = np.zeros((steps, 3))
    inputs, transfer = [], 0
    for step in range(steps):
        t0 = time.perf_counter()
        sampled = jax.block_until_ready(batches.sample(step))
        t1 = time.perf_counter()
        input_mask = sampled["input_mask"]  # counted after the timed phases
        prepared = store.prepare(sampled.pop("input_nodes"))
        transfer = 0 if sampler == "device" else prepared.nbytes
        dev = shard_batch(pipeline.device_batch({**sampled, "x": prepared}, num_layers), setup.mesh)
        x = jax.block_until_ready(store.features(dev["x"]))
        t2 = time.perf_counter()
        state, metrics = setup.train_step(state, {**dev, "x": x})
        jax.block_until_ready(metrics)
        t3 = time.perf_counter()
        times[step] = (t1 - t0, t2 - t1, t3 - t2)
        inputs.append(int(np.asarray(input_mask).sum()))

    def make(step):
        return pipeline.device_batch(batches(step), num_layers)

    state = replicate(setup.init_state, setup.mesh)
    start = time.perf_counter()
    fetch_ctx = (
        contextlib.nullcontext(make)
        if sampler == "device"
        else Prefetcher(make, end=steps, depth=2)
    )
    with fetch_ctx as fetch:
        wait = queued_calls_can_deadlock(setup.mesh)
        for step in range(steps):
            state, metrics = step_fn(state, shard_batch(fetch(step), setup.mesh))
            if wait:
                jax.block_until_ready(state)
            if step == 0:
                first_metrics = metrics
        loss = float(jax.device_get(metrics["loss"]))
    first_loss = float(jax.device_get(first_metrics["loss"]))
    epoch_s = time.perf_counter() - start
    sampling, loading, compute = times.sum(0)
    return dict(
        steps=steps,
        sampling_s=sampling,
        loading_s=loading,
        compute_s=compute,
        split_epoch_s=sampling + loading + compute,
        epoch_s=epoch_s,
        sampling_per_batch_s=sampling / steps,
        loading_per_batch_s=loading / steps,
        compute_per_batch_s=compute / steps,
        transfer_bytes_per_batch=int(transfer),
        input_nodes_per_batch=float(np.mean(inputs)),
        first_loss=first_loss,
        final_loss=loss,
        first_call_s=warm[0],
        steady_call_s=float(np.mean(warm[1:])) if len(warm) > 1 else float("nan"),
    )


def sampling_times(
    setup: EpochSetup, store: FeatureStore, *, steps: int = 10, seed: int = 0
) -> dict[str, float]:
    """Seconds per batch of sampling alone, host (numpy) vs device (JAX, waited for): medians
    over `steps` batches after one warm-up batch each; `device_first_call_s` is the device
    sampler's first call (compilation included). `store` must be device-resident (the device
    batcher's ids go to it; no features are gathered here)."""
    out: dict[str, float] = {}
    for kind in SAMPLERS:
        batches = _batches(setup, store, seed, kind)
        t0 = time.perf_counter()
        jax.block_until_ready(batches.sample(0))
        out[f"{kind}_first_call_s"] = time.perf_counter() - t0
        times = []
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            jax.block_until_ready(batches.sample(step))
            times.append(time.perf_counter() - t0)
        out[f"{kind}_per_batch_s"] = float(np.median(times))
    out["device_vs_host"] = out["host_per_batch_s"] / out["device_per_batch_s"]
    return out
