"""Calibration and amplification against dimension: the study on the d-dimensional shell.

    python -m experiments.dimension --preset quick                   # d = 2, 4, 6, 8
    python -m experiments.dimension --preset tiny --dims 2,3 -o outputs/dim-tiny

For every d the whole study (``experiments.paper`` with ``data.name=shell``, ``data.dim=d``;
binned in (r, cos θ) with their exact truth) runs in ``<output>/d<d>/`` — resumable there like
any study — and the results are collected into ``dimension.json``, ``dimension.md`` (one row
per d and method: MAD with its finite-S floor, N_eq and amplification of the largest scaled
binning, paper estimator and generation-noise corrected, and the power-law fits) and
``figures/dimension.png``. Every ``--set`` applies to all d (N_train, training lengths, …).

The rows (``evaluation.trend_rows``) also hold, per d and method, the MAD of every same-noise
binning against its floor, the held-out verdict and scale s of the 10 × 10 same-noise binning,
the recalibrated amplification (÷ s²) with the trust verdict, and the trained epochs (of the
method and of the flow-matching pretraining it starts from) read from the held-out loss curves
(``trained_epochs``: the last recorded epoch, which is where an early stop ended the training).
Rerunning the command on a finished folder skips every stage and only re-collects.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bayesiamp_jax import evaluation as ev
from bayesiamp_jax.checkpoint import atomic_write_json, atomic_write_text
from experiments import config as cfgmod
from experiments import convergence, paper, runtime, settings
from experiments.stages import prepare_folder

PANELS = {"held-out scale s, 10×10 (1: calibrated)": "holdout_scale",
          "ampl. corrected (dashed: ÷ s²)": ("amplification_corrected",
                                            "amplification_recalibrated"),
          "averaging ampl. claimed (dashed: true)": ("averaging_model", "averaging_true"),
          "power-law slope b (dashed: corrected)": ("fit_b", "fit_corrected_b")}
LOG_PANELS = ("held-out scale s, 10×10 (1: calibrated)", "ampl. corrected (dashed: ÷ s²)",
              "averaging ampl. claimed (dashed: true)")
MAD_PANELS = ("10", "50")  # same-noise binnings drawn against their floor (where evaluated)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bayesiamp dimension", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_config_arguments(p, cfgmod.PRESETS, default_preset="quick")
    p.add_argument("--dims", default="2,4,6,8",
                   help="comma-separated dimensions d >= 2 of the shell (default: 2,4,6,8)")
    p.add_argument("--output", "-o", default=None,
                   help="output folder (default: outputs/dimension-<preset>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of another configuration in the d folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_dims(text: str) -> list[int]:
    try:
        dims = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise settings.ConfigError(f"--dims must be comma-separated integers, got {text!r}") \
            from None
    if not dims or any(d < 2 for d in dims) or len(set(dims)) != len(dims):
        raise settings.ConfigError(f"--dims must be distinct integers >= 2, got {text!r}")
    return sorted(dims)


def shell_config(cfg, dim: int):
    """``cfg`` on the d-dimensional shell with its default (r, cos θ) observable."""
    for assignment in ("data.name=shell", f"data.dim={dim}"):
        cfg = settings.apply_override(cfg, assignment)
    return settings.validate(cfg)


def trained_epochs(study) -> dict:
    """{stage or label: {run: epochs}} of a finished study: the last epoch (chain step) of
    each held-out loss curve (``experiments.convergence.curves``), where training ended."""
    return {name: {str(r): int(e[-1]) for r, (e, _) in runs.items() if len(e)}
            for name, (_, runs) in convergence.curves(study).items()}


def panels(rows: list[dict]) -> dict:
    """The figure's panels: MAD against its floor for the binnings of ``MAD_PANELS`` that the
    rows hold, then ``PANELS``."""
    mads = {f"MAD {n}×{n} (dashed: floor)": (f"mad_{n}", f"mad_floor_{n}")
            for n in MAD_PANELS if rows and all(f"mad_{n}" in r for r in rows)}
    return mads | PANELS


def run(cfg, dims, outdir: Path, progress: bool = True, overwrite: bool = False) -> dict:
    """Run (or resume) the study for every d, then write the collected table and figure."""
    outdir = prepare_folder(outdir)
    log = runtime.get_logger()
    reports, seconds = {}, {}
    for d in dims:
        start = time.perf_counter()
        study = paper.run_pipeline(shell_config(cfg, d), outdir / f"d{d}", progress=progress,
                                   overwrite=overwrite)
        seconds[d] = time.perf_counter() - start
        reports[d] = json.loads((study.outdir / "report.json").read_text())
        reports[d]["trained_epochs"] = trained_epochs(study)
        log.info("dimension: d = %d done in %.0f s", d, seconds[d])
    rows = ev.trend_rows(reports, pretrained=cfgmod.pretrained_methods(cfg))
    summary = {"dims": dims, "config": cfgmod.to_dict(cfg), "rows": rows,
               "trained_epochs": {str(d): r["trained_epochs"] for d, r in reports.items()},
               "seconds": {str(d): s for d, s in seconds.items()},  # of this call
               # of each study's stages (report.json "timings"; kept when a rerun skips them)
               "study_seconds": {str(d): (r.get("timings") or {}).get("total")
                                 for d, r in reports.items()}}
    atomic_write_json(outdir / "dimension.json", summary)
    fig = ev.plot_trend(rows, panels(rows), xlabel="dimension $d$ of the shell",
                        log_y=LOG_PANELS)
    ev.save_figure(fig, outdir / "figures" / "dimension", ("png",), cfg.figures.dpi)
    table = ev.trend_markdown(rows)
    atomic_write_text(outdir / "dimension.md",
                      f"# Calibration and amplification against dimension ({cfg.preset})\n\n"
                      + table + "\n![dimension](figures/dimension.png)\n")
    log.info("dimension: %s", outdir / "dimension.md")
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = settings.config_from_args(args, cfgmod.Config, cfgmod.PRESETS, "quick")
        dims = parse_dims(args.dims)
        if args.show_config:
            settings.print_config(cfg, args.show_config)
            return 0
        for d in dims:
            shell_config(cfg, d)
    except settings.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    outdir = Path(args.output or f"outputs/dimension-{cfg.preset}")
    return paper.run_reported(lambda: run(cfg, dims, outdir, progress=not args.no_progress,
                                          overwrite=args.overwrite))


if __name__ == "__main__":  # the same parser as `bayesiamp dimension`
    from experiments.cli import module_main

    module_main("dimension")
