"""Which papers exist as experiments: a paper is registered when its binary and config exist."""

from __future__ import annotations

import importlib
import os

# The ten papers in the order of shared/docs/PAPERS.md.
PAPER_ORDER = (
    "bifeat",
    "amm_nrr",
    "ankge",
    "ssrn",
    "semantic_scale",
    "jko_iflow",
    "ascend",
    "mom_gan",
    "smmix",
    "defect_ae",
)

_EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))


def binary_module(paper: str) -> str:
    """The module that `python -m` runs for `paper`."""
    return f"experiments.{paper}"


def config_path(paper: str) -> str:
    """Path of the paper's config file, relative to the current directory when possible."""
    path = os.path.join(_EXPERIMENTS, "configs", f"{paper}.py")
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def available_papers() -> list[str]:
    """Papers with both a binary `experiments/<p>.py` and a config `experiments/configs/<p>.py`."""
    return [
        p
        for p in PAPER_ORDER
        if os.path.exists(os.path.join(_EXPERIMENTS, f"{p}.py"))
        and os.path.exists(os.path.join(_EXPERIMENTS, "configs", f"{p}.py"))
    ]


def presets_markdown() -> str:
    """The README's table of every paper's presets: `PRESETS` of each config module (what the
    preset runs, its time on the 2-core CPU, what it needs), one row per preset."""
    rows = ["| paper | preset | what it runs, its time on the 2-core CPU, what it needs |"]
    rows.append("|---|---|---|")
    for paper in available_papers():
        module = importlib.import_module(f"experiments.configs.{paper}")
        for name, text in module.PRESETS.items():
            rows.append(f"| {paper} | `{name}` | {text} |")
    return "\n".join(rows) + "\n"
