"""AdamMCMC as a ``numpyro.infer.mcmc.MCMCKernel``.

    mcmc = numpyro.infer.MCMC(AdamMCMC(potential_fn=loss, data=(x, c), batch_size=1000,
                                       sigma=0.1, sigma_dir=50.0),
                              num_warmup=0, num_samples=50_000, thinning=1000,
                              num_chains=4, chain_method="vectorized")
    mcmc.run(key, init_params=params)   # params: stacked over chains when num_chains > 1

``potential_fn(params, batch)`` is L (AdamMCMC targets exp(−λ L)); with ``model`` instead,
``model(batch)`` is a numpyro model (e.g. ``build_weight_model``) and L is its potential energy
at unconstrained values (positions are unconstrained; the weight models are all real-valued).
``data`` defaults to the first positional argument of ``mcmc.run(key, data)``; with
``batch_size`` each step uses one mini-batch of it (epochs of random permutations). A NaN
proposal loss is rejected; a NaN loss at the current state cannot be raised inside numpyro's
loop: check the "loss" extra field (``sample_adammcmc`` raises, naming step and chain).
Warm-up steps are plain AdamMCMC steps (nothing is adapted). The steps are exactly those of
``adammcmc.build_chain_step`` for the same key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import potential_energy
from numpyro.util import is_prng_key

from bayesiamp_jax import _checks
from bayesiamp_jax.posteriors.adammcmc import ChainState, build_chain_step, chain_init


class ChainInfoState(NamedTuple):
    """``ChainState`` plus the last step's acceptance probability, accept flag and L(θ)."""

    position: object
    opt_state: object
    rng_key: jax.Array
    data_key: jax.Array
    step: jax.Array
    acceptance_probability: jax.Array
    is_accepted: jax.Array
    loss: jax.Array


class AdamMCMC(MCMCKernel):
    """numpyro kernel of AdamMCMC. State: ``adammcmc.ChainState`` (sample field "position");
    extra fields: "acceptance_probability", "is_accepted", "loss" of the step that produced it."""

    sample_field = "position"

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        *,
        sigma: float,
        sigma_dir: float = 0.0,
        data=None,
        batch_size: int | None = None,
        optimizer=None,
        inverse_temperature: float = 1.0,
    ):
        if (model is None) == (potential_fn is None):
            raise ValueError("give exactly one of model and potential_fn")
        _checks.positive("sigma", sigma)
        _checks.non_negative("sigma_dir", sigma_dir)
        if batch_size is not None:
            batch_size = _checks.positive_int("batch_size", batch_size)
            n = jax.tree_util.tree_leaves(data)[0].shape[0] if data is not None else batch_size
            if batch_size > n:
                raise ValueError(f"batch_size={batch_size} exceeds the number of points N={n}")
        self._model = model
        self._potential_fn = potential_fn
        self.sigma, self.sigma_dir = float(sigma), float(sigma_dir)
        self.data, self.batch_size = data, batch_size
        self.optimizer, self.inverse_temperature = optimizer, inverse_temperature
        self._vectorized = False
        if model is not None:
            loss_fn = lambda params, batch: potential_energy(model, (batch,), {}, params)
        else:
            loss_fn = potential_fn
        self._loss_fn = loss_fn
        self._chain_step = build_chain_step(
            loss_fn, batch_size=batch_size, optimizer=optimizer,
            inverse_temperature=inverse_temperature,
        )

    @property
    def model(self):
        return self._model

    @property
    def default_fields(self):
        return ("position",)

    def _data(self, model_args):
        if self.data is not None:
            return self.data
        return model_args[0] if model_args else None

    def _init_one(self, rng_key, init_params, batch=None):
        if init_params is None:
            if self._model is None:
                raise ValueError("init_params is required with potential_fn")
            key_init, rng_key = jax.random.split(rng_key)
            tr = numpyro.handlers.trace(numpyro.handlers.seed(self._model, key_init))
            sites = tr.get_trace(batch)
            init_params = {name: site["value"] for name, site in sites.items()
                           if site["type"] == "sample" and not site["is_observed"]}
        return _with_info(chain_init(rng_key, init_params, self.optimizer))

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        batch = self._data(model_args)
        if is_prng_key(rng_key):
            self._vectorized = False
            return self._init_one(rng_key, init_params, batch)
        self._vectorized = True
        if init_params is None:
            return jax.vmap(lambda k: self._init_one(k, None, batch))(rng_key)
        return jax.vmap(lambda k, p: self._init_one(k, p, batch))(rng_key, init_params)

    def _sample_one(self, state, data):
        chain = ChainState(state.position, state.opt_state, state.rng_key, state.data_key,
                           state.step)
        chain, info = self._chain_step(chain, data, self.sigma, self.sigma_dir)
        return ChainInfoState(*chain, *info)

    def sample(self, state, model_args, model_kwargs):
        data = self._data(model_args)
        if self._vectorized:
            return jax.vmap(self._sample_one, in_axes=(0, None))(state, data)
        return self._sample_one(state, data)

    def get_diagnostics_str(self, state):
        return f"acc. prob {float(state.acceptance_probability):.2f}"


def _with_info(state: ChainState) -> ChainInfoState:
    dtype = jax.tree_util.tree_leaves(state.position)[0].dtype
    return ChainInfoState(*state, jnp.zeros((), dtype), jnp.asarray(False), jnp.zeros((), dtype))
