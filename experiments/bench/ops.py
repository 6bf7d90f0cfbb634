"""Benchmark of the shared kernels in ops/, each against its baseline in the same run.

    python -m experiments.bench.ops --out=DIR [--only=gather,nearest,anderson] [--quick]

Prints one table per op and writes DIR/ops_bench.json: a list of records (op, impl, shape,
dtype, seconds = median, bytes moved, ratio vs the baseline measured side by side).
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments.bench.suites import OP_SUITES, load_suites
from experiments.bench.timing import format_table, write_json

_OUT = flags.DEFINE_string("out", "bench_out", "Output folder for ops_bench.json.")
_ONLY = flags.DEFINE_list("only", list(OP_SUITES), f"Subset of {', '.join(OP_SUITES)}.")
_QUICK = flags.DEFINE_bool("quick", False, "Small sizes (a smoke test, not for the README).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    records = []
    for name, module in load_suites(_ONLY.value, OP_SUITES).items():
        rows = module.benchmark(quick=_QUICK.value)
        print(f"\n## {name}\n\n{format_table(rows)}", flush=True)
        records.extend(rows)
    path = os.path.join(_OUT.value, "ops_bench.json")
    write_json(path, records, quick=_QUICK.value)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
