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

A damaged draws file (truncated, garbage) is a cache miss: the stage (or, for a finished stage,
``repair_draws``, which ``experiments.paper`` calls before the evaluation) deletes it with a
warning naming it and trains that unit again with its own key, so the numbers equal an
undamaged study's. A non-finite loss of a
library call is a one-line ``StudyError`` naming the stage, label, run and epoch
(``experiments.stages.naming_units``).

Command line: ``bayesiamp train --output OUTDIR [--method vi] [--preset quick] [--set ...]``
(``python -m experiments.cli train ...``; runs the data and deterministic stages first).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import convergence as bjconv
from bayesiamp_jax import posteriors
from bayesiamp_jax.checkpoint import DamagedFileError, atomic_write_json
from bayesiamp_jax.integrate import Solver
from bayesiamp_jax.posteriors.draws import PosteriorDraws, load_draws, save_draws, split_units
from experiments import config as cfgmod
from experiments import convergence, distributed
from experiments.data import field_from_config, load_all_data, load_data, purpose_key
from experiments.deterministic import load_deterministic
from experiments.stages import naming_units

METHODS = ("vi", "adammcmc", "nuts", "repulsive")


def draws_path(study, label: str, run: int):
    return study.path("draws", label, f"run{run}.msgpack")


def load_run_draws(study, label: str, run: int, template=None) -> PosteriorDraws:
    return load_draws(draws_path(study, label, run), template)


def _readable(study, label: str, run: int) -> bool:
    """Whether the unit's draws file is on disk and readable; a damaged one is deleted with a
    warning naming it (it is a cache: the unit is trained again)."""
    path = draws_path(study, label, run)
    if not path.is_file():
        return False
    try:
        load_draws(path)
    except DamagedFileError as e:
        study.log.warning("damaged draws file %s (%s): deleted, training %s run %d again",
                          path, str(e).split(";")[0], label, run)
        path.unlink(missing_ok=True)
        return False
    return True


def _units(study, method):
    """(label, hyper, run) of ``method`` whose draws are not on disk yet or damaged (with
    several processes: of this process's units, ``distributed.mine``)."""
    units = [(label, hyper, r) for m, label, hyper in cfgmod.method_grid(study.cfg)
             if m == method for r in range(study.cfg.num_runs)]
    return [u for u in distributed.mine(units) if not _readable(study, u[0], u[2])]


def _named(method, units):
    """Turn a non-finite loss of the call over ``units`` into a StudyError naming the unit."""
    return naming_units(f"train_{method}", [(label, r) for label, _, r in units])


def repair_draws(study, method: str, progress: bool = True) -> bool:
    """Retrain the units of ``method`` whose draws file is missing or damaged although its
    training stage finished (found by a later stage): each damaged file is deleted with a
    warning, the stage marker is removed while the units train (an interruption then redoes
    the stage) and put back after. True if a unit was trained; one process only (with several,
    a damaged file stays the stage's one-line error)."""
    if distributed.process_count() > 1:
        return False
    stage = f"train_{method}"
    if not _units(study, method):
        return False
    marker = study.marker(stage)
    study.log.warning("%s: draws of finished units are missing or damaged; training them again",
                      stage)
    study.marker_path(stage).unlink(missing_ok=True)
    TRAINERS[method](study, progress)
    if marker is not None:
        atomic_write_json(study.marker_path(stage), marker)
    return True


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
        study.log.info("%s: %s run %d %s%s", unit.method, label, r, describe(unit),
                       _verdict(unit))


def _verdict(draws: PosteriorDraws) -> str:
    """", held-out loss: <verdict>" of a unit's held-out curve ("" without one)."""
    if "holdout_curve" not in draws.info:
        return ""
    c = bjconv.check_convergence(draws.info["holdout_epochs"], draws.info["holdout_curve"])
    return f", held-out loss {float(c.final_loss):.4g}: {c.verdict}"


def _holdout_kwargs(study, section, epochs: bool = True) -> dict:
    """The held-out curve (and, for epoch-based trainers, early-stop) arguments of a
    library trainer; none without held-out events."""
    held = convergence.holdout(study)
    if held is None:
        return {}
    if not epochs:
        return {"holdout": held}
    return {"holdout": held, "holdout_every": convergence.holdout_every(section.num_epochs),
            "early_stop": convergence.plateau(section)}


def train_vi(study, progress: bool = True) -> None:
    """Mean-field VI for all pending (k, run) units at once, then ``num_draws`` draws each."""
    cfg, v = study.cfg, study.cfg.vi
    todo = _pending(study, "vi")
    if todo is None:
        return
    units = todo.units
    with _named("vi", units):
        result = posteriors.fit_vi_cnf(
            todo.keys, field_from_config(cfg), todo.x, todo.c,
            kl_weight=np.array([k for _, k, _ in units]),
            num_epochs=v.num_epochs, batch_size=v.batch_size,
            kl_normalisation=v.kl_normalisation, chunk_epochs=v.chunk_epochs, progress=progress,
            checkpoint_path=_checkpoint(study, "vi", units, v.kl_normalisation, v.batch_size),
            **_holdout_kwargs(study, v))
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
    with _named("adammcmc", units):
        draws = posteriors.sample_adammcmc_cnf(
            todo.keys, field, todo.x, todo.c, sigma=np.array([s for _, s, _ in units]),
            sigma_dir=None if a.sigma_dir < 0 else a.sigma_dir, num_pretrain_epochs=0,
            params_init=starts, num_adam_steps=a.num_adam_steps, num_samples=a.num_samples,
            thinning=a.thinning, batch_size=a.batch_size,
            solver=Solver("rk4", a.solver_steps, checkpoint=True), progress=progress,
            checkpoint_path=_checkpoint(study, "adammcmc", units, cfg.deterministic,
                                        a.num_adam_steps, a.thinning, a.batch_size,
                                        a.solver_steps, a.sigma_dir),
            **_holdout_kwargs(study, a, epochs=False))
    _save_units(study, units, draws,
                lambda d: f"mean acceptance {float(np.mean(d.info['acceptance_rate'])):.3f}")


def train_nuts(study, progress: bool = True) -> None:
    """numpyro NUTS per run on a random subset of ``nuts.num_points`` training points, started
    at the run's deterministic params (Gibbs flow-matching or exact likelihood)."""
    cfg, n = study.cfg, study.cfg.nuts
    field = field_from_config(cfg)
    pretrained, _ = load_deterministic(study, jax.jit(field.init)(jax.random.key(0)))
    for unit in _units(study, "nuts"):
        label, _, r = unit
        data = load_data(study, r)
        key_subset, key = jax.random.split(purpose_key(cfg.seed, r, label))
        idx = jax.random.choice(key_subset, data.x.shape[0], (n.num_points,), replace=False)
        init = jax.tree_util.tree_map(lambda leaf, r=r: jnp.asarray(leaf[r]), pretrained)
        with _named("nuts", [unit]):
            draws = posteriors.sample_nuts_cnf(
                key, field, data.x[idx], data.c[idx], init, likelihood=n.likelihood,
                num_warmup=n.num_warmup, num_samples=n.num_samples,
                max_tree_depth=n.max_tree_depth, progress=progress)
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
    with _named("repulsive", units):
        draws = posteriors.fit_repulsive_cnf(
            todo.keys, field_from_config(cfg), todo.x, todo.c, num_members=rc.num_members,
            num_epochs=rc.num_epochs, batch_size=rc.batch_size, progress=progress,
            checkpoint_path=_checkpoint(study, "repulsive", units, rc),
            **_holdout_kwargs(study, rc))
    _save_units(study, units, draws, lambda d: f"final loss {float(d.info['losses'][-1]):.4f}")


TRAINERS = {"vi": train_vi, "adammcmc": train_adammcmc, "nuts": train_nuts,
            "repulsive": train_repulsive}
