"""Budget of a study before it runs: work per stage, FLOPs and predicted time on this device.

Work per stage (``work``), in units whose cost is measured or documented:

- deterministic, vi, repulsive: *training point-steps* = epochs × num_train × units (runs × grid
  points × members); one is the value and gradient of the flow-matching loss for one point
  (≈ 3 field evaluations; VI ≈ 2 point-steps: weight sampling and the KL term).
- adammcmc: *likelihood point-steps* = steps × 2 (current and proposed point) × batch ×
  solver_steps; one RK4 step of the exact log-likelihood gradient of one point = 4 stages ×
  (1 + d) (exact divergence, d = 2) × 3 (reverse mode) = 36 field evaluations; plus the
  held-out log-likelihood of the start and every kept state (*log-prob point-steps*, forward
  only) and a fixed cost: tracing and compiling the sampler's programs,
  ``ADAMMCMC_COMPILE_RATIO`` times one compilation of the likelihood gradient (probed).
- nuts: draws × 2^(tree depth) likelihood gradients of num_points points (as adammcmc).
- laplace, ensemble, bootstrap, sgld, sghmc, swag: *training point-steps* (value and
  gradient of the flow-matching loss of one point), counted per unit by ``unit_cost`` (the
  formula is in its result and in report.json's ``cost``).
- evaluate: *generated points* (same-noise calib_samples, scaled scaled_factor · n² per
  binning, or scaled_factor · max n² with ``scaled_shared``) per run and draw, the marginals'
  events of run 0 and, with held-out events, the classifier test's two generated samples,
  each ``Solver.num_evals`` field evaluations (RK4: solver_steps × 4; Adams–Bashforth "abk":
  solver_steps + 3 (k − 1)). The classifier's own training (early-stopped) is not counted.

FLOPs = field evaluations × the field's FLOPs per point (XLA's cost analysis of the compiled
field). Time = work × cost per unit + compiled programs × the probe's compile time (what a
small study spends most of its time on). ``probe`` measures the costs on this device in a few
seconds (a compiled RK4 decode; a compiled flow-matching loss gradient; derived multipliers for
the rest); ``GPU_COSTS`` are documented per-unit costs of one H100 for predictions on a
machine without one. On a GPU, up to ``parallel`` vmapped training units cost about one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import bayesiamp_jax as bj
from bayesiamp_jax.convergence import HOLDOUT_POINTS
from bayesiamp_jax.evaluation.generate import decoded_points
from experiments import config as cfgmod
from experiments.config import NEW_METHODS, method_grid
from experiments.data import data_dims, field_from_config, holdout_size
from experiments.marginals import NUM_EVENTS as MARGINAL_EVENTS

# One H100, seconds per unit. field_eval: MEASURED.md, plain-XLA fixed-step RK4 (32 steps)
# over 10M samples in 0.72 s = 0.72 / (10⁷ · 128) s per point and field evaluation (a fused
# Pallas kernel: 0.25 s, 2.0e-10). Training costs as the previous rough estimate
# (runtime._COST, from PAPER.md's reference epochs: flow-matching epoch 21 ms, VIB epoch
# 95 ms), with 32 vmapped units at the cost of one.
GPU_COSTS = {
    "field_eval": 0.72 / (1e7 * 128),
    "train_point_step": 0.02 / 10_000,
    "vi_point_step": 0.05 / 10_000,
    "likelihood_point_step": 1e-6,
    "log_prob_point_step": 0.15e-6,
    "nuts_draw": 0.5,
    "parallel": 32,
    "source": "documented H100 costs (MEASURED.md, PAPER.md)",
}
# A 2-core CPU (MEASURED.md: ~140 ns per field evaluation and sample, flow-matching epoch of
# 10 × 1,000 points ~20 ms, likelihood gradient ~6 µs per point and RK4 step, NUTS draw 0.35 s).
CPU_COSTS = {
    "field_eval": 1.4e-7,
    "train_point_step": 0.02 / 10_000,
    "vi_point_step": 0.04 / 10_000,
    "likelihood_point_step": 6e-6,
    "log_prob_point_step": 0.15 * 6e-6,
    "nuts_draw": 0.35,
    "parallel": 1,
    "source": "documented 2-core CPU costs (MEASURED.md)",
}
VI_FACTOR = 2.0  # VI point-step / flow-matching point-step (runtime._COST: 0.04 s vs 0.02 s)
LIKELIHOOD_EVALS = 4 * (1 + 2) * 3  # field evaluations per likelihood-gradient RK4 point-step
NUTS_DRAW_CPU = 0.35  # s per NUTS draw at depth 6, 10k points (MEASURED.md)
ADAPTIVE_EVALS_PER_STEP = 10  # an adaptive solver: a guess of evaluations per "solver_steps"
# compiled programs per stage, each costing about the probe's compile time ("compile"): a
# training stage's chunk and its held-out loss; per evaluated label one generation program per
# histogram group, plus the marginals' and the classifier test's
TRAIN_PROGRAMS = 2
PROBE_STEPS = 8  # optimiser steps per timed call of the probe
HOLDOUT_PROBE_POINTS = 1024  # points of the probe's forward log-likelihood
# forward log-likelihood per point and RK4 step over its value and gradient: 0.12-0.16
# measured (the three settings of ADAMMCMC_COMPILE_RATIO); used where it is not probed
LOG_PROB_FRACTION = 0.15
PROBE_EPOCHS = 10  # epochs per timed call of a trainer (probe with num_train)
TRAINER_PROBE_S = 10.0  # studies predicted longer are probed with the trainer too
# compiled programs per evaluated label beside its histogram groups (the held-out check, the
# marginals, the closure and KS tests), and once per study the classifier test's training:
# measured on the file study of tests/test_budget_holds.py (held-out check 1.9 s, classifier
# 3.7 s per label at a compile unit of 1.2 s), 2026-12-06
EVALUATE_PROGRAMS = 4
CLASSIFIER_PROGRAMS = 3
TIMING_KEYS = {"deterministic": "deterministic", "vi": "train_vi", "adammcmc": "train_adammcmc",
               "nuts": "train_nuts", "repulsive": "train_repulsive", "evaluate": "evaluate",
               **{m: f"train_{m}" for m in NEW_METHODS}}
FM_EVALS = 3  # field evaluations of the value and gradient of the flow-matching loss per point
# The AdamMCMC sampler's first call (tracing and compiling its warm-up, chain and held-out
# programs) over one compilation of the value and gradient of its likelihood, both timed after
# the process's first compilations (as the probe and the stage run): 7.0-7.7 on three settings
# (d = 2, 3, 5; 2-3 layers of 32-128; 4-8 RK4 steps; 1-2 units; batch 100-200) and 9.6 in the
# file study of tests/test_budget_holds.py, on the 2-core CPU, 2026-12-06
ADAMMCMC_COMPILE_RATIO = 8.0
# The sampler's compiled chain per point and RK4 step (two values and gradients per step)
# over the same value and gradient timed alone: 2.9 without and 2.5 with the held-out check
# (the quick preset's chain: d = 2, 32-32-32, 8 RK4 steps, batch 500), 2-core CPU, 2026-12-06
CHAIN_STEP_FACTOR = 2.7


def field_flops(field) -> float:
    """FLOPs of one field evaluation for one point (XLA cost analysis, batch of 1024)."""
    params = field.init(jax.random.key(0))
    x = jnp.zeros((1024, field.data_dim))
    c = jnp.zeros((1024, getattr(field, "cond_dim", 1)))
    fn = jax.jit(lambda p, x, c: field(p, jnp.float32(0.5), x, c))
    cost = fn.lower(params, x, c).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) / 1024


def probe_for(cfg, field) -> dict:
    """``probe`` of the study's field at its batch size; when the study is predicted to take
    longer than ``TRAINER_PROBE_S``, probed again with the trainer itself on the study's shapes
    (a compilation more, worth it only for a study that long)."""
    a = cfg.adammcmc
    likelihood = (a.batch_size, a.solver_steps) if a.enabled else None
    costs = probe(field, batch_size=cfg.deterministic.batch_size, likelihood=likelihood)
    if budget(cfg, costs, 0.0)["total_s"] > TRAINER_PROBE_S:
        costs = probe(field, batch_size=cfg.deterministic.batch_size,
                      num_train=cfg.data.num_train, likelihood=likelihood)
    return costs


def _trainer_costs(field, num_train, batch, compile_s, step, vi_step):
    """Seconds per point-step of ``training.fit`` on random events of the study's shape
    (num_train, d), run twice for ``PROBE_EPOCHS`` epochs (the first compiles; its excess over
    the second is appended to ``compile_s``); VI: ``VI_FACTOR`` times that. A trainer that
    cannot be called so keeps the loop estimate (``step``, ``vi_step``)."""
    batch = min(batch, num_train)
    x = jax.random.normal(jax.random.key(3), (num_train, field.data_dim))
    k = getattr(field, "cond_dim", 1)
    c = None if k == 0 else jnp.full((num_train, k), 4.0)
    runs = {"fm": lambda: bj.training.fit(
                jax.random.key(4), field, x, c, PROBE_EPOCHS, batch_size=batch,
                chunk_epochs=PROBE_EPOCHS, progress=False).state,
            }
    out = {"fm": step, "vi": vi_step}
    for name, run in runs.items():
        try:
            ts = []
            for _ in range(2):
                t0 = time.perf_counter()
                jax.block_until_ready(jax.tree_util.tree_leaves(run()))
                ts.append(time.perf_counter() - t0)
        except (TypeError, ValueError):  # another trainer signature: keep the loop estimate
            continue
        compile_s.append(max(ts[0] - ts[1], 0.0))
        out[name] = ts[1] / (PROBE_EPOCHS * num_train)
    # VI: the same epochs with weight sampling and the KL term (fit_vi's compiled program is
    # not reused between calls, so it is not timed itself)
    return out["fm"], VI_FACTOR * out["fm"]


def _typical(fn, *args, repeats: int) -> tuple[float, float]:
    """(seconds of a call, compilation) of ``fn(*args)``: the median of ``repeats`` calls after
    the first (the median, not the least: a shared machine's stages see its load), and the
    first call's excess over it."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    median = float(np.median(ts))
    return median, max(first - median, 0.0)


def _likelihood_costs(field, batch: int, solver_steps: int, repeats: int) -> dict:
    """AdamMCMC's costs measured with its own likelihood (``exact_nll_loss_fn``, checkpointed
    RK4 of ``solver_steps``): seconds per point and RK4 step of its value and gradient (a
    mini-batch of ``batch``; × ``CHAIN_STEP_FACTOR``, as the compiled chain runs it) and of the
    forward log-likelihood (the held-out check), and the sampler's fixed cost,
    ``ADAMMCMC_COMPILE_RATIO`` × the gradient's compilation."""
    from bayesiamp_jax.posteriors.model import exact_nll_loss_fn

    loss = exact_nll_loss_fn(field, bj.Solver("rk4", solver_steps, checkpoint=True))
    params = field.init(jax.random.key(0))
    k = getattr(field, "cond_dim", 1)
    out = {}
    for name, fn, n in (("likelihood_point_step", jax.value_and_grad(loss), batch),
                        ("log_prob_point_step", loss, HOLDOUT_PROBE_POINTS)):
        x = jax.random.normal(jax.random.key(5), (n, field.data_dim))
        batch_xc = (x, None if k == 0 else jnp.full((n, k), 4.0))
        seconds, compile_s = _typical(jax.jit(lambda p, b, fn=fn: fn(p, b)), params, batch_xc,
                                      repeats=repeats)
        out[name] = seconds / (n * solver_steps)
        if name == "likelihood_point_step":
            out[name] *= CHAIN_STEP_FACTOR
            out["adammcmc_compile"] = ADAMMCMC_COMPILE_RATIO * compile_s
    return out


def probe(field, points: int = 4096, repeats: int = 3, batch_size: int = 1000,
          num_train: int | None = None, likelihood: tuple[int, int] | None = None) -> dict:
    """Costs per unit measured on this device (a few seconds, most of it compilation) with the
    study's own field (its width, depth and data dimension d): an RK4 decode of ``points``
    points (4 steps, as the generation runs it: one field evaluation alone costs ~3× more per
    point on a CPU), and one flow-matching optimiser step on a mini-batch of the study's
    ``batch_size`` (per-point costs grow at small batches); the likelihood point-step counts
    4 · (1 + d) · 3 field evaluations (exact divergence of d dimensions), or, with
    ``likelihood`` = (AdamMCMC's batch, its RK4 steps), is measured with AdamMCMC's own
    likelihood (``_likelihood_costs``), as is its fixed cost."""
    params = field.init(jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (points, field.data_dim))
    c = jnp.full((points, getattr(field, "cond_dim", 1)), 4.0)
    steps = 4
    decode = jax.jit(lambda p, z, c: bj.flow.decode(field, p, z, c, bj.Solver("rk4", steps)))
    batch = max(1, min(int(batch_size), points))
    x = z[:batch]
    opt = bj.training.adam()

    @jax.jit
    def grad(p, k):  # PROBE_STEPS optimiser steps of flow matching, a compiled loop like the
        def one(carry, k):  # trainers' (one step per call would add a dispatch each)
            p, s = carry
            g = jax.grad(lambda q: bj.flow.cfm_loss(k, field, q, x, c[:batch]))(p)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, _), _ = jax.lax.scan(one, (p, opt.init(p)), jax.random.split(k, PROBE_STEPS))
        return p

    compile_s = []

    def typical(fn, *args):
        seconds, compiled = _typical(fn, *args, repeats=repeats)
        compile_s.append(compiled)
        return seconds

    field_eval = typical(decode, params, z, c) / (points * steps * 4)
    step = typical(grad, params, jax.random.key(2)) / (batch * PROBE_STEPS)
    vi_step = VI_FACTOR * step
    if num_train:  # the trainers themselves on the study's shapes (their epoch overheads)
        step, vi_step = _trainer_costs(field, int(num_train), batch, compile_s, step, vi_step)
    platform = jax.devices()[0].platform
    lik = likelihood_evals(field.data_dim) * field_eval
    measured = {} if likelihood is None else _likelihood_costs(field, *likelihood, repeats)
    return {"field_eval": field_eval, "train_point_step": step,
            "compile": float(np.mean(compile_s)),
            "vi_point_step": vi_step,
            "likelihood_point_step": lik, "log_prob_point_step": LOG_PROB_FRACTION * lik,
            **measured,
            "nuts_draw": NUTS_DRAW_CPU * (field_eval / 1.4e-7),
            "parallel": 1 if platform == "cpu" else GPU_COSTS["parallel"],
            "source": f"probe on this device ({platform}, {jax.devices()[0].device_kind})"}


def likelihood_evals(dim: int) -> int:
    """Field evaluations of one RK4 step of the exact log-likelihood gradient of one point:
    4 stages × (1 + d) (the field and d divergence columns) × 3 (reverse mode)."""
    return 4 * (1 + int(dim)) * 3


def scaled_sizes(e) -> list[int]:
    """Generated points per draw of each scaled group (one group with ``scaled_shared``)."""
    if not e.scaled:
        return []
    cells = [n * n for n in e.scaled_bins]
    if getattr(e, "scaled_shared", False):
        return [e.scaled_factor * max(cells)]
    return [e.scaled_factor * c for c in cells]


def scaled_points(e) -> int:
    """Generated points per draw of the scaled evaluation."""
    return sum(scaled_sizes(e))


def decoded_per_draw(e) -> int:
    """Points a draw actually decodes in the calibration and scaled evaluations: whole chunks
    (``generate.decoded_points``), so a little more than they ask for."""
    return sum(decoded_points(n, e.chunk_size) for n in [e.calib_samples, *scaled_sizes(e)])


def work(cfg) -> dict:
    """Units of work per stage: {stage: {"unit", "units", "field_evals", "parallel_units"}}."""
    runs, n_train = cfg.num_runs, cfg.data.num_train
    n_held = holdout_size(cfg)
    out = {}
    if cfg.deterministic.enabled:
        d = cfg.deterministic
        out["deterministic"] = _train("train_point_step", d.num_epochs * n_train, runs, 3)
    if cfg.vi.enabled:
        v = cfg.vi
        out["vi"] = _train("vi_point_step", v.num_epochs * n_train, runs * len(v.kl_weights),
                           3 * VI_FACTOR)
    if cfg.repulsive.enabled:
        r = cfg.repulsive
        out["repulsive"] = _train("train_point_step", r.num_epochs * n_train,
                                  runs * r.num_members, 3)
    if cfg.adammcmc.enabled:
        a = cfg.adammcmc
        steps = a.num_samples * a.thinning + a.num_adam_steps
        chains = runs * len(a.sigmas)
        evals = likelihood_evals(data_dims(cfg)[0])
        out["adammcmc"] = _train("likelihood_point_step", steps * 2 * a.batch_size * a.solver_steps,
                                 chains, evals)
        # the held-out log-likelihood of the start and every kept state (forward only)
        held = float((a.num_samples + 1) * min(n_held, HOLDOUT_POINTS)
                     * a.solver_steps * chains)
        out["adammcmc"] |= {"extra_unit": "log_prob_point_step", "extra_units": held,
                            "compile_unit": "adammcmc_compile"}
        out["adammcmc"]["field_evals"] += held * evals / 3
    if cfg.nuts.enabled:
        n = cfg.nuts
        # cost per draw at depth 6 and 10k points (the documented unit), scaled
        draws = (n.num_warmup + n.num_samples) * 2 ** (n.max_tree_depth - 6) * n.num_points / 1e4
        grads = (n.num_warmup + n.num_samples) * 2**n.max_tree_depth * n.num_points * runs
        out["nuts"] = {"unit": "nuts_draw", "units": float(draws * runs), "parallel_units": 1,
                       "programs": TRAIN_PROGRAMS,
                       "field_evals": float(grads * 3)}
    for method in NEW_METHODS:
        if getattr(cfg, method).enabled:
            labels = sum(m == method for m, _, _ in method_grid(cfg))
            u = unit_cost(cfg, method)
            out[method] = _train("train_point_step", u["field_evals"] / FM_EVALS,
                                 runs * labels, FM_EVALS)
    draws = sum(cfgmod.num_draws(cfg, method) for method, _, _ in method_grid(cfg))
    e = cfg.evaluation
    per_sample = (e.solver_steps * ADAPTIVE_EVALS_PER_STEP if e.solver in bj.integrate.ADAPTIVE
                  else bj.Solver(e.solver, e.solver_steps).num_evals)
    # run 0 only: the marginals' events per draw, and the classifier test's two generated
    # samples (the size of the held-out set or classifier_events) with held-out events
    n_class = (0 if not n_held or not e.classifier_events else
               n_held if e.classifier_events < 0 else min(e.classifier_events, n_held))
    others = float(draws * MARGINAL_EVENTS + len(method_grid(cfg)) * 2 * n_class)
    if cfg.data.name != "file":  # a truth sampler: the KS differential amplification
        others += float(runs * draws * e.differential_samples)
    groups = 1 + len(scaled_sizes(e))
    programs = len(method_grid(cfg)) * (groups + EVALUATE_PROGRAMS)
    # the histograms decode whole chunks: a little more than they count
    evals = (float(runs * draws * decoded_per_draw(e)) + others) * per_sample
    out["evaluate"] = {"unit": "field_eval", "units": evals, "parallel_units": 1,
                       "programs": programs + (CLASSIFIER_PROGRAMS if n_class else 0),
                       "field_evals": evals,
                       "samples": float(runs * draws * (e.calib_samples + scaled_points(e)))
                       + others,
                       "samples_calibration": float(runs * draws * e.calib_samples),
                       "samples_scaled": float(runs * draws * scaled_points(e))}
    return out


def unit_cost(cfg, method: str) -> dict:
    """Field evaluations of one unit of ``method`` (one label, one run), counted from the
    settings: {"field_evals", "formula", "pretrain_field_evals", "pretrain_formula"}. A
    flow-matching point-step (value and gradient of the loss of one point) is ``FM_EVALS`` = 3
    evaluations; methods started at the deterministic params add its training
    (``pretrain_*``, shared by every label of the run). N = data.num_train, d = the data
    dimension, B = the section's batch size."""
    n, d = cfg.data.num_train, data_dims(cfg)[0]
    s = getattr(cfg, method)
    if method == "vi":
        evals = s.num_epochs * n * FM_EVALS * VI_FACTOR
        formula = "epochs × N × 3 × 2 (weight sampling and KL)"
    elif method == "repulsive":
        evals, formula = s.num_epochs * n * s.num_members * FM_EVALS, "epochs × N × members × 3"
    elif method == "adammcmc":
        steps = s.num_samples * s.thinning + s.num_adam_steps
        evals = steps * 2 * s.batch_size * s.solver_steps * likelihood_evals(d)
        formula = "(S × thinning + Adam steps) × 2 × B × RK4 steps × 4 (1 + d) × 3"
    elif method == "nuts":
        evals = (s.num_warmup + s.num_samples) * 2**s.max_tree_depth * s.num_points * FM_EVALS
        formula = "(warm-up + S) × 2^depth × points × 3"
    elif method == "laplace":
        evals = (s.num_points or n) * (1 + 2 * d)
        formula = "curvature events × (1 + 2 d) (the field's Jacobian: d reverse passes)"
    elif method in ("ensemble", "bootstrap"):
        evals = s.num_members * cfgmod.num_epochs(cfg, method) * n * FM_EVALS
        formula = "members × epochs × N × 3"
    elif method == "sgld":
        evals = (s.num_burnin + s.num_samples * s.thinning) * cfgmod.batch_size(cfg, method) \
            * FM_EVALS
        formula = "(burn-in + S × thinning) × B × 3"
    elif method == "sghmc":
        evals = (s.num_burnin + s.num_samples * s.thinning) * s.num_integration_steps \
            * cfgmod.batch_size(cfg, method) * FM_EVALS
        formula = "(burn-in + S × thinning) × integration steps × B × 3"
    elif method == "swag":
        evals, formula = s.num_epochs * n * FM_EVALS, "epochs × N × 3"
    else:
        raise ValueError(f"method must be one of {list(cfgmod.METHODS)}, got {method!r}")
    out = {"field_evals": float(evals), "formula": formula,
           "pretrain_field_evals": 0.0, "pretrain_formula": ""}
    if method in cfgmod.pretrained_methods(cfg):
        out["pretrain_field_evals"] = float(cfg.deterministic.num_epochs * n * FM_EVALS)
        out["pretrain_formula"] = "deterministic epochs × N × 3"
    return out


def _train(unit, point_steps, units, evals_per_unit):
    return {"unit": unit, "units": float(point_steps) * units, "parallel_units": units,
            "field_evals": float(point_steps) * units * evals_per_unit,
            "programs": TRAIN_PROGRAMS}


def budget(cfg, costs: dict, flops_per_eval: float | None = None) -> dict:
    """Predicted seconds, field evaluations and FLOPs per stage for ``costs`` (``probe`` or
    ``GPU_COSTS``): {"costs", "flops_per_eval", "stages": {...}, "total_s"}."""
    flops_per_eval = field_flops(_field(cfg)) if flops_per_eval is None else flops_per_eval
    stages = {}
    for name, w in work(cfg).items():
        scale = 1.0
        if w["parallel_units"] > 1 and costs["parallel"] > 1:  # vmapped units share the device
            scale = -(-w["parallel_units"] // costs["parallel"]) / w["parallel_units"]
        units, extra = w["units"] * scale, w.get("extra_units", 0.0) * scale
        compile_s = (costs[w["compile_unit"]] if w.get("compile_unit") in costs
                     else w["programs"] * costs.get("compile", 0.0))
        extra_s = extra * costs.get(w.get("extra_unit"), 0.0)
        stages[name] = dict(w, flops=w["field_evals"] * flops_per_eval, compile_s=compile_s,
                            predicted_s=units * costs[w["unit"]] + extra_s + compile_s)
    return {"costs": costs, "flops_per_eval": flops_per_eval, "stages": stages,
            "total_s": sum(s["predicted_s"] for s in stages.values())}


def _field(cfg):
    return field_from_config(cfg)


def for_report(outdir, timings: dict) -> dict | None:
    """report.json's ``budget``: the plans saved before the run (``budget.json``) with the
    measured seconds per stage beside the predicted ones (None without a saved budget)."""
    path = Path(outdir) / "budget.json"
    if not path.is_file():
        return None
    plans = json.loads(path.read_text())
    return {k: with_measured(v, timings) for k, v in plans.items() if isinstance(v, dict)}


def with_measured(plan: dict, timings: dict) -> dict:
    """``plan`` with measured seconds per stage (study timings) and measured/predicted."""
    out = dict(plan, stages={})
    for name, s in plan["stages"].items():
        measured = timings.get(TIMING_KEYS.get(name, name))
        ratio = measured / s["predicted_s"] if measured and s["predicted_s"] > 0 else None
        out["stages"][name] = dict(s, measured_s=measured, measured_over_predicted=ratio)
    return out


def format_table(plan: dict) -> list[str]:
    """Log lines: one per stage with samples, field evaluations, FLOPs and predicted time."""
    lines = [f"budget ({plan['costs']['source']}):"]
    for name, s in plan["stages"].items():
        samples = f", {s['samples']:.3g} samples" if "samples" in s else ""
        lines.append(f"  {name:13s} {s['field_evals']:.3g} field evaluations{samples}, "
                     f"{s['flops']:.3g} FLOP, predicted {format_duration(s['predicted_s'])}")
    lines.append(f"  total         predicted {format_duration(plan['total_s'])}")
    return lines


def as_json(plan: dict) -> dict:
    """Plain floats (JSON-ready)."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        return v

    return plain(plan)


def format_duration(seconds: float) -> str:
    """A short human-readable duration: "4.2 s", "38 s", "52 min", "3.9 h", "2.1 days"."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


if __name__ == "__main__":  # the same parser as `bayesiamp budget`
    from experiments.cli import module_main

    module_main("budget")
