"""Runs the chosen preset of the chosen papers and writes one report with tables and plots.

    python -m experiments.reproduce --preset=tiny --out=results/ [--papers=bifeat,ankge]

Each paper runs as its own binary (`python -m experiments.<paper>`) in `OUT/<paper>/`, so one
paper's failure (even a crash of the process) is reported and the others still run.
`OUT/REPORT.md` collects every paper's `results.md`, its plots, the command and wall time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

from absl import app, flags

from experiments.registry import available_papers, binary_module, config_path

_PAPERS = flags.DEFINE_list("papers", None, "Papers to run (default: every registered paper).")
_PRESET = flags.DEFINE_string("preset", "tiny", "Config preset: tiny, small or paper.")
_OUT = flags.DEFINE_string("out", "results", "Output folder for the runs and REPORT.md.")
_FRESH = flags.DEFINE_bool("fresh", True, "Delete a paper's previous run folder before running.")


def run_paper(paper: str, preset: str, out: str, *, fresh: bool) -> dict:
    """Runs one paper's binary; returns {paper, command, seconds, ok, error, workdir}."""
    workdir = os.path.join(out, paper)
    if fresh and os.path.isdir(workdir):
        shutil.rmtree(workdir)
    command = [
        sys.executable,
        "-m",
        binary_module(paper),
        f"--config={config_path(paper)}:{preset}",
        f"--workdir={workdir}",
    ]
    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    with open(os.path.join(workdir, "log.txt"), "w") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    error = ""
    if proc.returncode != 0:
        with open(os.path.join(workdir, "log.txt")) as log:
            error = "".join(log.readlines()[-15:])
    elif not os.path.exists(os.path.join(workdir, "results.md")):
        error = "the run finished without writing results.md"
    shown = " ".join(["python"] + command[1:])
    return dict(paper=paper, command=shown, seconds=seconds, ok=not error, error=error)


def write_report(out: str, preset: str, runs: list[dict]) -> str:
    """Writes OUT/REPORT.md: a summary table, then each paper's results.md with its plots."""
    lines = [
        f"# Reproduction report (preset `{preset}`)\n",
        "| paper | status | wall time (s) |",
        "|---|---|---|",
    ]
    lines += [
        f"| [{r['paper']}](#{r['paper']}) | {'ok' if r['ok'] else 'FAILED'} | {r['seconds']:.1f} |"
        for r in runs
    ]
    if not runs:
        lines.append("\nNo paper is registered yet (experiments/registry.py).")
    for r in runs:
        lines.append(f'\n---\n\n<a id="{r["paper"]}"></a>\n\n`{r["command"]}`\n')
        if not r["ok"]:
            lines.append(f"**Failed** (log: `{r['paper']}/log.txt`):\n\n```\n{r['error']}```\n")
            continue
        with open(os.path.join(out, r["paper"], "results.md")) as f:
            body = f.read()
        # Plot links in results.md are relative to the paper's workdir.
        body = body.replace("](", f"]({r['paper']}/").replace(f"]({r['paper']}/http", "](http")
        lines.append(re.sub(r"^(#+) ", r"#\1 ", body, flags=re.MULTILINE))  # demote headings
    path = os.path.join(out, "REPORT.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    registered = available_papers()
    papers = _PAPERS.value or registered
    unknown = sorted(set(papers) - set(registered))
    if unknown:
        raise app.UsageError(
            f"unknown paper(s) {', '.join(unknown)}; registered: {', '.join(registered) or 'none'}"
        )
    os.makedirs(_OUT.value, exist_ok=True)
    runs = []
    for paper in papers:
        print(f"[reproduce] {paper} ({_PRESET.value}) ...", flush=True)
        result = run_paper(paper, _PRESET.value, _OUT.value, fresh=_FRESH.value)
        status = "ok" if result["ok"] else "FAILED"
        print(f"[reproduce] {paper}: {status} in {result['seconds']:.1f} s", flush=True)
        runs.append(result)
    path = write_report(_OUT.value, _PRESET.value, runs)
    print(f"[reproduce] wrote {path}")
    if not all(r["ok"] for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
