"""Deep and bootstrap ensembles: M independently trained members are the weight draws.

Every member is one **unit** of the driver (``driver.run`` with U·M units): the CNF members run
the flow-matching trainer itself (``training.flow_matching``), a generic ``loss_fn`` runs the
same epoch loop (``training.build_epochs``), so checkpoint / resume, the held-out curve and the
early stop are the driver's. Member m of a unit with key k has the key ``split(k, M)[m]``; like
``training.fit`` it splits into (initialisation, training), so a deep-ensemble member equals the
one-unit ``training.fit`` run with its key.

* ``bootstrap=None`` (method "ensemble"): every member sees the training data; members differ
  by their initialisation and mini-batch / loss noise (Lakshminarayanan et al. 2017).
* ``"multinomial"`` (method "bootstrap"): member m trains on N events drawn with replacement
  (indices ``randint(k_b, (N,), 0, N)``) — the nonparametric bootstrap (Efron 1979).
* ``"poisson"``: member m weights event i by w_i ~ Poisson(1) (the loss is Σ_i w_i ℓ_i / n on
  a mini-batch), the Poisson bootstrap (Hanley & MacGibbon 2006) that needs no resampling.

k_b = ``fold_in(member key, BOOTSTRAP_STREAM)`` (``bootstrap_samples`` returns them). For a
regular estimator the bootstrap members' spread estimates its sampling covariance (e.g.
σ²(XᵀX)⁻¹ for least squares), not a Bayesian posterior; a deep ensemble's spread is that of the
optimiser's outcomes (zero for a convex loss).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bayesiamp_jax import _checks, _units
from bayesiamp_jax import convergence as conv
from bayesiamp_jax.flow import SIGMA_MIN
from bayesiamp_jax.optim import adam
from bayesiamp_jax.posteriors import driver
from bayesiamp_jax.posteriors.draws import PosteriorDraws
from bayesiamp_jax.posteriors.driver import Algorithm, bind

__all__ = ["BOOTSTRAPS", "BOOTSTRAP_STREAM", "bootstrap_samples", "ensemble_algorithm",
           "fit_ensemble", "fit_ensemble_cnf", "member_keys"]

BOOTSTRAPS = ("multinomial", "poisson")
BOOTSTRAP_STREAM = 0xB007  # fold_in constant of a member's resampling key
_DEFAULT_OPTIMIZER = adam()


def member_keys(key: jax.Array, num_members: int) -> jax.Array:
    """The members' keys: ``split(key, M)`` (M,) for one key, (U, M) for keys (U,)."""
    return _units.vmap_if(lambda k: jax.random.split(k, num_members), _units.num_units(key))(key)


def _resample_one(key, num_points: int, bootstrap: str) -> jax.Array:
    key = jax.random.fold_in(key, BOOTSTRAP_STREAM)
    if bootstrap == "multinomial":
        return jax.random.randint(key, (num_points,), 0, num_points)
    return jax.random.poisson(key, 1.0, (num_points,)).astype(jnp.float32)


def bootstrap_samples(key: jax.Array, num_members: int, num_points: int,
                      bootstrap: str) -> jax.Array:
    """Each member's resampling: "multinomial" -> indices (M, N) int32 drawn with replacement,
    "poisson" -> event weights (M, N) float32 ~ Poisson(1); (U, M, N) for keys (U,)."""
    _checks.one_of("bootstrap", bootstrap, BOOTSTRAPS)
    num_points = _checks.positive_int("num_points", num_points)
    keys = member_keys(key, _checks.positive_int("num_members", num_members))
    one = jax.vmap(lambda k: _resample_one(k, num_points, bootstrap))
    return _units.vmap_if(one, _units.num_units(key))(keys)


# --- a member trained on a generic loss, as a driver algorithm -------------------------------


class _MemberLoss(NamedTuple):
    """``build_epochs``' loss(key, params, x, c) on x = the batch, c = () or the weights (n,):
    ``loss_fn(key, params, batch)``, or with weights Σ_i w_i ℓ_i / n where ℓ_i is ``loss_fn``
    on event i alone (key ``split(key, n)[i]``)."""

    loss_fn: Callable
    weighted: bool

    def __call__(self, key, params, batch, weights):
        if not self.weighted:
            return self.loss_fn(key, params, batch)
        n = weights.shape[0]
        one = lambda k, event: self.loss_fn(
            k, params, jax.tree_util.tree_map(lambda a: a[None], event))
        return jnp.mean(weights * jax.vmap(one)(jax.random.split(key, n), batch))


def _member_init(key, ctx, start, *, optimizer):
    from bayesiamp_jax.training import init_train_state  # training imports the driver

    return init_train_state(start, optimizer)


def _member_run_epochs(key, state, ctx, num_active, num_epochs, *, loss_fn, weighted, optimizer,
                       batch_size):
    """Epochs of one member on ctx.data = {"batch"[, "weights"]}; training noise from the
    second half of ``split(key)`` (the first initialised the member)."""
    from bayesiamp_jax.training import build_epochs

    run = build_epochs(_MemberLoss(loss_fn, weighted), optimizer, batch_size)
    batch, weights = ctx.data["batch"], ctx.data["weights"] if weighted else ()
    state, info = run(jax.random.split(key)[1], state, batch, weights, num_epochs, num_active)
    return state, {"loss": info.loss}


def _member_holdout(state, ctx, held, *, loss_fn):
    """The member's (unweighted) loss on the held-out batch (x, c) with the fixed key."""
    return loss_fn(held.key, state.params, (held.x, held.c))


def ensemble_algorithm(loss_fn: Callable, *, batch_size: int, weighted: bool = False,
                       optimizer: optax.GradientTransformation | None = None,
                       name: str = "ensemble") -> Algorithm:
    """One member trained on ``loss_fn(key, params, batch)`` as a ``driver.Algorithm`` (a unit
    per member): data {"batch": pytree, "weights": (n,) if ``weighted``}; ``start`` the
    member's initial params."""
    optimizer = optimizer or _DEFAULT_OPTIMIZER
    return Algorithm(
        name, bind(_member_init, optimizer=optimizer),
        bind(_member_run_epochs, loss_fn=loss_fn, weighted=bool(weighted), optimizer=optimizer,
             batch_size=batch_size),
        holdout_loss=bind(_member_holdout, loss_fn=loss_fn))


driver.register("ensemble", ensemble_algorithm)
driver.register("bootstrap", ensemble_algorithm)


# --- the members as units ----------------------------------------------------------------------


def _method(bootstrap):
    if bootstrap is not None:
        _checks.one_of("bootstrap", bootstrap, (None,) + BOOTSTRAPS)
    return "ensemble" if bootstrap is None else "bootstrap"


def _members_data(key, data, units, num_members: int, bootstrap):
    """(member keys (U·M,), the members' data with leading U·M, weights (U·M, N) or None)."""
    n = int(np.shape(jax.tree_util.tree_leaves(data)[0])[0 if units is None else 1])
    keys = member_keys(key, num_members)
    u = 1 if units is None else units
    flat_keys = jnp.reshape(keys, (u * num_members,) + keys.shape[1 if units is None else 2:])
    one_unit = (lambda a: a[None]) if units is None else (lambda a: a)
    data = jax.tree_util.tree_map(lambda a: one_unit(jnp.asarray(a)), data)  # (U, N, ...)
    if bootstrap == "multinomial":
        idx = jax.vmap(lambda k: _resample_one(k, n, bootstrap))(flat_keys)
        idx = idx.reshape(u, num_members, n)
        member = jax.tree_util.tree_map(
            lambda a: jax.vmap(lambda au, iu: au[iu])(a, idx).reshape((-1,) + a.shape[1:]), data)
        return flat_keys, member, None
    member = jax.tree_util.tree_map(
        lambda a: jnp.repeat(a, num_members, axis=0), data)
    if bootstrap == "poisson":
        return flat_keys, member, jax.vmap(lambda k: _resample_one(k, n, bootstrap))(flat_keys)
    return flat_keys, member, None


def _draws(out, units, num_members: int, method: str) -> PosteriorDraws:
    """The members' final params (U, M, ...) / (M, ...) and info (losses per member)."""
    lead = (num_members,) if units is None else (units, num_members)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a).reshape(lead + a.shape[1:]),
                                    jax.device_get(out.state.params))
    loss = np.asarray(out.records["loss"]).reshape(lead + (-1,))  # (..., M, E)
    member_loss = np.swapaxes(loss, -1, -2)  # (..., E, M) as the repulsive ensemble's
    info = {"member_loss": member_loss, "losses": member_loss.mean(axis=-1),
            "loss": member_loss[..., -1, :]}
    if out.holdout_losses is not None:
        curves = np.asarray(out.holdout_losses).reshape(lead + (-1,))
        info |= conv.holdout_info(out.holdout_epochs, curves.mean(axis=-2), units)
    return PosteriorDraws(params, method, info)


def _check_common(num_members, num_epochs, chunk_epochs, batch_size, bootstrap):
    num_members = _checks.positive_int("num_members", num_members)
    if num_members < 2:
        raise ValueError(f"num_members must be >= 2 for an ensemble, got {num_members}")
    _checks.positive_int("num_epochs", num_epochs)
    _checks.positive_int("chunk_epochs", chunk_epochs)
    _checks.positive_int("batch_size", batch_size)
    return num_members, _method(bootstrap)


def fit_ensemble(
    key: jax.Array,
    init_fn: Callable,
    loss_fn: Callable,
    data,
    *,
    num_members: int,
    num_epochs: int,
    batch_size: int,
    bootstrap: str | None = None,
    optimizer: optax.GradientTransformation | None = None,
    chunk_epochs: int = 100,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    holdout=None,
    holdout_every: int | None = None,
    early_stop: conv.Plateau | None = None,
) -> PosteriorDraws:
    """A deep (``bootstrap=None``) or bootstrap ensemble on a generic mean loss.

    Args:
        key: one key, or (U,) keys for U independent ensembles (every data leaf then has a
            leading U). Member m: key ``split(key, M)[m]`` = (init, train) halves.
        init_fn: ``init_fn(key) -> params`` of one member.
        loss_fn: ``loss_fn(key, params, batch) -> scalar`` mean loss of a batch (a pytree with
            leading axis n); with ``"poisson"`` it is evaluated per event and weighted.
        data: pytree with leading axis N (mini-batches along it).
        num_members: M ≥ 2; bootstrap: None, "multinomial" or "poisson" (module docstring).
        optimizer: per-member optax optimiser (default the reference Adam).
        checkpoint_path, holdout ((x, c): ``loss_fn(key_h, θ, (x, c))``, the members' mean is
            the curve), holdout_every, early_stop: the driver's (``driver.run``).
    Returns:
        PosteriorDraws, params (M, ...) (U: (U, M, ...)), method "ensemble" / "bootstrap",
        info "member_loss" (E, M), "losses" (E,), "loss" (M,) (each member's last epoch) and,
        with ``holdout``, "holdout_epochs" / "holdout_curve" (C,), U leading for units.
    """
    num_members, method = _check_common(num_members, num_epochs, chunk_epochs, batch_size,
                                        bootstrap)
    units = _units.num_units(key)
    _units.check_data(data, units, batch_size)
    keys, member_data, weights = _members_data(key, data, units, num_members, bootstrap)
    start = jax.vmap(lambda k: init_fn(jax.random.split(k)[0]))(keys)
    algorithm = ensemble_algorithm(loss_fn, batch_size=batch_size, optimizer=optimizer,
                                   weighted=weights is not None, name=method)
    run_data = {"batch": member_data} | ({} if weights is None else {"weights": weights})
    total = keys.shape[0]
    out = driver.run(
        algorithm, keys, run_data, units=total, num_epochs=num_epochs, chunk=chunk_epochs,
        start=start, settings=dict(data=data, num_members=num_members, bootstrap=str(bootstrap),
                                   batch_size=batch_size),
        checkpoint_path=checkpoint_path, progress=progress,
        desc=f"{method} x{num_members}" + ("" if units is None else f" x{units} units"),
        holdout=holdout, holdout_every=holdout_every, early_stop=early_stop)
    return _draws(out, units, num_members, method)


def fit_ensemble_cnf(
    key: jax.Array,
    field,
    x,
    c,
    *,
    num_members: int,
    num_epochs: int,
    batch_size: int = 1000,
    bootstrap: str | None = None,
    sigma_min: float = SIGMA_MIN,
    optimizer: optax.GradientTransformation | None = None,
    chunk_epochs: int = 100,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    holdout=None,
    holdout_every: int | None = None,
    early_stop: conv.Plateau | None = None,
) -> PosteriorDraws:
    """A deep or bootstrap ensemble of CNF vector fields trained by flow matching.

    The members are units of the flow-matching trainer (``training.flow_matching``; Poisson
    weights: its ``weighted`` form): member m of a unit with key k starts from
    ``field.init(split(split(k, M)[m])[0])``, so a deep-ensemble member equals
    ``training.fit(split(k, M)[m], field, x, c, ...)`` and a multinomial member equals it on
    ``x[idx], c[idx]`` (``bootstrap_samples``). x (n, d), c (n, cond_dim); keys (U,) with x
    (U, n, d), c (U, n, ·) for U units. ``holdout``: the held-out flow-matching curve (members'
    mean). Returns PosteriorDraws as ``fit_ensemble``.
    """
    from bayesiamp_jax import training  # training imports the driver (and so this package)

    num_members, method = _check_common(num_members, num_epochs, chunk_epochs, batch_size,
                                        bootstrap)
    units = _units.num_units(key)
    x, c = _units.check_xc(field, x, c, units)
    _checks.finite("x", x)
    _checks.finite("c", c)
    n = x.shape[-2]
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the number of points {n}")
    keys, (mx, mc), weights = _members_data(key, (x, c), units, num_members, bootstrap)
    start = jax.vmap(lambda k: field.init(jax.random.split(k)[0]))(keys)
    algorithm = training.flow_matching(field, sigma_min=sigma_min, optimizer=optimizer,
                                       batch_size=batch_size, weighted=weights is not None)
    run_data = (mx, mc) if weights is None else (mx, mc, weights)
    out = driver.run(
        algorithm, keys, run_data, units=keys.shape[0], num_epochs=num_epochs,
        chunk=chunk_epochs, start=start,
        settings=dict(x=x, c=c, num_members=num_members, bootstrap=str(bootstrap),
                      batch_size=batch_size, sigma_min=float(sigma_min)),
        checkpoint_path=checkpoint_path, progress=progress,
        desc=f"{method} x{num_members}" + ("" if units is None else f" x{units} units"),
        holdout=holdout, holdout_every=holdout_every, early_stop=early_stop)
    return _draws(out, units, num_members, method)
