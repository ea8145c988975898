"""Training stages: weight posteriors for every method, grid point and run.

Each (label, run) ends as ``draws/<label>/run<r>.msgpack`` (``PosteriorDraws``, atomic write);
an existing file means that unit is done. Runs and grid points of VI are trained together
(one ``jax.vmap`` over all (k, run) pairs); the other methods loop over units and keep their
own checkpoints.

Command line: ``bayesiamp train --output OUTDIR [--method vi] [--preset quick] [--set ...]``
(``python -m experiments.cli train ...``; runs the data and deterministic stages first).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from tqdm.auto import tqdm

from bayesiamp_jax.checkpoint import load_pytree, restore, save_pytree
from bayesiamp_jax.posteriors.draws import (
    PosteriorDraws,
    keys_from_data,
    keys_to_data,
    load_draws,
    save_draws,
)
from experiments import config as cfgmod
from experiments.data import field_from_config, load_all_data, load_data, purpose_key

METHODS = ("vi", "adammcmc", "nuts", "repulsive")


def draws_path(study, label: str, run: int):
    return study.path("draws", label, f"run{run}.msgpack")


def load_run_draws(study, label: str, run: int, template=None) -> PosteriorDraws:
    return load_draws(draws_path(study, label, run), template)


def _units(study, method):
    """(label, hyper, run) of ``method`` whose draws are not on disk yet."""
    todo = []
    for m, label, hyper in cfgmod.method_grid(study.cfg):
        if m != method:
            continue
        for r in range(study.cfg.num_runs):
            if not draws_path(study, label, r).is_file():
                todo.append((label, hyper, r))
    return todo


def _ckpt(study, method, label, run, *sections):
    cfg = study.cfg
    fp = cfgmod.fingerprint(cfg.seed, cfg.data, cfg.network, *sections)
    return study.path("checkpoints", method, f"{label}_run{run}_{fp}.msgpack")


# ----------------------------------------------------------------------------- VI


@partial(jax.jit, static_argnames=("run", "num_epochs"))
def _vi_chunk(run, keys, state, x, c, site_scale, num_epochs):
    return jax.vmap(lambda k, s, xx, cc, ss: run(k, s, (xx, cc), ss, num_epochs))(
        keys, state, x, c, site_scale)


def train_vi(study, progress: bool = True) -> None:
    """Mean-field VI for all (k, run) pairs at once, vmapped; then ``num_draws`` draws each.

    Per unit the keys follow ``fit_vi_cnf(purpose_key(seed, run, label), ...)`` exactly, so a
    unit gives the same posterior as the one-call API (up to vmap round-off).
    """
    from bayesiamp_jax.posteriors import vi

    cfg, v = study.cfg, study.cfg.vi
    units = _units(study, "vi")
    if not units:
        return
    field = field_from_config(cfg)
    data = load_all_data(study)
    template = jax.jit(field.init)(jax.random.key(0))
    svi = vi.build_svi(template, vi.cfm_loss_fn(field))

    def init_unit(key, x, c):
        key_init, key_fit = jax.random.split(key)
        params0 = field.init(key_init)
        k_guide, k_svi, k_run = jax.random.split(key_fit, 3)
        guide = vi.init_guide_params(k_guide, params0)
        first = (x[: v.batch_size], c[: v.batch_size])
        return vi.init_vi_state(k_svi, svi, first, guide), k_run

    keys = jnp.stack([purpose_key(cfg.seed, r, label) for label, _, r in units])
    run_idx = np.array([r for _, _, r in units])
    x, c = data.x[run_idx], data.c[run_idx]
    state, run_keys = jax.jit(jax.vmap(init_unit))(keys, x, c)
    site_scale = jnp.stack([vi.kl_site_scale(template, k, v.batch_size, v.kl_normalisation)
                            for _, k, _ in units])
    names = [f"{label}_run{r}" for label, _, r in units]
    ckpt = study.path("checkpoints", "vi", "vi_" + cfgmod.fingerprint(
        cfg.seed, cfg.data, cfg.network, v.kl_normalisation, v.batch_size, names) + ".msgpack")
    history = np.zeros((len(units), 0), np.float32)
    if ckpt.is_file():
        saved = load_pytree(ckpt)
        if int(np.asarray(saved["state"]["epoch"]).reshape(-1)[0]) > v.num_epochs:
            study.log.warning("vi: checkpoint is past num_epochs=%d; starting over", v.num_epochs)
        else:
            state = keys_from_data(restore(keys_to_data(state), saved["state"]), state)
            history = np.asarray(saved["losses"]).reshape(len(units), -1)
            study.log.info("vi: resuming %d units from epoch %d", len(units),
                           int(state.epoch[0]))
    run = vi.build_vi_runner(svi, v.batch_size)
    done = int(state.epoch[0])
    with tqdm(total=v.num_epochs, initial=done, desc=f"VI x{len(units)} (k, run)", unit="epoch",
              disable=not progress, dynamic_ncols=True) as bar:
        while done < v.num_epochs:
            n = min(v.chunk_epochs, v.num_epochs - done)
            state, losses = _vi_chunk(run, run_keys, state, x, c, site_scale, n)
            losses = np.asarray(losses)
            if not np.all(np.isfinite(losses)):
                bad = [names[i] for i in np.nonzero(~np.isfinite(losses).all(axis=1))[0]]
                raise FloatingPointError(f"VI loss became non-finite in epochs {done}..{done + n} "
                                         f"for {bad}")
            history = np.concatenate([history, losses], axis=1)
            done += n
            bar.update(n)
            bar.set_postfix(loss=f"{history[:, -1].mean():.4f}")
            save_pytree(ckpt, {"state": keys_to_data(state), "losses": history})
    loc, scale = jax.jit(jax.vmap(lambda st: vi.guide_loc_scale(svi, st, template)))(state)
    draw_keys = jnp.stack([purpose_key(cfg.seed, r, label + "/draws") for label, _, r in units])
    params = _vi_draws(draw_keys, loc, scale, v.num_draws)
    for i, (label, k, r) in enumerate(units):
        unit = jax.tree_util.tree_map(lambda a, i=i: np.asarray(a[i]), params)
        info = {"kl_weight": np.asarray(k), "losses": history[i],
                "final_loss": np.asarray(history[i, -1])}
        save_draws(draws_path(study, label, r), PosteriorDraws(unit, "vi", info))
        study.log.info("vi: %s run %d final loss %.4f", label, r, history[i, -1])


@partial(jax.jit, static_argnames=("num_draws",))
def _vi_draws(keys, loc, scale, num_draws):
    """θ = μ + σ ⊙ ε for every unit at once: loc, scale (G, ...) -> params (G, S, ...)."""

    def one(key, lo, sc):
        flat_loc, unravel = ravel_pytree(lo)
        flat_scale, _ = ravel_pytree(sc)
        eps = jax.random.normal(key, (num_draws,) + flat_loc.shape, flat_loc.dtype)
        return jax.vmap(unravel)(flat_loc + flat_scale * eps)

    return jax.vmap(one)(keys, loc, scale)


# ----------------------------------------------------------------------------- AdamMCMC


def train_adammcmc(study, progress: bool = True) -> None:
    """One AdamMCMC chain per (σ, run), all chains advanced together (vmapped over units).

    Each chain starts from its run's deterministic params (the flow-matching pretraining),
    takes ``num_adam_steps`` plain Adam steps, then keeps one state every ``thinning`` steps.
    Keys follow ``adammcmc_cnf(purpose_key(seed, run, label), ..., num_pretrain_epochs=0,
    params_init=<deterministic params>)``, so a unit equals the one-call API.
    """
    from bayesiamp_jax.integrate import Solver
    from bayesiamp_jax.posteriors import adammcmc, adammcmc_run
    from bayesiamp_jax.posteriors.model import exact_nll_loss_fn
    from experiments.deterministic import load_deterministic

    cfg, a = study.cfg, study.cfg.adammcmc
    units = _units(study, "adammcmc")
    if not units:
        return
    field = field_from_config(cfg)
    template = jax.jit(field.init)(jax.random.key(0))
    pretrained, _ = load_deterministic(study, template)
    data = load_all_data(study)
    run_idx = np.array([r for _, _, r in units])
    x, c = data.x[run_idx], data.c[run_idx]
    starts = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf[run_idx]), pretrained)
    sigma = jnp.asarray([s for _, s, _ in units], jnp.float32)
    sigma_dir = field.num_params() / 50.0 if a.sigma_dir < 0 else a.sigma_dir
    sigma_dir = jnp.full(len(units), sigma_dir, jnp.float32)

    def chain_key(label, r):
        _, key_mcmc = jax.random.split(purpose_key(cfg.seed, r, label))
        return jax.random.split(key_mcmc, 1)[0]

    keys = jnp.stack([chain_key(label, r) for label, _, r in units])
    states = jax.vmap(adammcmc.chain_init)(keys, starts)
    nll = exact_nll_loss_fn(field, Solver("rk4", a.solver_steps, checkpoint=True))
    num_data = float(cfg.data.num_train)
    loss_fn = lambda params, batch: num_data * nll(params, batch)

    def runner(step_fn, num_steps):
        def one(state, xx, cc, s, sd):
            return jax.lax.scan(lambda st, _: step_fn(st, (xx, cc), s, sd), state, None,
                                length=num_steps)

        return jax.jit(jax.vmap(one))

    names = [f"{label}_run{r}" for label, _, r in units]
    ckpt = study.path("checkpoints", "adammcmc", "adammcmc_" + cfgmod.fingerprint(
        cfg.seed, cfg.data, cfg.network, cfg.deterministic, a.num_adam_steps, a.thinning,
        a.batch_size, a.solver_steps, a.sigma_dir, names) + ".msgpack")
    samples, infos, done = [], [], 0
    saved = load_pytree(ckpt) if ckpt.is_file() else None
    if saved is not None and int(saved["done"]) > a.num_samples:
        study.log.warning("adammcmc: checkpoint holds more than num_samples=%d; starting over",
                          a.num_samples)
        saved = None
    if saved is not None:
        states = keys_from_data(restore(keys_to_data(states), saved["states"]), states)
        done = int(saved["done"])
        samples = [jax.tree_util.tree_map(lambda t, i=i: t[:, i], saved["samples"])
                   for i in range(done)]
        infos = [np.asarray(saved["acceptance"])[:, i] for i in range(done)]
        study.log.info("adammcmc: resuming %d chains at sample %d", len(units), done)
    elif a.num_adam_steps:
        adam_step = adammcmc.build_chain_step(loss_fn, batch_size=a.batch_size, adam_only=True)
        states, _ = runner(adam_step, a.num_adam_steps)(states, x, c, sigma, sigma_dir)
    run_thin = runner(adammcmc.build_chain_step(loss_fn, batch_size=a.batch_size), a.thinning)
    with tqdm(total=a.num_samples, initial=done, desc=f"AdamMCMC x{len(units)} chains",
              unit="sample", disable=not progress, dynamic_ncols=True) as bar:
        while done < a.num_samples:
            states, info = run_thin(states, x, c, sigma, sigma_dir)
            adammcmc_run._check_finite_losses(info.loss, done * a.thinning, "AdamMCMC")
            samples.append(jax.device_get(states.position))
            infos.append(np.asarray(info.acceptance_probability.mean(1)))
            done += 1
            bar.update(1)
            bar.set_postfix(acc=f"{float(infos[-1].mean()):.2f}")
            save_pytree(ckpt, {"states": keys_to_data(states), "done": done,
                               "samples": _stack(samples, axis=1),
                               "acceptance": np.stack(infos, 1)})
    stacked = _stack(samples, axis=1)  # (units, num_samples, ...)
    acceptance = np.stack(infos, 1)
    for i, (label, s, r) in enumerate(units):
        params = jax.tree_util.tree_map(lambda t, i=i: t[i], stacked)
        info = {"acceptance_rate": acceptance[i], "sigma": np.asarray(s),
                "sigma_dir": np.asarray(sigma_dir[i]), "thinning": np.asarray(a.thinning)}
        save_draws(draws_path(study, label, r), PosteriorDraws(params, "adammcmc", info))
        study.log.info("adammcmc: %s run %d mean acceptance %.3f", label, r, acceptance[i].mean())


def _stack(trees, axis):
    return jax.tree_util.tree_map(lambda *t: np.stack([np.asarray(v) for v in t], axis), *trees)


# ----------------------------------------------------------------------------- NUTS


def train_nuts(study, progress: bool = True) -> None:
    """numpyro NUTS per run on a random subset of ``nuts.num_points`` training points, started
    at the run's deterministic params (Gibbs flow-matching or exact likelihood)."""
    from bayesiamp_jax.posteriors import nuts
    from experiments.deterministic import load_deterministic

    cfg, n = study.cfg, study.cfg.nuts
    field = field_from_config(cfg)
    template = jax.jit(field.init)(jax.random.key(0))
    pretrained, _ = load_deterministic(study, template)
    for label, _, r in _units(study, "nuts"):
        data = load_data(study, r)
        key_subset, key = jax.random.split(purpose_key(cfg.seed, r, label))
        idx = jax.random.choice(key_subset, data.x.shape[0], (n.num_points,), replace=False)
        init = jax.tree_util.tree_map(lambda leaf, r=r: jnp.asarray(leaf[r]), pretrained)
        draws = nuts.nuts_cnf(key, field, data.x[idx], data.c[idx], init,
                              likelihood=n.likelihood, num_warmup=n.num_warmup,
                              num_samples=n.num_samples, max_tree_depth=n.max_tree_depth,
                              progress=progress)
        save_draws(draws_path(study, label, r), draws)
        study.log.info("nuts: run %d mean acceptance %.3f, %d divergences", r,
                       float(np.mean(draws.info["accept_prob"])),
                       int(np.sum(draws.info["diverging"])))


# ----------------------------------------------------------------------------- repulsive


def train_repulsive(study, progress: bool = True) -> None:
    from bayesiamp_jax.posteriors.repulsive import fit_repulsive_cnf

    cfg, rc = study.cfg, study.cfg.repulsive
    field = field_from_config(cfg)
    for label, _, r in _units(study, "repulsive"):
        data = load_data(study, r)
        draws = fit_repulsive_cnf(
            purpose_key(cfg.seed, r, label), field, data.x, data.c, num_members=rc.num_members,
            num_epochs=rc.num_epochs, batch_size=rc.batch_size,
            checkpoint_path=_ckpt(study, "repulsive", label, r, rc), progress=progress)
        save_draws(draws_path(study, label, r), draws)
        study.log.info("repulsive: run %d final loss %.4f", r, float(draws.info["loss"][-1]))


TRAINERS = {"vi": train_vi, "adammcmc": train_adammcmc, "nuts": train_nuts,
            "repulsive": train_repulsive}
