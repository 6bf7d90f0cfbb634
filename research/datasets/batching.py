"""Shuffled mini-batches as a pure function of the training step, so a resumed run sees the
same data: each epoch is a fresh permutation seeded by (seed, epoch), and the last incomplete
batch of an epoch is dropped (as a DataLoader with drop_last)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Seed = int | Sequence[int]


def _check(num_examples: int, batch_size: int) -> int:
    """Steps per epoch; a clear error when there is not one whole batch."""
    if batch_size < 1 or num_examples < batch_size:
        raise ValueError(
            f"{num_examples} training examples are fewer than one batch of {batch_size}"
        )
    return num_examples // batch_size


def epoch_permutation(num_examples: int, epoch: int, seed: Seed) -> np.ndarray:
    """[num_examples] the example order of `epoch` (seeded by (*seed, epoch))."""
    return np.random.default_rng([*np.atleast_1d(seed).tolist(), epoch]).permutation(num_examples)


def epoch_indices(num_examples: int, batch_size: int, step: int, *, seed: Seed) -> np.ndarray:
    """The example indices [batch_size] of training step `step`."""
    epoch, i = divmod(step, _check(num_examples, batch_size))
    return epoch_permutation(num_examples, epoch, seed)[i * batch_size : (i + 1) * batch_size]


class EpochBatches:
    """`step -> {name: rows of tables[name]}` for the call starting at `step`: leaves
    [steps_per_call, B, ...], or [B, ...] when steps_per_call is 1. The tables share their first
    axis (the examples); the current epoch's permutation is cached.

    `rows` (a slice of range(B)) restricts every batch to those positions: in a run of several
    processes, `distributed.process_rows(B)`, so that each process gathers only its rows of the
    global batch (the order is the same for every process count)."""

    def __init__(
        self,
        tables: dict[str, np.ndarray],
        batch_size: int,
        *,
        seed: Seed,
        steps_per_call: int = 1,
        rows: slice = slice(None),
    ):
        sizes = {name: len(t) for name, t in tables.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"EpochBatches: tables differ in their number of rows: {sizes}")
        self.tables, self.batch_size, self.seed = tables, batch_size, seed
        self.steps_per_call, self.rows = steps_per_call, rows
        self.num_examples = next(iter(sizes.values()))
        self.steps_per_epoch = _check(self.num_examples, batch_size)
        self._perm: tuple[int, np.ndarray] | None = None

    def indices(self, step: int) -> np.ndarray:
        """[batch_size] example indices of one step (= `epoch_indices`, permutation cached)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(self.num_examples, epoch, self.seed))
        return self._perm[1][i * self.batch_size : (i + 1) * self.batch_size]

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        steps = range(step, step + self.steps_per_call)
        idx = np.stack([self.indices(s)[self.rows] for s in steps])
        batch = {name: t[idx] for name, t in self.tables.items()}
        return batch if self.steps_per_call > 1 else {k: v[0] for k, v in batch.items()}
