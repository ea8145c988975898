"""The ``bayesiamp`` console script.

    bayesiamp paper [--preset quick|paper|replicate|tiny] [--output DIR] [--set KEY=VALUE ...]
    bayesiamp train [...same options...] [--method vi ...]   # data + posteriors only
    bayesiamp evaluate [...same options...]                   # ... + evaluation
    bayesiamp figures OUTDIR                                   # redraw figures from files
    bayesiamp report OUTDIR                                    # rewrite report.md / report.json
    bayesiamp config [--preset ...] [--set ...] [--show-config json]  # print the configuration
    bayesiamp budget [--preset ...] [--set ...] [--json FILE]  # predicted work and time per stage
    bayesiamp demo                                             # short single-network demo

``paper``, ``train`` and ``evaluate`` also run as one of N processes of one study
(``--coordinator HOST:PORT --num-processes N --process-id I``, or ``--coordinator auto`` on a
cluster; ``experiments.distributed``).

``bayesiamp COMMAND --help`` documents every option of a command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments import config as cfgmod
from experiments import settings

USAGE = __doc__
STUDY_COMMANDS = {"paper": None, "train": "train", "evaluate": "evaluate"}
_STAGES = ("\n\nSame options as `bayesiamp paper`; completed stages are skipped, so `bayesiamp "
           "paper` later continues from here.")
DESCRIPTIONS = {
    "train": "The first stages of a study: training data and weight posteriors." + _STAGES,
    "evaluate": "A study up to the evaluation: data, posteriors, histograms, calibration and "
                "amplification numbers (results/)." + _STAGES,
    "config": "Print the resolved configuration of a study (every setting with its "
              "description; --show-config json for a file --config loads) and exit.",
}


def _study(argv, command: str) -> tuple[Path, object] | int:
    """(folder, Config) of the study folder named in ``argv`` or an exit status."""
    what = "Redraw the figures" if command == "figures" else "Rewrite report.md and report.json"
    p = argparse.ArgumentParser(
        prog=f"bayesiamp {command}",
        description=f"{what} of a study from its saved files (nothing is recomputed).")
    p.add_argument("outdir", help="output folder of a study (holds config.json and results/)")
    args = p.parse_args(argv)
    outdir = Path(args.outdir)
    if not (outdir / "config.json").is_file():
        print(f"error: {outdir} holds no config.json (not a study folder)", file=sys.stderr)
        return 2
    try:
        return outdir, cfgmod.load(outdir / "config.json")
    except settings.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _redraw(argv, command: str) -> int:
    from experiments import figures, report_stage, runtime
    from experiments.stages import Study

    got = _study(argv, command)
    if isinstance(got, int):
        return got
    outdir, cfg = got
    runtime.setup_logging(None)
    study = Study(outdir, cfg)
    try:
        if command == "figures":
            for path in figures.draw_all(study):
                print(outdir / path)
        else:
            report_stage.write(study)
            print(outdir / "report.md")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _budget(argv) -> int:
    """``bayesiamp budget [--preset P] [--set K=V ...] [--json FILE]``: the budget of a study
    (costs probed on this device in a few seconds; on a CPU also one GPU's, from documented
    costs) as the run would log it, without running anything else."""
    from experiments import runtime

    p = argparse.ArgumentParser(prog="bayesiamp budget", description=_budget.__doc__)
    settings.add_config_arguments(p, cfgmod.PRESETS, default_preset="quick")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write the plans as JSON (the study's budget.json format)")
    args = p.parse_args(argv)
    try:
        cfg = settings.config_from_args(args, cfgmod.Config, cfgmod.PRESETS,
                                        default_preset="quick")
    except settings.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.show_config:
        settings.print_config(cfg, args.show_config)
        return 0
    runtime.setup_logging(None)
    plans = runtime.log_budget(cfg, threshold_s=float("inf"))
    if args.json:
        from bayesiamp_jax.checkpoint import atomic_write_json

        atomic_write_json(Path(args.json), plans)
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd in STUDY_COMMANDS:
        from experiments.paper import main as run

        return run(rest, only=STUDY_COMMANDS[cmd], prog=f"bayesiamp {cmd}",
                   description=DESCRIPTIONS.get(cmd))
    if cmd == "config":
        from experiments.paper import main as run

        show = [] if any(a.startswith("--show-config") for a in rest) else ["--show-config"]
        return run(rest + show, prog="bayesiamp config", description=DESCRIPTIONS["config"])
    if cmd == "budget":
        return _budget(rest)
    if cmd in ("figures", "report"):
        return _redraw(rest, cmd)
    if cmd == "demo":
        from experiments.demo import main as run

        return run(rest, prog="bayesiamp demo")
    print(f"error: unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
