"""Benchmark: gather rows of a quantized table (ops/quantized_gather.py) vs a float32 take.

    python -m experiments.bench.ops_gather [--quick] [--out=bench_out/ops_gather.json]

A batch of random row ids (`batch` of `rows` x `cols` float32 N(0, 1) features) is gathered by
`jnp.take` from the float32 table (the baseline) and by `quantized_gather(impl="xla")` from the
quantized tables: BiFeat sq 1/2/4/8 bits, uniform 8 bits, VQ width 16 / length 256. All contenders
are timed in interleaved rounds in one process (median of the rounds), so load from other
processes hits them alike. Each record: shape = batch x rows x cols, dtype = the scheme, seconds,
bytes moved (code bytes read + float32 written + indices), ratio vs the float32 take of the same
batch (> 1: faster), compression ratio of the table and the relative L2 error of the gathered rows.
Full size: 16384 and 65536 of 1,000,000 x 128 rows (the VQ fit takes most of the ~1.5 min);
--quick: 4096 of 20,000.

Note for CPU numbers: a 65536 x 128 float32 result is 32 MiB, at glibc's mmap threshold: whether
a call gets fresh (page-faulting, ~15-30 ms on the 2-core test machine) memory for its output
depends on the allocator's state, not on the kernel. The full run therefore measures 65536 twice:
`allocator="default"` as is, and `allocator="heap"` with large buffers served from the reused
heap (mallopt, see `_heap_outputs`) for every contender alike. XLA:CPU splits the decode loops
over both cores while its gather runs on one: wall times drift when other processes load the
cores, so records carry process CPU time (`cpu_seconds`, `cpu_ratio`) too.

`gpu_check()` is the device run (experiments/bench/gpu_check.py): fresh inputs, every impl
(reference, XLA, Pallas compiled natively) against the reference for every method, then Pallas vs
XLA vs `jnp.take` timings in GB/s.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench.timing import (
    block,
    failure_record,
    format_table,
    median_seconds,
    record,
    write_json,
)
from ops.quantize import SQ_BITS, UNIFORM_BITS, QuantizedTable, quantize
from ops.quantized_gather import quantized_gather, quantized_gather_reference

BENCH_SCHEMES = (("sq", 1), ("sq", 2), ("sq", 4), ("sq", 8), ("uniform", 8), ("vq", (16, 256)))
COLUMNS = (
    "op",
    "impl",
    "shape",
    "dtype",
    "seconds",
    "ratio_vs_baseline",
    "gb_per_s",
    "cpu_seconds",
    "cpu_ratio",
    "compression_ratio",
    "rel_error",
    "allocator",
)


def _name(method: str, arg: Any) -> str:
    return f"vq{arg[0]}x{arg[1]}" if method == "vq" else f"{method}{arg}"


def _features(rows: int, cols: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols), dtype=np.float32)


def _build(x: np.ndarray, method: str, arg: Any, seed: int) -> QuantizedTable:
    if method == "vq":
        return quantize(x, "vq", width=arg[0], length=arg[1], seed=seed, max_iters=25)
    return quantize(x, method, arg, seed=seed)


def _interleaved(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, tuple[float, float]]:
    """(median wall seconds, median process CPU seconds) per contender over `rounds` rounds, each
    timing every contender once. CPU time counts every thread of this process: less sensitive to
    other processes' load than wall time, but a loop split over two cores counts twice."""
    for fn in fns.values():
        block(fn())  # compile + warm
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            start = time.process_time()
            wall[k].append(median_seconds(fn, repeats=1, warmup=0))
            cpu[k].append(time.process_time() - start)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def _heap_outputs():
    """glibc serves allocations >= its mmap threshold (dynamic, at most 32 MiB) with fresh mmaps,
    so a 32 MiB result pays its page faults on every call (~15-30 ms here, more than the gather).
    Inside this context every buffer under 1 GiB comes from the reused heap instead; afterwards
    the thresholds go back to glibc's static defaults (128 KiB)."""
    libc = _libc()
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)
    try:
        yield
    finally:
        libc.mallopt(m_mmap_threshold, 128 * 1024)
        libc.mallopt(m_trim_threshold, 128 * 1024)


def _rel_error(out: jax.Array, ref: jax.Array) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


def _code_bytes(t: QuantizedTable) -> int:
    return t.codes.shape[1] * t.codes.dtype.itemsize


def benchmark(quick: bool = False) -> list[dict]:
    """Quantized gather (XLA) vs float32 take; see the module docstring. Returns records."""
    rows, cols = (20_000, 128) if quick else (1_000_000, 128)
    batches = (4096,) if quick else (16_384, 65_536)
    rounds = 5 if quick else 11
    x_host = _features(rows, cols, seed=0)
    x = jnp.asarray(x_host)
    tables = {}
    for method, arg in BENCH_SCHEMES:
        start = time.perf_counter()
        tables[_name(method, arg)] = t = _build(x_host, method, arg, seed=0)
        block(t.codes)
        print(
            f"  quantized {_name(method, arg)} in {time.perf_counter() - start:.1f} s", flush=True
        )
    take = jax.jit(lambda t, i: jnp.take(t, i, axis=0, mode="clip"))
    gather = jax.jit(lambda t, i: quantized_gather(t, i, impl="xla", check=False))
    runs = [(b, "default") for b in batches]
    if not quick and _libc() is not None:
        runs.append((batches[-1], "heap"))
    out = []
    for batch, allocator in runs:
        idx = jnp.asarray(np.random.default_rng(batch).integers(0, rows, batch), jnp.int32)
        fns = {"float32": lambda idx=idx: take(x, idx)}
        fns.update({n: (lambda t=t, idx=idx: gather(t, idx)) for n, t in tables.items()})
        if allocator == "heap":
            with _heap_outputs():
                secs = _interleaved(fns, rounds)
        else:
            secs = _interleaved(fns, rounds)
        ref = take(x, idx)
        write = batch * cols * 4 + batch * 4  # float32 out + int32 ids
        shape = (batch, rows, cols)
        base, base_cpu = secs["float32"]
        out.append(
            record(
                "gather",
                "jnp.take",
                shape,
                "float32",
                base,
                bytes_moved=batch * cols * 4 + write,
                baseline_seconds=base,
                cpu_seconds=base_cpu,
                cpu_ratio=1.0,
                compression_ratio=1.0,
                rel_error=0.0,
                allocator=allocator,
            )
        )
        for n, t in tables.items():
            wall, cpu = secs[n]
            out.append(
                record(
                    "gather",
                    "xla",
                    shape,
                    n,
                    wall,
                    bytes_moved=batch * _code_bytes(t) + write,
                    baseline_seconds=base,
                    cpu_seconds=cpu,
                    cpu_ratio=base_cpu / cpu,
                    compression_ratio=t.compression_ratio,
                    rel_error=_rel_error(gather(t, idx), ref),
                    allocator=allocator,
                )
            )
    return out


def gpu_check() -> list[dict]:
    """Every impl vs the reference on fresh inputs, then Pallas vs XLA vs jnp.take timings.

    Natively compiled Pallas on a GPU; elsewhere small sizes and Pallas in interpret mode (a smoke
    test of this script). Rows with ``ok=False`` mark failures (wrong values or a kernel that did
    not lower); the error text is kept in the row.
    """
    on_gpu = jax.default_backend() == "gpu"
    rows, cols, batch = (1_000_000, 128, 65_536) if on_gpu else (4_000, 128, 1024)
    x_host = _features(rows, cols, seed=int(time.time()) % 2**31)
    x = jnp.asarray(x_host)
    idx = jnp.asarray(np.random.default_rng().integers(0, rows, batch), jnp.int32)
    schemes = [("sq", b) for b in SQ_BITS] + [("uniform", b) for b in UNIFORM_BITS]
    schemes.append(("vq", (16, 256)))
    take = jax.jit(lambda t, i: jnp.take(t, i, axis=0, mode="clip"))
    impls = {
        "xla": jax.jit(lambda t, i: quantized_gather(t, i, impl="xla", check=False)),
        "pallas": jax.jit(
            lambda t, i: quantized_gather(t, i, impl="pallas", check=False, interpret=not on_gpu)
        ),
    }
    shape = (batch, rows, cols)
    base = median_seconds(lambda: take(x, idx), repeats=9 if on_gpu else 3)
    out = [
        record(
            "gather",
            "jnp.take",
            shape,
            "float32",
            base,
            bytes_moved=batch * cols * 8 + batch * 4,
            baseline_seconds=base,
            ok=True,
        )
    ]
    for method, arg in schemes:
        name = _name(method, arg)
        t = _build(x_host, method, arg, seed=0)
        ref = quantized_gather_reference(t, idx)
        scale = float(jnp.max(jnp.abs(ref)))
        for impl, fn in impls.items():
            row: dict[str, Any]
            try:
                res = block(fn(t, idx))
                err = float(jnp.max(jnp.abs(res - ref))) / max(scale, 1e-30)
                secs = median_seconds(lambda fn=fn, t=t: fn(t, idx), repeats=9 if on_gpu else 3)
                row = record(
                    "gather",
                    impl,
                    shape,
                    name,
                    secs,
                    bytes_moved=batch * (_code_bytes(t) + cols * 4 + 4),
                    baseline_seconds=base,
                    max_rel_error=err,
                    ok=err < 1e-5,
                )
            except Exception as e:  # noqa: BLE001 - a kernel that does not lower is a result too
                row = failure_record("gather", impl, shape, name, e, ok=False)
            row["interpret"] = impl == "pallas" and not on_gpu
            out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--gpu_check", action="store_true", help="run gpu_check() instead")
    parser.add_argument("--out", default="bench_out/ops_gather.json", help="JSON output path")
    args = parser.parse_args()
    rows = gpu_check() if args.gpu_check else benchmark(quick=args.quick)
    print(
        format_table(
            rows,
            [c for c in COLUMNS if c in rows[0]]
            + (["max_rel_error", "ok"] if args.gpu_check else []),
        )
    )
    write_json(args.out, rows, quick=args.quick)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
