"""Weight posteriors of the regression network: mean-field VI (numpyro, shared with the CNF) and
the repulsive ensemble. Both return ``PosteriorDraws`` and target the same posterior
p(θ | D) ∝ Π_i N(y_i; m_θ(x_i), v_θ(x_i)) · N(θ; 0, s² I).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bayesiamp_jax import _checks
from bayesiamp_jax.posteriors.draws import PosteriorDraws
from bayesiamp_jax.posteriors.repulsive import fit_repulsive
from bayesiamp_jax.posteriors.vi import fit_vi, sample_vi
from bayesiamp_jax.regression.network import RegressionNet, nll_loss_fn
from bayesiamp_jax.regression.toy import RegressionSample

SPACES = ("weight", "function")


def _data(sample: RegressionSample, net: RegressionNet):
    x, y = jnp.asarray(sample.x), jnp.asarray(sample.y)
    _checks.last_dim("sample.x", x, net.in_dim, min_ndim=2)
    if y.shape != x.shape[:1]:
        raise ValueError(f"sample.y must have shape {x.shape[:1]}, got {tuple(y.shape)}")
    return x, y


def fit_vi_regression(
    key: jax.Array,
    net: RegressionNet,
    sample: RegressionSample,
    *,
    num_epochs: int,
    batch_size: int,
    num_draws: int = 50,
    kl_weight: float | None = None,
    kl_normalisation: str = "total",
    prior_scale: float = 1.0,
    progress: bool = False,
    **kw,
) -> PosteriorDraws:
    """Mean-field VI of the network weights; ``num_draws`` draws from q (method "vi").

    The default is the textbook ELBO / N: ``kl_normalisation="total"``, k = batch_size / N.
    Other keywords go to ``bayesiamp_jax.posteriors.vi.fit_vi``.
    """
    x, y = _data(sample, net)
    if kl_weight is None:
        kl_weight = batch_size / x.shape[0]
    key_init, key_fit, key_draw = jax.random.split(key, 3)
    result = fit_vi(
        key_fit, net.init(key_init), nll_loss_fn(net), (x, y), num_epochs=num_epochs,
        batch_size=batch_size, kl_weight=kl_weight, kl_normalisation=kl_normalisation,
        prior_scale=prior_scale, progress=progress, **kw,
    )
    draws = sample_vi(key_draw, result, num_draws)
    return draws._replace(info={**draws.info, "loss": result.losses})


def fit_repulsive_regression(
    key: jax.Array,
    net: RegressionNet,
    sample: RegressionSample,
    *,
    num_members: int,
    num_epochs: int,
    batch_size: int,
    space: str = "weight",
    measurement_x=None,
    measure_batch: bool = False,
    prior_scale: float | None = 1.0,
    progress: bool = False,
    **kw,
) -> PosteriorDraws:
    """Repulsive ensemble of ``num_members`` networks (method "repulsive").

    ``space="weight"``: RBF-KDE repulsion on the flat weights; ``"function"``: on the predicted
    means at ``measurement_x`` (K, in_dim) (default: the mini-batch inputs), or at the mini-batch
    inputs and the K fixed points together with ``measure_batch=True``. Fixed points spanning the
    input range also repel where data are sparse (the mini-batch inputs never lie there). Other
    keywords go to ``posteriors.repulsive.fit_repulsive``.
    """
    _checks.one_of("space", space, SPACES)
    data = _data(sample, net)
    function_fn = None
    if space == "function" and measurement_x is None:
        function_fn = lambda params, batch: net(params, batch[0])[0]
    elif space == "function":
        points = jnp.asarray(measurement_x)
        _checks.last_dim("measurement_x", points, net.in_dim, min_ndim=2)
        if measure_batch:
            function_fn = lambda params, batch: net(
                params, jnp.concatenate([batch[0], points]))[0]
        else:
            function_fn = lambda params, batch: net(params, points)[0]
    return fit_repulsive(
        key, net.init, nll_loss_fn(net), data, num_members=num_members, num_epochs=num_epochs,
        batch_size=batch_size, prior_scale=prior_scale, function_fn=function_fn,
        progress=progress, **kw,
    )
