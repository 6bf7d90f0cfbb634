"""BiFeat benchmark: one training epoch per feature store, float32-host vs compressed, side by side.

    python -m experiments.bench.bifeat --out=DIR [--num_nodes=2000000] [--train_nodes=20000]
        [--schemes=float32,float32-device,sq1,sq2,sq4,sq8,sq16,vq16x256] [--quick]

On a synthetic power-law graph (`research.datasets.graphs.synthetic_graph`, 128 float32 features)
with the BiFeat recipe (GraphSAGE, 3 layers, hidden 256, fan-outs 5/10/15, batch 1000 per device)
it measures, per store: seconds per epoch split into sampling / feature loading / compute (each
phase waited for), the pipelined epoch (prefetch thread, no waits), per-batch means, bytes
transferred per batch, and the store's resident bytes (the timing is in
`experiments/bench/bifeat_profile.py`). Ratios are against the float32 host store
measured in the same run. Prints a table and writes DIR/bifeat_bench.json.

`gpu_check()` (for experiments/bench/gpu_check.py) runs the same measurement sized for one GPU,
plus correctness rows (`ok`): every store's batch features against the decoded table, and a
finite, decreasing training loss.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
import psutil
from absl import app, flags

from experiments.bench import bifeat_profile
from experiments.bench.timing import format_table, record, write_json
from ops.quantize import dequantize
from research.bifeat.stores import build_store, parse_schemes
from research.datasets.graphs import synthetic_graph
from research.training.parallel import data_mesh, shard_batch

DEFAULT_SCHEMES = "float32,float32-device,sq1,sq2,sq4,sq8,sq16,vq16x256"


def run_benchmark(
    *,
    num_nodes: int,
    num_features: int = 128,
    train_nodes: int = 20_000,
    schemes: str = DEFAULT_SCHEMES,
    hidden: int = 256,
    batch_size: int = 1000,
    fanouts: tuple[int, ...] = (5, 10, 15),
    seed: int = 0,
    log=print,
) -> list[dict[str, Any]]:
    """Rows (experiments/bench/timing.record) per store; the first scheme is the baseline."""
    start = time.perf_counter()
    graph = synthetic_graph(num_nodes, num_features=num_features, num_classes=32, seed=seed)
    log(f"graph: {graph.summary()} in {time.perf_counter() - start:.1f} s")
    setup = bifeat_profile.make_setup(
        graph,
        train_nodes=train_nodes,
        fanouts=fanouts,
        batch_size=batch_size,
        hidden=hidden,
        seed=seed,
    )
    log(f"node capacities per layer: {setup.sampler.caps}")
    mesh, proc = data_mesh(), psutil.Process()
    rows, base = [], None
    for scheme in parse_schemes(schemes):
        rss0, t0 = proc.memory_info().rss, time.perf_counter()
        store = build_store(scheme, graph.features, mesh, seed=seed)
        build_s, rss1 = time.perf_counter() - t0, proc.memory_info().rss
        stats = jax.devices()[0].memory_stats() or {}  # GPU: bytes held by the device allocator
        res = bifeat_profile.profile_epoch(setup, store, seed=seed)
        base = base or res
        shape = (num_nodes, num_features)
        row = record(
            "bifeat_epoch",
            scheme.name,
            shape,
            "float32",
            res["epoch_s"],
            bytes_moved=res["transfer_bytes_per_batch"] * res["steps"],
            baseline_seconds=base["epoch_s"],
            location=store.location,
            store_bytes=store.nbytes,
            compression=round(store.compression_ratio, 2),
            build_s=round(build_s, 2),
            rss_build_mb=round((rss1 - rss0) / 2**20, 1),
            device_bytes_in_use=stats.get("bytes_in_use"),
            device_peak_bytes=stats.get("peak_bytes_in_use"),
            loading_speedup=base["loading_s"] / res["loading_s"],
            split_epoch_speedup=base["split_epoch_s"] / res["split_epoch_s"],
            **{k: v for k, v in res.items() if not k.endswith("_loss")},
        )
        log(
            f"{scheme.name}: epoch {res['epoch_s']:.2f} s (split: sampling {res['sampling_s']:.2f}"
            f" + loading {res['loading_s']:.2f} + compute {res['compute_s']:.2f}), "
            f"{store.nbytes / 2**20:.1f} MiB"
        )
        rows.append(row)
        del store
    return rows


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The README table: per store, epoch and per-batch phase times and speed-ups."""
    table = [
        {
            "store": r["impl"],
            "where": r["location"],
            "MiB": f"{r['store_bytes'] / 2**20:.1f}",
            "compression": f"{r['compression']:.1f}x",
            "sampling s/epoch": f"{r['sampling_s']:.2f}",
            "loading s/epoch": f"{r['loading_s']:.2f}",
            "compute s/epoch": f"{r['compute_s']:.2f}",
            "loading speed-up": f"{r['loading_speedup']:.2f}x",
            "split epoch speed-up": f"{r['split_epoch_speedup']:.2f}x",
            "pipelined epoch s": f"{r['seconds']:.2f}",
            "pipelined speed-up": f"{r['ratio_vs_baseline']:.2f}x",
        }
        for r in rows
    ]
    return format_table(table)


def gpu_check(num_nodes: int = 2_000_000, train_nodes: int = 50_000) -> list[dict[str, Any]]:
    """Correctness rows (`ok`) and the epoch benchmark sized for one GPU (2M nodes x 128,
    50 batches of 1000 seeds per epoch)."""
    rows = []
    graph = synthetic_graph(50_000, num_features=128, num_classes=16, seed=1)
    mesh = data_mesh()
    ids = np.random.default_rng(0).integers(0, graph.num_nodes, (mesh.size, 4096)).astype(np.int32)
    for scheme in parse_schemes(DEFAULT_SCHEMES + ",sq1+cache"):
        store = build_store(
            scheme, graph.features, mesh, degrees=graph.degrees(), cache_fraction=0.05
        )
        got = np.asarray(store.features(shard_batch(store.prepare(ids), mesh)))
        if store.location == "host" or scheme.method == "float32-device":
            want = graph.features[ids]
        else:
            t = store.tables
            want = np.array(dequantize(t["table"]))
            if "cache" in t:
                slot = np.asarray(t["slot"])
                want[slot >= 0] = np.asarray(t["cache"])[slot[slot >= 0]]
            want = want[ids]
        err = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))
        rows.append(
            record(
                "bifeat_store_rows",
                scheme.name,
                got.shape,
                "float32",
                0.0,
                ok=bool(err < 1e-5),
                max_rel_err=err,
            )
        )
    setup = bifeat_profile.make_setup(graph, train_nodes=4000, seed=1)
    res = bifeat_profile.profile_epoch(setup, build_store("sq2", graph.features, mesh), seed=1)
    losses = (res["first_loss"], res["final_loss"])
    rows.append(
        record(
            "bifeat_train_loss",
            "sq2",
            (4000,),
            "float32",
            res["epoch_s"],
            ok=bool(np.isfinite(losses).all() and losses[1] < losses[0]),
            first_loss=losses[0],
            final_loss=losses[1],
        )
    )
    rows += run_benchmark(
        num_nodes=num_nodes, train_nodes=train_nodes, log=lambda s: print(s, flush=True)
    )
    return rows


def _define_flags() -> None:
    """Flags of this binary only: defined at run time so gpu_check.py can import this module."""
    flags.DEFINE_string("out", "bench_out", "Output folder for bifeat_bench.json.")
    flags.DEFINE_integer("num_nodes", 2_000_000, "Synthetic graph size (nodes).")
    flags.DEFINE_integer("num_features", 128, "Features per node (float32).")
    flags.DEFINE_integer("train_nodes", 20_000, "Training nodes per epoch (seeds).")
    flags.DEFINE_string("schemes", DEFAULT_SCHEMES, "Stores; the first is the baseline.")
    flags.DEFINE_bool("quick", False, "Small sizes (a smoke test, not for the README).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    nodes, train = (20_000, 2_000) if f.quick else (f.num_nodes, f.train_nodes)
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}",
        flush=True,
    )
    rows = run_benchmark(
        num_nodes=nodes,
        num_features=f.num_features,
        train_nodes=train,
        schemes=f.schemes,
        log=lambda s: print(s, flush=True),
    )
    print("\n" + summary_table(rows))
    path = os.path.join(f.out, "bifeat_bench.json")
    write_json(path, rows, num_nodes=nodes, train_nodes=train, quick=f.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
