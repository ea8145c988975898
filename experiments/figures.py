"""Figures of a study, drawn only from files in its output folder (no generation, no training).

    python -m experiments.figures OUTDIR      # redraw every figure of a finished study

Each figure is saved as ``figures/<name>.<fmt>`` for every format in ``figures.formats``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bayesiamp_jax import data as bjdata  # noqa: E402
from bayesiamp_jax.checkpoint import atomic_write_bytes  # noqa: E402
from experiments import config as cfgmod  # noqa: E402

PAPER_FITS = {"vi": (0.0043, 0.99), "adammcmc": (0.0121, 0.986)}


def _save(fig, study, name, formats=None) -> list[str]:
    out = []
    for fmt in formats or study.cfg.figures.formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=study.cfg.figures.dpi, bbox_inches="tight")
        rel = f"figures/{name}.{fmt}"  # name may hold one sub-folder (a label)
        atomic_write_bytes(study.outdir / rel, buf.getvalue())
        out.append(rel)
    plt.close(fig)
    return out


def _embed(paths):
    return next((p for p in paths if p.endswith(".png")), paths[0])


def _colors(labels):
    cmap = plt.get_cmap("tab10")
    return {lab: cmap(i % 10) for i, lab in enumerate(labels)}


def fig_data(study):
    """Training sample of run 0 with the 10 × 10 truth-quantile grid."""
    with np.load(study.outdir / "data" / "run0.npz") as f:
        x = f["x"]
    edges = bjdata.quantile_edges(10, study.cfg.data.r_mean)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4, color="k", rasterized=True)
    t = np.linspace(0, 2 * np.pi, 400)
    rmax = float(np.max(np.linalg.norm(x, axis=1)))
    for r in edges.r[1:-1]:
        ax.plot(r * np.cos(t), r * np.sin(t), color="C0", lw=0.6)
    for p in edges.phi[:-1]:
        ax.plot([edges.r[1] * np.cos(p), rmax * np.cos(p)],
                [edges.r[1] * np.sin(p), rmax * np.sin(p)], color="C0", lw=0.6)
    ax.set_aspect("equal")
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title(f"training data (run 0, N = {len(x)}) and 10×10 quantile cells", fontsize=9)
    return fig


def fig_coverage(study, results):
    ns = [str(n) for n in study.cfg.evaluation.calib_bins]
    fig, axes = plt.subplots(1, len(ns), figsize=(3.6 * len(ns), 3.6), squeeze=False)
    colors = _colors(results)
    for ax, n in zip(axes[0], ns, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
        for label, res in results.items():
            cov = res["coverage"].get(n)
            if cov:
                ax.plot(cov["nominal"], cov["empirical"], color=colors[label],
                        label=f"{label} (MAD {res['mad'][n]:.3f})")
        ax.set_title(f"{n}×{n} cells")
        ax.set_xlabel("nominal coverage")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    axes[0, 0].set_ylabel("mean empirical coverage")
    fig.suptitle("calibration of the histogram uncertainty (same noise for all draws)")
    fig.tight_layout()
    return fig


def fig_mad(study, results):
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colors = _colors(results)
    for label, res in results.items():
        src = res.get("mad_scaled") or {n: {"mad": res["mad"][n], "mad_r": res["mad_r"][n],
                                             "mad_phi": res["mad_phi"][n]} for n in res["mad"]}
        ns = sorted(src, key=int)
        nq = [int(n) ** 2 for n in ns]
        ax.plot(nq, [src[n]["mad"] for n in ns], "o-", color=colors[label], label=f"{label} MAD")
        ax.plot(nq, [src[n]["mad_r"] for n in ns], "^:", color=colors[label], alpha=0.7,
                label=f"{label} MAD_r")
        ax.plot(nq, [src[n]["mad_phi"] for n in ns], "v--", color=colors[label], alpha=0.7,
                label=f"{label} MAD_φ")
    ax.set_xscale("log")
    ax.set_xlabel("number of cells n_Q")
    ax.set_ylabel("mean absolute coverage deviation")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def fig_deviation(study, results):
    from bayesiamp_jax.evaluation.figures import radial_centers

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    colors = _colors(results)
    for label, res in results.items():
        dev = res.get("deviation_r")
        if not dev:
            continue
        centers = radial_centers(np.asarray(dev["r_edges"], float), study.cfg.data.r_mean)
        ax.plot(centers, dev["deviation"], ".-", ms=3, color=colors[label], label=label)
    ax.axhline(0, color="grey", lw=1)
    ax.axvline(study.cfg.data.r_mean, color="k", lw=0.8, ls=":")
    ax.set_xlabel("radius r (truth median of the bin)")
    ax.set_ylabel("coverage − nominal (mean over levels)")
    n = study.cfg.evaluation.deviation_bins
    ax.set_title(f"signed coverage deviation per radial bin, {n}×{n} cells", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_amplification(study, results):
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colors = _colors(results)
    for label, res in results.items():
        ns = sorted(res["amplification"], key=int)
        nq = np.array([int(n) ** 2 for n in ns], float)
        amp = np.array([res["amplification"][n] for n in ns], float)  # (B, R)
        mean = amp.mean(axis=1)
        err = amp.std(axis=1, ddof=1) / np.sqrt(amp.shape[1]) if amp.shape[1] > 1 else None
        ax.errorbar(nq, mean, yerr=err, fmt="o", ms=3, color=colors[label], label=label)
        fit = res["fit"]
        if np.isfinite(fit["a"]):
            grid = np.geomspace(nq.min(), nq.max(), 100)
            ax.plot(grid, fit["a"] * grid ** fit["b"], color=colors[label], lw=1,
                    label=f"fit a={fit['a']:.2g}, b={fit['b']:.2f}±{fit['b_err']:.2f}")
        ref = PAPER_FITS.get(res["method"])
        if ref is not None and res.get("hyper") in (10.0, 0.1):
            grid = np.geomspace(nq.min(), nq.max(), 100)
            ax.plot(grid, ref[0] * grid ** ref[1], color=colors[label], lw=1, ls=":",
                    label=f"paper {res['method']} fit")
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of cells n_Q")
    ax.set_ylabel("amplification N_eq / N_train")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def fig_closure(study, results):
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colors = _colors(results)
    for label, res in results.items():
        ns = sorted(res["closure"], key=int)
        nq = [int(n) ** 2 for n in ns]
        ax.plot(nq, [res["closure"][n]["model"] for n in ns], "o-", color=colors[label],
                label=f"{label}: posterior mean")
        ax.errorbar(nq, [res["closure"][n]["truth"] for n in ns],
                    yerr=[res["closure"][n].get("truth_std", 0.0) for n in ns], fmt="s--",
                    ms=3, color=colors[label], alpha=0.6, label=f"{label}: truth sample of N_eq")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of cells n_Q")
    ax.set_ylabel("Jensen–Shannon divergence to the truth")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def fig_losses(study):
    from bayesiamp_jax.posteriors.draws import load_draws

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    det = study.outdir / "models" / "deterministic.msgpack"
    if det.is_file():
        from bayesiamp_jax.checkpoint import load_pytree

        losses = np.asarray(load_pytree(det)["losses"])
        ax.plot(np.arange(1, losses.shape[1] + 1), losses.mean(0), color="k", lw=1,
                label="deterministic (flow matching)")
    for i, (_, label, _) in enumerate(cfgmod.method_grid(study.cfg)):
        p = study.outdir / "draws" / label / "run0.msgpack"
        if not p.is_file():
            continue
        info = load_draws(p).info
        for key in ("losses", "loss"):
            if key in info and np.ndim(info[key]) == 1 and np.size(info[key]) > 1:
                y = np.asarray(info[key])
                ax.plot(np.arange(1, y.size + 1), y, color=f"C{i}", lw=1, label=f"{label} (run 0)")
                break
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


FIGURES = ("data", "coverage", "mad", "deviation", "amplification", "closure", "losses")


def family_coverage_figures(study, results) -> dict:
    """Paper Fig. 2/3 layout per method (one line per hyper-parameter, one panel per binning)."""
    from bayesiamp_jax.evaluation import plot_coverage_curves

    ns = [str(n) for n in study.cfg.evaluation.calib_bins]
    figs = {}
    for method in ("vi", "adammcmc", "nuts", "repulsive"):
        curves = {label: np.stack([res["coverage"][n]["empirical"] for n in ns])
                  for label, res in results.items() if res["method"] == method}
        if curves:
            levels = next(iter(results.values()))["coverage"][ns[0]]["nominal"]
            figs[f"coverage_{method}"] = plot_coverage_curves(
                levels, curves, [f"{n}×{n}" for n in ns], title=method)
    return figs


def headline_labels(study) -> list[str]:
    f = study.cfg.figures
    wanted = {("vi", f.headline_vi_k), ("adammcmc", f.headline_adammcmc_sigma)}
    return [label for m, label, h in cfgmod.method_grid(study.cfg)
            if (m, h) in wanted or m in ("nuts", "repulsive")]


def label_figures(study, label) -> dict:
    """``bayesiamp_jax.evaluation.plot_all`` of one label, re-analysed from its histograms."""
    from bayesiamp_jax.evaluation import plot_all
    from experiments.evaluate import reanalyse

    n = study.cfg.evaluation.deviation_bins
    return plot_all(reanalyse(study, label), name=label, deviation_label=f"{n}x{n}")


def draw_all(study) -> list[str]:
    """Draw every figure of ``study`` from its saved files; returns the paths to embed."""
    from experiments.evaluate import load_results

    results = load_results(study)
    if not results:
        raise FileNotFoundError(f"no results in {study.outdir / 'results'}; run the evaluation")
    makers = {"data": lambda: fig_data(study), "coverage": lambda: fig_coverage(study, results),
              "mad": lambda: fig_mad(study, results),
              "deviation": lambda: fig_deviation(study, results),
              "amplification": lambda: fig_amplification(study, results),
              "closure": lambda: fig_closure(study, results), "losses": lambda: fig_losses(study)}
    written = []
    for name in FIGURES:
        written.append(_embed(_save(makers[name](), study, name)))
    for name, fig in family_coverage_figures(study, results).items():
        written.append(_embed(_save(fig, study, name)))
    headline = headline_labels(study)
    sets = {"all": list(results), "headline": [lab for lab in results if lab in headline],
            "none": []}[study.cfg.figures.label_sets]
    for label in sets:
        for name, fig in label_figures(study, label).items():
            path = _embed(_save(fig, study, f"{label}/{name}", study.cfg.figures.label_formats))
            if label in headline:
                written.append(path)
    study.log.info("figures: written to %s", study.outdir / "figures")
    atomic_write_bytes(study.outdir / "figures" / "index.json", json.dumps(written).encode())
    return written


def figure_paths(study) -> list[str]:
    """The figures to embed in the report (as listed by the last ``draw_all``)."""
    index = study.outdir / "figures" / "index.json"
    return json.loads(index.read_text()) if index.is_file() else []


def main(argv=None) -> int:
    from experiments import runtime
    from experiments.stages import Study

    p = argparse.ArgumentParser(prog="python -m experiments.figures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir", help="output folder of a study (holds config.json and results/)")
    args = p.parse_args(argv)
    outdir = Path(args.outdir)
    if not (outdir / "config.json").is_file():
        print(f"error: {outdir} holds no config.json (not a study folder)", file=sys.stderr)
        return 2
    runtime.setup_logging(None)
    cfg = cfgmod.from_dict(json.loads((outdir / "config.json").read_text()))
    for path in draw_all(Study(outdir, cfg)):
        print(outdir / path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
