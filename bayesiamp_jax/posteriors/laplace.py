"""Laplace approximation of the weight posterior around the deterministic solution θ*.

The posterior of every family (``posteriors.model``), log p(θ | D) = −(N/T)·L(θ) − λ|θ|²/2,
is replaced by the Gaussian N(θ*, (G + λ I)⁻¹), with G the generalized Gauss–Newton matrix
(GGN) of the Gibbs log-likelihood of a mean squared-residual loss
L(θ) = (1/(n m)) Σ_i |r_i(θ)|², r_i ∈ R^m the residual of point i (flow matching:
r_i = v_θ(t_i, y_i, c_i) − u_i, m = d):

    G = (N/T) · (2 / (n m)) · Σ_i J_iᵀ J_i,    J_i = ∂r_i/∂θ at θ*

(Martens 2020; the Hessian for a residual linear in θ, e.g. the linear-Gaussian model).
Structures of G (``STRUCTURES``):

* ``"diag"``: the exact diagonal of G over the whole network;
* ``"last_layer"``: the full G of the last layer's weights (kernel and bias), the other
  weights held at θ*;
* ``"full"``: the full P × P matrix (small models, tests);
* ``"lowrank"``: the top-``rank`` eigenpairs of G from a single-pass randomized Nyström sketch
  (Tropp, Yurtsever, Udell & Cevher 2017) plus the exact diagonal of the remainder.

G is accumulated in one pass over the points, a batch of ``batch_size`` per-point Jacobians
(vmapped vjps) at a time, so memory stays bounded; the batches are the items of
``driver.run`` (progress, checkpoint and resume, the unit axis). The prior precision λ
maximises the Laplace evidence (MacKay 1992; Immer et al. 2021)

    log Z(λ) = −(N/T)·L(θ*) − λ|θ*|²/2 + (Q/2)·log λ − ½·log det(G + λ I),

Q the number of weights under the approximation; it is concave in λ, and its stationary point
solves γ(λ) = λ|θ*|², γ = tr(G (G + λ I)⁻¹), found by bisection on log λ. Draws are
θ = θ* + (G + λ I)^{-1/2} z. T multiplies the likelihood by 1/T (G ∝ 1/T).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bayesiamp_jax import _checks, _units
from bayesiamp_jax.flow import SIGMA_MIN, draw_cfm_noise
from bayesiamp_jax.posteriors import driver
from bayesiamp_jax.posteriors.draws import PosteriorDraws
from bayesiamp_jax.posteriors.driver import Algorithm, bind

__all__ = ["STRUCTURES", "CFMResidual", "Curvature", "LaplaceResult", "fit_laplace",
           "fit_laplace_cnf", "laplace_algorithm", "laplace_approximation",
           "laplace_covariance", "last_layer_name", "sample_laplace"]

STRUCTURES = ("diag", "last_layer", "full", "lowrank")  # info["structure"] is the index
OVERSAMPLE = 10  # extra columns of the Nyström sketch beyond ``rank``
LOG_LAMBDA_RANGE = (-30.0, 30.0)  # bisection bracket of log λ
BISECTIONS = 100


class Curvature(NamedTuple):
    """Precision A = diag(d) + V diag(e) Vᵀ + λ I of the Q weights under the approximation.

    ``diag`` (Q,) or (0,); ``eigvals`` (k,) and ``eigvecs`` (Q, k) orthonormal columns
    ("diag": k = 0; "full"/"last_layer": d empty, k = Q; "lowrank": both)."""

    diag: jax.Array
    eigvals: jax.Array
    eigvecs: jax.Array


class LaplaceResult(NamedTuple):
    """A fitted Laplace posterior: mean θ* (params pytree), the curvature G (``Curvature``,
    likelihood scale N/T included), the prior precision λ, the log evidence at λ, the mean
    squared residual L(θ*), the settings (``structure``, ``last_layer``: the top-level params
    key under the approximation for "last_layer", else None) and N/T. With U units every
    array carries a leading U."""

    mean: object
    curvature: Curvature
    prior_precision: jax.Array
    log_evidence: jax.Array
    loss: jax.Array
    structure: str
    last_layer: str | None
    likelihood_scale: jax.Array


class _Accumulator(NamedTuple):
    diag: jax.Array    # Σ_i diag(J_iᵀ J_i) (Q,) or (0,)
    gram: jax.Array    # Σ_i J_iᵀ J_i (Q, Q) or (0, 0)
    sketch: jax.Array  # Σ_i J_iᵀ J_i Ω (Q, r) or (Q, 0)
    sq_sum: jax.Array  # Σ_i |r_i|²
    done: jax.Array    # batches accumulated


class LaplaceState(NamedTuple):
    params: object  # θ* of the unit
    acc: _Accumulator
    key: jax.Array  # the unit's key (the sketch Ω)


# --- the weights under the approximation --------------------------------------------------


def last_layer_name(params) -> str:
    """The top-level key of the last Dense layer: the largest i of "Dense_i" (flax's names)."""
    keys = list(params) if hasattr(params, "keys") else []
    found = [(int(m.group(1)), k) for k in keys if (m := re.fullmatch(r"Dense_(\d+)", str(k)))]
    if not found:
        raise ValueError(f"params has no top-level 'Dense_<i>' layer (keys {keys}); pass "
                         "last_layer=<the top-level key of the last layer>")
    return max(found)[1]


def _select(params, last_layer):
    """Flat (Q,) weights under the approximation and ``merge(params, q) -> params``."""
    if last_layer is None:
        flat, unravel = ravel_pytree(params)
        return flat, lambda p, q: unravel(q)
    flat, unravel = ravel_pytree(params[last_layer])
    return flat, lambda p, q: {**p, last_layer: unravel(q)}


def _point_jacobian(residual_fn, merge, params, q, point):
    """r (m,) and J = ∂r/∂q (m, Q) of one point (m vjps)."""
    r, vjp = jax.vjp(lambda v: jnp.ravel(residual_fn(merge(params, v), point)), q)
    (jac,) = jax.vmap(vjp)(jnp.eye(r.shape[0], dtype=r.dtype))
    return r, jac


def _omega(key, size, columns):
    """The sketch's orthonormal test matrix Ω (Q, r)."""
    g = jax.random.normal(jax.random.fold_in(key, 1), (size, columns))
    return jnp.linalg.qr(g)[0]


def _sketch_columns(structure, rank, size):
    return min(rank + OVERSAMPLE, size) if structure == "lowrank" else 0


# --- the algorithm of one unit (driver.Algorithm) --------------------------------------------
# ctx.data: the unit's points, padded to a whole number of batches; ctx.hyper:
# {"likelihood_scale": N/T, "prior_precision": λ (NaN: by evidence)}; start: θ*.


def _init(key, ctx, start, *, structure, last_layer, rank):
    q, _ = _select(start, last_layer)
    size = q.shape[0]
    dense = structure in ("full", "last_layer")
    acc = _Accumulator(
        jnp.zeros(size if structure in ("diag", "lowrank") else 0, q.dtype),
        jnp.zeros((size, size) if dense else (0, 0), q.dtype),
        jnp.zeros((size, _sketch_columns(structure, rank, size)), q.dtype),
        jnp.zeros((), q.dtype), jnp.zeros((), jnp.int32))
    return LaplaceState(start, acc, key)


def _run_batches(key, state, ctx, num_active, num_epochs, *, residual_fn, structure, last_layer,
                 rank, batch_size, num_points):
    """Accumulate the GGN sums of ``num_active`` batches of ``batch_size`` points."""
    q, merge = _select(state.params, last_layer)
    columns = _sketch_columns(structure, rank, q.shape[0])
    omega = _omega(state.key, q.shape[0], columns) if columns else None
    jac_fn = partial(_point_jacobian, residual_fn, merge, state.params, q)

    def one_batch(acc):
        first = acc.done * batch_size
        rows = jax.tree_util.tree_map(
            lambda a: jax.lax.dynamic_slice_in_dim(a, first, batch_size), ctx.data)
        keep = (first + jnp.arange(batch_size) < num_points).astype(q.dtype)
        r, jac = jax.vmap(jac_fn)(rows)  # (B, m), (B, m, Q)
        r, jac = r * keep[:, None], jac * keep[:, None, None]
        flat = jac.reshape(-1, jac.shape[-1])
        new = acc._replace(sq_sum=acc.sq_sum + jnp.sum(r**2), done=acc.done + 1)
        if acc.diag.shape[0]:
            new = new._replace(diag=acc.diag + jnp.sum(flat**2, axis=0))
        if acc.gram.shape[0]:
            new = new._replace(gram=acc.gram + flat.T @ flat)
        if omega is not None:
            new = new._replace(sketch=acc.sketch + flat.T @ (flat @ omega))
        count = jnp.maximum(jnp.sum(keep) * r.shape[1], 1.0)
        return new, jnp.sum(r**2) / count

    def body(acc, i):
        skip = lambda a: (a, jnp.asarray(jnp.nan, q.dtype))
        return jax.lax.cond(i < num_active, one_batch, skip, acc)

    acc, loss = jax.lax.scan(body, state.acc, jnp.arange(num_epochs))
    return state._replace(acc=acc), {"loss": loss}


def _nystrom(sketch, omega, rank):
    """Top ``rank`` eigenpairs of the PSD G from Y = G Ω (Tropp et al. 2017, Alg. 3)."""
    shift = jnp.finfo(sketch.dtype).eps * jnp.sqrt(sketch.shape[0]) * jnp.linalg.norm(sketch)
    y = sketch + shift * omega
    core = omega.T @ y
    chol = jnp.linalg.cholesky(0.5 * (core + core.T))
    b = jax.scipy.linalg.solve_triangular(chol, y.T, lower=True).T  # Y C^{-T}
    u, s, _ = jnp.linalg.svd(b, full_matrices=False)
    return jnp.maximum(s[:rank] ** 2 - shift, 0.0), u[:, :rank]


def _lowrank_parts(curv, lam):
    """D' = d + λ, W = D'^{-1/2} V e^{1/2} (Q, k) and the eigh (R, s²) of WᵀW (k, k): the
    thin SVD of W is (W R s⁻¹, s, R), without a Q × k SVD."""
    dp = curv.diag + lam
    w = curv.eigvecs * jnp.sqrt(curv.eigvals) / jnp.sqrt(dp)[:, None]
    s2, r = jnp.linalg.eigh(w.T @ w)
    return dp, w, r, jnp.maximum(s2, 0.0)


def _gamma_logdet(curv, lam, structure):
    """γ(λ) = tr(G (G + λI)⁻¹) and log det(G + λI).

    Low rank: G + λI = D'^{1/2} (I + W Wᵀ) D'^{1/2}, so log det = Σ log D' + Σ log(1 + s²)
    and tr (G + λI)⁻¹ = Σ 1/D' − Σ_j (Rᵀ Wᵀ D'⁻¹ W R)_jj / (1 + s_j²) (Woodbury)."""
    if structure == "diag":
        return jnp.sum(curv.diag / (curv.diag + lam)), jnp.sum(jnp.log(curv.diag + lam))
    if structure in ("full", "last_layer"):
        e = curv.eigvals
        return jnp.sum(e / (e + lam)), jnp.sum(jnp.log(e + lam))
    dp, w, r, s2 = _lowrank_parts(curv, lam)
    wr = w @ r
    trace_inv = jnp.sum(1.0 / dp) - jnp.sum(jnp.sum(wr**2 / dp[:, None], 0) / (1.0 + s2))
    return dp.shape[0] - lam * trace_inv, jnp.sum(jnp.log(dp)) + jnp.sum(jnp.log1p(s2))


def _evidence_lambda(curv, sq_norm, structure):
    """λ maximising log Z: the root of γ(λ) − λ|θ*|² on log λ (bisection; the bracket's end
    if there is none there)."""
    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        lam = jnp.exp(mid)
        up = _gamma_logdet(curv, lam, structure)[0] > lam * sq_norm  # log Z still increasing
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = (jnp.asarray(v, sq_norm.dtype) for v in LOG_LAMBDA_RANGE)
    lo, hi = jax.lax.fori_loop(0, BISECTIONS, body, (lo, hi))
    return jnp.exp(0.5 * (lo + hi))


def _finish(state, ctx, *, residual_fn, structure, last_layer, rank, num_points):
    """Curvature (scaled by N/T), λ, log Z and L(θ*) of one unit."""
    q, _ = _select(state.params, last_layer)
    point = jax.tree_util.tree_map(lambda a: a[0], ctx.data)
    m = int(np.prod(jax.eval_shape(lambda p, x: residual_fn(p, x), state.params, point).shape))
    acc = state.acc
    scale = ctx.hyper["likelihood_scale"] * 2.0 / (num_points * m)
    empty = jnp.zeros((0,), q.dtype)
    if structure == "diag":
        curv = Curvature(scale * acc.diag, empty, jnp.zeros((q.shape[0], 0), q.dtype))
    elif structure in ("full", "last_layer"):
        e, v = jnp.linalg.eigh(scale * acc.gram)
        curv = Curvature(empty, jnp.maximum(e, 0.0), v)
    else:
        omega = _omega(state.key, q.shape[0], acc.sketch.shape[1])
        e, v = _nystrom(scale * acc.sketch, omega, rank)
        rest = jnp.maximum(scale * acc.diag - jnp.sum(v**2 * e, axis=1), 0.0)
        curv = Curvature(rest, e, v)
    sq_norm = jnp.sum(q**2)
    fixed = ctx.hyper["prior_precision"]
    lam = jnp.where(jnp.isnan(fixed), _evidence_lambda(curv, sq_norm, structure), fixed)
    loss = acc.sq_sum / (num_points * m)
    logdet = _gamma_logdet(curv, lam, structure)[1]
    log_z = (-ctx.hyper["likelihood_scale"] * loss - 0.5 * lam * sq_norm
             + 0.5 * q.shape[0] * jnp.log(lam) - 0.5 * logdet)
    return curv, lam, log_z, loss


def laplace_algorithm(residual_fn: Callable, *, structure: str, batch_size: int,
                      num_points: int, last_layer: str | None = None,
                      rank: int = 10) -> Algorithm:
    """The GGN pass as a ``driver.Algorithm``: an item is a batch of ``batch_size`` points of
    ``ctx.data`` (padded; the first ``num_points`` count), ``finish`` gives (Curvature, λ,
    log Z, L(θ*)); ``start`` is θ*, ``ctx.hyper`` {"likelihood_scale", "prior_precision"}."""
    _checks.one_of("structure", structure, STRUCTURES)
    common = dict(structure=structure, last_layer=last_layer, rank=int(rank))
    return Algorithm(
        "laplace", bind(_init, **common),
        bind(_run_batches, residual_fn=residual_fn, batch_size=int(batch_size),
             num_points=int(num_points), **common),
        finish=bind(_finish, residual_fn=residual_fn, num_points=int(num_points), **common),
        item="batch", what="the mean squared residual of a batch")


driver.register("laplace", laplace_algorithm)


# --- public entry points ---------------------------------------------------------------------


def _describe_fn(fn) -> str:
    """A text naming ``fn`` that is stable across processes (checkpoint signatures)."""
    if hasattr(fn, "__qualname__") and not isinstance(fn, tuple):
        return f"{getattr(fn, '__module__', '')}.{fn.__qualname__}"
    return repr(fn)


def _per_unit_positive(name, value, units):
    arr = np.asarray(value, np.float64)
    for i, v in enumerate(np.ravel(arr)):
        _checks.positive(name if arr.ndim == 0 else f"{name}[{i}]", float(v))
    return _units.per_unit(name, arr, units)


def laplace_approximation(
    key: jax.Array,
    params_map,
    residual_fn: Callable,
    data,
    *,
    structure: str = "diag",
    prior_precision=None,
    temperature=1.0,
    num_data: int | None = None,
    last_layer: str | None = None,
    rank: int = 10,
    batch_size: int = 256,
    chunk_batches: int = 64,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
) -> LaplaceResult:
    """The Laplace posterior N(θ*, (G + λI)⁻¹) of a mean squared-residual loss.

    Args:
        key: seeds the low-rank sketch (unused by the other structures). Keys (U,) fit U
            units in one vmapped program: every leaf of ``params_map`` and ``data`` then has a
            leading U, ``temperature`` / ``prior_precision`` may be (U,) arrays.
        params_map: θ*, the params pytree the approximation is centred on.
        residual_fn: ``residual_fn(params, point) -> r`` (any shape, m entries) of ONE point
            (a slice of ``data`` without its leading axis); the loss is the mean over points
            and entries of r². Hashable (a module function or a NamedTuple such as
            ``CFMResidual``): equal settings share one compiled program.
        data: pytree of arrays with a common leading axis n (the points of the curvature).
        structure: one of ``STRUCTURES``.
        prior_precision: λ of the N(0, I/λ) prior (1 / prior_scale² of the other families),
            scalar or (U,); None chooses it by the Laplace evidence.
        temperature: T (scalar or (U,)); the likelihood is (N/T)·L.
        num_data: N (default n), e.g. the number of training events when ``data`` is a subset.
        last_layer: the top-level params key of "last_layer" (default ``last_layer_name``).
        rank: the eigenpairs of "lowrank".
        batch_size, chunk_batches: points per vmapped batch, batches per compiled call.
        checkpoint_path: the GGN sums are saved after every call and resumed from.
    """
    _checks.one_of("structure", structure, STRUCTURES)
    rank = _checks.positive_int("rank", rank)
    batch_size = _checks.positive_int("batch_size", batch_size)
    chunk_batches = _checks.positive_int("chunk_batches", chunk_batches)
    units = _units.num_units(key)
    data = jax.tree_util.tree_map(jnp.asarray, data)
    _units.check_leading("data", data, units)
    _units.check_leading("params_map", params_map, units)
    first = _units.first_unit(data, units)
    leaves = jax.tree_util.tree_leaves(first)
    if not leaves or np.ndim(leaves[0]) == 0 or np.shape(leaves[0])[0] == 0:
        raise ValueError("data must hold arrays with a leading axis of at least one point, got "
                         f"shapes {[np.shape(a) for a in leaves]}")
    n = int(np.shape(leaves[0])[0])
    for i, leaf in enumerate(leaves):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != n:
            raise ValueError(f"every data array must share the leading axis n={n}; leaf {i} "
                             f"has shape {tuple(np.shape(leaf))}")
    for i, leaf in enumerate(jax.tree_util.tree_leaves(data)):
        _checks.finite(f"data leaf {i}", leaf)
    num_data = n if num_data is None else _checks.positive_int("num_data", num_data)
    template = _units.first_unit(params_map, units)
    if structure == "last_layer":
        last_layer = last_layer_name(template) if last_layer is None else last_layer
        if not hasattr(template, "keys") or last_layer not in template:
            raise ValueError(f"last_layer must be a top-level key of params_map, got "
                             f"{last_layer!r}")
    else:
        last_layer = None
    temp = _per_unit_positive("temperature", temperature, units)
    if prior_precision is None:
        lam = _units.per_unit("prior_precision", np.nan, units)
    else:
        lam = _per_unit_positive("prior_precision", prior_precision, units)
    scale = jnp.asarray(num_data, jnp.float32) / temp
    batches = -(-n // batch_size)
    pad = batches * batch_size - n
    axis = 0 if units is None else 1
    padded = jax.tree_util.tree_map(
        lambda a: jnp.concatenate([a, jnp.repeat(jax.lax.slice_in_dim(a, 0, 1, axis=axis),
                                                 pad, axis=axis)], axis=axis), data)
    algorithm = laplace_algorithm(residual_fn, structure=structure, batch_size=batch_size,
                                  num_points=n, last_layer=last_layer, rank=rank)
    hyper = {"likelihood_scale": scale, "prior_precision": lam}
    desc = f"Laplace {structure}" + ("" if units is None else f" x{units} units")
    out = driver.run(
        algorithm, key, padded, units=units, num_epochs=batches, chunk=chunk_batches,
        hyper=hyper, start=params_map, settings=dict(
            data=data, params_map=params_map, residual_fn=_describe_fn(residual_fn), hyper=hyper,
            structure=structure, last_layer=str(last_layer), rank=rank,
            batch_size=batch_size), checkpoint_path=checkpoint_path, progress=progress,
        desc=desc)
    curv, lam_out, log_z, loss = out.finished
    return LaplaceResult(params_map, curv, lam_out, log_z, loss, structure, last_layer, scale)


def _offset(curv, lam, z, structure):
    """(G + λI)^{-1/2} z for one z (Q,)."""
    if structure == "diag":
        return z / jnp.sqrt(curv.diag + lam)
    if structure in ("full", "last_layer"):
        v = curv.eigvecs
        return v @ ((v.T @ z) / jnp.sqrt(curv.eigvals + lam))
    # (I + W Wᵀ)^{-1/2} = I + U diag((1 + s²)^{-1/2} − 1) Uᵀ with U = W R s⁻¹
    dp, w, r, s2 = _lowrank_parts(curv, lam)
    root = jnp.sqrt(1.0 + s2)
    wr = w @ r
    return (z - wr @ ((wr.T @ z) / (root * (1.0 + root)))) / jnp.sqrt(dp)


@partial(jax.jit, static_argnames=("structure", "last_layer", "num_draws", "vmapped"))
def _draw(key, mean, curv, lam, *, structure, last_layer, num_draws, vmapped):
    def one(key, mean, curv, lam):
        q, merge = _select(mean, last_layer)
        z = jax.random.normal(key, (num_draws, q.shape[0]), q.dtype)
        offsets = jax.vmap(lambda zi: _offset(curv, lam, zi, structure))(z)
        if last_layer is None:
            return jax.vmap(lambda d: merge(mean, q + d))(offsets)
        tiled = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (num_draws,) + a.shape),
                                       mean)
        return {**tiled, last_layer: jax.vmap(lambda d: merge(mean, q + d)[last_layer])(offsets)}

    return (jax.vmap(one) if vmapped else one)(key, mean, curv, lam)


def sample_laplace(key: jax.Array, result: LaplaceResult, num_draws: int) -> PosteriorDraws:
    """``num_draws`` draws θ = θ* + (G + λI)^{-1/2} z (method "laplace"); info:
    prior_precision, log_evidence, loss (L(θ*)), likelihood_scale (N/T) and structure (the
    index into ``STRUCTURES``). Keys (U,) with a U-unit result: params (U, S, ...)."""
    num_draws = _checks.positive_int("num_draws", num_draws)
    _checks.one_of("result.structure", result.structure, STRUCTURES)
    units = _units.num_units(key)
    _units.check_leading("result.mean", result.mean, units)
    params = _draw(key, result.mean, result.curvature, result.prior_precision,
                   structure=result.structure, last_layer=result.last_layer,
                   num_draws=num_draws, vmapped=units is not None)
    code = STRUCTURES.index(result.structure)
    info = {"prior_precision": np.asarray(result.prior_precision),
            "log_evidence": np.asarray(result.log_evidence), "loss": np.asarray(result.loss),
            "likelihood_scale": np.asarray(result.likelihood_scale),
            "structure": np.full(() if units is None else (units,), code, np.int32)}
    return PosteriorDraws(jax.device_get(params), "laplace", info)


def laplace_covariance(result: LaplaceResult) -> np.ndarray:
    """The dense (Q, Q) covariance (G + λI)⁻¹ of one unit (float64; small Q)."""
    curv = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), result.curvature)
    lam = float(result.prior_precision)
    v = curv.eigvecs
    size = v.shape[0]
    precision = v @ np.diag(curv.eigvals) @ v.T + lam * np.eye(size)
    if curv.diag.shape[0]:
        precision += np.diag(curv.diag)
    return np.linalg.inv(precision)


def fit_laplace(key: jax.Array, params_map, residual_fn: Callable, data, *, num_draws: int,
                structure: str = "diag", prior_precision=None, temperature=1.0,
                **kw) -> PosteriorDraws:
    """``laplace_approximation`` then ``sample_laplace``: ``key`` splits into (sketch, draws);
    keys (U,) give U units (params (U, S, ...)). Other keywords go to
    ``laplace_approximation``."""
    num_draws = _checks.positive_int("num_draws", num_draws)
    units = _units.num_units(key)
    key_fit, key_draw = _units.split(key, 2, units)
    result = laplace_approximation(key_fit, params_map, residual_fn, data, structure=structure,
                                   prior_precision=prior_precision, temperature=temperature,
                                   **kw)
    return sample_laplace(key_draw, result, num_draws)


class CFMResidual(NamedTuple):
    """Flow-matching residual of one point (x, c, t, z): v_θ(t, y, c) − u with
    y = (1 − t) x + (σ_min + (1 − σ_min) t) z, u = (1 − σ_min) z − x
    (``flow.cfm_loss_from_noise`` is the mean of its squares)."""

    field: object
    sigma_min: float

    def __call__(self, params, point):
        x, c, t, z = point
        y = (1.0 - t) * x + (self.sigma_min + (1.0 - self.sigma_min) * t) * z
        c = c if self.field.cond_dim else None
        return self.field(params, t, y, c) - ((1.0 - self.sigma_min) * z - x)


@partial(jax.jit, static_argnames=("num_points", "vmapped"))
def _cfm_points(key, x, c, *, num_points, vmapped):
    """A random subset of ``num_points`` events (all N in their order if ``num_points`` is
    N) and its noise (t, z), drawn once."""
    def one(key, x, c):
        key_subset, key_noise = jax.random.split(key)
        xs, cs = x, c
        if num_points < x.shape[0]:
            rows = jax.random.permutation(key_subset, x.shape[0])[:num_points]
            xs, cs = x[rows], c[rows]
        t, z = draw_cfm_noise(key_noise, xs)
        return xs, cs, t, z

    return (jax.vmap(one) if vmapped else one)(key, x, c)


def fit_laplace_cnf(
    key: jax.Array,
    field,
    params_map,
    x,
    c,
    *,
    num_draws: int,
    structure: str = "diag",
    prior_precision=None,
    temperature=1.0,
    num_points: int | None = None,
    sigma_min: float = SIGMA_MIN,
    progress: bool = True,
    **kw,
) -> PosteriorDraws:
    """Laplace posterior of a CNF vector field around the flow-matching solution ``params_map``
    on (x (N, d), c (N, cond_dim)); the Gibbs likelihood (N/T)·L_CFM with its noise (t, z)
    drawn once, on ``num_points`` events drawn without replacement (default all N).

    ``key`` splits into (points, sketch, draws). Keys (U,) with x (U, N, d), c (U, N, ·) and
    ``params_map`` (U, ...) run U units in one program; temperature / prior_precision scalar
    or (U,). Other keywords (batch_size, chunk_batches, rank, last_layer, checkpoint_path) go
    to ``laplace_approximation``.
    """
    num_draws = _checks.positive_int("num_draws", num_draws)
    _checks.one_of("structure", structure, STRUCTURES)
    units = _units.num_units(key)
    x, c = _units.check_xc(field, x, c, units)
    _units.check_leading("params_map", params_map, units)
    _checks.params_match("params_map", field, params_map, lead_axes=0 if units is None else 1)
    _checks.probability("sigma_min", sigma_min)
    num_events = int(x.shape[-2])
    num_points = num_events if num_points is None else _checks.positive_int("num_points",
                                                                             num_points)
    if num_points > num_events:
        raise ValueError(f"num_points={num_points} exceeds the number of events N={num_events}")
    key_points, key_fit = _units.split(key, 2, units)
    points = _cfm_points(key_points, x, c, num_points=num_points, vmapped=units is not None)
    return fit_laplace(key_fit, params_map, CFMResidual(field, float(sigma_min)), points,
                       num_draws=num_draws, structure=structure,
                       prior_precision=prior_precision, temperature=temperature,
                       num_data=num_events, progress=progress, **kw)
