"""The benchmark runner: run a table of benchmarks into one JSON report, and its command line.

``benchmarks.run`` calls it with every benchmark; each benchmark module's ``__main__`` with its
own (``python -m benchmarks.generation --size tiny``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from bayesiamp_jax.checkpoint import atomic_write_json
from benchmarks.common import (
    SIZES,
    TORCH_MISSING,
    Size,
    environment,
    format_record,
    get_size,
    torch_available,
)
from benchmarks.context import Context
from experiments import settings

BASELINES = ("torch", "numpy")  # the reference implementations (numpy: histogramming)


def ratios(records: list[dict]) -> list[dict]:
    """Project/baseline time ratio for each figure (name, solver) that has a baseline record."""
    out = []
    for base in (r for r in records if r.get("impl") in BASELINES):
        same = [r for r in records if r.get("name") == base["name"]
                and r.get("solver") == base.get("solver") and r.get("impl", "").startswith("jax")
                and "seconds" in r]
        for r in same:
            out.append({"name": base["name"], "solver": base.get("solver"), "impl": r["impl"],
                        "project_s": r["seconds"], "baseline_s": base["seconds"],
                        "ratio_project_over_baseline": r["seconds"] / base["seconds"],
                        "speedup": base["seconds"] / r["seconds"],
                        "baseline": base["impl"]})
    return out


def run(table: dict, size: str | Size = "tiny", only=None, baseline: bool = True, seed: int = 0,
        progress: bool = True, device: dict | None = None, output=None) -> dict:
    """Run the selected benchmarks of ``table`` (name -> function(ctx) -> records); returns the
    JSON-ready report.

    With ``output``, the report so far is written atomically after every benchmark, so an
    interrupted run keeps what it measured.
    """
    only = list(table) if not only else list(only)
    unknown = [o for o in only if o not in table]
    if unknown:
        raise ValueError(f"only must name benchmarks from {list(table)}, got {unknown!r}")
    t_start = time.perf_counter()
    size = size if isinstance(size, Size) else get_size(size)
    ctx = Context(size, seed=seed, baseline=baseline, device=device, progress=progress)
    if progress:
        print(f"# device peaks: {ctx.device}", flush=True)
    records, notes = [], []
    env = environment()
    if baseline and not ctx.baseline:
        notes.append(TORCH_MISSING)
        if progress:
            print(TORCH_MISSING, file=sys.stderr)
    for name in only:
        t0 = time.perf_counter()
        recs = table[name](ctx)
        for r in recs:
            r.setdefault("benchmark", name)
            if progress and not r.pop("_logged", False):
                print(format_record(r), flush=True)
        records.extend(recs)
        if progress:
            print(f"# {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        report = _report(env, ctx, only, seed, records, notes, t_start)
        if output:
            atomic_write_json(output, report)
    if progress:
        for r in report["ratios"]:
            print(f"ratio {r['name']:<12} {str(r['solver'] or ''):<10} {r['impl']:<12} "
                  f"project/baseline = {r['ratio_project_over_baseline']:.3g} "
                  f"(speed-up {r['speedup']:.3g}x)")
    return report


def _report(env, ctx, only, seed, records, notes, t_start) -> dict:
    return {
        "environment": {**env, "load_average_at_end": _loadavg()},
        "device_peaks": ctx.device,
        "config": {"size": dataclasses.asdict(ctx.size), "only": only, "seed": seed,
                   "baseline": ctx.baseline},
        "records": records,
        "ratios": ratios(records),
        "notes": notes,
        "wall_s": time.perf_counter() - t_start,
    }


def _loadavg():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def main(table: dict, argv=None, only=None, prog: str = "python -m benchmarks.run",
         description: str | None = None):
    """The command line over ``table`` (``--help`` lists the options)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_config_arguments(parser, {n: (lambda n=n: get_size(n)) for n in SIZES},
                                  default_preset="tiny", preset_option="--size")
    parser.add_argument("--only", default=None,
                        help="comma-separated benchmark names (default: all)")
    parser.add_argument("--output", default=None, help="JSON file to write")
    parser.add_argument("--no-baseline", action="store_true", help="skip the PyTorch baseline")
    parser.add_argument("--seed", type=int, default=0, help="seed of every benchmark's keys")
    args = parser.parse_args(argv)
    try:
        size = settings.config_from_args(args, Size, {n: (lambda n=n: get_size(n)) for n in SIZES},
                                         default_preset="tiny")
    except settings.ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.show_config:
        settings.print_config(size, args.show_config)
        return 0
    selected = args.only.split(",") if args.only else only
    if not args.no_baseline and not torch_available():
        print(TORCH_MISSING, file=sys.stderr)
    report = run(table, size, selected, baseline=not args.no_baseline, seed=args.seed,
                 output=args.output)
    if args.output:
        print(f"wrote {args.output}")
    return report
