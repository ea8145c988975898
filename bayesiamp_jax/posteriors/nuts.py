"""HMC/NUTS from numpyro on the weight model (gold standard on small problems).

The potential must be deterministic: for the flow-matching Gibbs likelihood the noise (t, z)
is drawn once outside (``with_cfm_noise``) and is part of the data. Diagnostics kept per draw:
acceptance probability, divergences, step size, number of leapfrog steps and tree depth.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS

from bayesiamp_jax import _checks
from bayesiamp_jax.flow import SIGMA_MIN
from bayesiamp_jax.integrate import steps_exhausted_as_error
from bayesiamp_jax.posteriors.draws import PosteriorDraws
from bayesiamp_jax.posteriors.model import (
    EXACT_SOLVER,
    SITE,
    build_weight_model,
    cfm_fixed_noise_loss_fn,
    exact_nll_loss_fn,
    with_cfm_noise,
)

EXTRA_FIELDS = ("accept_prob", "diverging", "adapt_state.step_size", "num_steps")


def sample_nuts(
    key: jax.Array,
    params_init,
    loss_fn: Callable,
    data,
    *,
    likelihood_scale: float,
    prior_scale: float = 1.0,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 1,
    chain_method: str = "sequential",
    max_tree_depth: int = 10,
    target_accept_prob: float = 0.8,
    dense_mass: bool = False,
    progress: bool = True,
) -> PosteriorDraws:
    """NUTS on π(θ) ∝ N(θ; 0, prior_scale² I) · exp(−likelihood_scale · loss_fn(θ, data)).

    ``loss_fn(params, data)`` is deterministic; the whole ``data`` is one batch. Chains start at
    ``params_init`` (e.g. pretrained weights). Returns draws (num_chains · num_samples, ...)
    with info "chain", "accept_prob", "diverging", "step_size", "num_steps", "tree_depth".
    """
    num_warmup = _checks.positive_int("num_warmup", num_warmup)
    num_samples = _checks.positive_int("num_samples", num_samples)
    num_chains = _checks.positive_int("num_chains", num_chains)
    max_tree_depth = _checks.positive_int("max_tree_depth", max_tree_depth)
    _checks.probability("target_accept_prob", target_accept_prob, open_interval=True)
    _checks.positive("likelihood_scale", likelihood_scale)
    _checks.one_of("chain_method", chain_method, ("sequential", "vectorized", "parallel"))
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves or np.ndim(leaves[0]) == 0 or np.shape(leaves[0])[0] == 0:
        raise ValueError("data is empty: give a pytree of arrays with a leading axis N > 0")
    for i, leaf in enumerate(leaves):
        _checks.finite(f"data leaf {i}", leaf)

    model = build_weight_model(
        params_init, loss_fn, prior_scale=prior_scale, likelihood_scale=likelihood_scale
    )
    space = model.weight_space
    theta0 = space.ravel(params_init)
    if num_chains > 1:
        theta0 = jnp.broadcast_to(theta0, (num_chains,) + theta0.shape)
    kernel = NUTS(model, max_tree_depth=max_tree_depth, target_accept_prob=target_accept_prob,
                  dense_mass=dense_mass)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method=chain_method, progress_bar=progress)
    mcmc.run(key, data, init_params={SITE: theta0}, extra_fields=EXTRA_FIELDS)
    theta = np.asarray(mcmc.get_samples()[SITE])
    params = jax.vmap(space.unravel)(jnp.asarray(theta))
    extra = mcmc.get_extra_fields()
    num_steps = np.asarray(extra["num_steps"])
    info = {
        "chain": np.repeat(np.arange(num_chains), num_samples),
        "accept_prob": np.asarray(extra["accept_prob"]),
        "diverging": np.asarray(extra["diverging"]),
        "step_size": np.asarray(extra["adapt_state.step_size"]),
        "num_steps": num_steps,
        # a tree of depth d holds at most 2^d − 1 leapfrog steps
        "tree_depth": np.ceil(np.log2(num_steps + 1.0)).astype(np.int32),
    }
    return PosteriorDraws(jax.tree_util.tree_map(np.asarray, params), "nuts", info)


def sample_nuts_cnf(
    key: jax.Array,
    field,
    x,
    c,
    params_init,
    *,
    likelihood: str = "fm",
    temperature: float = 1.0,
    prior_scale: float = 1.0,
    solver=EXACT_SOLVER,
    sigma_min: float = SIGMA_MIN,
    **kw,
) -> PosteriorDraws:
    """NUTS on the CNF weights for data (x (N, d), c (N, cond_dim)), started at ``params_init``.

    ``likelihood="fm"``: Gibbs likelihood exp(−N/T · L_CFM) with one fixed draw of (t, z) per
    point (from ``key``); ``"exact"``: exp(−N/T · mean(−log p_θ(x | c))) through the ODE.
    Other keywords go to ``sample_nuts``.
    """
    _checks.one_of("likelihood", likelihood, ("fm", "exact"))
    temperature = _checks.positive("temperature", temperature)
    x, c = jnp.asarray(x), jnp.asarray(c)
    _checks.last_dim("x", x, field.data_dim, min_ndim=2)
    _checks.last_dim("c", c, field.cond_dim, min_ndim=2)
    _checks.same_leading("x", x, "c", c)
    _checks.params_match("params_init", field, params_init)
    key_noise, key_mcmc = jax.random.split(key)
    if likelihood == "fm":
        data, loss_fn = with_cfm_noise(key_noise, x, c), cfm_fixed_noise_loss_fn(field, sigma_min)
    else:
        data, loss_fn = (x, c), exact_nll_loss_fn(field, solver)
    with steps_exhausted_as_error(solver, "the NUTS likelihood (flow.log_prob)"):
        return sample_nuts(
        key_mcmc, params_init, loss_fn, data, likelihood_scale=x.shape[0] / temperature,
        prior_scale=prior_scale, **kw,
    )
