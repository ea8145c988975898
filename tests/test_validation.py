"""Bad input through the public API: each row is a call, the exception it must raise and a regex
its one-line message must match (the argument or file named, the value shown); plus damaged files
after a crash (recomputed, or a one-line error naming the file) and the affine field hidden=().

The expected messages are written from the inputs (which leaf was changed, which unit got the
overflowing data, which file was cut), not from the code under test.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesiamp_jax as bj
from bayesiamp_jax import evaluation as ev
from bayesiamp_jax import posteriors as post
from bayesiamp_jax import preprocessing, resumable
from bayesiamp_jax import regression as rg
from bayesiamp_jax.checkpoint import DamagedFileError, load_pytree, save_pytree
from bayesiamp_jax.flow import standard_normal_log_prob

KEY = jax.random.key(0)
FIELD = bj.VectorField(hidden=(8,))
PARAMS = FIELD.init(KEY)
OTHER = bj.VectorField(hidden=(8, 8)).init(KEY)      # one layer more: leaf Dense_2 is extra
WIDER = bj.VectorField(hidden=(9,)).init(KEY)        # Dense_0 bias (9,) instead of (8,)
RING = bj.sample_ring(KEY, 200)
X, C = RING.x, RING.c
C10 = jnp.full((10, 1), 4.0)
NET = rg.RegressionNet(hidden=(4,))
TIGHT = bj.Solver("dopri5", max_steps=2)
EXTRA = r"params\['Dense_2'\]\['bias'\] \(shape \(2,\)\) is not a parameter of VectorField"


def _stack(params, n=2):
    return jax.tree_util.tree_map(lambda a: jnp.stack([a] * n), params)


def _with_nan(params, layer, leaf):
    return {k: {n: (a * np.nan if (k, n) == (layer, leaf) else a) for n, a in v.items()}
            for k, v in params.items()}


def _keys(n):
    return jax.random.split(KEY, n)


def _overflow_in_unit_1():
    """x of 2 units; unit 1's points are 1e30 (finite, but the squared loss overflows)."""
    return jnp.stack([X[:100], jnp.full_like(X[:100], 1e30)]), jnp.stack([C[:100], C[:100]])


def _repulsive_nan_in_unit_1():
    """Two ensembles; unit 1's data (1e30, finite) make every member's loss exp(1e30) = inf."""
    data = jnp.stack([jnp.ones((20, 1)), jnp.full((20, 1), 1e30)])

    def loss(key, params, batch):
        return jnp.sum(params["w"] ** 2) + jnp.exp(jnp.mean(batch))

    return post.fit_repulsive(_keys(2), lambda k: {"w": jax.random.normal(k, (3,))}, loss, data,
                              num_members=2, num_epochs=2, batch_size=10, progress=False)


def _truncated_draws(tmp_path):
    path = tmp_path / "draws.msgpack"
    post.save_draws(path, post.PosteriorDraws(_stack(PARAMS), "vi", {}))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _npz(tmp_path, how):
    """An npz that is not a readable histogram file: truncated, garbage or another npz."""
    path = tmp_path / "h.npz"
    np.savez(path, x=np.arange(1000))
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif how == "garbage":
        path.write_bytes(b"\x93NUMPY garbage \xff\x00")
    return path


def _saved(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def _garbage(tmp_path, name="draws.msgpack"):
    path = tmp_path / name
    path.write_bytes(b"\x93 not msgpack \xff\x00")
    return path


CASES = [
    # parameter trees that do not belong to the field
    ("field: extra layer", lambda t: FIELD(OTHER, 0.5, X[:3], C[:3]), ValueError, EXTRA),
    ("field: wrong width", lambda t: FIELD(WIDER, 0.5, X[:3], C[:3]), ValueError,
     r"params\['Dense_0'\]\['bias'\] has shape \(9,\), expected \(8,\)"),
    ("field: draw axis not vmapped", lambda t: FIELD(_stack(PARAMS), 0.5, X[:3], C[:3]),
     ValueError, r"params\['Dense_0'\]\['bias'\] has shape \(2, 8\), expected \(8,\)"),
    ("field: integer weights",
     lambda t: FIELD(jax.tree_util.tree_map(lambda a: a.astype(jnp.int32), PARAMS), 0.5, X[:3],
                     C[:3]), ValueError, r"params\['Dense_0'\]\['bias'\] has dtype int32"),
    ("field: missing layer", lambda t: FIELD({"Dense_0": PARAMS["Dense_0"]}, 0.5, X[:3], C[:3]),
     ValueError, r"params\['Dense_1'\]\['bias'\] is missing"),
    ("velocity_and_divergence", lambda t: FIELD.velocity_and_divergence(OTHER, 0.5, X[:3], C[:3]),
     ValueError, EXTRA),
    ("sample", lambda t: bj.sample(KEY, FIELD, OTHER, C10), ValueError, EXTRA),
    ("log_prob", lambda t: bj.log_prob(FIELD, OTHER, X[:10], C10), ValueError, EXTRA),
    ("fit", lambda t: bj.fit(KEY, FIELD, X, C, 1, batch_size=50, params=OTHER, progress=False),
     ValueError, EXTRA),
    ("fit, units: params of one unit",
     lambda t: bj.fit(_keys(2), FIELD, jnp.stack([X, X]), jnp.stack([C, C]), 1, batch_size=50,
                      params=WIDER, progress=False), ValueError, r"params leaf 0 has shape"),
    ("fit, units: wrong width",
     lambda t: bj.fit(_keys(2), FIELD, jnp.stack([X, X]), jnp.stack([C, C]), 1, batch_size=50,
                      params=_stack(WIDER), progress=False), ValueError,
     r"params\['Dense_0'\]\['bias'\] has shape \(2, 9\), expected \(\.\.\., 8\)"),
    ("fit_vi_cnf", lambda t: post.fit_vi_cnf(KEY, FIELD, X, C, num_epochs=1, batch_size=50,
                                             params_init=OTHER, progress=False),
     ValueError, "params_init" + EXTRA[6:]),
    ("sample_adammcmc_cnf",
     lambda t: post.sample_adammcmc_cnf(KEY, FIELD, X, C, params_init=OTHER,
                                        num_pretrain_epochs=0, num_samples=1, thinning=1,
                                        batch_size=50, progress=False),
     ValueError, "params_init" + EXTRA[6:]),
    ("sample_nuts_cnf", lambda t: post.sample_nuts_cnf(KEY, FIELD, X, C, OTHER, num_samples=1,
                                                       num_warmup=1), ValueError,
     "params_init" + EXTRA[6:]),
    ("evaluate", lambda t: ev.evaluate(KEY, FIELD, _stack(OTHER), bj.datasets.ring_problem(),
                                       ev.Plan(calibration_bins=(3,), num_samples=100,
                                               scaled_bins=(), fit_bins=None),
                                       num_train=200, progress=False), ValueError, EXTRA),
    ("stack_runs with field", lambda t: ev.stack_runs(_stack(WIDER), field=FIELD), ValueError,
     r"posterior params\['Dense_0'\]\['bias'\] has shape \(1, 2, 9\), expected "
     r"\(\.\.\., \.\.\., 8\) \(2 leading draw/run axes\)"),
    ("regression net", lambda t: NET(PARAMS, jnp.zeros((3, 1))), ValueError,
     r"params\['Dense_0'\]\['bias'\] has shape \(8,\), expected \(4,\) of RegressionNet"),
    ("regression predict_draws",
     lambda t: rg.predict_draws(NET, post.PosteriorDraws(_stack(rg.RegressionNet(
         hidden=(5,)).init(KEY)), "vi", {}), jnp.zeros((3, 1))), ValueError,
     r"draws.params\['Dense_0'\]\['bias'\] has shape \(2, 5\), expected \(\.\.\., 4\)"),
    # non-finite weight draws (run 1, draw 0 of a 2-run posterior; one leaf is NaN)
    ("evaluate: NaN draw",
     lambda t: ev.stack_runs([_stack(PARAMS), jax.tree_util.tree_map(
         lambda a, b: jnp.stack([a, b]), _with_nan(PARAMS, "Dense_1", "kernel"), PARAMS)]),
     ValueError, r"posterior run 1, draw 0 has non-finite weights \(NaN or inf\) in "
                 r"\['Dense_1'\]\['kernel'\]"),
    # sizes
    ("calibrate: zero runs",
     lambda t: ev.calibrate(np.zeros((0, 5, 2, 2)), np.full((2, 2), 0.25)), ValueError,
     r"fractions needs at least 1 run, got 0 \(shape \(0, 5, 2, 2\)\)"),
    ("preprocessing: log of a negative column",
     lambda t: preprocessing.fit("log", np.array([-1.0, 2.0, 3.0]), name="column 4"),
     ValueError, r"column 4: kind 'log' needs every value > 0, got values in \[-1, 3\]"),
    ("load_npz: NaN names its row",
     lambda t: bj.datasets.load_npz(_saved(t, x=np.where(np.arange(20)[:, None] == 13, np.nan,
                                                         np.ones((20, 2))))),
     ValueError, r"array 'x' of '.*d\.npz' holds 2 non-finite value\(s\) \(NaN or inf; the "
                 r"first in row 13\)"),
    ("log_prob: x and c lengths", lambda t: bj.log_prob(FIELD, PARAMS, X[:10], C[:7]),
     ValueError, r"x and c must have the same number of points.*\(10, 2\) and \(7, 1\)"),
    ("fit: x and c lengths", lambda t: bj.fit(KEY, FIELD, X, C[:100], 1, progress=False),
     ValueError, r"x and c must share their leading 1 dim\(s\), got \(200, 2\) and \(100, 1\)"),
    # an adaptive solver out of steps
    ("log_prob: dopri5 max_steps", lambda t: bj.log_prob(FIELD, PARAMS, X[:10], C10, TIGHT),
     ValueError, r"log_prob with Solver\(name='dopri5'\) ran out of steps: max_steps=2"),
    ("decode: dopri5 max_steps", lambda t: bj.decode(FIELD, PARAMS, X[:10], C10, TIGHT),
     ValueError, r"decode with Solver\(name='dopri5'\) ran out of steps: max_steps=2"),
    # damaged files
    ("load_draws: truncated", lambda t: post.load_draws(_truncated_draws(t)), DamagedFileError,
     r"file '.*draws\.msgpack' is damaged or not a saved pytree"),
    ("load_draws: garbage", lambda t: post.load_draws(_garbage(t)), DamagedFileError,
     r"file '.*draws\.msgpack' is damaged"),
    ("load_draws: another pytree",
     lambda t: post.load_draws(save_pytree(t / "other.msgpack", {"a": np.zeros(2)})),
     DamagedFileError, r"file '.*other\.msgpack' is not a draws file"),
    ("load_pytree with target: garbage",
     lambda t: load_pytree(_garbage(t, "p.msgpack"), PARAMS), DamagedFileError,
     r"file '.*p\.msgpack' is damaged"),
    ("load_histograms: truncated", lambda t: ev.load_histograms(_npz(t, "truncated")),
     DamagedFileError, r"histogram file '.*h\.npz' is damaged or not a histogram file "
                       r"\(BadZipFile: .*delete it to regenerate"),
    ("load_histograms: garbage", lambda t: ev.load_histograms(_npz(t, "garbage")),
     DamagedFileError, r"histogram file '.*h\.npz' is damaged"),
    ("load_histograms: another npz", lambda t: ev.load_histograms(_npz(t, "other")),
     DamagedFileError, r"histogram file '.*h\.npz' is damaged or not a histogram file "
                       r"\(KeyError"),
    # NaN / inf during training names the stage, the epoch and the unit (and member)
    ("fit: overflow in unit 1",
     lambda t: bj.fit(_keys(2), FIELD, *_overflow_in_unit_1(), 1, batch_size=100,
                      progress=False), FloatingPointError,
     r"flow matching x2: the mean epoch loss is non-finite \(NaN or inf\) at epoch 0, unit 1"),
    ("fit_vi_cnf: overflow in unit 1",
     lambda t: post.fit_vi_cnf(_keys(2), FIELD, *_overflow_in_unit_1(), num_epochs=1,
                               batch_size=100, progress=False), FloatingPointError,
     r"VI k=10 x2 units: the mean epoch loss is non-finite \(NaN or inf\) at epoch 0, unit 1"),
    ("fit_repulsive: inf in unit 1", lambda t: _repulsive_nan_in_unit_1(), FloatingPointError,
     r"repulsive ensemble x2: a member's mean epoch loss is non-finite \(NaN or inf\) at "
     r"epoch 0, member 0, unit 1"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_one_line_error(call, error, match, tmp_path):
    with pytest.raises(error, match=match) as info:
        call(tmp_path)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- damaged files


def _counting_step(state, start, n):
    return state + n, {"item": np.arange(start, start + n)}


def _damage(path, how):
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00garbage\xff" * 5)
    else:  # a valid msgpack file that is not a checkpoint
        save_pytree(path, [np.zeros(3)])


@pytest.mark.parametrize("how", ["truncated", "garbage", "not a checkpoint"])
def test_damaged_checkpoint_is_recomputed(tmp_path, how):
    """A damaged resume point is dropped with a warning naming it; the result is that of an
    uninterrupted run (10 items counted: state 10, items 0..9)."""
    path = tmp_path / "ckpt.msgpack"
    resumable.run_chunks(_counting_step, 0, 6, chunk=3, checkpoint_path=path, progress=False)
    _damage(path, how)
    with pytest.warns(UserWarning, match=r"ckpt\.msgpack' cannot be resumed .*starting over"):
        out = resumable.run_chunks(_counting_step, 0, 10, chunk=3, checkpoint_path=path,
                                   progress=False)
    assert not out.resumed and out.state == 10
    np.testing.assert_array_equal(out.records["item"], np.arange(10))
    with warnings.catch_warnings():  # the rewritten checkpoint resumes cleanly
        warnings.simplefilter("error")
        again = resumable.run_chunks(_counting_step, 0, 10, chunk=3, checkpoint_path=path,
                                     progress=False)
    assert again.resumed and again.state == 10


def test_damaged_file_in_a_study_stage_is_a_one_line_study_error(tmp_path):
    from experiments.data import load_data
    from experiments.stages import Study, StudyError

    study = Study(tmp_path, cfg=None)
    np.savez(tmp_path / "run0.npz", x=np.zeros((4, 2)), c=np.zeros((4, 1)))
    data = (tmp_path / "run0.npz").read_bytes()
    study.path("data", "run0.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(StudyError, match=r"stage deterministic: training data file "
                                         r"'.*data/run0\.npz' is damaged") as info:
        study.run_stage("deterministic", "fp", lambda: load_data(study, 0))
    assert "\n" not in str(info.value)
    assert not study.is_done("deterministic", "fp")
    truncated = _truncated_draws(tmp_path)
    with pytest.raises(StudyError, match=r"stage evaluate: file '.*draws\.msgpack' is damaged"):
        study.run_stage("evaluate", "fp", lambda: post.load_draws(truncated))
    with pytest.raises(StudyError, match=r"stage figures: histogram file '.*h\.npz' is damaged"):
        study.run_stage("figures", "fp", lambda: ev.load_histograms(_npz(tmp_path, "garbage")))
    # a report never silently leaves out a label whose summary was cut
    from experiments.evaluate import load_results, results_path

    results_path(study, "vi_k10").write_text('{"method": "vi", "amplif')
    with pytest.raises(StudyError, match=r"stage report: results file '.*results/vi_k10\.json' "
                                         r"is damaged .*delete it and stages/evaluate\.json"):
        study.run_stage("report", "always", lambda: load_results(study, ["vi_k10"]))


# ------------------------------------------------------------------------ the affine field


def test_field_without_hidden_layers_is_affine_with_exact_divergence():
    """hidden=() is v = W [emb(t), x, c] + b: its divergence is tr(A), A the x rows of W
    (checked against central differences of the velocity), and log p(x) = log N(z) + tr(A) with
    z the encoded point (the trace of a constant Jacobian integrated over t in [0, 1])."""
    field = bj.VectorField(hidden=())
    params = field.init(jax.random.key(3))
    x, c = X[:5], C[:5]
    v, div = field.velocity_and_divergence(params, 0.3, x, c)
    h = 1e-2
    fd = sum((np.asarray(field(params, 0.3, x + h * e, c))[:, i]
              - np.asarray(field(params, 0.3, x - h * e, c))[:, i]) / (2 * h)
             for i, e in enumerate(np.eye(2, dtype=np.float32)))
    np.testing.assert_allclose(np.asarray(div), fd, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.asarray(v), np.asarray(field(params, 0.3, x, c)), rtol=1e-6)
    kernel = np.asarray(params["Dense_0"]["kernel"])
    start = 2 * field.num_frequencies
    trace = np.trace(kernel[start:start + 2])
    z = bj.encode(field, params, x, c)
    expected = np.asarray(standard_normal_log_prob(z)) + trace
    np.testing.assert_allclose(np.asarray(bj.log_prob(field, params, x, c)), expected,
                               rtol=1e-5, atol=1e-5)


# ------------------------------------------------------ a study: divergence and damaged caches

# VI alone (no deterministic stage), 2 runs, a small evaluation: a whole study in ~10 s
STUDY = ["--preset", "tiny", "--no-progress", "--set", "deterministic.enabled=false",
         "--set", "adammcmc.enabled=false", "--set", "data.num_train=200",
         "--set", "vi.num_epochs=4", "--set", "vi.chunk_epochs=2",
         "--set", "evaluation.calib_bins=4", "--set", "evaluation.deviation_bins=4",
         "--set", "evaluation.scaled_bins=2,4", "--set", "evaluation.fit_bins=2,4",
         "--set", "evaluation.calib_samples=2000", "--set", "evaluation.scaled_factor=20",
         "--set", "figures.label_sets=none"]

UNITS = [("vi_k1", 0), ("vi_k1", 1), ("vi_k10", 0), ("vi_k10", 1)]


@pytest.mark.parametrize("message, names", [
    ("VI x4 units: the mean epoch loss is non-finite (NaN or inf) at epoch 12, unit 3",
     "training of vi_k10 run 1 diverged at epoch 12"),
    ("AdamMCMC x4 units, burn-in: the loss is non-finite (NaN or inf) at step 5 of chain 0 of "
     "unit 1", "training of vi_k1 run 1 diverged at step 5"),
    ("repulsive ensemble x4: a member's mean epoch loss is non-finite (NaN or inf) at epoch 7, "
     "member 2, unit 2", "training of vi_k10 run 0 diverged at epoch 7"),
    ("no unit named", "training of one of vi_k1 run 0, vi_k1 run 1, vi_k10 run 0, vi_k10 run 1 "
                      "diverged"),
])
def test_divergence_names_the_label_and_run_of_the_unit(message, names):
    """Unit u of the library's message is the u-th (label, run) the stage trained."""
    from experiments.stages import StudyError, naming_units

    with pytest.raises(StudyError) as info, naming_units("train_vi", UNITS):
        raise FloatingPointError(message)
    assert str(info.value).startswith(f"stage train_vi: {names} ({message})")


def test_a_diverging_study_is_a_one_line_error(tmp_path, capsys):
    """Points at radius 1e30 overflow the squared loss in the first epoch of every unit."""
    from experiments import paper

    code = paper.main([*STUDY, "--set", "data.r_mean=1e30", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err
    assert errors == [line for line in err.splitlines() if "diverged" in line]
    assert len(errors) == 1 and errors[0].startswith(
        "error: stage train_vi: training of vi_k10 run 0 diverged at epoch 0 (VI x2 units: the "
        "mean epoch loss is non-finite (NaN or inf) at epoch 0, unit 0")
    assert not (tmp_path / "stages" / "train_vi.json").exists()


def _numbers(out):
    """The report without what depends on the clock."""
    import json

    report = json.loads((out / "report.json").read_text())
    return {k: v for k, v in report.items() if k not in ("timings", "budget")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from experiments import paper

    out = tmp_path_factory.mktemp("finished")
    assert paper.main([*STUDY, "-o", str(out)]) == 0
    return out, _numbers(out)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _unfinish_evaluation(out):
    """As if a run was killed during the evaluation (the label not evaluated yet)."""
    (out / "results" / "vi_k10.json").unlink()
    (out / "stages" / "evaluate.json").unlink()


def test_damaged_draws_of_a_finished_training_are_trained_again(finished):
    """The evaluation finds run 1's draws truncated: that unit is trained again (its own key)
    and the report equals the undamaged study's."""
    from experiments import paper

    out, before = finished
    damaged = out / "draws" / "vi_k10" / "run1.msgpack"
    _truncate(damaged)
    _unfinish_evaluation(out)
    assert paper.main([*STUDY, "-o", str(out)]) == 0
    assert _numbers(out) == before
    log = (out / "log.txt").read_text()
    assert f"WARNING damaged draws file {damaged} " in log and "training vi_k10 run 1 again" in log
    assert (out / "stages" / "train_vi.json").is_file()
    post.load_draws(damaged)  # readable again


def test_damaged_draws_and_histograms_of_an_interrupted_study_are_recomputed(finished):
    """Killed during training (no train marker) with run 0's draws truncated, and the label's
    histogram file and a generation checkpoint damaged: exit 0, the same report."""
    from experiments import paper

    out, before = finished
    _truncate(out / "draws" / "vi_k10" / "run0.msgpack")
    (out / "stages" / "train_vi.json").unlink()
    _unfinish_evaluation(out)
    folder = out / "histograms" / "vi_k10"
    _truncate(folder / "same_noise.npz")
    (folder / "scaled.partial.g0.msgpack").write_bytes(b"\x00garbage\xff")
    assert paper.main([*STUDY, "-o", str(out)]) == 0
    assert _numbers(out) == before
    log = (out / "log.txt").read_text()
    assert "training vi_k10 run 0 again" in log
    assert not list(folder.glob("*.partial*"))  # the damaged checkpoint was started over
    assert ev.load_histograms(folder / "same_noise.npz").mode == "same_noise"
