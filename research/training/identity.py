"""Run identity: the config fields that decide a run's results, stored with what the run writes.

A workdir's checkpoints and cached results may only be reused by a run of the same config. The
identity is the flattened config minus the fields that do not change any result:

- bookkeeping (`NON_RESULT_FIELDS`: logging and checkpoint cadence, prefetch depth, the preset
  name, which is only a label for the fields), and
- selection (`SELECTION_FIELDS`: which seeds, methods, losses, schemes, densities, pairs,
  dimensions, contamination levels, data sets, imbalance factors or sampling sparsities to
  run), so that adding seeds or methods to a finished experiment reuses the runs it already
  has, and
- fields a paper declares with `reevaluated_by_the_code`, whose change its own code detects and
  recomputes from (the stored result records them and is re-evaluated when they differ).

`experiments.app` compares the identity with the workdir's `config.json` before any work, and
sets it as the current identity; the checkpointer and `results.cached_result` store it beside
every checkpoint and result and refuse to reuse one written under another identity.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from research.training.errors import RunMismatchError

NON_RESULT_FIELDS = frozenset(
    {
        "log_every",
        "checkpoint_every",
        "checkpoint_every_epochs",
        "keep_checkpoints",
        "prefetch",
        "preset",
        "figure_images",
    }
)
SELECTION_FIELDS = frozenset(
    {
        "num_seeds",
        "schemes",
        "methods",
        "losses",
        "densities",
        "pairs",
        "dims",
        "eps_values",
        "datasets",
        "imbalance_factors",
        "sampled_positions",
    }
)


_REEVALUATED: set[str] = set()


def reevaluated_by_the_code(*names: str) -> None:
    """Declares dotted config fields (e.g. "ankge.lambda_grid") whose change a paper's own code
    detects on a finished run and recomputes what depends on them (AnKGE re-selects its lambdas
    on the trained analogy functions): they are left out of the identity."""
    _REEVALUATED.update(names)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} of a nested mapping (tuples as lists)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def result_fields(config: Any) -> dict[str, Any]:
    """The flattened fields of `config` (a ConfigDict or nested dict) that decide results."""
    tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    ignored = NON_RESULT_FIELDS | SELECTION_FIELDS
    # One JSON round trip, so a config read back from config.json compares equal.
    flat = json.loads(json.dumps(flatten(tree), default=str))
    return {
        k: v
        for k, v in flat.items()
        if k.rsplit(".", 1)[-1] not in ignored and k not in _REEVALUATED
    }


def fingerprint(fields: Mapping[str, Any]) -> str:
    """A short hash of `result_fields(...)`."""
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_difference(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """'a.b 1 -> 2, c (missing) -> 3' for the fields that differ (at most 8 named)."""
    names = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    show = lambda d, k: json.dumps(d[k]) if k in d else "(missing)"
    parts = [f"{k} {show(stored, k)} -> {show(current, k)}" for k in names[:8]]
    if len(names) > 8:
        parts.append(f"and {len(names) - 8} more")
    return ", ".join(parts)


_current: dict[str, Any] | None = None


def current() -> dict[str, Any] | None:
    """The result fields of the run in progress, or None outside a binary (library use)."""
    return _current


@contextlib.contextmanager
def _current_set_to(fields: dict[str, Any] | None) -> Iterator[dict[str, Any] | None]:
    global _current
    previous, _current = _current, fields
    try:
        yield fields
    finally:
        _current = previous


def running(config: Any) -> contextlib.AbstractContextManager[dict[str, Any]]:
    """Makes `result_fields(config)` the current identity inside the block."""
    return _current_set_to(result_fields(config))


def without(*prefixes: str) -> contextlib.AbstractContextManager[dict[str, Any] | None]:
    """Narrows the current identity to the fields outside `prefixes` (e.g. "ankge.") inside the
    block: a stage whose results do not read them (AnKGE's stage 1) stores and checks only the
    rest, so a run that differs only there reuses that stage's results."""
    if _current is None:
        return _current_set_to(None)
    return _current_set_to({k: v for k, v in _current.items() if not k.startswith(prefixes)})


def check_stored(stored: Mapping[str, Any] | None, where: str) -> None:
    """Raises RunMismatchError if `stored` (the result fields saved with a checkpoint or result
    at `where`) differs from the current identity on the current identity's fields (a result
    stored under a wider identity, before a stage was narrowed with `without`, still matches);
    nothing to check without either."""
    if stored is None or _current is None:
        return
    stored = {k: stored[k] for k in stored if k in _current}
    if fingerprint(stored) == fingerprint(_current):
        return
    raise RunMismatchError(
        f"{where} was written by a run with a different config "
        f"({describe_difference(stored, _current)}); use another --workdir, or --fresh to "
        "delete the workdir's runs and start over"
    )
