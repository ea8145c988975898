"""One entry point for ODE solves: fixed-step ``lax.scan`` solvers and adaptive diffrax ones.

``Solver`` is a frozen, hashable configuration (use it as a static argument of ``jit``):

- ``Solver("rk4", num_steps=20)``: classic RK4 (also ``"euler"``, ``"midpoint"`` and ``"dp5"``,
  the 5th-order Dormand–Prince weights without error control, first-same-as-last), a
  hand-written ``lax.scan``; ``checkpoint=True`` rematerialises each step in reverse mode, so
  gradients through the solve cost O(steps) memory of one state only.
  ``"ab2"`` … ``"ab5"``: k-step Adams–Bashforth on uniform steps, one field evaluation per step
  (the past k evaluations are combined); the first k − 1 steps are RK4 steps, whose first
  stages start the history, so N steps cost N + 3 (k − 1) evaluations.
  ``power=p`` (p > 0, default 1 = uniform) uses the non-uniform nodes
  t_k = t_d + (t_o − t_d) (k / N)^p, t_d the endpoint nearer to t = 0 (the data end of the CNF)
  and t_o the other one: p > 1 concentrates the steps near t = 0 with the order of the method
  unchanged (a smooth reparametrisation of time).
- ``Solver("dopri5", rtol=1e-5, atol=1e-6)``: adaptive diffrax solvers (also ``"tsit5"``).
  One step size for the whole state (batch), as in the reference. ``norm="max"`` controls the
  worst coordinate; ``norm="rms"`` is diffrax's default (much looser per sample for a batch:
  on 1,001 states with one hard coordinate, rtol 1e-3, its error was ~85× the max norm's).

``Solution.num_evals`` counts vector-field evaluations exactly: ``Solver.num_evals`` for the
fixed solvers (steps × stages, + 1 for the FSAL ``"dp5"``, N + 3 (k − 1) for ``"abk"``); 6 per
attempted (accepted or rejected) step + 1 for the FSAL adaptive ones.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from contextlib import contextmanager
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import optimistix as optx  # a dependency of diffrax; its norms have safe derivatives

from bayesiamp_jax import _checks

# Adams–Bashforth k-step weights β_j, newest first: y_{n+1} = y_n + h Σ_j β_j f_{n−j}
# (Hairer, Nørsett & Wanner, Solving ODEs I, III.1, Table 1.1).
ADAMS_BASHFORTH = {
    "ab2": (3 / 2, -1 / 2),
    "ab3": (23 / 12, -16 / 12, 5 / 12),
    "ab4": (55 / 24, -59 / 24, 37 / 24, -9 / 24),
    "ab5": (1901 / 720, -2774 / 720, 2616 / 720, -1274 / 720, 251 / 720),
}
# name -> field evaluations per step (Adams–Bashforth: after its k − 1 starting RK4 steps)
FIXED_STEP = {"euler": 1, "midpoint": 2, "rk4": 4, "dp5": 6} | dict.fromkeys(ADAMS_BASHFORTH, 1)
ADAPTIVE = {"dopri5": diffrax.Dopri5, "tsit5": diffrax.Tsit5}
NORMS = ("max", "rms")
BACKENDS = ("xla", "pallas")
_EVALS_PER_STEP = 6  # new stages per step of the FSAL 7-stage Dopri5 / Tsit5


@dataclasses.dataclass(frozen=True)
class Solver:
    """Static ODE-solver configuration.

    Attributes:
        name: "euler", "midpoint", "rk4", "dp5", "ab2" … "ab5" (fixed step) or "dopri5",
            "tsit5" (adaptive).
        num_steps: number of steps of a fixed-step solver (Adams–Bashforth "abk": ≥ k).
        power: step schedule of a fixed-step solver, (k / N)^power from the end nearer t = 0
            (Adams–Bashforth: 1 only).
        backend: "xla" (default) or "pallas": ``evaluation.generate``'s histograms then use the
            fused generation + binning kernel (``bayesiamp_jax.kernels``; fixed-step solvers
            only, interpret mode off GPUs). ``integrate`` itself always runs the XLA path.
        rtol, atol: tolerances of an adaptive solver.
        norm: error norm of an adaptive solver, "max" or "rms".
        max_steps: step budget of an adaptive solver.
        checkpoint: rematerialise each fixed step under reverse-mode differentiation.
    """

    name: str = "rk4"
    num_steps: int = 20
    rtol: float = 1e-5
    atol: float = 1e-6
    norm: str = "max"
    max_steps: int = 4096
    checkpoint: bool = False
    power: float = 1.0
    backend: str = "xla"

    def __post_init__(self):
        _checks.one_of("name", self.name, tuple(FIXED_STEP) + tuple(ADAPTIVE))
        _checks.positive_int("num_steps", self.num_steps)
        _checks.positive("rtol", self.rtol)
        _checks.positive("atol", self.atol)
        _checks.one_of("norm", self.norm, NORMS)
        _checks.positive_int("max_steps", self.max_steps)
        _checks.positive("power", self.power)
        _checks.one_of("backend", self.backend, BACKENDS)
        if self.name in ADAMS_BASHFORTH:
            k = len(ADAMS_BASHFORTH[self.name])
            if self.num_steps < k:
                raise ValueError(f"num_steps must be >= {k} for name={self.name!r} ({k - 1} "
                                 f"starting RK4 steps, then Adams–Bashforth), got "
                                 f"{self.num_steps!r}")
            if self.power != 1.0:
                raise ValueError(f"power must be 1 (uniform steps) for name={self.name!r}, got "
                                 f"{self.power!r}")
        if self.backend == "pallas" and self.adaptive:
            raise ValueError(f"backend='pallas' needs a fixed-step solver, got name={self.name!r}")

    def __repr__(self) -> str:
        # fields at their defaults that were added later are left out, so that signatures
        # written with repr(solver) (evaluation checkpoints) stay valid
        later = {"power": 1.0, "backend": "xla"}
        items = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                 if f.name not in later or getattr(self, f.name) != later[f.name]]
        return f"Solver({', '.join(items)})"

    @property
    def adaptive(self) -> bool:
        return self.name in ADAPTIVE

    @property
    def num_evals(self) -> int:
        """Field evaluations per solve of a fixed-step solver (``Solution.num_evals``)."""
        if self.adaptive:
            raise ValueError(f"an adaptive solver ({self.name!r}) has no fixed number of "
                             "evaluations")
        if self.name in ADAMS_BASHFORTH:
            return self.num_steps + 3 * (len(ADAMS_BASHFORTH[self.name]) - 1)
        return self.num_steps * FIXED_STEP[self.name] + (self.name == "dp5")


class Solution(NamedTuple):
    """Final state ``y1`` (same pytree as y0) and the number of field evaluations."""

    y1: object
    num_evals: jax.Array


class StepsExhaustedError(ValueError):
    """An adaptive solve ran out of ``max_steps`` (the one-line message names the solver)."""


def check_successful(solver: Solver, successful, what: str = "the ODE solve") -> None:
    """Host-side: raise a one-line ``StepsExhaustedError`` (a ValueError) naming the solver and
    ``max_steps`` if a solve of ``integrate_status`` stopped before t1 (``successful`` False)."""
    if not bool(successful):
        raise StepsExhaustedError(
            f"{what} with Solver(name={solver.name!r}) ran out of steps: max_steps="
            f"{solver.max_steps} were not enough to reach the end time (rtol={solver.rtol:g}, "
            f"atol={solver.atol:g}); raise max_steps, loosen the tolerances or use a "
            "fixed-step solver")


@contextmanager
def steps_exhausted_as_error(solver: Solver, what: str = "the ODE solve"):
    """Within: an adaptive solve that runs out of ``max_steps`` inside a compiled computation
    (diffrax's runtime error, e.g. under ``jit``/``grad`` of a sampler or the generation)
    becomes ``check_successful``'s one-line ValueError."""
    callback_log = logging.getLogger("jax._src.callback")  # it logs the callback's traceback
    level = callback_log.level
    callback_log.setLevel(logging.CRITICAL)
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if "maximum number of solver steps" not in str(e):
            raise
        check_successful(solver, False, what)
    finally:
        callback_log.setLevel(level)


def _fixed_step(name: str) -> Callable:
    def euler(f, t, y, h, args):
        return _axpy(h, f(t, y, args), y)

    def midpoint(f, t, y, h, args):
        k1 = f(t, y, args)
        return _axpy(h, f(t + 0.5 * h, _axpy(0.5 * h, k1, y), args), y)

    def rk4(f, t, y, h, args):
        return _rk4_from(f, t, y, f(t, y, args), h, args)

    return {"euler": euler, "midpoint": midpoint, "rk4": rk4}[name]


def _rk4_from(f, t, y, k1, h, args):
    """One classic RK4 step from (t, y) with its first stage k1 = f(t, y) given."""
    k2 = f(t + 0.5 * h, _axpy(0.5 * h, k1, y), args)
    k3 = f(t + 0.5 * h, _axpy(0.5 * h, k2, y), args)
    k4 = f(t + h, _axpy(h, k3, y), args)
    incr = jax.tree_util.tree_map(
        lambda a, b, c, d: (a + 2 * b + 2 * c + d) / 6, k1, k2, k3, k4
    )
    return _axpy(h, incr, y)


def adams_bashforth(f, y0, t0, t1, name: str, num_steps: int, args=None,
                    checkpoint: bool = False):
    """y(t1) of a uniform-step k-step Adams–Bashforth solve (``ADAMS_BASHFORTH[name]``).

    Steps 0 … k − 2 are RK4 steps whose first stages f(t_j, y_j) start the history; each later
    step is y_{n+1} = y_n + h Σ_j β_j f_{n−j} and costs one evaluation, f(t_{n+1}, y_{n+1})
    (not made after the last step). ``y0`` any pytree of float arrays; the loop is a
    ``fori_loop`` over pytrees, so the fused kernel runs the same code on its coordinate rows.
    """
    beta = ADAMS_BASHFORTH[name]
    k = len(beta)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(y0))
    t0 = jnp.asarray(t0, dtype)
    h = (jnp.asarray(t1, dtype) - t0) / num_steps
    history = []  # newest first
    y = y0
    for j in range(k - 1):
        t = t0 + j * h
        history.insert(0, f(t, y, args))
        y = _rk4_from(f, t, y, history[0], h, args)
    history.insert(0, f(t0 + (k - 1) * h, y, args))

    def update(y, hist):
        return _axpy(h, _combine(beta, hist), y)

    def body(i, carry):
        y, hist = carry
        y = update(y, hist)
        return y, (f(t0 + (i + 1).astype(dtype) * h, y, args),) + hist[:-1]

    if checkpoint:
        body = jax.checkpoint(body)
    y, hist = jax.lax.fori_loop(k - 1, num_steps - 1, body, (y, tuple(history)))
    return update(y, hist)


# Dormand–Prince 5(4) tableau (Dormand & Prince 1980): nodes, stage coefficients, 5th-order
# weights; the 7th stage is at (t + h, y_{n+1}), so it is the next step's first (FSAL).
_DP5_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_DP5_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_DP5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)


def _dp5_step(f, t, y, k1, h, args):
    """One fixed Dormand–Prince 5 step from (t, y) with f(t, y) = k1: (y_{n+1}, f(t+h, y_{n+1}))."""
    ks = [k1]
    for c, a in zip(_DP5_C[1:], _DP5_A[1:], strict=True):
        incr = _combine(a, ks)
        ks.append(f(t + c * h, _axpy(h, incr, y), args))
    y1 = _axpy(h, _combine(_DP5_B, ks), y)
    return y1, f(t + h, y1, args)


def _combine(weights, ks):
    """Σ_i w_i k_i over pytrees, skipping zero weights."""
    terms = [(w, k) for w, k in zip(weights, ks, strict=False) if w != 0.0]
    return jax.tree_util.tree_map(lambda *leaves: sum(w * x for (w, _), x in zip(terms, leaves,
                                                                                 strict=True)),
                                  *[k for _, k in terms])


def _axpy(a, x, y):
    return jax.tree_util.tree_map(lambda xi, yi: yi + a * xi, x, y)


def integrate(
    f: Callable, y0, t0: float, t1: float, solver: Solver | None = None, args=None
) -> Solution:
    """Solve dy/dt = f(t, y, args) from t0 to t1 (t1 < t0 integrates backwards).

    ``y0`` may be any pytree of float arrays; ``f`` must return the same structure. An adaptive
    solve that runs out of ``max_steps`` raises inside the computation (diffrax's runtime
    error); ``integrate_status`` reports it instead.
    """
    return _integrate(f, y0, t0, t1, solver, args, throw=True)[0]


def integrate_status(
    f: Callable, y0, t0: float, t1: float, solver: Solver | None = None, args=None
) -> tuple[Solution, jax.Array]:
    """``integrate`` that does not throw: (Solution, successful), ``successful`` a bool array,
    False where an adaptive solve ran out of ``max_steps`` (report it on the host with
    ``check_successful``); always True for a fixed-step solver."""
    return _integrate(f, y0, t0, t1, solver, args, throw=False)


def _integrate(f, y0, t0, t1, solver, args, *, throw: bool) -> tuple[Solution, jax.Array]:
    solver = Solver() if solver is None else solver
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a bayesiamp_jax.Solver, got {solver!r}")
    if solver.adaptive:
        return _integrate_adaptive(f, y0, t0, t1, solver, args, throw)
    return _integrate_fixed(f, y0, t0, t1, solver, args), jnp.asarray(True)


def _integrate_fixed(f, y0, t0, t1, solver: Solver, args) -> Solution:
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(y0))
    n = solver.num_steps
    evals = jnp.asarray(solver.num_evals, jnp.int32)
    if solver.name in ADAMS_BASHFORTH:
        return Solution(adams_bashforth(f, y0, t0, t1, solver.name, n, args, solver.checkpoint),
                        evals)
    if solver.name == "dp5":
        return Solution(_integrate_dp5(f, y0, t0, t1, solver, args, dtype), evals)
    step = _fixed_step(solver.name)
    if solver.checkpoint:
        step = jax.checkpoint(step, static_argnums=(0,))
    if solver.power == 1.0:
        # uniform steps, computed as t0 + i h (kept exactly: results must not change)
        h = (jnp.asarray(t1, dtype) - jnp.asarray(t0, dtype)) / n

        def body(y, i):
            t = t0 + i * h
            return step(f, t, y, h, args), None

        y1, _ = jax.lax.scan(body, y0, jnp.arange(n, dtype=dtype))
        return Solution(y1, evals)

    def body_nodes(y, th):
        t, h = th
        return step(f, t, y, h, args), None

    y1, _ = jax.lax.scan(body_nodes, y0, _steps(t0, t1, n, solver.power, dtype))
    return Solution(y1, evals)


def step_nodes(t0, t1, num_steps: int, power: float = 1.0) -> jax.Array:
    """The N + 1 node times t_0 = t0, ..., t_N = t1 of a fixed-step solve, shape (N + 1,).

    t_k = t_d + (t_o − t_d) u_k^p with t_d the endpoint nearer to 0, u_k = k/N counted from it.
    """
    u = jnp.arange(num_steps + 1) / num_steps
    t0, t1 = jnp.asarray(t0, u.dtype), jnp.asarray(t1, u.dtype)
    dense_at_t1 = t1 + (t0 - t1) * (1.0 - u) ** power
    dense_at_t0 = t0 + (t1 - t0) * u**power
    nodes = jnp.where(jnp.abs(t1) <= jnp.abs(t0), dense_at_t1, dense_at_t0)
    return nodes.at[0].set(t0).at[-1].set(t1)


def _steps(t0, t1, n, power, dtype):
    """(start times (N,), step sizes (N,)) of the scheduled nodes, in ``dtype``."""
    nodes = step_nodes(t0, t1, n, power)
    return nodes[:-1].astype(dtype), (nodes[1:] - nodes[:-1]).astype(dtype)


def _integrate_dp5(f, y0, t0, t1, solver: Solver, args, dtype):
    step = _dp5_step
    if solver.checkpoint:
        step = jax.checkpoint(step, static_argnums=(0,))

    def body(carry, th):
        y, k1 = carry
        t, h = th
        return step(f, t, y, k1, h, args), None

    ts, hs = _steps(t0, t1, solver.num_steps, solver.power, dtype)
    (y1, _), _ = jax.lax.scan(body, (y0, f(ts[0], y0, args)), (ts, hs))
    return y1


def _integrate_adaptive(f, y0, t0, t1, solver: Solver, args, throw: bool):
    norm = optx.max_norm if solver.norm == "max" else optx.rms_norm
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f),
        ADAPTIVE[solver.name](),
        t0=t0,
        t1=t1,
        dt0=None,
        y0=y0,
        args=args,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(rtol=solver.rtol, atol=solver.atol, norm=norm),
        max_steps=solver.max_steps,
        throw=throw,
    )
    y1 = jax.tree_util.tree_map(lambda y: y[0], sol.ys)
    # Dopri5 and Tsit5 are FSAL: 6 new evaluations per attempted (accepted or rejected) step,
    # plus 1 at t0 (counted with a host callback on diffrax 0.7; tests/test_integrate.py).
    evals = _EVALS_PER_STEP * sol.stats["num_steps"] + 1
    return Solution(y1, jnp.asarray(evals, jnp.int32)), diffrax.is_successful(sol.result)
