"""benchmarks.gpu_check: the prepared GPU check, rehearsed on the CPU at its smoke size.

CI runs the driver for the device and generation parts (child processes, the Pallas kernel in
interpret mode), the budget and timeout rules, a failing part followed by another, and the
report.json comparison on hand-made reports. The whole smoke run (units, budget probe, the tiny
preset end to end and its comparison) is ``slow``: minutes of compilation on a 2-core CPU.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check import (
    PARTS,
    SMOKE,
    compare_reports,
    difference,
    numeric_leaves,
    peak_entry,
)

ROOT = Path(__file__).resolve().parents[1]


def _check(out, *extra, env=None, timeout=600):
    """Run ``python -m benchmarks.gpu_check --smoke --out out ...``; (process, summary)."""
    env = dict(os.environ, **(env or {}), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--smoke", "--out",
                           str(out), *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    summary = json.loads((Path(out) / "summary.json").read_text())
    return proc, summary


def _positive_finite(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    proc, summary = _check(out, "--parts", "device,generation", "--budget-s", "900",
                           "--timeout-scale", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, summary


def test_summary_names_device_versions_and_every_part(smoke):
    import jax

    out, summary = smoke
    assert set(summary["parts"]) == set(PARTS)
    assert summary["parts"]["device"]["status"] == "ok"
    assert summary["parts"]["generation"]["status"] == "ok"
    for name in set(PARTS) - {"device", "generation"}:
        assert summary["parts"][name]["status"] == "skipped: not selected"
    assert summary["device"]["platform"] == jax.devices()[0].platform
    assert summary["device"]["device_kind"] == jax.devices()[0].device_kind
    assert summary["versions"]["jax"] == jax.__version__
    assert summary["size"] == "smoke"
    assert summary["date_utc"].endswith("Z")
    assert 0 < summary["parts"]["generation"]["wall_s"] < summary["wall_s"]
    for name in ("device", "generation"):
        assert (out / f"{name}.json").is_file() and (out / "logs" / f"{name}.log").is_file()


def test_device_peaks_are_measured_on_a_cpu(smoke):
    out, _ = smoke
    d = json.loads((out / "device.json").read_text())
    assert d["peaks"]["table_entry"] is None and "measured" in d["peaks"]["source"]
    assert d["peaks"]["peak_gflops"] == max(d["measured"]["matmul_highest_gflops"],
                                            d["measured"]["matmul_default_gflops"])
    assert _positive_finite(d["peaks"]["bandwidth_gbs"])
    assert d["complete"] and d["status"] == "ok"


def test_generation_xla_and_fused_histograms_agree(smoke):
    out, _ = smoke
    g = json.loads((out / "generation.json").read_text())
    s, n, bins = g["draws"], g["samples_per_draw"], g["bins"]
    assert (s, n, tuple(bins)) == (SMOKE.gen_draws, SMOKE.gen_samples, SMOKE.gen_bins)
    assert {(r["solver"], r["impl"]) for r in g["records"]} == {
        (a, b) for a in ("ab4-60", "rk4-20") for b in ("xla", "pallas")}
    for r in g["records"]:
        assert "error" not in r
        assert r["totals"] == [s * n] * len(bins)  # every generated point lands in one cell
        assert _positive_finite(r["seconds"]) and r["repeats"] == SMOKE.gen_repeats
        assert r["samples_per_s"] == pytest.approx(s * n / r["seconds"])
        assert r["evals"] == {"ab4-60": 69, "rk4-20": 80}[r["solver"]]
        assert 0 < r["fraction_of_peak"] < 1
    for label, paths in g["counts"].items():
        for k in bins:
            xla = paths["xla"][str(k)]
            fused = paths["pallas"][str(k)]
            assert len(xla) == s and all(sum(map(sum, draw)) == n for draw in xla + fused)
            diff = sum(abs(a - b) for dx, dp in zip(xla, fused, strict=True)
                       for rx, rp in zip(dx, dp, strict=True)
                       for a, b in zip(rx, rp, strict=True))
            c = g["comparison"][label][str(k)]
            assert c["sum_abs_diff"] == diff and c["totals_equal"]
            assert c["moved_points"] <= 1e-3 * s * n  # float rounding at bin edges only


def test_budget_skips_parts_that_cannot_start(tmp_path):
    proc, summary = _check(tmp_path, "--budget-s", "1", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert all(p["status"] == "skipped: budget" for p in summary["parts"].values())
    assert summary["device"] is None
    assert not list(tmp_path.glob("device.json"))


def test_timeout_fails_one_part_and_the_next_still_runs(tmp_path):
    proc, summary = _check(tmp_path, "--parts", "device,compare", "--timeout-scale", "0.002",
                           timeout=120)
    assert proc.returncode == 1
    device, compare = summary["parts"]["device"], summary["parts"]["compare"]
    assert device["status"].startswith("failed: timeout after")
    assert device["wall_s"] < 30
    assert compare["status"].startswith("skipped: no --cpu-report")
    # a second try into the same folder keeps the parts it does not run
    proc, again = _check(tmp_path, "--parts", "budget", "--budget-s", "1", timeout=60)
    assert again["parts"]["budget"]["status"] == "skipped: budget"
    assert again["parts"]["device"]["status"] == device["status"]
    assert again["parts"]["device"]["from_run"] == summary["date_utc"]
    assert again["parts"]["units"]["status"] == "skipped: not selected"


def test_failed_part_reports_its_error_line(tmp_path):
    proc, summary = _check(tmp_path, "--parts", "device", env={"JAX_PLATFORMS": "no_such"},
                           timeout=300)
    assert proc.returncode == 1
    status = summary["parts"]["device"]["status"]
    assert status.startswith("failed: ") and "no_such" in status and "exit status" in status


def test_shell_wrapper_runs_the_driver(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", "--out",
                           str(tmp_path / "o"), "--budget-s", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["budget_s"] == 1.0


# ---------------------------------------------------------------- report.json comparison

GPU = {"preset": "quick", "timings": {"total": 10.0},
       "config": {"seed": 0, "bins": [5, 10]},
       "methods": {"vi": {"mad": {"5": 0.2, "10": 0.3}, "num_draws": 20, "ok": True,
                          "amplification": {"5": [1.0, math.inf]}}},
       "only_here": 1.5}
CPU = {"preset": "quick", "timings": {"total": 100.0},
       "config": {"seed": 0, "bins": [5, 10]},
       "methods": {"vi": {"mad": {"5": 0.25, "10": 0.3}, "num_draws": 20, "ok": True,
                          "amplification": {"5": [2.0, math.inf]}}},
       "only_there": [1, 2]}


def test_numeric_leaves_flatten_dicts_and_lists_without_bools():
    assert numeric_leaves(CPU) == {
        "timings/total": 100.0, "config/seed": 0.0, "config/bins/0": 5.0,
        "config/bins/1": 10.0, "methods/vi/mad/5": 0.25, "methods/vi/mad/10": 0.3,
        "methods/vi/num_draws": 20.0, "methods/vi/amplification/5/0": 2.0,
        "methods/vi/amplification/5/1": math.inf, "only_there/0": 1.0, "only_there/1": 2.0}


def test_difference_absolute_and_relative():
    assert difference(0.2, 0.25) == pytest.approx((0.05, 0.2))
    assert difference(-1.0, 1.0) == (2.0, 2.0)  # opposite signs: up to 2
    assert difference(math.inf, math.inf) == (0.0, 0.0)
    assert difference(math.nan, math.nan) == (0.0, 0.0)
    assert difference(1.0, math.nan) == (math.inf, math.inf)
    assert difference(math.inf, 3.0) == (math.inf, math.inf)


def test_compare_reports_lists_every_common_leaf_and_the_largest():
    c = compare_reports(GPU, CPU, top=5)
    assert c["num_common"] == 9 and c["num_gpu_leaves"] == 10 and c["num_cpu_leaves"] == 11
    assert c["only_gpu"] == ["only_here"] and c["only_cpu"] == ["only_there/0", "only_there/1"]
    assert c["leaves"]["timings/total"] == {"gpu": 10.0, "cpu": 100.0, "abs": 90.0, "rel": 0.9}
    # timings differ by design: listed, but not judged
    assert c["num_judged"] == 8 and c["num_different"] == 2 and c["num_equal"] == 6
    assert [r["path"] for r in c["largest_abs"]] == ["methods/vi/amplification/5/0",
                                                     "methods/vi/mad/5"]
    assert [r["path"] for r in c["largest_rel"]] == ["methods/vi/amplification/5/0",
                                                     "methods/vi/mad/5"]
    assert c["max_abs"] == 1.0 and c["max_rel"] == 0.5 and c["num_finiteness_differs"] == 0
    assert c["largest_rel"][1]["rel"] == pytest.approx(0.05 / 0.25)
    assert c["sections"]["methods"] == {"count": 5, "equal": 3, "max_rel": 0.5,
                                        "median_rel": 0.0}
    assert c["sections"]["config"]["equal"] == 3
    assert compare_reports(CPU, CPU)["num_different"] == 0
    nan = json.loads(json.dumps(GPU).replace("0.3", "NaN"))  # mad/10: NaN against 0.3
    c = compare_reports(nan, CPU)
    assert c["num_finiteness_differs"] == 1 and c["num_different"] == 3
    assert c["finiteness_differs"][0]["path"] == "methods/vi/mad/10"
    assert c["max_abs"] == 1.0  # the largest differences are among finite pairs


def test_peak_table_entries():
    assert peak_entry("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert peak_entry("NVIDIA H100 PCIe") == "H100 PCIe"
    assert peak_entry("NVIDIA H100 NVL") == "H100 NVL"
    assert peak_entry("NVIDIA H200") == "H200"
    assert peak_entry("cpu") is None


# ---------------------------------------------------------------- the whole smoke run


@pytest.mark.slow
def test_whole_smoke_run(tmp_path):
    """Every part at the smoke size; the tiny study's report.json compared with a copy of
    itself in which one number is changed by a known amount."""
    proc, summary = _check(tmp_path, "--skip", "compare", "--budget-s", "3000",
                           "--timeout-scale", "5", timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p: s["status"] for p, s in summary["parts"].items()} == {
        **{p: "ok" for p in PARTS}, "compare": "skipped: not selected"}

    units = json.loads((tmp_path / "units.json").read_text())
    recs = {(r["name"], r["units"]): r for r in units["records"]}
    assert set(recs) == {(k, u) for k in ("fm_epoch", "vi_epoch", "adammcmc_step")
                         for u in SMOKE.units}
    for (_, u), r in recs.items():
        assert r["repeats"] == SMOKE.repeats and _positive_finite(r["seconds"])
        assert r["seconds_per_unit"] == pytest.approx(r["seconds"] / u)
        assert 0 < r["fraction_of_peak"] < 1

    budget = json.loads((tmp_path / "budget.json").read_text())
    plans = json.loads((tmp_path / budget["file"]).read_text())
    assert budget["probed_costs"] == plans["device"]["costs"]
    assert _positive_finite(budget["probed_costs"]["field_eval"])

    quick = json.loads((tmp_path / "quick_preset.json").read_text())
    report = json.loads((tmp_path / quick["report"]).read_text())
    assert quick["stage_s"] == report["timings"] and quick["wall_s"] > report["timings"]["total"]

    cpu = json.loads(json.dumps(report))
    label = next(iter(cpu["methods"]))
    n = next(iter(cpu["methods"][label]["mad"]))
    cpu["methods"][label]["mad"][n] *= 1.25
    (tmp_path / "cpu_report.json").write_text(json.dumps(cpu))
    proc, summary = _check(tmp_path, "--parts", "compare", "--cpu-report",
                           str(tmp_path / "cpu_report.json"), timeout=120)
    assert summary["parts"]["compare"]["status"] == "ok", proc.stderr
    c = json.loads((tmp_path / "compare.json").read_text())
    assert c["num_different"] == 1
    assert c["largest_rel"][0]["path"] == f"methods/{label}/mad/{n}"
    assert c["largest_rel"][0]["rel"] == pytest.approx(0.25 / 1.25)
    shutil.rmtree(tmp_path / SMOKE.study_preset)
