"""The whole study with one command: data → posteriors → evaluation → figures → report.

    python -m experiments.paper --preset quick                 # ~2 min on a 2-core CPU
    python -m experiments.paper --preset paper --output runs/paper   # the paper's sizes (GPU)
    python -m experiments.paper --preset paper --set vi.num_epochs=2000 --set num_runs=2
    python -m experiments.paper --preset tiny --method vi      # one method only
    python -m experiments.paper --preset quick --set sgld.enabled=true --method sgld
    python -m experiments.paper --config runs/paper/config.json --set seed=1 -o runs/seed1
    python -m experiments.paper --preset paper -o /shared/paper \
        --coordinator host0:12345 --num-processes 4 --process-id I   # on each of 4 machines

Outputs (in ``--output``, default ``outputs/<preset>``): config.json (the resolved
configuration), log.txt, data/, models/, draws/<label>/run<r>.msgpack, histograms/, results/,
figures/ (PNG and PDF), report.md and report.json, stages/ (completion markers). Invoking the
same command again skips completed stages and continues interrupted training from its last
checkpoint. A folder is used by one run at a time (study.lock); a changed setting that would
redo finished stages (replace their results) is refused unless ``--overwrite`` is given.
With ``--coordinator`` the study spreads over processes (``experiments.distributed``).
"""

from __future__ import annotations

import argparse
import errno
import shutil
import sys
import time
from functools import partial
from pathlib import Path

from bayesiamp_jax.checkpoint import atomic_write_json
from experiments import (
    budget,
    data,
    deterministic,
    distributed,
    evaluate,
    figures,
    report_stage,
    runtime,
    settings,
    train,
)
from experiments import config as cfgmod
from experiments.stages import (
    FolderLock,
    Study,
    StudyError,
    check_no_clobber,
    prepare_folder,
    read_json,
)

METHODS = cfgmod.METHODS
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)
STAGE_ORDER = ("data", "deterministic", *(f"train_{m}" for m in METHODS), "evaluate", "figures",
               "report")


def build_parser(prog: str = "python -m experiments.paper",
                 description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description or __doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_config_arguments(p, cfgmod.PRESETS, default_preset="quick")
    p.add_argument("--output", "-o", default=None,
                   help="output folder (default: outputs/<preset>)")
    p.add_argument("--method", action="append", default=None, choices=METHODS,
                   help="run only these methods: train, evaluate, draw and report them "
                        "(repeatable; default: every enabled method)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of another configuration in --output (without "
                        "it such a folder is refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    distributed.add_arguments(p)
    return p


def _saved_preset(outdir: Path | None) -> str | None:
    """The preset of the study already in ``outdir`` (None if there is none)."""
    saved = None if outdir is None else outdir / "config.json"
    if saved is None or not saved.is_file():
        return None
    try:
        return settings.load_file(saved, cfgmod.Config).preset
    except settings.ConfigError as e:
        raise settings.ConfigError(f"{e}; give --preset or --config, or choose another "
                                   "--output") from None


def resolve_args(args):
    """(Config, output folder) from parsed arguments, reusing a saved config's preset."""
    outdir = Path(args.output) if args.output else None
    saved = None if args.preset or args.config else _saved_preset(outdir)
    cfg = settings.config_from_args(args, cfgmod.Config, cfgmod.PRESETS, default_preset="quick",
                                    saved_preset=saved)
    return cfg, outdir or Path("outputs") / cfg.preset


def selected(cfg, methods=None) -> list[str]:
    """Enabled methods, restricted to ``methods`` when given."""
    enabled = [m for m in METHODS if getattr(cfg, m).enabled]
    if methods is None:
        return enabled
    off = sorted(set(methods) - set(enabled))
    if off:
        raise settings.ConfigError(f"--method {off[0]} is not enabled in this configuration "
                                   f"(enable it with --set {off[0]}.enabled=true)")
    return [m for m in enabled if m in methods]


def fingerprints(cfg, methods=None) -> dict:
    """Fingerprint of every stage: its config sections plus the fingerprints it depends on."""
    fp = {"data": cfgmod.fingerprint("data", cfg.seed, cfg.num_runs, cfg.data)}
    fp["deterministic"] = cfgmod.fingerprint(fp["data"], cfg.network, cfg.deterministic)
    for m in ("vi", "repulsive"):
        fp[f"train_{m}"] = cfgmod.fingerprint(fp["data"], cfg.network, getattr(cfg, m))
    if "vi" in cfgmod.pretrained_methods(cfg):  # the guide's means start at the fit
        fp["train_vi"] = cfgmod.fingerprint(fp["deterministic"], cfg.vi)
    for m in ("adammcmc", "nuts"):  # start from the deterministic network
        fp[f"train_{m}"] = cfgmod.fingerprint(fp["deterministic"], getattr(cfg, m))
    for m in ("ensemble", "bootstrap"):  # epochs and batch size may be the deterministic's
        fp[f"train_{m}"] = cfgmod.fingerprint(fp["data"], cfg.network, getattr(cfg, m),
                                              cfgmod.num_epochs(cfg, m), cfgmod.batch_size(cfg, m),
                                              *cfgmod.schedule_parts(cfg, m))
    for m in ("laplace", "sgld", "sghmc", "swag"):  # start from the deterministic network
        fp[f"train_{m}"] = cfgmod.fingerprint(
            fp["deterministic"], getattr(cfg, m),
            cfgmod.batch_size(cfg, m) if hasattr(getattr(cfg, m), "batch_size") else None)
    chosen = [f"train_{m}" for m in selected(cfg, methods)]
    fp["evaluate"] = cfgmod.fingerprint([fp[s] for s in chosen], cfg.evaluation)
    fp["figures"] = cfgmod.fingerprint(fp["evaluate"], cfg.figures)
    return fp


def study_budget(cfg, outdir, logger) -> dict:
    """The study's plans (``log_budget``), probed once per configuration and device: a resumed
    study keeps those saved in ``outdir/budget.json`` when it started (its stages' measured
    times are compared with them), so resuming spends no probe. Returns the plans with their
    ``signature`` (configuration and device), as saved."""
    info = runtime.device_info()
    signature = cfgmod.fingerprint(cfgmod.to_dict(cfg), {k: info[k] for k in (
        "platform", "device_kind", "num_devices", "host")})
    saved = read_json(Path(outdir) / "budget.json")
    if isinstance(saved, dict) and saved.get("signature") == signature \
            and isinstance(saved.get("device"), dict) and "total_s" in saved["device"]:
        logger.info("budget: predicted %s when the study started (budget.json)",
                    budget.format_duration(saved["device"]["total_s"]))
        return saved
    return {**runtime.log_budget(cfg, logger), "signature": signature}


def _cleaner(study, *rel):
    def clean():
        for r in rel:
            p = study.outdir / r
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    return clean


def run_pipeline(cfg, outdir, *, only: str | None = None, methods=None, progress=True,
                 overwrite: bool = False) -> Study:
    """Run (or resume) every stage in order; ``only`` in {"train", "evaluate"} stops early.

    ``methods``: the methods to train, evaluate, draw and report (default: all enabled).
    The folder is locked for the run (``StudyError`` while another run holds it); one holding
    another configuration's results is refused unless ``overwrite``. With several processes
    (``experiments.distributed``) process 0 holds the lock and checks the folder.
    """
    outdir = prepare_folder(outdir)
    chosen = selected(cfg, methods)
    check = partial(check_no_clobber, outdir, cfgmod.to_dict(cfg), overwrite,
                    normalise=lambda d: cfgmod.to_dict(cfgmod.from_dict(d)),
                    fingerprints=fingerprints(cfg, methods))
    with distributed.owned_folder(FolderLock(outdir), check):
        return _run_stages(cfg, outdir, chosen, only, methods, progress)


def _run_stages(cfg, outdir, chosen, only, methods, progress) -> Study:
    runtime.setup_logging(distributed.scratch_dir(outdir) / "log.txt")
    study = distributed.study_class()(outdir, cfg)
    log = study.log
    log.info("study %s: preset %r, output %s, methods %s", time.strftime("%Y-%m-%d %H:%M:%S"),
             cfg.preset, outdir, ", ".join(chosen))
    log.info("device: %s", runtime.device_info())
    if distributed.process_count() > 1:
        log.info("process %d of %d", distributed.process_index(), distributed.process_count())
    if distributed.is_main():
        atomic_write_json(outdir / "config.json", cfgmod.to_dict(cfg))
        atomic_write_json(outdir / "budget.json", study_budget(cfg, outdir, log))
    fp = fingerprints(cfg, methods)
    grid = [(m, label, h) for m, label, h in cfgmod.method_grid(cfg) if m in chosen]
    labels = [label for _, label, _ in grid]
    stage = study.run_stage
    stage("data", fp["data"], lambda: data.make_data(study), _cleaner(study, "data"))
    if cfg.deterministic.enabled:
        stage("deterministic", fp["deterministic"],
              lambda: deterministic.train_deterministic(study, progress),
              _cleaner(study, "models/deterministic.msgpack"))
    for m in chosen:
        stage(f"train_{m}", fp[f"train_{m}"], lambda m=m: train.TRAINERS[m](study, progress),
              _cleaner(study, *[f"draws/{label}" for mm, label, _ in grid if mm == m]))
    if only == "train":
        return study
    units = [(m, label, h, evaluate.label_fingerprint(cfg, fp[f"train_{m}"]))
             for m, label, h in grid]
    if not study.is_done("evaluate", fp["evaluate"]):
        # the evaluation never trains: draws of a finished training stage that are missing or
        # damaged are trained again (each unit with its own key) before it
        for m in chosen:
            train.repair_draws(study, m, progress)
    # labels keep their own fingerprints, so a changed selection re-evaluates only what changed
    stage("evaluate", fp["evaluate"], lambda: evaluate.evaluate_all(study, units, progress))
    if only == "evaluate":
        return study
    stage("figures", fp["figures"], lambda: figures.draw_all(study, labels),
          _cleaner(study, "figures"))
    # the report is cheap and carries the timings of all stages: always rewritten
    if distributed.is_main():
        study.marker_path("report").unlink(missing_ok=True)
    stage("report", "always", lambda: report_stage.write(study, labels))
    log.info("done: %s (stages run: %s; skipped: %s)", outdir / "report.md",
             ", ".join(study.ran) or "none", ", ".join(study.skipped) or "none")
    return study


def main(argv=None, only: str | None = None, prog: str = "python -m experiments.paper",
         description: str | None = None) -> int:
    args = build_parser(prog, description).parse_args(argv)
    try:
        spec = distributed.spec_from_args(args)
        cfg, outdir = resolve_args(args)
        if args.show_config:
            settings.print_config(cfg, args.show_config)
            return 0
        selected(cfg, args.method)
        distributed.initialize(spec)  # before any JAX computation
        data.preflight(cfg)  # a bad data file or setting: one line before anything runs
    except settings.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_reported(partial(run_pipeline, cfg, outdir, only=only, methods=args.method,
                                progress=not args.no_progress, overwrite=args.overwrite))


def run_reported(run) -> int:
    """``run()`` as a command: 0; a ``StudyError``, a bad setting or data file
    (``ConfigError``: ``experiments.data.DataError`` names the setting that fixes it) or an
    output folder that cannot be written, printed as one line, 2; Ctrl-C, 130."""
    try:
        run()
    except (StudyError, settings.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in UNWRITABLE:
            raise
        print(f"error: cannot write {e.filename or 'the output folder'}: {e.strerror}; choose "
              "another --output (or free space there)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        runtime.get_logger().warning("interrupted: run the same command again to resume")
        return 130
    return 0


if __name__ == "__main__":  # the same parser as `bayesiamp paper`
    from experiments.cli import module_main

    module_main("paper")
