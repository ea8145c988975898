"""Which ODE solver and step schedule generation needs: histogram error against a tight solve.

    python -m benchmarks.solver_study [--epochs 300,2501] [--samples 262144] [--params FILE]
                                      [--study DIR]  (a shell study: its field and grids)
                                      [--candidates multistep | 'rk4-20,ab4-60,...']
                                      [--stiffness]
                                      [--output benchmarks/results/cpu_solver_study.json]

For a trained field (flow matching on the ring, ``--epochs`` epochs with the benchmarks' seed,
or ``--params`` a ``models/deterministic.msgpack``), ``--samples`` noise points are decoded by
every candidate solver (float32, chunks of ``CHUNK`` as in ``evaluation.generate``) and by the
reference, Dormand–Prince at rtol 1e-8 / atol 1e-9 (max norm) in float64. Per candidate and
n × n truth-quantile grid:

- ``migrated``: fraction f of the samples whose cell differs from the reference's;
- ``sigma_ratio_1e7``: the RMS over cells of the histogram error in units of the Monte Carlo
  std sqrt(N p_c) at N = 10⁷ samples. With m_c the samples that left or entered cell c and
  Δ_c its count difference on n samples, the error of a cell at N is N b_c (systematic, b_c² ≈
  (Δ_c² − m_c) / n²) plus a random part of variance N g_c (g_c ≈ m_c / n), so
  ratio² = (1/K) Σ_c (N b_c² + g_c) / p_c over the K cells (the systematic term is an unbiased
  estimate, floored at 0).

A solver is "below the noise" when ``sigma_ratio_1e7 ≤ THRESHOLD`` (0.1: the histogram's total
error grows by ≤ 0.5 % over the MC noise) for every grid up to ``--max-bins``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import Solver, VectorField, data
from bayesiamp_jax.integrate import integrate

CHUNK = 2**15
N_TARGET = 10_000_000
THRESHOLD = 0.1
BINS = (10, 20, 50, 100)
REFERENCE = Solver("dopri5", rtol=1e-8, atol=1e-9, norm="max", max_steps=100_000)


POWERS = (0.5, 0.65, 0.8, 1.0, 1.5, 2.0)


def candidates(powers=POWERS, fine: bool = False) -> list[Solver]:
    """Adaptive Dormand–Prince per chunk, and RK4 / fixed DP5 / midpoint per step schedule.

    ``fine``: only the uniform schedule, step counts between 48 and 80 evaluations.
    """
    if fine:
        return ([Solver("dopri5", rtol=r, atol=r / 10) for r in (1e-5, 1e-4, 2e-4)]
                + [Solver("rk4", n) for n in (12, 14, 16, 18, 20)]
                + [Solver("dp5", n) for n in (8, 9, 10, 12)]
                + [Solver("rk4", 20, power=0.8), Solver("rk4", 16, power=0.8)])
    out = [Solver("dopri5", rtol=1e-5, atol=1e-6), Solver("dopri5", rtol=1e-4, atol=1e-5),
           Solver("dopri5", rtol=1e-3, atol=1e-4)]
    for p in powers:
        out += [Solver("rk4", n, power=p) for n in (6, 8, 10, 12, 16, 20)]
        out += [Solver("dp5", n, power=p) for n in (4, 6, 8)]
    out += [Solver("midpoint", n, power=p) for n in (16, 32) for p in (1.0, 0.65)]
    return out


MULTISTEP = ("rk4-18", "rk4-20", "ab3-60", "ab3-70", "ab4-44", "ab4-48", "ab4-52", "ab4-56",
             "ab4-60", "ab4-64", "ab5-52", "ab5-60", "ab5-68")


def parse(text: str) -> Solver:
    """A candidate from its label: "rk4-20", "rk4-16 p=0.8", "ab4-60", "dopri5 rtol=1e-4"."""
    head, *opts = text.split()
    kw = dict(o.split("=") for o in opts)
    if head in ("dopri5", "tsit5"):
        r = float(kw.get("rtol", 1e-5))
        return Solver(head, rtol=r, atol=r / 10)
    name, _, steps = head.partition("-")
    if not steps.isdigit():
        raise ValueError(f"--candidates: expected a label like 'rk4-20' or 'dopri5 rtol=1e-4', "
                         f"got {text!r}")
    return Solver(name, int(steps), power=float(kw.get("p", 1.0)))


def label(s: Solver) -> str:
    if s.adaptive:
        return f"{s.name} rtol={s.rtol:g}"
    return f"{s.name}-{s.num_steps}" + ("" if s.power == 1.0 else f" p={s.power:g}")


def trained_field(epochs: int, seed: int = 0, params_path=None):
    """(field, params): the default ``VectorField`` after ``epochs`` flow-matching epochs."""
    from bayesiamp_jax import fit, sample_ring
    from bayesiamp_jax.checkpoint import load_pytree

    field = VectorField()
    if params_path:
        state = load_pytree(params_path)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), state["params"])
        return field, params
    key = jax.random.PRNGKey(seed)
    ring = sample_ring(jax.random.fold_in(key, 1), 10_000)
    res = fit(jax.random.fold_in(key, 2), field, ring.x, ring.c, epochs, batch_size=1000,
              progress=False)
    return field, res.state.params


def study_field(folder):
    """(field, run 0's deterministic params, problem) of a study folder with exact marginals."""
    from pathlib import Path

    from bayesiamp_jax.checkpoint import load_pytree
    from experiments import config
    from experiments.data import field_from_config, problem_from_config

    cfg = config.load(Path(folder) / "config.json")
    problem = problem_from_config(cfg)
    if problem.marginals is None or problem.ring:
        raise ValueError(f"--study {folder!r}: needs a study with exact marginals other than "
                         "the ring (the shell); use --params for the ring")
    state = load_pytree(Path(folder) / "models" / "deterministic.msgpack")
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), state["params"])
    return field_from_config(cfg), params, problem


@partial(jax.jit, static_argnames=("field", "solver"))
def _decode_chunks(field, solver, params, z, c):
    """Decode z (k, CHUNK, d) chunk by chunk: (points (k, CHUNK, d), evals (k,))."""
    def one(zc):
        sol = integrate(lambda t, y, _: field(params, t, y, c), zc, 1.0, 0.0, solver)
        return sol.y1, sol.num_evals

    return jax.lax.map(one, z)


def cells(x: np.ndarray, num_bins: int) -> np.ndarray:
    """Flat truth-quantile cell of each point (float64 numpy, -1 never happens: open edges)."""
    e = data.quantile_edges(num_bins)
    r = np.hypot(x[:, 0], x[:, 1])
    phi = np.mod(np.arctan2(x[:, 1], x[:, 0]), 2 * math.pi)
    i_r = np.clip(np.searchsorted(e.r, r, side="right") - 1, 0, num_bins - 1)
    i_p = np.clip(np.searchsorted(e.phi, phi, side="right") - 1, 0, num_bins - 1)
    return i_r * num_bins + i_p


def problem_cells(problem):
    """``cells`` for a ``datasets.Problem`` with exact marginals (the shell's (r, cos θ)): the
    flat n × n truth-quantile cell of each point, the observable computed in float64."""
    from bayesiamp_jax import observables

    def cell(x: np.ndarray, num_bins: int) -> np.ndarray:
        with jax.enable_x64(True):
            v = np.asarray(observables.values(problem.observable, jnp.asarray(x, jnp.float64)))
        edges = problem.binning(num_bins).edges
        idx = [np.clip(np.searchsorted(e, v[:, j], side="right") - 1, 0, len(e) - 2)
               for j, e in enumerate(edges)]
        return np.ravel_multi_index(idx, [len(e) - 1 for e in edges])

    return cell


def histogram_error(x, ref_cells: dict, n_target: int = N_TARGET, cell_fn=cells) -> dict:
    """Migration fraction and error in MC-noise units at ``n_target`` per grid (see module)."""
    n = x.shape[0]
    out = {}
    for k, rc in ref_cells.items():
        cc = cell_fn(x, k)
        moved = cc != rc
        cells_total = k * k
        out_c = np.bincount(rc[moved], minlength=cells_total)
        in_c = np.bincount(cc[moved], minlength=cells_total)
        delta = in_c - out_c
        m = in_c + out_c
        p = 1.0 / cells_total
        b2 = np.maximum((delta.astype(float) ** 2 - m).sum(), 0.0) / n**2
        g = m.sum() / n
        ratio2 = (n_target * b2 + g) / p / cells_total
        out[f"{k}x{k}"] = {"migrated": float(moved.mean()), "sigma_ratio_1e7": math.sqrt(ratio2),
                           "systematic_1e7": math.sqrt(n_target * b2 / p / cells_total),
                           "random_1e7": math.sqrt(g / p / cells_total),
                           "max_abs_delta": int(np.abs(delta).max())}
    return out


def study(field, params, num_samples: int, seed: int = 0, max_bins: int = 100,
          progress: bool = True, powers=POWERS, cache_dir=None, fine: bool = False,
          reference: Solver = REFERENCE, solvers=None, problem=None) -> dict:
    """Every candidate against ``reference`` (see the module). ``problem``: a
    ``datasets.Problem`` with exact marginals whose grids and condition to use (default: the
    ring's)."""
    num_chunks = -(-num_samples // CHUNK)
    n = num_chunks * CHUNK
    z = jax.random.normal(jax.random.PRNGKey(seed + 100), (num_chunks, CHUNK, field.data_dim))
    c = condition(problem)
    cell_fn = cells if problem is None else problem_cells(problem)
    t0 = time.perf_counter()
    cache = None
    if cache_dir:
        from bayesiamp_jax.resumable import digest

        tag = digest({"p": params, "z": np.asarray(z), "ref": np.asarray(repr(reference))})
        cache = os.path.join(cache_dir, f"solver_study_ref_{tag}.npz")
    if cache and os.path.isfile(cache):
        with np.load(cache) as f:
            ref, ref_evals, ref_s = f["ref"], f["evals"], float(f["seconds"])
    else:
        with jax.enable_x64(True):
            p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
            ref, ref_evals = _decode_chunks(field, reference, p64, jnp.asarray(z, jnp.float64),
                                            jnp.asarray(c, jnp.float64))
            ref = np.asarray(ref, np.float64).reshape(n, field.data_dim)
            ref_evals = np.asarray(ref_evals)
        ref_s = time.perf_counter() - t0
        if cache:
            os.makedirs(cache_dir, exist_ok=True)
            np.savez(cache, ref=ref, evals=ref_evals, seconds=ref_s)
    if progress:
        print(f"reference {label(reference)} float64: {ref_s:.1f} s, evals/chunk "
              f"{ref_evals.min()}..{ref_evals.max()}", flush=True)
    bins = [b for b in BINS if b <= max_bins]
    ref_cells = {b: cell_fn(ref, b) for b in bins}
    rows = []
    for s in solvers or candidates(powers, fine):
        t0 = time.perf_counter()
        x, evals = _decode_chunks(field, s, params, z, c)
        x = np.asarray(x, np.float64).reshape(n, field.data_dim)
        secs = time.perf_counter() - t0
        d = np.linalg.norm(x - ref, axis=-1)
        row = {"solver": label(s), "name": s.name, "num_steps": s.num_steps, "power": s.power,
               "rtol": s.rtol if s.adaptive else None,
               "evals": float(np.mean(np.asarray(evals))), "max_err": float(d.max()),
               "rms_err": float(np.sqrt(np.mean(d**2))), "seconds_incl_compile": secs,
               "hist": histogram_error(x, ref_cells, cell_fn=cell_fn)}
        row["worst_sigma_ratio_1e7"] = max(h["sigma_ratio_1e7"] for h in row["hist"].values())
        row["below_noise"] = row["worst_sigma_ratio_1e7"] <= THRESHOLD
        rows.append(row)
        if progress:
            h = " ".join(f"{k}:{v['migrated']:.1e}/{v['sigma_ratio_1e7']:.3f}"
                         for k, v in row["hist"].items())
            print(f"{row['solver']:<22} evals {row['evals']:6.1f} max {row['max_err']:.2e} "
                  f"rms {row['rms_err']:.2e}  {h}", flush=True)
    ok = [r for r in rows if r["below_noise"]]
    best = min(ok, key=lambda r: r["evals"]) if ok else None
    return {"samples": n, "reference": label(reference) + " (max norm), float64",
            "reference_evals_per_chunk": ref_evals.tolist(), "reference_s": ref_s,
            "threshold": THRESHOLD, "n_target": N_TARGET, "bins": bins, "rows": rows,
            "cheapest_below_noise": best and best["solver"],
            "cheapest_below_noise_evals": best and best["evals"]}


def condition(problem=None) -> jax.Array:
    """The condition every candidate decodes with: the problem's, or the ring's r_mean."""
    return jnp.full((1,), data.DEFAULT_R_MEAN if problem is None else problem.condition)


def stiffness(field, params, num_points: int = 8192, num_steps: int = 240, seed: int = 7,
              problem=None) -> dict:
    """Eigenvalues λ of ∂v/∂x along decode paths (RK4, ``num_steps`` steps, t: 1 → 0).

    Decoding steps with h < 0, so an eigenvalue with Re λ > 0 contracts the paths and is what
    bounds an explicit solver's step (stability of h λ); Adams–Bashforth 4 needs |h| λ < 0.3 on
    the real axis, RK4 |h| λ < 2.79. ``problem``: whose condition to use (default the ring's).
    """
    c = condition(problem)
    z = jax.random.normal(jax.random.PRNGKey(seed), (num_points, field.data_dim))
    h = -1.0 / num_steps

    @jax.jit
    def run(z):
        def body(y, i):
            t = 1.0 + i * h
            jac = jax.vmap(jax.jacfwd(lambda x: field(params, t, x, c)))(y)
            ev = jnp.linalg.eigvals(jac)
            y1 = integrate(lambda tt, yy, _: field(params, tt, yy, c), y, t, t + h,
                           Solver("rk4", 1)).y1
            return y1, (jnp.max(ev.real, axis=-1), jnp.max(jnp.abs(ev), axis=-1))
        return jax.lax.scan(body, z, jnp.arange(num_steps, dtype=jnp.float32))[1]

    contraction, modulus = (np.asarray(a) for a in run(z))
    per_t = contraction.max(axis=1)
    return {"points": num_points, "steps": num_steps,
            "max_contraction_rate": float(per_t.max()),
            "t_of_max_contraction": float(1.0 - np.argmax(per_t) / num_steps),
            "max_abs_eigenvalue": float(modulus.max())}


def main(argv=None):
    from benchmarks.common import environment

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", default="300,2501")
    parser.add_argument("--params", default=None, help="models/deterministic.msgpack to use")
    parser.add_argument("--study", default=None,
                        help="a study folder (e.g. the shell's): its field, run 0's deterministic "
                             "params and its problem's exact truth-quantile grids")
    parser.add_argument("--samples", type=int, default=2**18)
    parser.add_argument("--max-bins", type=int, default=100)
    parser.add_argument("--powers", default=",".join(str(p) for p in POWERS))
    parser.add_argument("--fine", action="store_true",
                        help="only uniform schedules between 48 and 80 evaluations")
    parser.add_argument("--candidates", default=None,
                        help="comma-separated labels ('rk4-20,ab4-60,dopri5 rtol=1e-4') instead "
                             "of the default list; 'multistep': Adams–Bashforth against RK4")
    parser.add_argument("--reference", default="dopri5",
                        help="dopri5 (rtol 1e-8, float64) or rk4-N (float64, N steps)")
    parser.add_argument("--cache", default=None, help="folder to cache the reference solve in")
    parser.add_argument("--stiffness", action="store_true",
                        help="only the eigenvalues of the field's Jacobian along decode paths")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    from bayesiamp_jax.checkpoint import atomic_write_json

    report = {"environment": environment(), "command": "python -m benchmarks.solver_study "
              + " ".join(argv if argv is not None else os.sys.argv[1:]), "fields": []}
    sources = ([("study", args.study)] if args.study else [("params", args.params)]
               if args.params else [("epochs", int(e)) for e in args.epochs.split(",")])
    reference = REFERENCE
    solvers = None
    if args.candidates:
        names = MULTISTEP if args.candidates == "multistep" else args.candidates.split(",")
        solvers = [parse(n) for n in names]
    if args.reference != "dopri5":
        reference = Solver("rk4", int(args.reference.split("-")[1]))
    for kind, value in sources:
        t0 = time.perf_counter()
        problem = None
        if kind == "study":
            field, params, problem = study_field(value)
        else:
            field, params = (trained_field(0, params_path=value) if kind == "params"
                             else trained_field(value))
        print(f"# field: {kind}={value} ({time.perf_counter() - t0:.1f} s)", flush=True)
        if args.stiffness:
            res = {"field": {kind: value}, "stiffness": stiffness(field, params, problem=problem)}
            print(res, flush=True)
            report["fields"].append(res)
            if args.output:
                atomic_write_json(args.output, report)
            continue
        res = study(field, params, args.samples, max_bins=args.max_bins,
                    powers=tuple(float(p) for p in args.powers.split(",")),
                    cache_dir=args.cache, fine=args.fine, reference=reference, solvers=solvers,
                    problem=problem)
        res["field"] = {kind: value}
        report["fields"].append(res)
        report["environment"]["load_average_at_end"] = list(os.getloadavg())
        if args.output:
            atomic_write_json(args.output, report)
        print(f"# cheapest below {THRESHOLD} sigma at 1e7: {res['cheapest_below_noise']} "
              f"({res['cheapest_below_noise_evals']} evals)", flush=True)
    return report


def markdown(report: dict) -> str:
    """One markdown table per field: evaluations, point errors, worst σ ratio per grid."""
    out = []
    for res in report["fields"]:
        bins = [f"{b}x{b}" for b in res["bins"]]
        out.append(f"field {res['field']}, {res['samples']:,} samples, reference "
                   f"{res['reference']}\n")
        out.append("| solver | evals | max error | RMS error | "
                   + " | ".join(f"{b} migrated / σ-ratio" for b in bins) + " |")
        out.append("|---" * (4 + len(bins)) + "|")
        for r in res["rows"]:
            cells_ = " | ".join(f"{r['hist'][b]['migrated']:.1e} / "
                                f"{r['hist'][b]['sigma_ratio_1e7']:.3f}" for b in bins)
            out.append(f"| {r['solver']} | {r['evals']:.0f} | {r['max_err']:.1e} | "
                       f"{r['rms_err']:.1e} | {cells_} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
