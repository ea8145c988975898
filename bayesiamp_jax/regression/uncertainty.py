"""Statistical / systematic decomposition of the predictive uncertainty from weight draws.

For S weight draws with predicted means m_s(x) and variances v_s(x), the posterior predictive is
the mixture (1/S) Σ_s N(m_s, v_s); by the law of total variance its variance is

    σ_total² = σ_stat² + σ_syst²,   σ_stat² = Var_s[m_s]  (ddof 0),   σ_syst² = E_s[v_s].

σ_stat (the spread of the means) reflects the limited training data and vanishes as N grows;
σ_syst (the mean predicted noise) learns the data noise and plateaus at the truth.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import _checks
from bayesiamp_jax.posteriors.draws import PosteriorDraws


class Decomposition(NamedTuple):
    """Predictive mean and the three uncertainties (standard deviations), each of shape (n,)."""

    mean: jax.Array
    stat: jax.Array
    syst: jax.Array
    total: jax.Array


def decompose(means, variances) -> Decomposition:
    """means, variances (S, n) over S draws -> Decomposition of (n,) arrays."""
    means, variances = jnp.asarray(means), jnp.asarray(variances)
    if means.shape != variances.shape or means.ndim < 1:
        raise ValueError(
            "means and variances must have the same shape (S, ...), got "
            f"{tuple(means.shape)} and {tuple(variances.shape)}"
        )
    if np.any(np.asarray(variances) < 0):
        raise ValueError("variances must be >= 0")
    mean = jnp.mean(means, axis=0)
    stat2 = jnp.mean((means - mean) ** 2, axis=0)
    syst2 = jnp.mean(variances, axis=0)
    return Decomposition(mean, jnp.sqrt(stat2), jnp.sqrt(syst2), jnp.sqrt(stat2 + syst2))


def predict_draws(net, draws: PosteriorDraws, x) -> tuple[jax.Array, jax.Array]:
    """Means and variances (S, n) of every weight draw at inputs x (n, in_dim)."""
    _checks.params_match("draws.params", net, draws.params, lead_axes=1)
    return _predict(net, draws.params, jnp.asarray(x))


@partial(jax.jit, static_argnames=("net",))
def _predict(net, params, x):
    return jax.vmap(net, in_axes=(0, None))(params, x)


def predictive_uncertainty(net, draws: PosteriorDraws, x) -> Decomposition:
    """``decompose(*predict_draws(net, draws, x))``: the decomposition at inputs x (n, in_dim)."""
    return decompose(*predict_draws(net, draws, x))
