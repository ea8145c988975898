"""Generation per ODE solver: samples/s, vector-field evaluations and error vs a tight solve.

Errors are measured on the first ``ERR_POINTS`` samples against fixed-step RK4 with
``TIGHT_STEPS`` steps (row-independent, so a subset gives the same answer as the full batch).
Also: the evaluation's default solver (no PyTorch counterpart: compare it with the baseline's
RK4 at equal histogram accuracy, ``benchmarks.interleaved``), the chunked fast path
(``benchmarks.fast.decode_chunked``) for the fixed-step solvers,
the smallest RK4 step count as accurate as Dormand–Prince, and the PyTorch/zuko baseline.
Run ``python -m benchmarks.generation --size tiny``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import Solver
from bayesiamp_jax.flow import _transport
from bayesiamp_jax.integrate import integrate
from benchmarks import fast
from benchmarks.common import record, time_jax, time_torch
from benchmarks.floor import FLOAT_BYTES, field_flops, floor

TIGHT_STEPS = 512
ERR_POINTS = 2048
REFERENCE_TOL = {"rtol": 1e-5, "atol": 1e-6}  # the reference's Dormand–Prince settings


def solvers(size) -> list[Solver]:
    """Fixed-step solvers at the size's step counts and the evaluation's default
    (``generate.DEFAULT_SOLVER``, Adams–Bashforth 4), then the adaptive ones."""
    from bayesiamp_jax.evaluation.generate import DEFAULT_SOLVER

    most = max(size.fixed_steps)
    fixed = [Solver("euler", most), Solver("midpoint", most)] if size.all_solvers else []
    fixed += [Solver("rk4", n) for n in size.fixed_steps] + [DEFAULT_SOLVER]
    adaptive = [Solver("dopri5", **REFERENCE_TOL)]
    if size.all_solvers:
        adaptive.append(Solver("tsit5", **REFERENCE_TOL))
    return fixed + adaptive


def label(solver: Solver) -> str:
    return solver.name if solver.adaptive else f"{solver.name}-{solver.num_steps}"


def errors(x, ref) -> dict:
    d = np.linalg.norm(np.asarray(x)[: len(ref)] - ref, axis=-1)
    return {"max_err": float(d.max()), "rms_err": float(np.sqrt(np.mean(d**2)))}


def _inputs(ctx):
    n = ctx.size.gen_samples
    z = jax.random.normal(ctx.key(10), (n, ctx.field.data_dim))
    c = jnp.full((n, ctx.field.cond_dim), 4.0)
    return z, c


def reference_solution(ctx, params, z, c):
    m = min(ERR_POINTS, z.shape[0])
    tight = Solver("rk4", TIGHT_STEPS)
    return np.asarray(_transport(ctx.field, params, z[:m], c[:m], tight, 1.0, 0.0))


def bench_generation(ctx) -> list[dict]:
    params = ctx.trained_params()
    z, c = _inputs(ctx)
    n = z.shape[0]
    ref = reference_solution(ctx, params, z, c)
    flops_eval = field_flops(ctx.field)
    repeats = max(1, ctx.size.repeats // 2)
    records = []

    def add(impl, solver, timing, evals, x, chunk=None):
        secs, evals = timing["median_s"], int(evals)  # a Python int: n · evals · flops > 2³¹
        records.append(ctx.log(record(
            "generation", impl, timing, unit="solve", solver=label(solver), samples=n,
            evals=int(evals), samples_per_s=n / secs, chunk=chunk, **errors(x, ref),
            **floor(n * evals * flops_eval, n * 2 * (ctx.field.data_dim + ctx.field.cond_dim)
                    * FLOAT_BYTES, ctx.device, secs))))

    chunk = min(ctx.size.chunk, n)
    for solver in solvers(ctx.size):
        t = time_jax(partial(_solve, ctx.field, solver), params, z, c, repeats=repeats)
        sol = t["output"]
        add("jax", solver, t, sol.num_evals, sol.y1)
        if not solver.adaptive:
            t = time_jax(partial(fast.decode_chunked, ctx.field, solver=solver, chunk=chunk),
                         params, z, c, repeats=repeats)
            add("jax_chunked", solver, t, sol.num_evals, t["output"], chunk)
    records.extend(_equal_accuracy(records))
    if ctx.baseline:
        records.extend(_torch_generation(ctx, z, c, ref, flops_eval, repeats))
    return records


def _solve(field, solver, params, z, c):
    """The simple path: one ODE solve of the whole batch (returns the ``Solution``)."""
    return integrate(lambda t, y, _: field(params, t, y, c), z, 1.0, 0.0, solver)


def _equal_accuracy(records) -> list[dict]:
    """Per error measure, the cheapest RK4 at most as wrong as Dormand–Prince (jax impl)."""
    jax_recs = [r for r in records if r["impl"] == "jax"]
    dopri = [r for r in jax_recs if r["solver"] == "dopri5"]
    out = []
    for err in ("max_err", "rms_err") if dopri else ():
        ok = [r for r in jax_recs if r["solver"].startswith("rk4") and r[err] <= dopri[0][err]]
        if not ok:
            out.append({"name": "generation_equal_accuracy", "impl": "jax", "criterion": err,
                        "skipped": f"no RK4 step count tried reaches dopri5's {err}"})
            continue
        best = min(ok, key=lambda r: r["evals"])
        out.append({"name": "generation_equal_accuracy", "impl": "jax", "unit": "solve",
                    "criterion": err, "solver": best["solver"], "evals": best["evals"],
                    err: best[err], "seconds": best["seconds"],
                    "dopri5_evals": dopri[0]["evals"], f"dopri5_{err}": dopri[0][err],
                    "dopri5_seconds": dopri[0]["seconds"],
                    "speedup_vs_dopri5": dopri[0]["seconds"] / best["seconds"]})
    return out


def _torch_generation(ctx, z, c, ref, flops_eval, repeats) -> list[dict]:
    import torch

    from benchmarks import torch_ref

    field = ctx.torch_field()
    zt, ct = torch.as_tensor(np.array(z)), torch.as_tensor(np.array(c))
    n = zt.shape[0]
    evals = [0]

    def counted(t, x, c):
        evals[0] += 1
        return field(t, x, c)

    out = []
    runs = [("dopri5", lambda: torch_ref.decode_dopri5(counted, zt, ct, **REFERENCE_TOL))]
    runs += [(f"rk4-{k}", lambda k=k: torch_ref.decode_rk4(field, zt, ct, k))
             for k in ctx.size.fixed_steps]
    for name, fn in runs:
        evals[0] = 0
        fn()
        num_evals = evals[0] if name == "dopri5" else 4 * int(name.split("-")[1])
        t = time_torch(fn, repeats=repeats)
        secs = t["median_s"]
        out.append(ctx.log(record("generation", "torch", t, unit="solve", solver=name, samples=n,
                          evals=num_evals, samples_per_s=n / secs,
                          **errors(t["output"].numpy(), ref),
                          **floor(n * num_evals * flops_eval, 0, ctx.device, secs))))
    return out


BENCHMARKS = {"generation": bench_generation}

if __name__ == "__main__":
    from benchmarks.runner import main

    main(BENCHMARKS, prog="python -m benchmarks.generation", description=__doc__)
