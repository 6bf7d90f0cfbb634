"""One script for a GPU machine: every kernel against its reference, then a timing table.

    python -m experiments.bench.gpu_check --out=$OUT

Each suite's `gpu_check()` draws fresh random inputs on the default device, compares every
implementation (Pallas compiled natively, XLA) with the plain-jnp reference (relative error,
index agreement) and times them (Pallas vs XLA vs baseline, GB/s). The script prints one table
per suite, writes OUT/gpu_check.json, and exits non-zero when any check fails. It also runs on a
CPU (where Pallas runs in interpret mode) so it can be tested before a GPU is lent.
"""

from __future__ import annotations

import os
import sys
import traceback

import jax
from absl import app, flags

from experiments.bench.suites import GPU_CHECK_SUITES, load_suites
from experiments.bench.timing import format_table, write_json

_OUT = flags.DEFINE_string("out", "bench_out", "Output folder for gpu_check.json.")
_ONLY = flags.DEFINE_list(
    "only", list(GPU_CHECK_SUITES), f"Subset of {', '.join(GPU_CHECK_SUITES)}."
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    modules = load_suites(_ONLY.value, GPU_CHECK_SUITES)
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    records, failed = [], []
    for name, module in modules.items():
        if not hasattr(module, "gpu_check"):
            continue
        try:
            rows = module.gpu_check()
        except Exception:  # noqa: BLE001 - report and go on with the other suites
            traceback.print_exc()
            failed.append(f"{name}: raised")
            continue
        print(f"\n## {name}\n\n{format_table(rows)}", flush=True)
        failed += [f"{name}: {r['op']} {r['impl']}" for r in rows if r.get("ok") is False]
        records.extend(rows)
    write_json(os.path.join(_OUT.value, "gpu_check.json"), records, failed=failed)
    if failed:
        print("FAILED checks:\n  " + "\n  ".join(failed))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    app.run(main)
