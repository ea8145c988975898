"""Deterministic (maximum-likelihood) flow-matching training of the CNF.

Epochs are jitted: one epoch shuffles the data with a key derived from (seed key, epoch) and
``lax.scan``s over mini-batches; chunks of epochs run inside one more ``lax.scan``. The host loop
shows a progress bar and can checkpoint after every chunk; a resumed run gives the same
numbers as an uninterrupted one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from bayesiamp_jax import _checks
from bayesiamp_jax.checkpoint import load_pytree, restore, save_pytree
from bayesiamp_jax.flow import SIGMA_MIN, cfm_loss

LEARNING_RATE = 1e-3
BETAS = (0.99, 0.99)


def adam(learning_rate: float = LEARNING_RATE, b1: float = BETAS[0], b2: float = BETAS[1]):
    """The reference optimiser: Adam, lr 1e-3, betas (0.99, 0.99)."""
    return optax.adam(learning_rate, b1=b1, b2=b2)


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


def minibatch_indices(key: jax.Array, num_points: int, batch_size: int) -> jax.Array:
    """A random permutation cut into (num_points // batch_size, batch_size) index blocks.

    The remainder (num_points mod batch_size points) is dropped for this epoch.
    """
    num_batches = num_points // batch_size
    perm = jax.random.permutation(key, num_points)
    return perm[: num_batches * batch_size].reshape(num_batches, batch_size)


def build_epochs(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    batch_size: int,
) -> Callable:
    """Build ``run(key, state, x, c, num_epochs) -> (state, EpochInfo)``, jitted.

    ``loss_fn(key, params, x_batch, c_batch) -> scalar``. The key of epoch e is
    ``fold_in(key, e)``, so chunking and resuming do not change the result.
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
        idx = minibatch_indices(k_perm, x.shape[0], batch_size)
        keys = jax.random.split(k_loss, idx.shape[0])
        (params, opt_state), losses = jax.lax.scan(
            one_step, (state.params, state.opt_state), (keys, x[idx], c[idx])
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


def _epoch_runner(field, sigma_min, optimizer, batch_size) -> Callable:
    """``build_epochs`` for flow matching, memoised so repeated ``fit`` calls compile once."""
    try:
        return _cached_epoch_runner(field, float(sigma_min), optimizer, batch_size)
    except TypeError:  # an unhashable field or optimizer: build afresh
        return build_epochs(flow_matching_loss_fn(field, sigma_min), optimizer, batch_size)


@functools.lru_cache(maxsize=16)
def _cached_epoch_runner(field, sigma_min, optimizer, batch_size) -> Callable:
    return build_epochs(flow_matching_loss_fn(field, sigma_min), optimizer, batch_size)


def _key_bits(key) -> np.ndarray:
    """The raw bits of a PRNG key (typed or legacy uint32) as a numpy array."""
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key)


class TrainResult(NamedTuple):
    state: TrainState
    losses: np.ndarray  # mean loss per epoch of this call (resumed epochs included from disk)


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
) -> TrainResult:
    """Train ``field`` by flow matching on x (n, d), c (n, cond_dim) for ``num_epochs``.

    ``key`` seeds the initial parameters (unless ``params`` is given) and the per-epoch noise.
    With ``checkpoint_path``, the state, loss history and key are saved atomically after each
    chunk and an existing checkpoint is resumed from (it must come from the same ``key``); a
    resumed run gives the same numbers, bit for bit, as an uninterrupted one with the same
    ``chunk_epochs``. Runs with the same field, optimizer object, batch size and chunk length
    share one compiled program.
    """
    num_epochs = _checks.positive_int("num_epochs", num_epochs)
    chunk_epochs = _checks.positive_int("chunk_epochs", chunk_epochs)
    x, c = jnp.asarray(x), jnp.asarray(c)
    _checks.last_dim("x", x, field.data_dim, min_ndim=2)
    _checks.last_dim("c", c, field.cond_dim, min_ndim=2)
    _checks.same_leading("x", x, "c", c)
    _checks.finite("x", x)
    _checks.finite("c", c)
    batch_size = _checks.positive_int("batch_size", batch_size)
    if batch_size > x.shape[0]:
        raise ValueError(f"batch_size={batch_size} exceeds the number of points {x.shape[0]}")
    optimizer = optimizer or _DEFAULT_OPTIMIZER
    key_init, key_train = jax.random.split(key)
    state = init_train_state(params if params is not None else field.init(key_init), optimizer)
    history: list[float] = []
    key_bits = _key_bits(key)
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        saved = load_pytree(checkpoint_path)
        if "key" in saved and not np.array_equal(np.asarray(saved["key"]), key_bits):
            raise ValueError(
                f"checkpoint_path {str(checkpoint_path)!r} was written by a run with another key; "
                "resuming it with this key would mix two runs (delete it or pass the same key)"
            )
        state = restore(state, saved["state"])
        history = list(np.asarray(saved["losses"]))
    run = _epoch_runner(field, sigma_min, optimizer, batch_size)
    done = int(state.epoch)
    chunk_epochs = min(chunk_epochs, num_epochs)
    with tqdm(total=num_epochs, initial=min(done, num_epochs), disable=not progress,
              desc="flow matching", unit="epoch") as bar:
        while done < num_epochs:
            n = min(chunk_epochs, num_epochs - done)
            state, info = run(key_train, state, x, c, chunk_epochs, jnp.asarray(n, jnp.int32))
            history.extend(np.asarray(info.loss)[:n].tolist())
            done += n
            bar.update(n)
            bar.set_postfix(loss=f"{history[-1]:.4f}")
            if checkpoint_path is not None:
                save_pytree(
                    checkpoint_path,
                    {"state": state, "losses": np.asarray(history), "key": key_bits},
                )
    return TrainResult(state, np.asarray(history))
