"""BiFeat benchmark: one training epoch per feature store, float32-host vs compressed, side by side.

    python -m experiments.bench.bifeat --out=DIR [--num_nodes=2000000] [--train_nodes=20000]
        [--schemes=float32,float32-device,sq1,sq2,sq4,sq8,sq16,vq16x256] [--device_schemes=sq2]
        [--quick]
    python -m experiments.bench.bifeat --sampling_only --out=DIR [--num_nodes=...] [--quick]
    python -m experiments.bench.bifeat --compare_seeds=5 --out=DIR [--quick]
    python -m experiments.bench.bifeat --gpu_check --out=DIR [--budget_s=150] [--quick]

On a synthetic power-law graph (`research.datasets.graphs.synthetic_graph`, 128 float32 features)
with the BiFeat recipe (GraphSAGE, 3 layers, hidden 256, fan-outs 5/10/15, batch 1000 per device)
it measures, per store: seconds per epoch split into sampling / feature loading / compute (each
phase waited for), the pipelined epoch (prefetch thread, no waits), per-batch means, bytes
transferred per batch, and the store's resident bytes (the timing is in
`experiments/bench/bifeat_profile.py`). `--schemes` run with the host (numpy) sampler,
`--device_schemes` (device-resident stores) with the device (JAX) sampler. Ratios are against
the float32 host store with the host sampler measured in the same run. Prints a table and
writes DIR/bifeat_bench.json.

`gpu_check()` (for experiments/bench/gpu_check.py, or `--gpu_check`, which also writes
DIR/bifeat_gpu_check.json) measures, within a time budget (`budget_s`) and in this order: the
epoch target (the float32 host-store + host-sampler baseline, then sq2, vq16x256 and
float32-device with the device sampler, sized for one GPU), the Cora test accuracy of the host
vs the device sampler (5 seeds; `ok` when the difference is within 2 standard errors), the
correctness rows (`ok`: every store's batch features against its decoded codes, the device
sampler's block rules, a decreasing training loss in every epoch row), then optional epoch
rows with the time left.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import psutil
from absl import app, flags

from experiments.bench import bifeat_profile
from experiments.bench.timing import failure_record, format_table, record, write_json
from experiments.configs.bifeat import get_config
from ops.quantize import decode_codes
from research.bifeat import train
from research.bifeat.config_rules import validate_config
from research.bifeat.sampler import batch_key, block_errors, csr_edge_keys
from research.bifeat.stores import build_store, parse_scheme, parse_schemes
from research.datasets.graphs import synthetic_graph
from research.datasets.paths import resolve_data_dir
from research.training import stats
from research.training.parallel import data_mesh, shard_batch

DEFAULT_SCHEMES = "float32,float32-device,sq1,sq2,sq4,sq8,sq16,vq16x256"


def epoch_setup(
    num_nodes: int,
    *,
    num_features: int = 128,
    train_nodes: int = 20_000,
    hidden: int = 256,
    batch_size: int = 1000,
    fanouts: tuple[int, ...] = (5, 10, 15),
    seed: int = 0,
    log=print,
) -> bifeat_profile.EpochSetup:
    """The benchmark's synthetic power-law graph (`num_nodes` x `num_features`, 32 classes) and
    its `bifeat_profile.make_setup` (calibrated capacities, model, train step, device sampler)."""
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
    return setup


def epoch_rows(
    setup: bifeat_profile.EpochSetup,
    plan: Sequence[tuple[str, str]],
    *,
    baseline: dict[str, Any] | None = None,
    deadline: float = math.inf,
    seed: int = 0,
    log=print,
) -> list[dict[str, Any]]:
    """One epoch row (`_epoch_row`) per `(scheme, sampler)` of `plan`, in its order; a store is
    built once for consecutive pairs of one scheme. Ratios are against `baseline` (an earlier
    row of this setup), else against the first pair, which must then use the host sampler.
    A pair not started by `deadline` (`time.perf_counter()` seconds) is skipped and logged; a
    pair that raises (e.g. out of memory) gives a `failure_record` row, unless it is the
    baseline (then the error propagates: nothing could be compared)."""
    if baseline is None and plan and plan[0][1] != "host":
        raise ValueError(f"the first pair must use the host sampler (the baseline), got {plan[0]}")
    mesh, proc = setup.mesh, psutil.Process()
    num_nodes, num_features = setup.graph.num_nodes, setup.graph.num_features
    rows, store = [], None
    for name, kind in plan:
        if time.perf_counter() > deadline:
            log(f"{name} ({kind} sampler): skipped (time budget spent)")
            continue
        try:
            if store is None or store.scheme.name != name:
                store = None  # free the previous table first
                rss0, t0 = proc.memory_info().rss, time.perf_counter()
                store = build_store(parse_scheme(name), setup.graph.features, mesh, seed=seed)
                built = dict(
                    build_s=round(time.perf_counter() - t0, 2),
                    rss_build_mb=round((proc.memory_info().rss - rss0) / 2**20, 1),
                )
                mem = jax.devices()[0].memory_stats() or {}  # GPU: the device allocator's bytes
                built.update(
                    device_bytes_in_use=mem.get("bytes_in_use"),
                    device_peak_bytes=mem.get("peak_bytes_in_use"),
                )
            res = bifeat_profile.profile_epoch(setup, store, sampler=kind, seed=seed)
        except Exception as err:  # noqa: BLE001 - one store's failure must not end the others
            if baseline is None:
                raise
            log(f"{name} ({kind} sampler): failed: {type(err).__name__}: {err}")
            rows.append(
                failure_record(
                    "bifeat_epoch", name, (num_nodes, num_features), "float32", err, sampler=kind
                )
            )
            store = None
            continue
        row = _epoch_row(name, kind, store, res, baseline or res, num_nodes, num_features)
        row.update(built)
        baseline = baseline or row
        rows.append(row)
        log(
            f"{name} ({kind} sampler): epoch {res['epoch_s']:.2f} s "
            f"({row['ratio_vs_baseline']:.2f}x the baseline; split: sampling "
            f"{res['sampling_s']:.2f} + loading {res['loading_s']:.2f} + compute "
            f"{res['compute_s']:.2f}), first call {res['first_call_s']:.2f} s, "
            f"{store.nbytes / 2**20:.1f} MiB"
        )
    return rows


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
    device_schemes: str = "",
    deadline: float = math.inf,
    log=print,
) -> list[dict[str, Any]]:
    """Rows (experiments/bench/timing.record) per store and sampler; the first scheme with the
    host sampler is the baseline. `schemes` run with the host (numpy) sampler, `device_schemes`
    (device-resident stores) with the device sampler, each scheme's rows one after the other.
    Rows not started by `deadline` (`time.perf_counter()` seconds) are skipped and logged."""
    setup = epoch_setup(
        num_nodes,
        num_features=num_features,
        train_nodes=train_nodes,
        hidden=hidden,
        batch_size=batch_size,
        fanouts=fanouts,
        seed=seed,
        log=log,
    )
    host = [s.name for s in parse_schemes(schemes)]
    device = [s.name for s in parse_schemes(device_schemes)] if device_schemes.strip() else []
    plan = [
        (name, kind)
        for name in dict.fromkeys(host + device)
        for kind, names in (("host", host), ("device", device))
        if name in names
    ]
    return epoch_rows(setup, plan, deadline=deadline, seed=seed, log=log)


def _epoch_row(name, sampler, store, res, base, num_nodes, num_features) -> dict[str, Any]:
    """One `bifeat_epoch` row: `res` of `profile_epoch`, ratios against `base`'s."""
    return record(
        "bifeat_epoch",
        name,
        (num_nodes, num_features),
        "float32",
        res["epoch_s"],
        bytes_moved=res["transfer_bytes_per_batch"] * res["steps"],
        baseline_seconds=base["epoch_s"],
        sampler=sampler,
        location=store.location,
        store_bytes=store.nbytes,
        compression=round(store.compression_ratio, 2),
        loading_speedup=base["loading_s"] / res["loading_s"],
        split_epoch_speedup=base["split_epoch_s"] / res["split_epoch_s"],
        **res,
    )


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The README table: per store, epoch and per-batch phase times and speed-ups (rows of
    stores that failed, `failure_record`s, are left out: their error is in the JSON and log)."""
    table = [
        {
            "store": r["impl"],
            "sampler": r["sampler"],
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
            "first call s": f"{r['first_call_s']:.2f}",
        }
        for r in rows
        if "error" not in r
    ]
    return format_table(table)


def sampling_row(
    num_nodes: int, train_nodes: int, num_features: int = 128, *, steps: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Host vs device sampling time per batch on the benchmark's graph and recipe (one row)."""
    graph = synthetic_graph(num_nodes, num_features=num_features, num_classes=32, seed=seed)
    setup = bifeat_profile.make_setup(graph, train_nodes=train_nodes, seed=seed)
    store = build_store("sq2", graph.features, setup.mesh, seed=seed)
    res = bifeat_profile.sampling_times(setup, store, steps=steps, seed=seed)
    return record(
        "bifeat_sampling",
        "device-vs-host",
        (num_nodes,),
        "int32",
        res["device_per_batch_s"],
        baseline_seconds=res["host_per_batch_s"],
        caps=list(setup.sampler.caps),
        **res,
    )


def device_sampler_row(setup: bifeat_profile.EpochSetup, *, batches: int) -> dict[str, Any]:
    """`ok` when `batches` device-sampled batches of the setup's training nodes break no block
    rule (`sampler.block_errors`: real edges, min(fan-out, degree) distinct neighbours, ...)."""
    sampler, g = setup.device_sampler, setup.graph
    edge_keys = csr_edge_keys(g.indptr, g.indices)  # once: a sort of every edge
    errors, dropped, seconds = 0, 0, 0.0
    for step in range(batches):
        seeds = setup.train_nodes[step * sampler.batch_size : (step + 1) * sampler.batch_size]
        t0 = time.perf_counter()
        batch = jax.device_get(sampler.sample(seeds, batch_key(1, step, 0)))
        seconds = time.perf_counter() - t0  # the last one: compiled
        errors += block_errors(
            g.indptr, g.indices, batch, sampler.fanouts, sampler.caps, edge_keys=edge_keys
        )
        dropped += int(batch.dropped)
    return record(
        "bifeat_device_sampler_blocks",
        f"{batches} batches",
        (g.num_nodes,),
        "int32",
        seconds,
        ok=errors == 0,
        rule_violations=errors,
        dropped_nodes=dropped,
    )


def store_rows(
    num_nodes: int,
    *,
    schemes: str = DEFAULT_SCHEMES + ",sq1+cache",
    deadline: float = math.inf,
    log=print,
) -> list[dict[str, Any]]:
    """`ok` per store of `schemes` (default: every benchmark store and sq1+cache) when its
    `features` of 4096 random ids match the float32 rows (float32 stores) or the decoded codes
    of those ids (`ops.quantize.decode_codes`, cached rows as stored), on a synthetic graph of
    `num_nodes` x 128. A store not started by `deadline` is skipped and logged."""
    if time.perf_counter() > deadline:
        log("store rows: skipped (time budget spent)")
        return []
    graph = synthetic_graph(num_nodes, num_features=128, num_classes=16, seed=1)
    mesh = data_mesh()
    ids = np.random.default_rng(0).integers(0, graph.num_nodes, (mesh.size, 4096)).astype(np.int32)
    flat = ids.reshape(-1)
    rows = []
    for scheme in parse_schemes(schemes):
        if time.perf_counter() > deadline:
            log(f"store rows {scheme.name}: skipped (time budget spent)")
            continue
        t0 = time.perf_counter()
        store = build_store(
            scheme, graph.features, mesh, degrees=graph.degrees(), cache_fraction=0.05
        )
        got = np.asarray(store.features(shard_batch(store.prepare(ids), mesh))).reshape(-1, 128)
        if store.location == "host" or scheme.method == "float32-device":
            want = graph.features[flat]
        else:
            t = store.tables
            table = t["table"]
            want = np.array(decode_codes(table, np.asarray(table.codes)[flat]))
            if "cache" in t:
                slot = np.asarray(t["slot"])[flat]
                want[slot >= 0] = np.asarray(t["cache"])[slot[slot >= 0]]
        err = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))
        rows.append(
            record(
                "bifeat_store_rows",
                scheme.name,
                ids.shape,
                "float32",
                time.perf_counter() - t0,  # build, compile and check
                ok=bool(err < 1e-5),
                max_rel_err=err,
            )
        )
    return rows


def loss_rows(epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`bifeat_train_loss` per measured epoch row: `ok` when the pipelined epoch's training
    loss is finite and lower at its last step than at its first (a store or sampler that feeds
    wrong features or blocks does not learn)."""
    rows = []
    for r in epochs:
        if "first_loss" not in r:  # a failure row
            continue
        losses = (r["first_loss"], r["final_loss"])
        rows.append(
            record(
                "bifeat_train_loss",
                f"{r['impl']} ({r['sampler']} sampler)",
                (r["steps"],),
                "float32",
                r["epoch_s"],
                ok=bool(np.isfinite(losses).all() and losses[1] < losses[0]),
                first_loss=losses[0],
                final_loss=losses[1],
            )
        )
    return rows


# The speed-up the device sampler is for: one epoch with a compressed device store and the
# device sampler against the float32 host store with the host sampler.
TARGET_SPEEDUP = 3.0


def target_row(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """`bifeat_epoch_target`: the pipelined speed-ups of the compressed stores with the device
    sampler over the baseline (the first row, float32 host store + host sampler); `met` when
    one reaches `TARGET_SPEEDUP`, None when no such row was measured (`measured` lists them)."""
    speedups = {
        r["impl"]: round(r["ratio_vs_baseline"], 3)
        for r in epochs
        if r.get("sampler") == "device"
        and r.get("compression", 1) > 1
        and r.get("ratio_vs_baseline") is not None
        and not r.get("error")
    }
    best = max(speedups.values(), default=None)
    return record(
        "bifeat_epoch_target",
        "compressed device store + device sampler vs float32 host",
        (len(epochs),),
        "float32",
        0.0,
        target_speedup=TARGET_SPEEDUP,
        measured=" ".join(f"{k}:{v}x" for k, v in speedups.items()),
        best_speedup=best,
        met=None if best is None else bool(best >= TARGET_SPEEDUP),
    )


def compare_samplers(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    num_seeds: int,
    deadline: float = math.inf,
    log=print,
) -> list[dict[str, Any]]:
    """Test accuracy of the host vs the device sampler: `config` (one scheme) trained with
    seeds `config.seed + k`, k < num_seeds, the two samplers alternating; a run is started only
    before `deadline` (`time.perf_counter()` seconds). Rows: one per sampler (mean, sample std,
    per-seed accuracies, seconds per run) and `bifeat_sampler_accuracy` with the difference
    (device - host), its Welch standard error and `ok` = |diff| <= 2 s.e. (None with < 2 seeds
    of either)."""
    schemes = parse_schemes(config.schemes)
    if len(schemes) != 1:
        raise ValueError(f"compare_samplers trains one scheme, got {config.schemes!r}")
    graph = train.load_data(config)
    step_cache: dict = {}
    runners = {}
    for kind in ("host", "device"):
        c = ml_collections.ConfigDict(config.to_dict())
        c.data.sampler = kind
        validate_config(c)
        runners[kind] = train.Runner(c, graph, step_cache=step_cache)
    acc: dict[str, list[float]] = {"host": [], "device": []}
    secs: dict[str, list[float]] = {"host": [], "device": []}
    for k in range(num_seeds):
        seed = config.seed + k
        for kind, runner in runners.items():
            if time.perf_counter() > deadline:
                log(f"{kind} sampler seed {seed}: skipped (time budget spent)")
                continue
            _, store = next(train.build_stores(runner.config, graph, runner.mesh, schemes, seed))
            t0 = time.perf_counter()
            result = runner.run(store, seed, os.path.join(workdir, kind, f"seed{seed}"))
            secs[kind].append(time.perf_counter() - t0)
            acc[kind].append(result["test_acc"])
            log(f"{kind} sampler seed {seed}: test acc {result['test_acc']:.4f}")
    rows = []
    for kind in ("host", "device"):
        if not acc[kind]:
            continue
        summary = stats.seed_summary(acc[kind])
        rows.append(
            record(
                "bifeat_sampler_run",
                kind,
                (graph.num_nodes,),
                schemes[0].name,
                float(np.mean(secs[kind])),
                test_acc_mean=summary.mean,
                test_acc_std=summary.std,
                num_seeds=summary.n,
                test_accs=" ".join(f"{v:.4f}" for v in acc[kind]),
                graph=graph.name,
            )
        )
    if acc["host"] and acc["device"]:
        a, b = stats.seed_summary(acc["device"]), stats.seed_summary(acc["host"])
        diff = stats.difference(a, b)
        judged = a.n > 1 and b.n > 1
        rows.append(
            record(
                "bifeat_sampler_accuracy",
                "device-host",
                (graph.num_nodes,),
                schemes[0].name,
                0.0,
                ok=bool(not diff.exceeds_spread()) if judged else None,
                diff_points=100 * diff.diff,
                stderr_points=100 * diff.stderr,
                z=diff.z,
            )
        )
    return rows


def cora_config(*, quick: bool) -> ml_collections.ConfigDict:
    """The sampler comparison's setting: the `small` preset (Cora) with the float32-device
    store; `quick`: the synthetic `tiny` graph, 2 epochs (a CPU smoke test)."""
    config = get_config("tiny" if quick else "small")
    config.schemes = "float32-device"
    if quick:
        config.train.epochs = 2
    return config


# gpu_check's epoch rows, (store, sampler): those the target needs first (the float32 host
# store + host sampler baseline, the compressed stores with the device sampler, float32 on the
# device with the device sampler), then the optional ones, run last with the time left.
GPU_TARGET_ROWS = (
    ("float32", "host"),
    ("sq2", "device"),
    ("vq16x256", "device"),
    ("float32-device", "device"),
)
GPU_EXTRA_ROWS = (("sq2", "host"), ("sq1", "device"), ("sq8", "device"))


def gpu_check(
    num_nodes: int = 2_000_000,
    train_nodes: int = 30_000,
    *,
    budget_s: float = 150.0,
    target_share: float = 0.5,
    compare_share: float = 0.35,
    num_seeds: int = 5,
    quick: bool = False,
    out: str | None = None,
    cora_dir: str | None = None,
    log=lambda s: print(s, flush=True),
) -> list[dict[str, Any]]:
    """The device-sampler epoch target first, then the Cora sampler comparison, then the
    correctness rows, then optional epoch rows, within `budget_s` seconds from the call.

    1. Target (`GPU_TARGET_ROWS`, until `target_share` of the budget): the 2M-node x 128
       synthetic graph, 30 batches of 1000 seeds per epoch (the H100 table of the README had
       50), the float32 host-store + host-sampler baseline, sq2 and vq16x256 with the device
       sampler, float32-device with the device sampler; then `bifeat_train_loss` per row (its
       loss went down) and `bifeat_epoch_target` (`TARGET_SPEEDUP` met?).
    2. Cora test accuracy, host vs device sampler, `num_seeds` seeds each (until `target_share
       + compare_share` of the budget).
    3. Correctness (until the end): every store's rows against its decoded codes
       (`store_rows`, 5,000 nodes) and the device sampler's blocks on the epoch graph
       (`device_sampler_row`, 2 batches).
    4. `GPU_EXTRA_ROWS` (until the end): sq2 with the host sampler, sq1 and sq8 with the
       device sampler.

    Each part starts its rows only before its deadline (a started row runs to its end); time
    a part does not use goes to the next. Nothing runs before the target rows, so a slow later
    part cannot take their time. `quick`: 20k nodes, 2k training nodes, a 2,000-node store
    graph and the tiny synthetic graph for the comparison (a CPU smoke test). `out`: also
    writes `out/bifeat_gpu_check.json` (meta: `part_seconds`). `cora_dir`: the Planetoid
    folder (default: the config's ../shared/data/planetoid; when it is missing the comparison
    runs on the tiny synthetic graph and says so). Prints progress and the tables.
    """
    if not (0 < target_share and 0 <= compare_share and target_share + compare_share <= 1):
        raise ValueError(
            f"need 0 < target_share, 0 <= compare_share, target_share + compare_share <= 1; "
            f"got {target_share}, {compare_share}"
        )
    start = time.perf_counter()
    target_end = start + target_share * budget_s
    compare_end = target_end + compare_share * budget_s
    end = start + budget_s
    if quick:
        num_nodes, train_nodes = 20_000, 2_000
    rows: list[dict[str, Any]] = []
    parts: dict[str, float] = {}

    def part(name: str, t0: float) -> None:
        parts[name] = round(time.perf_counter() - t0, 2)
        log(f"{name} done in {parts[name]:.1f} s (at {time.perf_counter() - start:.1f} s)")

    # 1. the target rows
    t0, setup, epochs = time.perf_counter(), None, []
    if time.perf_counter() > target_end:
        log("target epochs: skipped (time budget spent)")
    else:
        try:
            setup = epoch_setup(num_nodes, train_nodes=train_nodes, log=log)
            epochs = epoch_rows(setup, GPU_TARGET_ROWS, deadline=target_end, log=log)
        except Exception as err:  # noqa: BLE001 - report it, and still run the rest
            log(f"target epochs failed: {type(err).__name__}: {err}")
            rows.append(failure_record("bifeat_epoch", "baseline", (num_nodes,), "float32", err))
        rows += epochs
        if epochs:
            target = target_row(epochs)
            rows += loss_rows(epochs) + [target]
            log("\n" + summary_table(epochs))
            log(
                f"target (>= {TARGET_SPEEDUP}x, compressed store + device sampler): "
                + (
                    "NOT MEASURED"
                    if target["met"] is None
                    else f"{'met' if target['met'] else 'not met'} ({target['measured']})"
                )
            )
        part("target epochs", t0)

    # 2. the Cora comparison
    t0 = time.perf_counter()
    config = cora_config(quick=quick)
    if cora_dir:
        config.data_dir = cora_dir
    if not quick and not os.path.isdir(resolve_data_dir(config.data_dir)):
        log(
            f"Cora not found in {resolve_data_dir(config.data_dir)} (pass cora_dir / --cora_dir): "
            "the sampler comparison runs on the synthetic tiny graph instead"
        )
        config = get_config("tiny")
        config.schemes = "float32-device"
    try:
        with tempfile.TemporaryDirectory() as workdir:
            compared = compare_samplers(
                config, workdir, num_seeds=num_seeds, deadline=compare_end, log=log
            )
    except (OSError, ValueError) as err:  # e.g. unreadable data files: report, keep the rest
        log(f"sampler comparison failed: {err}")
        compared = [failure_record("bifeat_sampler_accuracy", "device-host", (0,), "float32", err)]
    rows += compared
    if compared:
        log("\n" + format_table(compared))
    part("sampler comparison", t0)

    # 3. correctness
    t0 = time.perf_counter()
    checks = store_rows(2_000 if quick else 5_000, deadline=end, log=log)
    if setup is not None and time.perf_counter() < end:
        try:
            checks.append(device_sampler_row(setup, batches=2))
        except Exception as err:  # noqa: BLE001 - report it, and still run the rest
            log(f"device sampler blocks failed: {type(err).__name__}: {err}")
            checks.append(failure_record("bifeat_device_sampler_blocks", "2 batches", (), "", err))
    rows += checks
    if checks:
        log("\n" + format_table(checks))
    part("correctness", t0)

    # 4. optional epoch rows
    if setup is not None and epochs and "error" not in epochs[0]:
        t0 = time.perf_counter()
        extra = epoch_rows(setup, GPU_EXTRA_ROWS, baseline=epochs[0], deadline=end, log=log)
        rows += extra + loss_rows(extra)
        if extra:
            log("\n" + summary_table(epochs + extra))
        part("extra epochs", t0)
    total = time.perf_counter() - start
    log(f"bifeat gpu_check: {total:.1f} s (budget {budget_s:.0f} s; parts {parts})")
    if out:
        write_json(
            os.path.join(out, "bifeat_gpu_check.json"),
            rows,
            seconds=total,
            budget_s=budget_s,
            part_seconds=parts,
            quick=quick,
        )
    return rows


def _define_flags() -> None:
    """Flags of this binary only: defined at run time so gpu_check.py can import this module."""
    flags.DEFINE_string("out", "bench_out", "Output folder for bifeat_bench.json.")
    flags.DEFINE_integer("num_nodes", 2_000_000, "Synthetic graph size (nodes).")
    flags.DEFINE_integer("num_features", 128, "Features per node (float32).")
    flags.DEFINE_integer("train_nodes", 20_000, "Training nodes per epoch (seeds).")
    flags.DEFINE_string("schemes", DEFAULT_SCHEMES, "Stores; the first is the baseline.")
    flags.DEFINE_string("device_schemes", "", "Device stores also run with the device sampler.")
    flags.DEFINE_bool("quick", False, "Small sizes (a smoke test, not for the README).")
    flags.DEFINE_bool("sampling_only", False, "Time host vs device sampling per batch only.")
    flags.DEFINE_integer(
        "compare_seeds", 0, "> 0: only the Cora host-vs-device sampler accuracy, this many seeds."
    )
    flags.DEFINE_bool("gpu_check", False, "Run gpu_check() (target epochs first, then the rest).")
    flags.DEFINE_float("budget_s", 150.0, "gpu_check: time budget in seconds.")
    flags.DEFINE_string("cora_dir", "", "gpu_check: the Planetoid folder (default: the config's).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    if f.gpu_check:
        gpu_check(budget_s=f.budget_s, quick=f.quick, out=f.out, cora_dir=f.cora_dir or None)
        return
    nodes, train = (20_000, 2_000) if f.quick else (f.num_nodes, f.train_nodes)
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}",
        flush=True,
    )
    if f.compare_seeds:
        with tempfile.TemporaryDirectory() as workdir:
            rows = compare_samplers(cora_config(quick=f.quick), workdir, num_seeds=f.compare_seeds)
        print("\n" + format_table(rows))
        write_json(os.path.join(f.out, "bifeat_samplers.json"), rows)
        return
    if f.sampling_only:
        rows = [sampling_row(nodes, train, f.num_features)]
        print("\n" + format_table(rows))
        write_json(os.path.join(f.out, "bifeat_sampling.json"), rows)
        return
    rows = run_benchmark(
        num_nodes=nodes,
        num_features=f.num_features,
        train_nodes=train,
        schemes=f.schemes,
        device_schemes=f.device_schemes,
        log=lambda s: print(s, flush=True),
    )
    print("\n" + summary_table(rows))
    path = os.path.join(f.out, "bifeat_bench.json")
    write_json(path, rows, num_nodes=nodes, train_nodes=train, quick=f.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
