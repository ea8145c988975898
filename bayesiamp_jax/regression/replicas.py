"""The truth of the statistical uncertainty: replicas of a deterministic fit on fresh data.

σ_stat(x) is by definition how much the learned mean m(x) moves when the training set is drawn
again. With a simulator of training sets it can be measured directly: K independent training
sets D_1..D_K of the same size, one deterministic (MAP) fit θ̂_k per set, and

    truth(x) = sd_k[m_θ̂_k(x)] (ddof 1),   its standard error ≈ truth(x) / sqrt(2 (K − 1)),
    bias(x)  = mean_k[m_θ̂_k(x)] − μ(x),    its standard error = truth(x) / sqrt(K).

One fit minimises the mean data loss plus the Gaussian prior term ‖θ‖² / (2 s² N) (the MAP of the
posterior both Bayesian methods target; ``prior_scale=None``: maximum likelihood). The fit is
written for one replica; ``fit_replicas`` vmaps it over K keys, so all K replicas are one
compiled program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bayesiamp_jax import _checks
from bayesiamp_jax.posteriors.draws import PosteriorDraws
from bayesiamp_jax.training import minibatch_indices

METHOD = "replicas"


class ReplicaTruth(NamedTuple):
    """Per input (n,): centre mean_k m_k, spread sd_k m_k (the σ_stat truth) and its standard
    error; ``num_replicas`` K."""

    centre: np.ndarray
    spread: np.ndarray
    spread_err: np.ndarray
    num_replicas: int


def build_map_fit(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int,
    num_epochs: int,
    prior_scale: float | None = 1.0,
) -> Callable:
    """``fit(key, params, data) -> (params, losses (num_epochs,))`` for one training set.

    ``loss_fn(key, params, batch) -> scalar`` mean data loss; ``data`` a pytree with leading axis
    N. Gradient of loss + ‖θ‖² / (2 s² N) per mini-batch step (remainder of an epoch dropped).
    """
    batch_size = _checks.positive_int("batch_size", batch_size)
    num_epochs = _checks.positive_int("num_epochs", num_epochs)
    prior_prec = 0.0 if prior_scale is None else 1.0 / _checks.positive("prior_scale",
                                                                        prior_scale) ** 2

    def fit(key, params, data):
        n = jax.tree_util.tree_leaves(data)[0].shape[0]

        def objective(p, k, batch):
            sq = sum(jnp.sum(a**2) for a in jax.tree_util.tree_leaves(p))
            return loss_fn(k, p, batch) + 0.5 * prior_prec * sq / n

        def step(carry, inputs):
            p, opt_state = carry
            k, batch = inputs
            loss, grads = jax.value_and_grad(objective)(p, k, batch)
            updates, opt_state = optimizer.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), loss

        def epoch(carry, e):
            k_perm, k_loss = jax.random.split(jax.random.fold_in(key, e))
            idx = minibatch_indices(k_perm, n, batch_size)
            batches = jax.tree_util.tree_map(lambda a: a[idx], data)
            keys = jax.random.split(k_loss, idx.shape[0])
            carry, losses = jax.lax.scan(step, carry, (keys, batches))
            return carry, jnp.mean(losses)

        (params, _), losses = jax.lax.scan(epoch, (params, optimizer.init(params)),
                                           jnp.arange(num_epochs))
        return params, losses

    return fit


def fit_replicas(
    key: jax.Array,
    init_fn: Callable,
    loss_fn: Callable,
    sample_fn: Callable,
    *,
    num_replicas: int,
    num_epochs: int,
    batch_size: int,
    optimizer: optax.GradientTransformation,
    prior_scale: float | None = 1.0,
) -> PosteriorDraws:
    """K deterministic fits, each on its own training set ``sample_fn(key) -> data`` and its own
    initialisation ``init_fn(key) -> params``; vmapped and jitted as one program.

    Returns PosteriorDraws with params (K, ...), method "replicas", info {"loss": (K, E)}.
    """
    num_replicas = _checks.positive_int("num_replicas", num_replicas)
    if num_replicas < 2:
        raise ValueError(f"num_replicas must be >= 2 to measure a spread, got {num_replicas}")
    fit = build_map_fit(loss_fn, optimizer, batch_size=batch_size, num_epochs=num_epochs,
                        prior_scale=prior_scale)

    def one(k):
        k_data, k_init, k_fit = jax.random.split(k, 3)
        return fit(k_fit, init_fn(k_init), sample_fn(k_data))

    params, losses = jax.jit(jax.vmap(one))(jax.random.split(key, num_replicas))
    losses = np.asarray(losses)
    if not np.all(np.isfinite(losses)):
        bad = np.argwhere(~np.isfinite(losses))[0]
        raise FloatingPointError(f"replica {bad[0]}: loss became non-finite in epoch {bad[1]}")
    return PosteriorDraws(jax.device_get(params), METHOD, {"loss": losses})


def replica_truth(means) -> ReplicaTruth:
    """Centre, spread (ddof 1) and its standard error from replica means (K, n)."""
    means = np.asarray(means, np.float64)
    if means.ndim != 2 or means.shape[0] < 2:
        raise ValueError(f"means must have shape (K >= 2, n), got {means.shape}")
    _checks.finite("means", means)
    k = means.shape[0]
    spread = means.std(axis=0, ddof=1)
    return ReplicaTruth(means.mean(axis=0), spread, spread / np.sqrt(2.0 * (k - 1)), k)


def bootstrap_sample_fn(data) -> Callable:
    """``sample_fn(key) -> data resampled with replacement`` (same size) for ``fit_replicas``:
    the replicas then estimate σ_stat from the one training set a user has (Efron's bootstrap)."""
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data must hold at least one array, got an empty pytree")
    n = int(np.shape(leaves[0])[0])
    data = jax.tree_util.tree_map(jnp.asarray, data)

    def sample_fn(key):
        idx = jax.random.randint(key, (n,), 0, n)
        return jax.tree_util.tree_map(lambda a: a[idx], data)

    return sample_fn
