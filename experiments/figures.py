"""Figures stage: the library's figure functions on a study's saved files.

Nothing is generated, trained or analysed here: the figures are drawn by
``bayesiamp_jax.evaluation`` (one style) from ``results/<label>.json`` (the compact summaries),
the training data and the loss histories, and saved as ``figures/<name>.<fmt>`` for every format
in ``figures.formats`` (per-label sets in ``figures/<label>/``). ``figures/index.json`` lists
the figures the report embeds.
"""

from __future__ import annotations

import numpy as np

from bayesiamp_jax import data as bjdata
from bayesiamp_jax import evaluation as ev
from bayesiamp_jax.checkpoint import atomic_write_json, load_pytree
from bayesiamp_jax.evaluation.summary import key_cells, key_panel
from bayesiamp_jax.posteriors.draws import load_draws
from experiments import config as cfgmod
from experiments import report
from experiments.evaluate import load_results
from experiments.stages import read_json

# the paper's power-law fits (a, b) of the headline labels (PAPER.md), drawn dotted
PAPER_FITS = {"vi": (0.0043, 0.99), "adammcmc": (0.0121, 0.986)}


def headline_labels(cfg) -> list[str]:
    """The labels of the headline figures: VI and AdamMCMC at figures.headline_*, every label
    without a knob, and the families of issue 24 at temperature 1 (or their first T)."""
    f = cfg.figures
    wanted = {("vi", f.headline_vi_k), ("adammcmc", f.headline_adammcmc_sigma)}
    grid = cfgmod.method_grid(cfg)
    first_t = {}
    for m, label, h in grid:
        if m in cfgmod.NEW_METHODS and h is not None:
            first_t.setdefault(report.family(label, h), label)
    for m, label, h in grid:
        if m in cfgmod.NEW_METHODS and h == 1.0:
            first_t[report.family(label, h)] = label
    return [label for m, label, h in grid
            if (m, h) in wanted or h is None or label in first_t.values()]


def _loss_curves(study, labels) -> dict:
    curves = {}
    det = study.outdir / "models" / "deterministic.msgpack"
    if det.is_file():
        curves["deterministic (flow matching)"] = np.asarray(load_pytree(det)["losses"]).mean(0)
    for label in labels:
        p = study.outdir / "draws" / label / "run0.msgpack"
        if not p.is_file():
            continue
        info = load_draws(p).info
        y = next((np.asarray(info[k]) for k in ("losses", "loss")
                  if k in info and np.ndim(info[k]) == 1 and np.size(info[k]) > 1), None)
        if y is not None:
            curves[f"{label} (run 0)"] = y
    return curves


def plot_convergence(study):
    """Held-out loss along training (``experiments.convergence``), one panel per method on
    its own y scale (a chain's potential and a flow-matching loss differ by orders of
    magnitude), one line per label and run; the fitted tail window is shaded and a run whose
    held-out loss still falls (or rises) is marked with a red cross and named in the legend.
    The first records (the untrained network) are left off the y range. None without curves."""
    from matplotlib.figure import Figure

    from experiments import convergence

    found = convergence.curves(study)
    if not found:
        return None
    judged = convergence.load(study)
    methods = list(dict.fromkeys(method for method, _ in found.values()))
    fig = Figure(figsize=(4.2 * len(methods), 3.4), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    for ax, method in zip(axes, methods, strict=True):
        lows, highs = [], []
        for name, (m, runs) in found.items():
            if m != method:
                continue
            for r, (e, y) in runs.items():
                d = judged[name][r]
                flag = (" — train longer" if d["not_converged"] else
                        " — rising" if d["rising"] else "")
                ax.plot(e, y, lw=1, label=f"{name} run {r}{flag}")
                ax.axvspan(d["tail_start"], e[-1], color="0.92", zorder=0)
                if flag:
                    ax.plot(e[-1], y[-1], "x", color="red", ms=9, mew=2)
                late = y[e >= e[0] + 0.05 * (e[-1] - e[0])]
                lows.append(np.min(late))
                highs.append(np.max(late))
        if lows and max(highs) > min(lows):
            pad = 0.05 * (max(highs) - min(lows))
            ax.set_ylim(min(lows) - pad, max(highs) + pad)
        ax.set(xlabel="chain step" if method in cfgmod.CHAIN_METHODS else "epoch",
               ylabel="held-out potential" if method == "adammcmc" else "held-out loss",
               title=method)
        ax.legend(fontsize=7)
    return fig


def draw_all(study, labels=None) -> list[str]:
    """Draw every figure of ``study`` (of ``labels``, default all) from its saved files;
    returns the paths (relative to the study folder) the report embeds."""
    cfg, f = study.cfg, study.cfg.figures
    results = load_results(study, labels)
    if not results:
        raise FileNotFoundError(f"no results in {study.outdir / 'results'}; run the evaluation")
    written = []

    def save(fig, name, formats=f.formats):
        paths = ev.save_figure(fig, study.outdir / "figures" / name, formats, f.dpi)
        rel = [str(p.relative_to(study.outdir)) for p in paths]
        return next((p for p in rel if p.endswith(".png")), rel[0])

    if any(r.get("marginals") for r in results.values()):  # the first figure anyone reads
        written.append(save(ev.plot_marginals(results), "marginals"))
    if cfg.data.name == "ring":  # the ring's points with its 10 × 10 quantile grid
        with np.load(study.outdir / "data" / "run0.npz") as d:
            x = d["x"]
        edges = bjdata.quantile_edges(10, cfg.data.r_mean)
        written.append(save(ev.plot_training_data(x, edges.r, edges.phi,
                                                  r_mean=cfg.data.r_mean), "data"))
    headline = headline_labels(cfg)
    references = {label: PAPER_FITS[r["method"]] for label, r in results.items()
                  if label in headline and r["method"] in PAPER_FITS
                  and cfg.data.name == "ring"}  # the paper's fits are of the ring
    comparison = ev.plot_comparison(results, references, cfg.data.r_mean)
    for name in ("coverage", "mad", "deviation", "amplification", "amplification_corrected",
                 "closure"):
        if name in comparison:
            written.append(save(comparison[name], name))
    written.append(save(ev.plot_losses(_loss_curves(study, results)), "losses"))
    convergence_fig = plot_convergence(study)
    if convergence_fig is not None:
        written.append(save(convergence_fig, "convergence"))
    if any(r.get("holdout") for r in results.values()):  # the check without a truth
        written.append(save(ev.plot_holdout(results), "holdout"))
    # paper Fig. 2/3 per method, in the order of the method grid (any method name)
    for method in dict.fromkeys(r["method"] for r in results.values()):
        family = {label: r for label, r in results.items() if r["method"] == method}
        if family:
            first = next(iter(family.values()))
            panels = [k for k in sorted(first["coverage"], key=key_cells)
                      if int(k.split("x")[0]) in cfg.evaluation.calib_bins]
            curves = {label: np.stack([r["coverage"][n]["empirical"] for n in panels])
                      for label, r in family.items()}
            fig = ev.plot_coverage_curves(first["coverage"][panels[0]]["nominal"], curves,
                                          [key_panel(n) for n in panels], title=method)
            written.append(save(fig, f"coverage_{method}"))
    sets = {"all": list(results), "headline": [lab for lab in results if lab in headline],
            "none": []}[f.label_sets]
    for label in sets:
        for name, fig in ev.plot_summary(results[label], label, cfg.data.r_mean).items():
            path = save(fig, f"{label}/{name}", f.label_formats)
            if label in headline:
                written.append(path)
    atomic_write_json(study.outdir / "figures" / "index.json", written)
    study.log.info("figures: written to %s", study.outdir / "figures")
    return written


def figure_paths(study) -> list[str]:
    """The figures to embed in the report (as listed by the last ``draw_all``)."""
    index = read_json(study.outdir / "figures" / "index.json")
    return index if isinstance(index, list) else []


if __name__ == "__main__":  # the same parser as `bayesiamp figures`
    from experiments.cli import module_main

    module_main("figures")
