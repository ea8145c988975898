"""VI variants on the pair-frame Z -> ee study: the Z peak per posterior draw against the
held-out events (as ``analyse_study``), for the VI start, rate and length chosen as the file
defaults (docs/results/open_data.md, "VI on real events").

Trains ``fit_vi_cnf`` on run 0 of a finished pair-frame study (its data, preprocessing, field and
held-out events; with ``fm`` its flow-matching fit as the guide's start), one unit per KL weight
in one vmapped program, 20 draws each; every draw generates as many events as there are held-out
ones. Per KL weight: the median over draws (± 16-84 % half-spread) of the m_ee and pT,ee KS
statistics and the m_ee p-value against the held-out, the peak's mean and width (80-100 GeV),
the fraction of draws rejected at 5 %, the guide's median sigma and the final loss. Prints one
JSON line.

    python -m benchmarks.open_data.measure_vi NAME INIT EPOCHS KS RATE FRACTION RHO [STUDY]

INIT: ``scratch`` (the reference's random means) or ``fm`` (the study's flow-matching fit);
KS: comma-separated KL weights; RATE: Adam's first rate; FRACTION: the cosine decay's final
fraction of it (1: a constant rate); RHO: the guide's initial rho. STUDY: default
``outputs/zee_pair_quick_default`` (docs/open_data_pair/quick_default/command.sh).
"""

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from bayesiamp_jax import observables, optim, posteriors
from bayesiamp_jax.integrate import Solver
from benchmarks.open_data.analyse_study import data_entry, peak
from experiments import config as cfgmod
from experiments.data import (
    field_from_config,
    load_all_data,
    load_holdout,
    observable_from_config,
    problem_from_config,
    purpose_key,
)
from experiments.deterministic import load_deterministic
from experiments.holdout import generate_physical
from experiments.stages import Study

NUM_DRAWS = 20


def main(argv):
    name, init, epochs, kls, lr, frac, rho = (argv[0], argv[1], int(argv[2]),
                                             [float(k) for k in argv[3].split(",")],
                                             float(argv[4]), float(argv[5]), float(argv[6]))
    path = argv[7] if len(argv) > 7 else "outputs/zee_pair_quick_default"
    cfg = cfgmod.load(f"{path}/config.json")
    study = Study(path, cfg)
    field = field_from_config(cfg)
    data = load_all_data(study)
    units = len(kls)
    x, c = jnp.repeat(data.x[:1], units, 0), jnp.repeat(data.c[:1], units, 0)
    keys = jnp.stack([purpose_key(cfg.seed, 0, "vi_k10")] * units)
    steps = epochs * (x.shape[1] // 1000)
    opt = optim.adam(optim.cosine_decay(steps, frac, lr)) if frac < 1 else optim.adam(lr)
    kw = {}
    if init == "fm":
        fit = load_deterministic(study, jax.jit(field.init)(jax.random.key(0)))[0]
        kw = dict(params_init=jax.tree_util.tree_map(
            lambda leaf: jnp.repeat(jnp.asarray(leaf)[:1], units, 0), fit),
            init_loc_from_params=True)
    t0 = time.time()
    res = posteriors.fit_vi_cnf(keys, field, x, c, kl_weight=np.array(kls), num_epochs=epochs,
                                batch_size=1000, chunk_epochs=500, progress=False, optimizer=opt,
                                init_rho=rho, **kw)
    fit_s = time.time() - t0
    draws = posteriors.sample_vi(jnp.stack([purpose_key(cfg.seed, 0, "vi/draws")] * units), res,
                                 NUM_DRAWS)
    problem = problem_from_config(cfg)
    obs = observable_from_config(cfg)
    ho = np.asarray(observables.values(obs, load_holdout(study).x), np.float64)
    e = cfg.evaluation
    out = {"name": name, "init": init, "epochs": epochs, "lr": lr, "frac": frac, "rho": rho,
           "fit_s": fit_s, "holdout": data_entry(ho), "by_k": {}}
    for u, k in enumerate(kls):
        params = jax.tree_util.tree_map(lambda leaf, u=u: np.asarray(leaf)[u:u + 1],
                                        draws.params)
        gen = generate_physical(purpose_key(cfg.seed, 0, "peak"), field, params, problem, None,
                                NUM_DRAWS, ho.shape[0], Solver(e.solver, num_steps=e.solver_steps))
        rows = []
        for g in gen:
            v = np.asarray(observables.values(obs, g[:, :5]), np.float64)
            ks_m, ks_p = stats.ks_2samp(v[:, 0], ho[:, 0]), stats.ks_2samp(v[:, 1], ho[:, 1])
            mu, sd, _ = peak(v[:, 0])
            rows.append([ks_m.statistic, ks_m.pvalue, ks_p.statistic, mu, sd])
        rows = np.asarray(rows)
        q = np.quantile(rows, [0.16, 0.5, 0.84], axis=0)
        scale = np.concatenate([np.ravel(np.asarray(leaf)[u])
                                for leaf in jax.tree_util.tree_leaves(res.scale)])
        entry = {n: [round(float(q[1, i]), 4), round(float((q[2, i] - q[0, i]) / 2), 4)]
                 for i, n in enumerate(["ks_mee", "p_mee", "ks_ptee", "peak_mean", "peak_width"])}
        entry |= {"rejected_5pc": float(np.mean(rows[:, 1] < 0.05)),
                  "median_sigma": float(np.median(scale)),
                  "final_loss": float(np.asarray(res.losses)[u, -1])}
        out["by_k"][str(k)] = entry
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
