"""Held-out loss curves along training, the "train longer" flag and the early stop.

Answers known independently of the code under test: exponential decays with a closed-form fall
over the tail window, noise-only curves (the flag's false-alarm rate is that of a one-sided
t-test), the held-out loss recomputed from the final parameters with ``flow.cfm_loss``, the
trained parameters of a run without a held-out set, an uninterrupted run, and the plateau found
by a direct scan of the curve.
"""

import jax
import numpy as np
import pytest

from bayesiamp_jax import convergence as conv
from bayesiamp_jax import flow, training
from bayesiamp_jax.data import sample_ring
from bayesiamp_jax.network import VectorField

# ----------------------------------------------------------------------------- synthetic curves


def _decay(epochs, tau, amplitude=1.0, floor=1.0):
    return floor + amplitude * np.exp(-np.asarray(epochs, float) / tau)


def test_exponential_decay_fall_matches_closed_form():
    """Noise-free L = 1 + e^{−e/τ} stopped at E = 2τ: the fitted fall over the last 10 % is the
    secant L(0.9 E) − L(E) (to the curvature of e^{−e/τ} over the window, < 1 %)."""
    e = np.linspace(0, 200, 201)
    c = conv.check_convergence(e, _decay(e, tau=100.0))
    want = _decay(180, 100.0) - _decay(200, 100.0)
    assert c.fall == pytest.approx(want, rel=0.01)
    assert c.relative_fall == pytest.approx(want / np.mean(_decay(e[e >= 180], 100.0)), rel=0.01)
    assert c.not_converged and not c.rising and c.verdict == "not converged: train longer"


def test_flag_fires_when_stopped_early_not_when_converged():
    """Same decay (τ = 100) and noise σ = 2e-3, 100 records: stopped at E = τ (tail fall 3 % of
    the loss) is flagged in every realisation; at E = 20τ (fall ~1e-9) in about the one-sided
    t-test's false-alarm rate of z = 2 (~4 % with 8 degrees of freedom), well under 10 %."""
    rng = np.random.default_rng(0)
    early = late = 0
    for _ in range(300):
        for stop in (100.0, 2000.0):
            e = np.linspace(0, stop, 101)
            y = _decay(e, 100.0) + 2e-3 * rng.standard_normal(e.size)
            flagged = bool(conv.check_convergence(e, y).not_converged)
            early += flagged and stop == 100.0
            late += flagged and stop == 2000.0
    assert early == 300
    assert late < 30


def test_rising_curve_is_reported_and_units_are_judged_separately():
    e = np.arange(0, 101, 1.0)
    falling, rising = _decay(e, 30.0), 1.0 + 1e-3 * e  # rises 1 % over the tail
    c = conv.check_convergence(e, np.stack([falling, rising]))
    assert c.not_converged.tolist() == [True, False]
    assert c.rising.tolist() == [False, True]
    assert list(c.verdict) == ["not converged: train longer", "rising: over-fitting?"]
    d = conv.as_dicts(c)
    assert [x["verdict"] for x in d] == list(c.verdict)
    assert d[1]["fall"] == pytest.approx(-1e-3 * 10, rel=1e-6)  # the rise over the 10-epoch tail


def test_tolerance_and_too_short_curves():
    e = np.arange(0, 101, 1.0)
    y = 1.0 - 1e-4 * e  # falls 0.1 % of its level over the last 10 epochs, without noise
    assert conv.check_convergence(e, y, tolerance=5e-4).not_converged
    assert not conv.check_convergence(e, y, tolerance=5e-3).not_converged
    short = conv.check_convergence([0, 1, 2], [3.0, 2.0, 1.0])
    assert not short.judged and not short.not_converged
    assert short.verdict == "too few records to judge"
    with pytest.raises(ValueError, match="losses must have shape"):
        conv.check_convergence([0, 1, 2], [1.0, 2.0])
    with pytest.raises(ValueError, match="epochs must be strictly increasing"):
        conv.check_convergence([0, 2, 1], [1.0, 2.0, 3.0])


def test_holdout_set_subset_and_errors():
    x = np.arange(10.0).reshape(5, 2)
    h = conv.holdout_set(x, max_points=3)
    assert h.x.shape == (3, 2) and h.c.shape == (3, 0)
    rows = [int(r[0]) // 2 for r in np.asarray(h.x)]
    assert rows == sorted(set(rows)) and set(rows) <= set(range(5))  # distinct rows, in order
    with pytest.raises(ValueError, match="holdout x has 2 features per event, the training "
                                         "data 3"):
        conv.as_holdout((x, None), like=(np.zeros((4, 3)), np.zeros((4, 0))))
    with pytest.raises(ValueError, match="holdout must be None, a Holdout or a pair"):
        conv.as_holdout(x)


def _first_plateau(y, patience, min_delta):
    """Direct scan: the first record k after which the best of the last ``patience`` records
    has not beaten the best before them by ``min_delta``."""
    for k in range(patience + 1, len(y) + 1):
        if min(y[k - patience:k]) > min(y[:k - patience]) - min_delta:
            return k
    return None


def test_plateau_reached_synthetic():
    y = [5.0, 4.0, 3.0, 2.0, 2.5, 2.1, 2.2, 1.0]
    assert conv.plateau_reached(y[:7], conv.Plateau(3))
    assert not conv.plateau_reached(y[:7], conv.Plateau(4))
    assert not conv.plateau_reached(y, conv.Plateau(3))
    assert conv.plateau_reached(y[:6], conv.Plateau(2, min_delta=0.5))  # 2.1 > 2 - 0.5
    assert _first_plateau(y, 2, 0.5) == 6
    # every unit must have stopped improving
    assert not conv.plateau_reached(np.stack([y[:7], [5, 4, 3, 2, 1.5, 1.0, 0.5]]),
                                    conv.Plateau(3))


# ----------------------------------------------------------------------------- a real tiny run

FIELD = VectorField(hidden=(16, 16))
OPT = training.adam(1e-2)
KW = dict(batch_size=250, chunk_epochs=20, optimizer=OPT, progress=False)


@pytest.fixture(scope="module")
def ring():
    data = sample_ring(jax.random.key(0), 1000)
    held = sample_ring(jax.random.key(1), 1000)
    return data, conv.holdout_set(held.x, held.c)


@pytest.fixture(scope="module")
def long_run(ring):
    data, held = ring
    return training.fit(jax.random.key(2), FIELD, data.x, data.c, 300, holdout=held,
                        holdout_every=4, **KW)


def test_curve_is_the_held_out_loss_and_training_is_unchanged(ring):
    data, held = ring
    plain = training.fit(jax.random.key(2), FIELD, data.x, data.c, 40, **KW)
    curved = training.fit(jax.random.key(2), FIELD, data.x, data.c, 40, holdout=held,
                          holdout_every=8, **KW)
    for a, b in zip(jax.tree_util.tree_leaves(plain.state), jax.tree_util.tree_leaves(
            curved.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit for bit
    np.testing.assert_array_equal(plain.losses, curved.losses)
    assert curved.holdout_epochs.tolist() == [0, 8, 16, 24, 32, 40]
    final = flow.cfm_loss(held.key, FIELD, curved.state.params, held.x, held.c)
    assert curved.holdout_losses[-1] == pytest.approx(float(final), rel=1e-6)
    init = FIELD.init(jax.random.split(jax.random.key(2))[0])
    start = flow.cfm_loss(held.key, FIELD, init, held.x, held.c)
    assert curved.holdout_losses[0] == pytest.approx(float(start), rel=1e-6)


def test_flag_on_real_run_stopped_early_vs_long(ring, long_run):
    """The ring run stopped after 24 epochs (held-out loss still falling steeply) is flagged;
    the same run after 300 epochs (its held-out loss flat to noise over the last 30) is not."""
    e, y = long_run.holdout_epochs, long_run.holdout_losses
    early = conv.check_convergence(e[e <= 24], y[e <= 24])
    assert early.not_converged and early.relative_fall > 0.01
    late = conv.check_convergence(e, y)
    assert late.judged and not late.not_converged, conv.as_dicts(late)


def test_resumed_curve_equals_uninterrupted(ring, long_run, tmp_path):
    data, held = ring
    path = tmp_path / "fm.msgpack"
    training.fit(jax.random.key(2), FIELD, data.x, data.c, 60, holdout=held, holdout_every=4,
                 checkpoint_path=path, **KW)
    resumed = training.fit(jax.random.key(2), FIELD, data.x, data.c, 100, holdout=held,
                           holdout_every=4, checkpoint_path=path, **KW)
    e = long_run.holdout_epochs
    np.testing.assert_array_equal(resumed.holdout_epochs, e[e <= 100])
    np.testing.assert_array_equal(resumed.holdout_losses, long_run.holdout_losses[e <= 100])


def test_early_stop_at_the_plateau_of_a_real_run(ring, long_run):
    """The stop is the first record at which the plateau condition holds on the long run's
    own curve (a direct scan): the curve up to there is the long run's and training ends at
    that record's epoch."""
    data, held = ring
    stop = conv.Plateau(patience=5, min_delta=0.01)
    e, y = long_run.holdout_epochs, long_run.holdout_losses
    k = _first_plateau(list(y), stop.patience, stop.min_delta)
    assert k is not None and e[k - 1] < 300
    out = training.fit(jax.random.key(2), FIELD, data.x, data.c, 300, holdout=held,
                       holdout_every=4, early_stop=stop, **KW)
    np.testing.assert_array_equal(out.holdout_epochs, e[:k])
    np.testing.assert_array_equal(out.holdout_losses, y[:k])
    assert out.losses.shape == (e[k - 1],)
    with pytest.raises(ValueError, match="early_stop needs a held-out set"):
        training.fit(jax.random.key(2), FIELD, data.x, data.c, 10, early_stop=stop, **KW)


# ----------------------------------------------------------------------------- posterior methods


@pytest.mark.slow
@pytest.mark.parametrize("method", ["vi", "repulsive", "adammcmc"])
def test_posterior_trainers_record_curves_without_changing_draws(ring, method, tmp_path):
    """Each posterior trainer with a held-out set: the same draws bit for bit as without one,
    the last curve point recomputed from the final state by the documented formula, and (VI)
    a resumed run's curve equal to the uninterrupted one's."""
    from jax.flatten_util import ravel_pytree

    from bayesiamp_jax import posteriors
    from bayesiamp_jax.integrate import Solver
    from bayesiamp_jax.posteriors.model import exact_nll_loss_fn

    data, held = ring
    key = jax.random.key(3)
    fm = lambda p: float(flow.cfm_loss(held.key, FIELD, p, held.x, held.c))
    if method == "vi":
        kw = dict(num_epochs=30, batch_size=250, chunk_epochs=10, progress=False)
        plain = posteriors.fit_vi_cnf(key, FIELD, data.x, data.c, **kw)
        res = posteriors.fit_vi_cnf(key, FIELD, data.x, data.c, holdout=held, holdout_every=5,
                                    **kw)
        a, b = (plain.loc, plain.scale), (res.loc, res.scale)
        epochs, curve = res.holdout_epochs, res.holdout_losses
        loc, unravel = ravel_pytree(res.loc)
        scale = ravel_pytree(res.scale)[0]
        k_eps, k_loss = jax.random.split(held.key)
        eps = jax.random.normal(k_eps, (posteriors.vi.HOLDOUT_DRAWS, loc.size))
        want = np.mean([float(flow.cfm_loss(k_loss, FIELD, unravel(loc + scale * e), held.x,
                                            held.c)) for e in eps])
        path = tmp_path / "vi.msgpack"
        posteriors.fit_vi_cnf(key, FIELD, data.x, data.c, holdout=held, holdout_every=5,
                              checkpoint_path=path, **kw | {"num_epochs": 15})
        resumed = posteriors.fit_vi_cnf(key, FIELD, data.x, data.c, holdout=held,
                                        holdout_every=5, checkpoint_path=path, **kw)
        np.testing.assert_array_equal(resumed.holdout_losses, curve)
    elif method == "repulsive":
        kw = dict(num_members=3, num_epochs=20, batch_size=250, chunk_epochs=10, progress=False)
        plain = posteriors.fit_repulsive_cnf(key, FIELD, data.x, data.c, **kw)
        res = posteriors.fit_repulsive_cnf(key, FIELD, data.x, data.c, holdout=held,
                                           holdout_every=5, **kw)
        a, b = plain.params, res.params
        epochs, curve = res.info["holdout_epochs"], res.info["holdout_curve"]
        want = np.mean([fm(res.draw(m)) for m in range(3)])
    else:
        solver = Solver("rk4", 4, checkpoint=True)
        kw = dict(sigma=0.1, num_pretrain_epochs=0, num_samples=3, thinning=2, batch_size=250,
                  num_adam_steps=1, solver=solver, progress=False,
                  params_init=FIELD.init(jax.random.key(4)))
        plain = posteriors.sample_adammcmc_cnf(key, FIELD, data.x, data.c, **kw)
        res = posteriors.sample_adammcmc_cnf(key, FIELD, data.x, data.c, holdout=held, **kw)
        a, b = plain.params, res.params
        epochs, curve = res.info["holdout_epochs"], res.info["holdout_curve"]
        nll = exact_nll_loss_fn(FIELD, solver)
        per_draw = [data.x.shape[0] * float(nll(res.draw(s), (held.x, held.c)))
                    for s in range(3)]
        np.testing.assert_allclose(res.info["holdout_loss"], per_draw, rtol=1e-5)
        want = per_draw[-1]
        assert epochs.tolist() == [0, 3, 5, 7]
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert epochs[0] == 0 and np.all(np.diff(epochs) > 0)
    assert curve[-1] == pytest.approx(want, rel=1e-5)
