"""Markdown tables from a benchmark JSON: ``python -m benchmarks.report results.json``."""

from __future__ import annotations

import json
import sys


def _fmt(v, digits=3):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _time(seconds):
    if seconds is None:
        return ""
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _spread(r) -> str:
    """min–max of the timed calls (older JSON files have the minimum only)."""
    lo, hi = r.get("min_seconds"), r.get("max_seconds")
    if lo is None:
        return ""
    return f"{_time(lo)}–{_time(hi)}" if hi is not None else f"min {_time(lo)}"


def markdown(report: dict) -> str:
    env, peaks = report["environment"], report["device_peaks"]
    lines = [
        f"Date {env['date_utc']}, {env['cpu_model']} ({env['cpu_count']} cores), "
        f"load average {_fmt(env.get('load_average_1_5_15'))}; "
        f"peak {peaks['peak_gflops']:.1f} GFLOP/s (matmul), {peaks['bandwidth_gbs']:.1f} GB/s; "
        f"size `{report['config']['size']['name']}`; versions "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        "",
        "| benchmark | impl | solver | time (median) | spread (min–max) | CPU time | compile "
        "| evals | max err | samples/s | floor | fraction of peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["records"]:
        if r.get("skipped"):
            lines.append(f"| {r['name']} | {r.get('impl', '')} | | skipped: {r['skipped']} "
                         "| | | | | | | | |")
            continue
        if "seconds" not in r:
            continue
        lines.append(
            f"| {r['name']} | {r['impl']} | {r.get('solver') or ''} | "
            f"{_time(r['seconds'])}/{r.get('unit', 'call')} | {_spread(r)} | "
            f"{_time(r.get('cpu_seconds'))} | "
            f"{_fmt(r.get('compile_s'), 2)} s | {_fmt(r.get('evals'))} | "
            f"{_fmt(r.get('max_err'))} | {_fmt(r.get('samples_per_s'))} | "
            f"{_time(r.get('floor_s'))} | {_fmt(r.get('fraction_of_peak'), 2)} |")
    acc = [r for r in report["records"] if r["name"] == "loglik_accuracy"]
    if acc:
        lines += ["", "| exact log-likelihood | evals | max error per point "
                  "| error of the potential N/B Σ log p |", "|---|---|---|---|"]
        lines += [f"| {r['solver']} | {r['evals']} | {_fmt(r['max_point_err'])} | "
                  f"{_fmt(r['potential_err'])} |" for r in acc]
    if report.get("ratios"):
        lines += ["", "| figure | solver | project impl | baseline | project | baseline time "
                  "| project/baseline | speed-up |", "|---|---|---|---|---|---|---|---|"]
        for r in report["ratios"]:
            lines.append(
                f"| {r['name']} | {r.get('solver') or ''} | {r['impl']} | {r['baseline']} | "
                f"{_time(r['project_s'])} | {_time(r['baseline_s'])} | "
                f"{r['ratio_project_over_baseline']:.3g} | {r['speedup']:.3g}× |")
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    lines += ["", f"Wall time of the run: {report['wall_s']:.0f} s."]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m benchmarks.report results.json")
    with open(argv[0]) as f:
        print(markdown(json.load(f)))


if __name__ == "__main__":
    main()
