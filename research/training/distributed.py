"""Several processes, one computation: JAX's multi-process runtime (`jax.distributed`).

Each process runs the same program on its own devices; `jax.devices()` lists every process's
devices (process 0's first, then process 1's, ...), `jax.local_devices()` this process's. A
`data` mesh over `global_mesh()` spans them all. Each process builds only its rows of a global
batch (`process_rows`), and `assemble_batch` joins every process's rows into one global array
(`jax.make_array_from_process_local_data`). On CPU the
processes' collectives go through gloo (TCP).

Work done per row outside the training step (ranking queries, retrieving neighbours) splits the
same way: each process computes a contiguous share of the rows (`share_of`) on its own devices,
and `gather` puts the shares back together, in order, in every process (the values are copied,
never added, so every process ends with exactly what one process computes); `all_rows` reads
the rows of every process (a sharded array's whole value) and `process_sum` adds a count over
the processes. `replicate` places host values on every process's devices, `process_local` gives
a computation of this process alone its copy of globally replicated parameters.

Start the processes with `python -m experiments.launch` on one machine, or `srun` under SLURM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from research.training import parallel
from research.training.parallel import DATA_AXIS, check_divisible, data_mesh

# Read here, not by jax: jax 0.10.2 reads JAX_COORDINATOR_ADDRESS itself but has no environment
# variable for the number of processes or this process's id.
ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
# What jax 0.10.2's SLURM detection (jax._src.clusters.slurm_cluster) reads; srun sets them all.
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID")


def _cpu_only() -> bool:
    """True unless an accelerator platform is requested (`JAX_PLATFORMS` / `jax_platforms`)."""
    platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
    return not platforms or platforms.split(",")[0].strip() == "cpu"


def _in_slurm_step_of_several_tasks() -> bool:
    env = os.environ
    return all(env.get(v) for v in (*SLURM_VARS, "SLURM_LOCALID")) and int(env["SLURM_NTASKS"]) > 1


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
    """Joins this process to a multi-process JAX run; call it before any JAX computation.

    With all three arguments it starts the runtime with them. With none it reads them from
    `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, or, inside a SLURM job
    step of several tasks (`srun --ntasks=N`), lets jax's own SLURM detection find them.
    Otherwise the process stays a single-process run. Some but not all of the three (as arguments
    or as environment variables) raise ValueError naming the missing ones. On CPU the processes'
    collectives use gloo. A second call does nothing.
    """
    if jax.distributed.is_initialized():
        return
    given = {
        "--coordinator_address": coordinator_address,
        "--num_processes": num_processes if num_processes > 0 else "",
        "--process_id": process_id if process_id >= 0 else "",
    }
    if not any(v != "" for v in given.values()):  # no arguments: the environment decides
        env = {name: os.environ.get(name, "") for name in ENV_VARS}
        if not (env["JAX_NUM_PROCESSES"] or env["JAX_PROCESS_ID"]):
            if _in_slurm_step_of_several_tasks():
                _set_cpu_collectives()
                jax.distributed.initialize()  # jax reads the SLURM variables itself
            return
        given = env
    missing = [name for name, value in given.items() if value == ""]
    if missing:
        raise ValueError(
            f"a multi-process run needs {', '.join(given)} together; missing: {', '.join(missing)}"
        )
    address, count, index = given.values()
    try:
        count, index = int(count), int(index)
    except ValueError:
        raise ValueError(
            f"the number of processes {count!r} and process id {index!r} must be integers"
        ) from None
    if not 0 <= index < count:
        raise ValueError(f"process id {index} must be below the number of processes {count}")
    _set_cpu_collectives()
    jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=index)


def _set_cpu_collectives() -> None:
    """gloo for cross-process collectives on CPU (jax 0.10.2's default already; set explicitly so
    that it does not depend on the version), unless the user chose one in the environment."""
    if _cpu_only() and "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def is_multi_process() -> bool:
    """True in a run of several processes; in a single-process run it leaves the backend alone
    (it starts no jax backend unless `initialize` started the runtime)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def describe_layout() -> str:
    """One line: this process, its devices and the global device count."""
    by_kind: dict[str, list[int]] = {}
    for d in jax.local_devices():
        by_kind.setdefault(d.device_kind, []).append(d.id)
    local = "; ".join(f"{kind} ids {', '.join(map(str, ids))}" for kind, ids in by_kind.items())
    return (
        f"process {jax.process_index()} of {jax.process_count()}: "
        f"{jax.local_device_count()} local devices ({local}), {jax.device_count()} devices in all"
    )


def global_mesh() -> Mesh:
    """The `data` mesh over every process's devices, in `jax.devices()` order (process-major)."""
    return data_mesh(jax.devices())


def process_rows(global_batch_size: int, mesh: Mesh | None = None) -> slice:
    """The contiguous rows of a global batch that this process holds on `mesh` (default
    `global_mesh()`: every device of every process).

    Every process holds an equal share, in process order: the mesh lists process 0's devices
    first (as `jax.devices()` does), so its first shards are process 0's rows.
    """
    if mesh is None:
        per_process = jax.local_device_count()
        shards = jax.process_count() * per_process
    else:
        per_process = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
        shards = mesh.size
    if global_batch_size % shards:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by {shards} devices "
            f"({jax.process_count()} processes x {per_process} devices)"
        )
    size = global_batch_size // jax.process_count()
    start = jax.process_index() * size
    return slice(start, start + size)


def assemble_batch(local_batch: Any, mesh: Mesh, *, steps_per_call: int = 1) -> Any:
    """The global batch as jax.Arrays split over `mesh`'s `data` axis, from THIS PROCESS'S rows
    (`process_rows(global_batch_size)` of every leaf; in a single process, all rows).

    Leaves are [B / P, ...], or [steps_per_call, B / P, ...] with the second axis split (as
    `parallel.shard_batch`, which it equals in a single process); the global leaves are
    [B, ...]. A leaf that is already a jax.Array on `mesh`'s devices (built there, e.g. by a
    sampler running on the mesh) is taken as the global array it is.
    """
    axis = 0 if steps_per_call == 1 else 1
    spec = PartitionSpec(DATA_AXIS) if axis == 0 else PartitionSpec(None, DATA_AXIS)
    sharding = NamedSharding(mesh, spec)
    processes = jax.process_count()

    def is_global(leaf) -> bool:
        return isinstance(leaf, jax.Array) and not leaf.is_fully_addressable

    def global_shape(leaf) -> jax.ShapeDtypeStruct:
        shape = list(np.shape(leaf))
        if len(shape) > axis and not is_global(leaf):
            shape[axis] *= processes
        return jax.ShapeDtypeStruct(tuple(shape), np.result_type(leaf))

    shapes = jax.tree.map(global_shape, local_batch)
    check_divisible(shapes, mesh.size, axis=axis)

    def place(leaf, shape):
        if is_global(leaf):
            return leaf
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf), shape.shape)

    return jax.tree.map(place, local_batch, shapes)


# Work split by rows (queries, pairs, triples) that each process computes on its own devices.


def share_of(num: int, *, multiple: int = 1) -> tuple[slice, int]:
    """This process's contiguous rows of `num` and the share size S: process p holds rows
    [p S, min(num, (p + 1) S)), S = ceil(num / P) rounded up to a multiple of `multiple` (so
    that shares start on the callers' block boundaries). The last processes may hold fewer
    rows, or none."""
    blocks = -(-num // multiple)
    size = -(-blocks // jax.process_count()) * multiple
    start = min(num, jax.process_index() * size)
    return slice(start, min(num, start + size)), size


def gather(local: np.ndarray, size: int, num: int, *, axis: int = 0) -> np.ndarray:
    """Every process's `local` rows (along `axis`, at most `size`, as `share_of` gives them)
    concatenated in process order: the `num` rows in every process. A collective: every
    process must call it, with the same `size` and `num`."""
    local = np.asarray(local)
    if local.shape[axis] > size:
        raise ValueError(f"a process's share has {local.shape[axis]} rows, more than {size}")
    pad = [(0, 0)] * local.ndim
    pad[axis] = (0, size - local.shape[axis])
    padded = np.pad(local, pad)
    stacked = np.asarray(multihost_utils.process_allgather(padded))  # [P, ..., size, ...]
    joined = np.concatenate(list(stacked), axis=axis)
    return np.take(joined, np.arange(num), axis=axis)


def process_local(tree: Any) -> Any:
    """`tree` with every jax.Array that spans other processes' devices (e.g. parameters
    replicated over `distributed.global_mesh()`) replaced by this process's copy, so that a
    computation of this process alone can take it."""

    def local(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if x.is_fully_replicated:
            return x.addressable_data(0)
        return multihost_utils.process_allgather(x)  # the whole value, in every process

    return jax.tree.map(local, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of `tree` replicated over `mesh` (`parallel.replicate` in a single process).

    In a run of several processes each leaf (numpy, or a jax.Array on this process's devices)
    must hold the same value in every process; it is placed from this process's host copy
    (`jax.device_put` cannot move an array committed to one local device onto other processes'
    devices, and checks host values across processes with a collective per leaf). A leaf
    already replicated over `mesh` is kept as it is.
    """
    if not is_multi_process():
        return parallel.replicate(tree, mesh)
    sharding = NamedSharding(mesh, PartitionSpec())

    def place(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        host = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


def all_rows(x: Any) -> np.ndarray:
    """The rows of every process as numpy `[R, ...]`, in every process.

    `x` is `[r, ...]`: this process's rows (a host array, or a jax.Array on this process's
    devices; the processes' rows are concatenated in process order, R = P r), or a jax.Array
    spanning every process's devices (its whole value, R = r). In a single process:
    `np.asarray(x)`. A collective in a run of several processes: every process calls it.
    """
    if not is_multi_process():
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def process_sum(count: int) -> int:
    """The sum of every process's `count` (its share of a total), in every process; a
    collective in a run of several processes."""
    return int(all_rows(np.asarray([count], np.int64)).sum())


def map_split(work: Callable[[Any], Any], items: Sequence[Any], *, what: str) -> list[Any]:
    """`[work(item) for item in items]`, each process computing its contiguous share of the
    items (`share_of`; logged, naming the items `what`) and every process ending with all the
    results, in order: independent jobs (registration pairs, sweep levels) split over the
    processes. In a run of several processes the results travel as JSON (`gather` of the
    bytes), so they must be JSON-able (numpy values become numbers and lists; floats keep every
    bit). A collective: every process calls it with the same items."""
    share = share_of(len(items))[0]
    mine = f"{what} {share.start + 1} to {share.stop}" if share.stop > share.start else f"no {what}"
    logging.info("process %d: %s of %d", process_index(), mine, len(items))
    local = [work(item) for item in items[share]]
    if not is_multi_process():
        return local
    processes = process_count()
    blob = np.frombuffer(json.dumps(local, default=_numpy_tolist).encode(), np.uint8)
    lengths = gather(np.array([len(blob)]), 1, processes)  # [P]
    padded = np.zeros((1, int(lengths.max())), np.uint8)
    padded[0, : len(blob)] = blob
    blobs = gather(padded, 1, processes)  # [P, longest]
    shares = [json.loads(blobs[p, : lengths[p]].tobytes()) for p in range(processes)]
    return [result for share_results in shares for result in share_results]


def _numpy_tolist(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists, for `json.dumps`."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
