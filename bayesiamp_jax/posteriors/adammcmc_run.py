"""Long AdamMCMC runs: thinned chains in jitted chunks, progress, checkpoint/resume, and the
reference schedule for a CNF (flow-matching pretraining, 5 Adam steps, thinned sampling).

Chains are vmapped: one jitted call advances every chain by ``thinning`` steps (a ``lax.scan``)
and returns one sample per chain. The runner is pure in (chain states, data, σ, σ_dir), so it
can also be vmapped over σ by the caller (``build_thinned_runner``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from bayesiamp_jax import _checks
from bayesiamp_jax.checkpoint import load_pytree, restore, save_pytree
from bayesiamp_jax.posteriors.adammcmc import build_chain_step, chain_init
from bayesiamp_jax.posteriors.draws import PosteriorDraws, keys_from_data, keys_to_data
from bayesiamp_jax.posteriors.model import EXACT_SOLVER, exact_nll_loss_fn
from bayesiamp_jax.training import fit


def build_thinned_runner(chain_step: Callable, num_steps: int) -> Callable:
    """``run(states, data, sigma, sigma_dir) -> (states, ChainInfo (chains, num_steps))``,
    jitted, vmapped over the leading chain axis of ``states`` (data, σ shared)."""

    def one_chain(state, data, sigma, sigma_dir):
        return jax.lax.scan(lambda s, _: chain_step(s, data, sigma, sigma_dir), state, None,
                            length=num_steps)

    return jax.jit(jax.vmap(one_chain, in_axes=(0, None, None, None)))


_RUNNERS: dict = {}


def _runner(loss_fn, num_steps, **kw):
    """Cached ``build_thinned_runner``: repeated runs with the same settings reuse compiled code."""
    key = (loss_fn, num_steps, tuple(sorted(kw.items())))
    try:
        hit = _RUNNERS.get(key)
    except TypeError:  # unhashable loss_fn or optimizer
        return build_thinned_runner(build_chain_step(loss_fn, **kw), num_steps)
    if hit is None:
        if len(_RUNNERS) > 32:
            _RUNNERS.clear()
        hit = _RUNNERS[key] = build_thinned_runner(build_chain_step(loss_fn, **kw), num_steps)
    return hit


def _check_finite_losses(losses, step0, what):
    losses = np.asarray(losses)  # (chains, steps)
    bad = ~np.isfinite(losses)
    if bad.any():
        chain, s = np.argwhere(bad)[0]
        raise FloatingPointError(
            f"{what}: the loss is non-finite (NaN or inf) at step {step0 + int(s)} "
            f"of chain {int(chain)}"
        )


def sample_adammcmc(
    key: jax.Array,
    params_init,
    loss_fn: Callable,
    data,
    *,
    sigma: float,
    sigma_dir: float = 0.0,
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
) -> PosteriorDraws:
    """Run ``num_chains`` AdamMCMC chains on ``loss_fn(params, batch)`` and keep every
    ``thinning``-th state.

    Schedule per chain: ``num_adam_steps`` plain Adam steps, ``num_burnin`` discarded AdamMCMC
    steps, then ``num_samples × thinning`` steps. ``params_init`` is one params pytree (all
    chains start there) or, with ``stacked_init``, stacked over chains. ``batch_size=None``
    uses the full data every step. Returns draws (num_chains · num_samples, ...) in chain-major
    order with info "chain", "acceptance_rate" (mean acceptance probability over the thinning
    interval before each sample), "accepted_fraction" and "loss" (L at the sample).
    """
    num_samples = _checks.positive_int("num_samples", num_samples)
    thinning = _checks.positive_int("thinning", thinning)
    num_chains = _checks.positive_int("num_chains", num_chains)
    _checks.positive("sigma", sigma)
    _checks.non_negative("sigma_dir", sigma_dir)
    for name, v in (("num_burnin", num_burnin), ("num_adam_steps", num_adam_steps)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    data = jax.tree_util.tree_map(jnp.asarray, data)
    _check_data(data, batch_size)
    if stacked_init:
        lead = {int(np.shape(leaf)[0]) for leaf in jax.tree_util.tree_leaves(params_init)}
        if lead != {num_chains}:
            raise ValueError(f"stacked params_init must have leading axis num_chains="
                             f"{num_chains}, got leading sizes {sorted(lead)}")
        starts = params_init
    else:
        starts = jax.tree_util.tree_map(
            lambda a: jnp.broadcast_to(a, (num_chains,) + jnp.shape(a)), params_init)
    states = jax.vmap(lambda k, p: chain_init(k, p, optimizer))(
        jax.random.split(key, num_chains), starts)

    kw = dict(batch_size=batch_size, optimizer=optimizer, inverse_temperature=inverse_temperature)
    run_thin = _runner(loss_fn, thinning, **kw)
    samples, infos, done = [], [], 0
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        saved = load_pytree(checkpoint_path)
        states = keys_from_data(restore(keys_to_data(states), saved["states"]), states)
        done = int(saved["done"])
        samples = [jax.tree_util.tree_map(lambda a, i=i: a[:, i], saved["samples"])
                   for i in range(done)]
        infos = [tuple(np.asarray(saved["info"][k])[:, i] for k in ("acc", "frac", "loss"))
                 for i in range(done)]
    else:
        if num_adam_steps:
            states, info = _runner(loss_fn, num_adam_steps, adam_only=True, **kw)(
                states, data, 1.0, 0.0)
            _check_finite_losses(info.loss, 0, "Adam warm-up")
        if num_burnin:
            states, info = _runner(loss_fn, num_burnin, **kw)(states, data, sigma, sigma_dir)
            _check_finite_losses(info.loss, num_adam_steps, "AdamMCMC burn-in")
    step0 = num_adam_steps + num_burnin
    with tqdm(total=num_samples, initial=done, disable=not progress, desc=f"AdamMCMC σ={sigma:g}",
              unit="sample") as bar:
        while done < num_samples:
            states, info = run_thin(states, data, sigma, sigma_dir)
            _check_finite_losses(info.loss, step0 + done * thinning, "AdamMCMC")
            samples.append(states.position)
            infos.append((np.asarray(info.acceptance_probability.mean(1)),
                          np.asarray(info.is_accepted.mean(1)), np.asarray(info.loss[:, -1])))
            done += 1
            bar.update(1)
            bar.set_postfix(acc=f"{float(infos[-1][0].mean()):.2f}")
            if checkpoint_path is not None:
                save_pytree(checkpoint_path, {
                    "states": keys_to_data(states), "done": done,
                    "samples": _stack(samples, axis=1),
                    "info": {k: np.stack([i[j] for i in infos], 1)
                             for j, k in enumerate(("acc", "frac", "loss"))},
                })
    params = jax.tree_util.tree_map(
        lambda a: np.asarray(a).reshape((num_chains * num_samples,) + a.shape[2:]),
        _stack(samples, axis=1))
    info = {
        "chain": np.repeat(np.arange(num_chains), num_samples),
        "acceptance_rate": np.stack([i[0] for i in infos], 1).reshape(-1),
        "accepted_fraction": np.stack([i[1] for i in infos], 1).reshape(-1),
        "loss": np.stack([i[2] for i in infos], 1).reshape(-1),
        "sigma": np.asarray(sigma), "sigma_dir": np.asarray(sigma_dir),
        "thinning": np.asarray(thinning),
    }
    return PosteriorDraws(params, "adammcmc", info)


def _stack(trees, axis):
    return jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a], axis), *trees)


def _check_data(data, batch_size):
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves or np.ndim(leaves[0]) == 0 or np.shape(leaves[0])[0] == 0:
        raise ValueError("data is empty: give a pytree of arrays with a leading axis N > 0")
    n = int(np.shape(leaves[0])[0])
    for i, leaf in enumerate(leaves):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != n:
            raise ValueError(f"every data array must share the leading axis N={n}; "
                             f"leaf {i} has shape {tuple(np.shape(leaf))}")
        _checks.finite(f"data leaf {i}", leaf)
    if batch_size is not None:
        batch_size = _checks.positive_int("batch_size", batch_size)
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} exceeds the number of points N={n}")
    return n


def adammcmc_cnf(
    key: jax.Array,
    field,
    x,
    c,
    *,
    sigma: float = 0.1,
    sigma_dir: float | None = None,
    num_pretrain_epochs: int = 2501,
    num_adam_steps: int = 5,
    num_samples: int = 50,
    thinning: int = 1000,
    batch_size: int = 1000,
    num_chains: int = 1,
    solver=EXACT_SOLVER,
    params_init=None,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
) -> PosteriorDraws:
    """The reference AdamMCMC schedule for a CNF on (x (N, d), c (N, cond_dim)).

    1. Flow-matching pretraining for ``num_pretrain_epochs`` (skipped if ``num_pretrain_epochs``
       is 0; starts from ``params_init`` or ``field.init``).
    2. ``num_adam_steps`` plain Adam steps on L, then sampling with
       L(θ) = −(N/|B|) Σ_B log p_θ(x | c) (exact likelihood through the ODE, λ = 1, flat prior),
       one sample every ``thinning`` steps, no burn-in. σ_dir defaults to P/50.
    """
    x, c = jnp.asarray(x), jnp.asarray(c)
    _checks.last_dim("x", x, field.data_dim, min_ndim=2)
    _checks.last_dim("c", c, field.cond_dim, min_ndim=2)
    _checks.same_leading("x", x, "c", c)
    if not isinstance(num_pretrain_epochs, (int, np.integer)) or num_pretrain_epochs < 0:
        raise ValueError(
            f"num_pretrain_epochs must be an integer >= 0, got {num_pretrain_epochs!r}")
    key_pre, key_mcmc = jax.random.split(key)
    params = params_init if params_init is not None else field.init(key_pre)
    if num_pretrain_epochs:
        params = fit(key_pre, field, x, c, num_pretrain_epochs, batch_size=batch_size,
                     params=params, progress=progress).state.params
    if sigma_dir is None:
        sigma_dir = field.num_params() / 50.0
    nll = exact_nll_loss_fn(field, solver)
    num_data = float(x.shape[0])
    loss_fn = lambda params, batch: num_data * nll(params, batch)
    return sample_adammcmc(
        key_mcmc, params, loss_fn, (x, c), sigma=sigma, sigma_dir=sigma_dir,
        num_samples=num_samples, thinning=thinning, num_adam_steps=num_adam_steps,
        batch_size=batch_size, num_chains=num_chains, checkpoint_path=checkpoint_path,
        progress=progress,
    )
