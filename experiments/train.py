"""Training stages: weight posteriors for every method, grid point and run.

Each (label, run) ends as ``draws/<label>/run<r>.msgpack`` (``PosteriorDraws``, atomic write);
an existing file means that unit is done. Configuration → one library call → save: the units
(grid point × run) of VI, AdamMCMC and the repulsive ensemble are trained together by the
library drivers' unit axis (one vmapped program); NUTS loops over runs. With several processes
each trains its share of the units (``experiments.distributed.mine``: unit u of a method's list
goes to process u mod N) and writes their files.

Key scheme: unit (label, run) uses ``purpose_key(seed, run, label)`` as the key of the one-unit
library call (``fit_vi_cnf`` + ``sample_vi`` with ``purpose_key(seed, run, label + "/draws")``,
``sample_adammcmc_cnf(..., num_pretrain_epochs=0, params_init=<deterministic params of the run>)``,
``fit_repulsive_cnf``), so a unit equals the one-call API.

Command line: ``bayesiamp train --output OUTDIR [--method vi] [--preset quick] [--set ...]``
(``python -m experiments.cli train ...``; runs the data and deterministic stages first).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import posteriors
from bayesiamp_jax.integrate import Solver
from bayesiamp_jax.posteriors.draws import PosteriorDraws, load_draws, save_draws, split_units
from experiments import config as cfgmod
from experiments import distributed
from experiments.data import field_from_config, load_all_data, load_data, purpose_key
from experiments.deterministic import load_deterministic

METHODS = ("vi", "adammcmc", "nuts", "repulsive")


def draws_path(study, label: str, run: int):
    return study.path("draws", label, f"run{run}.msgpack")


def load_run_draws(study, label: str, run: int, template=None) -> PosteriorDraws:
    return load_draws(draws_path(study, label, run), template)


def _units(study, method):
    """(label, hyper, run) of ``method`` whose draws are not on disk yet (with several
    processes: of this process's units, ``distributed.mine``)."""
    units = [(label, hyper, r) for m, label, hyper in cfgmod.method_grid(study.cfg)
             if m == method for r in range(study.cfg.num_runs)]
    return [u for u in distributed.mine(units) if not draws_path(study, u[0], u[2]).is_file()]


def _checkpoint(study, method, units, *sections):
    """One checkpoint per method and set of pending units (the library checks its signature)."""
    cfg = study.cfg
    names = [f"{label}_run{r}" for label, _, r in units]
    fp = cfgmod.fingerprint(cfg.seed, cfg.data, cfg.network, *sections, names)
    # "_r1": the bayesiamp_jax.resumable format (older checkpoints of other names are ignored)
    return study.path("checkpoints", method, f"{method}_r1_{fp}.msgpack")


class _Pending(NamedTuple):
    """The pending units of one method: (label, hyper, run), their keys and training data."""

    units: list
    keys: jax.Array
    x: jax.Array
    c: jax.Array
    run_idx: np.ndarray


def _pending(study, method) -> _Pending | None:
    units = _units(study, method)
    if not units:
        return None
    data = load_all_data(study)
    run_idx = np.array([r for _, _, r in units])
    keys = jnp.stack([purpose_key(study.cfg.seed, r, label) for label, _, r in units])
    return _Pending(units, keys, data.x[run_idx], data.c[run_idx], run_idx)


def _save_units(study, units, draws: PosteriorDraws, describe) -> None:
    for (label, _, r), unit in zip(units, split_units(draws), strict=True):
        save_draws(draws_path(study, label, r), unit)
        study.log.info("%s: %s run %d %s", unit.method, label, r, describe(unit))


def train_vi(study, progress: bool = True) -> None:
    """Mean-field VI for all pending (k, run) units at once, then ``num_draws`` draws each."""
    cfg, v = study.cfg, study.cfg.vi
    todo = _pending(study, "vi")
    if todo is None:
        return
    units = todo.units
    result = posteriors.fit_vi_cnf(
        todo.keys, field_from_config(cfg), todo.x, todo.c,
        kl_weight=np.array([k for _, k, _ in units]),
        num_epochs=v.num_epochs, batch_size=v.batch_size, kl_normalisation=v.kl_normalisation,
        chunk_epochs=v.chunk_epochs, progress=progress,
        checkpoint_path=_checkpoint(study, "vi", units, v.kl_normalisation, v.batch_size))
    draw_keys = jnp.stack([purpose_key(cfg.seed, r, label + "/draws") for label, _, r in units])
    draws = posteriors.sample_vi(draw_keys, result, v.num_draws)
    _save_units(study, units, draws, lambda d: f"final loss {float(d.info['final_loss']):.4f}")


def train_adammcmc(study, progress: bool = True) -> None:
    """One AdamMCMC chain per pending (σ, run) unit, all advanced together, each started at its
    run's deterministic params (the flow-matching pretraining)."""
    cfg, a = study.cfg, study.cfg.adammcmc
    todo = _pending(study, "adammcmc")
    if todo is None:
        return
    units = todo.units
    field = field_from_config(cfg)
    pretrained, _ = load_deterministic(study, jax.jit(field.init)(jax.random.key(0)))
    starts = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf[todo.run_idx]), pretrained)
    draws = posteriors.sample_adammcmc_cnf(
        todo.keys, field, todo.x, todo.c, sigma=np.array([s for _, s, _ in units]),
        sigma_dir=None if a.sigma_dir < 0 else a.sigma_dir, num_pretrain_epochs=0,
        params_init=starts, num_adam_steps=a.num_adam_steps, num_samples=a.num_samples,
        thinning=a.thinning, batch_size=a.batch_size,
        solver=Solver("rk4", a.solver_steps, checkpoint=True), progress=progress,
        checkpoint_path=_checkpoint(study, "adammcmc", units, cfg.deterministic,
                                    a.num_adam_steps, a.thinning, a.batch_size, a.solver_steps,
                                    a.sigma_dir))
    _save_units(study, units, draws,
                lambda d: f"mean acceptance {float(np.mean(d.info['acceptance_rate'])):.3f}")


def train_nuts(study, progress: bool = True) -> None:
    """numpyro NUTS per run on a random subset of ``nuts.num_points`` training points, started
    at the run's deterministic params (Gibbs flow-matching or exact likelihood)."""
    cfg, n = study.cfg, study.cfg.nuts
    field = field_from_config(cfg)
    pretrained, _ = load_deterministic(study, jax.jit(field.init)(jax.random.key(0)))
    for label, _, r in _units(study, "nuts"):
        data = load_data(study, r)
        key_subset, key = jax.random.split(purpose_key(cfg.seed, r, label))
        idx = jax.random.choice(key_subset, data.x.shape[0], (n.num_points,), replace=False)
        init = jax.tree_util.tree_map(lambda leaf, r=r: jnp.asarray(leaf[r]), pretrained)
        draws = posteriors.sample_nuts_cnf(key, field, data.x[idx], data.c[idx], init,
                                    likelihood=n.likelihood, num_warmup=n.num_warmup,
                                    num_samples=n.num_samples, max_tree_depth=n.max_tree_depth,
                                    progress=progress)
        save_draws(draws_path(study, label, r), draws)
        study.log.info("nuts: run %d mean acceptance %.3f, %d divergences", r,
                       float(np.mean(draws.info["accept_prob"])),
                       int(np.sum(draws.info["diverging"])))


def train_repulsive(study, progress: bool = True) -> None:
    """Repulsive ensembles of all pending runs at once (one unit per run)."""
    cfg, rc = study.cfg, study.cfg.repulsive
    todo = _pending(study, "repulsive")
    if todo is None:
        return
    units = todo.units
    draws = posteriors.fit_repulsive_cnf(
        todo.keys, field_from_config(cfg), todo.x, todo.c, num_members=rc.num_members,
        num_epochs=rc.num_epochs, batch_size=rc.batch_size, progress=progress,
        checkpoint_path=_checkpoint(study, "repulsive", units, rc))
    _save_units(study, units, draws, lambda d: f"final loss {float(d.info['losses'][-1]):.4f}")


TRAINERS = {"vi": train_vi, "adammcmc": train_adammcmc, "nuts": train_nuts,
            "repulsive": train_repulsive}
