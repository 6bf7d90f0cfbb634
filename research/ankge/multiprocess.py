"""Work split over the processes of a multi-process run (`research.training.distributed`).

AnKGE's ranking and retrieval are per row (a query, an (r, t) pair, a triple): in a run of P
processes each process computes a contiguous share of the rows on its own devices
(`share_of`), and `gather` puts the shares back together in every process, so that every
process ends with all the rows, in order, exactly as one process computes them (the values are
copied, never added). In a single-process run none of this is used: the callers keep their
one-process code path.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


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
