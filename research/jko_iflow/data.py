"""Train/test data of a JKO-iFlow run, and the epoch-shuffled batches the training loop reads."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from research.datasets import densities
from research.datasets.batching import EpochBatches
from research.datasets.paths import resolve_data_dir


def load_data(
    name: str, *, data_dir: str, num_train: int, num_test: int, seed: int
) -> dict[str, Any]:
    """Train and test samples of density `name`.

    2D densities (code or image `<data_dir>/<name>.png`) draw `num_train` and `num_test`
    independent samples, as the official code does; tabular benchmarks read their `.npy` splits
    `<data_dir>/<name>/{train,test}.npy` (`num_*` cap the sizes when positive). Returns
    {"train": [N, d], "test": [M, d], "true_logpdf": fn or None}. Errors name the file or the
    folder and what was expected; values read from files are checked finite by the loaders.
    """
    reads_files = name.lower() in densities.TABULAR_DIMS or name in densities.IMAGE_DENSITIES
    if reads_files:
        folder = resolve_data_dir(data_dir) if data_dir else ""
        if not folder or not os.path.isdir(folder):
            raise FileNotFoundError(
                f"data folder {folder or '(none)'} (from --config.data_dir={data_dir!r}) does not "
                f"exist; density {name} reads its files from it (rose, tree: "
                "shared/data/densities2d beside the repository)"
            )
    if name.lower() in densities.TABULAR_DIMS:
        splits = densities.load_tabular(folder, name.lower())
        train, test = splits["train"], splits["test"]
        train = train[:num_train] if num_train > 0 else train
        test = test[:num_test] if num_test > 0 else test
        return {"train": train, "test": test, "true_logpdf": None}
    if name in densities.IMAGE_DENSITIES:
        sampler = densities.load_image_density(folder, name)
    else:
        sampler = densities.get_sampler(name)
    train = sampler(num_train, np.random.default_rng([seed, 0]))
    test = sampler(num_test, np.random.default_rng([seed, 1]))
    true_logpdf = densities.gaussian_logpdf if name == "gaussian" else None
    return {"train": train, "test": test, "true_logpdf": true_logpdf}


def epoch_batches(
    x: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    steps_per_call: int = 1,
    extra: dict[str, float] | None = None,
    rows: slice = slice(None),
) -> Callable[[int], dict[str, np.ndarray]]:
    """`step -> batch` drawing `x` [N, d] without replacement in a new random order each epoch
    (`research.datasets.batching.EpochBatches`), a pure function of `step`.

    The batch is {"x": [R, d]} (or [steps_per_call, R, d]), R the `rows` of the batch of
    `batch_size` (all of them by default; in a run of several processes this process's,
    `distributed.process_rows(batch_size)`); each `extra[name] = value` adds a constant
    per-sample leaf [R] (or [steps_per_call, R]).
    """
    batches = EpochBatches(
        {"x": x}, batch_size, seed=seed, steps_per_call=steps_per_call, rows=rows
    )

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        out = batches(step)
        for name, value in (extra or {}).items():
            out[name] = np.full(out["x"].shape[:-1], value, np.float32)
        return out

    return batch_fn
