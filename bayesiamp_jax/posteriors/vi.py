"""Mean-field Gaussian VI ("VIB") of the weights with numpyro's SVI.

q(θ) = Π_i N(μ_i, softplus(ρ_i)²) over the flat weights (guide params ``theta_loc`` and
``theta_rho``: ρ is the unconstrained parameter, as in the reference). One weight draw per
mini-batch. With ``TraceMeanField_ELBO`` the KL is analytic, so the loss of one step is

    loss_fn(key, θ ~ q, batch) + k · KL_norm / B,

with KL_norm = Σ_tensors mean_elements KL_i ("reference", the paper's normalisation; k = 1..100
mean what they mean there) or Σ_i KL_i ("total", the textbook ELBO). This is implemented by
scaling the prior site per element by k / (B · numel(tensor)) resp. k / B.

Epochs run as a ``lax.scan`` over mini-batches, chunks of epochs as one more scan inside one
jitted call (``build_vi_runner``); ``fit_vi`` is the host loop with a progress bar and atomic
checkpoint/resume. The runner is pure in (key, state, data, kl_weight), so it can be
``jax.vmap``-ed over independent runs (see ``init_vi_state`` / ``build_vi_runner``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, TraceMeanField_ELBO
from numpyro.optim import optax_to_numpyro
from tqdm.auto import tqdm

from bayesiamp_jax import _checks
from bayesiamp_jax.checkpoint import load_pytree, restore, save_pytree
from bayesiamp_jax.flow import SIGMA_MIN
from bayesiamp_jax.posteriors.draws import PosteriorDraws, keys_from_data, keys_to_data
from bayesiamp_jax.posteriors.model import SITE, build_weight_model, cfm_loss_fn, weight_space
from bayesiamp_jax.training import adam, minibatch_indices

KL_NORMALISATIONS = ("reference", "total")
LOC, RHO = f"{SITE}_loc", f"{SITE}_rho"


class VIState(NamedTuple):
    """numpyro's SVIState (guide params, optimizer state, key) and completed epochs."""

    svi_state: object
    epoch: jax.Array


class VIResult(NamedTuple):
    """Fitted mean-field posterior: ``loc`` and ``scale`` (>0) as params pytrees, the mean
    step loss per epoch (np.ndarray), the final ``state`` (for resuming) and the settings."""

    loc: object
    scale: object
    losses: np.ndarray
    state: VIState
    kl_weight: float
    kl_normalisation: str


def kl_site_scale(params_template, kl_weight, batch_size: int, kl_normalisation: str):
    """(P,) per-weight multiplier of the elementwise KL: k / (B · numel) or k / B.

    ``kl_weight`` may be traced (e.g. vmapped over runs).
    """
    _checks.one_of("kl_normalisation", kl_normalisation, KL_NORMALISATIONS)
    space = weight_space(params_template)
    if kl_normalisation == "reference":
        per = 1.0 / space.tensor_numel()
    else:
        per = np.ones(space.num_params, np.float32)
    return jnp.asarray(kl_weight, jnp.float32) * jnp.asarray(per) / batch_size


def _guide(num_params: int):
    def guide(batch, site_scale=None):
        loc = numpyro.param(LOC, jnp.zeros(num_params))
        rho = numpyro.param(RHO, jnp.full(num_params, -3.0))
        q = dist.Normal(loc, jax.nn.softplus(rho))
        with numpyro.handlers.scale(scale=site_scale):
            numpyro.sample(SITE, q)

    return guide


def build_svi(
    params_template,
    loss_fn: Callable,
    *,
    prior_scale: float = 1.0,
    optimizer: optax.GradientTransformation | None = None,
) -> SVI:
    """numpyro ``SVI`` of the weight model (stochastic ``loss_fn(key, params, batch)``,
    likelihood = −loss) with the mean-field guide and ``TraceMeanField_ELBO``.

    Its methods take ``(batch, site_scale)``; see ``kl_site_scale``.
    """
    model = build_weight_model(params_template, loss_fn, prior_scale=prior_scale, stochastic=True)
    guide = _guide(model.weight_space.num_params)
    optim = optax_to_numpyro(optimizer if optimizer is not None else adam())
    return SVI(model, guide, optim, TraceMeanField_ELBO())


def init_guide_params(key, params_template, init_loc_scale: float = 0.1, init_rho: float = -3.0):
    """Reference initialisation: μ ~ N(0, init_loc_scale²), ρ ~ N(init_rho, 0.1²) (flat, (P,))."""
    p = weight_space(params_template).num_params
    k_loc, k_rho = jax.random.split(key)
    return {
        LOC: init_loc_scale * jax.random.normal(k_loc, (p,)),
        RHO: init_rho + 0.1 * jax.random.normal(k_rho, (p,)),
    }


def init_vi_state(key, svi: SVI, first_batch, guide_params) -> VIState:
    """Initial state (jit/vmap-able: the prior scale is traced, so k = 0 is allowed)."""
    site_scale = jnp.ones(guide_params[LOC].shape[-1])
    svi_state = svi.init(key, first_batch, site_scale, init_params=guide_params)
    return VIState(svi_state, jnp.asarray(0, jnp.int32))


def build_vi_runner(svi: SVI, batch_size: int) -> Callable:
    """``run(key, state, data, site_scale, num_epochs) -> (state, losses (num_epochs,))``, jitted.

    ``data`` is a pytree of arrays with common leading axis N; the permutation of epoch e uses
    ``fold_in(key, e)``, so chunking and resuming give the same numbers. Pure: vmap over
    (key, state, data, site_scale) for independent runs.
    """
    batch_size = _checks.positive_int("batch_size", batch_size)

    def one_epoch(carry, _):
        state, key, data, site_scale = carry
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        idx = minibatch_indices(jax.random.fold_in(key, state.epoch), n, batch_size)
        batches = jax.tree_util.tree_map(lambda a: a[idx], data)

        def step(svi_state, batch):
            svi_state, loss = svi.update(svi_state, batch, site_scale)
            return svi_state, loss

        svi_state, losses = jax.lax.scan(step, state.svi_state, batches)
        state = VIState(svi_state, state.epoch + 1)
        return (state, key, data, site_scale), jnp.mean(losses)

    @partial(jax.jit, static_argnames=("num_epochs",))
    def run(key, state, data, site_scale, num_epochs: int):
        (state, *_), losses = jax.lax.scan(
            one_epoch, (state, key, data, site_scale), None, length=num_epochs
        )
        return state, losses

    return run


def guide_loc_scale(svi: SVI, state: VIState, params_template) -> tuple:
    """(loc, scale) as params pytrees from a VI state."""
    params = svi.get_params(state.svi_state)
    unravel = weight_space(params_template).unravel
    return unravel(params[LOC]), unravel(jax.nn.softplus(params[RHO]))


def _check_data(data, batch_size):
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data must hold at least one array, got an empty pytree")
    n = int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 0
    if n == 0:
        raise ValueError("data is empty: its leading axis has length 0")
    for i, leaf in enumerate(leaves):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != n:
            raise ValueError(
                f"every data array must share the leading axis N={n}; "
                f"leaf {i} has shape {tuple(np.shape(leaf))}"
            )
        _checks.finite(f"data leaf {i}", leaf)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the number of data points N={n}")
    return n


_CACHE: dict = {}


def _machinery(params_init, loss_fn, prior_scale, optimizer, batch_size):
    """(svi, jitted init, jitted runner), cached so repeated fits reuse compiled code."""
    leaves, treedef = jax.tree_util.tree_flatten(params_init)
    key = (treedef, tuple((np.shape(x), str(jnp.result_type(x))) for x in leaves), loss_fn,
           float(prior_scale), optimizer, batch_size)
    try:
        hit = _CACHE.get(key)
    except TypeError:  # unhashable loss_fn / optimizer: no caching
        key, hit = None, None
    if hit is None:
        svi = build_svi(params_init, loss_fn, prior_scale=prior_scale, optimizer=optimizer)
        init = jax.jit(lambda k, batch, guide: init_vi_state(k, svi, batch, guide))
        hit = (svi, init, build_vi_runner(svi, batch_size))
        if key is not None:
            if len(_CACHE) > 32:
                _CACHE.clear()
            _CACHE[key] = hit
    return hit


def fit_vi(
    key: jax.Array,
    params_init,
    loss_fn: Callable,
    data,
    *,
    num_epochs: int,
    batch_size: int,
    kl_weight: float = 10.0,
    kl_normalisation: str = "reference",
    prior_scale: float = 1.0,
    init_loc_scale: float = 0.1,
    init_rho: float = -3.0,
    optimizer: optax.GradientTransformation | None = None,
    chunk_epochs: int = 100,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    init_loc_from_params: bool = False,
) -> VIResult:
    """Fit the mean-field Gaussian posterior of the weights by SVI.

    Args:
        key: seeds the guide initialisation, the permutations and the weight draws.
        params_init: params pytree (defines structure and shapes only).
        loss_fn: ``loss_fn(key, params, batch) -> scalar`` mean data loss on a batch
            (Gibbs log-likelihood = −loss).
        data: pytree of arrays with common leading axis N;
            ``batch = tree_map(lambda a: a[idx], data)``.
        num_epochs, batch_size: N // batch_size steps per epoch (remainder dropped).
        kl_weight: k >= 0 in loss + k · KL_norm / batch_size.
        kl_normalisation: "reference" (Σ over tensors of the per-tensor mean KL) or "total".
        prior_scale: σ_p of the N(0, σ_p²) prior.
        init_loc_scale, init_rho: μ ~ N(0, init_loc_scale²), ρ ~ N(init_rho, 0.1²).
        optimizer: optax transformation (default: Adam lr 1e-3, betas (0.99, 0.99)).
        chunk_epochs: epochs per jitted call (progress and checkpoints between chunks).
        checkpoint_path: saved atomically after each chunk; resumed from if it exists
            (its k, normalisation and batch size must match).
        init_loc_from_params: start μ at ``params_init`` (e.g. pretrained weights) instead of
            the reference's μ ~ N(0, init_loc_scale²).
    """
    num_epochs = _checks.positive_int("num_epochs", num_epochs)
    batch_size = _checks.positive_int("batch_size", batch_size)
    chunk_epochs = _checks.positive_int("chunk_epochs", chunk_epochs)
    kl_weight = _checks.non_negative("kl_weight", kl_weight)
    _checks.positive("prior_scale", prior_scale)
    _checks.non_negative("init_loc_scale", init_loc_scale)
    _checks.finite("init_rho", np.asarray(init_rho))
    _checks.one_of("kl_normalisation", kl_normalisation, KL_NORMALISATIONS)
    data = jax.tree_util.tree_map(jnp.asarray, data)
    _check_data(data, batch_size)

    svi, init_state, run = _machinery(params_init, loss_fn, prior_scale, optimizer, batch_size)
    key_init, key_svi, key_run = jax.random.split(key, 3)
    guide_params = init_guide_params(key_init, params_init, init_loc_scale, init_rho)
    if init_loc_from_params:
        guide_params[LOC] = weight_space(params_init).ravel(params_init).astype(jnp.float32)
    first = jax.tree_util.tree_map(lambda a: a[:batch_size], data)
    state = init_state(key_svi, first, guide_params)
    history: list[float] = []
    settings = {"kl_weight": np.float64(kl_weight), "batch_size": np.int64(batch_size),
                "kl_normalisation": kl_normalisation}
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        saved = load_pytree(checkpoint_path)
        old = {k: saved.get("settings", {}).get(k) for k in settings}
        if any(str(old[k]) != str(settings[k]) for k in settings):
            raise ValueError(f"checkpoint {str(checkpoint_path)!r} was written with settings "
                             f"{old}, not {settings}")
        state = keys_from_data(restore(keys_to_data(state), saved["state"]), state)
        history = list(np.asarray(saved["losses"]))
    site_scale = kl_site_scale(params_init, kl_weight, batch_size, kl_normalisation)
    done = int(state.epoch)
    with tqdm(total=num_epochs, initial=min(done, num_epochs), disable=not progress,
              desc=f"VI k={kl_weight:g}", unit="epoch") as bar:
        while done < num_epochs:
            n = min(chunk_epochs, num_epochs - done)
            state, losses = run(key_run, state, data, site_scale, n)
            losses = np.asarray(losses)
            if not np.all(np.isfinite(losses)):
                bad = done + int(np.argmin(np.isfinite(losses)))
                raise FloatingPointError(f"VI loss became non-finite in epoch {bad}")
            history.extend(losses.tolist())
            done += n
            bar.update(n)
            bar.set_postfix(loss=f"{history[-1]:.4f}")
            if checkpoint_path is not None:
                save_pytree(checkpoint_path, {"state": keys_to_data(state), "settings": settings,
                                              "losses": np.asarray(history)})
    loc, scale = guide_loc_scale(svi, state, params_init)
    return VIResult(loc, scale, np.asarray(history), state, kl_weight, kl_normalisation)


def sample_vi(key: jax.Array, result: VIResult, num_draws: int) -> PosteriorDraws:
    """``num_draws`` independent weight draws θ = μ + σ ⊙ ε from the fitted q (method "vi")."""
    num_draws = _checks.positive_int("num_draws", num_draws)
    _checks.same_structure("result.loc", result.loc, "result.scale", result.scale)

    def one(k):
        leaves, treedef = jax.tree_util.tree_flatten(result.loc)
        keys = jax.random.split(k, len(leaves))
        scales = treedef.flatten_up_to(result.scale)
        drawn = [
            m + s * jax.random.normal(kk, jnp.shape(m), jnp.result_type(m))
            for kk, m, s in zip(keys, leaves, scales, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, drawn)

    params = jax.vmap(one)(jax.random.split(key, num_draws))
    info = {"kl_weight": np.asarray(result.kl_weight),
            "final_loss": np.asarray(result.losses[-1] if len(result.losses) else np.nan)}
    return PosteriorDraws(params, "vi", info)


def fit_vi_cnf(
    key: jax.Array,
    field,
    x,
    c,
    *,
    kl_weight: float = 10.0,
    num_epochs: int = 1000,
    batch_size: int = 1000,
    sigma_min: float = SIGMA_MIN,
    params_init=None,
    **kw,
) -> VIResult:
    """VI of a CNF vector field with the flow-matching loss on (x (N, d), c (N, cond_dim)).

    Other keywords go to ``fit_vi``; ``params_init`` defaults to ``field.init(key)``.
    """
    x, c = jnp.asarray(x), jnp.asarray(c)
    _checks.last_dim("x", x, field.data_dim, min_ndim=2)
    _checks.last_dim("c", c, field.cond_dim, min_ndim=2)
    _checks.same_leading("x", x, "c", c)
    key_init, key_fit = jax.random.split(key)
    template = params_init if params_init is not None else field.init(key_init)
    return fit_vi(
        key_fit, template, cfm_loss_fn(field, sigma_min), (x, c), num_epochs=num_epochs,
        batch_size=batch_size, kl_weight=kl_weight, **kw,
    )
