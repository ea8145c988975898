"""The one driver of every posterior, with the worked example of docs/design/posteriors.md.

The example (a deep ensemble on a mean squared error, executed from the page) is checked
against the closed form of full-batch gradient descent on a quadratic,
w_t = w* + (I − 2 lr XᵀX / n)^t (w_0 − w*), w* the least-squares solution (numpy, float64);
the driver's parts against answers it does not compute: the units against one-unit runs, a
resumed run against an uninterrupted one, the held-out curve against numpy, the error message
against the position of the NaN that was put there, and the compile count (chex).
"""

from __future__ import annotations

import re
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesiamp_jax.convergence import Plateau
from bayesiamp_jax.posteriors import driver

PAGE = Path(__file__).resolve().parents[1] / "docs" / "design" / "posteriors.md"
N, P, M, LR = 40, 3, 4, 0.1


@pytest.fixture(scope="module")
def example():
    """The page's first python block (the algorithm), executed."""
    block = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)[0]
    namespace: dict = {}
    exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102 - the documented example
    return namespace


def _data(seed, n=N):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, P)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=n)).astype(np.float32)
    return x, y[:, None]


@pytest.fixture(scope="module")
def setup(example):
    algorithm = example["deep_ensemble"](M, batch_size=N, optimizer=optax.sgd(LR))
    data = [_data(0), _data(1)]
    xs = jnp.stack([d[0] for d in data])
    ys = jnp.stack([d[1] for d in data])
    keys = jax.random.split(jax.random.key(7), 2)
    return algorithm, data, xs, ys, keys


def _closed_form(w0, x, y, epochs):
    x, y = np.float64(x), np.float64(y[:, 0])
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]
    step = np.eye(P) - 2 * LR * x.T @ x / x.shape[0]
    return w_star + (np.linalg.matrix_power(step, epochs) @ (np.float64(w0) - w_star).T).T


def test_example_matches_gradient_descent_closed_form_on_every_unit(setup):
    algorithm, data, xs, ys, keys = setup
    out = driver.run(algorithm, keys, (xs, ys), units=2, num_epochs=30, chunk=10,
                     progress=False)
    assert out.state.params.shape == (2, M, P)
    assert out.records["member_loss"].shape == (2, 30, M)
    for u, (x, y) in enumerate(data):
        w0 = 0.1 * np.asarray(jax.random.normal(keys[u], (M, P)))  # the page's init
        np.testing.assert_allclose(out.state.params[u], _closed_form(w0, x, y, 30),
                                   rtol=2e-4, atol=2e-5)
        one = driver.run(algorithm, keys[u], (xs[u], ys[u]), units=None, num_epochs=30,
                         chunk=10, progress=False)
        np.testing.assert_allclose(out.state.params[u], one.state.params, rtol=1e-5, atol=1e-6)
    assert "deep ensemble" in driver.ALGORITHMS


def test_resume_equals_uninterrupted_and_equal_algorithms_compile_once(example, setup,
                                                                       tmp_path, monkeypatch):
    _, _, xs, ys, keys = setup
    kw = dict(units=2, chunk=2, progress=False)
    with monkeypatch.context() as patch:  # a fresh jit of the chunk whose traces chex counts
        patch.setattr(driver, "_chunk", jax.jit(
            chex.assert_max_traces(driver._chunk.__wrapped__, n=1),
            static_argnames=("algorithm", "num_epochs", "vmapped")))
        # two algorithms built apart with equal settings share the one program
        alg = lambda: example["deep_ensemble"](M, batch_size=8, optimizer=optax.adam(1e-2))
        opt = optax.adam(1e-2)
        a1 = example["deep_ensemble"](M, batch_size=8, optimizer=opt)
        a2 = example["deep_ensemble"](M, batch_size=8, optimizer=opt)
        assert a1 == a2 and hash(a1) == hash(a2) and alg() != a1  # optax is equal by identity
        full = driver.run(a1, keys, (xs, ys), num_epochs=5, **kw)
        path = tmp_path / "ens.msgpack"
        driver.run(a1, keys, (xs, ys), num_epochs=3, checkpoint_path=path, **kw)
        resumed = driver.run(a2, keys, (xs, ys), num_epochs=5, checkpoint_path=path, **kw)
    np.testing.assert_array_equal(resumed.state.params, full.state.params)
    np.testing.assert_array_equal(resumed.records["member_loss"], full.records["member_loss"])
    with pytest.raises(ValueError, match="written by a different computation"):
        driver.run(a1, keys[::-1], (xs, ys), num_epochs=5, checkpoint_path=path, **kw)


def test_held_out_curve_and_early_stop(setup):
    algorithm, data, xs, ys, keys = setup
    xh, yh = _data(5, n=30)
    out = driver.run(algorithm, keys, (xs, ys), units=2, num_epochs=40, chunk=10,
                     holdout=(xh, yh), holdout_every=5, progress=False)
    np.testing.assert_array_equal(out.holdout_epochs, np.arange(0, 41, 5))
    assert out.holdout_losses.shape == (2, 9)
    for u in range(2):  # first and last point: the members' mean squared error, by numpy
        for col, params in ((0, 0.1 * np.asarray(jax.random.normal(keys[u], (M, P)))),
                            (-1, np.asarray(out.state.params[u]))):
            want = np.mean((np.float64(xh) @ params.T - np.float64(yh)) ** 2)
            np.testing.assert_allclose(out.holdout_losses[u, col], want, rtol=1e-5)
    assert "holdout" not in out.records and "holdout_epoch" not in out.records
    # a plateau of 2 records that must improve by 1e6: stops once the curve has 3 points
    stopped = driver.run(algorithm, keys, (xs, ys), units=2, num_epochs=40, chunk=10,
                         holdout=(xh, yh), holdout_every=5, progress=False,
                         early_stop=Plateau(patience=2, min_delta=1e6))
    np.testing.assert_array_equal(stopped.holdout_epochs, [0, 5, 10])
    assert stopped.records["member_loss"].shape == (2, 10, M)


def test_non_finite_loss_names_epoch_member_and_unit(setup):
    algorithm, _, xs, ys, keys = setup
    bad = ys.at[1, 3, 0].set(jnp.inf)
    with pytest.raises(FloatingPointError, match=r"^deep ensemble x2: a member's mean epoch loss "
                       r"is non-finite \(NaN or inf\) at epoch 0, member 0, unit 1 "):
        driver.run(algorithm, keys, (xs, bad), units=2, num_epochs=30, chunk=10,
                   progress=False)  # the program of the first test


@pytest.mark.parametrize(("kw", "message"), [
    (dict(units=3), r"keys have batch shape \(2,\), but units=3 needs \(3,\)"),
    (dict(units=None), r"keys have batch shape \(2,\), but units=None needs \(\)"),
    (dict(units=2, num_epochs=0), "num_epochs must be a positive integer"),
    (dict(units=2, early_stop=Plateau(2)), "early_stop needs a held-out set"),
])
def test_bad_arguments_are_one_line_errors(setup, kw, message):
    algorithm, _, xs, ys, keys = setup
    kw = dict(num_epochs=2, progress=False) | kw
    with pytest.raises(ValueError, match=message):
        driver.run(algorithm, keys, (xs, ys), **kw)


def test_registry_holds_every_algorithm_and_refuses_a_second_owner(example):
    from bayesiamp_jax import training  # noqa: F401 - registers flow matching
    from bayesiamp_jax.posteriors import adammcmc_run, repulsive, vi

    assert driver.ALGORITHMS["vi"] is vi.vi_algorithm
    assert driver.ALGORITHMS["repulsive"] is repulsive.repulsive_algorithm
    assert driver.ALGORITHMS["adammcmc"] is adammcmc_run.adammcmc_algorithm
    assert driver.ALGORITHMS["flow matching"] is training.flow_matching
    with pytest.raises(ValueError, match="name 'vi' is already registered"):
        driver.register("vi", example["deep_ensemble"])
    assert driver.ALGORITHMS["vi"] is vi.vi_algorithm
