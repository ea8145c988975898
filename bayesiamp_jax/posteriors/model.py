"""One numpyro model of the network weights, shared by VI, NUTS and AdamMCMC.

The weights are one flat sample site ``"theta"`` of shape (P,) over the raveled params pytree
(much faster to compile than one site per tensor); ``WeightSpace`` keeps the tensor boundaries,
so per-tensor quantities (the reference's per-tensor mean KL) stay available as (P,) arrays.

    θ ~ N(0, prior_scale² I)          (site "theta", optionally scaled per element)
    log-likelihood = −likelihood_scale · loss(θ, batch)   (factor site "loglik")

``loss`` is a mean data loss on a batch: the flow-matching loss (a generalized / Gibbs
likelihood; ``likelihood_scale = N / temperature``) or the exact CNF negative log-likelihood
(``likelihood_scale = N`` gives −Σ log p_θ(x | c) scaled to the full data set).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree

from bayesiamp_jax import _checks
from bayesiamp_jax.flow import SIGMA_MIN, cfm_loss, cfm_loss_from_noise, draw_cfm_noise, log_prob
from bayesiamp_jax.integrate import Solver

SITE = "theta"
EXACT_SOLVER = Solver("rk4", 20, checkpoint=True)  # differentiable exact log-likelihood


class WeightSpace(NamedTuple):
    """Flat view of a params pytree: P weights, ``unravel`` (P,) -> pytree, tensor sizes."""

    num_params: int
    unravel: Callable
    leaf_sizes: tuple[int, ...]

    def ravel(self, params) -> jax.Array:
        return ravel_pytree(params)[0]

    def tensor_numel(self) -> np.ndarray:
        """(P,) array: for each weight, the number of elements of the tensor it belongs to."""
        return np.concatenate([np.full(n, n, np.float32) for n in self.leaf_sizes])


def weight_space(params_template) -> WeightSpace:
    """The flat weight space of a params pytree (only structure, shapes and dtypes are used)."""
    leaves = jax.tree_util.tree_leaves(params_template)
    if not leaves:
        raise ValueError("params_template must hold at least one array leaf, got an empty pytree")
    flat, unravel = ravel_pytree(params_template)
    sizes = tuple(int(np.size(leaf)) for leaf in leaves)
    if 0 in sizes:
        raise ValueError(f"params_template has an empty leaf (sizes {sizes})")
    return WeightSpace(int(flat.shape[0]), unravel, sizes)


def build_weight_model(
    params_template,
    loss_fn: Callable,
    *,
    prior_scale: float = 1.0,
    likelihood_scale: float = 1.0,
    stochastic: bool = False,
) -> Callable:
    """numpyro model ``model(batch, site_scale=None)`` of the weights.

    Args:
        params_template: params pytree defining the weight shapes.
        loss_fn: ``loss_fn(params, batch) -> scalar`` or, with ``stochastic=True``,
            ``loss_fn(key, params, batch)`` (the key comes from ``numpyro.prng_key()``).
        prior_scale: standard deviation of the N(0, prior_scale²) prior of every weight.
        likelihood_scale: log-likelihood = −likelihood_scale · loss.
        stochastic: whether ``loss_fn`` takes a key first.

    ``site_scale`` (scalar or (P,)) multiplies the prior site's log-density (and, for VI with
    ``TraceMeanField_ELBO``, the analytic KL of each weight).
    """
    prior_scale = _checks.positive("prior_scale", prior_scale)
    if _checks.is_concrete(likelihood_scale):
        _checks.non_negative("likelihood_scale", likelihood_scale)
    space = weight_space(params_template)

    def model(batch, site_scale=None):
        prior = dist.Normal(0.0, prior_scale).expand([space.num_params])
        if site_scale is None:
            theta = numpyro.sample(SITE, prior)
        else:
            with numpyro.handlers.scale(scale=site_scale):
                theta = numpyro.sample(SITE, prior)
        params = space.unravel(theta)
        if stochastic:
            loss = loss_fn(numpyro.prng_key(), params, batch)
        else:
            loss = loss_fn(params, batch)
        numpyro.factor("loglik", -likelihood_scale * loss)

    model.weight_space = space
    return model


# --- likelihood terms of the CNF -------------------------------------------------------------


class _CFMLoss(NamedTuple):
    field: object
    sigma_min: float

    def __call__(self, key, params, batch):
        return cfm_loss(key, self.field, params, batch[0], batch[1], self.sigma_min)


class _CFMFixedNoiseLoss(NamedTuple):
    field: object
    sigma_min: float

    def __call__(self, params, batch):
        return cfm_loss_from_noise(self.field, params, *batch, self.sigma_min)


class _ExactNLL(NamedTuple):
    field: object
    solver: Solver

    def __call__(self, params, batch):
        return -jnp.mean(log_prob(self.field, params, batch[0], batch[1], self.solver))


def cfm_loss_fn(field, sigma_min: float = SIGMA_MIN) -> Callable:
    """Stochastic flow-matching loss ``loss_fn(key, params, (x, c))`` (VI).

    The loss objects are hashable by value (field, settings), so repeated fits with equal
    settings hit jax.jit's cache of the drivers (static arguments)."""
    return _CFMLoss(field, float(sigma_min))


def cfm_fixed_noise_loss_fn(field, sigma_min: float = SIGMA_MIN) -> Callable:
    """Deterministic flow-matching loss ``loss_fn(params, (x, c, t, z))`` for samplers that need
    a fixed potential: the noise (t, z) is drawn outside (``with_cfm_noise``) and passed in."""
    return _CFMFixedNoiseLoss(field, float(sigma_min))


def with_cfm_noise(key: jax.Array, x, c) -> tuple:
    """The data tuple (x, c, t, z) with t ~ U(0, 1) (n,), z ~ N(0, I) (n, d) drawn once."""
    t, z = draw_cfm_noise(key, jnp.asarray(x))
    return (jnp.asarray(x), jnp.asarray(c), t, z)


def exact_nll_loss_fn(field, solver: Solver = EXACT_SOLVER) -> Callable:
    """Mean exact negative CNF log-likelihood ``loss_fn(params, (x, c)) = −mean log p_θ(x | c)``
    (hashable by value, like ``cfm_loss_fn``)."""
    return _ExactNLL(field, solver)


def cnf_weight_model(
    field,
    params_template,
    *,
    likelihood: str = "fm",
    num_data: int,
    temperature: float = 1.0,
    prior_scale: float = 1.0,
    solver: Solver = EXACT_SOLVER,
    sigma_min: float = SIGMA_MIN,
) -> Callable:
    """The weight model of a CNF with a deterministic potential.

    ``likelihood="fm"``: Gibbs likelihood exp(−N/T · L_CFM(θ; x, c, t, z)), batch (x, c, t, z)
    with fixed noise; ``"exact"``: exp(−N/T · mean(−log p_θ(x | c))), batch (x, c).
    """
    _checks.one_of("likelihood", likelihood, ("fm", "exact"))
    num_data = _checks.positive_int("num_data", num_data)
    temperature = _checks.positive("temperature", temperature)
    if likelihood == "fm":
        loss_fn = cfm_fixed_noise_loss_fn(field, sigma_min)
    else:
        loss_fn = exact_nll_loss_fn(field, solver)
    return build_weight_model(
        params_template, loss_fn, prior_scale=prior_scale,
        likelihood_scale=num_data / temperature,
    )
