"""BiFeat training: sampled mini-batch GNNs on compressed node features; `train_and_evaluate`.

    python -m experiments.bifeat --config=experiments/configs/bifeat.py:small --workdir=DIR

For every feature-store scheme and seed the run trains one model in `DIR/runs/<scheme>/seed<k>/`
(metrics.jsonl, checkpoints while it runs, `result.json` when done; with
`config.keep_checkpoints` the checkpoints stay, and the final parameters in `params.npz`; a
re-run skips finished runs and resumes the unfinished one). `config.experiment = "edge_drop"`
repeats that on sparser copies of the graph in `DIR/runs/<mode>-<fraction>/...`.
`DIR/results.{json,md}` and plots summarise.

Several processes (`python -m experiments.launch --num_processes=P ... -- python -m
experiments.bifeat ...`): every process builds the same graph, samplers and feature stores, and
trains on the mesh of every process's devices (`distributed.global_mesh()`), sampling its own
devices' sub-batches (`pipeline.make_batches`); evaluation gives every process the accuracies
of one process. Process 0 alone writes the workdir's files (`workdir.is_writer`).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from models.gnn import GAT, GraphSAGE, blocks_from_fanout
from research.bifeat import pipeline, report
from research.bifeat.sampler import DeviceNeighborSampler, NeighborSampler, calibrate_caps
from research.bifeat.stores import FeatureStore, Scheme, build_store, parse_schemes
from research.datasets.graph_files import load_graph
from research.datasets.graphs import Graph, drop_edges
from research.datasets.paths import resolve_data_dir
from research.training import distributed, results
from research.training.checkpoint import delete_checkpoints
from research.training.loop import train_loop
from research.training.metrics import read_metrics
from research.training.parallel import make_train_step
from research.training.prefetch import Prefetcher
from research.training.results import cached_result
from research.training.train_state import TrainState

Config = ml_collections.ConfigDict


def load_data(config: Config) -> Graph:
    """The graph of `config.data` (Planetoid / OGB from `config.data_dir`, or synthetic)."""
    d = config.data
    if d.name == "synthetic":
        return load_graph("synthetic", **d.synthetic.to_dict())
    data_dir = resolve_data_dir(config.data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"data folder {data_dir} for dataset {d.name!r} does not exist; set "
            "--config.data_dir to the folder with the dataset files"
        )
    return load_graph(d.name, data_dir)


def make_model(config: Config, num_classes: int) -> GraphSAGE | GAT:
    """The GNN of `config.model` (`sage` or `gat`) with `num_classes` outputs."""
    m = config.model
    if m.name == "sage":
        return GraphSAGE(m.hidden, num_classes, m.num_layers, m.dropout, m.input_dropout)
    if m.name == "gat":
        return GAT(m.hidden, num_classes, m.num_heads, m.num_layers, m.dropout, m.input_dropout)
    raise ValueError(f"config.model.name must be 'sage' or 'gat', got {m.name!r}")


class Runner:
    """The compiled pieces shared by every run on one graph shape: model, sampler, train step."""

    def __init__(self, config: Config, graph: Graph, *, step_cache: dict | None = None):
        self.config, self.graph = config, graph
        self.mesh = distributed.global_mesh()  # every process's devices (in one: data_mesh())
        self.num_devices = self.mesh.size
        t = config.train
        if len(t.fanouts) != config.model.num_layers:
            raise ValueError(
                f"config.train.fanouts {tuple(t.fanouts)} must have one entry per layer "
                f"(config.model.num_layers = {config.model.num_layers})"
            )
        if t.batch_size % self.num_devices:
            raise ValueError(
                f"config.train.batch_size {t.batch_size} must be divisible by the "
                f"{self.num_devices} devices"
            )
        per_device = t.batch_size // self.num_devices
        self.sampler = NeighborSampler(graph.indptr, graph.indices, t.fanouts, per_device)
        if t.calibrate_batches:
            caps = calibrate_caps(
                self.sampler,
                graph.train_idx,
                num_batches=t.calibrate_batches,
                margin=t.capacity_margin,
                seed=config.seed,
            )
            self.sampler = NeighborSampler(graph.indptr, graph.indices, t.fanouts, per_device, caps)
        # the sampler the batches use: the host one, or its device twin (same caps)
        self.batch_sampler = self._placed(self.sampler)
        self.model = make_model(config, graph.num_classes)
        self.steps_per_epoch = max(1, -(-len(graph.train_idx) // t.batch_size))
        self.num_steps = t.epochs * self.steps_per_epoch
        self.optimizer = pipeline.make_optimizer(
            t.lr,
            decay=t.lr_decay,
            steps_per_epoch=self.steps_per_epoch,
            weight_decay=t.weight_decay,
        )
        key = (self.sampler.caps, graph.num_features, self.steps_per_epoch)
        step_cache = {} if step_cache is None else step_cache
        if key not in step_cache:  # one compilation for every scheme, seed and graph variant
            loss = pipeline.make_loss_fn(self.model, self.sampler.caps)
            step_cache[key] = make_train_step(loss, self.optimizer, self.mesh)
        self.train_step = step_cache[key]
        e = config.eval
        if e.mode == "full":
            self._full_predict = pipeline.make_full_predict(self.model, graph)
        elif e.mode == "sampled":
            if e.batch_size % self.num_devices:
                raise ValueError(
                    f"config.eval.batch_size {e.batch_size} must be divisible by "
                    f"the {self.num_devices} devices"
                )
            eval_fanouts = tuple(e.fanouts) or tuple(t.fanouts)
            per_device = e.batch_size // self.num_devices
            self.eval_sampler = NeighborSampler(
                graph.indptr, graph.indices, eval_fanouts, per_device
            )
            if t.calibrate_batches:
                pool = np.concatenate([graph.val_idx, graph.test_idx])
                caps = calibrate_caps(
                    self.eval_sampler,
                    pool,
                    num_batches=t.calibrate_batches,
                    margin=t.capacity_margin,
                    seed=config.seed,
                )
                self.eval_sampler = NeighborSampler(
                    graph.indptr, graph.indices, eval_fanouts, per_device, caps
                )
            self.eval_batch_sampler = self._placed(self.eval_sampler)
        else:
            raise ValueError(f"config.eval.mode must be 'full' or 'sampled', got {e.mode!r}")

    def _placed(self, sampler: NeighborSampler) -> NeighborSampler | DeviceNeighborSampler:
        """`sampler`, or its device twin when `config.data.sampler == "device"`."""
        kind = self.config.data.sampler
        if kind == "host":
            return sampler
        if kind == "device":
            return DeviceNeighborSampler(sampler, self.mesh)
        raise ValueError(f"config.data.sampler must be 'host' or 'device', got {kind!r}")

    def init_state(self, seed: int) -> TrainState:
        x = np.zeros((self.sampler.caps[0], self.graph.num_features), np.float32)
        blocks = blocks_from_fanout(
            [
                np.zeros(self.sampler.caps[i + 1] * k, np.int32)
                for i, k in enumerate(self.sampler.fanouts)
            ],
            [
                np.zeros(self.sampler.caps[i + 1] * k, bool)
                for i, k in enumerate(self.sampler.fanouts)
            ],
            self.sampler.caps[1:],
        )
        params = self.model.init(jax.random.PRNGKey(seed), x, blocks, train=False)
        return TrainState.create(params, self.optimizer, jax.random.PRNGKey(seed))

    def make_eval_fn(self, store: FeatureStore, seed: int):
        g, e = self.graph, self.config.eval
        splits = {"val": g.val_idx, "test": g.test_idx}
        if e.mode == "full":
            x = store.rows(np.arange(g.num_nodes))

            def eval_fn(state):
                pred = self._full_predict(jax.device_get(state.params), x)
                return {
                    f"{k}_acc": pipeline.accuracy(pred[v], g.labels[v]) for k, v in splits.items()
                }

            return eval_fn
        nodes = np.concatenate([g.val_idx, g.test_idx])
        batches = pipeline.make_batches(
            g,
            nodes,
            self.eval_batch_sampler,
            store,
            mesh=self.mesh,
            seed=seed + 10_000,
            shuffle=False,
        )
        predict = pipeline.make_sampled_predict(
            self.model, self.eval_sampler.caps, self.mesh, store
        )
        return lambda state: pipeline.evaluate_sampled(predict, state.params, batches, splits)

    def run(self, store: FeatureStore | None, seed: int, workdir: str) -> dict[str, Any]:
        """Trains one model with `store`'s features; returns (and writes) `result.json`, or
        reads it back when the run finished before (then `store` may be None)."""
        path = result_path(workdir)
        finished = os.path.exists(path)
        if not finished and store is None:
            raise ValueError(f"no feature store for the unfinished run in {workdir}")
        result = cached_result(path, lambda: self._train(store, seed, workdir))
        if not finished and not self.config.keep_checkpoints:  # once result.json is written
            delete_checkpoints(workdir)
        return result

    def _train(self, store: FeatureStore, seed: int, workdir: str) -> dict[str, Any]:
        """Trains one model (resuming from `workdir`'s checkpoint); the run's result."""
        c, t = self.config, self.config.train
        batches = pipeline.make_batches(
            self.graph,
            self.graph.train_idx,
            self.batch_sampler,
            store,
            mesh=self.mesh,
            seed=seed,
        )
        on_device = isinstance(batches, pipeline.DeviceSampledBatches)
        # a device scalar with device sampling: summed there, read at the end; with host
        # sampling this process's devices' count, summed over the processes at the end
        dropped = [0]

        def make_batch(step):
            batch = batches(step)
            dropped[0] += batch["dropped"].sum() if on_device else int(batch["dropped"].sum())
            return pipeline.device_batch(batch, len(t.fanouts))

        start = time.perf_counter()
        # device sampling is dispatched asynchronously already: no prefetch thread
        prefetch = (
            contextlib.nullcontext(make_batch)
            if on_device
            else Prefetcher(make_batch, end=self.num_steps, depth=t.prefetch)
        )
        with prefetch as batch_fn:
            state = train_loop(
                workdir=workdir,
                state=self.init_state(seed),
                train_step=pipeline.train_step_with_store(self.train_step, store),
                batch_fn=batch_fn,
                num_steps=self.num_steps,
                mesh=self.mesh,
                checkpoint_every=max(1, c.checkpoint_every_epochs) * self.steps_per_epoch,
                keep_checkpoints=1,
                log_every=c.log_every,
                desc=f"{store.scheme.name} seed {seed}",
                eval_fn=self.make_eval_fn(store, seed),
                eval_every=c.eval.every_epochs * self.steps_per_epoch,
            )
        seconds = time.perf_counter() - start
        dropped[0] = int(dropped[0]) if on_device else distributed.process_sum(dropped[0])
        if c.keep_checkpoints:  # the trained model stays: also as arrays by name
            results.save_arrays(params_path(workdir), state.params)
        if dropped[0]:
            logging.warning(
                "%s seed %d: %d sampled nodes dropped by the node capacities",
                store.scheme.name,
                seed,
                dropped[0],
            )
        return dict(
            scheme=store.scheme.name,
            seed=seed,
            seconds=seconds,
            dropped_nodes=dropped[0],
            store_bytes=store.nbytes,
            compression_ratio=store.compression_ratio,
            **select_accuracy(read_metrics(workdir), c.eval.select, self.steps_per_epoch),
        )


def result_path(run_dir: str) -> str:
    """A (scheme, seed) run's `result.json`, written when the run has finished."""
    return os.path.join(run_dir, "result.json")


def params_path(run_dir: str) -> str:
    """A (scheme, seed) run's final parameters (kept with `config.keep_checkpoints`)."""
    return os.path.join(run_dir, "params.npz")


def select_accuracy(records: list[dict], select: str, steps_per_epoch: int) -> dict[str, float]:
    """Test accuracy at the evaluation with the best validation accuracy (first on ties) when
    `select == "best_val"`, else at the last evaluation; also the last evaluation's numbers."""
    evals = [r for r in records if "eval/val_acc" in r]
    if not evals:
        raise ValueError("the run logged no evaluation (eval/val_acc)")
    last = evals[-1]
    if select == "best_val":
        best = max(evals, key=lambda r: r["eval/val_acc"])  # max keeps the first of equal values
    elif select == "last":
        best = last
    else:
        raise ValueError(f"config.eval.select must be 'best_val' or 'last', got {select!r}")
    return dict(
        test_acc=best["eval/test_acc"],
        val_acc=best["eval/val_acc"],
        best_epoch=best["step"] / steps_per_epoch,
        last_test_acc=last["eval/test_acc"],
        last_val_acc=last["eval/val_acc"],
    )


def describe_setup(config: Config, graph: Graph) -> str:
    """The graph and training setting of `config`, for the notes of `results.md`."""
    t, m = config.train, config.model
    return (
        f"Graph {graph.name}: {graph.num_nodes} nodes, {graph.num_edges} directed edges, "
        f"{graph.num_features} features, {graph.num_classes} classes, splits "
        f"{len(graph.train_idx)}/{len(graph.val_idx)}/{len(graph.test_idx)}. Model {m.name}, "
        f"{m.num_layers} layers, hidden {m.hidden}, dropout {m.dropout}, fan-outs "
        f"{tuple(t.fanouts)}, batch {t.batch_size}, {t.epochs} epochs, Adam lr {t.lr} x{t.lr_decay}"
        f"/epoch, weight decay {t.weight_decay}. Test accuracy at the best validation epoch "
        f"(select={config.eval.select}, eval every {config.eval.every_epochs} epochs, "
        f"{config.eval.mode} evaluation)."
    )


def _center(config: Config) -> bool:
    if config.feature_norm not in ("none", "center"):
        raise ValueError(
            f"config.feature_norm must be 'none' or 'center', got {config.feature_norm!r}"
        )
    return config.feature_norm == "center"


def build_stores(
    config: Config, graph: Graph, mesh, schemes: list[Scheme], seed: int, cache: dict | None = None
):
    """Yields (scheme, store) for `seed` (quantizers fitted on the graph's features). Stores
    without a degree cache are reused across graph variants with the same features (`cache`)."""
    q = config.quant
    cache = {} if cache is None else cache
    degrees = graph.degrees()
    for scheme in schemes:
        key = (scheme.name, seed)
        if key in cache and not scheme.cache:
            yield scheme, cache[key]
            continue
        start = time.perf_counter()
        store = build_store(
            scheme,
            graph.features,
            mesh,
            degrees=degrees,
            cache_fraction=config.cache_fraction,
            center=_center(config),
            impl=config.gather_impl,
            seed=seed,
            sample_rows=q.sample_rows or None,
            vq_max_iters=q.vq_max_iters,
        )
        logging.info(
            "store %s (seed %d): %.3g MB, %.1fx, built in %.1f s",
            scheme.name,
            seed,
            store.nbytes / 1e6,
            store.compression_ratio,
            time.perf_counter() - start,
        )
        cache[key] = store
        yield scheme, store


def run_schemes(
    config: Config,
    graph: Graph,
    workdir: str,
    runner: Runner,
    schemes: list[Scheme],
    store_cache: dict,
) -> list[dict]:
    """Every scheme x seed on `graph`: one `Runner.run` each (finished runs are read back)."""
    results = []
    for k in range(config.num_seeds):
        seed = config.seed + k
        todo = [
            s
            for s in schemes
            if not os.path.exists(result_path(os.path.join(workdir, s.name, f"seed{seed}")))
        ]
        for scheme in schemes:
            if scheme not in todo:  # finished: no need to build its store
                results.append(
                    runner.run(None, seed, os.path.join(workdir, scheme.name, f"seed{seed}"))
                )
        for scheme, store in build_stores(config, graph, runner.mesh, todo, seed, store_cache):
            run_dir = os.path.join(workdir, scheme.name, f"seed{seed}")
            results.append(runner.run(store, seed, run_dir))
    return results


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
    """Runs the experiment of `config` (`schemes` or `edge_drop`); writes results and plots."""
    start = time.perf_counter()
    graph = load_data(config)
    logging.info("graph: %s", graph.summary())
    schemes = parse_schemes(config.schemes)
    step_cache: dict = {}
    store_cache: dict = {}
    runs_dir = os.path.join(workdir, "runs")
    if config.experiment == "schemes":
        runner = Runner(config, graph, step_cache=step_cache)
        results = run_schemes(config, graph, runs_dir, runner, schemes, store_cache)
        metrics = report.write_scheme_results(
            workdir,
            results,
            title=f"BiFeat ({config.preset}): {graph.name}",
            plot_title=f"BiFeat on {graph.name}: {config.model.name}, {config.num_seeds} seeds",
            notes=describe_setup(config, graph),
        )
    elif config.experiment == "edge_drop":
        per_variant = {}
        modes = [m.strip() for m in config.edge_drop.modes.split(",") if m.strip()]
        fractions = sorted({float(f) for f in config.edge_drop.fractions} | {0.0})
        # the undropped graph is shared by every mode ("none-0")
        variants = [("none", 0.0)] + [(m, f) for m in modes for f in fractions if f > 0]
        for mode, fraction in variants:
            variant = drop_edges(
                graph, fraction, mode="random" if mode == "none" else mode, seed=config.seed
            )
            runner = Runner(config, variant, step_cache=step_cache)
            per_variant[(mode, fraction, variant.num_edges)] = run_schemes(
                config,
                variant,
                os.path.join(runs_dir, f"{mode}-{fraction:g}"),
                runner,
                schemes,
                store_cache,
            )
        metrics = report.write_edge_drop_results(
            workdir, graph, per_variant, notes=describe_setup(config, graph)
        )
    else:
        raise ValueError(
            f"config.experiment must be 'schemes' or 'edge_drop', got {config.experiment!r}"
        )
    metrics["wall_seconds"] = time.perf_counter() - start
    return metrics
