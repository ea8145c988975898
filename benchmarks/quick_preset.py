"""Wall time of the whole quick study: ``python -m experiments.paper --preset quick``.

Runs in a fresh subprocess (compilation included) with a temporary output folder; skipped at
the tiny size (it takes minutes) and when ``experiments.paper`` is not there.
Run ``python -m benchmarks.quick_preset --size cpu``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time

TIMEOUT_S = 3600


def bench_quick_preset(ctx) -> list[dict]:
    base = {"name": "quick_preset", "impl": "jax", "unit": "study"}
    if ctx.size.name == "tiny":
        return [{**base, "skipped": "not run at the tiny size (takes minutes)"}]
    if importlib.util.find_spec("experiments.paper") is None:
        return [{**base, "skipped": "experiments.paper is not available"}]
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "experiments.paper", "--preset", "quick", "--output", out,
               "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        wall = time.perf_counter() - t0
    rec = {**base, "seconds": wall, "command": " ".join(cmd[1:5] + cmd[7:]),
           "returncode": proc.returncode}
    if proc.returncode != 0:
        rec["stderr_tail"] = proc.stderr[-2000:]
    return [rec]


BENCHMARKS = {"quick_preset": bench_quick_preset}

if __name__ == "__main__":
    from benchmarks.runner import main

    main(BENCHMARKS, prog="python -m benchmarks.quick_preset", description=__doc__)
