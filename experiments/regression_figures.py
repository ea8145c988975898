"""Figures of the regression study, in the style of ``bayesiamp_jax.evaluation.figures``.

Every function returns a matplotlib ``Figure`` (no pyplot state; save with
``evaluation.figures.save_figure``). They read the ``evaluate_predictions`` entries of
``experiments.regression_report``: ``results[m][N]`` at the default settings, ``rule[m][N]``
under the bootstrap rule (empty: not fitted; the figures then show the defaults), and the replica
means ``truths[N]["grid"|"test"]`` (K, n). ``plot_study`` draws them all.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import matplotlib
import matplotlib.ticker
import numpy as np
import scipy.stats
from matplotlib.figure import Figure

from bayesiamp_jax.evaluation.figures import STYLE
from bayesiamp_jax.regression.diagnostics import DEFAULT_LEVELS
from bayesiamp_jax.regression.replicas import replica_truth
from bayesiamp_jax.regression.toy import ResponseToy
from experiments.regression_report import LABELS, METHODS, EvaluationSets, poor_region

COLORS = {"vi": "C0", "repulsive": "C3"}


def _styled(plot):
    """Draw ``plot`` under the evaluation figures' ``STYLE``."""

    @functools.wraps(plot)
    def styled(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return plot(*args, **kwargs)

    return styled


def _figure(figsize, nrows: int = 1, ncols: int = 1, **kwargs):
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _chosen(results: Mapping, rule: Mapping) -> tuple[Mapping, str]:
    return (rule, "rule") if rule["vi"] else (results, "default")


def _log_sizes(ax, sizes) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training-set size N")


@_styled
def plot_prediction(toy: ResponseToy, sets: EvaluationSets, results, rule, truths) -> Figure:
    """Prediction ± σ_total, σ_stat against its replica truth, and their ratio vs E at the
    largest N."""
    largest = list(truths)[-1]
    chosen, tag = _chosen(results, rule)
    grid = np.asarray(sets.grid[:, 0])
    tgrid = replica_truth(truths[largest]["grid"])
    fig, axes = _figure((6.4, 8.4), 3, 1, sharex=True,
                        gridspec_kw={"height_ratios": [1.2, 1.2, 0.8]})
    axes[0].plot(grid, np.asarray(toy.mean(grid)), "k-", lw=1, label="truth μ(E)")
    axes[1].plot(grid, tgrid.spread, "k-", lw=1.5, label="σ_stat truth (replicas)")
    axes[1].fill_between(grid, tgrid.spread - tgrid.spread_err, tgrid.spread + tgrid.spread_err,
                         color="k", alpha=0.15, lw=0)
    axes[1].plot(grid, np.asarray(toy.std(grid)), "k:", lw=1, label="true noise σ(E)")
    for m in METHODS:
        g = chosen[m][largest]["grid"]
        mean, tot = np.asarray(g["mean"]), np.asarray(g["total"])
        default_stat = np.asarray(results[m][largest]["grid"]["stat"])
        axes[0].plot(grid, mean, color=COLORS[m], label=f"{LABELS[m]} ({tag})")
        axes[0].fill_between(grid, mean - tot, mean + tot, color=COLORS[m], alpha=0.2, lw=0)
        axes[1].plot(grid, g["stat"], color=COLORS[m], label=f"σ_stat {m} ({tag})")
        axes[1].plot(grid, g["syst"], color=COLORS[m], ls=":", lw=1, label=f"σ_syst {m}")
        axes[1].plot(grid, default_stat, color=COLORS[m], ls="--", lw=0.8,
                     label=f"σ_stat {m} (default)")
        axes[2].plot(grid, np.asarray(g["stat"]) / tgrid.spread, color=COLORS[m],
                     label=f"{m} ({tag})")
        axes[2].plot(grid, default_stat / tgrid.spread, color=COLORS[m], ls="--", lw=0.8,
                     label=f"{m} (default)")
    for ax in axes:
        if toy.has_gap:
            ax.axvspan(toy.gap_lo, toy.gap_hi, color="0.9", lw=0)
        ax.axvspan(toy.e_max, grid[-1], color="0.95", lw=0)
    axes[2].axhspan(0.7, 1.3, color="g", alpha=0.1, lw=0)
    axes[2].axhline(1, color="k", lw=0.8)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("E (grey: crack and no training data)")
    axes[0].set_ylabel("response")
    axes[1].set_ylabel("uncertainty")
    axes[2].set_ylabel("σ_stat / truth")
    axes[0].set_title(f"N = {largest}; band: ±σ_total")
    for ax in axes:
        ax.legend(fontsize=6, ncol=2)
    return fig


@_styled
def plot_stat_ratio_vs_size(results, rule) -> Figure:
    """σ_stat / replica truth (median, 16–84 % of inputs) against N, default and rule."""
    sizes = list(results["vi"])
    fig, ax = _figure((5.6, 4.0))
    for i, m in enumerate(METHODS):
        for variants, ls, lab in ((results, "--", "default"), (rule, "-", "rule")):
            if not variants[m]:
                continue
            q = [variants[m][n]["stat_ratio"] for n in sizes]
            x = np.asarray(sizes) * (1 + 0.03 * (2 * i - 1))
            med = np.array([v["median"] for v in q])
            ax.errorbar(x, med, yerr=[med - [v["q16"] for v in q], [v["q84"] for v in q] - med],
                        fmt="o" + ls, color=COLORS[m], capsize=3, label=f"{LABELS[m]} ({lab})",
                        alpha=1.0 if lab == "rule" else 0.6)
    ax.axhspan(0.7, 1.3, color="g", alpha=0.1, lw=0, label="±30 %")
    ax.axhline(1, color="k", lw=0.8)
    _log_sizes(ax, sizes)
    ax.set_ylabel("σ_stat / replica truth (median, 16–84 % of inputs)")
    ax.legend(fontsize=7)
    return fig


@_styled
def plot_uncertainty_vs_size(sets: EvaluationSets, results, rule, truths) -> Figure:
    """Median σ_stat and σ_syst over test inputs (16–84 %) against N, with the replica truth
    and the true noise."""
    sizes = list(truths)
    chosen, tag = _chosen(results, rule)
    fig, ax = _figure((5.6, 4.2))
    for m in METHODS:
        for key, mk, ls, lab in (("_test_stat", "o", "--", "σ_stat"),
                                 ("_test_syst", "s", "-", "σ_syst")):
            v = [chosen[m][n][key] for n in sizes]
            med = np.array([np.median(a) for a in v])
            ax.errorbar(sizes, med, yerr=[med - [np.quantile(a, 0.16) for a in v],
                                          [np.quantile(a, 0.84) for a in v] - med],
                        fmt=mk + ls, color=COLORS[m], capsize=3, label=f"{lab} {LABELS[m]}")
    tr = [replica_truth(truths[n]["test"]).spread for n in sizes]
    ax.plot(sizes, [np.median(t) for t in tr], "k^-", label="σ_stat truth (replicas)")
    ax.axhline(np.median(sets.sd), color="k", lw=1, ls=":", label="true noise (median)")
    _log_sizes(ax, sizes)
    ax.set_ylabel(f"median over test inputs, 16–84 % ({tag})")
    ax.legend(fontsize=6)
    return fig


@_styled
def plot_pulls(results, rule) -> Figure:
    """Total pulls at the largest N with their Gaussian fits, uncalibrated and recalibrated."""
    largest = list(results["vi"])[-1]
    chosen, tag = _chosen(results, rule)
    fig, axes = _figure((9, 3.6), 1, 2, sharey=True)
    bins = np.linspace(-5, 5, 61)
    xs = np.linspace(-5, 5, 200)
    for ax, key, fit_key, title in (
            (axes[0], "_pulls", "pull_total_fit", f"(y − mean)/σ_total, uncalibrated ({tag})"),
            (axes[1], "_recal_pulls", "pull_total_recalibrated_fit",
             "recalibrated on held-out pulls")):
        for m in METHODS:
            r = chosen[m][largest]
            f = r[fit_key]
            ax.hist(np.clip(r[key], -5, 5), bins, density=True, histtype="step",
                    color=COLORS[m], label=f"{m}: fit μ {f['mean']:+.2f}, w {f['width']:.2f}")
            ax.plot(xs, scipy.stats.norm.pdf(xs, f["mean"], f["width"]), color=COLORS[m],
                    ls="--", lw=0.8)
        ax.plot(xs, scipy.stats.norm.pdf(xs), "k-", lw=1, label="N(0, 1)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"N = {largest}")
    return fig


@_styled
def plot_coverage(results, rule) -> Figure:
    """Empirical against nominal coverage of the predictive intervals, every N."""
    sizes = list(results["vi"])
    chosen, tag = _chosen(results, rule)
    fig, ax = _figure((4.4, 4.2))
    for m in METHODS:
        for i, n in enumerate(sizes):
            ax.plot(DEFAULT_LEVELS, chosen[m][n]["coverage"], color=COLORS[m],
                    alpha=0.35 + 0.65 * (i + 1) / len(sizes), label=f"{m} N={n}")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel(f"empirical coverage ({tag})")
    ax.legend(fontsize=6)
    return fig


@_styled
def plot_bnn_vs_re(sets: EvaluationSets, results, rule, truths, flag_factor: float) -> Figure:
    """σ_total and σ_stat per test input (4,000 of them), Bayesian NN against the ensemble, the
    poorly informed region marked."""
    largest = list(truths)[-1]
    chosen, tag = _chosen(results, rule)
    fig, axes = _figure((9, 4.2), 1, 2)
    a, b = chosen["vi"][largest], chosen["repulsive"][largest]
    sel = np.random.default_rng(0).permutation(a["_test_total"].size)[:4000]
    poor = poor_region(replica_truth(truths[largest]["test"]), sets, flag_factor)[sel]
    for ax, key, title in ((axes[0], "_test_total", "σ_total"), (axes[1], "_test_stat",
                                                                  "σ_stat")):
        x, y = b[key][sel], a[key][sel]
        ax.scatter(x[~poor], y[~poor], s=2, alpha=0.4, color="0.3", label="inputs")
        ax.scatter(x[poor], y[poor], s=4, alpha=0.6, color="C1", label="poorly informed region")
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{title}, repulsive ensemble")
        ax.set_ylabel(f"{title}, Bayesian NN")
        ax.set_title(f"{title}: median BNN/RE {np.median(a[key] / b[key]):.2f} "
                     f"(N = {largest}, {tag})", fontsize=9)
        ax.legend(fontsize=7)
    return fig


@_styled
def plot_uncertainty_spectrum(sets: EvaluationSets, results, rule, truths,
                              flag_factor: float) -> Figure:
    """Histograms of σ_stat/σ_true (replica truth) and σ_stat/σ_syst (each method) at the
    largest N, with the poorly informed region and each flag's cut."""
    largest = list(truths)[-1]
    chosen, tag = _chosen(results, rule)
    truth = replica_truth(truths[largest]["test"])
    poor = poor_region(truth, sets, flag_factor)
    rel_truth = truth.spread / sets.sd
    fig, axes = _figure((13, 3.8), 1, 3, sharey=True)
    panels = [("replica truth (σ_stat truth / σ_true)", rel_truth, "k",
               flag_factor * np.median(rel_truth), None)]
    panels += [(f"{LABELS[m]} ({tag})", chosen[m][largest]["_rel"], COLORS[m],
                chosen[m][largest]["flag"]["threshold"], chosen[m][largest]["flag"])
               for m in METHODS]
    for ax, (title, rel, color, threshold, fl) in zip(axes, panels, strict=True):
        edges = np.geomspace(rel.min(), rel.max(), 50)
        ax.hist(rel, edges, histtype="step", color=color, label="all test inputs")
        ax.hist(rel[poor], edges, histtype="stepfilled", color="C1", alpha=0.4,
                label="poorly informed region")
        label = "region cut" if fl is None else (
            f"flag: {100 * fl['fraction_flagged']:.1f} % flagged,\n"
            f"{100 * (fl['fraction_of_flagged_in_poor_region'] or 0):.0f} % of them in the region")
        ax.axvline(threshold, color=color, ls="--", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("σ_stat / σ_syst" if fl is not None else "σ_stat / σ_true")
        ax.set_title(f"{title}, N = {largest}", fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("test inputs")
    return fig


def plot_study(toy: ResponseToy, sets: EvaluationSets, results, rule, truths,
               flag_factor: float) -> dict[str, Figure]:
    """Every figure of the study, name -> ``Figure`` (the names the report lists)."""
    return {
        "prediction_vs_input": plot_prediction(toy, sets, results, rule, truths),
        "stat_ratio_vs_size": plot_stat_ratio_vs_size(results, rule),
        "uncertainty_vs_size": plot_uncertainty_vs_size(sets, results, rule, truths),
        "pulls": plot_pulls(results, rule),
        "coverage": plot_coverage(results, rule),
        "bnn_vs_re_scatter": plot_bnn_vs_re(sets, results, rule, truths, flag_factor),
        "uncertainty_spectrum": plot_uncertainty_spectrum(sets, results, rule, truths,
                                                          flag_factor),
    }
