"""SWAG: a Gaussian over the iterates of constant-rate SGD (Maddox et al. 2019, arXiv:1902.02476).

From the deterministic params, SGD with a constant learning rate runs ``num_epochs`` epochs on

    L(θ; batch) + |θ|² / (2 s² N)        (the posterior exp(−N L) N(0, s² I) per event),

and after every epoch k = 1..K the iterate θ_k is collected: the running mean θ̄ (the SWA
solution), the running variance diag(θ²̄ − θ̄²) (kept as Welford's sum of squared deviations,
which avoids the cancellation of θ²̄ − θ̄² in float32) and the last ``rank`` deviations
θ_k − θ̄_k (θ̄_k the mean after collecting θ_k) as the rows of D. A draw is

    θ = θ̄ + √T [ diag(max(θ²̄ − θ̄², 0))^{1/2} z1 / √2 + Dᵀ z2 / √(2 (K_D − 1)) ],

z1 ~ N(0, I_P), z2 ~ N(0, I_rank), K_D = min(K, rank) the filled rows (K_D − 1 is replaced by
1 when K_D = 1); its covariance is T · ½ (diag + DᵀD / (K_D − 1)). T = ``temperature`` scales
the covariance. SGD (not Adam): the stationary covariance of constant-rate SGD approximates the
posterior when the rate is Mandt et al.'s (2017, arXiv:1704.04289) ε* = 2 S P T / (N tr C)
(batch S, P weights, C the covariance of one event's loss gradient; ``mandt_learning_rate``);
a diagonal preconditioner (Adam) would distort it. Mandt's theory assumes independent batches
(``batches="independent"``: each step's S events drawn with replacement). With the trainer's
epochs of random reshuffling (``batches="reshuffle"``, the default, as ``training.fit``) the
batch noise of an epoch nearly cancels and the iterates collected once per epoch are narrower:
measured on a 2-parameter linear-Gaussian model at ε*, 0.28-0.31 of the posterior variance
(independent batches: 1.0-1.1; tests/test_swag.py).

Every unit runs through ``driver.run`` (state: the SGD state and the moments; checkpoint and
resume); the draws use the second half of ``split(unit key)`` (the first drives the epochs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from bayesiamp_jax import _checks, _units
from bayesiamp_jax import convergence as conv
from bayesiamp_jax.flow import SIGMA_MIN
from bayesiamp_jax.posteriors import driver
from bayesiamp_jax.posteriors.draws import PosteriorDraws
from bayesiamp_jax.posteriors.driver import Algorithm, bind
from bayesiamp_jax.posteriors.model import cfm_loss_fn

__all__ = ["BATCHES", "METHOD", "SWAGMoments", "SWAGState", "fit_swag", "fit_swag_cnf",
           "mandt_learning_rate", "swag_algorithm", "swag_draws"]

METHOD = "swag"
BATCHES = ("reshuffle", "independent")


class SWAGState(NamedTuple):
    """SGD state (``training.TrainState``), the collected moments over the flat weights:
    ``mean`` (P,), ``sq_dev`` (P,) Σ_k (θ_k − θ̄)² (Welford), ``deviations`` (rank, P) a ring
    buffer of the last deviations, ``count`` K collected iterates."""

    train: object
    mean: jax.Array
    sq_dev: jax.Array
    deviations: jax.Array
    count: jax.Array


class SWAGMoments(NamedTuple):
    """What the draws need: SWA mean (P,), variance (P,) = θ²̄ − θ̄², deviations (rank, P)
    (rows beyond the K collected are 0) and K."""

    mean: jax.Array
    variance: jax.Array
    deviations: jax.Array
    count: jax.Array


class _PriorLoss(NamedTuple):
    """``build_epochs``' loss(key, params, batch, ()) = loss_fn(key, params, batch) + the
    per-event prior term |θ|² · ``prior_weight`` (= 1 / (2 s² N))."""

    loss_fn: Callable
    prior_weight: float

    def __call__(self, key, params, batch, _):
        loss = self.loss_fn(key, params, batch)
        if self.prior_weight == 0.0:
            return loss
        return loss + self.prior_weight * jnp.sum(ravel_pytree(params)[0] ** 2)


def _swag_init(key, ctx, start, *, rank, optimizer):
    from bayesiamp_jax.training import init_train_state  # training imports the driver

    flat = ravel_pytree(start)[0]
    zeros = jnp.zeros_like(flat)
    return SWAGState(init_train_state(start, optimizer), zeros, zeros,
                     jnp.zeros((rank,) + flat.shape, flat.dtype), jnp.asarray(0, jnp.int32))


def _collect(state: SWAGState, flat) -> SWAGState:
    """Welford update of mean and Σ squared deviations with θ_k; D[k mod rank] = θ_k − θ̄_k."""
    n = state.count + 1
    delta = flat - state.mean
    mean = state.mean + delta / n
    sq_dev = state.sq_dev + delta * (flat - mean)
    rows = state.deviations.shape[0]
    deviations = state.deviations.at[state.count % rows].set(flat - mean)
    return SWAGState(state.train, mean, sq_dev, deviations, n)


def _independent_epoch(key, train, data, loss, optimizer, batch_size: int):
    """One epoch of n // S SGD steps, each on S events drawn with replacement (independent
    batches, as Mandt et al. assume); keys ``fold_in(key, epoch)`` like ``build_epochs``."""
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    k_idx, k_loss = jax.random.split(jax.random.fold_in(key, train.epoch))
    idx = jax.random.randint(k_idx, (n // batch_size, batch_size), 0, n)

    def step(carry, inputs):
        params, opt_state = carry
        k, rows = inputs
        batch = jax.tree_util.tree_map(lambda a: a[rows], data)
        value, grads = jax.value_and_grad(lambda p: loss(k, p, batch, ()))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    (params, opt_state), losses = jax.lax.scan(
        step, (train.params, train.opt_state), (jax.random.split(k_loss, idx.shape[0]), idx))
    return train._replace(params=params, opt_state=opt_state, epoch=train.epoch + 1), losses


def _swag_run_epochs(key, state, ctx, num_active, num_epochs, *, loss_fn, optimizer, batch_size,
                     prior_weight, record_iterates, batches):
    """``num_epochs`` SGD epochs (the first ``num_active`` act), collecting after each."""
    from bayesiamp_jax.training import build_epochs

    loss = _PriorLoss(loss_fn, prior_weight)
    run = build_epochs(loss, optimizer, batch_size)
    k_train = jax.random.split(key)[0]
    size = state.mean.shape[0]

    def one_epoch(state):
        if batches == "independent":
            train, losses = _independent_epoch(k_train, state.train, ctx.data, loss, optimizer,
                                               batch_size)
        else:
            train, info = run(k_train, state.train, ctx.data, (), 1)
            losses = info.loss
        flat = ravel_pytree(train.params)[0]
        new = _collect(state._replace(train=train), flat)
        return new, (jnp.mean(losses), flat if record_iterates else jnp.zeros((0,), flat.dtype))

    def skip(state):
        return state, (jnp.asarray(jnp.nan, jnp.float32),
                       jnp.full((size if record_iterates else 0,), jnp.nan, state.mean.dtype))

    def body(state, i):
        return jax.lax.cond(i < num_active, one_epoch, skip, state)

    state, (loss, iterates) = jax.lax.scan(body, state, jnp.arange(num_epochs))
    info = {"loss": loss}
    if record_iterates:
        info["iterates"] = iterates
    return state, info


def _swag_finish(state, ctx):
    count = jnp.maximum(state.count, 1)
    return SWAGMoments(state.mean, state.sq_dev / count, state.deviations, state.count)


def _swag_holdout(state, ctx, held, *, loss_fn):
    """The loss of the SWA mean (of the start before any collection) on the held-out batch."""
    flat, unravel = ravel_pytree(state.train.params)
    theta = jnp.where(state.count > 0, state.mean, flat)
    return loss_fn(held.key, unravel(theta), (held.x, held.c))


@functools.lru_cache(maxsize=64)
def _sgd(learning_rate: float) -> optax.GradientTransformation:
    """``optax.sgd`` once per rate: optax objects are equal by identity, so equal settings
    then give equal algorithms and share the compiled programs."""
    return optax.sgd(learning_rate)


def swag_algorithm(loss_fn: Callable, *, learning_rate: float, rank: int, batch_size: int,
                   prior_weight: float = 0.0, record_iterates: bool = False,
                   batches: str = "reshuffle") -> Algorithm:
    """SWAG of one unit as a ``driver.Algorithm``: ``start`` = the initial params, data the
    batch pytree; ``finish`` gives the ``SWAGMoments``."""
    _checks.one_of("batches", batches, BATCHES)
    optimizer = _sgd(float(learning_rate))
    return Algorithm(
        METHOD, bind(_swag_init, rank=int(rank), optimizer=optimizer),
        bind(_swag_run_epochs, loss_fn=loss_fn, optimizer=optimizer, batch_size=int(batch_size),
             prior_weight=float(prior_weight), record_iterates=bool(record_iterates),
             batches=batches),
        finish=_swag_finish, holdout_loss=bind(_swag_holdout, loss_fn=loss_fn))


driver.register(METHOD, swag_algorithm)


def swag_draws(key: jax.Array, moments: SWAGMoments, num_draws: int,
               temperature=1.0) -> jax.Array:
    """``num_draws`` flat draws (S, P) of one unit's SWAG Gaussian (module docstring)."""
    k1, k2 = jax.random.split(key)
    rows = moments.deviations.shape[0]
    z1 = jax.random.normal(k1, (num_draws,) + moments.mean.shape, moments.mean.dtype)
    z2 = jax.random.normal(k2, (num_draws, rows), moments.mean.dtype)
    filled = jnp.minimum(moments.count, rows)
    diag = jnp.sqrt(jnp.maximum(moments.variance, 0.0)) * z1 / jnp.sqrt(2.0)
    low = z2 @ moments.deviations / jnp.sqrt(2.0 * jnp.maximum(filled - 1, 1))
    return moments.mean + jnp.sqrt(temperature) * (diag + low)


def mandt_learning_rate(loss_fn: Callable, params, data, *, batch_size: int,
                        num_data: float | None = None, temperature: float = 1.0,
                        key: jax.Array | None = None) -> float:
    """Mandt et al.'s (2017, eq. 13) constant SGD rate ε* = 2 S P T / (N tr C) at ``params``.

    C: the covariance over the events of ``data`` (leading axis n) of the gradient of
    ``loss_fn(key, params, event batch of 1)``; S = ``batch_size``, P weights, N = ``num_data``
    (default n), T = ``temperature``. With it, the stationary covariance of SGD on the loss
    minimises KL to the Gaussian posterior among isotropic-per-H ones (exact for H ∝ C).
    The per-event gradients are held at once (n × P): pass a subset of the events and the full
    N as ``num_data``. ε* may exceed SGD's stability limit 2 / λ_max(H) where H is not ∝ C:
    measured on the ring CNF (``VectorField()``, P = 2,498, 150 Adam epochs, batch 500,
    N = 2,000, C from 500 events) ε* = 1.14, and SGD diverges at once (at 0.1 in epoch 2;
    0.01 is stable)."""
    batch_size = _checks.positive_int("batch_size", batch_size)
    temperature = _checks.positive("temperature", temperature)
    n = int(np.shape(jax.tree_util.tree_leaves(data)[0])[0])
    num_data = float(n) if num_data is None else _checks.positive("num_data", num_data)
    key = jax.random.key(0) if key is None else key
    flat, unravel = ravel_pytree(params)

    def grad_one(k, event):
        batch = jax.tree_util.tree_map(lambda a: a[None], event)
        return jax.grad(lambda f: loss_fn(k, unravel(f), batch))(flat)

    grads = jax.jit(jax.vmap(grad_one))(jax.random.split(key, n), data)
    trace = float(jnp.sum(jnp.var(grads, axis=0)))
    if not trace > 0:
        raise ValueError(f"the per-event gradients do not vary (tr C = {trace}); no SGD rate")
    return 2.0 * batch_size * flat.shape[0] * temperature / (num_data * trace)


def fit_swag(
    key: jax.Array,
    loss_fn: Callable,
    params_init,
    data,
    *,
    num_epochs: int,
    learning_rate: float,
    rank: int,
    num_draws: int,
    batch_size: int,
    num_data: float | None = None,
    prior_scale: float | None = 1.0,
    temperature=1.0,
    chunk_epochs: int = 100,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    holdout=None,
    holdout_every: int | None = None,
    batches: str = "reshuffle",
    record_iterates: bool = False,
) -> PosteriorDraws:
    """SWAG on a generic mean loss ``loss_fn(key, params, batch)`` from ``params_init``.

    Args:
        key: one key or (U,) keys (U units: data and params_init leaves with a leading U).
        data: pytree with leading axis N; num_data: N of the prior term (default the data's N).
        num_epochs: K ≥ 2 collected iterates (one per epoch); learning_rate: constant SGD rate.
        rank: rows of D (≥ 1); num_draws: S draws; temperature: T (scalar or (U,)).
        prior_scale: s of the N(0, s² I) prior in the SGD objective; None: no prior term.
        batches: "reshuffle" (epochs of the permuted data, as ``training.fit``) or
            "independent" (batches drawn with replacement, Mandt et al.'s assumption).
        record_iterates: add the collected iterates to info ("iterates" (K, P); diagnostics).
    Returns:
        PosteriorDraws (params (S, ...) / (U, S, ...), method "swag"), info "losses" (K,) the
        epochs' mean loss, "swa_mean" (P,), "swag_variance" (P,), "swag_deviations" (rank, P),
        "num_collected" (), with ``holdout`` "holdout_epochs" / "holdout_curve" (the SWA mean's
        held-out loss), U leading for units.
    """
    num_epochs = _checks.positive_int("num_epochs", num_epochs)
    if num_epochs < 2:
        raise ValueError(f"num_epochs must be >= 2 (SWAG collects one iterate per epoch), got "
                         f"{num_epochs}")
    learning_rate = _checks.positive("learning_rate", learning_rate)
    rank = _checks.positive_int("rank", rank)
    num_draws = _checks.positive_int("num_draws", num_draws)
    batch_size = _checks.positive_int("batch_size", batch_size)
    chunk_epochs = _checks.positive_int("chunk_epochs", chunk_epochs)
    _checks.one_of("batches", batches, BATCHES)
    units = _units.num_units(key)
    temperature_arr = _units.per_unit("temperature", temperature, units)
    if not np.all(np.asarray(temperature_arr) > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    _units.check_leading("params_init", params_init, units)
    n = _units.check_data(data, units, batch_size)
    num_data = float(n) if num_data is None else _checks.positive("num_data", num_data)
    prior_weight = 0.0
    if prior_scale is not None:
        prior_weight = 1.0 / (2.0 * _checks.positive("prior_scale", prior_scale) ** 2 * num_data)
    data = jax.tree_util.tree_map(jnp.asarray, data)
    params_init = jax.tree_util.tree_map(jnp.asarray, params_init)
    algorithm = swag_algorithm(loss_fn, learning_rate=learning_rate, rank=rank,
                               batch_size=batch_size, prior_weight=prior_weight,
                               record_iterates=record_iterates, batches=batches)
    out = driver.run(
        algorithm, key, data, units=units, num_epochs=num_epochs, chunk=chunk_epochs,
        start=params_init, settings=dict(
            data=data, params_init=params_init, learning_rate=learning_rate, rank=rank,
            batch_size=batch_size, prior_weight=prior_weight, record=bool(record_iterates),
            batches=batches),
        checkpoint_path=checkpoint_path, progress=progress,
        desc="SWAG" if units is None else f"SWAG x{units}", holdout=holdout,
        holdout_every=holdout_every)
    moments = out.finished
    unravel = ravel_pytree(_units.first_unit(params_init, units))[1]
    draw = lambda k, m, t: jax.vmap(unravel)(swag_draws(jax.random.split(k)[1], m, num_draws, t))
    params = _units.vmap_if(draw, units)(key, moments, temperature_arr)
    info = {"losses": np.asarray(out.records["loss"]), "swa_mean": np.asarray(moments.mean),
            "swag_variance": np.asarray(moments.variance),
            "swag_deviations": np.asarray(moments.deviations),
            "num_collected": np.asarray(moments.count)}
    if record_iterates:
        info["iterates"] = np.asarray(out.records["iterates"])
    info |= conv.holdout_info(out.holdout_epochs, out.holdout_losses, units)
    return PosteriorDraws(jax.device_get(params), METHOD, info)


def fit_swag_cnf(
    key: jax.Array,
    field,
    params_init,
    x,
    c,
    *,
    num_epochs: int,
    learning_rate: float,
    rank: int,
    num_draws: int,
    batch_size: int = 1000,
    temperature=1.0,
    prior_scale: float | None = 1.0,
    sigma_min: float = SIGMA_MIN,
    chunk_epochs: int = 100,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    holdout=None,
    holdout_every: int | None = None,
    batches: str = "reshuffle",
) -> PosteriorDraws:
    """SWAG of a CNF vector field: constant-rate SGD on the flow-matching loss (fresh noise per
    batch, ``model.cfm_loss_fn``) from the deterministic ``params_init``; x (n, d), c (n, k)
    (units: keys (U,), x (U, n, d), c (U, n, k), params_init (U, ...)). ``holdout``: the SWA
    mean's held-out flow-matching loss. Returns PosteriorDraws as ``fit_swag``."""
    units = _units.num_units(key)
    x, c = _units.check_xc(field, x, c, units)
    _checks.params_match("params_init", field, params_init, lead_axes=0 if units is None else 1)
    return fit_swag(
        key, cfm_loss_fn(field, sigma_min), params_init, (x, c), num_epochs=num_epochs,
        learning_rate=learning_rate, rank=rank, num_draws=num_draws, batch_size=batch_size,
        prior_scale=prior_scale, temperature=temperature, chunk_epochs=chunk_epochs,
        checkpoint_path=checkpoint_path, progress=progress, holdout=holdout,
        holdout_every=holdout_every, batches=batches)
