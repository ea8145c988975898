"""Long AdamMCMC runs: thinned chains in jitted chunks, progress, checkpoint/resume, and the
reference schedule for a CNF (start at the pretrained params, 5 Adam steps, thinned sampling).

Chains are vmapped: one jitted call advances every chain by ``thinning`` steps (a ``lax.scan``)
and returns one sample per chain; ``bayesiamp_jax.resumable.run_chunks`` drives the calls
(progress, atomic checkpoint with a signature, resume). Given U keys, U independent sets of
chains (runs × σ) advance in the same call (one more vmap).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from bayesiamp_jax import _checks, _units
from bayesiamp_jax import convergence as conv
from bayesiamp_jax.integrate import steps_exhausted_as_error
from bayesiamp_jax.posteriors import driver
from bayesiamp_jax.posteriors.adammcmc import build_chain_step, chain_init
from bayesiamp_jax.posteriors.draws import PosteriorDraws
from bayesiamp_jax.posteriors.driver import Algorithm, bind
from bayesiamp_jax.posteriors.model import EXACT_SOLVER, exact_nll_loss_fn


def _scan_chain(chain_step, num_steps):
    def one_chain(state, data, sigma, sigma_dir):
        return jax.lax.scan(lambda s, _: chain_step(s, data, sigma, sigma_dir), state, None,
                            length=num_steps)

    return one_chain


@partial(jax.jit, static_argnames=("loss_fn", "num_steps", "batch_size", "optimizer",
                                   "inverse_temperature", "adam_only", "vmapped"))
def _advance(states, data, sigma, sigma_dir, *, loss_fn, num_steps, batch_size, optimizer,
             inverse_temperature, adam_only, vmapped):
    """``num_steps`` steps of every chain (states (chains, ...) or (U, chains, ...)).

    jax.jit's cache on the hashable static settings replaces a hand-made runner memo."""
    step = build_chain_step(loss_fn, batch_size=batch_size, optimizer=optimizer,
                            inverse_temperature=inverse_temperature, adam_only=adam_only)
    chains = jax.vmap(_scan_chain(step, num_steps), in_axes=(0, None, None, None))
    return (jax.vmap(chains) if vmapped else chains)(states, data, sigma, sigma_dir)


def _check_finite_losses(losses, step0, what, sample=None):
    """Raise naming step, chain (and unit) of the first non-finite loss (…, chains, steps) and,
    while sampling, the index of the sample (draw) being made."""
    losses = np.asarray(losses)
    bad = ~np.isfinite(losses)
    if bad.any():
        *where, s = np.argwhere(bad)[0]
        unit = f" of unit {int(where[0])}" if len(where) == 2 else ""
        draw = "" if sample is None else f" (while making sample {sample} of the chain)"
        raise FloatingPointError(
            f"{what}: the loss is non-finite (NaN or inf) at step {step0 + int(s)} "
            f"of chain {int(where[-1])}{unit}{draw}"
        )


# --- AdamMCMC as a driver algorithm (bayesiamp_jax.posteriors.driver) ------------------------
# One item = one kept sample = ``thinning`` steps of every chain. ctx.data: the unit's data;
# ctx.hyper: its (sigma, sigma_dir); start: its params_init; the chains carry their own keys
# (``chain_init``), so the unit key is used by init only. Warm-up (Adam steps, burn-in) is
# ``warm_up``; the finite check names step and chain (``host_records``).


def _mcmc_init(key, ctx, start, *, num_chains, stacked_init, optimizer):
    if not stacked_init:
        start = jax.tree_util.tree_map(
            lambda a: jnp.broadcast_to(a, (num_chains,) + jnp.shape(a)), start)
    return jax.vmap(lambda k, p: chain_init(k, p, optimizer))(
        jax.random.split(key, num_chains), start)


def _mcmc_run(key, state, ctx, num_active, num_epochs, *, loss_fn, batch_size, optimizer,
              inverse_temperature, thinning):
    """``thinning`` steps of every chain of one unit (one item: the chunk length is 1)."""
    step = build_chain_step(loss_fn, batch_size=batch_size, optimizer=optimizer,
                            inverse_temperature=inverse_temperature, adam_only=False)
    chains = jax.vmap(_scan_chain(step, thinning), in_axes=(0, None, None, None))
    state, info = chains(state, ctx.data, *ctx.hyper)
    return state, info._asdict()


def _mcmc_holdout(state, ctx, held, *, loss_fn):
    """The potential ``loss_fn(θ, held-out batch)`` of every chain: (chains,)."""
    return jax.vmap(lambda p: loss_fn(p, (held.x, held.c)))(state.position)


def _mcmc_records(desc, states, info, start, vmapped, *, thinning, step0):
    """The kept sample of every chain (axis 1 of a unit's records: after the chains) and its
    diagnostics; a non-finite loss names step, chain, unit and sample."""
    _check_finite_losses(info["loss"], step0 + start * thinning, desc, sample=start)
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])
    pos = (jax.vmap(flat) if vmapped else flat)(states.position)
    rec = {"position": pos, "acc": info["acceptance_probability"].mean(-1),
           "frac": info["is_accepted"].mean(-1), "loss": info["loss"][..., -1]}
    return {k: np.expand_dims(np.asarray(v), 1 + vmapped) for k, v in rec.items()}


def _mcmc_warm_up(states, ctx, vmapped, desc, *, loss_fn, batch_size, optimizer,
                  inverse_temperature, num_adam_steps, num_burnin):
    """``num_adam_steps`` plain Adam steps, then ``num_burnin`` discarded AdamMCMC steps."""
    statics = dict(loss_fn=loss_fn, batch_size=batch_size, optimizer=optimizer,
                   inverse_temperature=inverse_temperature, vmapped=vmapped)
    if num_adam_steps:
        states, info = _advance(states, ctx.data, *ctx.hyper, num_steps=num_adam_steps,
                                adam_only=True, **statics)
        _check_finite_losses(info.loss, 0, f"{desc}, Adam warm-up")
    if num_burnin:
        states, info = _advance(states, ctx.data, *ctx.hyper, num_steps=num_burnin,
                                adam_only=False, **statics)
        _check_finite_losses(info.loss, num_adam_steps, f"{desc}, burn-in")
    return states


def adammcmc_algorithm(loss_fn: Callable, *, thinning: int, num_chains: int = 1,
                       num_burnin: int = 0, num_adam_steps: int = 0,
                       batch_size: int | None = None, stacked_init: bool = False,
                       optimizer: optax.GradientTransformation | None = None,
                       inverse_temperature: float = 1.0) -> Algorithm:
    """AdamMCMC as a ``driver.Algorithm`` (``sample_adammcmc`` runs it): one item is one kept
    sample per chain; ``hyper`` is (sigma, sigma_dir), ``start`` the unit's params_init."""
    statics = dict(loss_fn=loss_fn, batch_size=batch_size, optimizer=optimizer,
                   inverse_temperature=float(inverse_temperature))
    return Algorithm(
        "adammcmc",
        bind(_mcmc_init, num_chains=num_chains, stacked_init=stacked_init, optimizer=optimizer),
        bind(_mcmc_run, thinning=thinning, **statics),
        holdout_loss=bind(_mcmc_holdout, loss_fn=loss_fn), checked="acc", item="sample",
        record_axis=1,
        host_records=bind(_mcmc_records, thinning=thinning, step0=num_adam_steps + num_burnin),
        warm_up=bind(_mcmc_warm_up, num_adam_steps=num_adam_steps, num_burnin=num_burnin,
                     **statics))


driver.register("adammcmc", adammcmc_algorithm)


def sample_adammcmc(
    key: jax.Array,
    params_init,
    loss_fn: Callable,
    data,
    *,
    sigma,
    sigma_dir=0.0,
    num_samples: int,
    thinning: int = 1,
    num_burnin: int = 0,
    num_adam_steps: int = 0,
    batch_size: int | None = None,
    num_chains: int = 1,
    stacked_init: bool = False,
    optimizer: optax.GradientTransformation | None = None,
    inverse_temperature: float = 1.0,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    holdout=None,
) -> PosteriorDraws:
    """Run ``num_chains`` AdamMCMC chains on ``loss_fn(params, batch)`` and keep every
    ``thinning``-th state.

    Schedule per chain: ``num_adam_steps`` plain Adam steps, ``num_burnin`` discarded AdamMCMC
    steps, then ``num_samples × thinning`` steps. ``params_init`` is one params pytree (all
    chains start there) or, with ``stacked_init``, stacked over chains. ``batch_size=None``
    uses the full data every step. Chain i uses key ``split(key, num_chains)[i]``.

    **Units**: keys of shape (U,) run U independent sets of chains in one vmapped program
    (runs × σ): ``params_init`` and every data leaf then carry a leading axis U, ``sigma`` and
    ``sigma_dir`` are scalars or (U,) arrays; unit u equals the call with ``key[u]``.

    With ``checkpoint_path`` the chains and samples are saved atomically after every sample
    and resumed from; the checkpoint's signature (key, data, start, σ, σ_dir, thinning, …)
    must match.

    Returns draws (num_chains · num_samples, ...) in chain-major order — (U, C · S, ...) for
    units — with info "chain", "acceptance_rate" (mean acceptance probability over the
    thinning interval before each sample), "accepted_fraction", "loss" (L at the sample),
    "sigma", "sigma_dir", "thinning" (each with a leading U for units).

    With ``holdout`` ((x, c) or a ``convergence.Holdout``, no unit axis) the held-out
    potential ``loss_fn(θ, (x, c))`` of every kept state is info "holdout_loss" (one per draw)
    and the chains' mean along the run is the curve "holdout_epochs" (chain steps, 0 = the
    start) and "holdout_curve" (C,); the chains are not changed by it (no early stop: a
    sampler keeps its ``num_samples``).
    """
    num_samples = _checks.positive_int("num_samples", num_samples)
    thinning = _checks.positive_int("thinning", thinning)
    num_chains = _checks.positive_int("num_chains", num_chains)
    units = _units.num_units(key)
    for name, v in (("sigma", sigma), ("sigma_dir", sigma_dir)):
        arr = np.ravel(np.asarray(v, np.float64))
        for i, x in enumerate(arr):
            label = name if np.ndim(v) == 0 else f"{name}[{i}]"
            (_checks.positive if name == "sigma" else _checks.non_negative)(label, float(x))
    sigma_arr = _units.per_unit("sigma", sigma, units)
    sigma_dir_arr = _units.per_unit("sigma_dir", sigma_dir, units)
    for name, v in (("num_burnin", num_burnin), ("num_adam_steps", num_adam_steps)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    data = jax.tree_util.tree_map(jnp.asarray, data)
    _units.check_leading("data", data, units)
    _units.check_leading("params_init", params_init, units)
    _units.data_points(data, units, batch_size)
    one_start = _units.first_unit(params_init, units)
    if stacked_init:
        lead = {int(np.shape(leaf)[0]) for leaf in jax.tree_util.tree_leaves(one_start)}
        if lead != {num_chains}:
            raise ValueError(f"stacked params_init must have leading axis num_chains="
                             f"{num_chains}, got leading sizes {sorted(lead)}")

    desc = f"AdamMCMC σ={float(sigma):g}" if np.ndim(sigma) == 0 else "AdamMCMC"
    desc = desc if units is None else f"{desc} x{units} units"
    algorithm = adammcmc_algorithm(
        loss_fn, thinning=thinning, num_chains=num_chains, num_burnin=num_burnin,
        num_adam_steps=num_adam_steps, batch_size=batch_size, stacked_init=stacked_init,
        optimizer=optimizer, inverse_temperature=inverse_temperature)
    out = driver.run(
        algorithm, key, data, units=units, num_epochs=num_samples, chunk=1,
        hyper=(sigma_arr, sigma_dir_arr), start=params_init, settings=dict(
            data=data, params_init=params_init, sigma=sigma_arr, sigma_dir=sigma_dir_arr,
            thinning=thinning, num_burnin=num_burnin, num_adam_steps=num_adam_steps,
            batch_size=batch_size, num_chains=num_chains,
            inverse_temperature=float(inverse_temperature)),
        checkpoint_path=checkpoint_path, progress=progress, desc=desc, holdout=holdout)
    unravel = ravel_pytree(jax.tree_util.tree_map(
        lambda a: a[0], _units.first_unit(out.state.position, units)))[1]
    lead = 1 if units is None else 2  # axes before the sample axis: (chains,) or (U, chains)
    step0 = num_adam_steps + num_burnin
    rec = out.records

    def finish(r):
        """(…, chains, S, ...) -> (…, chains · S, ...): chain-major draws per unit."""
        return r.reshape(r.shape[:lead - 1] + (num_chains * num_samples,) + r.shape[lead + 1:])

    positions = finish(rec["position"])
    params = _units.vmap_if(jax.vmap(unravel), units)(positions)
    tile = (lambda a: a) if units is None else (lambda a: np.broadcast_to(a, (units,) + a.shape))
    as_info = lambda v: tile(np.asarray(v, np.float64)) if np.ndim(v) == 0 else np.asarray(v)
    info = {
        "chain": tile(np.repeat(np.arange(num_chains), num_samples)),
        "acceptance_rate": finish(rec["acc"]),
        "accepted_fraction": finish(rec["frac"]),
        "loss": finish(rec["loss"]),
        "sigma": as_info(sigma), "sigma_dir": as_info(sigma_dir),
        "thinning": tile(np.asarray(thinning)),
    }
    if holdout is not None:
        held = out.holdout_losses  # (…, chains, 1 + S): the start, then every sample
        info["holdout_loss"] = finish(held[..., 1:])
        steps = step0 + thinning * np.arange(num_samples + 1)
        steps[0] = 0
        info |= conv.holdout_info(steps, held.mean(lead - 1), units)
    return PosteriorDraws(jax.device_get(params), "adammcmc", info)


class _Scaled(NamedTuple):
    """``scale · loss_fn(params, batch)``, hashable by value (a static jit argument)."""

    loss_fn: Callable
    scale: float

    def __call__(self, params, batch):
        return self.scale * self.loss_fn(params, batch)


def sample_adammcmc_cnf(
    key: jax.Array,
    field,
    x,
    c,
    *,
    sigma=0.1,
    sigma_dir=None,
    num_pretrain_epochs: int = 0,
    num_adam_steps: int = 5,
    num_samples: int = 50,
    thinning: int = 1000,
    batch_size: int = 1000,
    num_chains: int = 1,
    solver=EXACT_SOLVER,
    params_init=None,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    holdout=None,
    optimizer: optax.GradientTransformation | None = None,
) -> PosteriorDraws:
    """The reference AdamMCMC schedule for a CNF on (x (N, d), c (N, cond_dim)).

    1. Start at ``params_init`` — the flow-matching pretraining (``training.fit``, 2501 epochs
       in the reference), done by the caller as the study does — or at ``field.init``.
       ``num_pretrain_epochs`` is kept for old calls and must be 0.
    2. ``num_adam_steps`` plain Adam steps on L, then sampling with
       L(θ) = −(N/|B|) Σ_B log p_θ(x | c) (exact likelihood through the ODE, λ = 1, flat prior),
       one sample every ``thinning`` steps, no burn-in. σ_dir defaults to P/50.

    ``holdout`` ((x, c)): the held-out potential N · mean(−log p_θ(x | c)) (N training
    events) of every kept state and its curve (see ``sample_adammcmc``). ``optimizer``: the
    chain's optimiser (default: the reference Adam, 1e-3), fresh moments at the start.

    ``key`` splits into (init, sampling). Keys (U,) with x (U, N, d), c (U, N, ·),
    ``params_init`` (U, ...) and σ scalar or (U,) run U units (runs × σ) in one program.
    """
    units = _units.num_units(key)
    x, c = _units.check_xc(field, x, c, units)
    lead = 2 if units is None else 3
    if not isinstance(num_pretrain_epochs, (int, np.integer)) or num_pretrain_epochs != 0:
        raise ValueError(
            f"num_pretrain_epochs must be 0, got {num_pretrain_epochs!r}: pretrain with "
            "bayesiamp_jax.training.fit and pass its params as params_init")
    key_pre, key_mcmc = _units.split(key, 2, units)
    params = params_init
    if params is None:
        params = jax.jit(_units.vmap_if(field.init, units))(key_pre)
    else:
        _units.check_leading("params_init", params, units)
        _checks.params_match("params_init", field, params, lead_axes=0 if units is None else 1)
    if sigma_dir is None:
        sigma_dir = field.num_params() / 50.0
    loss_fn = _Scaled(exact_nll_loss_fn(field, solver), float(x.shape[lead - 2]))
    with steps_exhausted_as_error(solver, "the AdamMCMC likelihood (flow.log_prob)"):
        return sample_adammcmc(
        key_mcmc, params, loss_fn, (x, c), sigma=sigma, sigma_dir=sigma_dir,
        num_samples=num_samples, thinning=thinning, num_adam_steps=num_adam_steps,
        batch_size=batch_size, num_chains=num_chains, checkpoint_path=checkpoint_path,
        progress=progress, holdout=holdout, optimizer=optimizer,
    )
