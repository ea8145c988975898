"""Every posterior family on one problem, compared at their cost: ``bayesiamp compare``.

    bayesiamp compare --preset quick                                # the ring, every family
    bayesiamp compare --preset quick --set data.name=shell --set data.dim=4
    bayesiamp compare --preset tiny --families vi,laplace,sgld -o outputs/compare-tiny

One study (``experiments.paper.run_pipeline``, resumable like every study) with every family
of ``--families`` enabled (default ``DEFAULT_FAMILIES``: VI, AdamMCMC, Laplace with the diagonal
and the last-layer curvature, deep and bootstrap ensembles, SGLD, SGHMC, SWAG; ``--repulsive``
adds the repulsive ensemble) and every other method off; ``--set`` applies on top (e.g.
``--set laplace.structures=diag`` or ``--set sgld.temperatures=1,2``). The study's report.json
is then read into ``compare.json`` and ``compare.md`` (one row per label: MAD of every
calibration binning with its finite-S floor, the held-out verdict and whether the held-out
check chooses the label among its knob's values, the amplification of the largest scaled
binning — generation-noise corrected, recalibrated by the held-out ÷ s² and the true averaging
amplification against the exact truth — the closure, the median ESS where the draws are a
chain, and the cost: seconds and field evaluations, pretraining included) and
``figures/compare.png`` (the MAD of the two largest calibration binnings and the
amplification against cost).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from bayesiamp_jax.checkpoint import atomic_write_json, atomic_write_text
from bayesiamp_jax.evaluation.summary import key_cells, key_panel
from bayesiamp_jax.evaluation.trend import trend_rows
from experiments import config as cfgmod
from experiments import paper, runtime, settings
from experiments.report import family, label_seconds

# the families of the comparison (repulsive: --repulsive; nuts: --families nuts)
DEFAULT_FAMILIES = ("vi", "adammcmc", "laplace", "ensemble", "bootstrap", "sgld", "sghmc",
                    "swag")
DEFAULT_LAPLACE = "laplace.structures=diag,last_layer"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bayesiamp compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_config_arguments(p, cfgmod.PRESETS, default_preset="quick")
    p.add_argument("--families", default=",".join(DEFAULT_FAMILIES),
                   help="comma-separated methods to enable (default: %(default)s)")
    p.add_argument("--repulsive", action="store_true", help="add the repulsive ensemble")
    p.add_argument("--output", "-o", default=None,
                   help="output folder (default: outputs/compare-<preset>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of another configuration in --output")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_families(text: str, repulsive: bool = False) -> list[str]:
    """The methods of ``--families`` (in ``config.METHODS`` order), checked."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = sorted(set(names) - set(cfgmod.METHODS))
    if not names or bad:
        raise settings.ConfigError(f"--families must be comma-separated methods of "
                                   f"{list(cfgmod.METHODS)}, got {text!r}")
    chosen = set(names) | ({"repulsive"} if repulsive else set())
    return [m for m in cfgmod.METHODS if m in chosen]


def compare_overrides(families) -> list[str]:
    """``--set`` assignments enabling ``families`` (Laplace: diagonal and last layer) and
    disabling every other method; the user's own ``--set`` go after them."""
    out = [f"{m}.enabled={'true' if m in families else 'false'}" for m in cfgmod.METHODS]
    return out + ([DEFAULT_LAPLACE] if "laplace" in families else [])


def _mean(v) -> float | None:
    vals = [float(x) for x in (v or []) if x is not None and math.isfinite(float(x))]
    return float(np.mean(vals)) if vals else None


def _num(v) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _median_ess(m: dict) -> float | None:
    """Median ESS of the chain's bin fractions in the densest calibration binning (None for
    methods whose draws are not one chain per run)."""
    if m["method"] not in cfgmod.CHAIN_METHODS:
        return None
    bins = (m.get("diagnostics") or {}).get("bin_fractions") or {}
    if not bins:
        return None
    return _num(bins[max(bins, key=key_cells)]["ess"]["median"])


def rows_of(report: dict) -> list[dict]:
    """One row per label of a study's report.json (see the module doc), in the order of the
    method grid; every number is read from the report (run means where the report has one
    value per run)."""
    calib = [str(n) for n in report["config"]["evaluation"]["calib_bins"]]
    selection = report.get("selection") or {}
    trend = {r["label"]: r for r in trend_rows({0: report})}
    seconds = label_seconds(report)  # measured: from the timings, not stored with the numbers
    rows = []
    order = {label: i for i, (_, label, _) in enumerate(
        cfgmod.method_grid(cfgmod.from_dict(report["config"])))}
    for label, m in sorted(report["methods"].items(), key=lambda lm: order.get(lm[0], 1e9)):
        largest = max(m["amplification"], key=key_cells)
        ho = m.get("holdout") or {}
        recal = (ho.get("amplification_recalibrated") or {}).get(largest)
        corrected = (m.get("amplification_corrected") or {}).get(largest)
        closure = m["closure"].get(largest) or {}
        fam = family(label, m.get("hyper"))
        cost = m.get("cost") or {}
        t = trend[label]
        rows.append({
            "label": label, "method": m["method"], "hyper": m.get("hyper"), "family": fam,
            "num_draws": m["num_draws"],
            "mad": {n: _num(m["mad"].get(n)) for n in calib},
            "mad_floor": {n: _num((m.get("mad_floor") or {}).get(n)) for n in calib},
            "holdout_verdict": ho.get("verdict"),
            "holdout_scale": ((selection.get(fam) or {}).get("labels") or {}).get(
                label, {}).get("scale"),
            "chosen": (selection.get(fam) or {}).get("chosen") == label,
            "binning": largest,
            "amplification_paper": _mean(m["amplification"][largest]),
            "amplification": _mean(corrected) if corrected is not None else _mean(
                m["amplification"][largest]),
            "amplification_recalibrated": _mean(recal),
            "averaging_model": _num(t["averaging_model"]),
            "averaging_true": _num(t["averaging_true"]),
            "closure_model": _num(closure.get("model")),
            "closure_truth": _num(closure.get("truth")),
            "ess_median": _median_ess(m),
            "seconds": seconds[label]["seconds"],
            "field_evals": (None if not cost else
                            cost["field_evals"] + cost["pretrain_field_evals"]),
        })
    return rows


def _g(v, fmt=".3g") -> str:
    return "–" if v is None else format(v, fmt)


def markdown(rows: list[dict], report: dict) -> str:
    cfg = report["config"]
    calib = [str(n) for n in cfg["evaluation"]["calib_bins"]]
    head = ["method", *[f"MAD {key_panel(n)} (floor)" for n in calib], "held-out verdict",
            "chosen", "ampl. (corrected)", "recalibrated ÷ s²", "averaging claimed / true",
            "closure model / truth", "median ESS", "seconds", "field evaluations"]
    lines = [f"# Every posterior family at its cost — preset `{report['preset']}`", "",
             f"Data: {cfg['data']['name']} (d = {cfg['data']['dim']}), runs: {cfg['num_runs']}, "
             f"training points per run: {cfg['data']['num_train']}. Amplifications and "
             f"closure at the largest scaled binning ({key_panel(rows[0]['binning'])}), run "
             "means. Held-out verdict with the recalibration s of the binning it reads (σ → s σ; "
             "for the tempered families s² is roughly the temperature that would calibrate). "
             "*Chosen*: the label the held-out check picks among its knob's values "
             "(`select_knob`). Median ESS: chains only (AdamMCMC, NUTS, SGLD, SGHMC). Seconds "
             "and field evaluations include the deterministic training a method starts from "
             "(report.json `cost`: formulas).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            f"`{r['label']}`",
            *[f"{_g(r['mad'][n])} ({_g(r['mad_floor'][n])})" for n in calib],
            (r["holdout_verdict"] or "unchecked") + (
                f" (s = {r['holdout_scale']:.2g})" if r["holdout_scale"] is not None else ""),
            "yes" if r["chosen"] else "",
            _g(r["amplification"]), _g(r["amplification_recalibrated"]),
            f"{_g(r['averaging_model'])} / {_g(r['averaging_true'])}",
            f"{_g(r['closure_model'])} / {_g(r['closure_truth'])}", _g(r["ess_median"]),
            _g(r["seconds"], ".1f"), _g(r["field_evals"])]) + " |")
    return "\n".join(lines) + "\n\n![compare](figures/compare.png)\n"


def plot(rows: list[dict], calib_keys):
    """Panels against cost (seconds, log): the MAD of each calibration binning of
    ``calib_keys`` with its floor (bar), and the corrected (filled), recalibrated (open) and
    true averaging (cross) amplification; one colour and marker per label."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6 * (len(calib_keys) + 1), 4), layout="constrained")
    *mad_axes, ax_amp = fig.subplots(1, len(calib_keys) + 1)
    for i, r in enumerate(rows):
        x = r["seconds"]
        if x is None or x <= 0:
            continue
        color, marker = f"C{i % 10}", "os^vD<>ph*"[i // 10 % 10]
        for ax, key in zip(mad_axes, calib_keys, strict=True):
            if r["mad"].get(key) is not None:
                ax.plot(x, r["mad"][key], marker, color=color, label=r["label"])
            if r["mad_floor"].get(key) is not None:
                ax.plot(x, r["mad_floor"][key], "_", color=color, ms=12)
        for name, style in (("amplification", dict(marker=marker, ls="none")),
                            ("amplification_recalibrated",
                             dict(marker=marker, ls="none", mfc="none")),
                            ("averaging_true", dict(marker="x", ls="none"))):
            if r[name] is not None and r[name] > 0:
                ax_amp.plot(x, r[name], color=color, **style)
    for ax, key in zip(mad_axes, calib_keys, strict=True):
        ax.set(xscale="log", xlabel="cost: training seconds (pretraining included)",
               ylabel=f"MAD of the coverage, {key_panel(key)} (bar: floor)",
               title=f"calibration against the truth, {key_panel(key)}")
    ax_amp.set(xscale="log", yscale="log", xlabel="cost: training seconds (pretraining included)",
               ylabel=f"amplification, {key_panel(rows[0]['binning'])}",
               title="filled: corrected, open: ÷ s², x: true averaging")
    ax_amp.axhline(1.0, color="0.5", ls="--", lw=1)
    mad_axes[0].legend(fontsize=7)
    return fig


def write(outdir: Path, report: dict, dpi: int = 150) -> dict:
    """compare.json, compare.md and figures/compare.png of a study's report; the summary."""
    from bayesiamp_jax import evaluation as ev

    rows = rows_of(report)
    summary = {"preset": report["preset"], "data": report["config"]["data"],
               "num_runs": report["config"]["num_runs"],
               "families": list(dict.fromkeys(r["method"] for r in rows)),
               "selection": report.get("selection") or {}, "rows": rows}
    atomic_write_json(outdir / "compare.json", summary)
    atomic_write_text(outdir / "compare.md", markdown(rows, report))
    calib = sorted((str(n) for n in report["config"]["evaluation"]["calib_bins"]),
                   key=key_cells)
    ev.save_figure(plot(rows, calib[-2:]), outdir / "figures" / "compare", ("png",), dpi)
    return summary


def run(cfg, outdir: Path, progress: bool = True, overwrite: bool = False) -> dict:
    """Run (or resume) the study of ``cfg`` in ``outdir`` and write the comparison."""
    study = paper.run_pipeline(cfg, outdir, progress=progress, overwrite=overwrite)
    report = json.loads((study.outdir / "report.json").read_text())
    summary = write(study.outdir, report, cfg.figures.dpi)
    runtime.get_logger().info("compare: %s", study.outdir / "compare.md")
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        families = parse_families(args.families, args.repulsive)
        args.overrides = compare_overrides(families) + list(args.overrides)
        cfg = settings.config_from_args(args, cfgmod.Config, cfgmod.PRESETS, "quick")
        if args.show_config:
            settings.print_config(cfg, args.show_config)
            return 0
    except settings.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    outdir = Path(args.output or f"outputs/compare-{cfg.preset}")
    return paper.run_reported(lambda: run(cfg, outdir, progress=not args.no_progress,
                                          overwrite=args.overwrite))


if __name__ == "__main__":  # the same parser as `bayesiamp compare`
    from experiments.cli import module_main

    module_main("compare")
