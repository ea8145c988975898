"""The one-call API end to end, save/load round trips, JSON export and figures."""

import json
import sys
from pathlib import Path

import jax
import matplotlib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluation_generate import (  # noqa: E402
    CHUNK,
    SAME_BINS,
    SCALED_BINS,
    ScaleField,
    rayleigh_cell_probabilities,
    rk4_scale,
)

from bayesiamp_jax import data, datasets  # noqa: E402
from bayesiamp_jax import evaluation as ev  # noqa: E402
from bayesiamp_jax.posteriors import PosteriorDraws  # noqa: E402

matplotlib.use("Agg")

RUNS, DRAWS, PER_CELL, N_TRAIN = 3, 30, 60, 500
THETA = -np.log(5.0)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    runs = [PosteriorDraws({"theta": np.full((DRAWS,), THETA, np.float32)}, "fixed", {})
            for _ in range(RUNS)]
    plan = ev.Plan(calibration_bins=SAME_BINS, num_samples=2500, scaled_bins=SCALED_BINS,
                   samples_per_cell=PER_CELL, fit_bins=SCALED_BINS, chunk_size=CHUNK,
                   closure_repeats=50, differential_samples=0)
    result = ev.evaluate(jax.random.key(7), ScaleField(), runs, datasets.ring_problem(), plan,
                         num_train=N_TRAIN, progress=False, output_dir=out)
    return result, out


def test_one_call_gives_known_amplification(evaluated):
    # weights identical across draws, fresh noise per draw: every scaled histogram is a
    # multinomial sample of N = 60 n_Q points with Rayleigh cell probabilities p, so
    # E[N_eq] = S/(S−3) Σ_j (N p_j/(1−p_j) + 1/S) independently of the code under test
    result, _ = evaluated
    assert set(result.scaled) == {"5x5", "10x10"} and set(result.same_noise) == {"3x3", "5x5"}
    scale = rk4_scale(THETA)
    expected = {}
    for label, res in result.scaled.items():
        b = ev.quantile_binning(res.shape[0])
        p = rayleigh_cell_probabilities(b, scale)
        n = PER_CELL * b.num_cells
        assert res.num_samples == n
        expected[label] = DRAWS / (DRAWS - 3) * np.sum(n * p / (1 - p) + 1 / DRAWS)
        amp = res.amplification
        assert amp.n_eq.shape == (RUNS,)
        np.testing.assert_allclose(amp.n_eq.mean(), expected[label],
                                   rtol=0.3 if b.num_cells == 25 else 0.1)
        np.testing.assert_allclose(amp.amplification, amp.n_eq / N_TRAIN)
        # closure: truth samples of size N_eq have JSD ≈ (n_Q − 1)/(8 N_eq)
        clo = res.closure
        np.testing.assert_allclose(clo.jsd_truth.mean(1), (b.num_cells - 1) / (8 * amp.n_eq),
                                   rtol=0.15)
    # N ∝ n_Q, so the power law through both binnings has b ≈ log ratio of the expectations
    b_expected = np.log(expected["10x10"] / expected["5x5"]) / np.log(4.0)
    assert abs(result.fit.b - b_expected) < 4 * result.fit.b_err + 0.05
    # identical weights and shared noise: every draw equal, zero spread, N_eq infinite
    assert np.all(np.isinf(result.same_noise["5x5"].amplification.n_eq))


def test_saved_histograms_reproduce_the_results(evaluated):
    result, out = evaluated
    same = ev.load_histograms(out / "same_noise.npz")
    scaled = ev.load_histograms(out / "scaled.npz")
    assert scaled.mode == "scaled" and same.mode == "same_noise"
    assert scaled.counts[1].shape == (RUNS, DRAWS, 10, 10)
    again = ev.analyse_saved(jax.random.key(7), same, scaled, N_TRAIN, fit_bins=SCALED_BINS,
                             closure_repeats=50)
    assert json.dumps(ev.to_dict(again)) == json.dumps(ev.to_dict(result))
    # the result carries the very histograms the files hold: nothing to read back in a run
    for name, saved in (("same_noise", same), ("scaled", scaled)):
        held = result.histograms[name]
        assert held.mode == saved.mode and held.num_samples == saved.num_samples
        for a, b in zip(held.counts, saved.counts, strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(held.fractions, saved.fractions, strict=True):
            np.testing.assert_array_equal(a, b)
    loaded = ev.load_results(out / "results.json")
    assert loaded["n_eq"]["10"] == pytest.approx(result.scaled["10x10"].amplification.n_eq.tolist())
    assert loaded["fit"]["b"] == pytest.approx(float(result.fit.b))
    assert not list(out.glob("*.partial*"))


def test_summary_is_compact_and_holds_the_numbers(evaluated):
    """The JSON summary carries every reported number (same values as the result) and no
    per-cell array: its size does not grow with the number of cells."""
    result, out = evaluated
    s = ev.summarise(result)
    assert set(s["mad"]) == {"3", "5"} and set(s["amplification"]) == {"5", "10"}
    assert s["mad"]["5"] == float(result.same_noise["5x5"].calibration.mad)
    assert s["mad_scaled"]["10"]["mad_r"] == float(result.scaled["10x10"].calibration.mad_r)
    assert s["coverage"]["3"]["empirical"] == result.same_noise["3x3"].calibration.curve.tolist()
    assert s["deviation_r"]["n"] == 5 and len(s["deviation_r"]["deviation"]) == 5
    clo = result.scaled["5x5"].closure
    assert s["closure"]["5"]["model_per_run"] == clo.jsd_model.tolist()
    np.testing.assert_allclose(s["closure"]["5"]["truth_quantiles"],
                               np.percentile(clo.jsd_truth, [16, 50, 84]))
    # per-cell amplification of the largest scaled grid: run mean, then over φ per radial bin
    cell = result.scaled["10x10"].amplification.cell_amplification.mean(axis=0)
    assert s["cell_amplification"]["n"] == 10
    np.testing.assert_allclose(s["cell_amplification"]["mean"], cell.mean(axis=1))
    np.testing.assert_allclose(s["cell_amplification"]["quantiles"][1], np.median(cell, axis=1))
    # no list in the summary is longer than the number of levels (50)
    def longest(tree):
        if isinstance(tree, dict):
            return max((longest(v) for v in tree.values()), default=0)
        if isinstance(tree, list):
            return max([len(tree)] + [longest(v) for v in tree])
        return 0

    assert longest(s) == len(ev.NOMINAL_LEVELS)
    assert json.loads((out / "results.json").read_text())["mad"] == s["mad"]


def test_all_figures_draw(evaluated, tmp_path):
    result, _ = evaluated
    x = np.asarray(data.sample_ring(jax.random.key(0), 500).x)
    figs = ev.plot_all(result, train_x=x)
    assert set(figs) == {"training_data", "coverage", "mad_scaled", "mad_same_noise",
                         "coverage_deviation", "amplification", "closure"}
    for name, fig in figs.items():
        fig.savefig(tmp_path / f"{name}.png", dpi=60)
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    ax = figs["amplification"].axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # the figures are drawn from the compact summary alone
    from_summary = ev.plot_summary(ev.summarise(result))
    assert set(from_summary) == set(figs) - {"training_data"}


def test_comparison_figures_and_saving(evaluated, tmp_path):
    result, _ = evaluated
    s = ev.summarise(result)
    figs = ev.plot_comparison({"a": s, "b": s}, references={"a": (0.01, 1.0)})
    assert set(figs) == {"coverage", "mad", "deviation", "amplification",
                         "amplification_corrected", "closure"}
    assert len(figs["coverage"].axes) == 2
    amp = figs["amplification"].axes[0]
    assert [line.get_linestyle() for line in amp.lines].count(":") == 1  # the reference law
    # the corrected panel shows the corrected numbers, not the paper estimator's
    corrected = figs["amplification_corrected"].axes[0]
    points = [c for c in corrected.containers][0].lines[0].get_ydata()
    expected = [np.mean(s["amplification_corrected"][k]) for k in s["amplification_corrected"]]
    np.testing.assert_allclose(sorted(points), sorted(expected))
    paths = ev.save_figure(figs["mad"], tmp_path / "sub" / "mad", formats=("png", "pdf"), dpi=60)
    assert [p.name for p in paths] == ["mad.png", "mad.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    fig = ev.plot_losses({"det": np.linspace(2, 1, 30), "vi": np.linspace(3, 1, 30)})
    # one panel per label (each on its own y scale), its curve the label's losses
    assert [ax.get_title() for ax in fig.axes] == ["det", "vi"]
    for ax, y in zip(fig.axes, (np.linspace(2, 1, 30), np.linspace(3, 1, 30)), strict=True):
        assert len(ax.lines) == 1 and ax.get_xscale() == "log"
        np.testing.assert_array_equal(ax.lines[0].get_ydata(), y)


def test_scan_figures(evaluated):
    result, _ = evaluated
    figs = ev.plot_scan({"a": result, "b": result})
    assert set(figs) == {"coverage", "mad"}
    assert len(figs["coverage"].axes) == 2  # the two same-noise binnings
    assert len(figs["mad"].axes[0].lines) == 6  # 2 labels × (MAD, MAD_r, MAD_φ)
    with pytest.raises(ValueError, match="binnings"):
        ev.plot_scan({"a": result, "b": result._replace(scaled={})})


def test_coverage_figure_layout():
    levels = ev.NOMINAL_LEVELS
    curves = {f"k={k}": np.stack([levels] * 3) for k in (1, 10)}
    fig = ev.plot_coverage_curves(levels, curves)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["5×5", "10×10", "50×50"]
    with pytest.raises(ValueError, match="panels, levels"):
        ev.plot_coverage_curves(levels, {"bad": levels})


def test_figures_draw_undetermined_errors_and_held_out_pulls():
    """A fit over two binnings has no error (inf): the legend still renders; the held-out
    figure draws a pull histogram whose density integrates to one."""
    import io

    from bayesiamp_jax.evaluation import figures

    fig = figures.plot_amplification(np.array([4.0, 9.0]), np.array([[0.1, 0.2]]),
                                     fit={"a": 0.01, "b": 1.0, "a_err": np.inf, "b_err": np.inf})
    fig.savefig(io.BytesIO(), format="png")
    edges = np.linspace(-6, 6, 49)
    counts = np.histogram(np.random.default_rng(0).normal(size=500), edges)[0]
    entry = {"pull_edges": edges.tolist(), "pull_counts": counts.tolist(), "width": 1.0,
             "width_err": 0.05, "verdict": "consistent"}
    fig = figures.plot_holdout({"vi": {"holdout": {"same_noise": {"10": entry}}}})
    fig.savefig(io.BytesIO(), format="png")
    (stairs,) = [p for p in fig.axes[0].patches if hasattr(p, "get_data")]
    dens, e = stairs.get_data()[:2]
    assert np.sum(dens * np.diff(e)) == pytest.approx(1.0)
    sparse = dict(entry, verdict="under-confident", sparse=True)  # not read: the legend says so
    fig = figures.plot_holdout({"vi": {"holdout": {"same_noise": {"50": sparse}}}})
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any("sparse: verdict not used" in t for t in labels)
    assert not any("under-confident" in t for t in labels)


@pytest.mark.parametrize("plan, match", [
    (ev.Plan(num_samples=0), r"^plan.num_samples must be a positive integer, got 0$"),
    (ev.Plan(calibration_bins=(3, 0)), r"^plan.calibration_bins must hold positive ints n or "
                                       r"Binnings, got 0$"),
    (ev.Plan(scaled_bins=(2, 4), fit_bins=(2, 3)), r"^plan.fit_bins=\[2, 3\]: \[3\] are not "
                                                   r"among the evaluated binnings n = \[2, 4\]$"),
    (ev.Plan(differential_samples=1), r"^plan.differential_samples must be 0 \(off\) or"),
    (ev.Plan(solver="rk4"), r"^plan.solver must be an integrate.Solver, got 'rk4'$"),
    (ev.Plan(levels=(0.5, 1.5)), r"^plan.levels must be a non-empty 1-D array in \[0, 1\]"),
    (ev.Plan(shared_sample="yes"), r"^plan.shared_sample must be True or False, got 'yes'$"),
])
def test_a_bad_plan_is_a_one_line_error_naming_the_field(plan, match):
    with pytest.raises(ValueError, match=match):
        ev.evaluate(jax.random.key(0), ScaleField(), {"theta": np.zeros(2, np.float32)},
                    datasets.ring_problem(), plan, num_train=10, progress=False)


def test_a_conditional_field_needs_the_problems_condition():
    problem = datasets.ring_problem()._replace(condition=None)
    with pytest.raises(ValueError, match=r"^problem.condition is None but the field takes "
                                         r"cond_dim=1 conditions"):
        ev.evaluate(jax.random.key(0), ScaleField(), {"theta": np.zeros(2, np.float32)},
                    problem, ev.Plan(), num_train=10, progress=False)
