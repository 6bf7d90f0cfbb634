"""Uniform neighbour sampling over CSR into fixed-shape padded blocks (numpy, vectorised).

For seeds (the output nodes) and per-layer fan-outs `fanouts = (k_0, ..., k_{L-1})` in DGL's
order (`k_0` for the input layer; the seeds sample `k_{L-1}` neighbours, as
`dgl.dataloading.MultiLayerNeighborSampler` does), each layer's destination nodes draw up to
`k_l` distinct neighbours uniformly without replacement (all of them when the degree is <= k_l).
The sampled neighbours that are not destinations already are appended, deduplicated, after the
destinations, so the destination nodes of layer l are the first `caps[l+1]` nodes of layer l's
node list (the DGL block convention).

Shapes are static, so a jitted step compiles once: layer l has `caps[l]` node slots (`caps[L] =
batch_size`) and `caps[l+1] * k_l` edge slots (k_l per destination; edge `e` goes to
destination `e // k_l`). Unused slots are masked (node id 0, mask False). `worst_case_caps`
never overflows; `calibrate_caps` measures tighter capacities, and a batch that still overflows
keeps a random subset of its new nodes, masks the edges to the dropped ones and counts them in
`MiniBatch.dropped` (the training loop logs the count).

On the device (`config.data.sampler = "device"`): `sample_blocks_jax` is the same sampler in
JAX (jittable, fixed shapes, the same rules: Floyd's algorithm per node in a `fori_loop` over
the fan-out slots, new nodes deduplicated by sorting and kept in id order, the same overflow
rule), keyed per batch (`batch_key(seed, step, device)`); `DeviceNeighborSampler` holds the CSR
arrays on the device with a host sampler's fan-outs and (calibrated) capacities. Its random
draws differ from numpy's, its distribution does not (tests/research/bifeat/test_device_sampler.py).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from research.datasets.graphs import sorted_unique
from research.training import distributed


class MiniBatch(NamedTuple):
    """One sampled mini-batch (numpy). L layers; `n_l = caps[l]`, `n_L = batch_size`.

    input_nodes: [n_0] int32 global ids of the input-layer nodes (padding: 0).
    input_mask: [n_0] bool, which input slots hold a node.
    senders: L arrays, senders[l]: [n_{l+1} * k_l] int32, local index into layer l's nodes.
    edge_mask: L arrays, edge_mask[l]: [n_{l+1} * k_l] bool.
    seeds: [batch_size] int32 global ids of the output nodes (padding: 0).
    seed_mask: [batch_size] bool.
    dropped: [] int64, new nodes dropped because a capacity was exceeded (0 with worst-case caps).
    """

    input_nodes: np.ndarray
    input_mask: np.ndarray
    senders: tuple[np.ndarray, ...]
    edge_mask: tuple[np.ndarray, ...]
    seeds: np.ndarray
    seed_mask: np.ndarray
    dropped: np.ndarray


def sample_neighbors(
    indptr: np.ndarray,
    indices: np.ndarray,
    nodes: np.ndarray,
    valid: np.ndarray,
    fanout: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `fanout` distinct uniform neighbours of each valid node, without replacement.

    nodes: [n] int node ids; valid: [n] bool. Returns (nbrs [n, fanout] int32 global ids, 0 in
    masked slots; mask [n, fanout] bool). Nodes with degree <= fanout take all neighbours; the
    others a uniform random `fanout`-subset by Floyd's algorithm, vectorised over nodes (a
    Python loop over the `fanout` slots only).
    """
    n = len(nodes)
    start = indptr[nodes]
    deg = np.where(valid, indptr[nodes + 1] - start, 0)
    slots = np.arange(fanout)
    offsets = np.broadcast_to(slots, (n, fanout)).copy()
    mask = slots[None, :] < deg[:, None]
    big = np.flatnonzero(deg > fanout)
    if big.size:
        d = deg[big]
        sel = np.empty((big.size, fanout), np.int64)
        for i in range(fanout):  # Floyd: j = d-k+i; t ~ U[0, j]; take j if t was taken already
            j = d - fanout + i
            t = (rng.random(big.size) * (j + 1)).astype(np.int64)
            np.minimum(t, j, out=t)  # float rounding guard
            taken = (sel[:, :i] == t[:, None]).any(1)
            sel[:, i] = np.where(taken, j, t)
        offsets[big] = sel
    if len(indices) == 0:
        return np.zeros((n, fanout), np.int32), np.zeros((n, fanout), bool)
    flat = np.where(mask, start[:, None] + offsets, 0)
    nbrs = np.where(mask, indices[flat], 0).astype(np.int32)
    return nbrs, mask


def worst_case_caps(num_nodes: int, fanouts: Sequence[int], batch_size: int) -> tuple[int, ...]:
    """Capacities `(n_0, ..., n_L)` that no batch can exceed: `n_L = batch_size`,
    `n_l = n_{l+1} + min(num_nodes, n_{l+1} * k_l)`."""
    caps = [int(batch_size)]
    for k in reversed(fanouts):
        caps.append(caps[-1] + min(int(num_nodes), caps[-1] * int(k)))
    return tuple(reversed(caps))


class NeighborSampler:
    """Samples fixed-shape `MiniBatch`es from a CSR graph. Thread-safe (per-thread scratch).

    Args:
      indptr, indices: CSR adjacency ([N+1] int64, [E] int32).
      fanouts: per-layer fan-outs, input layer first (DGL order), e.g. (5, 10, 15).
      batch_size: seed slots per batch (the per-device batch under data parallelism).
      caps: node capacities per layer `(n_0, ..., n_L)`, `n_L == batch_size`; default
        `worst_case_caps`.
    """

    def __init__(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        fanouts: Sequence[int],
        batch_size: int,
        caps: Sequence[int] | None = None,
    ):
        self.indptr = np.asarray(indptr, np.int64)
        self.indices = np.asarray(indices, np.int32)
        self.num_nodes = len(self.indptr) - 1
        self.fanouts = tuple(int(k) for k in fanouts)
        if not self.fanouts or min(self.fanouts) < 1:
            raise ValueError(f"fanouts must be positive integers, got {fanouts}")
        self.batch_size = int(batch_size)
        worst = worst_case_caps(self.num_nodes, self.fanouts, self.batch_size)
        self.caps = tuple(int(c) for c in caps) if caps is not None else worst
        if len(self.caps) != len(self.fanouts) + 1 or self.caps[-1] != self.batch_size:
            raise ValueError(
                f"caps must have {len(self.fanouts) + 1} entries ending with batch_size "
                f"{self.batch_size}, got {self.caps}"
            )
        if any(self.caps[i] < self.caps[i + 1] for i in range(len(self.fanouts))):
            raise ValueError(f"caps must not increase towards the output layer: {self.caps}")
        self._local = threading.local()

    @property
    def num_layers(self) -> int:
        return len(self.fanouts)

    def _scratch(self) -> np.ndarray:
        """[N] int32 node -> local position map, all -1 between calls (one per thread)."""
        pos = getattr(self._local, "pos", None)
        if pos is None:
            pos = self._local.pos = np.full(self.num_nodes, -1, np.int32)
        return pos

    def sample(
        self, seeds: np.ndarray, rng: np.random.Generator, *, new_counts: list | None = None
    ) -> MiniBatch:
        """Samples the blocks of `seeds` ([<= batch_size] distinct node ids).

        new_counts: if a list, the number of new nodes of each layer is appended (calibration).
        """
        seeds = np.asarray(seeds, np.int32)
        if len(seeds) > self.batch_size:
            raise ValueError(f"{len(seeds)} seeds exceed batch_size {self.batch_size}")
        if len(sorted_unique(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct node ids")
        nodes = np.zeros(self.batch_size, np.int32)
        nodes[: len(seeds)] = seeds
        valid = np.arange(self.batch_size) < len(seeds)
        seed_nodes, seed_mask = nodes.copy(), valid.copy()
        pos = self._scratch()
        senders, masks, dropped = [], [], 0
        for layer in reversed(range(self.num_layers)):
            k, cap_dst, cap_src = self.fanouts[layer], len(nodes), self.caps[layer]
            nbrs, emask = sample_neighbors(self.indptr, self.indices, nodes, valid, k, rng)
            dst_ids = nodes[valid]
            new = np.zeros(0, np.int32)
            pos[dst_ids] = np.flatnonzero(valid).astype(np.int32)
            try:
                cand = nbrs[emask]
                new = sorted_unique(cand[pos[cand] < 0])
                if new_counts is not None:
                    new_counts.append(len(new))
                room = cap_src - cap_dst
                if len(new) > room:
                    dropped += len(new) - room
                    new = np.sort(rng.choice(new, room, replace=False))
                pos[new] = cap_dst + np.arange(len(new), dtype=np.int32)
                local = pos[nbrs]
                emask &= local >= 0  # edges to dropped nodes (overflow only)
                senders.append(np.where(emask, local, 0).astype(np.int32).reshape(-1))
                masks.append(emask.reshape(-1))
            finally:
                pos[dst_ids] = -1
                pos[new] = -1
            src_nodes = np.zeros(cap_src, np.int32)
            src_valid = np.zeros(cap_src, bool)
            src_nodes[:cap_dst], src_valid[:cap_dst] = nodes, valid
            src_nodes[cap_dst : cap_dst + len(new)] = new
            src_valid[cap_dst : cap_dst + len(new)] = True
            nodes, valid = src_nodes, src_valid
        return MiniBatch(
            input_nodes=nodes,
            input_mask=valid,
            senders=tuple(reversed(senders)),
            edge_mask=tuple(reversed(masks)),
            seeds=seed_nodes,
            seed_mask=seed_mask,
            dropped=np.asarray(dropped, np.int64),
        )


def calibrate_caps(
    sampler: NeighborSampler,
    seed_pool: np.ndarray,
    *,
    num_batches: int = 8,
    margin: float = 1.25,
    align: int = 64,
    seed: int = 0,
) -> tuple[int, ...]:
    """Tighter capacities from `num_batches` sampled batches of random seeds from `seed_pool`.

    Each layer gets `margin` x the largest number of new nodes seen (rounded up to `align`),
    never more than the worst case. Sampling runs with `sampler`'s own caps; pass a sampler with
    worst-case caps so that the counts are not truncated.
    """
    rng = np.random.default_rng(seed)
    worst = worst_case_caps(sampler.num_nodes, sampler.fanouts, sampler.batch_size)
    most = np.zeros(sampler.num_layers, np.int64)
    for _ in range(num_batches):
        seeds = rng.choice(seed_pool, min(sampler.batch_size, len(seed_pool)), replace=False)
        counts: list[int] = []
        sampler.sample(seeds, rng, new_counts=counts)
        most = np.maximum(most, counts[::-1])  # counts come output layer first
    caps = [sampler.batch_size]
    for layer in reversed(range(sampler.num_layers)):
        new = int(math.ceil(most[layer] * margin / align) * align)
        caps.append(min(worst[layer], caps[-1] + new))
    return tuple(reversed(caps))


def stack_batches(batches: Sequence[MiniBatch]) -> dict[str, np.ndarray]:
    """Per-device batches -> one dict of [num_devices, ...] arrays (the data-parallel layout):
    `input_nodes, input_mask, seeds, seed_mask, dropped`, and `senders_<l>`, `edge_mask_<l>`."""
    out = {
        name: np.stack([getattr(b, name) for b in batches])
        for name in ("input_nodes", "input_mask", "seeds", "seed_mask", "dropped")
    }
    for layer in range(len(batches[0].senders)):
        out[f"senders_{layer}"] = np.stack([b.senders[layer] for b in batches])
        out[f"edge_mask_{layer}"] = np.stack([b.edge_mask[layer] for b in batches])
    return out


# ----------------------------------------------------------------------------- on the device


def _check_int32_csr(num_nodes: int, num_edges: int) -> None:
    if num_edges >= 2**31 or num_nodes >= 2**31 - 1:
        raise ValueError(
            f"the device sampler indexes with int32: a graph of {num_nodes} nodes and "
            f"{num_edges} edges does not fit (use config.data.sampler='host')"
        )


def sample_neighbors_jax(
    indptr: jax.Array,
    indices: jax.Array,
    nodes: jax.Array,
    valid: jax.Array,
    fanout: int,
    key: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """`sample_neighbors` in JAX (jittable; `fanout` static): the same rule and distribution.

    indptr: [N+1] int32, indices: [E] int32 (device CSR); nodes: [n] int32; valid: [n] bool.
    Returns (nbrs [n, fanout] int32 global ids, 0 in masked slots; mask [n, fanout] bool).
    Nodes with degree <= fanout take all their neighbours in CSR order; the others a uniform
    random `fanout`-subset by Floyd's algorithm (slot i draws t ~ U{0..d-fanout+i} and takes
    d-fanout+i instead if t is taken already), vectorised over nodes, a `fori_loop` over slots.
    """
    n = nodes.shape[0]
    start = indptr[nodes]
    deg = jnp.where(valid, indptr[nodes + 1] - start, 0)
    slots = jnp.arange(fanout, dtype=jnp.int32)
    mask = slots[None, :] < deg[:, None]
    if indices.shape[0] == 0:
        return jnp.zeros((n, fanout), jnp.int32), jnp.zeros((n, fanout), bool)
    j = deg[:, None] - fanout + slots[None, :]  # [n, fanout]: Floyd's upper bound per slot
    draws = jax.random.randint(key, (n, fanout), 0, jnp.maximum(j + 1, 1), dtype=jnp.int32)

    def floyd(i, sel):
        t = draws[:, i]
        taken = ((sel == t[:, None]) & (slots[None, :] < i)).any(1)
        return sel.at[:, i].set(jnp.where(taken, j[:, i], t))

    sel = lax.fori_loop(0, fanout, floyd, jnp.zeros_like(draws))  # (varying under shard_map)
    offsets = jnp.where((deg > fanout)[:, None], sel, slots[None, :])
    flat = jnp.where(mask, start[:, None] + offsets, 0)
    nbrs = jnp.where(mask, jnp.take(indices, flat, mode="clip"), 0)
    return nbrs.astype(jnp.int32), mask


def _expand_layer(indptr, indices, nodes, valid, fanout, cap_src, num_nodes, key):
    """One layer of `sample_blocks_jax`: the sampled edges of destinations `nodes` ([n_dst]) and
    the source node list `[cap_src]` (destinations first, then the new nodes sorted by id; a
    uniform random `cap_src - n_dst` of them when there are more). Returns (src_nodes,
    src_valid, senders [n_dst * fanout], edge_mask [n_dst * fanout], dropped [])."""
    n_dst = nodes.shape[0]
    room = cap_src - n_dst
    key_sample, key_drop = jax.random.split(key)
    nbrs, emask = sample_neighbors_jax(indptr, indices, nodes, valid, fanout, key_sample)
    cand, cmask = nbrs.reshape(-1), emask.reshape(-1)
    m = cand.shape[0]
    # node -> local position; the scatter index num_nodes (out of range) is dropped
    pos = jnp.full(num_nodes, -1, jnp.int32)
    pos = pos.at[jnp.where(valid, nodes, num_nodes)].set(
        jnp.arange(n_dst, dtype=jnp.int32), mode="drop"
    )
    is_new = cmask & (pos[cand] < 0)
    ids = jnp.sort(jnp.where(is_new, cand, num_nodes))  # new candidates first, sorted by id
    first = (ids < num_nodes) & jnp.concatenate([jnp.ones(1, bool), ids[1:] != ids[:-1]])
    count = first.sum(dtype=jnp.int32)
    keep = first
    if m > room:  # overflow possible: keep a uniform random `room` of the distinct new ids

        def drop_random(first):
            prio = jnp.where(first, jax.random.uniform(key_drop, (m,)), 2.0)
            rank = jnp.zeros(m, jnp.int32).at[jnp.argsort(prio)].set(jnp.arange(m, dtype=jnp.int32))
            return first & (rank < room)

        keep = lax.cond(count > room, drop_random, lambda first: first, first)
    slot = jnp.cumsum(keep, dtype=jnp.int32) - 1
    kept = slot[-1] + 1 if m else jnp.int32(0)
    new_ids = jnp.zeros(room, jnp.int32).at[jnp.where(keep, slot, room)].set(ids, mode="drop")
    pos = pos.at[jnp.where(keep, ids, num_nodes)].set(n_dst + slot, mode="drop")
    local = pos[cand]
    emask_out = cmask & (local >= 0)  # edges to dropped nodes (overflow only)
    senders = jnp.where(emask_out, local, 0).astype(jnp.int32)
    src_nodes = jnp.concatenate([nodes, new_ids])
    src_valid = jnp.concatenate([valid, jnp.arange(room) < kept])
    return src_nodes, src_valid, senders, emask_out, count - kept


def sample_blocks_jax(
    indptr: jax.Array,
    indices: jax.Array,
    seeds: jax.Array,
    seed_mask: jax.Array,
    key: jax.Array,
    *,
    fanouts: Sequence[int],
    caps: Sequence[int],
    num_nodes: int,
) -> MiniBatch:
    """`NeighborSampler.sample` in JAX (jittable; fanouts, caps, num_nodes static).

    seeds: [batch_size] int32 distinct node ids (padding: 0), seed_mask: [batch_size] bool,
    `batch_size == caps[-1]`. Returns a `MiniBatch` of jax arrays with the host sampler's
    shapes, dtypes (`dropped` is int32 here) and block structure: destinations first, new nodes
    deduplicated and sorted by id, padding masked with id 0, overflow handled the same way.
    Layer l (input layer 0) draws with `fold_in(key, l)`.
    """
    nodes, valid = seeds.astype(jnp.int32), seed_mask
    senders, masks, dropped = [], [], jnp.int32(0)
    for layer in reversed(range(len(fanouts))):
        nodes, valid, s, m, d = _expand_layer(
            indptr,
            indices,
            nodes,
            valid,
            int(fanouts[layer]),
            int(caps[layer]),
            num_nodes,
            jax.random.fold_in(key, layer),
        )
        senders.append(s)
        masks.append(m)
        dropped = dropped + d
    return MiniBatch(
        input_nodes=nodes,
        input_mask=valid,
        senders=tuple(reversed(senders)),
        edge_mask=tuple(reversed(masks)),
        seeds=jnp.where(seed_mask, seeds, 0).astype(jnp.int32),
        seed_mask=seed_mask,
        dropped=dropped,
    )


def batch_key(seed: jax.Array | int, step: jax.Array | int, device: jax.Array | int) -> jax.Array:
    """The sampling key of one device's batch: `PRNGKey(seed)` folded with 1, the step and the
    device index (the epoch permutation uses the stream folded with 0)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    return jax.random.fold_in(jax.random.fold_in(key, step), device)


class DeviceNeighborSampler:
    """The device twin of a `NeighborSampler`: same fan-outs, batch size and capacities (take
    them from a calibrated host sampler), the CSR arrays resident on the device (int32,
    replicated over `mesh` when given), `sample_blocks_jax` for the sampling.

    indptr: [N+1], indices: [E] device arrays; `sample(seeds, key)` samples one batch (jitted).
    """

    def __init__(self, host: NeighborSampler, mesh: Any = None):
        _check_int32_csr(host.num_nodes, len(host.indices))
        self.fanouts, self.caps, self.batch_size = host.fanouts, host.caps, host.batch_size
        self.num_nodes = host.num_nodes
        csr = (host.indptr.astype(np.int32), host.indices.astype(np.int32))
        if mesh is not None:
            csr = distributed.replicate(csr, mesh)
        self.indptr, self.indices = (jnp.asarray(a) for a in csr)
        self._sample = jax.jit(self.blocks)

    @property
    def num_layers(self) -> int:
        return len(self.fanouts)

    def blocks(self, indptr, indices, seeds, seed_mask, key) -> MiniBatch:
        """`sample_blocks_jax` with this sampler's static shapes (call inside a jitted fn)."""
        return sample_blocks_jax(
            indptr,
            indices,
            seeds,
            seed_mask,
            key,
            fanouts=self.fanouts,
            caps=self.caps,
            num_nodes=self.num_nodes,
        )

    def sample(self, seeds: np.ndarray, key: jax.Array) -> MiniBatch:
        """One batch for `seeds` ([<= batch_size] distinct ids), as `NeighborSampler.sample`."""
        seeds = np.asarray(seeds, np.int32)
        if len(seeds) > self.batch_size:
            raise ValueError(f"{len(seeds)} seeds exceed batch_size {self.batch_size}")
        padded = np.zeros(self.batch_size, np.int32)
        padded[: len(seeds)] = seeds
        mask = np.arange(self.batch_size) < len(seeds)
        return self._sample(self.indptr, self.indices, padded, mask, key)


def csr_edge_keys(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """`[E] int64`, sorted: `dst * N + src` of every CSR edge (the lookup of `block_errors`)."""
    indptr, indices = np.asarray(indptr, np.int64), np.asarray(indices, np.int64)
    n = len(indptr) - 1
    return np.sort(np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr)) * n + indices)


def block_errors(
    indptr: np.ndarray,
    indices: np.ndarray,
    batch: MiniBatch,
    fanouts,
    caps,
    *,
    edge_keys: np.ndarray | None = None,
) -> int:
    """Number of rule violations in one sampled `MiniBatch` (numpy arrays; any sampler): per
    layer, unmasked edges that are not CSR edges or come from invalid slots, valid destinations
    with other than min(fan-out, degree) edges (with `batch.dropped == 0`), repeated neighbours,
    edges of padding destinations; and repeated or mismatched node ids (vectorised: for checks on
    large graphs, e.g. on the GPU). `edge_keys`: `csr_edge_keys(indptr, indices)` when checking
    several batches of one graph (a sort of every edge; computed here when None)."""
    indptr = np.asarray(indptr, np.int64)
    n = len(indptr) - 1
    deg = np.diff(indptr)
    if edge_keys is None:
        edge_keys = csr_edge_keys(indptr, indices)
    nodes, valid = np.asarray(batch.input_nodes), np.asarray(batch.input_mask)
    errors = 0
    for layer, k in enumerate(fanouts):
        dst, dst_valid = nodes[: caps[layer + 1]], valid[: caps[layer + 1]]
        senders = np.asarray(batch.senders[layer]).reshape(caps[layer + 1], k)
        mask = np.asarray(batch.edge_mask[layer]).reshape(caps[layer + 1], k)
        errors += int((mask & ~dst_valid[:, None]).sum())
        src = nodes[senders]
        errors += int((mask & ~valid[: caps[layer]][senders]).sum())
        keys = dst[:, None].astype(np.int64) * n + src
        at = np.minimum(np.searchsorted(edge_keys, keys), len(edge_keys) - 1)
        exists = edge_keys[at] == keys if len(edge_keys) else np.zeros_like(mask)
        errors += int((mask & ~exists).sum())
        ordered = np.sort(np.where(mask, src, -1 - np.arange(k)), axis=1)
        errors += int((ordered[:, 1:] == ordered[:, :-1]).sum())
        if int(batch.dropped) == 0:
            want = np.where(dst_valid, np.minimum(k, deg[dst]), 0)
            errors += int((mask.sum(1) != want).sum())
    ids = nodes[valid]
    errors += len(ids) - len(np.unique(ids))
    seeds, seed_mask = np.asarray(batch.seeds), np.asarray(batch.seed_mask)
    errors += int((nodes[: len(seeds)][seed_mask] != seeds[seed_mask]).sum())
    return errors
