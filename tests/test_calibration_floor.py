"""The finite-S floor of the MAD against its closed-form large-sample limit."""

import numpy as np
import pytest

from bayesiamp_jax.evaluation.calibration import NOMINAL_LEVELS, mad_floor


def test_uniform_floor_tends_to_the_interpolation_bias():
    # uniform draws: E[coverage(c)] = c (S - 1)/(S + 1) exactly, so MAD -> 2 mean(c)/(S + 1)
    S = 9
    limit = 2 * NOMINAL_LEVELS.mean() / (S + 1)
    floor = mad_floor(S, 4, 2000, distribution="uniform", num_repeats=4)
    assert floor.mean == pytest.approx(limit, rel=0.05)
    # fewer cells add noise on top; more draws lower the floor
    assert mad_floor(S, 1, 10, distribution="uniform").mean > floor.mean
    assert mad_floor(40, 4, 2000, distribution="uniform", num_repeats=4).mean < 0.5 * floor.mean
    assert mad_floor(S, 4, 2000, num_repeats=4) == mad_floor(S, 4, 2000, num_repeats=4)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="num_draws must be an integer >= 2"):
        mad_floor(1, 1, 10)
    with pytest.raises(ValueError, match="distribution"):
        mad_floor(5, 1, 10, distribution="cauchy")
    assert np.isfinite(mad_floor(2, 1, 1).mean)
