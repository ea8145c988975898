"""Any number of observable values through ``evaluation.evaluate`` (k = 1 and k = 3).

The field v = θ x with θ = 0 is the identity flow, so every draw generates exactly the standard
normal in d = 3; its cells of the exact quantile grids (normal coordinates, the χ₃ radius) have
probability 1/n^k, and a draw's fractions of n fresh points are multinomial. For such draws the
amplification module's docstring gives E[N_eq] = n · n_Q/(n_Q − 1) · S/(S − 3) + n_Q/(S − 3)
(the ddof-0 paper estimator over S draws) — the answer these tests compare with.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from test_evaluation_generate import ScaleField  # v = θ x, cheap to compile

import bayesiamp_jax as bj
from bayesiamp_jax import datasets, observables
from bayesiamp_jax import evaluation as ev
from bayesiamp_jax.posteriors import sample_adammcmc_cnf


def Identity3():  # noqa: N802  (v = θ x with θ = 0: the identity flow in d = 3)
    return ScaleField(data_dim=3, cond_dim=0)


NORMAL = datasets.Marginal(scipy.stats.norm.cdf, scipy.stats.norm.ppf)
CHI3 = datasets.Marginal(scipy.stats.chi(3).cdf, scipy.stats.chi(3).ppf)
RUNS, DRAWS, PER_CELL = 6, 20, 40


def radius(x):
    return jnp.linalg.norm(x, axis=-1, keepdims=True)


CASES = {
    "k=3 coordinates": (observables.Coordinates((0, 1, 2)), (NORMAL, NORMAL, NORMAL), (2, 3)),
    "k=1 radius": (observables.Function(radius, ("r",)), (CHI3,), (4, 8)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_truth_ensemble_of_any_observable(case):
    obs, marginals, scaled = CASES[case]
    names = obs.names

    def binning(n):
        return ev.exact_quantile_binning(n, marginals, names)

    params = {"theta": jnp.zeros((RUNS, DRAWS))}
    problem = bj.datasets.Problem(obs, marginals, condition=bj.data.DEFAULT_R_MEAN)
    plan = ev.Plan(calibration_bins=(2,), num_samples=4000, scaled_bins=scaled,
                   samples_per_cell=PER_CELL, fit_bins=None,
                   solver=bj.Solver("rk4", num_steps=1))
    res = ev.evaluate(jax.random.key(3), Identity3(), params, problem, plan, num_train=1000,
                      has_run_axis=True, progress=False)
    k = len(names)
    for n in scaled:
        r = res.scaled[binning(n).label]
        n_q = n**k
        assert r.shape == (n,) * k and r.num_samples == PER_CELL * n_q
        expected = PER_CELL * n_q * n_q / (n_q - 1) * DRAWS / (DRAWS - 3) + n_q / (DRAWS - 3)
        n_eq = np.asarray(r.amplification.n_eq)
        sem = n_eq.std(ddof=1) / np.sqrt(RUNS)
        assert abs(n_eq.mean() - expected) < 4 * sem + 0.02 * expected, (n, n_eq, expected)
    # the same-noise grid: every draw sees the same points, so all draws agree exactly
    cal = res.same_noise[binning(2).label]
    assert cal.shape == (2,) * k
    summary = ev.summarise(res)
    assert summary["observables"] == list(names)
    figs = ev.plot_summary(summary)
    assert {"amplification", "coverage"} <= set(figs)


def test_pooled_fractions_match_the_exact_cells():
    obs, marginals, _ = CASES["k=3 coordinates"]
    b = ev.exact_quantile_binning(3, marginals, obs.names)
    hist = ev.histogram_scaled(jax.random.key(1), Identity3(),
                               {"theta": jnp.zeros(8)}, [b], samples_per_cell=200,
                               solver=bj.Solver("rk4", num_steps=1), observable=obs,
                               progress=False)
    counts = hist.counts[0].sum(axis=(0, 1))
    total = counts.sum()
    p = 1 / 27
    z = (counts / total - p) / np.sqrt(p * (1 - p) / total)
    assert total == 8 * 200 * 27
    assert np.abs(z).max() < 4.5, z


def test_truth_std_restores_calibration_of_an_estimated_truth():
    """Calibrated draws f ~ N(m, σ²) with p_true ~ N(m, σ²) (exchangeable), but only an
    estimate t = p_true + N(0, σ_t²) of the truth is known (a finite reference sample): the
    draws under-cover t unless widened to σ² + σ_t²; widened, t is exchangeable with them (all
    Gaussian) and the MAD falls to the calibrated floor of ``mad_floor``."""
    rng = np.random.default_rng(0)
    runs, draws, cells, sigma, sigma_t = 20, 50, 200, 1.0, 1.0
    m = rng.normal(size=(runs, 1, 1, cells))
    f = m + sigma * rng.normal(size=(runs, draws, 1, cells))
    truth_est = m[:, 0] + sigma * rng.normal(size=(runs, 1, cells)) \
        + sigma_t * rng.normal(size=(runs, 1, cells))
    floor = ev.calibration.mad_floor(draws, runs, cells)
    # one truth per cell shared by the runs: shift each run so its truth is the run-0 truth
    f = f - truth_est[:, None] + truth_est[0][None, None]
    t = truth_est[0]
    plain = ev.calibrate(f, t)
    widened = ev.calibrate(f, t, truth_std=np.full(t.shape, sigma_t))
    assert plain.mad > floor.mean + 10 * floor.std  # too narrow: clearly miscalibrated
    assert abs(widened.mad - floor.mean) < 4 * floor.std + 0.005
    assert np.all(plain.curve <= widened.curve + 1e-12)


def test_non_finite_generation_names_run_and_draw():
    """v = θ x with θ = −10⁴ blows RK4 up to inf in one draw: an error naming run and draw,
    not histograms that silently lose the points."""
    theta = jnp.zeros((2, 3)).at[1, 2].set(-1e4)
    with pytest.raises(FloatingPointError, match=r"of run 1, draw 2 are non-finite") as e:
        ev.histogram_same_noise(jax.random.key(0), ScaleField(), {"theta": theta}, [3], 500,
                                has_run_axis=True, solver=bj.Solver("rk4", num_steps=4),
                                progress=False)
    assert "\n" not in str(e.value)


def test_adaptive_solver_out_of_steps_in_generation_is_one_line():
    field = bj.VectorField(hidden=(8,))
    params = jax.vmap(field.init)(jax.random.split(jax.random.key(0), 2))
    with pytest.raises(ValueError, match=r"generation \(from global draw 0\) with "
                       r"Solver\(name='dopri5'\) ran out of steps: max_steps=2") as e:
        ev.histogram_same_noise(jax.random.key(0), field, params, [3], 64,
                                solver=bj.Solver("dopri5", max_steps=2), progress=False)
    assert "\n" not in str(e.value)


@pytest.mark.slow  # ~15 s CPU: compiles the gradient of a dopri5 solve for one error message
def test_adaptive_solver_out_of_steps_in_the_adammcmc_likelihood_is_one_line():
    field = bj.VectorField(hidden=(8,))
    ring = bj.sample_ring(jax.random.key(1), 64)
    with pytest.raises(ValueError, match=r"AdamMCMC likelihood .* max_steps=2") as e:
        sample_adammcmc_cnf(jax.random.key(1), field, ring.x, ring.c, sigma=0.1, num_samples=2,
                            thinning=1, batch_size=32, solver=bj.Solver("dopri5", max_steps=2),
                            progress=False)
    assert "\n" not in str(e.value)
