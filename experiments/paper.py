"""The whole study with one command: data → posteriors → evaluation → figures → report.

    python -m experiments.paper --preset quick                 # ~2 min on a 2-core CPU
    python -m experiments.paper --preset paper --output runs/paper   # the paper's sizes (GPU)
    python -m experiments.paper --preset paper --set vi.num_epochs=2000 --set num_runs=2

Outputs (in ``--output``, default ``outputs/<preset>``): config.json (the resolved
configuration), log.txt, data/, models/, draws/<label>/run<r>.msgpack, histograms/, results/,
figures/ (PNG and PDF), report.md and report.json, stages/ (completion markers). Invoking the
same command again skips completed stages and continues interrupted training from its last
checkpoint; a changed setting redoes the stages that depend on it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from bayesiamp_jax.checkpoint import atomic_write_json
from experiments import config as cfgmod
from experiments import runtime
from experiments.stages import Study

STAGE_ORDER = ("data", "deterministic", "train_vi", "train_adammcmc", "train_nuts",
               "train_repulsive", "evaluate", "figures", "report")


def build_parser(prog="python -m experiments.paper", description=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description or __doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, choices=sorted(cfgmod.PRESETS),
                   help="size preset (default: quick, or the preset saved in --output)")
    p.add_argument("--output", "-o", default=None,
                   help="output folder (default: outputs/<preset>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set vi.num_epochs=2000 --set "
                        "vi.kl_weights=1,10 (repeatable; see --show-config for all keys)")
    p.add_argument("--method", action="append", default=None,
                   choices=("vi", "adammcmc", "nuts", "repulsive"),
                   help="train only these methods (repeatable; default: all enabled)")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def resolve_args(args):
    """(Config, output folder) from parsed arguments, reusing a saved config's preset."""
    outdir = Path(args.output) if args.output else None
    preset = args.preset
    if preset is None and outdir is not None and (outdir / "config.json").is_file():
        preset = json.loads((outdir / "config.json").read_text()).get("preset", "quick")
    preset = preset or "quick"
    cfg = cfgmod.resolve(preset, args.overrides)
    return cfg, outdir or Path("outputs") / preset


def fingerprints(cfg) -> dict:
    """Fingerprint of every stage: its config sections plus the fingerprints it depends on."""
    fp = {"data": cfgmod.fingerprint("data", cfg.seed, cfg.num_runs, cfg.data)}
    fp["deterministic"] = cfgmod.fingerprint(fp["data"], cfg.network, cfg.deterministic)
    for m in ("vi", "repulsive"):
        fp[f"train_{m}"] = cfgmod.fingerprint(fp["data"], cfg.network, getattr(cfg, m))
    for m in ("adammcmc", "nuts"):  # start from the deterministic network
        fp[f"train_{m}"] = cfgmod.fingerprint(fp["deterministic"], getattr(cfg, m))
    enabled = [f"train_{m}" for m in ("vi", "adammcmc", "nuts", "repulsive")
               if getattr(cfg, m).enabled]
    fp["evaluate"] = cfgmod.fingerprint([fp[s] for s in enabled], cfg.evaluation)
    fp["figures"] = cfgmod.fingerprint(fp["evaluate"], cfg.figures)
    return fp


def _cleaner(study, *rel):
    def clean():
        for r in rel:
            p = study.outdir / r
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    return clean


def _label_dirs(cfg, method):
    return [f"draws/{label}" for m, label, _ in cfgmod.method_grid(cfg) if m == method]


def run_pipeline(cfg, outdir, *, only: str | None = None, methods=None, progress=True) -> Study:
    """Run (or resume) every stage in order; ``only`` in {"train", "evaluate"} stops early."""
    from experiments import data, deterministic, evaluate, figures, report_stage, train

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    runtime.setup_logging(outdir / "log.txt")
    study = Study(outdir, cfg)
    log = study.log
    log.info("study %s: preset %r, output %s", time.strftime("%Y-%m-%d %H:%M:%S"), cfg.preset,
             outdir)
    log.info("device: %s", runtime.device_info())
    atomic_write_json(outdir / "config.json", cfgmod.to_dict(cfg))
    runtime.warn_if_long(cfg, log)
    fp = fingerprints(cfg)
    stage = study.run_stage
    stage("data", fp["data"], lambda: data.make_data(study), _cleaner(study, "data"))
    if cfg.deterministic.enabled:
        stage("deterministic", fp["deterministic"],
              lambda: deterministic.train_deterministic(study, progress),
              _cleaner(study, "models/deterministic.msgpack"))
    for m in ("vi", "adammcmc", "nuts", "repulsive"):
        if getattr(cfg, m).enabled and (methods is None or m in methods):
            stage(f"train_{m}", fp[f"train_{m}"],
                  lambda m=m: train.TRAINERS[m](study, progress),
                  _cleaner(study, *_label_dirs(cfg, m)))
    if only == "train":
        return study
    stage("evaluate", fp["evaluate"], lambda: evaluate.evaluate_all(study, progress),
          _cleaner(study, "results", "histograms"))
    if only == "evaluate":
        return study
    stage("figures", fp["figures"], lambda: figures.draw_all(study), _cleaner(study, "figures"))
    # the report is cheap and carries the timings of all stages: always rewritten
    study.marker_path("report").unlink(missing_ok=True)
    stage("report", "always", lambda: report_stage.write(study))
    log.info("done: %s (stages run: %s; skipped: %s)", outdir / "report.md",
             ", ".join(study.ran) or "none", ", ".join(study.skipped) or "none")
    return study


def main(argv=None, only: str | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, outdir = resolve_args(args)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.show_config:
        print(json.dumps(cfgmod.to_dict(cfg), indent=2))
        return 0
    try:
        run_pipeline(cfg, outdir, only=only, methods=args.method, progress=not args.no_progress)
    except KeyboardInterrupt:
        runtime.get_logger().warning("interrupted: run the same command again to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
