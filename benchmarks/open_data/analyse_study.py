"""The Z peak of a finished Z -> ee study: generated vs held-out m_ee, draw by draw.

Every draw of run 0 of ``label`` generates as many events as there are held-out events
(fresh noise per draw, physical units); per draw the KS test of m_ee and of the pair pT against
the held-out events (scipy ``ks_2samp``), and the peak position and width: the mean and
standard deviation of m_ee in 80–100 GeV. Generated numbers are the median over draws with the
16–84 % half-spread as their error (the posterior's uncertainty plus generation noise); the
held-out and training numbers carry their statistical errors (σ/√n for the mean, σ/√(2n) for
the standard deviation). Prints one JSON object. ``p_mee_train_precision``: the KS p-value at
the training set's precision (``measure_field.p_train_precision``). The observable is the
study's own ``data.observable`` (``zee:MASS_PT`` for the lab frame, ``zee:PAIR_MASS_PT`` for
the pair frame).

    python -m benchmarks.open_data.analyse_study /tmp/zee/study adammcmc_sigma0.1
    python -m benchmarks.open_data.analyse_study /tmp/zee/study deterministic

Label ``deterministic``: the flow-matching fit the posterior starts from, its run 0 generated
20 times with fresh noise (the spread is generation noise alone).
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
from scipy import stats

from bayesiamp_jax import observables
from bayesiamp_jax.evaluation.generate import stack_runs
from bayesiamp_jax.integrate import Solver
from benchmarks.open_data.measure_field import p_train_precision
from experiments import config as cfgmod
from experiments.data import (
    field_from_config,
    load_holdout,
    observable_from_config,
    problem_from_config,
    purpose_key,
    read_npz,
)
from experiments.deterministic import load_deterministic
from experiments.holdout import generate_physical
from experiments.stages import Study
from experiments.train import load_run_draws

WINDOW = (80.0, 100.0)
DETERMINISTIC_DRAWS = 20  # label "deterministic": generations of the one fit (noise only)


def peak(m) -> tuple[float, float, int]:
    w = m[(m > WINDOW[0]) & (m < WINDOW[1])]
    return float(w.mean()), float(w.std()), int(w.size)


def data_entry(v) -> dict:
    mu, sd, n = peak(v[:, 0])
    return {"peak_mean": mu, "peak_mean_err": sd / np.sqrt(n), "peak_width": sd,
            "peak_width_err": sd / np.sqrt(2 * n), "events": int(v.shape[0])}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("study")
    p.add_argument("label")
    a = p.parse_args(argv)
    cfg = cfgmod.load(f"{a.study}/config.json")
    study = Study(a.study, cfg)
    problem = problem_from_config(cfg)
    held = load_holdout(study)
    obs = observable_from_config(cfg)
    ho = np.asarray(observables.values(obs, held.x), np.float64)
    train = read_npz("data.path", cfg.data.path).x[:cfg.data.num_train]
    tr = np.asarray(observables.values(obs, np.asarray(train)), np.float64)
    if a.label == "deterministic":  # the flow-matching fit itself, generated 20 times
        fit = load_deterministic(study)[0]
        params = jax.tree_util.tree_map(
            lambda leaf: np.repeat(np.asarray(leaf)[:1, None], DETERMINISTIC_DRAWS, axis=1), fit)
    else:
        params = stack_runs([load_run_draws(study, a.label, 0)])
    num_draws = int(np.shape(jax.tree_util.tree_leaves(params)[0])[1])
    e = cfg.evaluation
    cond = None if held.c.shape[-1] == 0 else np.asarray(held.c, np.float32)
    gen = generate_physical(purpose_key(cfg.seed, 0, "peak"), field_from_config(cfg), params,
                            problem, cond, num_draws, ho.shape[0],
                            Solver(e.solver, num_steps=e.solver_steps))
    rows = []
    for g in gen:
        v = np.asarray(observables.values(obs, g[:, :5]), np.float64)
        ks_m, ks_p = stats.ks_2samp(v[:, 0], ho[:, 0]), stats.ks_2samp(v[:, 1], ho[:, 1])
        mu, sd, _ = peak(v[:, 0])
        p_tr = p_train_precision(ks_m.statistic, tr.shape[0], ho.shape[0], v.shape[0])
        rows.append([ks_m.statistic, ks_m.pvalue, ks_p.statistic, ks_p.pvalue, mu, sd, p_tr])
    rows = np.asarray(rows)
    q = np.quantile(rows, [0.16, 0.5, 0.84], axis=0)
    names = ["ks_mee", "p_mee", "ks_ptee", "p_ptee", "peak_mean", "peak_width",
             "p_mee_train_precision"]
    out = {"label": a.label, "draws": num_draws, "events_per_draw": int(ho.shape[0]),
           "generated": {n: {"median": float(q[1, i]), "err": float((q[2, i] - q[0, i]) / 2)}
                         for i, n in enumerate(names)},
           "draws_rejected_mee_5pc": float(np.mean(rows[:, 1] < 0.05)),
           "draws_rejected_mee_5pc_train_precision": float(np.mean(rows[:, 6] < 0.05)),
           "holdout": data_entry(ho), "training": data_entry(tr),
           "training_vs_holdout_ks": {
               "mee": float(stats.ks_2samp(tr[:, 0], ho[:, 0]).statistic),
               "p_mee": float(stats.ks_2samp(tr[:, 0], ho[:, 0]).pvalue),
               "ptee": float(stats.ks_2samp(tr[:, 1], ho[:, 1]).statistic)}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
