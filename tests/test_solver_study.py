"""benchmarks.solver_study's helpers: candidate labels and the shell's cells against numpy."""

import jax
import numpy as np
import pytest

from bayesiamp_jax import Solver, datasets
from benchmarks import solver_study


def test_labels_parse_back_to_their_solvers():
    for s in (Solver("rk4", 20), Solver("ab4", 60), Solver("rk4", 16, power=0.8),
              Solver("dopri5", rtol=1e-4, atol=1e-5)):
        assert solver_study.parse(solver_study.label(s)) == s
    with pytest.raises(ValueError, match="--candidates: expected a label like 'rk4-20'"):
        solver_study.parse("rk4")


def test_shell_cells_are_numpy_histogram_cells():
    """Flat cells of 4-d shell points on the exact 6 × 6 (r, cos θ) grid: their counts equal
    numpy.histogramdd of the float64 observable on the same edges."""
    problem = datasets.shell_problem(4)
    x = np.asarray(problem.sampler(jax.random.key(0), 5_000).x, np.float64)
    cells = solver_study.problem_cells(problem)(x, 6)
    r = np.linalg.norm(x, axis=-1)
    edges = problem.binning(6).edges
    expected, _ = np.histogramdd(np.stack([r, x[:, 0] / r], -1),
                                 bins=[np.asarray(e) for e in edges])
    np.testing.assert_array_equal(np.bincount(cells, minlength=36).reshape(6, 6), expected)
