"""ODE solvers against closed-form solutions: convergence order, tolerance, norms, direction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesiamp_jax.integrate import Solver, integrate

# dy/dt = cos(t) y  =>  y(t) = y(t0) exp(sin t − sin t0); time-dependent, so stage times matter.
RATES = jnp.array([0.5, 1.0, 2.0])


def f_exp_sin(t, y, args):
    return jnp.cos(t) * args * y


def exact_exp_sin(y0, t0, t1, rates=RATES):
    return np.asarray(y0) * np.exp(np.asarray(rates) * (np.sin(t1) - np.sin(t0)))


@jax.jit
def _solve_fixed(y0, t0, t1):
    """Every fixed-step solver at 8 and 16 steps, in one compiled program."""
    out = {}
    for name in ("euler", "midpoint", "rk4"):
        for n in (8, 16):
            out[name, n] = integrate(f_exp_sin, y0, t0, t1, Solver(name, n), RATES).y1
    return out


@pytest.fixture(scope="module")
def fixed_solutions():
    y0 = jnp.ones(3)
    return _solve_fixed(y0, 0.0, 2.0), exact_exp_sin(y0, 0.0, 2.0)


@pytest.mark.parametrize("name, order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_step_convergence_order(fixed_solutions, name, order):
    sols, exact = fixed_solutions
    err8 = np.max(np.abs(np.asarray(sols[name, 8]) - exact))
    err16 = np.max(np.abs(np.asarray(sols[name, 16]) - exact))
    assert np.log2(err8 / err16) == pytest.approx(order, abs=0.3)


def test_rk4_accuracy_and_eval_count():
    y0 = jnp.array([1.0, -2.0, 0.5])
    sol = jax.jit(lambda y: integrate(f_exp_sin, y, 0.0, 2.0, Solver("rk4", 32), RATES))(y0)
    np.testing.assert_allclose(sol.y1, exact_exp_sin(y0, 0.0, 2.0), rtol=1e-5)
    assert int(sol.num_evals) == 4 * 32


@pytest.mark.parametrize("name", ["rk4", "dopri5"])
def test_backward_integration_and_pytree_state(name):
    """Integrate t: 2 → 0.5 on a (y, ∫ y dt-like) tuple state; both leaves exact."""
    def f(t, state, args):
        y, _ = state
        return f_exp_sin(t, y, args), jnp.cos(t) * jnp.ones(())

    y_end = jnp.array([1.0, 2.0, 3.0])
    solver = Solver(name, 40, rtol=1e-6, atol=1e-7)
    (y, s), _ = jax.jit(lambda y: integrate(f, (y, jnp.zeros(())), 2.0, 0.5, solver, RATES))(y_end)
    np.testing.assert_allclose(y, exact_exp_sin(y_end, 2.0, 0.5), rtol=1e-5)
    assert float(s) == pytest.approx(np.sin(0.5) - np.sin(2.0), abs=1e-5)


ADAPTIVE_RUNS = [("max", "dopri5"), ("rms", "dopri5"), ("max", "tsit5")]


@pytest.fixture(scope="module")
def stiff_mix():
    """999 constant states and one oscillator y'' = −ω² y (two states), ω = 6, t: 0 → 1.

    Returns {(norm, name): (|error| of y[0], reported num_evals, evaluations counted on host)}.
    """
    omega = 6.0
    calls = []

    def f(t, y, args):
        jax.debug.callback(lambda t: calls.append(1), t)
        dy = jnp.zeros_like(y)
        return dy.at[0].set(y[1]).at[1].set(-omega**2 * y[0])

    y0 = jnp.ones(1001).at[1].set(0.0)
    results = {}
    for norm, name in ADAPTIVE_RUNS:
        calls.clear()
        solver = Solver(name, rtol=1e-3, atol=1e-5, norm=norm)
        sol = jax.jit(lambda y, s=solver: integrate(f, y, 0.0, 1.0, s))(y0)
        jax.block_until_ready(sol)
        jax.effects_barrier()
        err = abs(float(sol.y1[0]) - np.cos(omega * 1.0))
        results[norm, name] = (err, int(sol.num_evals), len(calls))
    return results


@pytest.mark.parametrize("name", ["dopri5", "tsit5"])
def test_adaptive_meets_tolerance_with_max_norm(stiff_mix, name):
    err, _, _ = stiff_mix["max", name]
    assert err < 10 * (1e-5 + 1e-3 * 1.0)


def test_rms_norm_is_looser_than_max_norm_for_a_batch(stiff_mix):
    """RMS over 1001 states dilutes the one hard coordinate: fewer evaluations, larger error."""
    err_max, evals_max, _ = stiff_mix["max", "dopri5"]
    err_rms, evals_rms, _ = stiff_mix["rms", "dopri5"]
    assert evals_rms < evals_max
    assert err_rms > 3 * err_max


@pytest.mark.parametrize("run", ADAPTIVE_RUNS, ids=["-".join(r) for r in ADAPTIVE_RUNS])
def test_adaptive_num_evals_counts_every_field_evaluation(stiff_mix, run):
    """num_evals equals the evaluations counted by a host callback (FSAL: 6 per step + 1)."""
    _, reported, counted = stiff_mix[run]
    assert reported == counted > 7


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="rk5"), r"name must be one of .* got 'rk5'"),
        (dict(num_steps=0), "num_steps must be a positive integer, got 0"),
        (dict(num_steps=2.5), "num_steps must be a positive integer, got 2.5"),
        (dict(rtol=-1.0), "rtol must be a finite number > 0, got -1.0"),
        (dict(atol=float("nan")), "atol must be a finite number > 0"),
        (dict(norm="l2"), r"norm must be one of \['max', 'rms'\], got 'l2'"),
        (dict(max_steps=0), "max_steps must be a positive integer, got 0"),
    ],
)
def test_solver_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Solver(**kwargs)


def test_solver_is_hashable_static_config():
    assert hash(Solver("rk4", 20)) == hash(Solver("rk4", 20))
    assert Solver("rk4", 20) != Solver("rk4", 21)
    with pytest.raises(TypeError, match="solver must be a bayesiamp_jax.Solver, got 'rk4'"):
        integrate(f_exp_sin, jnp.ones(3), 0.0, 1.0, "rk4", RATES)


# ------------------------------------------------------- non-uniform schedules and fixed dp5


def test_step_nodes_are_the_power_schedule():
    """Decode direction (1 → 0): t_k = (1 − k/N)^p, dense near t = 0; encode: (k/N)^p."""
    np.testing.assert_allclose(integrate_nodes(1.0, 0.0, 4, 2.0), [1, 0.5625, 0.25, 0.0625, 0])
    np.testing.assert_allclose(integrate_nodes(0.0, 1.0, 4, 2.0), [0, 0.0625, 0.25, 0.5625, 1])
    np.testing.assert_allclose(integrate_nodes(0.0, 2.0, 4, 1.0), [0, 0.5, 1, 1.5, 2])


def integrate_nodes(t0, t1, n, p):
    from bayesiamp_jax.integrate import step_nodes

    return np.asarray(step_nodes(t0, t1, n, p))


@pytest.mark.parametrize("name, power, order, steps", [
    ("rk4", 2.0, 4, (16, 32)), ("rk4", 3.0, 4, (32, 64)), ("midpoint", 2.0, 2, (32, 64)),
    ("dp5", 1.0, 5, (32, 64)), ("dp5", 2.0, 5, (32, 64)),
])
def test_scheduled_solvers_keep_their_order(name, power, order, steps):
    """In float64, on dy/dt = cos(t) a y (t: 0 → 2, dense near 0), error ratio ≈ 2^order."""
    with jax.enable_x64(True):
        y0 = jnp.ones(3, jnp.float64)
        errs = [np.max(np.abs(np.asarray(
            integrate(f_exp_sin, y0, 0.0, 2.0, Solver(name, n, power=power), RATES).y1)
            - exact_exp_sin(y0, 0.0, 2.0))) for n in steps]
    assert np.log2(errs[0] / errs[1]) == pytest.approx(order, abs=0.35)


def test_scheduled_backward_solve_and_dp5_eval_count():
    """Backward 2 → 0 with the nodes dense near 0; dp5 (FSAL) counts 6 N + 1 evaluations."""
    y_end = jnp.array([1.0, 2.0, 3.0])
    exact = exact_exp_sin(y_end, 2.0, 0.0)
    sol = integrate(f_exp_sin, y_end, 2.0, 0.0, Solver("rk4", 32, power=2.0), RATES)
    np.testing.assert_allclose(sol.y1, exact, rtol=1e-5)
    sol = integrate(f_exp_sin, y_end, 2.0, 0.0, Solver("dp5", 16, power=1.5), RATES)
    np.testing.assert_allclose(sol.y1, exact, rtol=1e-5)
    assert int(sol.num_evals) == 6 * 16 + 1


def test_uniform_power_is_the_uniform_solver():
    """power = 1 must give the uniform-step path bit for bit (evaluation results unchanged)."""
    y0 = jnp.array([1.0, -2.0, 0.5])
    a = integrate(f_exp_sin, y0, 1.0, 0.0, Solver("rk4", 8), RATES).y1
    b = integrate(f_exp_sin, y0, 1.0, 0.0, Solver("rk4", 8, power=1.0), RATES).y1
    np.testing.assert_array_equal(a, b)


def test_bad_power_is_rejected():
    with pytest.raises(ValueError, match="power"):
        Solver("rk4", 8, power=0.0)


# ------------------------------------------------------------------ Adams–Bashforth


@pytest.mark.parametrize("name, order", [("ab2", 2), ("ab3", 3), ("ab4", 4), ("ab5", 5)])
def test_adams_bashforth_order_and_eval_count(name, order):
    """Float64, backward 2 → 0 on dy/dt = cos(t) a y: error ratio ≈ 2^order between 128 and 256
    steps; N + 3 (k − 1) evaluations, counted by a host callback."""
    calls = []

    def counted(t, y, args):
        jax.debug.callback(lambda: calls.append(1))
        return f_exp_sin(t, y, args)

    with jax.enable_x64(True):
        y_end = jnp.array([1.0, 2.0, 3.0], jnp.float64)
        exact = exact_exp_sin(y_end, 2.0, 0.0)
        errs = []
        for n in (128, 256):
            sol = integrate(f_exp_sin, y_end, 2.0, 0.0, Solver(name, n), RATES)
            errs.append(np.max(np.abs(np.asarray(sol.y1) - exact)))
        k = int(name[2])
        assert int(sol.num_evals) == 256 + 3 * (k - 1) == Solver(name, 256).num_evals
        jax.block_until_ready(integrate(counted, y_end, 2.0, 0.0, Solver(name, 10), RATES).y1)
        jax.effects_barrier()
    assert np.log2(errs[0] / errs[1]) == pytest.approx(order, abs=0.3)
    assert len(calls) == 10 + 3 * (k - 1)


def test_adams_bashforth_pytree_state_and_gradient():
    """A (y, ∫ cos) tuple state is solved leaf by leaf, and the checkpointed solve's gradient
    with respect to y(t0) is the closed form exp(a (sin t1 − sin t0)) (a linear ODE)."""
    def f(t, state, args):
        y, _ = state
        return f_exp_sin(t, y, args), jnp.cos(t) * jnp.ones(())

    y0 = jnp.array([1.0, 2.0, 3.0])
    y1, q = integrate(f, (y0, jnp.zeros(())), 0.0, 1.5, Solver("ab4", 64), RATES).y1
    np.testing.assert_allclose(y1, exact_exp_sin(y0, 0.0, 1.5), rtol=1e-5)
    np.testing.assert_allclose(q, np.sin(1.5), rtol=1e-5)
    grad = jax.grad(lambda y: integrate(f_exp_sin, y, 0.0, 1.5, Solver("ab4", 64, checkpoint=True),
                                        RATES).y1.sum())(y0)
    np.testing.assert_allclose(grad, np.exp(np.asarray(RATES) * np.sin(1.5)), rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="ab4", num_steps=3), r"num_steps must be >= 4 for name='ab4'.* got 3"),
    (dict(name="ab3", num_steps=10, power=2.0), r"power must be 1 .* name='ab3', got 2.0"),
])
def test_adams_bashforth_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Solver(**kwargs)
