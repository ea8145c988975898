"""The ``bayesiamp`` console script.

    bayesiamp paper [--preset quick|paper|tiny] [--output DIR] [--set KEY=VALUE ...]
    bayesiamp train [...same options...] [--method vi ...]   # data + posteriors only
    bayesiamp evaluate [...same options...]                   # ... + evaluation
    bayesiamp figures OUTDIR                                   # redraw figures from files
    bayesiamp report OUTDIR                                    # rewrite report.md / report.json
    bayesiamp config [--preset ...] [--set ...]                # print the resolved config
    bayesiamp demo                                             # short single-network demo
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

USAGE = __doc__


def _report(argv) -> int:
    from experiments import config as cfgmod
    from experiments import report_stage, runtime
    from experiments.stages import Study

    if len(argv) != 1:
        print("usage: bayesiamp report OUTDIR", file=sys.stderr)
        return 2
    outdir = Path(argv[0])
    if not (outdir / "config.json").is_file():
        print(f"error: {outdir} holds no config.json (not a study folder)", file=sys.stderr)
        return 2
    runtime.setup_logging(None)
    cfg = cfgmod.from_dict(json.loads((outdir / "config.json").read_text()))
    report_stage.write(Study(outdir, cfg))
    print(outdir / "report.md")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "paper":
        from experiments.paper import main as run
        return run(rest)
    if cmd in ("train", "evaluate"):
        from experiments.paper import main as run
        return run(rest, only=cmd)
    if cmd == "config":
        from experiments.paper import main as run
        return run(rest + ["--show-config"])
    if cmd == "figures":
        from experiments.figures import main as run
        return run(rest)
    if cmd == "report":
        return _report(rest)
    if cmd == "demo":
        from experiments.demo import main as run
        run(rest)
        return 0
    print(f"unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
