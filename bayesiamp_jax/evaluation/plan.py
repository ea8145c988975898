"""What ``evaluate`` computes: binnings, sample sizes, solver and estimator settings (``Plan``).

A ``Plan`` says how much is generated and how it is analysed; a ``datasets.Problem`` says what
is binned and against which truth. ``evaluate(key, field, draws, problem, plan, num_train=…)``
takes both; where it runs (devices, progress bar, output folder) stays keyword arguments of
``evaluate``, since it changes no number.

    plan = Plan(calibration_bins=(5, 10), num_samples=100_000, scaled_bins=(5, 10, 20))
    plan = check_plan(plan)   # one-line ValueError naming the field on bad input

The paper's sizes are the defaults (10⁷ same-noise points per draw, 1000 · n_Q scaled points per
draw and binning, 100 closure repeats, levels (2i+1)/99).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from bayesiamp_jax import _checks
from bayesiamp_jax.binning import Binning
from bayesiamp_jax.evaluation.calibration import NOMINAL_LEVELS, check_levels
from bayesiamp_jax.evaluation.generate import DEFAULT_CHUNK, DEFAULT_SOLVER
from bayesiamp_jax.integrate import Solver

CALIBRATION_BINS = (5, 10, 50)
SCALED_BINS = (2, 3, 4, 5, 7, 10, 15, 20, 30, 40, 50, 70, 100, 200, 500)
FIT_BINS = (15, 20, 30, 40, 50, 70, 100, 200)


class Plan(NamedTuple):
    """The settings of one evaluation.

    calibration_bins: n of the n-per-value grids of the same-noise phase (``problem.binning(n)``)
        or ``Binning``s; empty to skip the phase.
    num_samples: points per draw of the same-noise phase (paper: 10⁷).
    scaled_bins: n (or ``Binning``s) of the scaled phase; empty to skip it.
    samples_per_cell: the scaled phase generates samples_per_cell · n_Q points per draw and
        binning (paper: 1000).
    shared_sample: one fresh sample of samples_per_cell · max n_Q points per draw fills every
        scaled binning (``histogram_scaled(shared=True)``).
    fit_bins: the binnings of the power-law fit (``pipeline.fit_scaled``): a sequence of n
        (each must be evaluated, >= 2 of them), an int k (the k largest n_Q) or None (all); the
        default ``FIT_BINS`` takes those of them that are evaluated.
    solver, chunk_size: the ODE solver and points per compiled chunk of the generation.
    levels: nominal coverage levels (paper: (2i+1)/99, i = 0..49).
    closure_repeats: truth samples of size N_eq per run in the closure test.
    differential_samples: fresh points per draw (and truth events) of the KS differential
        amplification, computed when the problem has an exact truth sampler; 0 turns it off.
    """

    calibration_bins: Sequence = CALIBRATION_BINS
    num_samples: int = 10_000_000
    scaled_bins: Sequence = SCALED_BINS
    samples_per_cell: int = 1000
    shared_sample: bool = False
    fit_bins: int | Sequence | None = FIT_BINS
    solver: Solver = DEFAULT_SOLVER
    chunk_size: int = DEFAULT_CHUNK
    levels: object = NOMINAL_LEVELS
    closure_repeats: int = 100
    differential_samples: int = 10_000


def check_plan(plan: Plan) -> Plan:
    """``plan`` if every field is valid, else a one-line ValueError naming the field and value."""
    if not isinstance(plan, Plan):
        raise ValueError(f"plan must be an evaluation.Plan, got {type(plan).__name__}")
    for name in ("calibration_bins", "scaled_bins"):
        _bins(f"plan.{name}", getattr(plan, name))
    _checks.positive_int("plan.num_samples", plan.num_samples)
    _checks.positive_int("plan.samples_per_cell", plan.samples_per_cell)
    _checks.positive_int("plan.chunk_size", plan.chunk_size)
    _checks.positive_int("plan.closure_repeats", plan.closure_repeats)
    if not isinstance(plan.shared_sample, (bool, np.bool_)):
        raise ValueError(f"plan.shared_sample must be True or False, got {plan.shared_sample!r}")
    if not isinstance(plan.solver, Solver):
        raise ValueError(f"plan.solver must be an integrate.Solver, got {plan.solver!r}")
    d = plan.differential_samples
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0 or d == 1:
        raise ValueError(f"plan.differential_samples must be 0 (off) or an integer >= 2, got "
                         f"{d!r}")
    try:
        check_levels(plan.levels)
    except ValueError:
        raise ValueError(f"plan.levels must be a non-empty 1-D array in [0, 1], got "
                         f"{plan.levels!r}") from None
    _check_fit_bins(plan.fit_bins, plan.scaled_bins if len(plan.scaled_bins)
                    else plan.calibration_bins)
    return plan


def _bins(name, specs):
    if isinstance(specs, (int, np.integer, Binning)):
        specs = [specs]
    if not isinstance(specs, Sequence):
        raise ValueError(f"{name} must be a sequence of ints n or Binnings, got {specs!r}")
    for s in specs:
        if isinstance(s, Binning):
            continue
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"{name} must hold positive ints n or Binnings, got {s!r}")


def _check_fit_bins(fit_bins, specs):
    """An explicit sequence of fit n's must all be among the evaluated binnings."""
    if fit_bins is FIT_BINS or fit_bins is None:
        return
    if isinstance(fit_bins, (int, np.integer)):  # the k largest (no fit if fewer than 2)
        return
    if isinstance(specs, (int, np.integer, Binning)):
        specs = [specs]
    evaluated = set()
    for sp in specs:
        if isinstance(sp, Binning):
            if len(set(sp.shape)) == 1:
                evaluated.add(sp.shape[0])
        else:
            evaluated.add(int(sp))
    wanted = list(fit_bins)
    missing = [n for n in wanted if n not in evaluated]
    if missing:
        raise ValueError(f"plan.fit_bins={wanted}: {missing} are not among the evaluated "
                         f"binnings n = {sorted(evaluated)}")
    if len(wanted) < 2:
        raise ValueError(f"plan.fit_bins={wanted} must name >= 2 binnings for the power-law fit")
