"""The ``bayesiamp`` command: every study, stage, figure and benchmark of the project.

    bayesiamp paper --preset quick                 # the whole study (writes outputs/quick/)
    bayesiamp paper --preset paper -o runs/paper --set num_runs=2   # the paper's sizes (GPU)
    bayesiamp dimension --preset quick             # the study on the d-dimensional shell
    bayesiamp compare --preset quick               # every posterior family at its cost
    bayesiamp train --method sgld --set sgld.enabled=true   # one family's training only
    bayesiamp regression --preset quick            # uncertainty-aware regression
    bayesiamp budget --preset paper                # predicted work and time per stage
    bayesiamp figures outputs/quick                # redraw a study's figures from its files
    bayesiamp benchmark run --size tiny            # benchmarks (JSON); --help lists them

Every study command takes ``--preset NAME``, ``--set KEY=VALUE`` (repeatable), ``--config FILE``
and ``--show-config [text|json]`` (every setting with a one-line description);
``bayesiamp COMMAND --help`` documents every option of a command. The module forms
(``python -m experiments.paper``, ``python -m experiments.dimension``,
``python -m experiments.compare``,
``python -m experiments.regression``, ``python -m experiments.figures``,
``python -m experiments.budget``, ``python -m experiments.demo``, ``python -m benchmarks.run``)
are this parser with the command filled in.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from experiments import config as cfgmod
from experiments import settings

_STAGES = ("\n\nSame options as `bayesiamp paper`; completed stages are skipped, so `bayesiamp "
           "paper` later continues from here.")
DESCRIPTIONS = {
    "train": "The first stages of a study: training data and weight posteriors." + _STAGES,
    "evaluate": "A study up to the evaluation: data, posteriors, histograms, calibration and "
                "amplification numbers (results/)." + _STAGES,
    "config": "Print the resolved configuration of a study (every setting with its "
              "description; --show-config json for a file --config loads) and exit.",
}
STUDY_COMMANDS = {"paper": None, "train": "train", "evaluate": "evaluate"}



def _is_main_guard(node) -> bool:
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)


def benchmark_modules() -> tuple[str, ...]:
    """The modules of ``benchmarks/`` with a ``__main__`` block (read, not imported): what
    ``bayesiamp benchmark NAME`` runs; ``run`` (all of benchmarks.run's table) first."""
    spec = importlib.util.find_spec("benchmarks")
    if spec is None or not spec.submodule_search_locations:
        return ()
    names = sorted(p.stem for folder in spec.submodule_search_locations
                   for p in Path(folder).glob("*.py")
                   if any(_is_main_guard(n) for n in ast.parse(p.read_text()).body))
    return tuple(sorted(names, key=lambda n: n != "run"))


# ----------------------------------------------------------------------------- commands


def _paper(argv, command: str = "paper") -> int:
    from experiments.paper import main as run

    return run(argv, only=STUDY_COMMANDS[command], prog=f"bayesiamp {command}",
               description=DESCRIPTIONS.get(command))


def _config(argv) -> int:
    from experiments.paper import main as run

    show = [] if any(a.startswith("--show-config") for a in argv) else ["--show-config"]
    return run(argv + show, prog="bayesiamp config", description=DESCRIPTIONS["config"])


def _dimension(argv) -> int:
    from experiments.dimension import main as run

    return run(argv)


def _compare(argv) -> int:
    from experiments.compare import main as run

    return run(argv)


def _regression(argv) -> int:
    from experiments.regression import main as run

    return run(argv)


def _demo(argv) -> int:
    from experiments.demo import main as run

    return run(argv, prog="bayesiamp demo")


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
    try:
        plans = runtime.log_budget(cfg, threshold_s=float("inf"))
    except settings.ConfigError as e:  # a bad data file (experiments.data.DataError)
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        from bayesiamp_jax.checkpoint import atomic_write_json

        atomic_write_json(Path(args.json), plans)
    return 0


def _module_summary(module: str) -> str:
    """First paragraph of ``module``'s docstring, read from its source (nothing is imported)."""
    spec = importlib.util.find_spec(module)
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) if spec else None
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def benchmark_help() -> str:
    lines = ["usage: bayesiamp benchmark NAME [options of NAME]", "",
             "Run one benchmark module (`bayesiamp benchmark NAME --help`: its options). "
             "NAME is one of:", ""]
    names = benchmark_modules()
    width = max(map(len, names), default=0)
    lines += [f"  {name:<{width}}  {_module_summary(f'benchmarks.{name}')}" for name in names]
    lines += ["", "`run` runs every benchmark of its table into one JSON report "
              "(--size tiny|cpu|paper, --only, --output, --set); results: benchmarks/RESULTS.md."]
    return "\n".join(lines)


@contextlib.contextmanager
def _program_name(prog: str):
    """argparse names a parser without ``prog=`` after ``sys.argv[0]``: show ``prog`` there."""
    saved = sys.argv[0] if sys.argv else None
    if sys.argv:
        sys.argv[0] = prog
    else:
        sys.argv.append(prog)
    try:
        yield
    finally:
        sys.argv[0] = saved if saved is not None else ""


def _benchmark(argv) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(benchmark_help())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    names = benchmark_modules()
    if name not in names:
        print(f"error: unknown benchmark {name!r}; choose one of {', '.join(names)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{name}")
    prog = f"bayesiamp benchmark {name}"
    table = module.registry() if name == "run" else getattr(module, "BENCHMARKS", None)
    if table is not None and (name == "run" or not hasattr(module, "main")):
        from benchmarks import runner

        runner.main(table, rest, prog=prog, description=module.__doc__)
        return 0
    takes_argv = bool(inspect.signature(module.main).parameters)
    if rest in (["-h"], ["--help"]) and "ArgumentParser" not in inspect.getsource(module):
        # a main without its own parser: its docstring is its help
        print(f"usage: {prog}{' ARGS' if takes_argv else ''}\n\n{module.__doc__.strip()}")
        return 0
    if not takes_argv:
        if rest:
            print(f"{prog}: error: takes no options, got {' '.join(rest)}", file=sys.stderr)
            return 2
        status = module.main()
    else:
        with _program_name(prog):
            status = module.main(rest)
    return status if isinstance(status, int) else 0


# name -> (one-line summary, handler(argv) -> exit status)
COMMANDS = {
    "paper": ("the whole study: data, posteriors, evaluation, figures, report", _paper),
    "train": ("the study's first stages: data and weight posteriors",
              lambda argv: _paper(argv, "train")),
    "evaluate": ("the study up to the evaluation (histograms, calibration, amplification)",
                 lambda argv: _paper(argv, "evaluate")),
    "report": ("rewrite report.md / report.json of a study folder",
               lambda argv: _redraw(argv, "report")),
    "config": ("print a study's resolved configuration (every setting, described)", _config),
    "dimension": ("the study on the d-dimensional shell for several d (--dims 2,4,6,8)",
                  _dimension),
    "compare": ("every posterior family on one problem, against its cost (one study)",
                _compare),
    "regression": ("uncertainty-aware regression: VI and repulsive ensemble vs replica truth",
                   _regression),
    "budget": ("predicted samples, FLOPs and time per stage of a study, from a short probe",
               _budget),
    "figures": ("redraw the figures of a study folder from its saved files",
                lambda argv: _redraw(argv, "figures")),
    "benchmark": ("run a benchmark module (NAME --help; `run`: all, one JSON)", _benchmark),
    "demo": ("short single-network demo: train a CNF on the ring, sample, score", _demo),
}


def usage() -> str:
    """``bayesiamp --help``: the commands with one line each, then the module's examples."""
    width = max(map(len, COMMANDS))
    lines = ["usage: bayesiamp COMMAND [--preset NAME] [--set KEY=VALUE ...] [options]", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (summary, _) in COMMANDS.items()]
    lines += ["", "paper, train and evaluate also run as one of N processes of one study",
              "(--coordinator HOST:PORT --num-processes N --process-id I, or --coordinator auto",
              "on a cluster).", "", "examples:", ""]
    lines += [line for line in __doc__.split("\n\n", 2)[1].splitlines()]
    lines += ["", __doc__.split("\n\n", 2)[2].strip()]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run ``bayesiamp COMMAND ...`` (``argv`` without the program name); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"error: unknown command {cmd!r}; choose one of {', '.join(COMMANDS)} "
              "(bayesiamp --help)", file=sys.stderr)
        return 2
    return COMMANDS[cmd][1](rest)


def module_main(command: str, prefix: tuple = ()) -> None:
    """``python -m experiments.X ARGS`` = ``bayesiamp COMMAND ARGS``: exit with its status."""
    sys.exit(main([command, *prefix, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
