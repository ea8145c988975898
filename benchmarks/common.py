"""Timing, size presets and environment facts shared by every benchmark.

A benchmark function returns a list of ``Record`` dicts (JSON-ready). JAX timings separate
compile time (AOT ``lower().compile()``) from steady state (median over repeats of the compiled
call, blocked until ready); PyTorch timings separate the first (warm-up) call likewise.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import jax
import numpy as np

from experiments.settings import apply_override, setting


@dataclasses.dataclass(frozen=True)
class Size:
    """Problem sizes of one preset (see ``SIZES``)."""

    name: str = setting(doc="the size preset (choose it with --size)", fixed=True)
    num_train: int = setting(doc="training points of an epoch")
    batch_size: int = setting(doc="mini-batch of an epoch / of the AdamMCMC likelihood")
    epochs_per_call: int = setting(doc="epochs inside one timed call (time is reported per epoch)")
    likelihood_steps: int = setting(doc="RK4 steps of the exact likelihood (AdamMCMC, NUTS)")
    nuts_points: int = setting(doc="points in the NUTS potential")
    gen_samples: int = setting(doc="samples of one generation benchmark")
    pretrain_epochs: int = setting(doc="flow-matching epochs before measuring solver errors")
    fixed_steps: tuple[int, ...] = setting(doc="step counts of the fixed-step solvers")
    hist_points: int = setting(doc="points of the histogramming benchmark")
    hist_bins: int = setting(doc="n of the n × n quantile grid")
    draws: int = setting(doc="S posterior draws in generation + histogramming")
    draw_samples: int = setting(doc="samples per draw there")
    chunk: int = setting(doc="samples per chunk of the chunked (cache-blocked) fast paths")
    repeats: int = setting(doc="timed calls per benchmark (after one warm-up)")
    all_solvers: bool = setting(True, "also Euler, midpoint and Tsit5 (else RK4 and "
                                "Dormand–Prince)")


SIZES = {
    "tiny": Size("tiny", 512, 128, 2, 4, 256, 2048, 5, (4,), 20_000, 10, 3, 1024, 512, 3,
                 all_solvers=False),
    "cpu": Size("cpu", 10_000, 1000, 10, 20, 10_000, 50_000, 300, (8, 16, 32), 10_000_000,
                50, 5, 100_000, 4096, 5),
    "paper": Size("paper", 10_000, 1000, 10, 20, 10_000, 10_000_000, 2500, (8, 16, 32),
                  10_000_000, 50, 50, 10_000_000, 65536, 5),
}


def get_size(name: str) -> Size:
    if name not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {name!r}")
    return SIZES[name]


def sized(name: str, overrides=()) -> Size:
    """The preset ``name`` with ``FIELD=VALUE`` overrides (typed by field, as ``--set``)."""
    size = get_size(name)
    for item in overrides:
        size = apply_override(size, item)
    return size


def block(tree):
    """Wait until every array leaf (JAX or PyTorch) of ``tree`` is computed."""
    return jax.block_until_ready(tree)


def time_jax(fn: Callable, *args, repeats: int = 5) -> dict:
    """Compile ``jax.jit(fn)`` ahead of time, then time ``repeats`` calls (after one warm-up).

    Returns ``{"compile_s", "median_s", "min_s", "times_s", "cpu_s", "output"}``; ``cpu_s`` is
    the median process CPU time (all threads) of a call, less sensitive to other processes'
    load than the wall time.
    """
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = block(compiled(*args))
    return _timing(compile_s, *_repeat(lambda: block(compiled(*args)), repeats, out))


def time_host(fn: Callable, *args, repeats: int = 5, sync: Callable | None = None) -> dict:
    """Time a host-side callable (PyTorch, numpy, or a JAX call that compiles on first use).

    The first call is reported as ``compile_s`` (warm-up: compilation, allocator, caches).
    """
    sync = sync or (lambda out: out)
    t0 = time.perf_counter()
    out = sync(fn(*args))
    compile_s = time.perf_counter() - t0
    return _timing(compile_s, *_repeat(lambda: sync(fn(*args)), repeats, out))


def _repeat(call: Callable, repeats: int, out) -> tuple[list, object, list]:
    """(wall times, last output, CPU times) of ``repeats`` calls of ``call()``; ``out`` is
    returned as the output if there are none (the warm-up call's)."""
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, out, cpu


def time_torch(fn: Callable, *args, repeats: int = 5) -> dict:
    """``time_host`` of a PyTorch callable at its better intra-op thread count (1 or all).

    On a small or shared CPU, torch's thread pool can be several times slower than one thread;
    one probe call per setting picks the faster (reported as ``torch_threads``), then the
    warm-up and the ``repeats`` timed calls run with it.
    """
    import torch

    before = torch.get_num_threads()
    try:
        probes = {}
        for threads in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            fn(*args)
            probes[threads] = time.perf_counter() - t0
        best = min(probes, key=probes.get)
        torch.set_num_threads(best)
        t = time_host(fn, *args, repeats=repeats)
        t["torch_threads"] = best
    finally:
        torch.set_num_threads(before)
    return t


def _timing(compile_s, times, out, cpu) -> dict:
    return {
        "compile_s": compile_s,
        "cpu_s": statistics.median(cpu),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "output": out,
    }


def record(name: str, impl: str, timing: dict, per: float = 1.0, unit: str = "call",
           **extra) -> dict:
    """A JSON-ready result: steady-state seconds per ``unit`` (median over repeats / ``per``)."""
    rec = {
        "name": name,
        "impl": impl,
        "unit": unit,
        "seconds": timing["median_s"] / per,
        "min_seconds": timing["min_s"] / per,
        "max_seconds": max(timing["times_s"]) / per if timing["times_s"] else None,
        "times_s": [t / per for t in timing["times_s"]],
        "compile_s": timing["compile_s"],
        "cpu_seconds": timing["cpu_s"] / per,
        "repeats": len(timing["times_s"]),
    }
    if "torch_threads" in timing:
        rec["torch_threads"] = timing["torch_threads"]
    rec.update({k: _plain(v) for k, v in extra.items()})
    return rec


def _plain(v):
    if isinstance(v, (np.generic, np.ndarray)) or hasattr(v, "__array__"):
        a = np.asarray(v)
        return a.item() if a.ndim == 0 else a.tolist()
    return v


def cpu_model() -> str:
    """The CPU model from lscpu (falls back to platform.processor())."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """Device, library versions and host facts for the JSON header."""
    import diffrax
    import flax
    import numpyro
    import optax

    env = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "versions": {
            "jax": jax.__version__,
            "jaxlib": getattr(jax.lib, "__version__", None) or _dist_version("jaxlib"),
            "flax": flax.__version__,
            "optax": optax.__version__,
            "diffrax": _dist_version("diffrax") or getattr(diffrax, "__version__", None),
            "numpyro": numpyro.__version__,
            "numpy": np.__version__,
            "torch": _dist_version("torch"),
            "zuko": _dist_version("zuko"),
        },
    }
    return env


def _dist_version(name: str):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def torch_available() -> bool:
    """True when the optional PyTorch baseline (torch and zuko) can be imported."""
    try:
        import torch  # noqa: F401
        import zuko  # noqa: F401
    except ImportError:
        return False
    return True


TORCH_MISSING = (
    "PyTorch baseline skipped: torch and zuko are not installed "
    "(pip install -e '.[bench]' installs torch==2.13.0 and zuko)"
)


def format_record(r: dict) -> str:
    """One line of a benchmark record: name, implementation, solver, time and key figures."""
    parts = [f"{r['name']:<26}", f"{r.get('impl', ''):<12}"]
    if r.get("solver"):
        parts.append(f"{r['solver']:<10}")
    if "seconds" in r:
        parts.append(f"{r['seconds'] * 1e3:10.3f} ms/{r.get('unit', 'call')}")
    if "compile_s" in r:
        parts.append(f"compile {r['compile_s']:.2f} s")
    for k in ("samples_per_s", "evals", "max_err", "fraction_of_peak", "speedup_vs_dopri5"):
        if r.get(k) is not None:
            v = r[k]
            parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    if r.get("skipped"):
        parts.append(f"SKIPPED: {r['skipped']}")
    return " ".join(parts)
