"""Publication figures from computed arrays; every function returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state; saving uses the Agg
machinery), so they work headless: ``fig.savefig("x.pdf")``. ``plot_all`` draws every figure of
one ``EvaluationResult``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from bayesiamp_jax import data

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


def plot_coverage_deviation(r_centers, deviation: Mapping[str, np.ndarray] | np.ndarray,
                            r_mean: float = data.DEFAULT_R_MEAN) -> Figure:
    """Signed coverage deviation per radial bin vs r (> 0: over-covering)."""
    rc = np.asarray(r_centers, float)
    dev = deviation if isinstance(deviation, Mapping) else {None: deviation}
    with _style():
        fig, axes = _figure(width=4.2)
        ax = axes[0][0]
        ax.axhline(0.0, color="0.5", ls="--", lw=1)
        ax.axvline(r_mean, color="0.7", lw=0.8)
        for i, (label, d) in enumerate(dev.items()):
            ax.plot(rc, np.asarray(d, float), color=f"C{i}", marker=".", ms=2, lw=1,
                    label=label)
        ax.set(xlabel="$r$ (truth median of the radial bin)",
               ylabel=r"$\langle \bar c_r(c) - c \rangle_c$")
        if any(label is not None for label in dev):
            ax.legend()
    return fig


def plot_amplification(n_cells, amplification, fit=None, cell_amplification=None,
                       r_centers=None, cell_label: str = "") -> Figure:
    """Amplification vs n_Q per run (points), mean ± std, power-law fit; optional right panel:
    per-cell amplification (n_r, n_φ) averaged over φ vs r, with its 16–84 % band over φ."""
    n = np.asarray(n_cells, float)
    amp = np.atleast_2d(np.asarray(amplification, float))
    ncols = 1 if cell_amplification is None else 2
    with _style():
        fig, axes = _figure(ncols, width=3.8)
        ax = axes[0][0]
        for run in amp:
            ax.plot(n, run, ls="none", marker=".", color="C0", alpha=0.35)
        ax.errorbar(n, amp.mean(0), yerr=amp.std(0) if len(amp) > 1 else None, color="C0",
                    marker="o", ms=3, capsize=2, label=f"mean of {len(amp)} run(s)")
        if fit is not None:
            grid = np.geomspace(n.min(), n.max(), 100)
            ax.plot(grid, fit.a * grid**fit.b, color="C3",
                    label=(f"fit $a n_Q^b$: $a={fit.a:.2g}\\pm{fit.a_err:.1g}$, "
                           f"$b={fit.b:.3f}\\pm{fit.b_err:.3f}$"))
        ax.axhline(1.0, color="0.5", ls="--", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="number of cells $n_Q$",
               ylabel=r"amplification $N_\mathrm{eq}/N_\mathrm{train}$")
        ax.legend(loc="lower right")
        if cell_amplification is not None:
            cell = np.asarray(cell_amplification, float)
            x = np.arange(cell.shape[0]) if r_centers is None else np.asarray(r_centers, float)
            axc = axes[0][1]
            lo, mid, hi = np.nanpercentile(np.where(np.isfinite(cell), cell, np.nan),
                                           [16, 50, 84], axis=1)
            axc.fill_between(x, lo, hi, color="C1", alpha=0.3, lw=0, label="16–84 % over $\\phi$")
            axc.plot(x, np.nanmean(np.where(np.isfinite(cell), cell, np.nan), axis=1),
                     color="C1", label="mean over $\\phi$")
            axc.plot(x, mid, color="C1", ls=":", label="median over $\\phi$")
            axc.axhline(1.0, color="0.5", ls="--", lw=1)
            axc.set(yscale="log", xlabel="$r$" if r_centers is not None else "radial bin",
                    ylabel="per-cell amplification", title=cell_label)
            axc.legend()
    return fig


def plot_closure(n_cells, jsd_model, jsd_truth) -> Figure:
    """JSD to the truth vs n_Q: posterior-mean histogram (R, B) against truth samples of size
    N_eq (R, B, K): they agree when N_eq is right."""
    n = np.asarray(n_cells, float)
    jm = np.atleast_2d(np.asarray(jsd_model, float))
    jt = np.asarray(jsd_truth, float)
    jt = jt.reshape(jm.shape + (-1,))
    with _style():
        fig, axes = _figure(width=4.0)
        ax = axes[0][0]
        ax.errorbar(n, jm.mean(0), yerr=jm.std(0) if len(jm) > 1 else None, color="C0",
                    marker="o", ms=3, capsize=2, label="posterior mean")
        flat = np.moveaxis(jt, 1, 0).reshape(n.size, -1)
        lo, med, hi = np.nanpercentile(flat, [16, 50, 84], axis=1)
        ax.fill_between(n, lo, hi, color="C2", alpha=0.3, lw=0)
        ax.plot(n, med, color="C2", label="truth sample of size $N_\\mathrm{eq}$")
        ax.set(xscale="log", yscale="log", xlabel="number of cells $n_Q$",
               ylabel="Jensen–Shannon divergence to truth")
        ax.legend()
    return fig


def plot_all(result, train_x=None, train_grid: int = 10, deviation_label: str | None = None,
             cell_label: str | None = None, name: str = "posterior") -> dict:
    """Every figure of one ``EvaluationResult``: dict name -> Figure.

    deviation_label / cell_label pick the scaled binning of the coverage-deviation and
    per-cell-amplification panels (default: 200x200 if present, else the largest).
    """
    figs = {}
    if train_x is not None:
        e = data.quantile_edges(train_grid)
        figs["training_data"] = plot_training_data(train_x, e.r, e.phi)
    same = result.same_noise
    if same:
        first = next(iter(same.values()))
        curves = np.stack([r.calibration.curve for r in same.values()])
        figs["coverage"] = plot_coverage_curves(first.calibration.levels, {name: curves},
                                                [k.replace("x", "×") for k in same])
    for set_name, res in (("scaled", result.scaled), ("same_noise", same)):
        if not res:
            continue
        n = [r.shape[0] * r.shape[1] for r in res.values()]
        cal = [r.calibration for r in res.values()]
        figs[f"mad_{set_name}"] = plot_mad(n, [c.mad for c in cal], [c.mad_r for c in cal],
                                           [c.mad_phi for c in cal], [name])
    scaled = result.scaled
    if scaled:
        labels = list(scaled)
        pick = lambda want: want if want in scaled else ("200x200" if "200x200" in scaled
                                                         else labels[-1])
        dl, cl = pick(deviation_label), pick(cell_label)
        rd = scaled[dl]
        figs["coverage_deviation"] = plot_coverage_deviation(
            radial_centers(rd.r_edges), {f"{name}, {dl}": rd.calibration.deviation_r})
        n = [r.shape[0] * r.shape[1] for r in scaled.values()]
        amps = np.stack([r.amplification.amplification for r in scaled.values()], axis=1)
        rc = scaled[cl]
        figs["amplification"] = plot_amplification(
            n, amps, result.fit, rc.amplification.cell_amplification.mean(axis=0),
            radial_centers(rc.r_edges), cl)
        figs["closure"] = plot_closure(
            n, np.stack([r.closure.jsd_model for r in scaled.values()], axis=1),
            np.stack([r.closure.jsd_truth for r in scaled.values()], axis=1))
    return figs


def plot_scan(results: Mapping) -> dict:
    """Figures comparing hyper-parameters (e.g. k or σ): label -> ``EvaluationResult``.

    "coverage": coverage curves, one panel per same-noise binning (paper Fig. 2/3);
    "mad": MAD, MAD_r, MAD_φ vs n_Q of the scaled binnings, one colour per label.
    All results must share their binnings.
    """
    figs = {}
    items = list(results.items())
    if not items:
        raise ValueError("results must hold at least one EvaluationResult, got none")
    first = items[0][1]
    for name, res in (("same_noise", first.same_noise), ("scaled", first.scaled)):
        for label, other in items[1:]:
            if list(getattr(other, name)) != list(res):
                raise ValueError(f"results[{label!r}].{name} has binnings "
                                 f"{list(getattr(other, name))}, expected {list(res)}")
    if first.same_noise:
        levels = next(iter(first.same_noise.values())).calibration.levels
        curves = {label: np.stack([b.calibration.curve for b in r.same_noise.values()])
                  for label, r in items}
        figs["coverage"] = plot_coverage_curves(levels, curves,
                                                [k.replace("x", "×") for k in first.same_noise])
    if first.scaled:
        n = [b.shape[0] * b.shape[1] for b in first.scaled.values()]
        get = lambda f: np.stack([[f(b.calibration) for b in r.scaled.values()] for _, r in items])
        figs["mad"] = plot_mad(n, get(lambda c: c.mad), get(lambda c: c.mad_r),
                               get(lambda c: c.mad_phi), [label for label, _ in items])
    return figs
