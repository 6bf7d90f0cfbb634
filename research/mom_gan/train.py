"""MoM-GAN experiments: every estimator on Huber-contaminated samples; `train_and_evaluate`.

    python -m experiments.mom_gan --config=experiments/configs/mom_gan.py:small --workdir=DIR

For each dimension p in `config.dims`, contamination eps in `config.eps_values` and seed, one
sample of `config.num_train` points of (1 - eps) P + eps Q is drawn (the same sample for every
method), and each method in `config.methods` estimates P from it. Each (p, eps, method, seed)
writes `DIR/runs/p<p>/eps<eps>/<method>/seed<k>/` (a GAN's checkpoints, metrics and the
estimate's generator parameters `generator_params.npz`, and `result.json`; a re-run reads
finished results back and resumes an unfinished fit). Then `DIR/results.{json,md}` and
`DIR/mean_error_vs_eps.png`.

Metrics against the clean P: `mean_error` ||mu_hat - mu||_2, `cov_error` ||Sigma_hat - Sigma||_op
(where the method estimates a covariance), and for the GANs `sliced_w2` and `mmd` (biased MMD^2,
Gaussian kernel of the median-heuristic width) between `config.num_eval` generated points and as
many clean hold-out points; `seconds` of training.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from research.mom_gan import estimators, gan, methods
from research.mom_gan.contamination import (
    Contamination,
    clean_moments,
    huber_sample,
    sample_clean,
)
from research.training import results, stats
from research.training.errors import NonFiniteError
from research.training.sample_distances import median_distance, mmd2, sliced_wasserstein

Config = ml_collections.ConfigDict
METRICS = ("mean_error", "cov_error", "sliced_w2", "mmd", "seconds")


def method_list(config: Config) -> list[str]:
    return [m.strip() for m in config.methods.split(",") if m.strip()]


def seeds(config: Config) -> list[int]:
    return list(range(config.seed, config.seed + config.num_seeds))


def gan_options(config: Config, method: str) -> gan.GANOptions:
    return gan.GANOptions(**config.gans[method])


def _eps_name(eps: float) -> str:
    return f"eps{eps:g}"


def distribution_metrics(samples: np.ndarray, holdout: np.ndarray, *, seed: int) -> dict:
    """`sliced_w2` and `mmd` between generated `samples` and clean `holdout` [m, p]."""
    width = median_distance(holdout, seed=seed)
    return {
        "sliced_w2": sliced_wasserstein(samples, holdout, seed=seed),
        "mmd": mmd2(samples, holdout, width),
    }


@functools.lru_cache(maxsize=1)
def contaminated_sample(
    seed: int, dim: int, eps: float, n: int, contamination: Contamination
) -> tuple[np.ndarray, np.ndarray]:
    """The sample every method of one (seed, p, eps) estimates from (`huber_sample`), drawn
    once: the methods run one after the other on it (read-only)."""
    eps_key = int(round(eps * 1e6))
    x, is_outlier = huber_sample([seed, dim, eps_key], n, dim, eps, contamination)
    x.flags.writeable = is_outlier.flags.writeable = False  # shared by every method
    return x, is_outlier


def run_one(
    config: Config, method: str, dim: int, eps: float, seed: int, workdir: str
) -> dict[str, float]:
    """One estimator on one contaminated sample; returns its metrics (None where undefined)."""
    contamination = Contamination(**config.contamination)
    x, is_outlier = contaminated_sample(seed, dim, eps, config.num_train, contamination)
    mu, sigma = clean_moments(contamination.clean, dim)
    out: dict[str, Any] = dict.fromkeys(METRICS)
    out["outlier_fraction"] = float(is_outlier.mean())
    if method in estimators.CLASSICAL or method == methods.ORACLE:
        points = x[~is_outlier] if method == methods.ORACLE else x
        est = estimators.CLASSICAL.get(method, estimators.sample_mean)(points)
        out["mean_error"] = float(np.linalg.norm(est - mu))
        if method in ("mean", methods.ORACLE):
            cov = estimators.sample_covariance(points)
            out["cov_error"] = float(np.linalg.norm(cov - sigma, ord=2))
        return out
    opts = gan_options(config, method)
    try:
        params, info = gan.fit(
            opts,
            x,
            eps,
            seed,
            workdir,
            desc=f"{method} p={dim} eps={eps:g} seed {seed}",
            checkpoint_every_epochs=config.checkpoint_every_epochs,
            log_every_epochs=config.log_every_epochs,
        )
    except NonFiniteError as e:
        # One estimator diverging is a result of the comparison, not the end of the experiment.
        logging.warning("%s", e)
        return {**out, "diverged": str(e)}
    results.save_arrays(os.path.join(workdir, "generator_params.npz"), params)
    est = gan.estimate(opts, params, dim, num_samples=config.num_eval, seed=seed + 10**6)
    holdout = sample_clean(
        np.random.default_rng([seed, dim, 7]), config.num_eval, dim, contamination.clean
    )
    out["mean_error"] = float(np.linalg.norm(est["mean"] - mu))
    if est["cov"] is not None:
        out["cov_error"] = float(np.linalg.norm(est["cov"] - sigma, ord=2))
    out.update(distribution_metrics(est["samples"], holdout, seed=seed))
    out.update(
        seconds=info["seconds"],
        num_blocks=info["num_blocks"],
        generator_iterations=info["generator_iterations"],
    )
    return out


def summarize(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (p, eps, method) in run order: each metric's mean and sample std over the
    seeds that finished (`<metric>` a `stats.SeedSummary`, None when the method does not define
    it or every seed diverged); `diverged` counts the fits stopped by the NaN guard."""
    rows = []
    keys = dict.fromkeys((r["dim"], r["eps"], r["method"]) for r in runs)
    for dim, eps, method in keys:
        rs = [r for r in runs if (r["dim"], r["eps"], r["method"]) == (dim, eps, method)]
        diverged = sum(1 for r in rs if r.get("diverged"))
        row: dict[str, Any] = {
            "dim": dim,
            "eps": eps,
            "method": method,
            "seeds": len(rs),
            "diverged": diverged,
        }
        for metric in METRICS:
            values = [r[metric] for r in rs if r.get(metric) is not None]
            row[metric] = stats.seed_summary(values) if values else None
        rows.append(row)
    return rows


def _pm(s: stats.SeedSummary | None) -> str:
    """'mean ± std' ('mean' for one seed, '' for none)."""
    if s is None:
        return ""
    return f"{s.mean:.4g}" if s.n == 1 else f"{s.mean:.4g} ± {s.std:.2g}"


def _error_cell(row: Mapping[str, Any] | None) -> str:
    """The mean error's mean ± std, and how many seeds diverged (left out of the mean)."""
    if row is None:
        return ""
    text = _pm(row["mean_error"])
    if row["diverged"]:
        text = f"{text} ({row['diverged']} of {row['seeds']} diverged)".lstrip()
    return text


def error_tables(rows: Sequence[Mapping[str, Any]], eps_values: Sequence[float]):
    """Per p: methods x eps, each cell the mean error's mean ± std over the seeds that
    finished."""
    tables = {}
    for dim in dict.fromkeys(r["dim"] for r in rows):
        table = []
        for method in dict.fromkeys(r["method"] for r in rows if r["dim"] == dim):
            cells = {r["eps"]: r for r in rows if r["dim"] == dim and r["method"] == method}
            table.append(
                {"method": method, **{f"eps {e:g}": _error_cell(cells.get(e)) for e in eps_values}}
            )
        tables[f"p = {dim}: l2 error of the mean (mean ± std over seeds)"] = table
    return tables


def robustness_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (p, method): the mean error at eps = 0 and, for every larger eps, the error there
    over the error at eps = 0 (how much contamination moves the estimator)."""
    by = {(r["dim"], r["eps"], r["method"]): r["mean_error"] for r in rows}
    out = []
    for dim, eps, method in by:
        base = by[(dim, eps, method)]
        if eps != 0 or base is None:
            continue
        row = {"p": dim, "method": method, "error at eps 0": base.mean}
        for (d, e, m), s in by.items():
            if (d, m) == (dim, method) and e > 0 and s is not None:
                row[f"eps {e:g} / eps 0"] = s.mean / max(base.mean, 1e-12)
        out.append(row)
    return out


COMPARISONS = (
    ("mom_gan", "wgan"),
    ("mom_gan", "mom_wgan"),
    ("mom_wgan", "wgan"),
    ("mom_jsgan", "gan"),
    ("mom_gan", "robust_jsgan"),
    ("mom_jsgan", "robust_jsgan"),
)


def comparison_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (p, eps) and pair (a, b) of `COMPARISONS` that ran: the mean-error difference a - b,
    its Welch standard error over seeds and whether |diff| exceeds 2 standard errors."""
    by = {(r["dim"], r["eps"], r["method"]): r["mean_error"] for r in rows}
    out = []
    for dim, eps in dict.fromkeys((r["dim"], r["eps"]) for r in rows):
        for a, b in COMPARISONS:
            sa, sb = by.get((dim, eps, a)), by.get((dim, eps, b))
            if sa is None or sb is None:
                continue
            d = stats.difference(sa, sb)
            verdict = (
                "within spread"
                if not d.exceeds_spread()
                else (f"{a} lower" if d.diff < 0 else f"{b} lower")
            )
            out.append(
                {
                    "p": dim,
                    "eps": eps,
                    "a - b": f"{a} - {b}",
                    "diff": d.diff,
                    "s.e.": d.stderr,
                    "verdict": verdict,
                }
            )
    return out


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
    """Every (p, eps, seed, method) of `config`; returns the flat metrics. A fit that diverges
    (NaN guard) is recorded and the others go on; after the results are written the run raises
    NonFiniteError naming the diverged fits (exit status 1)."""
    runs = []
    names = method_list(config)
    for dim in config.dims:
        for eps in config.eps_values:
            for seed in seeds(config):
                for method in names:
                    rdir = os.path.join(
                        workdir, "runs", f"p{dim}", _eps_name(eps), method, f"seed{seed}"
                    )
                    r = results.cached_result(
                        os.path.join(rdir, "result.json"),
                        lambda m=method, d=dim, e=eps, s=seed, w=rdir: run_one(
                            config, m, d, e, s, w
                        ),
                    )
                    error = "diverged" if r.get("diverged") else f"{r['mean_error']:.4g}"
                    logging.info(
                        "p=%d eps=%g %s seed %d: mean error %s", dim, eps, method, seed, error
                    )
                    runs.append({"dim": dim, "eps": eps, "method": method, "seed": seed, **r})
    rows = summarize(runs)
    metrics = {}
    for r in rows:
        for metric in METRICS:
            if r[metric] is not None:
                prefix = f"p{r['dim']}/{_eps_name(r['eps'])}/{r['method']}/{metric}"
                metrics[prefix] = r[metric].mean
                metrics[prefix + "_std"] = r[metric].std
    tables = error_tables(rows, config.eps_values)
    detail = [
        {
            "p": r["dim"],
            "eps": r["eps"],
            "method": r["method"],
            "seeds": r["seeds"],
            "diverged": r["diverged"],
            **{m: _pm(r[m]) for m in METRICS},
        }
        for r in rows
    ]
    tables["every metric (mean ± std over seeds)"] = detail
    comparisons = comparison_rows(rows)
    if comparisons:
        tables["mean error, a - b, with the Welch standard error over seeds"] = comparisons
    plots = []
    if len(config.eps_values) > 1:
        tables["robustness: the error at eps over the error at eps 0"] = robustness_rows(rows)
        plots.append(plot_errors(workdir, rows))
    results.write_results(
        workdir, metrics, title=f"MoM-GAN: {config.preset}", tables=tables, plots=plots
    )
    diverged = [r for r in runs if r.get("diverged")]
    if diverged:
        # Written above and marked in results.md, but the run must not end as a success.
        names = ", ".join(
            f"{r['method']} p={r['dim']} eps={r['eps']:g} seed {r['seed']}" for r in diverged[:4]
        )
        more = f" and {len(diverged) - 4} more" if len(diverged) > 4 else ""
        raise NonFiniteError(
            f"{len(diverged)} of {len(runs)} fits diverged ({names}{more}); the other results "
            f"are in {os.path.join(workdir, 'results.md')}, where these are marked diverged"
        )
    return metrics


def plot_errors(workdir: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """mean_error_vs_eps.png: one panel per p, one line per method (log scale)."""
    import matplotlib.pyplot as plt

    dims = list(dict.fromkeys(r["dim"] for r in rows))
    fig, axes = plt.subplots(1, len(dims), figsize=(4.5 * len(dims), 3.8), squeeze=False)
    for ax, dim in zip(axes[0], dims, strict=True):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = [  # eps where at least one seed finished
                (r["eps"], r["mean_error"])
                for r in rows
                if r["dim"] == dim and r["method"] == method and r["mean_error"] is not None
            ]
            eps = [e for e, _ in pts]
            ax.errorbar(
                eps,
                [s.mean for _, s in pts],
                yerr=[s.std for _, s in pts],
                marker="o",
                capsize=3,
                label=method,
            )
        ax.set(
            xlabel="contamination eps",
            ylabel="l2 error of the mean",
            title=f"p = {dim}",
            yscale="log",
        )
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    return os.path.basename(
        results.save_figure(fig, os.path.join(workdir, "mean_error_vs_eps.png"))
    )
