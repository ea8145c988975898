"""Differential amplification of every observable value of posterior draws (KS, ``regions``).

Each weight draw generates ``num_generated`` fresh points (noise of global draw m = run · S +
draw, as the scaled histograms: ``generate_samples(fold_in(key, 0), …, draw_index=m)``); each
observable value of them is compared with a truth sample of ``num_reference`` events by the
two-sample Kolmogorov–Smirnov statistic, with the null median from truth-sized
pseudo-experiments (``regions.ks_amplification``). This needs an exact truth sampler
(``truth_sampler(key, size) -> (size, k)`` observable values): a finite reference sample
cannot give independent pseudo-experiments.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from bayesiamp_jax import _checks, data, observables
from bayesiamp_jax.evaluation.generate import (
    DEFAULT_SOLVER,
    generate_samples,
    resolve_observable,
    stack_runs,
)
from bayesiamp_jax.evaluation.regions import KSAmplification, ks_amplification, ks_null_median
from bayesiamp_jax.integrate import Solver


def differential_amplification(key: jax.Array, field, posterior, truth_sampler: Callable,
                               num_train: int, *, num_generated: int = 10_000,
                               num_reference: int = 10_000, observable=None,
                               c=data.DEFAULT_R_MEAN, solver: Solver = DEFAULT_SOLVER,
                               has_run_axis: bool = False,
                               num_pseudo: int = 200) -> dict[str, KSAmplification]:
    """KS differential amplification per observable value: name -> ``KSAmplification`` with
    arrays (R, S) (one entry per run and draw).

    Args as in ``evaluation.evaluate``; ``truth_sampler(key, size)`` returns the observable of
    ``size`` exact truth events, (size, k).
    """
    n = _checks.positive_int("num_generated", num_generated)
    m = _checks.positive_int("num_reference", num_reference)
    observable = resolve_observable(field, observable, ())
    params = stack_runs(posterior, has_run_axis)
    num_runs, num_draws = jax.tree_util.tree_leaves(params)[0].shape[:2]
    k_gen, k_ref, k_null = jax.random.split(key, 3)
    gen_key = jax.random.fold_in(k_gen, 0)
    rows = []
    for r in range(num_runs):
        for s in range(num_draws):
            p = jax.tree_util.tree_map(lambda a, r=r, s=s: np.asarray(a)[r, s], params)
            x = generate_samples(gen_key, field, p, n, c=c, solver=solver,
                                 draw_index=r * num_draws + s)
            rows.append(np.asarray(observables.values(observable, x)))
    generated = np.stack(rows).reshape(num_runs, num_draws, n, -1)
    reference = np.asarray(truth_sampler(k_ref, m))
    out = {}
    for j, name in enumerate(observable.names):
        null = _null_median(truth_sampler, j, n, m, num_pseudo, jax.random.fold_in(k_null, j))
        ks = ks_amplification(jax.random.fold_in(k_null, j),
                              generated[..., j].reshape(num_runs * num_draws, n),
                              reference[:, j], None, num_train, num_pseudo, null=null)
        shape = (num_runs, num_draws)
        out[name] = ks._replace(statistic=ks.statistic.reshape(shape),
                                n_equiv=ks.n_equiv.reshape(shape),
                                p_value=ks.p_value.reshape(shape),
                                amplification=ks.amplification.reshape(shape))
    return out


_NULLS: dict = {}


def _null_median(truth_sampler, j, n, m, num_pseudo, key):
    """``ks_null_median`` of value j, memoised per (sampler, j, n, m, pseudo-experiments, key):
    every method label of a study shares it (the same truth, sizes and key)."""
    try:
        memo = (truth_sampler, j, n, m, num_pseudo,
                np.asarray(jax.random.key_data(key)).tobytes())
        hash(memo)
    except TypeError:  # an unhashable sampler: no memo
        memo = None
    if memo is None or memo not in _NULLS:
        def one_value(kk, size):
            return np.asarray(truth_sampler(kk, size))[:, j]

        null = ks_null_median(key, one_value, n, m, num_pseudo)
        if memo is None:
            return null
        if len(_NULLS) > 64:
            _NULLS.clear()
        _NULLS[memo] = null
    return _NULLS[memo]
