"""Mean-field Gaussian VI ("VIB") of the weights with numpyro's SVI.

q(θ) = Π_i N(μ_i, softplus(ρ_i)²) over the flat weights (guide params ``theta_loc`` and
``theta_rho``: ρ is the unconstrained parameter, as in the reference). One weight draw per
mini-batch. With ``TraceMeanField_ELBO`` the KL is analytic, so the loss of one step is

    loss_fn(key, θ ~ q, batch) + k · KL_norm / B,

with KL_norm = Σ_tensors mean_elements KL_i ("reference", the paper's normalisation; k = 1..100
mean what they mean there) or Σ_i KL_i ("total", the textbook ELBO). This is implemented by
scaling the prior site per element by k / (B · numel(tensor)) resp. k / B.

Epochs run as a ``lax.scan`` over mini-batches, chunks of epochs as one more scan inside one
jitted call (``build_vi_runner``); ``fit_vi`` drives the chunks with
``bayesiamp_jax.resumable.run_chunks`` (progress bar, atomic checkpoint, resume) and, given U keys,
fits U independent units (runs × k) in one vmapped program.
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
from jax.flatten_util import ravel_pytree
from numpyro.infer import SVI, TraceMeanField_ELBO
from numpyro.optim import optax_to_numpyro

from bayesiamp_jax import _checks, _units
from bayesiamp_jax import convergence as conv
from bayesiamp_jax.flow import SIGMA_MIN
from bayesiamp_jax.optim import adam, minibatch_indices
from bayesiamp_jax.posteriors import driver
from bayesiamp_jax.posteriors.draws import PosteriorDraws
from bayesiamp_jax.posteriors.driver import Algorithm, bind
from bayesiamp_jax.posteriors.model import SITE, build_weight_model, cfm_loss_fn, weight_space

__all__ = ["KL_NORMALISATIONS", "VIResult", "VIState", "build_svi", "build_vi_runner",
           "fit_vi", "fit_vi_cnf", "guide_loc_scale", "init_guide_params", "init_vi_state",
           "kl_site_scale", "sample_vi", "vi_algorithm"]

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
    holdout_epochs: np.ndarray | None = None
    holdout_losses: np.ndarray | None = None


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
    """``run(key, state, data, site_scale, num_epochs[, num_active]) -> (state, losses)``, jitted.

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
    def run(key, state, data, site_scale, num_epochs: int, num_active=None):
        """With ``num_active`` (traced int) only the first ``num_active`` epochs run (the rest
        leave the state alone and report NaN), so one program serves every chunk length."""

        def body(carry, i):
            if num_active is None:
                return one_epoch(carry, i)
            skip = lambda cr: (cr, jnp.asarray(jnp.nan, jnp.float32))
            return jax.lax.cond(i < num_active, lambda cr: one_epoch(cr, i), skip, carry)

        (state, *_), losses = jax.lax.scan(
            body, (state, key, data, site_scale), jnp.arange(num_epochs)
        )
        return state, losses

    return run


def guide_loc_scale(svi: SVI, state: VIState, params_template) -> tuple:
    """(loc, scale) as params pytrees from a VI state (the guide's params are unconstrained)."""
    params = svi.optim.get_params(state.svi_state.optim_state)
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


@partial(jax.jit, static_argnames=("loss_fn", "prior_scale", "optimizer", "batch_size",
                                   "init_loc_from_params", "vmapped"))
def _vi_init(key_init, key_svi, params_init, first, init_loc_scale, init_rho, *, loss_fn,
             prior_scale, optimizer, batch_size, init_loc_from_params, vmapped):
    """Initial VI state of one unit (or of U units, vmapped)."""

    def one(key_init, key_svi, params, first):
        svi = build_svi(params, loss_fn, prior_scale=prior_scale, optimizer=optimizer)
        guide = init_guide_params(key_init, params, init_loc_scale, init_rho)
        if init_loc_from_params:
            guide[LOC] = weight_space(params).ravel(params).astype(jnp.float32)
        return init_vi_state(key_svi, svi, first, guide)

    return (jax.vmap(one) if vmapped else one)(key_init, key_svi, params_init, first)


HOLDOUT_DRAWS = 4  # weight draws of the held-out expected loss


# --- VI as a driver algorithm (bayesiamp_jax.posteriors.driver) ------------------------------
# ctx.data: the unit's data; ctx.hyper: its (P,) KL site scale; ctx.shared: the params template;
# start: the unit's params_init. The unit key splits into (guide init, SVI state, epochs).


def _vi_alg_init(key, ctx, start, *, loss_fn, prior_scale, optimizer, batch_size,
                 init_loc_scale, init_rho, init_loc_from_params):
    key_init, key_svi, _ = jax.random.split(key, 3)
    first = jax.tree_util.tree_map(lambda a: a[:batch_size], ctx.data)
    return _vi_init(key_init, key_svi, start, first, init_loc_scale, init_rho, loss_fn=loss_fn,
                    prior_scale=prior_scale, optimizer=optimizer, batch_size=batch_size,
                    init_loc_from_params=init_loc_from_params, vmapped=False)


def _vi_run_epochs(key, state, ctx, num_active, num_epochs, *, loss_fn, prior_scale, optimizer,
                   batch_size):
    """``num_epochs`` (``num_active`` of them active) VI epochs of one unit."""
    template = ctx.shared
    svi = build_svi(template, loss_fn, prior_scale=prior_scale, optimizer=optimizer)
    # SVI.update needs the transforms that SVI.init records; trace init abstractly for them.
    one_batch = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct((batch_size,) + a.shape[1:], a.dtype), ctx.data)
    p = weight_space(template).num_params
    jax.eval_shape(lambda k, b: svi.init(k, b, jnp.ones(p), init_params={
        LOC: jnp.zeros(p), RHO: jnp.zeros(p)}), jax.random.key(0), one_batch)
    run = build_vi_runner(svi, batch_size)
    state, losses = run(jax.random.split(key, 3)[2], state, ctx.data, ctx.hyper, num_epochs,
                        num_active)
    return state, {"loss": losses}


def _vi_finish(state, ctx, *, loss_fn, prior_scale):
    """(loc, scale) of the guide as params pytrees."""
    svi = build_svi(ctx.shared, loss_fn, prior_scale=prior_scale)
    return guide_loc_scale(svi, state, ctx.shared)


def _vi_holdout(state, ctx, held, *, loss_fn, prior_scale, num_draws):
    """E_q[loss(θ; held-out batch)] by ``num_draws`` draws θ = μ + σ ε with ε and the loss key
    fixed by the held-out key (common random numbers along the curve)."""
    svi = build_svi(ctx.shared, loss_fn, prior_scale=prior_scale)
    space = weight_space(ctx.shared)
    k_eps, k_loss = jax.random.split(held.key)
    eps = jax.random.normal(k_eps, (num_draws, space.num_params))
    params = svi.optim.get_params(state.svi_state.optim_state)
    loc, scale = params[LOC], jax.nn.softplus(params[RHO])
    return jnp.mean(jax.vmap(lambda e: loss_fn(k_loss, space.unravel(loc + scale * e),
                                               (held.x, held.c)))(eps))


def vi_algorithm(loss_fn: Callable, *, batch_size: int, prior_scale: float = 1.0,
                 optimizer: optax.GradientTransformation | None = None,
                 init_loc_scale: float = 0.1, init_rho: float = -3.0,
                 init_loc_from_params: bool = False) -> Algorithm:
    """Mean-field VI as a ``driver.Algorithm`` (``fit_vi`` runs it): data the unit's data,
    hyper its KL site scale (``kl_site_scale``), shared the params template, start the
    unit's ``params_init``; ``finish`` gives (loc, scale)."""
    statics = dict(loss_fn=loss_fn, prior_scale=float(prior_scale))
    return Algorithm(
        "vi", bind(_vi_alg_init, optimizer=optimizer, batch_size=batch_size,
                   init_loc_scale=float(init_loc_scale), init_rho=float(init_rho),
                   init_loc_from_params=bool(init_loc_from_params), **statics),
        bind(_vi_run_epochs, optimizer=optimizer, batch_size=batch_size, **statics),
        finish=bind(_vi_finish, **statics),
        holdout_loss=bind(_vi_holdout, num_draws=HOLDOUT_DRAWS, **statics))


driver.register("vi", vi_algorithm)


def fit_vi(
    key: jax.Array,
    params_init,
    loss_fn: Callable,
    data,
    *,
    num_epochs: int,
    batch_size: int,
    kl_weight=10.0,
    kl_normalisation: str = "reference",
    prior_scale: float = 1.0,
    init_loc_scale: float = 0.1,
    init_rho: float = -3.0,
    optimizer: optax.GradientTransformation | None = None,
    chunk_epochs: int = 100,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    init_loc_from_params: bool = False,
    holdout=None,
    holdout_every: int | None = None,
    early_stop: conv.Plateau | None = None,
) -> VIResult:
    """Fit the mean-field Gaussian posterior of the weights by SVI.

    Args:
        key: seeds the guide initialisation, the SVI state and the permutations
            (``split(key, 3)``). Keys of shape (U,) fit U independent units in one vmapped
            program: ``params_init`` and every data leaf then carry a leading axis U and
            ``kl_weight`` may be a (U,) array; unit u equals the call with ``key[u]``.
        params_init: params pytree (defines structure and shapes only).
        loss_fn: ``loss_fn(key, params, batch) -> scalar`` mean data loss on a batch
            (Gibbs log-likelihood = −loss). Hashable (a function, or e.g. ``cfm_loss_fn``):
            calls with the same ``loss_fn`` share compiled code.
        data: pytree of arrays with common leading axis N;
            ``batch = tree_map(lambda a: a[idx], data)``.
        num_epochs, batch_size: N // batch_size steps per epoch (remainder dropped).
        kl_weight: k >= 0 in loss + k · KL_norm / batch_size.
        kl_normalisation: "reference" (Σ over tensors of the per-tensor mean KL) or "total".
        prior_scale: σ_p of the N(0, σ_p²) prior.
        init_loc_scale, init_rho: μ ~ N(0, init_loc_scale²), ρ ~ N(init_rho, 0.1²).
        optimizer: optax transformation (default: Adam lr 1e-3, betas (0.99, 0.99)).
        chunk_epochs: epochs per jitted call (progress and checkpoints between chunks).
        checkpoint_path: saved atomically after each chunk; resumed from if it exists (its
            signature — key, data, k, normalisation, batch size, prior, initialisation — must
            match; see ``bayesiamp_jax.resumable``).
        init_loc_from_params: start μ at ``params_init`` (e.g. pretrained weights) instead of
            the reference's μ ~ N(0, init_loc_scale²).
        holdout: (x, c) or a ``convergence.Holdout`` (no unit axis): the held-out loss — the
            expected data loss under the guide, E_q[loss_fn(key_h, θ, (x, c))] over
            ``HOLDOUT_DRAWS`` weight draws, with ε and the loss key fixed (common random
            numbers) — is recorded before training and every ``holdout_every`` epochs (default
            and at most ``chunk_epochs``); the KL term, the same for any data, is left out.
            Training is not changed by it.
        early_stop: ``convergence.Plateau(patience, min_delta)`` (needs ``holdout``): stop
            between chunks when every unit's held-out loss has stopped improving.
    Returns:
        ``VIResult``; with units, loc/scale carry a leading axis U, losses are (U, epochs) and
        ``kl_weight`` is a (U,) array; ``holdout_epochs`` (C,) and ``holdout_losses`` (C,) or
        (U, C) with a held-out set.
    """
    num_epochs = _checks.positive_int("num_epochs", num_epochs)
    batch_size = _checks.positive_int("batch_size", batch_size)
    chunk_epochs = _checks.positive_int("chunk_epochs", chunk_epochs)
    units = _units.num_units(key)
    kl = np.asarray(kl_weight, np.float64)
    for i, k in enumerate(np.ravel(kl)):
        _checks.non_negative("kl_weight" if kl.ndim == 0 else f"kl_weight[{i}]", float(k))
    kl_arr = _units.per_unit("kl_weight", kl, units)
    _checks.positive("prior_scale", prior_scale)
    _checks.non_negative("init_loc_scale", init_loc_scale)
    _checks.finite("init_rho", np.asarray(init_rho))
    _checks.one_of("kl_normalisation", kl_normalisation, KL_NORMALISATIONS)
    data = jax.tree_util.tree_map(jnp.asarray, data)
    _units.check_leading("data", data, units)
    _units.check_leading("params_init", params_init, units)
    _check_data(_units.first_unit(data, units), batch_size)
    if units is not None:
        for i, leaf in enumerate(jax.tree_util.tree_leaves(data)):
            _checks.finite(f"data leaf {i}", leaf)
    template = _units.first_unit(params_init, units)

    site_scale = _units.vmap_if(
        lambda k: kl_site_scale(template, k, batch_size, kl_normalisation), units)(kl_arr)
    desc = f"VI k={float(kl):g}" if kl.ndim == 0 else "VI"
    desc = desc if units is None else f"{desc} x{units} units"
    algorithm = vi_algorithm(loss_fn, batch_size=batch_size, prior_scale=prior_scale,
                             optimizer=optimizer, init_loc_scale=init_loc_scale,
                             init_rho=init_rho, init_loc_from_params=init_loc_from_params)
    out = driver.run(
        algorithm, key, data, units=units, num_epochs=num_epochs, chunk=chunk_epochs,
        hyper=site_scale, shared=template, start=params_init, settings=dict(
            data=data, params_init=params_init, kl_weight=kl_arr,
            kl_normalisation=kl_normalisation, batch_size=batch_size,
            prior_scale=float(prior_scale), init_loc_scale=float(init_loc_scale),
            init_rho=float(init_rho), init_loc_from_params=bool(init_loc_from_params)),
        checkpoint_path=checkpoint_path, progress=progress, desc=desc, holdout=holdout,
        holdout_every=holdout_every, early_stop=early_stop)
    loc, scale = out.finished
    kl_out = float(kl) if units is None else np.asarray(kl_arr)
    return VIResult(loc, scale, np.asarray(out.records["loss"]), out.state, kl_out,
                    kl_normalisation, out.holdout_epochs, out.holdout_losses)


@partial(jax.jit, static_argnames=("num_draws", "vmapped"))
def _draw(key, loc, scale, *, num_draws, vmapped):
    def one(key, loc, scale):
        flat_loc, unravel = ravel_pytree(loc)
        flat_scale, _ = ravel_pytree(scale)
        eps = jax.random.normal(key, (num_draws,) + flat_loc.shape, flat_loc.dtype)
        return jax.vmap(unravel)(flat_loc + flat_scale * eps)

    return (jax.vmap(one) if vmapped else one)(key, loc, scale)


def sample_vi(key: jax.Array, result: VIResult, num_draws: int) -> PosteriorDraws:
    """``num_draws`` independent weight draws θ = μ + σ ⊙ ε, ε ~ N(0, I) (S, P) drawn with
    ``key`` over the flat weights (method "vi"); info: kl_weight, losses, final_loss (and
    holdout_epochs, holdout_curve when ``fit_vi`` recorded a held-out curve).

    With keys (U,) and a U-unit ``result`` (``fit_vi`` with U keys), params are (U, S, ...)
    and every info entry has a leading U (``split_units`` gives one ``PosteriorDraws`` each).
    """
    num_draws = _checks.positive_int("num_draws", num_draws)
    units = _units.num_units(key)
    _checks.same_structure("result.loc", result.loc, "result.scale", result.scale)
    _units.check_leading("result.loc", result.loc, units)
    params = _draw(key, result.loc, result.scale, num_draws=num_draws, vmapped=units is not None)
    losses = np.asarray(result.losses)
    final = losses[..., -1] if losses.shape[-1] else np.full(losses.shape[:-1], np.nan)
    info = {"kl_weight": np.asarray(result.kl_weight), "losses": losses,
            "final_loss": np.asarray(final)}
    info |= conv.holdout_info(result.holdout_epochs, result.holdout_losses, units)
    return PosteriorDraws(jax.device_get(params), "vi", info)


def fit_vi_cnf(
    key: jax.Array,
    field,
    x,
    c,
    *,
    kl_weight=10.0,
    num_epochs: int = 1000,
    batch_size: int = 1000,
    sigma_min: float = SIGMA_MIN,
    params_init=None,
    **kw,
) -> VIResult:
    """VI of a CNF vector field with the flow-matching loss on (x (N, d), c (N, cond_dim)).

    ``key`` splits into (init, fit); ``params_init`` defaults to ``field.init(init key)``.
    With keys (U,), x (U, N, d), c (U, N, cond_dim) and ``kl_weight`` scalar or (U,), U units
    are fitted in one vmapped program. Other keywords go to ``fit_vi``.
    """
    units = _units.num_units(key)
    x, c = _units.check_xc(field, x, c, units)
    key_init, key_fit = _units.split(key, 2, units)
    if params_init is None:
        params_init = jax.jit(_units.vmap_if(field.init, units))(key_init)
    else:
        _units.check_leading("params_init", params_init, units)
        _checks.params_match("params_init", field, params_init,
                             lead_axes=0 if units is None else 1)
    return fit_vi(
        key_fit, params_init, cfm_loss_fn(field, sigma_min), (x, c), num_epochs=num_epochs,
        batch_size=batch_size, kl_weight=kl_weight, **kw,
    )
