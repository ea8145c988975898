"""Flow matching and the continuous normalizing flow (CNF) in the reference's time convention.

t = 0 is data, t = 1 is noise. The CNF transports data x to noise z with dx/dt = v_θ(t, x, c);
``decode`` integrates noise back to data (t: 1 → 0), ``encode`` data to noise (t: 0 → 1), and
``log_prob`` integrates x together with ∫ tr(∂v/∂x) dt:

    log p(x | c) = log N(z; 0, I) + ∫₀¹ tr(∂v/∂x)(t, x(t), c) dt.

``field`` is a ``VectorField`` (or any hashable callable ``field(params, t, x, c)`` written for
one point that broadcasts over leading axes). Shapes: x, z (n, d); c (n, cond_dim) or broadcastable.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp

from bayesiamp_jax import _checks
from bayesiamp_jax.integrate import Solver, check_successful, integrate, integrate_status

SIGMA_MIN = 1e-4
DEFAULT_SOLVER = Solver("rk4", 20)


def _check_sigma_min(sigma_min):
    if _checks.is_concrete(sigma_min):
        _checks.probability("sigma_min", sigma_min)


def cfm_loss_from_noise(field, params, x, c, t, z, sigma_min: float = SIGMA_MIN) -> jax.Array:
    """Conditional flow-matching loss for given noise: x, z (n, d), t (n,) -> scalar.

    y = (1 − t) x + (σ_min + (1 − σ_min) t) z, target u = (1 − σ_min) z − x; the loss is the
    mean over points and coordinates of (v_θ(t, y, c) − u)².
    """
    _check_sigma_min(sigma_min)
    tt = t[..., None]
    y = (1.0 - tt) * x + (sigma_min + (1.0 - sigma_min) * tt) * z
    target = (1.0 - sigma_min) * z - x
    return jnp.mean((field(params, t, y, c) - target) ** 2)


def draw_cfm_noise(key: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """t ~ U(0, 1) of shape (n,) and z ~ N(0, I) of x's shape."""
    key_t, key_z = jax.random.split(key)
    t = jax.random.uniform(key_t, x.shape[:-1], x.dtype)
    return t, jax.random.normal(key_z, x.shape, x.dtype)


def cfm_loss(key: jax.Array, field, params, x, c, sigma_min: float = SIGMA_MIN) -> jax.Array:
    """Flow-matching loss with fresh t ~ U(0, 1), z ~ N(0, I) drawn from ``key``."""
    t, z = draw_cfm_noise(key, x)
    return cfm_loss_from_noise(field, params, x, c, t, z, sigma_min)


def _velocity(field, params, c):
    return lambda t, y, args: field(params, t, y, c)


def _solve(f, y0, t0, t1, solver, throw):
    """(Solution, successful): ``integrate`` (a failed adaptive solve throws inside the
    computation) or ``integrate_status`` (it is reported)."""
    if throw:
        return integrate(f, y0, t0, t1, solver), True
    return integrate_status(f, y0, t0, t1, solver)


@partial(jax.jit, static_argnames=("field", "solver", "t0", "t1", "throw"))
def _transport_solve(field, params, y0, c, solver, t0, t1, throw=True):
    sol, ok = _solve(_velocity(field, params, c), y0, t0, t1, solver, throw)
    return sol.y1, ok


def _transport(field, params, y0, c, solver, t0, t1):
    """The transported points y(t1) (jitted; an adaptive solve out of steps throws inside)."""
    return _transport_solve(field, params, y0, c, solver, t0, t1)[0]


def _host_checked(run, solver, what, *inputs):
    """``run(throw)`` -> (value, successful). Called eagerly with an adaptive solver, the solve
    does not throw inside the computation and running out of steps is a one-line ValueError
    naming the solver; under a trace (jit, grad, vmap) diffrax's own runtime error stays."""
    leaves = jax.tree_util.tree_leaves(inputs)
    if not getattr(solver, "adaptive", False) or not all(map(_checks.is_concrete, leaves)):
        return run(True)[0]
    value, ok = run(False)
    check_successful(solver, ok, what)
    return value


def decode(field, params, z, c, solver: Solver = DEFAULT_SOLVER) -> jax.Array:
    """Noise (n, d) -> data (n, d): integrate dx/dt = v from t = 1 to t = 0."""
    _checks.params_match("params", field, params)
    _check_points("z", z, c)
    run = lambda throw: _transport_solve(field, params, z, c, solver, 1.0, 0.0, throw)
    return _host_checked(run, solver, "decode", params, z, c)


def encode(field, params, x, c, solver: Solver = DEFAULT_SOLVER) -> jax.Array:
    """Data (n, d) -> noise (n, d): integrate dx/dt = v from t = 0 to t = 1."""
    _checks.params_match("params", field, params)
    _check_points("x", x, c)
    run = lambda throw: _transport_solve(field, params, x, c, solver, 0.0, 1.0, throw)
    return _host_checked(run, solver, "encode", params, x, c)


def sample(key: jax.Array, field, params, c=None, solver: Solver = DEFAULT_SOLVER,
           num_samples: int | None = None) -> jax.Array:
    """z ~ N(0, I), then ``decode``: (n, d) samples.

    n is ``num_samples``, or the rows of ``c`` (n, cond_dim) when it is not given. An
    unconditional field (cond_dim = 0) takes c = None and ``num_samples``; a conditional one
    may take one condition (cond_dim,) for all ``num_samples`` points.
    """
    if num_samples is not None:
        _checks.positive_int("num_samples", num_samples)
        shape = (num_samples,)
    elif c is None:
        raise ValueError("num_samples is required when c is None (an unconditional field), "
                         "got None")
    else:
        c = jnp.asarray(c)
        if c.ndim < 2:
            raise ValueError(f"c must have shape (n, cond_dim) to give the number of samples, "
                             f"or pass num_samples; got shape {tuple(c.shape)}")
        shape = c.shape[:-1]
    z = jax.random.normal(key, shape + (field.data_dim,))
    return decode(field, params, z, c, solver)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) summed over the last axis."""
    return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def velocity_and_divergence(field, params, t, x, c) -> tuple[jax.Array, jax.Array]:
    """v (n, d) and the exact tr(∂v/∂x) (n,).

    Uses the field's own ``velocity_and_divergence`` where it has one (``VectorField``: a fused
    forward-mode pass), else ``velocity_and_divergence_autodiff``.
    """
    own = getattr(field, "velocity_and_divergence", None)
    if own is not None:
        return own(params, t, x, c)
    return velocity_and_divergence_autodiff(field, params, t, x, c)


def velocity_and_divergence_autodiff(field, params, t, x, c) -> tuple[jax.Array, jax.Array]:
    """v (n, d) and the exact tr(∂v/∂x) (n,), from d batched JVPs along the basis vectors."""
    d = x.shape[-1]
    v, jvp = jax.linearize(lambda y: field(params, t, y, c), x)
    tangents = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype)[:, None, :], (d,) + x.shape)
    jv = jax.vmap(jvp)(tangents)  # (d, n, d): jv[i] = J e_i for every point
    return v, jnp.einsum("i...i->...", jv)


@dataclasses.dataclass(frozen=True)
class AutodiffDivergence:
    """Wraps a field so that ``flow`` ignores its own fused divergence and uses d autodiff
    JVPs: the reference that fused divergences are tested and benchmarked against."""

    field: object

    @property
    def data_dim(self) -> int:
        return self.field.data_dim

    def __call__(self, params, t, x, c=None):
        return self.field(params, t, x, c)


def velocity_and_hutchinson(field, params, t, x, c, eps) -> tuple[jax.Array, jax.Array]:
    """v (n, d) and the Hutchinson estimate εᵀ(∂v/∂x)ε (n,) for probe ε (n, d)."""
    v, jv = jax.jvp(lambda y: field(params, t, y, c), (x,), (eps,))
    return v, jnp.sum(eps * jv, axis=-1)


def _log_prob(dynamics, x, solver, throw=True):
    y0 = (x, jnp.zeros(x.shape[:-1], x.dtype))
    sol, ok = _solve(dynamics, y0, 0.0, 1.0, solver, throw)
    z, trace_integral = sol.y1
    return standard_normal_log_prob(z) + trace_integral, ok


def log_prob(field, params, x, c, solver: Solver = DEFAULT_SOLVER) -> jax.Array:
    """Exact CNF log-density log p(x | c) of points x (n, d) -> (n,).

    Differentiable in ``params``; with a fixed-step solver, ``Solver(..., checkpoint=True)``
    keeps the memory of the gradient at one ODE state per step.
    """
    _checks.params_match("params", field, params)
    _check_points("x", x, c)
    return _host_checked(lambda throw: _log_prob_exact(field, params, x, c, solver, throw),
                         solver, "log_prob", params, x, c)


@partial(jax.jit, static_argnames=("field", "solver", "throw"))
def _log_prob_exact(field, params, x, c, solver, throw=True):
    return _log_prob(lambda t, y, a: velocity_and_divergence(field, params, t, y[0], c), x, solver,
                     throw)


def log_prob_hutchinson(
    key: jax.Array, field, params, x, c, solver: Solver = DEFAULT_SOLVER, rademacher: bool = True
) -> jax.Array:
    """Unbiased Hutchinson estimate of log p(x | c), one probe per point fixed along the path."""
    _checks.params_match("params", field, params)
    _check_points("x", x, c)
    return _host_checked(
        lambda throw: _log_prob_hutchinson(key, field, params, x, c, solver, rademacher, throw),
        solver, "log_prob_hutchinson", params, x, c)


@partial(jax.jit, static_argnames=("field", "solver", "rademacher", "throw"))
def _log_prob_hutchinson(key, field, params, x, c, solver, rademacher, throw=True):
    if rademacher:
        eps = jax.random.rademacher(key, x.shape, dtype=x.dtype)
    else:
        eps = jax.random.normal(key, x.shape, x.dtype)
    return _log_prob(
        lambda t, y, a: velocity_and_hutchinson(field, params, t, y[0], c, eps), x, solver, throw
    )


def _check_points(name, x, c=None):
    if jnp.ndim(x) < 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {tuple(jnp.shape(x))}")
    _checks.finite(name, x)
    if c is not None:
        _checks.finite("c", c)
        lead_x, lead_c = tuple(jnp.shape(x))[:-1], tuple(jnp.shape(c))[:-1]
        try:
            batch = jnp.broadcast_shapes(lead_x, lead_c)
        except ValueError:
            batch = None
        if batch != lead_x:
            raise ValueError(f"{name} and c must have the same number of points (c may "
                             f"broadcast), got shapes {tuple(jnp.shape(x))} and "
                             f"{tuple(jnp.shape(c))}")
