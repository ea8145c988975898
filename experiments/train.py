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
``fit_repulsive_cnf``), so a unit equals the one-call API. The families of issue 24 follow the
same scheme: ``fit_laplace_cnf`` (one call per curvature structure), ``fit_ensemble_cnf``
(``ensemble`` and ``bootstrap``: the members are the draws), ``sample_sgld_cnf``,
``sample_sghmc_cnf`` and ``fit_swag_cnf``; Laplace, SGLD, SGHMC and SWAG start at the run's
deterministic params and take the label's temperature as a (U,) settings array.

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
from bayesiamp_jax import optim, posteriors
from bayesiamp_jax.checkpoint import DamagedFileError, atomic_write_json
from bayesiamp_jax.integrate import Solver
from bayesiamp_jax.posteriors.draws import PosteriorDraws, load_draws, save_draws, split_units
from experiments import config as cfgmod
from experiments import convergence, distributed
from experiments.data import field_from_config, load_all_data, load_data, purpose_key
from experiments.deterministic import load_deterministic, optimizer
from experiments.stages import naming_units

METHODS = cfgmod.METHODS


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


def _holdout_kwargs(study, section, epochs: bool = True, num_epochs: int | None = None) -> dict:
    """The held-out curve (and, for epoch-based trainers, early-stop) arguments of a
    library trainer; none without held-out events. ``num_epochs``: the section's epochs
    resolved (default ``section.num_epochs``)."""
    held = convergence.holdout(study)
    if held is None:
        return {}
    if not epochs:
        return {"holdout": held}
    epochs_n = section.num_epochs if num_epochs is None else num_epochs
    return {"holdout": held, "holdout_every": convergence.holdout_every(epochs_n),
            "early_stop": convergence.plateau(section)}


def _starts(study, field, run_idx):
    """The deterministic params of the runs ``run_idx`` stacked on a unit axis (U, ...)."""
    pretrained, _ = load_deterministic(study, jax.jit(field.init)(jax.random.key(0)))
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf[run_idx]), pretrained)


def train_vi(study, progress: bool = True) -> None:
    """Mean-field VI for all pending (k, run) units at once, then ``num_draws`` draws each."""
    cfg, v = study.cfg, study.cfg.vi
    todo = _pending(study, "vi")
    if todo is None:
        return
    units = todo.units
    field, start = field_from_config(cfg), {}
    if v.init == "deterministic":  # the guide's means at each run's flow-matching fit
        start = {"params_init": _starts(study, field, todo.run_idx),
                 "init_loc_from_params": True}
    with _named("vi", units):
        result = posteriors.fit_vi_cnf(
            todo.keys, field, todo.x, todo.c, init_rho=v.init_rho, **start,
            kl_weight=np.array([k for _, k, _ in units]),
            num_epochs=v.num_epochs, batch_size=v.batch_size,
            kl_normalisation=v.kl_normalisation, chunk_epochs=v.chunk_epochs, progress=progress,
            optimizer=optimizer(cfg, "vi", todo.x.shape[1]),
            checkpoint_path=_checkpoint(study, "vi", units, v.kl_normalisation, v.batch_size,
                                        *cfgmod.schedule_parts(cfg, "vi"), *_vi_start(cfg)),
            **_holdout_kwargs(study, v))
    draw_keys = jnp.stack([purpose_key(cfg.seed, r, label + "/draws") for label, _, r in units])
    draws = posteriors.sample_vi(draw_keys, result, v.num_draws)
    _save_units(study, units, draws, lambda d: f"final loss {float(d.info['final_loss']):.4f}")


def _vi_start(cfg) -> tuple:
    """The guide's start in VI's checkpoint name: none for the reference's (names as before
    the settings existed); the flow-matching fit's settings when it starts there."""
    v = cfg.vi
    if all(getattr(v, k) == n for k, n in cfgmod.NEUTRAL[cfgmod.VIConfig].items()):
        return ()
    return (v.init, v.init_rho) + ((cfg.deterministic,) if v.init == "deterministic" else ())


def train_adammcmc(study, progress: bool = True) -> None:
    """One AdamMCMC chain per pending (σ, run) unit, all advanced together, each started at its
    run's deterministic params (the flow-matching pretraining)."""
    cfg, a = study.cfg, study.cfg.adammcmc
    todo = _pending(study, "adammcmc")
    if todo is None:
        return
    units = todo.units
    field = field_from_config(cfg)
    starts = _starts(study, field, todo.run_idx)
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
            optimizer=None if a.learning_rate == optim.LEARNING_RATE else optim.adam(
                a.learning_rate),
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


# ----------------------------------------------------------------------------- issue 24 families


def _hypers(units) -> np.ndarray:
    """The units' temperatures (U,) as one settings array of the library call."""
    return np.array([h for _, h, _ in units], np.float32)


def _describe_evidence(d: PosteriorDraws) -> str:
    parts = [f"{k.replace('_', ' ')} {float(np.mean(d.info[k])):.4g}"
             for k in ("prior_precision", "log_evidence") if k in d.info]
    return ", ".join(parts) or "done"


def train_laplace(study, progress: bool = True) -> None:
    """Laplace posteriors around each run's deterministic params: one library call per
    curvature structure over its pending (temperature, run) units."""
    cfg, lc = study.cfg, study.cfg.laplace
    todo = _pending(study, "laplace")
    if todo is None:
        return
    field = field_from_config(cfg)
    starts = _starts(study, field, todo.run_idx)
    structure = {label: s for label, s, _ in cfgmod.laplace_labels(cfg)}
    for kind in dict.fromkeys(structure[label] for label, _, _ in todo.units):
        idx = np.array([i for i, u in enumerate(todo.units) if structure[u[0]] == kind])
        units = [todo.units[i] for i in idx]
        with _named("laplace", units):
            draws = posteriors.fit_laplace_cnf(
                todo.keys[idx], field, jax.tree_util.tree_map(lambda a, i=idx: a[i], starts),
                todo.x[idx], todo.c[idx], num_draws=lc.num_draws, structure=kind,
                prior_precision=None if lc.prior_precision < 0 else lc.prior_precision,
                temperature=_hypers(units), num_points=lc.num_points or None,
                progress=progress)
        _save_units(study, units, draws, _describe_evidence)


def _train_members(method):
    """The trainer of a deep (``ensemble``) or bootstrap (``bootstrap``) ensemble: the
    members of every pending run in one library call (one unit per run)."""

    def trainer(study, progress: bool = True) -> None:
        cfg, e = study.cfg, getattr(study.cfg, method)
        todo = _pending(study, method)
        if todo is None:
            return
        units = todo.units
        epochs, batch = cfgmod.num_epochs(cfg, method), cfgmod.batch_size(cfg, method)
        with _named(method, units):
            draws = posteriors.fit_ensemble_cnf(
                todo.keys, field_from_config(cfg), todo.x, todo.c, num_members=e.num_members,
                bootstrap=getattr(e, "resampling", None), num_epochs=epochs,
                batch_size=batch, chunk_epochs=e.chunk_epochs, progress=progress,
                optimizer=optimizer(cfg, method, todo.x.shape[1]),
                checkpoint_path=_checkpoint(study, method, units, e, epochs, batch,
                                            *cfgmod.schedule_parts(cfg, method)),
                **_holdout_kwargs(study, e, num_epochs=epochs))
        _save_units(study, units, draws, _describe_loss)

    trainer.__name__ = f"train_{method}"
    trainer.__doc__ = (f"{'Bootstrap' if method == 'bootstrap' else 'Deep'} ensembles of all "
                       "pending runs at once (one unit per run; the members are the draws).")
    return trainer


def _describe_loss(d: PosteriorDraws) -> str:
    for k in ("final_loss", "losses", "loss"):
        if k in d.info and np.size(d.info[k]):
            return f"final loss {float(np.ravel(d.info[k])[-1]):.4f}"
    return "done"


def _train_sgmcmc(method):
    """The trainer of SGLD (``sgld``) or SGHMC (``sghmc``): one chain per pending
    (temperature, run) unit, all advanced together, each started at its run's deterministic
    params."""

    def trainer(study, progress: bool = True) -> None:
        cfg, s = study.cfg, getattr(study.cfg, method)
        todo = _pending(study, method)
        if todo is None:
            return
        units = todo.units
        field = field_from_config(cfg)
        batch = cfgmod.batch_size(cfg, method)
        sample = posteriors.sample_sgld_cnf if method == "sgld" else posteriors.sample_sghmc_cnf
        extra = {} if method == "sgld" else {
            "friction": s.friction, "num_integration_steps": s.num_integration_steps}
        with _named(method, units):
            draws = sample(
                todo.keys, field, _starts(study, field, todo.run_idx), todo.x, todo.c,
                step_size=s.step_size, num_samples=s.num_samples, thinning=s.thinning,
                num_burnin=s.num_burnin, batch_size=batch, temperature=_hypers(units),
                prior_scale=s.prior_scale, progress=progress,
                checkpoint_path=_checkpoint(study, method, units, cfg.deterministic, s, batch),
                **extra, **_holdout_kwargs(study, s, epochs=False))
        _save_units(study, units, draws, _describe_acceptance)

    trainer.__name__ = f"train_{method}"
    trainer.__doc__ = (f"{method.upper()} chains of all pending (temperature, run) units at "
                       "once, each started at its run's deterministic params.")
    return trainer


def _describe_acceptance(d: PosteriorDraws) -> str:
    for k in ("acceptance_rate", "accept_prob"):
        if k in d.info:
            return f"mean acceptance {float(np.mean(d.info[k])):.3f}"
    return _describe_loss(d)


def _held_out_curve(study, num_epochs: int) -> dict:
    """The held-out curve arguments of an epoch-based trainer without an early stop."""
    held = convergence.holdout(study)
    return {} if held is None else {"holdout": held,
                                    "holdout_every": convergence.holdout_every(num_epochs)}


def train_swag(study, progress: bool = True) -> None:
    """SWAG of all pending (temperature, run) units at once: SGD continued from each run's
    deterministic params, one iterate per epoch, draws from the diagonal + low-rank Gaussian
    with its covariance scaled by the temperature."""
    cfg, w = study.cfg, study.cfg.swag
    todo = _pending(study, "swag")
    if todo is None:
        return
    units = todo.units
    field = field_from_config(cfg)
    batch = cfgmod.batch_size(cfg, "swag")
    with _named("swag", units):
        draws = posteriors.fit_swag_cnf(
            todo.keys, field, _starts(study, field, todo.run_idx), todo.x, todo.c,
            num_epochs=w.num_epochs, learning_rate=w.learning_rate, rank=w.rank,
            num_draws=w.num_draws, batch_size=batch, temperature=_hypers(units),
            progress=progress,
            checkpoint_path=_checkpoint(study, "swag", units, cfg.deterministic, w, batch),
            **_held_out_curve(study, w.num_epochs))
    _save_units(study, units, draws, _describe_loss)


TRAINERS = {"vi": train_vi, "adammcmc": train_adammcmc, "nuts": train_nuts,
            "repulsive": train_repulsive, "laplace": train_laplace,
            "ensemble": _train_members("ensemble"), "bootstrap": _train_members("bootstrap"),
            "sgld": _train_sgmcmc("sgld"), "sghmc": _train_sgmcmc("sghmc"),
            "swag": train_swag}
