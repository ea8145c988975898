"""The prepared GPU check (issue 25): time the project on a lent GPU in at most 8 minutes and
write everything as JSON under one folder (docs/gpu_check.md).

    benchmarks/gpu_check.sh --out gpu_check [--cpu-report PATH]        # on the GPU machine
    PYTHONPATH=. python3 -m benchmarks.gpu_check --out gpu_check       # the same, no outer timeout
    python -m benchmarks.gpu_check --smoke --out /tmp/smoke           # the CPU rehearsal

Parts, in this order, each in its own child process with its own timeout and its own JSON file
(written atomically; the long parts rewrite theirs after every measurement):

- ``device``: platform, device kind, the peaks that fractions of peak use (``PEAKS``: datasheet
  numbers for H100/H200, a measured matmul + copy probe elsewhere) and the measured probe.
- ``budget``: ``bayesiamp budget --preset paper --json`` (per-unit costs probed on the device)
  with the probed costs beside the documented ``experiments.budget.GPU_COSTS``.
- ``units``: a flow-matching epoch, a VI epoch and an AdamMCMC step at U = 1, 5, 25 units in one
  vmapped program (the study's own compiled cores), median of >= 20 calls after compilation,
  seconds per unit, U-unit speed-up over U single units, fraction of peak.
- ``generation``: generation + binning of 10⁷ samples per draw (2 draws, the calibration grids
  5, 10, 50) through ``evaluation.generate.histogram_same_noise``: XLA path vs the fused Pallas
  kernel, AB4-60 and RK4-20; samples/s, fraction of peak, and the histograms of both paths
  compared cell by cell.
- ``quick_preset``: ``experiments.paper --preset quick`` end to end (output in the check's
  folder), its stage times.
- ``compare``: that report.json against a CPU run's (``--cpu-report``): absolute and relative
  difference of every numeric leaf present in both, and the largest ones (``compare_reports``).

``summary.json`` (rewritten after every part): device kind, jax version, date, per-part wall time
and status: ``ok``, ``failed: <one-line error>`` or ``skipped: <reason>``. A failed part does not
stop the others; a part starts only while the time budget (``--budget-s``, default 480 s) has
``MIN_START_S`` left, and its timeout is cut to what is left; later parts are then
``skipped: budget``. ``--smoke``: tiny sizes (U = 1, 2; 10⁴ samples per draw; the tiny preset
instead of quick), for a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("device", "budget", "units", "generation", "quick_preset", "compare")
IN_PROCESS = ("compare",)  # pure Python: run by the driver itself (no JAX)
MIN_START_S = 15.0
SUMMARY = "summary.json"


@dataclasses.dataclass(frozen=True)
class CheckSize:
    """Sizes of one run of the check (``FULL`` on a GPU, ``SMOKE`` on a CPU)."""

    name: str
    field_preset: str  # the experiments preset whose network the units and generation use
    units: tuple[int, ...]  # U of the unit-axis timings
    num_train: int  # training points per unit (an epoch: num_train // batch_size steps)
    batch_size: int
    epochs_per_call: int
    mcmc_batch: int  # AdamMCMC likelihood mini-batch
    mcmc_solver_steps: int  # RK4 steps of the exact likelihood
    mcmc_steps_per_call: int
    repeats: int  # timed calls after compilation (medians)
    gen_samples: int  # samples per draw
    gen_draws: int
    gen_bins: tuple[int, ...]
    gen_chunk: int
    gen_repeats: int
    gen_train_epochs: int  # flow-matching epochs of the generated field (0: initial weights)
    study_preset: str
    budget_preset: str
    matmul_n: int  # matmul size of the device probe
    copy_bytes: int
    timeouts_s: tuple[tuple[str, float], ...]


FULL = CheckSize(
    "full", "paper", units=(1, 5, 25), num_train=10_000, batch_size=1000, epochs_per_call=10,
    mcmc_batch=1000, mcmc_solver_steps=20, mcmc_steps_per_call=5, repeats=20,
    gen_samples=10_000_000, gen_draws=2, gen_bins=(5, 10, 50), gen_chunk=2**21, gen_repeats=5,
    gen_train_epochs=300, study_preset="quick", budget_preset="paper", matmul_n=8192,
    copy_bytes=2**30,
    timeouts_s=(("device", 60), ("budget", 90), ("units", 200), ("generation", 150),
                ("quick_preset", 300), ("compare", 30)))
SMOKE = CheckSize(
    "smoke", "tiny", units=(1, 2), num_train=256, batch_size=64, epochs_per_call=2,
    mcmc_batch=32, mcmc_solver_steps=2, mcmc_steps_per_call=1, repeats=3,
    gen_samples=10_000, gen_draws=2, gen_bins=(5, 10, 50), gen_chunk=4096, gen_repeats=1,
    gen_train_epochs=0, study_preset="tiny", budget_preset="paper", matmul_n=1024,
    copy_bytes=2**25,
    timeouts_s=(("device", 60), ("budget", 120), ("units", 240), ("generation", 240),
                ("quick_preset", 600), ("compare", 30)))

# Datasheet peaks (dense, no sparsity): FP32 (the field runs at precision "highest"), TF32
# tensor cores (JAX's default float32 matmul precision on these GPUs), memory bandwidth.
PEAKS = {
    "H100 SXM": {"fp32_tflops": 67.0, "tf32_tflops": 494.7, "bandwidth_tbs": 3.35,
                 "source": "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: FP32 67 TFLOPS, "
                           "TF32 989 TFLOPS with sparsity (494.7 dense), HBM3 3.35 TB/s"},
    "H100 PCIe": {"fp32_tflops": 51.0, "tf32_tflops": 378.0, "bandwidth_tbs": 2.0,
                  "source": "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe: FP32 51 TFLOPS, "
                            "TF32 756 TFLOPS with sparsity (378 dense), HBM2e 2 TB/s"},
    "H100 NVL": {"fp32_tflops": 60.0, "tf32_tflops": 417.5, "bandwidth_tbs": 3.9,
                 "source": "NVIDIA H100 Tensor Core GPU datasheet, H100 NVL: FP32 60 TFLOPS, "
                           "TF32 835 TFLOPS with sparsity (417.5 dense), HBM3 3.9 TB/s"},
    "H200": {"fp32_tflops": 67.0, "tf32_tflops": 494.7, "bandwidth_tbs": 4.8,
             "source": "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: FP32 67 TFLOPS, "
                       "TF32 989 TFLOPS with sparsity (494.7 dense), HBM3e 4.8 TB/s"},
}


def peak_entry(device_kind: str) -> str | None:
    """The ``PEAKS`` key of a JAX ``device_kind`` ("NVIDIA H100 80GB HBM3" -> "H100 SXM")."""
    kind = device_kind.upper()
    if "H200" in kind:
        return "H200"
    if "H100" in kind:
        return "H100 PCIe" if "PCIE" in kind else "H100 NVL" if "NVL" in kind else "H100 SXM"
    return None


# ------------------------------------------------------------------ comparison of report.json

VARYING = ("timings", "budget", "estimate_s", "device", "versions")  # differ by design
LISTED = 50  # paths listed per kind of difference (the counts are complete)


def numeric_leaves(tree, prefix: str = "") -> dict:
    """{"a/b/0": value} of every int or float leaf (not bool) of nested dicts and lists."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(numeric_leaves(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(numeric_leaves(v, f"{prefix}/{i}" if prefix else str(i)))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix] = float(tree)
    return out


def difference(a: float, b: float) -> tuple[float, float]:
    """(|a − b|, |a − b| / max(|a|, |b|)); (0, 0) for equal values (also inf = inf, NaN and
    NaN); (inf, inf) when only one is finite or NaN."""
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0, 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf, math.inf
    d = abs(a - b)
    return d, d / max(abs(a), abs(b))


def compare_reports(gpu: dict, cpu: dict, top: int = 20, varying=VARYING) -> dict:
    """Every numeric leaf present in both reports with its absolute and relative difference
    (``difference``); outside the ``varying`` sections (timings, devices, versions: they differ
    by design) the counts of equal and different numbers, the leaves finite in one report only,
    and the ``top`` largest finite differences of each kind; a summary per top-level section."""
    a, b = numeric_leaves(gpu), numeric_leaves(cpu)
    common = sorted(a.keys() & b.keys())
    leaves, sections = {}, {}
    for path in common:
        d_abs, d_rel = difference(a[path], b[path])
        leaves[path] = {"gpu": a[path], "cpu": b[path], "abs": d_abs, "rel": d_rel}
        s = sections.setdefault(path.split("/", 1)[0], {"count": 0, "equal": 0, "rels": []})
        s["count"] += 1
        s["equal"] += d_abs == 0.0
        s["rels"].append(d_rel)
    for s in sections.values():
        rels = s.pop("rels")
        s.update(max_rel=max(rels), median_rel=statistics.median(rels))
    judged = [dict(path=p, **v) for p, v in leaves.items() if p.split("/", 1)[0] not in varying]
    differing = [r for r in judged if r["abs"] > 0]
    finite = [r for r in differing if math.isfinite(r["abs"])]

    def largest(key):
        return sorted(finite, key=lambda r: r[key], reverse=True)[:top]

    only_gpu, only_cpu = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    return {
        "num_gpu_leaves": len(a), "num_cpu_leaves": len(b), "num_common": len(common),
        "num_only_gpu": len(only_gpu), "num_only_cpu": len(only_cpu),
        "only_gpu": only_gpu[:LISTED], "only_cpu": only_cpu[:LISTED],
        "varying_sections": list(varying),
        "num_judged": len(judged), "num_equal": len(judged) - len(differing),
        "num_different": len(differing),
        "num_finiteness_differs": len(differing) - len(finite),
        "finiteness_differs": [r for r in differing if not math.isfinite(r["abs"])][:LISTED],
        "max_abs": max((r["abs"] for r in finite), default=0.0),
        "max_rel": max((r["rel"] for r in finite), default=0.0),
        "largest_abs": largest("abs"), "largest_rel": largest("rel"),
        "sections": sections, "leaves": leaves,
    }


# -------------------------------------------------------------------------- the parts (child)

def _write(path: Path, obj) -> None:
    """Atomic JSON write (temp file + os.replace) that imports no JAX, so the driver stays off
    the accelerator; arrays and numpy scalars become lists and numbers."""
    def plain(o):
        import numpy as np

        a = np.asarray(o)
        return a.item() if a.ndim == 0 else a.tolist()

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True, default=plain))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _peaks(out: Path, size: CheckSize) -> dict:
    """The peaks of this device: the device part's, or worked out again."""
    saved = out / "device.json"
    if saved.is_file():
        return json.loads(saved.read_text())["peaks"]
    return device_peaks(size)[0]


def _probe(size: CheckSize) -> dict:
    """Measured float32 matmul throughput (precision highest and default) and copy bandwidth of
    the default device (jitted JAX, best of 5)."""
    import jax
    import jax.numpy as jnp

    n = size.matmul_n
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    v = jnp.ones(size.copy_bytes // 4, jnp.float32)

    def best(fn, *args):
        jax.block_until_ready(fn(*args))
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            ts.append(time.perf_counter() - t0)
        return min(ts)

    out = {"matmul_n": n, "copy_bytes": size.copy_bytes}
    for precision in ("highest", "default"):
        dot = jax.jit(lambda x, y, p=precision: jnp.dot(x, y, precision=p))
        out[f"matmul_{precision}_gflops"] = 2.0 * n**3 / best(dot, a, b) / 1e9
    scale = jax.jit(lambda x: x * 2.0)  # reads and writes every byte once
    out["copy_gbs"] = 2.0 * size.copy_bytes / best(scale, v) / 1e9
    return out


def device_peaks(size: CheckSize) -> tuple[dict, dict]:
    """(peaks, measured probe): peaks {"peak_gflops", "bandwidth_gbs", "source", ...} in
    ``benchmarks.floor``'s layout, from ``PEAKS`` for a known GPU, else from the probe."""
    import jax

    dev = jax.devices()[0]
    measured = _probe(size)
    entry = peak_entry(dev.device_kind) if dev.platform == "gpu" else None
    if entry is not None:
        p = PEAKS[entry]
        peaks = {"peak_gflops": p["fp32_tflops"] * 1e3, "bandwidth_gbs": p["bandwidth_tbs"] * 1e3,
                 "tf32_gflops": p["tf32_tflops"] * 1e3, "table_entry": entry,
                 "source": p["source"]}
    else:
        peaks = {"peak_gflops": max(measured["matmul_highest_gflops"],
                                    measured["matmul_default_gflops"]),
                 "bandwidth_gbs": measured["copy_gbs"], "table_entry": None,
                 "source": f"measured on this device ({dev.platform}, {dev.device_kind}): "
                           f"float32 {size.matmul_n}² matmul, {size.copy_bytes >> 20} MiB "
                           "scale-copy (best of 5)"}
    return peaks, measured


def part_device(out: Path, size: CheckSize, args, save) -> dict:
    import jax

    from benchmarks.common import environment

    peaks, measured = device_peaks(size)
    dev = jax.devices()[0]
    return {"platform": dev.platform, "device_kind": dev.device_kind,
            "num_devices": jax.device_count(), "peaks": peaks, "measured": measured,
            "environment": environment()}


def part_budget(out: Path, size: CheckSize, args, save) -> dict:
    from experiments import budget, cli

    path = out / f"budget_{size.budget_preset}.json"
    cmd = ["budget", "--preset", size.budget_preset, "--json", str(path)]
    rc = cli.main(cmd)
    if rc != 0:
        raise RuntimeError(f"bayesiamp {' '.join(cmd)} exited with status {rc}")
    plans = json.loads(path.read_text())
    costs = plans["device"]["costs"]
    ratios = {k: costs[k] / v for k, v in budget.GPU_COSTS.items()
              if isinstance(v, (int, float)) and isinstance(costs.get(k), (int, float)) and v}
    return {"command": "bayesiamp " + " ".join(cmd[:-1] + [path.name]), "file": path.name,
            "probed_costs": costs, "documented_gpu_costs": budget.GPU_COSTS,
            "probed_over_documented_gpu": ratios,
            "flops_per_eval": plans["device"]["flops_per_eval"],
            "predicted_s": {k: s["predicted_s"] for k, s in plans["device"]["stages"].items()},
            "predicted_total_s": plans["device"]["total_s"]}


def _field(size: CheckSize):
    from experiments import config
    from experiments.data import field_from_config

    return field_from_config(config.PRESETS[size.field_preset]())


def _unit_programs(field, size: CheckSize, units: int):
    """{name: (fn, args, calls per timing unit, unit name)} of the study's compiled cores for
    U = ``units`` units: ``driver._chunk`` of ``training.flow_matching`` and
    ``vi.vi_algorithm``, ``adammcmc_run._advance``."""
    import jax
    import jax.numpy as jnp

    from bayesiamp_jax import Solver, sample_ring, training
    from bayesiamp_jax.flow import SIGMA_MIN
    from bayesiamp_jax.posteriors import adammcmc_run, driver, vi
    from bayesiamp_jax.posteriors.adammcmc import chain_init
    from bayesiamp_jax.posteriors.model import cfm_loss_fn, exact_nll_loss_fn

    u, e, b = units, size.epochs_per_call, size.batch_size
    keys = jax.random.split(jax.random.key(0), 4 * u).reshape(4, u)
    ring = sample_ring(jax.random.key(1), size.num_train)
    x = jnp.broadcast_to(ring.x, (u,) + ring.x.shape)
    c = jnp.broadcast_to(ring.c, (u,) + ring.c.shape)
    params = jax.jit(jax.vmap(field.init))(keys[0])
    active = jnp.asarray(e, jnp.int32)
    progs = {}

    opt = training.adam()
    state = jax.vmap(lambda p: training.init_train_state(p, opt))(params)
    fm_alg = training.flow_matching(field, sigma_min=SIGMA_MIN, optimizer=opt, batch_size=b)

    def fm(k, s, xx, cc):
        return driver._chunk(k, s, driver.Context((xx, cc)), active,
                             algorithm=fm_alg._replace(init=None), num_epochs=e, vmapped=True)

    progs["fm_epoch"] = (fm, (keys[1], state, x, c), e, "epoch")

    template = field.init(jax.random.key(2))
    statics = dict(loss_fn=cfm_loss_fn(field), prior_scale=1.0, optimizer=None, batch_size=b)
    data = (x, c)
    first = jax.tree_util.tree_map(lambda a: a[:, :b], data)
    vstate = vi._vi_init(keys[2], keys[3], params, first, 0.1, -3.0,
                         init_loc_from_params=False, vmapped=True, **statics)
    site = jax.vmap(lambda k: vi.kl_site_scale(template, k, b, "reference"))(jnp.full(u, 10.0))

    vi_alg = vi.vi_algorithm(statics["loss_fn"], batch_size=b)._replace(init=None)

    def vi_epochs(k, s, d, ss):
        return driver._chunk(k, s, driver.Context(d, ss, template), active, algorithm=vi_alg,
                             num_epochs=e, vmapped=True)

    progs["vi_epoch"] = (vi_epochs, (keys[1], vstate, data, site), e, "epoch")

    solver = Solver("rk4", size.mcmc_solver_steps, checkpoint=True)  # as experiments.train
    loss = adammcmc_run._Scaled(exact_nll_loss_fn(field, solver), float(size.num_train))
    chains = jax.vmap(lambda k, p: jax.vmap(chain_init)(
        k[None], jax.tree_util.tree_map(lambda a: a[None], p)))(keys[2], params)
    sigma = jnp.full(u, 0.1)
    sigma_dir = jnp.full(u, field.num_params() / 50.0)
    steps = size.mcmc_steps_per_call

    def mcmc(s, d, sg, sd):
        return adammcmc_run._advance(s, d, sg, sd, loss_fn=loss, num_steps=steps,
                                     batch_size=size.mcmc_batch, optimizer=None,
                                     inverse_temperature=1.0, adam_only=False, vmapped=True)

    progs["adammcmc_step"] = (mcmc, (chains, data, sigma, sigma_dir), steps, "step")
    return progs


def part_units(out: Path, size: CheckSize, args, save) -> dict:
    from types import SimpleNamespace

    from benchmarks import likelihood, training
    from benchmarks.common import record, time_jax

    field, peaks = _field(size), _peaks(out, size)
    ctx = SimpleNamespace(field=field, device=peaks, size=SimpleNamespace(
        num_train=size.num_train, batch_size=size.batch_size, likelihood_steps=None))
    mcmc_ctx = SimpleNamespace(field=field, device=peaks, size=SimpleNamespace(
        num_train=size.num_train, batch_size=size.mcmc_batch,
        likelihood_steps=size.mcmc_solver_steps))
    floors = {"fm_epoch": lambda s: training._epoch_floor(ctx, s),
              "vi_epoch": lambda s: training._epoch_floor(ctx, s),
              "adammcmc_step": lambda s: likelihood._adammcmc_floor(mcmc_ctx, s)}
    result = {"sizes": dataclasses.asdict(size), "peaks": peaks, "records": [],
              "field": {"hidden": list(field.hidden), "num_params": field.num_params()},
              "note": "one vmapped program per (kind, U) (driver._chunk of flow matching / VI, "
                      "adammcmc_run._advance); seconds are per epoch or step of all U units; "
                      "seconds_per_unit = seconds / U; speedup_vs_U1 = U · seconds(U=1) / "
                      "seconds(U); fraction_of_peak from the FLOPs of U units"}
    single = {}
    rest = sorted(set(size.units) - {1, max(size.units)})
    for u in [1, max(size.units), *rest] if 1 in size.units else size.units:
        try:
            programs = _unit_programs(field, size, u)
        except Exception as e:  # recorded; the other U still run
            result["records"].append({"name": "setup", "units": u, "error": _error(e)})
            continue
        for name, (fn, fargs, per, unit) in programs.items():
            try:
                t = time_jax(fn, *fargs, repeats=size.repeats)
            except Exception as e:  # recorded; the other programs still run
                result["records"].append({"name": name, "units": u, "error": _error(e)})
                print(f"{name:14s} U={u:3d} failed: {_error(e)}", flush=True)
                continue
            secs = t["median_s"] / per
            if u == 1:
                single[name] = secs
            rec = record(name, f"jax_U{u}", t, per=per, unit=f"{unit} of {u} units", units=u,
                         seconds_per_unit=secs / u,
                         speedup_vs_U1=(u * single[name] / secs) if name in single else None,
                         **floors[name](secs / u))
            result["records"].append(rec)
            print(f"{name:14s} U={u:3d} {secs * 1e3:9.3f} ms/{unit} "
                  f"({secs / u * 1e3:.3f} ms per unit), compile {t['compile_s']:.1f} s, "
                  f"fraction of peak {rec['fraction_of_peak']:.3g}", flush=True)
            save(dict(result, complete=False))
    return _with_errors(result)


def _error(e: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _with_errors(result: dict) -> dict:
    """``result`` with status "failed: k of m measurements failed (first: ...)" when any
    record carries an error (the others stay in the part's file)."""
    bad = [r for r in result["records"] if "error" in r]
    if bad:
        first = bad[0]
        what = " ".join(str(first.get(k)) for k in ("name", "impl", "solver", "units")
                        if first.get(k) is not None)
        result["status"] = (f"failed: {len(bad)} of {len(result['records'])} measurements "
                            f"failed (first: {what}: {first['error']})")
    return result


def part_generation(out: Path, size: CheckSize, args, save) -> dict:
    import jax
    import numpy as np

    from bayesiamp_jax import Solver, fit, sample_ring
    from bayesiamp_jax.evaluation.generate import DEFAULT_SOLVER, histogram_same_noise
    from benchmarks.common import record, time_host
    from benchmarks.floor import field_flops, floor

    field, peaks = _field(size), _peaks(out, size)
    key = jax.random.key(0)
    params = field.init(jax.random.fold_in(key, 2))
    if size.gen_train_epochs:  # the cost does not depend on training; realistic histograms do
        ring = sample_ring(jax.random.fold_in(key, 1), size.num_train)
        params = fit(jax.random.fold_in(key, 2), field, ring.x, ring.c, size.gen_train_epochs,
                     batch_size=min(size.batch_size, size.num_train), params=params,
                     progress=False).state.params
    s, n, bins = size.gen_draws, size.gen_samples, list(size.gen_bins)
    scales = np.linspace(1.0, 1.01, s)  # draw i: θ · scales[i]
    draws = jax.tree_util.tree_map(lambda a: np.stack([np.asarray(a) * f for f in scales]),
                                   params)
    on_gpu = jax.default_backend() == "gpu"
    result = {"sizes": dataclasses.asdict(size), "peaks": peaks, "draws": s,
              "samples_per_draw": n, "bins": bins, "chunk": size.gen_chunk,
              "pallas_mode": "compiled (Triton)" if on_gpu else "interpret (CPU)",
              "records": [], "comparison": {}, "counts": {},
              "train_epochs": size.gen_train_epochs,
              "note": "histogram_same_noise of S draws (the field's weights scaled by "
                      f"{list(scales)}); seconds per call for all draws; FLOPs = S · samples · "
                      "field evaluations · benchmarks.floor.field_flops"}
    flops_eval = field_flops(field)
    for label, solver in (("ab4-60", DEFAULT_SOLVER), ("rk4-20", Solver("rk4", 20))):
        counts = {}
        for path in ("xla", "pallas"):
            sv = dataclasses.replace(solver, backend="pallas") if path == "pallas" else solver

            def run(sv=sv):
                return [np.asarray(c) for c in histogram_same_noise(
                    jax.random.fold_in(key, 3), field, draws, bins, n, solver=sv,
                    chunk_size=size.gen_chunk, progress=False).counts]

            try:
                t = time_host(run, repeats=size.gen_repeats)
            except Exception as e:  # e.g. a Triton lowering error; recorded
                result["records"].append({"name": "gen_hist", "impl": path, "solver": label,
                                          "error": _error(e)})
                print(f"{label} {path:6s} failed: {_error(e)}", flush=True)
                save(dict(result, complete=False))
                continue
            counts[path] = t["output"]
            secs = t["median_s"]
            rec = record("gen_hist", path, t, unit="all draws", solver=label,
                         evals=solver.num_evals, samples=s * n, samples_per_s=s * n / secs,
                         totals=[int(c.sum()) for c in t["output"]],
                         **floor(s * n * solver.num_evals * flops_eval,
                                 s * sum(k * k for k in bins) * 4, peaks, secs))
            result["records"].append(rec)
            print(f"{label} {path:6s} {secs:9.4f} s  {s * n / secs:.3g} samples/s  fraction "
                  f"of peak {rec['fraction_of_peak']:.3g}  (first call {t['compile_s']:.1f} s)",
                  flush=True)
            save(dict(result, complete=False))
        result["counts"][label] = {path: {str(k): c.reshape(s, k, k).tolist()
                                          for k, c in zip(bins, cs, strict=True)}
                                   for path, cs in counts.items()}
        if len(counts) < 2:
            result["comparison"][label] = {"skipped": "a path failed (see records)"}
            continue
        cmp = {}
        for k, cx, cp in zip(bins, counts["xla"], counts["pallas"], strict=True):
            diff = np.abs(cx.astype(np.int64) - cp.astype(np.int64))
            cmp[str(k)] = {"total_xla": int(cx.sum()), "total_pallas": int(cp.sum()),
                           "totals_equal": int(cx.sum()) == int(cp.sum()),
                           "sum_abs_diff": int(diff.sum()), "moved_points": int(diff.sum()) // 2,
                           "moved_fraction": float(diff.sum() / 2 / max(int(cx.sum()), 1)),
                           "max_cell_diff": int(diff.max()), "identical": bool(diff.sum() == 0)}
        timed = {r["impl"]: r for r in result["records"] if r.get("solver") == label}
        cmp["speedup_pallas"] = timed["xla"]["seconds"] / timed["pallas"]["seconds"]
        result["comparison"][label] = cmp
        save(dict(result, complete=False))
    return _with_errors(result)


def part_quick_preset(out: Path, size: CheckSize, args, save) -> dict:
    from experiments.paper import main as paper

    study = out / size.study_preset
    if study.exists():  # the check's own folder: a fresh study, not a resumed one
        shutil.rmtree(study)
    cmd = ["--preset", size.study_preset, "--output", str(study), "--no-progress"]
    t0 = time.perf_counter()
    rc = paper(cmd)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"experiments.paper --preset {size.study_preset} exited with {rc}")
    report = json.loads((study / "report.json").read_text())
    return {"preset": size.study_preset, "wall_s": wall,
            "command": f"python -m experiments.paper --preset {size.study_preset} --output "
                       f"{study.name} --no-progress",
            "report": f"{study.name}/report.json", "stage_s": report["timings"],
            "budget": report.get("budget"), "device": report.get("device")}


def part_compare(out: Path, size: CheckSize, args, save) -> dict:
    report = out / size.study_preset / "report.json"
    if not args.cpu_report:
        return {"status": "skipped: no --cpu-report (a report.json of the same preset run on "
                          "a CPU)"}
    if not report.is_file():
        return {"status": f"skipped: no {report.relative_to(out)} (the quick_preset part did "
                          "not finish)"}
    gpu = json.loads(report.read_text())
    cpu = json.loads(Path(args.cpu_report).read_text())
    result = {"gpu_report": str(report.relative_to(out)), "cpu_report": str(args.cpu_report),
              "gpu_preset": gpu.get("preset"), "cpu_preset": cpu.get("preset"),
              **compare_reports(gpu, cpu)}
    tg, tc = gpu.get("timings", {}), cpu.get("timings", {})
    result["stage_s"] = {k: {"gpu": tg[k], "cpu": tc[k],
                             "cpu_over_gpu": tc[k] / tg[k] if tg[k] else None}
                         for k in tg if k in tc}
    if gpu.get("preset") != cpu.get("preset"):
        result["warning"] = (f"presets differ: {gpu.get('preset')!r} here, "
                             f"{cpu.get('preset')!r} in the CPU report")
    return result


PART_FUNCTIONS = {"device": part_device, "budget": part_budget, "units": part_units,
                  "generation": part_generation, "quick_preset": part_quick_preset,
                  "compare": part_compare}


def run_part(name: str, out: Path, size: CheckSize, args) -> dict:
    """Run one part and write ``<name>.json`` (partial results as they come, then the whole)."""
    path = out / f"{name}.json"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.perf_counter()
    result = PART_FUNCTIONS[name](out, size, args, lambda partial: _write(path, dict(
        partial, part=name, started_utc=started, status="running",
        wall_s=time.perf_counter() - t0)))
    result = {"status": "ok", **result, "part": name, "started_utc": started,
              "wall_s": time.perf_counter() - t0, "complete": True}
    _write(path, result)
    return result


# ------------------------------------------------------------------------------ the driver

class _Interrupted(Exception):
    pass


def _on_term(signum, frame):
    raise _Interrupted(f"signal {signum}")


def _last_line(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def _child(name: str, args, timeout: float) -> str:
    """Run part ``name`` in a child process; its status."""
    out = Path(args.out)
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--run-part", name, "--out", str(out)]
    cmd += ["--smoke"] if args.smoke else []
    cmd += ["--cpu-report", args.cpu_report] if args.cpu_report else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    if args.jax_cache:  # JAX's persistent compilation cache: a rerun compiles less
        env["JAX_COMPILATION_CACHE_DIR"] = args.jax_cache
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, _Interrupted, KeyboardInterrupt) as e:
            proc.kill()
            proc.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                return f"failed: timeout after {timeout:.0f} s (logs/{name}.log)"
            raise
    if rc != 0:
        return f"failed: {_last_line(log)} (exit status {rc}, logs/{name}.log)"
    part = out / f"{name}.json"
    if not part.is_file():
        return f"failed: no {part.name} written (logs/{name}.log)"
    return json.loads(part.read_text()).get("status", "ok")


def _in_process(name: str, args, size: CheckSize) -> str:
    try:
        return run_part(name, Path(args.out), size, args).get("status", "ok")
    except Exception as e:  # a failed part must not stop the others
        return f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("jax", "jaxlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _summary(out: Path, args, size, parts: dict, t_start: float, date: str) -> dict:
    dev = out / "device.json"
    device = None
    if dev.is_file() and parts.get("device", {}).get("status") == "ok":
        d = json.loads(dev.read_text())
        device = {"platform": d["platform"], "device_kind": d["device_kind"],
                  "num_devices": d["num_devices"], "peaks_source": d["peaks"]["source"]}
    summary = {"check": "benchmarks.gpu_check", "size": size.name, "date_utc": date,
               "jax_cache": args.jax_cache,
               "device": device, "versions": _versions(),
               "python": sys.version.split()[0], "budget_s": args.budget_s,
               "cpu_report": args.cpu_report, "parts": parts,
               "wall_s": time.perf_counter() - t_start}
    _write(out / SUMMARY, summary)
    return summary


def drive(args) -> dict:
    """Run the selected parts in order under the time budget; returns the summary."""
    size = SMOKE if args.smoke else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    selected = [p for p in PARTS if p in args.parts and p not in args.skip]
    timeouts = dict(size.timeouts_s)
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    parts = {p: {"status": "skipped: not selected", "wall_s": 0.0} for p in PARTS
             if p not in selected}
    earlier = out / SUMMARY  # a second try into the same folder keeps the first one's parts
    if earlier.is_file():
        before = json.loads(earlier.read_text())
        if before.get("size") == size.name:
            for p in parts:
                if p in before.get("parts", {}) and before["parts"][p]["status"] not in (
                        "skipped: not selected", "running"):
                    parts[p] = dict(before["parts"][p], from_run=before["date_utc"])
    previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        for i, name in enumerate(selected):
            left = deadline - time.perf_counter()
            if left < MIN_START_S:
                parts[name] = {"status": "skipped: budget", "wall_s": 0.0}
                continue
            timeout = min(timeouts[name] * args.timeout_scale, left)
            print(f"# {name}: started (timeout {timeout:.0f} s, {left:.0f} s of the budget left)",
                  flush=True)
            t0 = time.perf_counter()
            (out / f"{name}.json").unlink(missing_ok=True)  # no stale file from an earlier try
            parts[name] = {"status": "running", "wall_s": 0.0, "timeout_s": timeout}
            _summary(out, args, size, parts, t_start, date)
            try:
                status = (_in_process(name, args, size) if name in IN_PROCESS
                          else _child(name, args, timeout))
            except (_Interrupted, KeyboardInterrupt) as e:
                parts[name] = {"status": f"failed: interrupted ({e or 'Ctrl-C'})",
                               "wall_s": time.perf_counter() - t0, "timeout_s": timeout}
                for rest in selected[i + 1:]:
                    parts[rest] = {"status": "skipped: interrupted", "wall_s": 0.0}
                _summary(out, args, size, parts, t_start, date)
                raise
            parts[name] = {"status": status, "wall_s": time.perf_counter() - t0,
                           "timeout_s": timeout}
            if (out / f"{name}.json").is_file():
                parts[name]["file"] = f"{name}.json"
            print(f"# {name}: {status} ({parts[name]['wall_s']:.1f} s)", flush=True)
            _summary(out, args, size, parts, t_start, date)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _summary(out, args, size, parts, t_start, date)


def markdown(out: Path) -> str:
    """Markdown tables of a finished check's JSON files (for benchmarks/RESULTS.md)."""
    out = Path(out)

    def load(name):
        path = out / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    summary, lines = load("summary"), []
    dev = (summary or {}).get("device") or {}
    lines += [f"GPU check of {summary['date_utc'] if summary else '?'} on "
              f"{dev.get('device_kind', '?')} (jax {(summary or {}).get('versions', {}).get('jax')}"
              f"), size {(summary or {}).get('size')}; peaks: {dev.get('peaks_source', '?')}.", "",
              "| part | status | wall s |", "|---|---|---|"]
    done = (summary or {}).get("parts", {})
    for name in (p for p in PARTS if p in done):
        lines.append(f"| {name} | {done[name]['status']} | {done[name]['wall_s']:.1f} |")
    units = load("units")
    if units:
        lines += ["", "| unit | U | ms per epoch/step (all U) | ms per unit | speed-up vs U=1 "
                      "| fraction of peak | compile s |", "|---|---|---|---|---|---|---|"]
        for r in units["records"]:
            if "error" in r:
                lines.append(f"| {r['name']} | {r['units']} | failed: {r['error']} | | | | |")
                continue
            up = r["speedup_vs_U1"]
            lines.append(f"| {r['name']} | {r['units']} | {r['seconds'] * 1e3:.3f} | "
                         f"{r['seconds_per_unit'] * 1e3:.3f} | "
                         f"{'' if up is None else f'{up:.2f}'} | {r['fraction_of_peak']:.3g} | "
                         f"{r['compile_s']:.1f} |")
    gen = load("generation")
    if gen:
        lines += ["", f"Generation + binning, {gen['draws']} draws × {gen['samples_per_draw']:.3g} "
                      f"samples, grids {gen['bins']}, Pallas {gen['pallas_mode']}:", "",
                  "| solver | path | s per call | samples/s | fraction of peak | first call s |",
                  "|---|---|---|---|---|---|"]
        for r in gen["records"]:
            if "error" in r:
                lines.append(f"| {r['solver']} | {r['impl']} | failed: {r['error']} | | | |")
                continue
            lines.append(f"| {r['solver']} | {r['impl']} | {r['seconds']:.4f} | "
                         f"{r['samples_per_s']:.3g} | {r['fraction_of_peak']:.3g} | "
                         f"{r['compile_s']:.1f} |")
        for label, cmp in gen["comparison"].items():
            moved = {k: v["moved_points"] for k, v in cmp.items() if isinstance(v, dict)}
            speedup = cmp.get("speedup_pallas", float("nan"))
            lines.append(f"\n{label}: points in another cell (fused vs XLA) per grid {moved}; "
                         f"speed-up of the fused kernel {speedup:.2f}×")
    quick = load("quick_preset")
    if quick and "stage_s" in quick:
        lines += ["", f"{quick['preset']} preset end to end: {quick['wall_s']:.1f} s; stages (s): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in quick["stage_s"].items())]
    cmp = load("compare")
    if cmp and cmp.get("status") == "ok":
        lines += ["", f"report.json against the CPU's: {cmp['num_equal']} of {cmp['num_judged']} "
                      f"numbers equal, {cmp['num_finiteness_differs']} finite in one only, "
                      "largest relative differences:", "",
                  "| number | GPU | CPU | relative |", "|---|---|---|---|"]
        lines += [f"| {r['path']} | {r['gpu']:.6g} | {r['cpu']:.6g} | {r['rel']:.3g} |"
                  for r in cmp["largest_rel"][:10]]
        lines += ["", "Largest absolute differences:", "", "| number | GPU | CPU | absolute |",
                  "|---|---|---|---|"]
        lines += [f"| {r['path']} | {r['gpu']:.6g} | {r['cpu']:.6g} | {r['abs']:.3g} |"
                  for r in cmp["largest_abs"][:10]]
        lines += ["", "| stage | GPU s | CPU s | CPU / GPU |", "|---|---|---|---|"]
        for k, v in cmp.get("stage_s", {}).items():
            ratio = "" if v["cpu_over_gpu"] is None else f"{v['cpu_over_gpu']:.2f}"
            lines.append(f"| {k} | {v['gpu']:.1f} | {v['cpu']:.1f} | {ratio} |")
    return "\n".join(lines)


def _names(text: str) -> list[str]:
    names = [p for p in text.split(",") if p]
    bad = [p for p in names if p not in PARTS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown part(s) {bad}; parts are {list(PARTS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (created; parts overwrite)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes for a CPU rehearsal (U = 1, 2; 10^4 samples; tiny preset)")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="time budget of all parts in seconds (default 480 = 8 min)")
    p.add_argument("--cpu-report", default=None,
                   help="report.json of the same preset run on a CPU (compare part)")
    p.add_argument("--parts", type=_names, default=list(PARTS),
                   help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    p.add_argument("--skip", type=_names, default=[], help="comma-separated parts to leave out")
    p.add_argument("--timeout-scale", type=float, default=1.0,
                   help="multiply every per-part timeout (a slow or loaded machine)")
    p.add_argument("--jax-cache", default=None, metavar="DIR",
                   help="JAX persistent compilation cache for the parts (a second try on the "
                        "same machine compiles less; compile times then read from the cache)")
    p.add_argument("--markdown", action="store_true",
                   help="print markdown tables of the JSON files already in --out and exit")
    p.add_argument("--run-part", choices=PARTS, default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.out = str(Path(args.out).resolve())
    if args.jax_cache:
        args.jax_cache = str(Path(args.jax_cache).resolve())
    if args.cpu_report:
        args.cpu_report = str(Path(args.cpu_report).resolve())
        if not Path(args.cpu_report).is_file():
            print(f"error: --cpu-report {args.cpu_report} is not a file", file=sys.stderr)
            return 2
    if args.budget_s <= 0:
        print(f"error: --budget-s must be > 0, got {args.budget_s}", file=sys.stderr)
        return 2
    if args.markdown:
        print(markdown(Path(args.out)))
        return 0
    if args.run_part:
        run_part(args.run_part, Path(args.out), SMOKE if args.smoke else FULL, args)
        return 0
    try:
        summary = drive(args)
    except (_Interrupted, KeyboardInterrupt) as e:
        print(f"# interrupted ({e or 'Ctrl-C'}); {Path(args.out) / SUMMARY} keeps the finished "
              "parts", file=sys.stderr)
        return 130
    failed = [p for p, s in summary["parts"].items() if s["status"].startswith("failed")]
    print(f"# wrote {Path(args.out) / SUMMARY}; "
          + (f"failed: {', '.join(failed)}" if failed else "no part failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
