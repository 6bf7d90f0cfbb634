"""Evaluation of a trained flow: test NLL, MMD, MMD two-sample test, inversion error, and plots.

MMD follows the official code: Gaussian kernel `exp(-||a - b||^2 / (2 g^2))` with
`g = 0.1 x median pairwise distance of the test data`, biased (V-statistic) estimate of MMD^2.
The two-sample test uses the standard median heuristic `g = median distance of the pooled
sample` and a permutation test. `EvalOptions` holds the evaluation settings (`config.eval`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from models.flows import VelocityMLP
from research.jko_iflow import flow
from research.training.sample_distances import median_distance, mmd2

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How a trained flow is evaluated (`evaluate_flow`) and plotted (`density_grid`)."""

    solver: str = "dopri5"  # accurate integration for NLL, sampling, inversion (flow.SOLVERS)
    tol: float = 1e-5  # dopri5 rtol = atol
    rk4_steps: int = 10  # RK4 steps per block when solver == "rk4"
    num_nll: int = 10_000  # test points for the NLL
    num_mmd: int = 10_000  # samples (and test points) for the MMD; official nmax
    num_inversion: int = 1000  # test points for the round-trip error
    num_permutations: int = 200  # of the MMD two-sample test
    grid_size: int = 100  # of the 2D density plot (grid_size^2 points); 0: no plot

    def __post_init__(self):
        if self.solver not in flow.SOLVERS:
            raise ValueError(f"eval.solver={self.solver!r}; expected one of {flow.SOLVERS}")

    def flow_solver(self) -> flow.Solver:
        """The block integrator of this evaluation."""
        return flow.Solver(self.solver, num_steps=self.rk4_steps, rtol=self.tol, atol=self.tol)


def mmd_permutation_test(
    x: np.ndarray, y: np.ndarray, *, num_permutations: int, seed: int = 0
) -> dict[str, float]:
    """Two-sample test of x [n, d] vs y [m, d]: biased MMD^2 with the median-heuristic bandwidth
    of the pooled sample, p-value from `num_permutations` random relabellings."""
    pooled = np.concatenate([x, y]).astype(np.float64)
    n, m = len(x), len(y)
    g = median_distance(pooled, max_points=len(pooled), seed=seed)
    sq = np.sum(pooled**2, 1)
    kern = np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0) / (2 * g**2))
    signs = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(signs) for _ in range(num_permutations)])
    observed = float(signs @ kern @ signs)
    null = np.sum((perms @ kern) * perms, axis=1)
    p_value = (1 + np.sum(null >= observed)) / (1 + num_permutations)
    return {"mmd2": observed, "p_value": float(p_value), "bandwidth": g}


def evaluate_flow(
    model: VelocityMLP,
    blocks: Sequence[Any],
    test: np.ndarray,
    *,
    key: Array,
    opts: EvalOptions,
    train_steps: int,
    true_logpdf: Any = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of a flow on held-out data `test` [N, d], and arrays for plots.

    Metrics: `nll` (`opts.flow_solver()`, exact traces), `nll_rk4_1step` (the official
    evaluation: one RK4 step per block), `nll_standard_normal` (N(0, I) on the same points),
    `nll_true` (when `true_logpdf`, `x [n, d] -> log p [n]`, is given), `mmd` (official
    bandwidth) and `mmd_floor` (the same statistic between two disjoint halves of the test data),
    the permutation test (`mmd_test_p_value`, `mmd_test_passed` at level 0.05), and the
    inversion errors (`inversion_max_abs`, ...). `train_steps` is copied into the metrics.
    Returns (metrics, {"samples": [opts.num_mmd, d]}).
    """
    start = time.perf_counter()
    eval_solver, num_mmd = opts.flow_solver(), opts.num_mmd
    test = np.asarray(test, np.float32)
    x_nll = test[: opts.num_nll]
    one_step = flow.Solver("rk4", num_steps=1)
    logp = np.asarray(flow.log_prob(model, blocks, x_nll, solver=eval_solver), np.float64)
    logp_rk4 = np.asarray(flow.log_prob(model, blocks, x_nll, solver=one_step), np.float64)
    d = test.shape[1]
    metrics: dict[str, float] = {
        "nll": float(-logp.mean()),
        "nll_rk4_1step": float(-logp_rk4.mean()),
        "nll_standard_normal": float(
            np.mean(0.5 * np.sum(x_nll.astype(np.float64) ** 2, 1))
            + 0.5 * d * math.log(2 * math.pi)
        ),
        "train_steps": float(train_steps),
    }
    if true_logpdf is not None:
        metrics["nll_true"] = float(-np.mean(true_logpdf(x_nll)))
        metrics["nll_gap"] = metrics["nll"] - metrics["nll_true"]

    samples = np.asarray(flow.sample(model, blocks, key, num_mmd, solver=eval_solver))
    ref, other = test[:num_mmd], test[-num_mmd:]
    gamma = 0.1 * median_distance(ref)
    metrics["mmd"] = mmd2(ref, samples, gamma)
    if len(test) >= 2 * num_mmd:
        metrics["mmd_floor"] = mmd2(ref, other, gamma)
    n_test = min(1000, num_mmd)
    test_result = mmd_permutation_test(
        samples[:n_test], other[:n_test], num_permutations=opts.num_permutations
    )
    metrics["mmd_test_p_value"] = test_result["p_value"]
    metrics["mmd_test_passed"] = float(test_result["p_value"] > 0.05)

    inv = flow.inversion_error(model, blocks, test[: opts.num_inversion], solver=eval_solver)
    metrics.update({f"inversion_{k}": v for k, v in inv.items()})
    metrics["eval_seconds"] = time.perf_counter() - start
    return metrics, {"samples": samples}


def density_grid(
    model: VelocityMLP,
    blocks: Sequence[Any],
    *,
    lim: float = 4.5,
    num: int,
    solver: flow.Solver,
) -> np.ndarray:
    """The learned 2D density on a `num` x `num` grid over [-lim, lim]^2 ([num, num], row = y)."""
    g = np.linspace(-lim, lim, num, dtype=np.float32)
    xx, yy = np.meshgrid(g, g)
    pts = np.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    logp = np.asarray(flow.log_prob(model, blocks, pts, solver=solver))
    return np.exp(logp).reshape(num, num)
