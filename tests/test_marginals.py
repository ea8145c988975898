"""Generated vs reference marginals (experiments.marginals) and their figure.

Answers known independently: a field with zero weights transports nothing, so every draw
generates exactly N(0, 1) events (closed-form bin probabilities); pulls of held-out fractions
from a law drawn like the posterior draws have unit width (simulation of the null)."""

from types import SimpleNamespace

import jax
import numpy as np
import pytest
from scipy import stats

import bayesiamp_jax as bj
from bayesiamp_jax import evaluation as ev
from bayesiamp_jax.integrate import Solver
from experiments import marginals


def test_pulls_have_unit_width_under_the_null():
    rng = np.random.default_rng(0)
    p = np.full(40, 1 / 40)
    sigma = 0.3 * p  # the posterior's spread per bin
    draws = p + sigma * rng.standard_normal((4000, 40))  # (S, B)
    lo, mid, hi = marginals.band(draws)
    widths = []
    for _ in range(200):  # a truth drawn like the draws, held-out events from it
        q = np.clip(p + sigma * rng.standard_normal(40), 0, None)
        held = rng.multinomial(5000, q / q.sum()) / 5000
        widths.append(np.std(marginals.pulls(mid, lo, hi, held, 5000)))
    assert np.mean(widths) == pytest.approx(1.0, abs=0.05)


@pytest.fixture(scope="module")
def normal_study():
    field = bj.VectorField(data_dim=2, cond_dim=0, hidden=(8,))
    zero = jax.tree_util.tree_map(np.zeros_like, field.init(jax.random.key(0)))
    params = jax.tree_util.tree_map(lambda a: np.stack([a] * 6), zero)  # S = 6 draws
    rng = np.random.default_rng(1)
    problem = bj.datasets.reference_problem(bj.observables.Coordinates((0, 1)),
                                            bj.datasets.Sample(rng.standard_normal((100_000, 2)),
                                                               None))
    held = SimpleNamespace(x=rng.standard_normal((4000, 2)), c=np.zeros((4000, 0)))
    out = marginals.marginals_summary(jax.random.key(2), field, [params], problem, held,
                                      c=None, solver=Solver("euler", 2), num_events=4000,
                                      num_bins=20)
    return out


def test_generated_marginals_of_a_zero_field_are_normal(normal_study):
    m = normal_study
    assert m["names"] == ["x0", "x1"] and m["num_draws"] == 6 and m["num_holdout"] == 4000
    for j in range(2):
        edges = np.asarray(m["edges"][j])
        exact = np.diff(stats.norm.cdf(edges))  # N(0, 1) bin probabilities
        lo, mid, hi = np.asarray(m["band"][j])
        assert np.all(lo <= mid) and np.all(mid <= hi)
        sd = np.sqrt(exact * (1 - exact) / 4000)  # one draw's binomial noise
        assert np.max(np.abs(mid - exact) / sd) < 4.5
        assert np.max(np.abs(np.asarray(m["reference"][j]) - exact)
                      / np.sqrt(exact / 100_000)) < 4.5
        assert np.asarray(m["holdout"][j]).sum() == pytest.approx(exact.sum(), abs=0.01)
        assert 0.4 < m["pull_width"][j] < 1.5  # same law; the band includes generation noise


def test_marginals_figure_draws_every_value(normal_study):
    fig = ev.plot_marginals({"zero field": {"marginals": normal_study}, "none": {}})
    axes = fig.get_axes()
    assert len(axes) == 3 * 2  # band, ratio and pull panel per value
    assert [ax.get_xlabel() for ax in axes[-2:]] == ["x0", "x1"]
