"""Any data, any observables: reference-quantile cells, the d-dimensional shell's exact truth, a
truth ensemble's N_eq, refused files, and the ring through the general path — each against an
answer known without the code under test (closed-form laws, binomial errors, order statistics)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import GaussianMorphField

from bayesiamp_jax import data, datasets, flow, observables
from bayesiamp_jax import evaluation as ev
from bayesiamp_jax.integrate import Solver

Z_MAX = 4.5  # max |z| over ≤ 400 cells: P(exceeded) < 400 · 6.8e-6 ≈ 3e-3 for a true law
RK4 = Solver("rk4", 20)


def _radius_cdf(r):
    """r − 4 ~ Gamma(2, rate 2): F(u) = 1 − e^{−2u}(1 + 2u), written out."""
    u = np.clip(np.asarray(r, np.float64) - 4.0, 0.0, None)
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(u), 1.0, 1.0 - np.exp(-2.0 * u) * (1.0 + 2.0 * u))


def _cos_cdf(c, dim):
    """cos θ of a uniform direction: density ∝ (1 − c²)^{(d−3)/2}; d = 3 uniform, d = 5
    F(c) = 1/2 + 3/4 (c − c³/3), written out."""
    c = np.clip(np.asarray(c, np.float64), -1.0, 1.0)
    return {3: (1.0 + c) / 2.0, 5: 0.5 + 0.75 * (c - c**3 / 3.0)}[dim]


# ------------------------------------------------------- a. reference-sample quantile cells


@pytest.fixture(scope="module")
def ring_reference():
    n_ref, n = 40_000, 10
    x = data.sample_ring(jax.random.key(11), n_ref).x
    values = observables.values(observables.Polar(), x)
    return n_ref, n, ev.reference_quantile_binning(n, values, ("r", "phi"))


def test_reference_quantile_cells_hold_equal_truth_probability(ring_reference):
    n_ref, n, b = ring_reference
    assert b.shape == (n, n) and b.names == ("r", "phi") and b.label == f"{n}x{n}"
    assert b.edges[0][0] == -np.inf and b.edges[0][-1] == np.inf
    # exact ring probability of every cell at the estimated edges: 1/n² within binomial error
    p = ev.ring_cell_probabilities(*b.edges)
    q = 1.0 / n**2
    assert np.max(np.abs(p - q) / np.sqrt(q * (1 - q) / n_ref)) < Z_MAX
    # sharper, from order statistics: the truth mass between sample quantiles i/n and (i+1)/n
    # is a uniform spacing ~ Beta(N/n, N − N/n), sd sqrt(p(1 − p)/N) with p = 1/n
    pr = np.diff(_radius_cdf(b.edges[0]))
    pphi = np.diff(np.clip(b.edges[1], 0.0, 2 * np.pi)) / (2 * np.pi)
    sd = np.sqrt((1 / n) * (1 - 1 / n) / n_ref)
    assert np.max(np.abs(pr - 1 / n)) < Z_MAX * sd
    assert np.max(np.abs(pphi - 1 / n)) < Z_MAX * sd
    np.testing.assert_allclose(p, np.outer(pr, pphi), rtol=1e-9)


def test_reference_truth_and_its_standard_error(ring_reference):
    # truth = the reference fraction p̂ per cell, truth_std = sqrt(p̂(1 − p̂)/N): the exact cell
    # probabilities lie within a few truth_std, and the z-scores have unit spread
    n_ref, n, b = ring_reference
    np.testing.assert_allclose(b.truth.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(b.truth_std, np.sqrt(b.truth * (1 - b.truth) / n_ref))
    z = (b.truth - ev.ring_cell_probabilities(*b.edges)) / b.truth_std
    assert np.max(np.abs(z)) < Z_MAX
    # 100 cells: the sample sd of z is 1 ± 0.07 (margins fixed by construction lower it a bit)
    assert 0.75 < np.std(z) < 1.25


# --------------------------------------------------------- b. the shell's exact truth cells


@pytest.mark.parametrize("dim", [3, 5])
def test_shell_cells_match_closed_form_laws_and_a_large_sample(dim):
    n, num = 10, 200_000
    b = datasets.shell_problem(dim).binning(n)
    assert b.names == ("r", "cos_theta") and b.truth_std is None
    np.testing.assert_allclose(b.truth, 1.0 / n**2)
    # interior edges at the closed-form quantiles i/n of r and cos θ
    levels = np.arange(1, n) / n
    np.testing.assert_allclose(_radius_cdf(b.edges[0][1:-1]), levels, atol=1e-12)
    np.testing.assert_allclose(_cos_cdf(b.edges[1][1:-1], dim), levels, atol=1e-12)
    if dim == 3:  # cos θ is uniform on [−1, 1] (Archimedes): ppf(q) = 2q − 1
        np.testing.assert_allclose(b.edges[1][1:-1], 2 * levels - 1, atol=1e-12)
    # a large truth sample fills every cell with 1/n² within binomial error
    sample = datasets.sample_shell(jax.random.key(20 + dim), num, dim=dim)
    assert sample.x.shape == (num, dim) and sample.c.shape == (num, 1)
    counts = ev.histogram(observables.values(observables.RadiusCosine(), sample.x), b)
    assert counts.sum() == num
    q = 1.0 / n**2
    z = (counts / num - q) / np.sqrt(q * (1 - q) / num)
    assert np.max(np.abs(z)) < Z_MAX
    chi2 = np.sum((counts - num * q) ** 2 / (num * q))
    assert chi2 < scipy.stats.chi2.ppf(0.9999, n**2 - 1)


def test_radius_cosine_observable_matches_numpy():
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    v = np.asarray(observables.values(observables.RadiusCosine(), jnp.asarray(x)))
    r = np.linalg.norm(x.astype(np.float64), axis=1)
    np.testing.assert_allclose(v[:, 0], r, rtol=1e-6)
    np.testing.assert_allclose(v[:, 1], x[:, 0] / r, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ c. a truth ensemble in d = 5


def test_truth_ensemble_in_five_dimensions_is_worth_n_events():
    # S independent truth samples of N shell points binned in n × n cells of probability
    # p = 1/n² each: multinomial fractions, σ² = p(1 − p)/N. With the ddof-0 variance over S
    # Gaussian draws E[1/σ̂²] = S/((S − 3) σ²) and E[μ̂²] = p² + σ²/S, so
    #   E[N_eq] = S/(S − 3) · Σ_j (N p/(1 − p) + 1/S)   (as in test_evaluation_amplification)
    dim, draws, num, n = 5, 50, 20_000, 20
    b = datasets.shell_problem(dim).binning(n)
    x = datasets.sample_shell(jax.random.key(5), draws * num, dim=dim).x
    values = observables.values(observables.RadiusCosine(), x).reshape(draws, num, 2)
    counts = np.stack([ev.histogram(values[s], b) for s in range(draws)])
    assert np.all(counts.sum(axis=(1, 2)) == num)
    p = 1.0 / n**2
    expected = draws / (draws - 3) * n**2 * (num * p / (1 - p) + 1 / draws)
    n_eq = ev.equivalent_events(counts[None] / num, b.truth)
    # relative sd of one run ≈ sqrt(2/((S − 5) n_Q)) = 1.05 %: 4.5 sd
    assert n_eq.shape == (1,)
    np.testing.assert_allclose(n_eq[0], expected, rtol=4.5 * np.sqrt(2 / (45 * n**2)))
    assert abs(n_eq[0] / num - 1.0) < 0.1  # ≈ N: a truth sample is worth itself


# ---------------------------------------------------------------------- d. refused files


BAD_FILES = {
    "nan": (lambda: dict(x=np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]])), "'x'"),
    "inf_c": (lambda: dict(x=np.zeros((3, 2)), c=np.array([1.0, np.inf, 0.0])), "'c'"),
    "x_1d": (lambda: dict(x=np.zeros(5)), "'x'"),
    "x_3d": (lambda: dict(x=np.zeros((5, 2, 2))), "'x'"),
    "c_length": (lambda: dict(x=np.zeros((5, 2)), c=np.zeros((4, 1))), "'c'"),
    "no_x": (lambda: dict(y=np.zeros((5, 2))), "'x'"),
    "strings": (lambda: dict(x=np.array([["a", "b"]])), "'x'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_npz_is_refused_naming_file_and_array(tmp_path, case):
    make, array = BAD_FILES[case]
    path = tmp_path / f"{case}.npz"
    np.savez(path, **make())
    with pytest.raises(ValueError) as err:
        datasets.load_npz(path)
    msg = str(err.value)
    assert str(path) in msg and array in msg and "\n" not in msg, msg


@pytest.mark.parametrize("case", ["npy_file", "c_zero_columns", "beyond_float32"])
def test_npy_file_empty_c_and_overflow_are_refused(tmp_path, case):
    if case == "npy_file":  # an .npy array, not an .npz archive
        path = tmp_path / "x.npy"
        np.save(path, np.zeros((5, 2)))
    elif case == "c_zero_columns":
        path = tmp_path / "c0.npz"
        np.savez(path, x=np.zeros((5, 2)), c=np.zeros((5, 0)))
    else:  # finite in float64, not representable in float32: not called "NaN or inf"
        path = tmp_path / "big.npz"
        np.savez(path, x=np.full((5, 2), 1e300))
    with pytest.raises(ValueError) as err:
        datasets.load_npz(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    if case != "npy_file":
        assert ("'c'" if case == "c_zero_columns" else "'x'") in msg
    if case == "beyond_float32":
        assert "NaN" not in msg


def test_damaged_or_short_npz_is_refused_naming_the_file(tmp_path):
    good = tmp_path / "good.npz"
    x = np.arange(20.0, dtype=np.float32).reshape(10, 2)
    np.savez(good, x=x, c=np.full(10, 4.0))
    sample = datasets.load_npz(good, 6, dim=2, cond_dim=1)
    np.testing.assert_array_equal(sample.x, x[:6])
    np.testing.assert_array_equal(sample.c, np.full((6, 1), 4.0))
    raw = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"not an archive at all" * 10)
    for name in ("truncated.npz", "garbage.npz", "missing.npz"):
        with pytest.raises(ValueError) as err:
            datasets.load_npz(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value)
    checks = [({"num": 11}, r"10 events in 'x', fewer than the 11"),
              ({"dim": 3}, r"'x' .* has d = 2, expected 3"),
              ({"cond_dim": 2}, r"'c' with k = 1, expected k = 2")]
    for kwargs, match in checks:
        with pytest.raises(ValueError, match=match) as err:
            datasets.load_npz(good, **kwargs)
        assert str(good) in str(err.value)


# -------------------------------------------------- e. the ring through the general path


def _morph_draws(draws=6):
    rng = np.random.default_rng(3)
    mu = rng.normal(0.0, 0.3, (draws, 2))
    s = rng.uniform(4.0, 5.0, (draws, 2))
    return jax.vmap(GaussianMorphField.params)(jnp.asarray(mu), jnp.asarray(s))


GENERAL_RING = datasets.Problem(observables.Polar(),
                                (datasets.ring_radius(), datasets.uniform_angle()), condition=4.0)
EVAL_PLAN = ev.Plan(calibration_bins=(3, 4), num_samples=600, scaled_bins=(2, 3, 4),
                    samples_per_cell=30, fit_bins=None, chunk_size=256, closure_repeats=5,
                    differential_samples=0)


def _same_results(a, b):
    for phase in ("same_noise", "scaled"):
        ra, rb = getattr(a, phase), getattr(b, phase)
        assert set(ra) == set(rb)
        for label in ra:
            x, y = ra[label], rb[label]
            np.testing.assert_array_equal(x.amplification.n_eq, y.amplification.n_eq)
            np.testing.assert_array_equal(x.calibration.mad, y.calibration.mad)
            np.testing.assert_array_equal(x.calibration.curve, y.calibration.curve)
            np.testing.assert_array_equal(x.truth, y.truth)
            if x.amplification_corrected is not None:
                np.testing.assert_array_equal(x.amplification_corrected.n_eq,
                                              y.amplification_corrected.n_eq)
    np.testing.assert_array_equal(a.fit.b, b.fit.b)


def test_general_ring_binning_equals_the_paper_grid():
    for n in (2, 5, 17):
        ring, general = ev.quantile_binning(n), GENERAL_RING.binning(n)
        assert general.label == ring.label and general.shape == ring.shape
        for e_ring, e_general in zip(ring.edges, general.edges, strict=True):
            np.testing.assert_array_equal(e_general, e_ring)
        np.testing.assert_array_equal(general.truth, ring.truth)


def test_ring_through_the_general_path_equals_the_ring_path():
    field, draws = GaussianMorphField(), _morph_draws()
    key = jax.random.key(30)
    default = ev.evaluate(key, field, draws, datasets.ring_problem(4.0), EVAL_PLAN,
                          num_train=1000, progress=False)
    general = ev.evaluate(key, field, draws, GENERAL_RING, EVAL_PLAN, num_train=1000,
                          progress=False)
    _same_results(default, general)
    # the counts themselves, default int binnings against the general binnings
    ring = ev.histogram_same_noise(key, field, draws, [3, 4], 600, chunk_size=256,
                                   progress=False)
    gen = ev.histogram_same_noise(key, field, draws, [GENERAL_RING.binning(3),
                                                      GENERAL_RING.binning(4)], 600,
                                  chunk_size=256, progress=False,
                                  observable=observables.Polar())
    for a, b in zip(ring.counts, gen.counts, strict=True):
        np.testing.assert_array_equal(a, b)
    assert ring.counts[1].sum() == 6 * 600  # every point lies in a cell


def test_per_point_conditions_equal_to_the_scalar_give_the_same_histograms(tiny_field):
    field, params = tiny_field  # a VectorField: c is an input of the network
    draws = jax.tree_util.tree_map(lambda a: jnp.stack([a, 0.9 * a]), params)
    key, num, m = jax.random.key(31), 500, 7
    # varying per-point conditions, by hand: point i uses row i mod M and noise
    # normal(fold_in(key, i)) (the documented convention); draw 0 is ``params``
    c = np.linspace(3.0, 6.0, m, dtype=np.float32)[:, None]
    idx = np.arange(num)
    z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (2,)))(idx)
    x = flow.decode(field, params, z, jnp.asarray(c[idx % m]), RK4)
    # cells the untrained field fills: quantiles of these points in (x0, x1)
    obs = observables.Coordinates((0, 1))
    b = ev.reference_quantile_binning(4, observables.values(obs, x), obs.names)
    kw = dict(chunk_size=128, progress=False, observable=obs)
    varying = ev.histogram_same_noise(key, field, draws, [b], num, c=c, **kw)
    expected = ev.histogram(observables.values(obs, x), b)
    assert np.abs(varying.counts[0][0, 0] - expected).sum() <= 2  # float rounding at an edge
    # per-point conditions all equal to the scalar: the same histograms
    same = ev.histogram_same_noise(key, field, draws, [b], num, c=np.full((m, 1), 4.0), **kw)
    scalar = ev.histogram_same_noise(key, field, draws, [b], num, c=4.0, **kw)
    np.testing.assert_array_equal(same.counts[0], scalar.counts[0])
    assert scalar.counts[0].sum() == 2 * num  # outer edges ±inf: every point in a cell
    assert not np.array_equal(varying.counts[0][0, 0], scalar.counts[0][0, 0])


def test_evaluate_with_per_point_conditions_equals_scalar():
    field, draws = GaussianMorphField(), _morph_draws()
    key = jax.random.key(32)
    per_point = GENERAL_RING._replace(condition=np.full((5, 1), 4.0))
    _same_results(ev.evaluate(key, field, draws, GENERAL_RING, EVAL_PLAN, num_train=1000,
                              progress=False),
                  ev.evaluate(key, field, draws, per_point, EVAL_PLAN, num_train=1000,
                              progress=False))


# ------------------------------------------------------------- f. the shell's sampler, density


def test_two_dimensional_shell_is_the_ring_point_for_point():
    key = jax.random.key(40)
    shell, ring = datasets.sample_shell(key, 1000, dim=2), data.sample_ring(key, 1000)
    np.testing.assert_array_equal(shell.x, ring.x)
    np.testing.assert_array_equal(shell.c, ring.c)
    x = shell.x[:50]
    np.testing.assert_allclose(datasets.shell_log_prob(x), data.truth_log_prob(x), rtol=1e-6)


def test_shell_density_is_normalised_in_three_dimensions():
    # ∫ p dx over the cube [−L, L]³ (P(|x| > L) = e^{−16}·17 ≈ 2e-6 for L = 12) by uniform
    # Monte Carlo: (2L)³ · mean p(u), with its standard error
    half, num = 12.0, 1_000_000
    u = jax.random.uniform(jax.random.key(41), (num, 3), minval=-half, maxval=half)
    w = (2 * half) ** 3 * np.exp(np.asarray(datasets.shell_log_prob(u), np.float64))
    se = w.std() / np.sqrt(num)
    assert abs(w.mean() - 1.0) < Z_MAX * se and se < 0.01
    # and the density of the radius is the Gamma law: E[|x|] = 4 + 1 under p
    r = np.linalg.norm(np.asarray(u, np.float64), axis=1)
    mean_r = np.sum(w * r) / np.sum(w)
    assert abs(mean_r - 5.0) < 0.05
