"""AdamMCMC (Bieringer et al., arXiv:2312.14027): Metropolis–Hastings with a prolate Gaussian
proposal stretched along the Adam step.

Target π(θ) ∝ exp(−λ L(θ)) for a potential ``loss_fn(params, batch)``. One step from (θ, S):

1. Adam step: θ̃ = θ − u, new state S'.
2. τ = θ̃ + σ ε + σ_dir η u, ε ~ N(0, I_P), η ~ N(0, 1): τ ~ q(· | θ̃, u) = N(θ̃, σ² I + σ_dir² u uᵀ).
3. Reverse Adam step from τ with the OLD state S: τ̃ = τ − u'.
4. log α = λ (L(θ) − L(τ)) + log q(θ | τ̃, u') − log q(τ | θ̃, u).
5. Accepted: (τ, S'); rejected: (θ, S) (the optimizer state is rolled back too).

Both losses of a step use the same batch. ``sigma`` and ``sigma_dir`` are per-chain values and
are divided by √P before use. Functional core: ``init`` / ``build_kernel`` / ``step`` (blackjax
style, pure, jit/vmap-able); ``chain_init`` / ``build_chain_step`` add the key and mini-batch
schedule shared by the numpyro kernel (``bayesiamp_jax.posteriors.numpyro_kernel.AdamMCMC``) and
the checkpointing driver ``sample_adammcmc``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from bayesiamp_jax import _checks
from bayesiamp_jax.optim import adam, minibatch_indices


class AdamMCMCState(NamedTuple):
    """Current weights (params pytree) and the Adam state belonging to them."""

    position: object
    opt_state: object


class AdamMCMCInfo(NamedTuple):
    """Per-step diagnostics: min(1, α), the accept flag, L(θ) and L(τ) on the step's batch."""

    acceptance_probability: jax.Array
    is_accepted: jax.Array
    loss: jax.Array
    proposal_loss: jax.Array


def init(position, optimizer: optax.GradientTransformation | None = None) -> AdamMCMCState:
    """Start a chain at ``position`` with a fresh optimizer state (default: reference Adam)."""
    optimizer = optimizer if optimizer is not None else adam()
    return AdamMCMCState(position, optimizer.init(position))


def proposal_log_density(y, mean, direction, sigma, sigma_dir) -> jax.Array:
    """log N(y; mean, σ² I + σ_dir² u uᵀ) for flat vectors y, mean, u (P,) (σ, σ_dir as used)."""
    d = y - mean
    p = d.shape[-1]
    s2 = sigma**2
    c = s2 + sigma_dir**2 * jnp.dot(direction, direction)
    quad = (jnp.dot(d, d) - sigma_dir**2 * jnp.dot(direction, d) ** 2 / c) / s2
    log_det = (p - 1) * jnp.log(s2) + jnp.log(c)
    return -0.5 * (quad + log_det + p * math.log(2 * math.pi))


def sample_proposal(key, mean, direction, sigma, sigma_dir) -> jax.Array:
    """τ = mean + σ ε + σ_dir η u for flat vectors (P,)."""
    k_eps, k_eta = jax.random.split(key)
    eps = jax.random.normal(k_eps, mean.shape, mean.dtype)
    eta = jax.random.normal(k_eta, (), mean.dtype)
    return mean + sigma * eps + sigma_dir * eta * direction


def _log_q_difference(y_rev, mean_rev, u_rev, y_fwd, mean_fwd, u_fwd, sigma, sigma_dir):
    """log q(y_rev | mean_rev, u_rev) − log q(y_fwd | mean_fwd, u_fwd) without the common
    (P − 1) log σ² and P log 2π terms (they cancel exactly; float32 would lose them)."""

    def part(y, mean, u):
        d = y - mean
        s2 = sigma**2
        c = s2 + sigma_dir**2 * jnp.dot(u, u)
        quad = (jnp.dot(d, d) - sigma_dir**2 * jnp.dot(u, d) ** 2 / c) / s2
        return -0.5 * (quad + jnp.log(c))

    return part(y_rev, mean_rev, u_rev) - part(y_fwd, mean_fwd, u_fwd)


def _check_sigmas(sigma, sigma_dir):
    if _checks.is_concrete(sigma):
        _checks.positive("sigma", sigma)
    if _checks.is_concrete(sigma_dir):
        _checks.non_negative("sigma_dir", sigma_dir)


def build_kernel(
    optimizer: optax.GradientTransformation | None = None, inverse_temperature: float = 1.0
) -> Callable:
    """``kernel(key, state, loss_fn, batch, sigma, sigma_dir) -> (state, AdamMCMCInfo)``.

    ``loss_fn(params, batch) -> scalar`` is the potential L; λ = ``inverse_temperature``.
    ``sigma`` > 0 and ``sigma_dir`` >= 0 are per-chain values (divided by √P inside) and may be
    traced, so the kernel vmaps over chains and over σ.
    """
    optimizer = optimizer if optimizer is not None else adam()
    if _checks.is_concrete(inverse_temperature):
        _checks.non_negative("inverse_temperature", inverse_temperature)

    def kernel(key, state: AdamMCMCState, loss_fn: Callable, batch, sigma, sigma_dir):
        _check_sigmas(sigma, sigma_dir)
        theta, unravel = ravel_pytree(state.position)
        root_p = math.sqrt(theta.shape[0])
        s, s_dir = sigma / root_p, sigma_dir / root_p
        value_and_grad = jax.value_and_grad(lambda p: loss_fn(p, batch))

        loss, grad = value_and_grad(state.position)
        updates, opt_state_fwd = optimizer.update(grad, state.opt_state, state.position)
        u = -ravel_pytree(updates)[0]
        mean_fwd = theta - u
        k_prop, k_acc = jax.random.split(key)
        tau = sample_proposal(k_prop, mean_fwd, u, s, s_dir)
        tau_params = unravel(tau)

        proposal_loss, grad_tau = value_and_grad(tau_params)
        updates_rev, _ = optimizer.update(grad_tau, state.opt_state, tau_params)
        u_rev = -ravel_pytree(updates_rev)[0]
        mean_rev = tau - u_rev

        log_ratio = inverse_temperature * (loss - proposal_loss) + _log_q_difference(
            theta, mean_rev, u_rev, tau, mean_fwd, u, s, s_dir
        )
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        accepted = jnp.log(jax.random.uniform(k_acc, (), theta.dtype)) < log_ratio
        new_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(accepted, new, old),
            AdamMCMCState(tau_params, opt_state_fwd),
            state,
        )
        return new_state, AdamMCMCInfo(accept_prob, accepted, loss, proposal_loss)

    return kernel


def step(
    key, state: AdamMCMCState, loss_fn: Callable, batch, sigma, sigma_dir,
    optimizer: optax.GradientTransformation | None = None, inverse_temperature: float = 1.0,
):
    """One AdamMCMC step (``build_kernel(optimizer, inverse_temperature)(key, state, ...)``)."""
    return build_kernel(optimizer, inverse_temperature)(
        key, state, loss_fn, batch, sigma, sigma_dir
    )


def adam_step(state: AdamMCMCState, loss_fn: Callable, batch, optimizer=None):
    """A plain Adam step (no proposal, no MH): used before sampling as in the reference."""
    optimizer = optimizer if optimizer is not None else adam()
    loss, grad = jax.value_and_grad(lambda p: loss_fn(p, batch))(state.position)
    updates, opt_state = optimizer.update(grad, state.opt_state, state.position)
    return AdamMCMCState(optax.apply_updates(state.position, updates), opt_state), loss


# --- chains with their own key and mini-batch schedule ----------------------------------------


class ChainState(NamedTuple):
    """AdamMCMC state plus the chain's key, its data-permutation key and the step counter."""

    position: object
    opt_state: object
    rng_key: jax.Array
    data_key: jax.Array
    step: jax.Array


class ChainInfo(NamedTuple):
    acceptance_probability: jax.Array
    is_accepted: jax.Array
    loss: jax.Array


def chain_init(key, position, optimizer=None) -> ChainState:
    """Chain state at ``position``: ``key`` splits into the step keys and the data key."""
    state = init(position, optimizer)
    rng_key, data_key = jax.random.split(key)
    return ChainState(state.position, state.opt_state, rng_key, data_key,
                      jnp.asarray(0, jnp.int32))


def batch_at(data, data_key, step, batch_size: int | None):
    """Mini-batch of step ``step``: epoch e = step // (N // B) uses permutation fold_in(key, e);
    ``batch_size=None`` gives the full data."""
    if batch_size is None:
        return data
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    per_epoch = n // batch_size
    idx = minibatch_indices(jax.random.fold_in(data_key, step // per_epoch), n, batch_size)
    rows = idx[step % per_epoch]
    return jax.tree_util.tree_map(lambda a: a[rows], data)


def build_chain_step(
    loss_fn: Callable,
    *,
    batch_size: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    inverse_temperature: float = 1.0,
    adam_only: bool = False,
) -> Callable:
    """``chain_step(state, data, sigma, sigma_dir) -> (state, ChainInfo)``.

    Key scheme: ``rng_key, k = split(state.rng_key)``; k drives the AdamMCMC step. With
    ``adam_only`` it is a plain Adam step (acceptance reported as 1).
    """
    kernel = build_kernel(optimizer, inverse_temperature)

    def chain_step(state: ChainState, data, sigma, sigma_dir):
        batch = batch_at(data, state.data_key, state.step, batch_size)
        rng_key, k = jax.random.split(state.rng_key)
        inner = AdamMCMCState(state.position, state.opt_state)
        if adam_only:
            inner, loss = adam_step(inner, loss_fn, batch, optimizer)
            info = ChainInfo(jnp.ones_like(loss), jnp.asarray(True), loss)
        else:
            inner, full = kernel(k, inner, loss_fn, batch, sigma, sigma_dir)
            info = ChainInfo(full.acceptance_probability, full.is_accepted, full.loss)
        new = ChainState(inner.position, inner.opt_state, rng_key, state.data_key,
                         state.step + 1)
        return new, info

    return chain_step
