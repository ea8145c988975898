"""Deterministic (maximum-likelihood) flow-matching training of the CNF.

Epochs are jitted: one epoch shuffles the data with a key derived from (seed key, epoch) and
``lax.scan``s over mini-batches; chunks of epochs run inside one more ``lax.scan``. The host loop
shows a progress bar and can checkpoint after every chunk; a resumed run gives the same
numbers as an uninterrupted one.
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

    def one_epoch(carry, _):
        state, key, x, c = carry
        k_perm, k_loss = jax.random.split(jax.random.fold_in(key, state.epoch))
        idx = minibatch_indices(k_perm, x.shape[0], batch_size)
        keys = jax.random.split(k_loss, idx.shape[0])
        (params, opt_state), losses = jax.lax.scan(
            one_step, (state.params, state.opt_state), (keys, x[idx], c[idx])
        )
        return (TrainState(params, opt_state, state.epoch + 1), key, x, c), jnp.mean(losses)

    @partial(jax.jit, static_argnames=("num_epochs",))
    def run(key, state: TrainState, x, c, num_epochs: int):
        (state, *_), losses = jax.lax.scan(one_epoch, (state, key, x, c), None, length=num_epochs)
        return state, EpochInfo(losses)

    return run


def flow_matching_loss_fn(field, sigma_min: float = SIGMA_MIN) -> Callable:
    """``loss_fn(key, params, x, c)`` of the flow-matching objective for ``build_epochs``."""
    return lambda key, params, x, c: cfm_loss(key, field, params, x, c, sigma_min)


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
    With ``checkpoint_path``, the state and loss history are saved atomically after each chunk
    and an existing checkpoint is resumed from.
    """
    num_epochs = _checks.positive_int("num_epochs", num_epochs)
    chunk_epochs = _checks.positive_int("chunk_epochs", chunk_epochs)
    x, c = jnp.asarray(x), jnp.asarray(c)
    _checks.last_dim("x", x, field.data_dim, min_ndim=2)
    _checks.last_dim("c", c, field.cond_dim, min_ndim=2)
    _checks.same_leading("x", x, "c", c)
    _checks.finite("x", x)
    _checks.finite("c", c)
    if batch_size > x.shape[0]:
        raise ValueError(f"batch_size={batch_size} exceeds the number of points {x.shape[0]}")
    optimizer = optimizer or adam()
    key_init, key_train = jax.random.split(key)
    state = init_train_state(params if params is not None else field.init(key_init), optimizer)
    history: list[float] = []
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        saved = load_pytree(checkpoint_path)
        state = restore(state, saved["state"])
        history = list(np.asarray(saved["losses"]))
    run = build_epochs(flow_matching_loss_fn(field, sigma_min), optimizer, batch_size)
    done = int(state.epoch)
    with tqdm(total=num_epochs, initial=min(done, num_epochs), disable=not progress,
              desc="flow matching", unit="epoch") as bar:
        while done < num_epochs:
            n = min(chunk_epochs, num_epochs - done)
            state, info = run(key_train, state, x, c, n)
            history.extend(np.asarray(info.loss).tolist())
            done += n
            bar.update(n)
            bar.set_postfix(loss=f"{history[-1]:.4f}")
            if checkpoint_path is not None:
                save_pytree(checkpoint_path, {"state": state, "losses": np.asarray(history)})
    return TrainResult(state, np.asarray(history))
