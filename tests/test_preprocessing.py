"""Per-column preprocessing (``bayesiamp_jax.preprocessing``) and a file study trained on
preprocessed events whose observables and edges stay physical.

Expected values come from outside the code under test: the original events (round trips), numpy
float64 modular arithmetic (periodic wraps), scipy's log-normal density (log-Jacobian), numpy
histograms and quantiles of the raw events (cells and edges).
"""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bayesiamp_jax import observables
from bayesiamp_jax import preprocessing as pp
from bayesiamp_jax.evaluation.binning import histogram, product_binning

PI32 = np.float32(np.pi)  # 3.1415927 > π: the float32 interval is [−PI32, PI32)
RNG = np.random.default_rng(7)


def _events(n, rng=RNG):
    """Collider-like events: pt > 20 (a cut), φ in [−π, π), η, a fraction in (0, 1), and an
    angle in degrees [0, 360)."""
    return np.stack([20.0 + rng.exponential(10.0, n), rng.uniform(-np.pi, np.pi, n),
                     rng.normal(0.0, 1.5, n), rng.beta(2.0, 3.0, n),
                     rng.uniform(0.0, 360.0, n)], 1).astype(np.float32)


SPEC = "logcut:20,periodic,standardise,logit:0:1,periodic:0:360"
EVENTS = _events(4000)


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind, values", [
    ("identity", RNG.normal(3.0, 2.0, 1000)),
    ("standardise", RNG.normal(-50.0, 7.0, 1000)),
    ("log", RNG.lognormal(1.0, 2.0, 1000)),
    ("logcut:20", 20.0 + RNG.exponential(5.0, 1000)),
    ("periodic", RNG.uniform(-np.pi, np.pi, 1000)),
    ("periodic:0:2pi", RNG.uniform(0.0, 2 * np.pi, 1000)),
    ("periodic:0:360", RNG.uniform(0.0, 360.0, 1000)),
    ("logit:-1:2", RNG.uniform(-1.0, 2.0, 1000)),
])
def test_inverse_of_forward_is_the_identity(kind, values):
    x = values.astype(np.float32)
    col = pp.fit(kind, x)
    back = np.asarray(pp.inverse(col, pp.forward(col, x)))
    np.testing.assert_allclose(back, x, rtol=2e-6, atol=4e-6 * np.abs(x).max())


def test_standardised_columns_have_mean_0_and_std_1():
    """shift and scale are numpy's mean and standard deviation of g(x) (float64)."""
    pre = pp.Preprocessing.fit(SPEC, EVENTS)
    z = np.asarray(pre.forward(EVENTS), np.float64)
    g = {0: np.log(EVENTS[:, 0].astype(np.float64) - 20.0), 2: EVENTS[:, 2].astype(np.float64),
         3: scipy.special.logit(EVENTS[:, 3].astype(np.float64))}
    for j, gj in g.items():
        np.testing.assert_allclose(z[:, j], (gj - gj.mean()) / gj.std(), atol=2e-5)
    np.testing.assert_array_equal(z[:, 1], EVENTS[:, 1])  # [−π, π) angles: no transform at all
    back = np.asarray(pre.inverse(pre.forward(EVENTS)))
    np.testing.assert_allclose(back, EVENTS, rtol=3e-6, atol=2e-5)


def test_periodic_wrap_is_exact_at_the_edges():
    col = pp.fit("periodic", RNG.uniform(-np.pi, np.pi, 100))
    edge = np.array([-PI32, np.nextafter(-PI32, np.float32(0)), np.nextafter(PI32, np.float32(0)),
                     np.float32(0.0), -np.float32(1e-30)], np.float32)
    np.testing.assert_array_equal(np.asarray(pp.inverse(col, pp.forward(col, edge))), edge)
    # +π (e.g. atan2 of a point on the negative x axis) is the same angle as −π
    assert np.asarray(pp.forward(col, PI32)) == -PI32
    # flow outputs beyond the edges come back into [−π, π), shifted by whole periods
    z = np.concatenate([np.float32([PI32 + 0.25, -PI32 - 0.25, 3 * PI32, 7.0, -100.0]),
                        RNG.uniform(-50, 50, 2000).astype(np.float32)])
    x = np.asarray(pp.inverse(col, z))
    assert np.all((x >= -PI32) & (x < PI32))
    expected = np.mod(z.astype(np.float64) + np.pi, 2 * np.pi) - np.pi  # float64 arithmetic
    gap = np.abs(x - expected)
    np.testing.assert_array_less(np.minimum(gap, 2 * np.pi - gap), 2e-5 * (1 + np.abs(z)))


def test_periodic_in_degrees_wraps_by_360():
    col = pp.fit("periodic:0:360", RNG.uniform(0.0, 360.0, 100))
    z = pp.forward(col, np.float32([10.0, 370.0, -350.0, 359.5]))
    np.testing.assert_allclose(np.asarray(pp.inverse(col, z)), [10.0, 10.0, 10.0, 359.5],
                               atol=1e-4)
    x = np.asarray(pp.inverse(col, np.float32([np.pi + 0.5, -np.pi - 0.5])))
    np.testing.assert_allclose(x, [0.5 * 180 / np.pi, 360 - 0.5 * 180 / np.pi], atol=1e-3)


def test_logcut_just_above_the_cut():
    cut = 25.0
    x = np.float32(cut) + np.float32([2e-6, 1e-4, 1e-2, 1.0, 100.0])
    col = pp.fit(f"logcut:{cut}", np.concatenate([x, cut + RNG.exponential(3.0, 500)]))
    back = np.asarray(pp.inverse(col, pp.forward(col, x)))
    assert np.all(back > cut)
    np.testing.assert_allclose(back, x, rtol=2e-7 * 4)
    # the log stretches the last 1e-4 above the cut over more than 3 standard deviations
    assert np.asarray(pp.forward(col, x[1])) - np.asarray(pp.forward(col, x[3])) < -3
    with pytest.raises(ValueError, match=r"pt: kind 'logcut:25' needs every value > 25 \(the "
                                         r"cut\), got values in \[25, "):
        pp.fit("logcut:25", np.float32([25.0, 26.0, 30.0]), name="pt")


def test_logit_near_the_bounds():
    x = np.float32([1e-5, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-5]) * 4.0 - 2.0  # inside (−2, 2)
    col = pp.fit("logit:-2:2", np.concatenate([x, RNG.uniform(-2, 2, 500)]))
    back = np.asarray(pp.inverse(col, pp.forward(col, x)))
    np.testing.assert_allclose(back, x, atol=4 * 4.0 * np.finfo(np.float32).eps)
    assert np.all((back > -2) & (back < 2))
    with pytest.raises(ValueError, match=r"strictly inside \(-2, 2\), got values in \[-2, "):
        pp.fit("logit:-2:2", np.float32([-2.0, 0.0, 1.0]))


def test_log_det_jacobian_gives_the_log_normal_density():
    """x = exp(μ + σ·z), z ~ N(0, 1): log p(x) = log N(T(x)) + log|det ∂T/∂x| with T the
    standardised log (shift μ, scale σ) is scipy's log-normal log-density."""
    mu, sigma = 0.7, 1.3
    pre = pp.Preprocessing((pp.Column("log", shift=mu, scale=sigma),
                            pp.Column("logit", lo=0.0, hi=1.0, shift=0.2, scale=0.5)))
    x = np.stack([RNG.lognormal(mu, sigma, 200), RNG.uniform(0.01, 0.99, 200)], 1)
    z = np.asarray(pre.forward(x.astype(np.float32)), np.float64)
    logp = (scipy.stats.norm.logpdf(z).sum(1)
            + np.asarray(pre.log_det_jacobian(x.astype(np.float32)), np.float64))
    # the logit column: u = sigmoid(0.2 + 0.5·z) has density N(z)·|dz/du|, z ~ N(0, 1)
    u = x[:, 1]
    expected = (scipy.stats.lognorm.logpdf(x[:, 0], s=sigma, scale=math.exp(mu))
                + scipy.stats.norm.logpdf((scipy.special.logit(u) - 0.2) / 0.5)
                - np.log(0.5 * u * (1 - u)))
    np.testing.assert_allclose(logp, expected, rtol=1e-4, atol=1e-4)


def test_json_round_trip_and_bad_specs():
    pre = pp.Preprocessing.fit(SPEC, EVENTS)
    again = pp.Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again == pre and hash(again) == hash(pre)
    np.testing.assert_array_equal(np.asarray(again.inverse(EVENTS[:5])),
                                  np.asarray(pre.inverse(EVENTS[:5])))
    for bad, match in [({"version": 2, "columns": []}, "version 2"),
                       ({"version": 1, "columns": [{"kind": "cube"}]}, "not a saved"),
                       ([], "not a saved")]:
        with pytest.raises(ValueError, match=match):
            pp.Preprocessing.from_dict(bad)
    for spec, match in [("cube", r"unknown preprocessing kind 'cube'"),
                        ("logcut", r"'logcut' must be written logcut:<cut>"),
                        ("logit:1:0", r"needs lo < hi, got 1.0 and 0.0"),
                        ("logcut:abc", r"'abc' is not a number")]:
        with pytest.raises(ValueError, match=match):
            pp.parse(spec)
    with pytest.raises(ValueError, match=r"names 2 column kinds but the events have d = 5"):
        pp.Preprocessing.fit("log,log", EVENTS)


# ------------------------------------------------------------- observables stay physical


def test_observable_on_physical_quantities_bins_like_the_raw_events():
    """p = pt·cosh η and φ of the raw events, histogrammed by numpy, against the same
    observable evaluated on the preprocessed events through the inverse transform."""
    pre = pp.Preprocessing.fit(SPEC, EVENTS)
    obs = observables.Function(lambda x: jnp.stack([x[0] * jnp.cosh(x[2]), x[1]]), ("p", "phi"))
    wrapped = pp.Physical(obs, pre)
    assert wrapped.names == ("p", "phi") and pp.physical_observable(wrapped) is obs
    raw = EVENTS.astype(np.float64)
    p, phi = raw[:, 0] * np.cosh(raw[:, 2]), raw[:, 1]
    edges = [np.array([-np.inf, *np.quantile(p, [0.2, 0.5, 0.8]), np.inf]),
             np.array([-np.inf, -2.0, -0.5, 0.5, 2.0, np.inf])]
    expected, _ = np.histogramdd(np.stack([p, phi], 1), bins=edges)
    binning = product_binning(edges, np.full((4, 5), 0.05))
    got = np.asarray(histogram(observables.values(wrapped, pre.forward(EVENTS)), binning))
    # a point may only cross an edge it lies within float32 rounding of
    near = sum(np.sum(np.abs(v[:, None] - e[None, 1:-1]) < 1e-5 * (1 + np.abs(v[:, None])))
               for v, e in zip((p, phi), edges, strict=True))
    assert np.abs(got.reshape(4, 5) - expected).sum() <= 2 * near
    assert near <= 2


# ----------------------------------------------------------------------------- discrete


def test_discrete_columns_are_found_and_refused():
    x = np.stack([RNG.normal(size=500), RNG.choice([-1.0, 1.0], 500),
                  RNG.integers(0, 40, 500).astype(float), RNG.choice([0.5, 1.5], 500)], 1)
    found = pp.discrete_columns(x)
    assert [j for j, _ in found] == [1]  # 40 values: continuous enough; 0.5, 1.5: not integers
    np.testing.assert_array_equal(found[0][1], [-1.0, 1.0])
    with pytest.raises(ValueError, match=r"^f.npz: column 1 of 'x' is discrete \(only the integer "
                                         r"values -1, 1\): .* move it to the conditions array "
                                         r"'c' of the file .* or drop it$"):
        pp.refuse_discrete(x, "f.npz")


# ------------------------------------------------------------------ a file study end to end

SMALL = ["--preset", "tiny", "--no-progress", "--set", "deterministic.enabled=false",
         "--set", "adammcmc.enabled=false", "--set", "data.num_train=200",
         "--set", "data.num_holdout=0", "--set", "vi.num_epochs=4", "--set", "vi.chunk_epochs=2",
         "--set", "evaluation.calib_bins=4", "--set", "evaluation.deviation_bins=4",
         "--set", "evaluation.scaled_bins=2,4", "--set", "evaluation.fit_bins=2,4",
         "--set", "evaluation.calib_samples=2000", "--set", "evaluation.scaled_factor=20",
         "--set", "figures.label_sets=none", "--set", "figures.formats=png", "--set",
         "data.name=file"]


def _file_study_args(tmp, x, ref, preprocess):
    np.savez(tmp / "train.npz", x=x)
    np.savez(tmp / "reference.npz", x=ref)
    return [*SMALL, "--set", f"data.path={tmp / 'train.npz'}",
            "--set", f"data.reference={tmp / 'reference.npz'}",
            "--set", f"data.preprocess={preprocess}", "-o", str(tmp / "out")]


def test_file_study_data_are_preprocessed_and_edges_physical(tmp_path):
    """The data stage of a file study: the transform fitted on the training events of all runs
    and saved; the data files stay physical, the flow's training events are T(x); the problem's
    edges are the raw reference's quantiles and generation bins observable ∘ T⁻¹."""
    from experiments import config as cfgmod
    from experiments.data import load_data, make_data, problem_from_config
    from experiments.stages import Study

    x, ref = _events(400)[:, :3], _events(20_000, np.random.default_rng(1))[:, :3]
    args = _file_study_args(tmp_path, x, ref, "logcut:20,periodic,standardise")
    cfg = cfgmod.resolve("tiny", [a for a in args[args.index("--set"):-2] if a != "--set"])
    study = Study(tmp_path / "out", cfg)
    make_data(study)
    saved = pp.Preprocessing.from_dict(json.loads(
        (tmp_path / "out" / "data" / "preprocessing.json").read_text()))
    assert [c.kind for c in saved.columns] == ["logcut", "periodic", "standardise"]
    g = np.log(x[:, 0].astype(np.float64) - 20.0)  # both runs' 2 x 200 events
    np.testing.assert_allclose([saved.columns[0].shift, saved.columns[0].scale],
                               [g.mean(), g.std()], rtol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "data" / "run1.npz")["x"], x[200:])
    z = np.asarray(load_data(study, 1).x)
    np.testing.assert_allclose(z[:, 0], (g[200:] - g.mean()) / g.std(), atol=2e-5)
    np.testing.assert_array_equal(z[:, 1], x[200:, 1])
    problem = problem_from_config(cfg)
    assert problem.transform == saved and problem.flow_observable.preprocessing == saved
    edges = problem.binning(4).edges
    for j in (0, 1):  # default observable: the coordinates x0 (pt), x1 (φ), physical
        np.testing.assert_allclose(edges[j][1:-1], np.quantile(ref[:, j].astype(np.float64),
                                                               [0.25, 0.5, 0.75]), rtol=1e-6)
    # the flow's event T(x) binned through the inverse lands where x does
    v = np.asarray(observables.values(problem.flow_observable, z), np.float64)
    np.testing.assert_allclose(v, x[200:, :2], rtol=3e-6)


@pytest.mark.slow
def test_file_study_with_preprocessing_reports_physical_edges(tmp_path):
    """The whole study (CLI, tiny sizes; ~35 s of CPU): its report's edges are physical."""
    from experiments import paper

    x, ref = _events(400)[:, :3], _events(20_000, np.random.default_rng(1))[:, :3]
    assert paper.main(_file_study_args(tmp_path, x, ref, "logcut:20,periodic,standardise")) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    edges = np.asarray(report["methods"]["vi_k10"]["deviation_r"]["r_edges"], np.float64)
    np.testing.assert_allclose(edges[1:-1], np.quantile(ref[:, 0].astype(np.float64),
                                                        [0.25, 0.5, 0.75]), rtol=1e-6)
    assert edges[1] > 20.0  # physical pt, not the standardised log (|z| ~ 1)


def test_discrete_column_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    from experiments import paper

    x = _events(400)[:, :3]
    x[:, 2] = RNG.choice([-1.0, 1.0], 400)  # a charge
    code = paper.main(_file_study_args(tmp_path, x, x, "standardise"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "train.npz' (data.path): column 2 of 'x' is discrete" in lines[0]
    assert "move it to the conditions array 'c'" in lines[0]
