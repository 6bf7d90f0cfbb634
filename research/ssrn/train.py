"""SSRN against its base network: `train_and_evaluate`.

    python -m experiments.ssrn --config=experiments/configs/ssrn.py:small --workdir=DIR

For every number of sampled positions N in `config.sampled_positions` (the sampling sparsity),
method in `config.methods` ("base": the VSLNet-style network on the anchor sampling; "siamese":
the same network also trained on the siamese sequences, without the reasoning; "ssrn": siamese
sampling and soft boundary reasoning) and seed, one model is trained
(`DIR/runs/N<n>/<method>/seed<k>/`: checkpoints, metrics, `result.json`) and evaluated on the
test queries from the anchor sampling alone; its final parameters are kept as `params.npz`.
Then `DIR/results.{json,md}` and `DIR/gain.png`.

Several processes (`research.training.distributed`): every process trains on the global mesh
(`distributed.global_mesh()`) and builds only its rows of each global batch (`make_batch_fn`'s
`rows`); the test queries are split over the processes and their predictions gathered in every
process (`evaluate`), so every process ends with the metrics of one process. Process 0 alone
writes the files (`workdir.is_writer`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from models.params import count_params
from research.ssrn import method, metrics, report
from research.ssrn.config_rules import name_lists
from research.ssrn.data import QuerySet
from research.ssrn.sampling import siamese_offsets
from research.ssrn.sources import GroundingData, load_data
from research.training import distributed, results
from research.training.loop import train_loop
from research.training.metrics import steady_steps_per_second
from research.training.parallel import make_train_step
from research.training.prefetch import Prefetcher
from research.training.train_state import TrainState

Config = ml_collections.ConfigDict


def make_batch_fn(
    queries: QuerySet,
    batch_size: int,
    siamese: method.SiameseOptions,
    seed: int,
    max_positions: int,
    rows: slice = slice(None),
):
    """`step -> batch` of `batch_size` random training queries, the anchor and `num_siamese`
    siamese sequences at fresh offsets, at most `max_positions` each; a pure function of
    (seed, step). The queries and offsets [B, 1 + num_siamese] are drawn for the whole global
    batch, then only its `rows` (`distributed.process_rows(B)` in a run of several processes)
    are sampled: [len(rows), ...] leaves, the same rows as the whole batch's."""

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, step])
        indices = rng.integers(0, len(queries), size=batch_size)
        offsets = np.zeros((batch_size, 1 + siamese.num_siamese))
        if siamese.num_siamese:
            offsets[:, 1:] = siamese_offsets(
                rng, (batch_size, siamese.num_siamese), siamese.offset_spread
            )
        return queries.batch(indices[rows], offsets[rows], max_positions=max_positions)

    return batch_fn


def evaluate(
    predict, params: Any, queries: QuerySet, batch_size: int, max_positions: int
) -> tuple[dict[str, float], float]:
    """Metrics of both decodings (`refined_*`, `window_*`) on every query, and the inference
    throughput in queries/s (host sampling included, compilation excluded).

    `params` must be this process's (host or local-device) copy. In a run of several processes
    each process predicts a contiguous share of the queries, in the chunks of `batch_size` one
    process would use (`distributed.share_of`), and the predicted spans [Q, k, 2] are gathered
    in every process: every process returns the metrics of one process.
    """
    share, size = distributed.share_of(len(queries), multiple=batch_size)
    order = np.arange(len(queries))[share]
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def batch(chunk: np.ndarray) -> dict[str, np.ndarray]:
        padded = np.resize(chunk, batch_size)  # one shape: one compilation
        return queries.batch(padded, np.zeros((batch_size, 1)), max_positions=max_positions)

    if chunks:  # the last processes may have no share
        jax.block_until_ready(predict(params, batch(chunks[0])))  # compiles
    outputs: dict[str, list[np.ndarray]] = {"refined": [], "window": []}
    start = time.perf_counter()
    for chunk in chunks:
        out = jax.device_get(predict(params, batch(chunk)))
        for name in outputs:
            outputs[name].append(out[name][: len(chunk)])
    if chunks:
        spans = {name: np.concatenate(parts) for name, parts in outputs.items()}
    else:  # no share: no spans [0, k, 2]
        shapes = jax.eval_shape(predict, params, batch(np.zeros(1, int)))
        spans = {name: np.zeros((0, *x.shape[1:]), x.dtype) for name, x in shapes.items()}
    if distributed.is_multi_process():
        spans = {name: distributed.gather(s, size, len(queries)) for name, s in spans.items()}
    queries_per_s = len(queries) / (time.perf_counter() - start)
    gt = np.array([[m.start, m.end] for m in queries.moments])
    out = {}
    for name, seconds in spans.items():
        scores = metrics.grounding_metrics(seconds, gt)
        out.update({f"{name}_{k}": v for k, v in scores.items()})
    return out, queries_per_s


def run_one(
    config: Config, data: GroundingData, positions: int, name: str, seed: int, workdir: str
) -> dict[str, Any]:
    """Trains and evaluates one (N, method, seed); returns its metrics."""
    model_opts = method.ModelOptions(**{**config.model, "max_positions": positions})
    train_opts = method.TrainOptions(**config.train)
    siamese = method.SiameseOptions(**config.siamese)
    if name == "base":
        siamese = dataclasses.replace(siamese, num_siamese=0)
    elif name == "siamese":
        siamese = dataclasses.replace(siamese, loss_weight=0.0)
    model = method.make_model(model_opts, len(data.vocab), siamese, data.word_vectors)
    batch_fn = make_batch_fn(
        data.train,
        train_opts.batch_size,
        siamese,
        seed,
        positions,
        rows=distributed.process_rows(train_opts.batch_size),
    )
    key = jax.random.PRNGKey(seed)
    params = method.init_params(model, batch_fn(0), key, project=method.reasons(siamese))
    optimizer = method.make_optimizer(train_opts, train_opts.steps)
    mesh = distributed.global_mesh()
    start = time.perf_counter()
    with Prefetcher(batch_fn, end=train_opts.steps, depth=config.prefetch) as batches:
        state = train_loop(
            workdir=workdir,
            state=TrainState.create(params, optimizer, jax.random.fold_in(key, 1)),
            train_step=make_train_step(
                method.make_loss_fn(model, train_opts, siamese), optimizer, mesh
            ),
            batch_fn=batches,
            num_steps=train_opts.steps,
            mesh=mesh,
            checkpoint_every=config.checkpoint_every,
            keep_checkpoints=1,
            log_every=config.log_every,
            desc=f"N={positions} {name} seed {seed}",
        )
    train_seconds = time.perf_counter() - start
    params = jax.device_get(state.params)  # replicated: every process holds all of it
    results.save_arrays(os.path.join(workdir, "params.npz"), params)
    max_len = config.decode.max_span_positions or positions
    predict = method.make_predict_fn(model, top_k=config.decode.top_k, max_len=max_len)
    scores, queries_per_s = evaluate(
        predict, params, data.test, config.decode.batch_size, positions
    )
    rate = steady_steps_per_second(workdir)
    return {
        **scores,
        "num_params": count_params(params["params"]["net"]),
        "train_videos_per_s": rate * train_opts.batch_size if rate else None,
        "test_videos_per_s": queries_per_s,
        "train_seconds": train_seconds,
    }


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
    """Every (N, method, seed) of `config`; returns the flat metrics (`report.write_report`)."""
    data = load_data(config)
    logging.info("%s", data.describe())
    positions_list, names = name_lists(config)
    runs = []
    for positions in positions_list:
        for seed in range(config.seed, config.seed + config.num_seeds):
            for name in names:
                rdir = os.path.join(workdir, "runs", f"N{positions}", name, f"seed{seed}")
                r = results.cached_result(
                    os.path.join(rdir, "result.json"),
                    lambda p=positions, m=name, s=seed, w=rdir: run_one(config, data, p, m, s, w),
                )
                logging.info(
                    "N=%d %s seed %d: R@1 IoU0.5 %.2f, IoU0.7 %.2f, mIoU %.2f",
                    positions,
                    name,
                    seed,
                    r["refined_r1_iou0.5"],
                    r["refined_r1_iou0.7"],
                    r["refined_miou"],
                )
                runs.append({"positions": positions, "method": name, "seed": seed, **r})
    return report.write_report(workdir, data, runs)
