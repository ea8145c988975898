"""Publication figures, one style; every function returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state; saving uses the Agg
machinery), so they work headless: ``fig.savefig("x.pdf")`` or ``save_figure`` (atomic, several
formats). The summary-level figures are drawn from the compact ``summarise`` dict, so a study is
plotted from its small result files alone:

- ``plot_summary(summary)`` / ``plot_all(result)``: every figure of one posterior;
- ``plot_comparison({label: summary})``: posteriors side by side (methods, hyper-parameters);
- ``plot_scan({label: result})``: the coverage and MAD panels of ``plot_comparison``;
- ``plot_losses({label: losses})``, ``plot_training_data(x, r_edges, phi_edges)``;
- ``plot_marginals({label: summary})``: generated vs reference marginals of every observable.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from bayesiamp_jax import data
from bayesiamp_jax.checkpoint import atomic_write_bytes
from bayesiamp_jax.evaluation.summary import key_cells, key_panel, summarise

STYLE = {
    "font.family": "serif",
    "mathtext.fontset": "dejavuserif",
    "font.size": 10,
    "axes.labelsize": 11,
    "axes.titlesize": 11,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "xtick.top": True,
    "ytick.right": True,
    "lines.linewidth": 1.4,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
}


@contextmanager
def _style():
    with matplotlib.rc_context(STYLE):
        yield


def _figure(ncols: int = 1, width: float = 3.6, height: float = 3.3, nrows: int = 1):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def radial_centers(r_edges, r_mean: float = data.DEFAULT_R_MEAN) -> np.ndarray:
    """Truth median of every radial bin (finite even for the open outer bins), (n_r,)."""
    cdf = data.radial_cdf(np.asarray(r_edges, float), r_mean)
    return data.radial_quantile(np.clip(0.5 * (cdf[:-1] + cdf[1:]), 0.0, 1.0), r_mean)


RADIAL_OBSERVABLES = (["r", "phi"], ["r", "cos_theta"])  # first value: the ring's radial law


def bin_centers(summary: Mapping, edges, r_mean: float = data.DEFAULT_R_MEAN) -> np.ndarray:
    """x positions of the bins of the first observable value: the truth medians for the ring
    and the shell (``radial_centers``), else edge midpoints (open outer bins: one neighbouring
    width beyond the last finite edge)."""
    if summary.get("observables", ["r", "phi"]) in RADIAL_OBSERVABLES:
        return radial_centers(edges, r_mean)
    e = np.asarray(edges, float)
    finite = e[np.isfinite(e)]
    width = np.diff(finite).mean() if finite.size > 1 else 1.0
    e = np.where(np.isneginf(e), finite[0] - width, np.where(np.isposinf(e), finite[-1] + width,
                                                             e))
    return 0.5 * (e[:-1] + e[1:])


def _first_name(summary: Mapping) -> str:
    return summary.get("observables", ["r"])[0]


def plot_training_data(x, r_edges=None, phi_edges=None, max_points: int = 20_000,
                       r_mean: float = data.DEFAULT_R_MEAN) -> Figure:
    """Training points (n, 2) with the quantile grid (circles at finite ``r_edges``, rays at
    ``phi_edges``), and their radial histogram against the truth density."""
    x = np.asarray(x, float)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got shape {x.shape}")
    with _style():
        fig, axes = _figure(2, width=3.5)
        ax, axr = axes[0]
        pts = x[: max(int(max_points), 1)]
        ax.scatter(pts[:, 0], pts[:, 1], s=0.5, alpha=0.4, color="C0", rasterized=True,
                   label=f"training data ({len(x):,})")
        lim = float(np.max(np.abs(pts))) * 1.05 if len(pts) else 1.0
        if r_edges is not None:
            angle = np.linspace(0, 2 * np.pi, 400)
            for re in np.asarray(r_edges, float):
                if np.isfinite(re) and re > 0:
                    ax.plot(re * np.cos(angle), re * np.sin(angle), color="k", lw=0.4,
                            alpha=0.7)
        if phi_edges is not None:
            for pe in np.asarray(phi_edges, float):
                ax.plot([0, lim * np.cos(pe)], [0, lim * np.sin(pe)], color="k", lw=0.4,
                        alpha=0.7)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="$x_1$", ylabel="$x_2$",
               aspect="equal")
        ax.legend(loc="upper right", markerscale=10)
        r = np.hypot(x[:, 0], x[:, 1])
        axr.hist(r, bins=80, density=True, histtype="step", color="C0", label="training data")
        grid = np.linspace(r_mean, max(r.max(), r_mean + 1e-3), 400)
        axr.plot(grid, np.exp(np.asarray(data.radial_log_density(grid, r_mean))), color="k",
                 ls="--", label="truth $p(r)$")
        axr.set(xlabel="$r$", ylabel="density")
        axr.legend()
    return fig


def plot_coverage_curves(levels, curves: Mapping[str, np.ndarray],
                         panel_labels: Sequence[str] = ("5×5", "10×10", "50×50"),
                         title: str | None = None) -> Figure:
    """Mean empirical coverage vs nominal level, one panel per binning (paper Fig. 2/3).

    ``curves``: hyper-parameter label -> array (P, L) (P panels, L levels).
    """
    lv = np.asarray(levels, float)
    num_panels = len(panel_labels)
    with _style():
        fig, axes = _figure(num_panels, width=3.0, height=3.1)
        for p, ax in enumerate(axes[0]):
            ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="calibrated")
            for i, (label, arr) in enumerate(curves.items()):
                arr = np.asarray(arr, float)
                if arr.shape != (num_panels, lv.size):
                    raise ValueError(f"curves[{label!r}] must have shape ({num_panels}, "
                                     f"{lv.size}) (panels, levels), got {arr.shape}")
                ax.plot(lv, arr[p], color=f"C{i}", label=str(label))
            ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title=panel_labels[p],
                   xlabel="nominal coverage")
            if p == 0:
                ax.set_ylabel("mean empirical coverage")
        axes[0][-1].legend(loc="lower right")
        if title:
            fig.suptitle(title)
    return fig


def plot_mad(n_cells, mad, mad_r, mad_phi, labels: Sequence[str] | None = None) -> Figure:
    """MAD (solid), MAD_r (dashed), MAD_φ (dotted) vs n_Q; arrays (B,) or (H, B)."""
    n = np.asarray(n_cells, float)
    series = [np.atleast_2d(np.asarray(a, float)) for a in (mad, mad_r, mad_phi)]
    labels = list(labels) if labels is not None else [None] * series[0].shape[0]
    with _style():
        fig, axes = _figure()
        ax = axes[0][0]
        for i, label in enumerate(labels):
            for arr, ls, name in zip(series, ("-", "--", ":"), ("MAD", "MAD$_r$", "MAD$_\\phi$"),
                                     strict=True):
                ax.plot(n, arr[i], ls=ls, marker="o", ms=3, color=f"C{i}",
                        label=name if label is None else f"{label}, {name}")
        ax.set(xscale="log", xlabel="number of cells $n_Q$", ylabel="mean absolute deviation",
               ylim=(0, None))
        ax.legend()
    return fig


def plot_trend(rows: Sequence[Mapping], panels: Mapping[str, str | tuple], xlabel: str = "$d$",
               log_y: Sequence[str] = ()) -> Figure:
    """Quantities against a study parameter, one panel per entry of ``panels`` (ylabel ->
    row key, or (key, dashed_key) for a second, dashed series such as the MAD floor or the
    corrected amplification), one colour per method label; rows as ``trend.trend_rows``."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    with _style():
        fig, axes = _figure(ncols=len(panels), width=3.2)
        for ax, (ylabel, keys) in zip(axes[0], panels.items(), strict=True):
            keys = (keys,) if isinstance(keys, str) else tuple(keys)
            for i, label in enumerate(labels):
                mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["x"])
                x = [r["x"] for r in mine]
                for key, ls in zip(keys, ("-", "--"), strict=False):
                    ax.plot(x, [r[key] for r in mine], ls=ls, marker="o", ms=3, color=f"C{i}",
                            label=label if ls == "-" else None)
            ax.set(xlabel=xlabel, ylabel=ylabel, yscale="log" if ylabel in log_y else "linear")
        axes[0][0].legend(fontsize=7)
    return fig


def plot_coverage_deviation(r_centers, deviation: Mapping[str, np.ndarray] | np.ndarray,
                            r_mean: float | None = data.DEFAULT_R_MEAN,
                            observable: str = "r") -> Figure:
    """Signed coverage deviation per bin of the first observable value (the ring: r) vs its
    bin centre (> 0: over-covering); a vertical line at ``r_mean`` unless it is None."""
    rc = np.asarray(r_centers, float)
    dev = deviation if isinstance(deviation, Mapping) else {None: deviation}
    with _style():
        fig, axes = _figure(width=4.2)
        ax = axes[0][0]
        ax.axhline(0.0, color="0.5", ls="--", lw=1)
        if r_mean is not None and observable == "r":
            ax.axvline(r_mean, color="0.7", lw=0.8)
        for i, (label, d) in enumerate(dev.items()):
            ax.plot(rc, np.asarray(d, float), color=f"C{i}", marker=".", ms=2, lw=1,
                    label=label)
        xlabel = ("$r$ (truth median of the radial bin)" if observable == "r" else
                  f"{observable} (bin centre)")
        ax.set(xlabel=xlabel,
               ylabel=(r"$\langle \bar c_r(c) - c \rangle_c$" if observable == "r" else
                       f"coverage deviation per {observable} bin"))
        if any(label is not None for label in dev):
            ax.legend()
    return fig


def _fit_parts(fit):
    """(a, b, a_err, b_err) of a ``PowerLawFit`` or a summary's fit dict; None without a fit."""
    if fit is None:
        return None
    get = (lambda k: fit[k]) if isinstance(fit, Mapping) else (lambda k: getattr(fit, k))
    parts = tuple(float(np.asarray(get(k))) for k in ("a", "b", "a_err", "b_err"))
    return parts if np.isfinite(parts[0]) and np.isfinite(parts[1]) else None


def plot_amplification(n_cells, amplification, fit=None, cell_profile=None, r_centers=None,
                       cell_label: str = "") -> Figure:
    """Amplification vs n_Q per run (points), mean ± std over runs, power-law fit (a
    ``PowerLawFit`` or dict with a, b, a_err, b_err); optional right panel: the run-mean
    per-cell amplification over φ per radial bin, ``cell_profile`` = {"mean": (n_r,),
    "quantiles": (3, n_r) 16/50/84 %} (as in ``summarise``)."""
    n = np.asarray(n_cells, float)
    amp = np.atleast_2d(np.asarray(amplification, float))
    ncols = 1 if cell_profile is None else 2
    with _style():
        fig, axes = _figure(ncols, width=3.8)
        ax = axes[0][0]
        for run in amp:
            ax.plot(n, run, ls="none", marker=".", color="C0", alpha=0.35)
        ax.errorbar(n, amp.mean(0), yerr=amp.std(0) if len(amp) > 1 else None, color="C0",
                    marker="o", ms=3, capsize=2, label=f"mean of {len(amp)} run(s)")
        parts = _fit_parts(fit)
        if parts is not None:
            a, b, a_err, b_err = parts
            grid = np.geomspace(n.min(), n.max(), 100)
            ax.plot(grid, a * grid**b, color="C3",
                    label=f"fit $a n_Q^b$: $a={a:.2g} \\pm {a_err:.1g}$, "
                          f"$b={b:.3f} \\pm {b_err:.3f}$")
        ax.axhline(1.0, color="0.5", ls="--", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="number of cells $n_Q$",
               ylabel=r"amplification $N_\mathrm{eq}/N_\mathrm{train}$")
        ax.legend(loc="lower right")
        if cell_profile is not None:
            mean = np.asarray(cell_profile["mean"], float)
            lo, mid, hi = np.asarray(cell_profile["quantiles"], float)
            x = np.arange(mean.size) if r_centers is None else np.asarray(r_centers, float)
            axc = axes[0][1]
            axc.fill_between(x, lo, hi, color="C1", alpha=0.3, lw=0, label="16–84 % over $\\phi$")
            axc.plot(x, mean, color="C1", label="mean over $\\phi$")
            axc.plot(x, mid, color="C1", ls=":", label="median over $\\phi$")
            axc.axhline(1.0, color="0.5", ls="--", lw=1)
            axc.set(yscale="log", xlabel="$r$" if r_centers is not None else "radial bin",
                    ylabel="per-cell amplification", title=cell_label)
            axc.legend()
    return fig


def plot_closure(n_cells, jsd_model, truth_quantiles) -> Figure:
    """JSD to the truth vs n_Q: posterior-mean histogram (R, B) against truth samples of size
    N_eq, given by their 16/50/84 % quantiles (B, 3): they agree when N_eq is right."""
    n = np.asarray(n_cells, float)
    jm = np.atleast_2d(np.asarray(jsd_model, float))
    lo, med, hi = np.asarray(truth_quantiles, float).reshape(n.size, 3).T
    with _style():
        fig, axes = _figure(width=4.0)
        ax = axes[0][0]
        ax.errorbar(n, jm.mean(0), yerr=jm.std(0) if len(jm) > 1 else None, color="C0",
                    marker="o", ms=3, capsize=2, label="posterior mean")
        ax.fill_between(n, lo, hi, color="C2", alpha=0.3, lw=0)
        ax.plot(n, med, color="C2", label="truth sample of size $N_\\mathrm{eq}$")
        ax.set(xscale="log", yscale="log", xlabel="number of cells $n_Q$",
               ylabel="Jensen–Shannon divergence to truth")
        ax.legend()
    return fig


def _ordered(d: Mapping) -> list[str]:
    """Keys of a per-binning summary dict sorted by number of cells."""
    return sorted(d, key=key_cells)




def plot_summary(summary: Mapping, name: str = "posterior",
                 r_mean: float = data.DEFAULT_R_MEAN) -> dict:
    """Every figure of one posterior from its ``summarise`` dict: name -> Figure.

    "coverage" (one panel per same-noise binning), "mad_scaled", "mad_same_noise",
    "coverage_deviation", "amplification" (with the per-cell panel) and "closure"; figures whose
    numbers are absent are left out.
    """
    figs = {}
    cov = summary.get("coverage") or {}
    if cov:
        keys = _ordered(cov)
        curves = np.stack([cov[k]["empirical"] for k in keys])
        figs["coverage"] = plot_coverage_curves(cov[keys[0]]["nominal"], {name: curves},
                                                [key_panel(k) for k in keys])
    scaled = summary.get("mad_scaled") or {}
    for set_name, src in (("scaled", {k: scaled[k] for k in _ordered(scaled)}),
                          ("same_noise", {k: {"mad": summary["mad"][k],
                                              "mad_r": summary["mad_r"][k],
                                              "mad_phi": summary["mad_phi"][k]}
                                          for k in _ordered(summary.get("mad") or {})})):
        if src:
            figs[f"mad_{set_name}"] = plot_mad(
                [key_cells(k) for k in src], *[[v[f] for v in src.values()]
                                                for f in ("mad", "mad_r", "mad_phi")], [name])
    dev = summary.get("deviation_r") or {}
    if dev:
        figs["coverage_deviation"] = plot_coverage_deviation(
            bin_centers(summary, dev["r_edges"], r_mean),
            {f"{name}, {key_panel(str(dev['n']))}": dev["deviation"]}, r_mean,
            _first_name(summary))
    amp = summary.get("amplification") or {}
    if amp:
        keys = _ordered(amp)
        n = [key_cells(k) for k in keys]
        cell = summary.get("cell_amplification") or None
        figs["amplification"] = plot_amplification(
            n, np.asarray([amp[k] for k in keys], float).T, summary.get("fit"), cell,
            None if cell is None else bin_centers(summary, cell["r_edges"], r_mean),
            "" if cell is None else key_panel(str(cell["n"])))
        clo = summary["closure"]
        figs["closure"] = plot_closure(
            n, np.asarray([clo[k]["model_per_run"] for k in keys], float).T,
            [clo[k]["truth_quantiles"] for k in keys])
    return figs


def plot_all(result, train_x=None, train_grid: int = 10, deviation_label: str | None = None,
             cell_label: str | None = None, name: str = "posterior") -> dict:
    """Every figure of one ``EvaluationResult`` (``plot_summary`` of ``summarise(result)``, plus
    "training_data" when ``train_x`` is given): dict name -> Figure.

    deviation_label / cell_label pick the binnings of the coverage-deviation (same-noise) and
    per-cell-amplification (scaled) panels, e.g. "50x50" (defaults as in ``summarise``).
    """
    figs = {}
    if train_x is not None:
        e = data.quantile_edges(train_grid)
        figs["training_data"] = plot_training_data(train_x, e.r, e.phi)
    pick = lambda label: None if label is None else label.split("x")[0]
    figs |= plot_summary(summarise(result, pick(deviation_label), pick(cell_label)), name)
    return figs


def plot_comparison(summaries: Mapping[str, Mapping], references: Mapping | None = None,
                    r_mean: float = data.DEFAULT_R_MEAN) -> dict:
    """Posteriors side by side (one colour per label) from their ``summarise`` dicts.

    "coverage": one panel per same-noise binning, MAD in the legend; "mad": MAD (solid), MAD_r
    (dashed), MAD_φ (dotted) vs n_Q (scaled binnings, else same-noise); "deviation": coverage
    deviation per radial bin; "amplification": mean ± std/√R over runs with the power-law fits
    and, for labels in ``references`` (label -> (a, b), e.g. the paper's fits), the reference
    law dotted; "closure": posterior-mean JSD and the truth samples' mean ± std.
    """
    items = list(summaries.items())
    if not items:
        raise ValueError("summaries must hold at least one summary, got none")
    references = references or {}
    figs = {}
    panels = _ordered(items[0][1].get("coverage") or {})
    if panels:
        with _style():
            fig, axes = _figure(len(panels), width=3.0, height=3.1)
            for ax, key in zip(axes[0], panels, strict=True):
                ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="calibrated")
                for i, (label, s) in enumerate(items):
                    c = s["coverage"].get(key)
                    if c:
                        ax.plot(c["nominal"], c["empirical"], color=f"C{i}",
                                label=f"{label} (MAD {s['mad'][key]:.3f})")
                ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title=key_panel(key),
                       xlabel="nominal coverage")
                ax.legend(loc="upper left", fontsize=6)
            axes[0][0].set_ylabel("mean empirical coverage")
        figs["coverage"] = fig
    with _style():
        fig, axes = _figure(width=4.4)
        ax = axes[0][0]
        for i, (label, s) in enumerate(items):
            src = s.get("mad_scaled") or {k: {"mad": s["mad"][k], "mad_r": s["mad_r"][k],
                                              "mad_phi": s["mad_phi"][k]} for k in s["mad"]}
            keys = _ordered(src)
            n = [key_cells(k) for k in keys]
            for field, ls, tag in (("mad", "-", "MAD"), ("mad_r", "--", "MAD$_r$"),
                                   ("mad_phi", ":", "MAD$_\\phi$")):
                ax.plot(n, [src[k][field] for k in keys], ls=ls, marker="o", ms=3,
                        color=f"C{i}", label=f"{label}, {tag}")
        ax.set(xscale="log", xlabel="number of cells $n_Q$", ylabel="mean absolute deviation",
               ylim=(0, None))
        ax.legend(fontsize=6, ncol=2)
    figs["mad"] = fig
    if any(s.get("deviation_r") for _, s in items):
        dev = {f"{label}, {key_panel(str(s['deviation_r']['n']))}": s["deviation_r"]["deviation"]
               for label, s in items if s.get("deviation_r")}
        first = next(s["deviation_r"] for _, s in items if s.get("deviation_r"))
        s0 = next(s for _, s in items if s.get("deviation_r"))
        figs["deviation"] = plot_coverage_deviation(bin_centers(s0, first["r_edges"], r_mean),
                                                    dev, r_mean, _first_name(s0))
    figs["amplification"] = _amplification_comparison(items, references, "amplification", "fit")
    if all(s.get("amplification_corrected") for _, s in items):
        figs["amplification_corrected"] = _amplification_comparison(
            items, references, "amplification_corrected", "fit_corrected",
            ylabel=r"corrected amplification $N_\mathrm{eq}/N_\mathrm{train}$")
    with _style():
        fig, axes = _figure(width=4.4)
        ax = axes[0][0]
        for i, (label, s) in enumerate(items):
            keys = _ordered(s["closure"])
            n = [key_cells(k) for k in keys]
            clo = [s["closure"][k] for k in keys]
            ax.plot(n, [c["model"] for c in clo], marker="o", ms=3, color=f"C{i}",
                    label=f"{label}: posterior mean")
            ax.errorbar(n, [c["truth"] for c in clo], yerr=[c.get("truth_std", 0.0) for c in clo],
                        ls="--", marker="s", ms=3, capsize=2, color=f"C{i}", alpha=0.6,
                        label=f"{label}: truth sample of $N_\\mathrm{{eq}}$")
        ax.set(xscale="log", yscale="log", xlabel="number of cells $n_Q$",
               ylabel="Jensen–Shannon divergence to truth")
        ax.legend(fontsize=6)
    figs["closure"] = fig
    return figs


def _amplification_error(summary, amp_key, keys, amp):
    """(B,) error of the run mean of ``amp`` (B, R): the spread over runs, std/√R, and for the
    corrected amplification also each run's jackknife error (``n_eq_corrected_err``, scaled
    as amplification / N_eq) in quadrature: √(std²/R + mean(err²)/R); None without either."""
    runs = amp.shape[1]
    spread = amp.std(1, ddof=1) ** 2 / runs if runs > 1 else np.zeros(amp.shape[0])
    errs = (summary.get("n_eq_corrected_err") if amp_key == "amplification_corrected"
            else None) or {}
    n_eq = summary.get("n_eq_corrected") or {}
    if all(k in errs and k in n_eq for k in keys):
        e = np.array([[np.nan if v is None else v for v in errs[k]] for k in keys], float)
        q = np.array([[np.nan if v is None else v for v in n_eq[k]] for k in keys], float)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(q > 0, e / q, np.nan) * amp  # N_eq error in amplification units
        return np.sqrt(spread + np.nanmean(rel**2, axis=1) / runs)
    return np.sqrt(spread) if runs > 1 else None


def _amplification_comparison(items, references, amp_key, fit_key,
                              ylabel=r"amplification $N_\mathrm{eq}/N_\mathrm{train}$"):
    """Amplification ``amp_key`` (mean ± std/√R over runs) and power law ``fit_key`` vs n_Q,
    one colour per label, with the reference laws dotted."""
    with _style():
        fig, axes = _figure(width=4.4)
        ax = axes[0][0]
        for i, (label, s) in enumerate(items):
            keys = _ordered(s[amp_key])
            n = np.array([key_cells(k) for k in keys], float)
            amp = np.array([[np.nan if v is None else v for v in s[amp_key][k]] for k in keys],
                           float)  # (B, R)
            err = _amplification_error(s, amp_key, keys, amp)
            ax.errorbar(n, amp.mean(1), yerr=err, ls="none", marker="o", ms=3, capsize=2,
                        color=f"C{i}", label=label)
            grid = np.geomspace(n.min(), n.max(), 100)
            parts = _fit_parts(s.get(fit_key))
            if parts is not None:
                ax.plot(grid, parts[0] * grid ** parts[1], color=f"C{i}",
                        label=f"fit $a={parts[0]:.2g}$, $b={parts[1]:.2f} \\pm {parts[3]:.2f}$")
            if label in references:
                a, b = references[label]
                ax.plot(grid, a * grid**b, color=f"C{i}", ls=":", label=f"reference {label}")
        ax.axhline(1.0, color="0.5", ls="--", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="number of cells $n_Q$", ylabel=ylabel)
        ax.legend(fontsize=6)
    return fig


def plot_scan(results: Mapping) -> dict:
    """Figures comparing hyper-parameters (e.g. k or σ): label -> ``EvaluationResult``.

    "coverage" and "mad" of ``plot_comparison`` (coverage curves, one panel per same-noise
    binning; MAD, MAD_r, MAD_φ vs n_Q). All results must share their binnings.
    """
    items = list(results.items())
    if not items:
        raise ValueError("results must hold at least one EvaluationResult, got none")
    first = items[0][1]
    for name, res in (("same_noise", first.same_noise), ("scaled", first.scaled)):
        for label, other in items[1:]:
            if list(getattr(other, name)) != list(res):
                raise ValueError(f"results[{label!r}].{name} has binnings "
                                 f"{list(getattr(other, name))}, expected {list(res)}")
    figs = plot_comparison({label: summarise(r) for label, r in items})
    return {k: figs[k] for k in ("coverage", "mad") if k in figs}


def plot_losses(curves: Mapping[str, np.ndarray], xlabel: str = "epoch") -> Figure:
    """Training-loss curves (one panel per label, each on its own y scale: a chain's potential
    and a flow-matching loss differ by orders of magnitude) against epoch on a log axis."""
    with _style():
        n = max(len(curves), 1)
        fig, axes = _figure(ncols=n, width=3.2)
        for i, (label, y) in enumerate(curves.items()):
            ax = axes[0][i]
            y = np.asarray(y, float).reshape(-1)
            ax.plot(np.arange(1, y.size + 1), y, color="k" if i == 0 else f"C{i - 1}", lw=1)
            ax.set(xscale="log", xlabel=xlabel, title=label)
            if np.all(y[np.isfinite(y)] > 0) and np.ptp(y[np.isfinite(y)]) > 0 and \
                    np.nanmax(y) / np.nanmin(y) > 20:
                ax.set_yscale("log")
        axes[0][0].set_ylabel("training loss")
    return fig


def plot_holdout(summaries: Mapping[str, Mapping]) -> Figure:
    """Held-out pulls per label and binning (``summary["holdout"]``): the pull distribution of
    each calibration binning against N(0, 1) (the calibrated band: unit width), with the
    fitted width ± error and the verdict in the legend (a ``sparse`` binning, too few events
    per cell for Gaussian pulls, dotted and its verdict marked not used). Labels without a
    held-out check are left out; an empty figure when none has one."""
    items = [(label, s["holdout"]) for label, s in summaries.items() if s.get("holdout")]
    with _style():
        fig, axes = _figure(ncols=max(len(items), 1), width=3.6)
        z = np.linspace(-6, 6, 241)
        for ax, (label, ho) in zip(axes[0], items, strict=False):
            kind = "same_noise" if ho.get("same_noise") else "scaled"
            for i, key in enumerate(sorted(ho.get(kind) or {}, key=key_cells)):
                c = ho[kind][key]
                edges = np.asarray(c["pull_edges"], float)
                counts = np.asarray(c["pull_counts"], float)
                dens = counts / max(counts.sum(), 1.0) / np.diff(edges)
                width = c.get("width")
                tag = "–" if width is None else f"{width:.2f} ± {c.get('width_err') or 0:.2f}"
                verdict = ("sparse: verdict not used" if c.get("sparse")  # experiments.holdout
                           else c.get("verdict"))
                ax.stairs(dens, edges, color=f"C{i}", ls=":" if c.get("sparse") else "-",
                          label=f"{key_panel(key)}: width {tag}, {verdict}")
            ax.fill_between(z, 0, np.exp(-z**2 / 2) / np.sqrt(2 * np.pi), color="0.85",
                            label="calibrated: N(0, 1)", zorder=0)
            ax.set(xlabel="held-out pull (μ − h)/σ", title=label, xlim=(-6, 6))
            ax.legend(fontsize=6)
        axes[0][0].set_ylabel("density")
    return fig


def plot_marginals(summaries: Mapping[str, Mapping]) -> Figure:
    """Generated vs reference marginals of every observable value (``summary["marginals"]``
    of ``experiments.marginals``): one column per value; top: the posterior band (16–84 % over
    draws, median line) of each label against the reference (truth stand-in, grey) and the
    held-out events (points with binomial errors); middle: held-out / posterior median with
    the band's ratio; bottom: per-bin pulls (h − median) / √(σ_post² + σ_h²) with the ±1 band.
    Labels without marginals are left out; an empty figure when none has them."""
    items = [(label, s["marginals"]) for label, s in summaries.items() if s.get("marginals")]
    names = items[0][1]["names"] if items else []
    with _style():
        fig = Figure(figsize=(3.8 * max(len(names), 1), 5.6), layout="constrained")
        axes = fig.subplots(3, max(len(names), 1), squeeze=False, sharex="col",
                            gridspec_kw={"height_ratios": (3, 1.2, 1.2)})
        for j, name in enumerate(names):
            top, mid_ax, pull_ax = axes[0][j], axes[1][j], axes[2][j]
            edges = np.asarray(items[0][1]["edges"][j], float)
            centers, width = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
            m0 = items[0][1]
            top.stairs(np.asarray(m0["reference"][j], float) / width, edges, color="0.5",
                       lw=1.2, label=f"reference ({m0.get('num_reference', '?')})")
            held = m0.get("holdout")
            if held is not None:
                h = np.asarray(held[j], float)
                he = np.asarray(m0["holdout_err"][j], float)
                top.errorbar(centers, h / width, yerr=he / width, ls="none", marker="o", ms=2,
                             color="k", zorder=5, label=f"held-out ({m0['num_holdout']})")
            for i, (label, m) in enumerate(items):
                lo, med, hi = (np.asarray(b, float) for b in m["band"][j])
                top.stairs(hi / width, edges, baseline=lo / width, fill=True, color=f"C{i}",
                           alpha=0.35, lw=0)
                top.stairs(med / width, edges, color=f"C{i}",
                           label=f"{label} ({m['num_draws']} draws)")
                with np.errstate(divide="ignore", invalid="ignore"):
                    mid_ax.stairs(hi / med, edges, baseline=lo / med, fill=True,
                                  color=f"C{i}", alpha=0.35, lw=0)
                    if m.get("holdout") is not None:
                        h = np.asarray(m["holdout"][j], float)
                        he = np.asarray(m["holdout_err"][j], float)
                        mid_ax.errorbar(centers, h / med, yerr=he / med, ls="none", marker="o",
                                        ms=2, color=f"C{i}")
                if m.get("pulls") is not None:
                    p = np.array([np.nan if v is None else v for v in m["pulls"][j]], float)
                    w = m["pull_width"][j]
                    pull_ax.plot(centers, p, ls="none", marker="o", ms=2, color=f"C{i}",
                                 label="width –" if w is None else f"width {w:.2f}")
            mid_ax.axhline(1.0, color="0.5", lw=1)
            mid_ax.set(ylabel="held-out / median", ylim=(0.5, 1.5))
            pull_ax.axhspan(-1, 1, color="0.9", zorder=0)
            pull_ax.axhline(0.0, color="0.5", lw=1)
            pull_ax.set(xlabel=name, ylabel="pull", ylim=(-5, 5))
            if items[0][1].get("pulls") is not None:
                pull_ax.legend(fontsize=6, loc="upper right")
            top.set(ylabel="density", ylim=(0, None))
            top.legend(fontsize=6)
    return fig


def save_figure(fig: Figure, stem: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 200) -> list[Path]:
    """Write ``fig`` as ``stem.<fmt>`` for every format (atomically); the written paths."""
    out = []
    for fmt in formats:
        buf = io.BytesIO()
        with _style():
            fig.savefig(buf, format=fmt, dpi=dpi)
        out.append(atomic_write_bytes(Path(f"{stem}.{fmt}"), buf.getvalue()))
    return out
