"""SGLD and SGHMC of the weights with blackjax's kernels, run by the project's driver.

Target (the posterior every family shares, ``posteriors.model``): for weights θ,

    log p(θ | D) = −(N / T) · L(θ; B) − |θ|² / (2 s²) + const,

with L the mean data loss ``loss_fn(θ, batch)`` on a mini-batch B (an unbiased estimate of the
mean loss on all N events), T the temperature (likelihood tempering: T = 2 doubles the posterior
covariance where the likelihood dominates) and s the prior scale. The gradient estimate is
blackjax's ``sgmcmc.gradients.grad_estimator(logprior, loglikelihood, N)`` with the whole
mini-batch given as ONE item of a length-1 batch and loglikelihood = −L / T, so that
blackjax's ``N · mean(loglikelihood)`` is −(N / T) L for any mean loss. blackjax's own
``temperature`` argument (which would temper the prior too) stays 1.

Kernels (blackjax ≥ 1.2; imported when a sampler is built, so ``import bayesiamp_jax`` works
without blackjax):

* SGLD (Welling & Teh 2011): θ ← θ + ε ∇log p̂(θ) + √(2ε) ξ, one mini-batch per step.
* SGHMC (Chen et al. 2014, blackjax's Euler scheme): each kernel call draws a fresh momentum
  p ~ N(0, I) and takes ``num_integration_steps`` steps θ ← θ + ε p,
  p ← (1 − α ε) p + ε ∇log p̂(θ) + √(2 α ε) ξ on ONE mini-batch (α = ``friction``); ε is the
  time step, so SGHMC's ε is not SGLD's (SGLD's ε ~ SGHMC's ε² / 2). Its biases on a Gaussian
  target (computed exactly in tests/test_sgmcmc.py): the first Euler step moves θ with the
  fresh momentum before any force, so short calls (ε L ω ≪ 1) are a Langevin step whose
  variances are ≈ 1 / (L − 1) too wide; the call's one mini-batch acts for the whole call and
  adds ≈ (ε L)² · Var(gradient) (9 % at N / B = 1.2 and ε L ω = 0.5-1 there).

One driver item = one kept sample = ``thinning`` kernel calls; ``num_burnin`` kernel calls run
once before the first sample, inside the first item's compiled program (no second program to
compile for a ``warm_up``; a resumed chain has passed it). Mini-batches:
``adammcmc.batch_at`` (a fresh permutation of the events every epoch of N // B calls;
``batch_size=None``: all events).
``batch_noise(key, batch) -> batch`` (static, optional) adds per-step randomness to the batch —
for the CNF the flow-matching noise (t, z), drawn afresh every step (a stochastic gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bayesiamp_jax import _checks, _units
from bayesiamp_jax import convergence as conv
from bayesiamp_jax.flow import SIGMA_MIN
from bayesiamp_jax.posteriors import driver
from bayesiamp_jax.posteriors.adammcmc import batch_at
from bayesiamp_jax.posteriors.draws import PosteriorDraws
from bayesiamp_jax.posteriors.driver import Algorithm, bind
from bayesiamp_jax.posteriors.model import cfm_fixed_noise_loss_fn, with_cfm_noise

__all__ = ["SGState", "cyclical_step_size", "sample_sghmc", "sample_sghmc_cnf", "sample_sgld",
           "sample_sgld_cnf", "sghmc_algorithm", "sgld_algorithm"]


def _blackjax():
    """The blackjax module, or a one-line ImportError saying how to install it."""
    try:
        import blackjax
        import blackjax.sgmcmc.gradients  # noqa: F401
    except ImportError as err:
        raise ImportError("SGLD / SGHMC need blackjax: pip install blackjax") from err
    return blackjax


class SGState(NamedTuple):
    """One chain: the weights (params pytree), its step-key and data-key, and the number of
    kernel calls made (burn-in included; it indexes the mini-batch and the step's key)."""

    position: Any
    rng_key: jax.Array
    data_key: jax.Array
    step: jax.Array


class _Sampler(NamedTuple):
    """The static settings of one kernel call (hashable by value: a jit static argument)."""

    kind: str  # "sgld" or "sghmc"
    loss_fn: Callable
    batch_size: int | None
    prior_scale: float
    batch_noise: Callable | None
    friction: float = 0.0
    num_integration_steps: int = 1
    num_burnin: int = 0
    cycle_length: int | None = None  # kernel calls per cosine cycle (None: constant ε)


def cyclical_step_size(step_size, call, num_burnin: int, cycle_length: int | None):
    """The step size of kernel call ``call`` (0-based, burn-in included): ε0 during the burn-in
    and, with ``cycle_length`` C, ε0 / 2 · (cos(π · mod(k, C) / C) + 1) at sampling call
    k = call − num_burnin (Zhang et al. 2020, cSG-MCMC, eq. 1 with C = ⌈K / M⌉)."""
    if cycle_length is None:
        return step_size
    k = call - num_burnin
    phase = jnp.mod(jnp.maximum(k, 0), cycle_length) / cycle_length
    return jnp.where(k < 0, step_size, step_size / 2 * (jnp.cos(jnp.pi * phase) + 1))


def _grad_estimator(sampler: _Sampler, data_size: int, temperature):
    """∇θ [−(N / T) L(θ; B) − |θ|² / (2 s²)] through blackjax's estimator: the mini-batch B
    goes in as the single item of a length-1 batch."""
    bj = _blackjax()
    s2 = sampler.prior_scale**2

    def logprior(params):
        return -0.5 * sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(params)) / s2

    def loglikelihood(params, batch):
        return -sampler.loss_fn(params, batch) / temperature

    estimate = bj.sgmcmc.gradients.grad_estimator(logprior, loglikelihood, data_size)
    return lambda params, batch: estimate(params, jax.tree_util.tree_map(lambda a: a[None],
                                                                         batch))


def _kernel(sampler: _Sampler, data_size: int, temperature):
    """blackjax's SGLD or SGHMC ``step(key, position, minibatch, step_size) -> position``."""
    bj = _blackjax()
    grad = _grad_estimator(sampler, data_size, temperature)
    if sampler.kind == "sgld":
        return bj.sgld(grad).step
    return bj.sghmc(grad, sampler.num_integration_steps, alpha=sampler.friction, beta=0.0).step


def _batch(sampler: _Sampler, data, state: SGState, step):
    """The mini-batch of kernel call ``step`` and the key of its kernel."""
    k_kernel, k_noise = jax.random.split(jax.random.fold_in(state.rng_key, step))
    batch = batch_at(data, state.data_key, step, sampler.batch_size)
    if sampler.batch_noise is not None:
        batch = sampler.batch_noise(k_noise, batch)
    return batch, k_kernel


def _data_size(data) -> int:
    return int(jax.tree_util.tree_leaves(data)[0].shape[0])


def _call(state: SGState, ctx, sampler: _Sampler) -> SGState:
    """One kernel call of one chain (ctx.hyper = (step_size, temperature))."""
    step_size, temperature = ctx.hyper
    kernel = _kernel(sampler, _data_size(ctx.data), temperature)
    batch, k = _batch(sampler, ctx.data, state, state.step)
    eps = cyclical_step_size(step_size, state.step, sampler.num_burnin, sampler.cycle_length)
    position = kernel(k, state.position, batch, eps)
    return state._replace(position=position, step=state.step + 1)


def _sample_loss(state: SGState, ctx, sampler: _Sampler):
    """L at the chain's position on the batch (and noise) of the kernel call that made it."""
    batch, _ = _batch(sampler, ctx.data, state, jnp.maximum(state.step - 1, 0))
    return sampler.loss_fn(state.position, batch)


# --- the driver algorithm (bayesiamp_jax.posteriors.driver) ----------------------------------
# One item = one kept sample = ``thinning`` kernel calls. ctx.data: the unit's data; ctx.hyper:
# its (step_size, temperature); start: its params_init. The unit key seeds the chain in init.


def _sg_init(key, ctx, start):
    rng_key, data_key = jax.random.split(key)
    position = jax.tree_util.tree_map(jnp.asarray, start)
    return SGState(position, rng_key, data_key, jnp.asarray(0, jnp.int32))


def _sg_run(key, state, ctx, num_active, num_epochs, *, sampler, thinning):
    """``num_epochs`` kept samples (the first ``num_active`` made), ``thinning`` calls each;
    the first sample of a chain (step 0) comes after ``sampler.num_burnin`` more calls: the burn-in
    runs once, in the same compiled program (a resumed chain has step > 0)."""
    del key  # the chain carries its keys

    def make(state):
        burn = sampler.num_burnin
        calls = thinning + jnp.where(state.step == 0, burn, 0) if burn else thinning
        state = jax.lax.fori_loop(0, calls, lambda i, s: _call(s, ctx, sampler), state)
        loss = _sample_loss(state, ctx, sampler).astype(jnp.float32)
        rec = {"position": ravel_pytree(state.position)[0], "loss": loss}
        if sampler.cycle_length is not None:  # the cycle's phase at the draw's last call
            k = state.step - 1 - sampler.num_burnin
            rec["cycle_fraction"] = (jnp.mod(k, sampler.cycle_length)
                                     / sampler.cycle_length).astype(jnp.float32)
        return state, rec

    def body(state, i):
        skip = lambda s: (s, {"position": jnp.zeros_like(ravel_pytree(s.position)[0]),
                              "loss": jnp.asarray(jnp.nan, jnp.float32)}
                          | ({} if sampler.cycle_length is None else
                             {"cycle_fraction": jnp.asarray(jnp.nan, jnp.float32)}))
        return jax.lax.cond(i < num_active, make, skip, state)

    return jax.lax.scan(body, state, jnp.arange(num_epochs))


def _sg_holdout(state, ctx, held, *, sampler):
    """The mean loss L(θ; held-out events) at the chain's position (the noise, for the CNF,
    drawn with the held-out set's fixed key)."""
    batch = (held.x, held.c)
    if sampler.batch_noise is not None:
        batch = sampler.batch_noise(held.key, batch)
    return sampler.loss_fn(state.position, batch)


def _algorithm(name, sampler: _Sampler, thinning: int) -> Algorithm:
    return Algorithm(
        name, _sg_init, bind(_sg_run, sampler=sampler, thinning=thinning),
        holdout_loss=bind(_sg_holdout, sampler=sampler), checked="loss", item="sample",
        what="the loss at the kept sample (sample 0: after the burn-in)")


def sgld_algorithm(loss_fn: Callable, *, thinning: int, num_burnin: int = 0,
                   batch_size: int | None = None, prior_scale: float = 1.0,
                   batch_noise: Callable | None = None,
                   cycle_length: int | None = None) -> Algorithm:
    """SGLD as a ``driver.Algorithm``: one item = one kept sample = ``thinning`` SGLD steps;
    hyper (step_size, temperature), start the unit's params_init."""
    sampler = _Sampler("sgld", loss_fn, batch_size, float(prior_scale), batch_noise,
                       num_burnin=num_burnin, cycle_length=cycle_length)
    return _algorithm("sgld", sampler, thinning)


def sghmc_algorithm(loss_fn: Callable, *, thinning: int, num_burnin: int = 0,
                    batch_size: int | None = None, prior_scale: float = 1.0,
                    batch_noise: Callable | None = None, friction: float = 0.01,
                    num_integration_steps: int = 10,
                    cycle_length: int | None = None) -> Algorithm:
    """SGHMC as a ``driver.Algorithm``: one item = one kept sample = ``thinning`` kernel calls
    of ``num_integration_steps`` steps each (friction α); hyper (step_size, temperature)."""
    sampler = _Sampler("sghmc", loss_fn, batch_size, float(prior_scale), batch_noise,
                       float(friction), int(num_integration_steps), num_burnin=num_burnin,
                       cycle_length=cycle_length)
    return _algorithm("sghmc", sampler, thinning)


driver.register("sgld", sgld_algorithm)
driver.register("sghmc", sghmc_algorithm)


# --- public entry points ---------------------------------------------------------------------


def _positive_per_unit(name, value, units):
    arr = np.asarray(value, np.float64)
    for i, v in enumerate(np.ravel(arr)):
        _checks.positive(name if arr.ndim == 0 else f"{name}[{i}]", float(v))
    return _units.per_unit(name, arr, units)


def _sample(kind, key, params_init, loss_fn, data, *, step_size, num_samples, thinning,
            num_burnin, batch_size, temperature, prior_scale, batch_noise, cycle_length,
            chunk_samples, checkpoint_path, progress, holdout, extra) -> PosteriorDraws:
    """The shared body of ``sample_sgld`` / ``sample_sghmc`` (``extra``: SGHMC's settings)."""
    _blackjax()
    num_samples = _checks.positive_int("num_samples", num_samples)
    thinning = _checks.positive_int("thinning", thinning)
    chunk_samples = _checks.positive_int("chunk_samples", chunk_samples)
    if isinstance(num_burnin, bool) or not isinstance(num_burnin, (int, np.integer)) \
            or num_burnin < 0:
        raise ValueError(f"num_burnin must be an integer >= 0, got {num_burnin!r}")
    num_burnin = int(num_burnin)
    if cycle_length is not None:
        cycle_length = _checks.positive_int("cycle_length", cycle_length)
    units = _units.num_units(key)
    step_arr = _positive_per_unit("step_size", step_size, units)
    temp_arr = _positive_per_unit("temperature", temperature, units)
    prior_scale = _checks.positive("prior_scale", prior_scale)
    data = jax.tree_util.tree_map(jnp.asarray, data)
    _units.check_leading("data", data, units)
    _units.check_leading("params_init", params_init, units)
    _units.data_points(data, units, batch_size)
    params_init = jax.tree_util.tree_map(jnp.asarray, params_init)
    settings = dict(loss_fn=loss_fn, thinning=thinning, num_burnin=num_burnin,
                    batch_size=None if batch_size is None else int(batch_size),
                    prior_scale=prior_scale, batch_noise=batch_noise,
                    cycle_length=cycle_length)
    if kind == "sgld":
        algorithm = sgld_algorithm(**settings)
        label = "SGLD"
    else:
        algorithm = sghmc_algorithm(**settings, **extra)
        label = "SGHMC"
    desc = f"{label} ε={float(step_size):g}" if np.ndim(step_size) == 0 else label
    desc = desc if units is None else f"{desc} x{units} units"
    sig = {k: v for k, v in settings.items() if k not in ("loss_fn", "batch_noise")}
    out = driver.run(
        algorithm, key, data, units=units, num_epochs=num_samples,
        chunk=1 if holdout is not None else chunk_samples, hyper=(step_arr, temp_arr),
        start=params_init, settings=dict(data=data, params_init=params_init,
                                         step_size=step_arr, temperature=temp_arr,
                                         **sig, **extra),
        checkpoint_path=checkpoint_path, progress=progress, desc=desc, holdout=holdout,
        holdout_every=None if holdout is None else 1)
    unravel = ravel_pytree(_units.first_unit(params_init, units))[1]
    params = _units.vmap_if(jax.vmap(unravel), units)(jnp.asarray(out.records["position"]))
    tile = (lambda a: a) if units is None else (lambda a: np.broadcast_to(a, (units,) + a.shape))
    as_info = lambda v: tile(np.asarray(v, np.float64)) if np.ndim(v) == 0 else np.asarray(v)
    info = {"loss": np.asarray(out.records["loss"]), "step_size": as_info(step_size),
            "temperature": as_info(temperature), "prior_scale": as_info(prior_scale),
            "thinning": tile(np.asarray(thinning)), "num_burnin": tile(np.asarray(num_burnin))}
    info |= {k: tile(np.asarray(v)) for k, v in extra.items()}
    if cycle_length is not None:
        info |= {"cycle_length": tile(np.asarray(cycle_length)),
                 "cycle_fraction": np.asarray(out.records["cycle_fraction"])}
    if holdout is not None:
        held = out.holdout_losses  # (…, 1 + S): the start, then every kept sample
        info["holdout_loss"] = held[..., 1:]
        calls = num_burnin + thinning * np.arange(num_samples + 1)
        calls[0] = 0
        info |= conv.holdout_info(calls, held, units)
    return PosteriorDraws(jax.device_get(params), kind, info)


def sample_sgld(key, params_init, loss_fn: Callable, data, *, step_size, num_samples: int,
                thinning: int = 1, num_burnin: int = 0, batch_size: int | None = None,
                temperature=1.0, prior_scale: float = 1.0, batch_noise: Callable | None = None,
                cycle_length: int | None = None, chunk_samples: int = 10,
                checkpoint_path: str | Path | None = None,
                progress: bool = True, holdout=None) -> PosteriorDraws:
    """SGLD draws of the weights (blackjax.sgld): θ ← θ + ε ∇log p̂(θ) + √(2ε) ξ.

    Args:
        key: seeds the chain. Keys of shape (U,) run U independent chains (units: runs × grid
            points) in one vmapped program: ``params_init`` and every data leaf then carry a
            leading axis U, ``step_size`` and ``temperature`` are scalars or (U,) arrays; unit
            u equals the call with ``key[u]``.
        params_init: the start (e.g. the deterministic pretrained params).
        loss_fn: ``loss_fn(params, batch) -> scalar``, the MEAN loss over the batch's events
            (Gibbs log-likelihood −N · L); hashable (calls with equal settings share code).
        data: pytree of arrays with common leading axis N.
        step_size: ε > 0. temperature: T > 0 (likelihood tempering, −(N / T) L).
        num_samples, thinning, num_burnin: draws kept, kernel calls per draw, kernel calls
            discarded before the first draw.
        batch_size: events per kernel call (None: all N).
        prior_scale: s of the N(0, s² I) prior.
        batch_noise: optional static ``batch_noise(key, batch) -> batch`` (fresh every call).
        cycle_length: None (constant ε) or C kernel calls per cosine cycle of the step size
            after the burn-in (``cyclical_step_size``, Zhang et al. 2020): then info
            "cycle_length" and, per draw, "cycle_fraction" (the phase of its last call; keep
            draws past a fraction β of the cycle, the sampling stage).
        chunk_samples: draws per compiled call (progress and checkpoint between).
        checkpoint_path: saved atomically after every chunk and resumed from (its signature —
            key, data, start, settings — must match); a resumed run equals an uninterrupted one.
        holdout: (x, c) or a ``convergence.Holdout`` (no unit axis, data (x, c)): the held-out
            mean loss of every draw is info "holdout_loss"; "holdout_epochs" (kernel calls, 0 =
            the start) and "holdout_curve" give it along the run (one draw per chunk then).
    Returns:
        ``PosteriorDraws`` with params (S, ...) — (U, S, ...) for units — and info "loss" (L at
        the draw on the batch of its last call), "step_size", "temperature", "prior_scale",
        "thinning", "num_burnin" (each with a leading U for units).
    """
    return _sample("sgld", key, params_init, loss_fn, data, step_size=step_size,
                   num_samples=num_samples, thinning=thinning, num_burnin=num_burnin,
                   batch_size=batch_size, temperature=temperature, prior_scale=prior_scale,
                   batch_noise=batch_noise, cycle_length=cycle_length,
                   chunk_samples=chunk_samples,
                   checkpoint_path=checkpoint_path, progress=progress, holdout=holdout,
                   extra={})


def sample_sghmc(key, params_init, loss_fn: Callable, data, *, step_size, num_samples: int,
                 thinning: int = 1, num_burnin: int = 0, batch_size: int | None = None,
                 temperature=1.0, prior_scale: float = 1.0, friction: float = 0.01,
                 num_integration_steps: int = 10, batch_noise: Callable | None = None,
                 cycle_length: int | None = None, chunk_samples: int = 10,
                 checkpoint_path: str | Path | None = None,
                 progress: bool = True, holdout=None) -> PosteriorDraws:
    """SGHMC draws of the weights (blackjax.sghmc): every kernel call draws p ~ N(0, I) and
    takes ``num_integration_steps`` L steps θ ← θ + ε p, p ← (1 − α ε) p + ε ∇log p̂(θ) +
    √(2αε) ξ on one mini-batch (α = ``friction`` >= 0; ε is a time step: see the module
    docstring for its biases). ``thinning`` and ``num_burnin`` count kernel calls. Other
    arguments and the result as ``sample_sgld``, with info "friction" and
    "num_integration_steps" too.
    """
    friction = _checks.non_negative("friction", friction)
    num_integration_steps = _checks.positive_int("num_integration_steps", num_integration_steps)
    if num_integration_steps < 2:  # blackjax moves θ before the first force acts
        raise ValueError("num_integration_steps must be >= 2 (with 1 step blackjax's SGHMC moves "
                         f"the position before any gradient acts), got {num_integration_steps}")
    return _sample("sghmc", key, params_init, loss_fn, data, step_size=step_size,
                   num_samples=num_samples, thinning=thinning, num_burnin=num_burnin,
                   batch_size=batch_size, temperature=temperature, prior_scale=prior_scale,
                   batch_noise=batch_noise, cycle_length=cycle_length,
                   chunk_samples=chunk_samples,
                   checkpoint_path=checkpoint_path, progress=progress, holdout=holdout,
                   extra=dict(friction=friction, num_integration_steps=num_integration_steps))


def _cfm_noise(key, batch):
    """(x, c) -> (x, c, t, z) with fresh flow-matching noise (``model.with_cfm_noise``)."""
    return with_cfm_noise(key, *batch)


def _sample_cnf(kind, key, field, params_init, x, c, *, sigma_min, **kw) -> PosteriorDraws:
    units = _units.num_units(key)
    x, c = _units.check_xc(field, x, c, units)
    key_init, key_chain = _units.split(key, 2, units)
    if params_init is None:
        params_init = jax.jit(_units.vmap_if(field.init, units))(key_init)
    else:
        _units.check_leading("params_init", params_init, units)
        _checks.params_match("params_init", field, params_init,
                             lead_axes=0 if units is None else 1)
    sampler = sample_sgld if kind == "sgld" else sample_sghmc
    return sampler(key_chain, params_init, cfm_fixed_noise_loss_fn(field, sigma_min), (x, c),
                   batch_noise=_cfm_noise, **kw)


def sample_sgld_cnf(key, field, params_init, x, c, *, step_size, num_samples: int,
                    thinning: int, num_burnin: int, batch_size: int | None, temperature=1.0,
                    prior_scale: float = 1.0, sigma_min: float = SIGMA_MIN,
                    cycle_length: int | None = None, chunk_samples: int = 10,
                    checkpoint_path: str | Path | None = None,
                    progress: bool = True, holdout=None) -> PosteriorDraws:
    """SGLD of a CNF vector field on (x (N, d), c (N, cond_dim)) with the stochastic
    flow-matching loss (fresh t, z every step): log p(θ | D) = −(N / T) L_FM − |θ|² / (2 s²).

    ``params_init``: the deterministic pretrained params (None: ``field.init``). ``key`` splits
    into (init, chain). Keys (U,) with x (U, N, d), c (U, N, ·), ``params_init`` (U, ...) and
    ``step_size`` / ``temperature`` scalar or (U,) run U units in one program. The held-out
    loss uses the held-out set's fixed noise key. Other arguments: ``sample_sgld``.
    """
    return _sample_cnf("sgld", key, field, params_init, x, c, sigma_min=sigma_min,
                       step_size=step_size, num_samples=num_samples, thinning=thinning,
                       num_burnin=num_burnin, batch_size=batch_size, temperature=temperature,
                       prior_scale=prior_scale, cycle_length=cycle_length,
                       chunk_samples=chunk_samples, checkpoint_path=checkpoint_path,
                       progress=progress, holdout=holdout)


def sample_sghmc_cnf(key, field, params_init, x, c, *, step_size, num_samples: int,
                     thinning: int, num_burnin: int, batch_size: int | None, temperature=1.0,
                     prior_scale: float = 1.0, friction: float = 0.01,
                     num_integration_steps: int = 10, sigma_min: float = SIGMA_MIN,
                     cycle_length: int | None = None, chunk_samples: int = 10,
                     checkpoint_path: str | Path | None = None,
                     progress: bool = True, holdout=None) -> PosteriorDraws:
    """SGHMC of a CNF vector field (as ``sample_sgld_cnf``; ``friction`` α and
    ``num_integration_steps`` as in ``sample_sghmc``)."""
    return _sample_cnf("sghmc", key, field, params_init, x, c, sigma_min=sigma_min,
                       step_size=step_size, num_samples=num_samples, thinning=thinning,
                       num_burnin=num_burnin, batch_size=batch_size, temperature=temperature,
                       prior_scale=prior_scale, friction=friction,
                       num_integration_steps=num_integration_steps,
                       cycle_length=cycle_length, chunk_samples=chunk_samples,
                       checkpoint_path=checkpoint_path, progress=progress, holdout=holdout)
