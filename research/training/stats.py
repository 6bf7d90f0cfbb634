"""Mean and spread over seeds, one convention for every results table.

The spread is the sample standard deviation (ddof = 1); a difference between two methods is
judged against its standard error, sqrt(std_a^2 / n_a + std_b^2 / n_b) (Welch), so an error bar
or a "Δ / s.e." column means the same thing in every paper's README.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SeedSummary:
    """Summary of one metric over n seeds: mean, sample std (ddof 1; 0 for one seed) and the
    standard error of the mean (std / sqrt(n))."""

    mean: float
    std: float
    stderr: float
    n: int


@dataclass(frozen=True)
class Difference:
    """mean_a - mean_b, its standard error, and z = diff / stderr (inf for a zero stderr)."""

    diff: float
    stderr: float
    z: float

    def exceeds_spread(self, threshold: float = 2.0) -> bool:
        """Whether |diff| is more than `threshold` standard errors (about 95% for 2)."""
        return abs(self.z) > threshold


def mean_std_text(s: SeedSummary | None, digits: int) -> str:
    """A results-table cell: "mean ± std" with `digits` decimals, "mean" for one seed, "" for
    no summary."""
    if s is None:
        return ""
    return f"{s.mean:.{digits}f}" if s.n == 1 else f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"


def seed_summary(values: Sequence[float]) -> SeedSummary:
    """Mean, sample std (ddof 1) and standard error of `values` (one per seed)."""
    n = len(values)
    if n == 0:
        raise ValueError("seed_summary needs at least one value")
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return SeedSummary(mean=mean, std=std, stderr=std / math.sqrt(n), n=n)


def difference(a: SeedSummary, b: SeedSummary) -> Difference:
    """a.mean - b.mean with the Welch standard error of the two seed spreads."""
    diff = a.mean - b.mean
    se = math.sqrt(a.stderr**2 + b.stderr**2)
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return Difference(diff=diff, stderr=se, z=z)
