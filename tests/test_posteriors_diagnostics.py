"""Chain diagnostics against chains with known autocorrelation and known non-stationarity."""

import numpy as np
import pytest

from bayesiamp_jax.posteriors import PosteriorDraws
from bayesiamp_jax.posteriors.diagnostics import chain_statistics, draws_diagnostics


def _ar1(rng, rho, shape):
    """AR(1) chains x_t = ρ x_{t−1} + sqrt(1 − ρ²) ε_t along axis 1: ESS = S (1 − ρ)/(1 + ρ)."""
    x = np.empty(shape)
    x[:, 0] = rng.standard_normal((shape[0],) + shape[2:])
    for t in range(1, shape[1]):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal(
            (shape[0],) + shape[2:])
    return x


def test_ess_and_rhat_of_known_chains():
    rng = np.random.default_rng(0)
    S = 4000
    iid = chain_statistics(rng.standard_normal((2, S, 3)))
    assert iid["ess"]["median"] == pytest.approx(S, rel=0.15)
    assert iid["split_rhat"]["max"] < 1.01
    ar = chain_statistics(_ar1(rng, 0.6, (2, S, 3)))
    assert ar["ess"]["median"] == pytest.approx(S * 0.4 / 1.6, rel=0.2)
    # a chain whose second half sits one standard deviation higher has not mixed
    shifted = rng.standard_normal((1, S, 2))
    shifted[:, S // 2:] += 1.0
    assert chain_statistics(shifted)["split_rhat"]["max"] > 1.1
    # a constant quantity has no ESS: counted as undefined, left out of the median
    mixed = np.concatenate([rng.standard_normal((1, S, 3)), np.ones((1, S, 1))], axis=2)
    stats = chain_statistics(mixed)
    assert stats["ess"]["undefined"] == 1 and stats["ess"]["median"] == pytest.approx(S, rel=0.15)
    with pytest.raises(ValueError, match="draws >= 4"):
        chain_statistics(np.zeros((2, 3)))


def test_draws_diagnostics_collects_acceptance_divergences_and_losses():
    rng = np.random.default_rng(1)
    runs = [PosteriorDraws({"w": np.zeros((50, 2))}, "nuts",
                           {"accept_prob": np.full(50, 0.5 + 0.1 * r),
                            "diverging": np.arange(50) < r, "loss": rng.standard_normal(50)})
            for r in range(3)]
    d = draws_diagnostics(runs, {"5": rng.uniform(size=(3, 50, 5, 5))})
    assert d["num_draws"] == 50
    assert d["acceptance"] == pytest.approx([0.5, 0.6, 0.7])
    assert d["divergences"] == [0, 1, 2]
    assert d["loss"]["ess"]["median"] == pytest.approx(50, rel=0.5)
    assert set(d["bin_fractions"]) == {"5"}
    vi = draws_diagnostics([PosteriorDraws({"w": np.zeros((3, 2))}, "vi", {"losses": [1.0]})])
    assert vi == {"num_draws": 3}  # too few draws for ESS, no sampler statistics
