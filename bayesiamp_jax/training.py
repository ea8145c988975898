"""Deterministic (maximum-likelihood) flow-matching training of the CNF.

Epochs are jitted: one epoch shuffles the data with a key derived from (seed key, epoch) and
``lax.scan``s over mini-batches; chunks of epochs run inside one more ``lax.scan``. ``fit`` drives
the chunks with ``bayesiamp_jax.resumable.run_chunks`` (progress bar, atomic checkpoint, resume:
a resumed run gives the same numbers as an uninterrupted one) and trains U independent units in
one vmapped program when given U keys.
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

from bayesiamp_jax import _checks, _units
from bayesiamp_jax import convergence as conv
from bayesiamp_jax.flow import SIGMA_MIN, cfm_loss, cfm_loss_from_noise, draw_cfm_noise
from bayesiamp_jax.optim import BETAS, LEARNING_RATE, adam, minibatch_indices
from bayesiamp_jax.posteriors import driver
from bayesiamp_jax.posteriors.driver import Algorithm, bind

__all__ = ["BETAS", "LEARNING_RATE", "EpochInfo", "TrainResult", "TrainState", "adam",
           "build_epochs", "fit", "flow_matching", "flow_matching_loss_fn", "init_train_state",
           "minibatch_indices", "weighted_cfm_loss"]


class TrainState(NamedTuple):
    """Parameters, optimizer state and the number of completed epochs."""

    params: object
    opt_state: object
    epoch: jax.Array


class EpochInfo(NamedTuple):
    """Mean training loss per epoch, shape (num_epochs,)."""

    loss: jax.Array


def init_train_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(params, optimizer.init(params), jnp.asarray(0, jnp.int32))


def build_epochs(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    batch_size: int,
) -> Callable:
    """Build ``run(key, state, x, c, num_epochs) -> (state, EpochInfo)``, jitted.

    ``loss_fn(key, params, x_batch, c_batch) -> scalar``. The key of epoch e is
    ``fold_in(key, e)``, so chunking and resuming do not change the result. ``x`` and ``c``
    may be pytrees of arrays with leading axis n (e.g. (x, weights)); they are batched leafwise.
    """
    batch_size = _checks.positive_int("batch_size", batch_size)

    def one_step(params_opt, batch):
        params, opt_state = params_opt
        key, xb, cb = batch
        loss, grads = jax.value_and_grad(lambda p: loss_fn(key, p, xb, cb))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def one_epoch(state, key, x, c):
        k_perm, k_loss = jax.random.split(jax.random.fold_in(key, state.epoch))
        idx = minibatch_indices(k_perm, jax.tree_util.tree_leaves(x)[0].shape[0], batch_size)
        keys = jax.random.split(k_loss, idx.shape[0])
        take = lambda tree: jax.tree_util.tree_map(lambda a: a[idx], tree)
        (params, opt_state), losses = jax.lax.scan(
            one_step, (state.params, state.opt_state), (keys, take(x), take(c))
        )
        return TrainState(params, opt_state, state.epoch + 1), jnp.mean(losses)

    @partial(jax.jit, static_argnames=("num_epochs",))
    def run(key, state: TrainState, x, c, num_epochs: int, num_active=None):
        """Run ``num_epochs`` epochs; with ``num_active`` (a traced int), only the first
        ``num_active`` of them (the rest leave the state alone and report a NaN loss), so one
        compiled program serves every chunk length up to ``num_epochs``."""

        def body(state, i):
            if num_active is None:
                return one_epoch(state, key, x, c)
            skip = lambda s: (s, jnp.asarray(jnp.nan, jnp.float32))
            return jax.lax.cond(i < num_active, lambda s: one_epoch(s, key, x, c), skip, state)

        state, losses = jax.lax.scan(body, state, jnp.arange(num_epochs))
        return state, EpochInfo(losses)

    return run


def flow_matching_loss_fn(field, sigma_min: float = SIGMA_MIN) -> Callable:
    """``loss_fn(key, params, x, c)`` of the flow-matching objective for ``build_epochs``."""
    return lambda key, params, x, c: cfm_loss(key, field, params, x, c, sigma_min)


_DEFAULT_OPTIMIZER = adam()


# --- flow matching as a driver algorithm (bayesiamp_jax.posteriors.driver) --------------------


def _fm_init(key, ctx, start, *, optimizer):
    """The train state of one unit at the initial parameters ``start``."""
    return init_train_state(start, optimizer)


def _fm_run_epochs(key, state, ctx, num_active, num_epochs, *, field, sigma_min, optimizer,
                   batch_size):
    """``num_epochs`` (``num_active`` of them active) flow-matching epochs of one unit; the
    epoch noise comes from the second half of ``split(key)`` (the first initialised it)."""
    run = build_epochs(flow_matching_loss_fn(field, sigma_min), optimizer, batch_size)
    x, c = ctx.data
    state, info = run(jax.random.split(key)[1], state, x, c, num_epochs, num_active)
    return state, {"loss": info.loss}


def weighted_cfm_loss(key, field, params, x, c, weights, sigma_min: float = SIGMA_MIN):
    """Σ_i w_i ℓ_i / n: the flow-matching loss with per-event weights w (n,) (a Poisson
    bootstrap), ℓ_i = ``cfm_loss_from_noise`` of event i alone (the mean over its coordinates)
    with t, z drawn from ``key`` as ``cfm_loss`` draws them; w ≡ 1 gives ``cfm_loss``."""
    t, z = draw_cfm_noise(key, x)
    one = lambda xi, ci, ti, zi: cfm_loss_from_noise(field, params, xi[None], ci[None],
                                                     ti[None], zi[None], sigma_min)
    return jnp.mean(weights * jax.vmap(one)(x, c, t, z))


class _WeightedFMLoss(NamedTuple):
    field: object
    sigma_min: float

    def __call__(self, key, params, xw, c):
        return weighted_cfm_loss(key, self.field, params, xw[0], c, xw[1], self.sigma_min)


def _fm_weighted_run_epochs(key, state, ctx, num_active, num_epochs, *, field, sigma_min,
                            optimizer, batch_size):
    """``_fm_run_epochs`` on data (x, c, w): the loss weights event i by w_i."""
    run = build_epochs(_WeightedFMLoss(field, sigma_min), optimizer, batch_size)
    x, c, w = ctx.data
    state, info = run(jax.random.split(key)[1], state, (x, w), c, num_epochs, num_active)
    return state, {"loss": info.loss}


def _fm_holdout(state, ctx, held, *, field, sigma_min):
    """Flow-matching loss on the held-out events with their fixed key (common random numbers
    along the curve)."""
    return cfm_loss(held.key, field, state.params, held.x, held.c, sigma_min)


def flow_matching(field, *, sigma_min: float = SIGMA_MIN,
                  optimizer: optax.GradientTransformation | None = None,
                  batch_size: int = 1000, weighted: bool = False) -> Algorithm:
    """Flow matching (the deterministic training) as a ``driver.Algorithm``: data (x, c),
    ``start`` the initial parameters (``field.init`` of the first half of ``split(key)``).
    ``weighted=True``: data (x, c, w) with per-event loss weights w (n,) (``weighted_cfm_loss``;
    the Poisson bootstrap); the held-out loss stays unweighted."""
    optimizer = optimizer or _DEFAULT_OPTIMIZER
    statics = dict(field=field, sigma_min=float(sigma_min))
    epochs = _fm_weighted_run_epochs if weighted else _fm_run_epochs
    return Algorithm(
        "weighted flow matching" if weighted else "flow matching",
        bind(_fm_init, optimizer=optimizer),
        bind(epochs, optimizer=optimizer, batch_size=batch_size, **statics),
        holdout_loss=bind(_fm_holdout, **statics))


driver.register("flow matching", flow_matching)


class TrainResult(NamedTuple):
    """Final state and the mean loss per epoch, (num_epochs,) or (U, num_epochs) for U units
    (epochs of a resumed run included from its checkpoint). With a held-out set: the epochs of
    the held-out records (C,) (0 = before training) and the held-out flow-matching loss
    (C,) or (U, C); None without one."""

    state: TrainState
    losses: np.ndarray
    holdout_epochs: np.ndarray | None = None
    holdout_losses: np.ndarray | None = None


def fit(
    key: jax.Array,
    field,
    x,
    c,
    num_epochs: int,
    *,
    batch_size: int = 1000,
    optimizer: optax.GradientTransformation | None = None,
    params=None,
    sigma_min: float = SIGMA_MIN,
    chunk_epochs: int = 100,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    holdout=None,
    holdout_every: int | None = None,
    early_stop: conv.Plateau | None = None,
) -> TrainResult:
    """Train ``field`` by flow matching on x (n, d), c (n, cond_dim) for ``num_epochs``.

    ``key`` splits into (init, train): the initial parameters (unless ``params`` is given) and
    the per-epoch noise. **Units**: with keys of shape (U,), x (U, n, d), c (U, n, cond_dim) and
    ``params`` (if given) stacked (U, ...), U independent trainings run as one vmapped program;
    unit u equals ``fit(key[u], field, x[u], c[u], ...)``. With ``checkpoint_path``, state and
    loss history are saved atomically after each chunk (``bayesiamp_jax.resumable``) and an
    existing checkpoint is resumed from; its signature (key, data, params, batch size, σ_min)
    must match. A resumed run gives, bit for bit, an uninterrupted one. Calls with the same
    field, optimizer object, batch size and chunk length share one compiled program.

    **Held-out curve** (``bayesiamp_jax.convergence``): with ``holdout`` ((x, c) or a
    ``Holdout``; no unit axis: shared by all units) the flow-matching loss on the held-out
    events (fixed subset, fixed (t, z)) is recorded before training and every ``holdout_every``
    epochs (default and at most ``chunk_epochs``; the compiled program stays the same, so the
    trained numbers do not change). ``early_stop=Plateau(patience, min_delta)`` (needs
    ``holdout``) ends training between chunks when every unit's held-out loss has not improved
    by ``min_delta`` for ``patience`` records.
    """
    num_epochs = _checks.positive_int("num_epochs", num_epochs)
    chunk_epochs = _checks.positive_int("chunk_epochs", chunk_epochs)
    units = _units.num_units(key)
    x, c = _units.check_xc(field, x, c, units)
    lead = 2 if units is None else 3
    _checks.finite("x", x)
    _checks.finite("c", c)
    batch_size = _checks.positive_int("batch_size", batch_size)
    num_points = x.shape[lead - 2]
    if batch_size > num_points:
        raise ValueError(f"batch_size={batch_size} exceeds the number of points {num_points}")
    optimizer = optimizer or _DEFAULT_OPTIMIZER
    key_init, _ = _units.split(key, 2, units)
    if params is None:
        params = _units.vmap_if(field.init, units)(key_init)
    else:
        _units.check_leading("params", params, units)
        _checks.params_match("params", field, params, lead_axes=0 if units is None else 1)
    algorithm = flow_matching(field, sigma_min=sigma_min, optimizer=optimizer,
                              batch_size=batch_size)
    out = driver.run(
        algorithm, key, (x, c), units=units, num_epochs=num_epochs, chunk=chunk_epochs,
        start=params, settings=dict(
            x=x, c=c, params=params, batch_size=batch_size, sigma_min=float(sigma_min)),
        checkpoint_path=checkpoint_path, progress=progress,
        desc="flow matching" if units is None else f"flow matching x{units}",
        holdout=holdout, holdout_every=holdout_every, early_stop=early_stop)
    return TrainResult(out.state, np.asarray(out.records["loss"]), out.holdout_epochs,
                       out.holdout_losses)
