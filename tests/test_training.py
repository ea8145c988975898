"""Deterministic flow-matching training: held-out loss, reference Adam, resume, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesiamp_jax import checkpoint, flow, training
from bayesiamp_jax.data import sample_ring
from bayesiamp_jax.network import VectorField
from bayesiamp_jax.posteriors import driver


def test_training_lowers_held_out_loss(trained_cnf):
    """The fixture's short run must beat its own initialisation on fresh ring data."""
    held_out = sample_ring(jax.random.PRNGKey(99), trained_cnf.x.shape[0])
    t, z = flow.draw_cfm_noise(jax.random.PRNGKey(98), held_out.x)
    field = trained_cnf.field
    init = field.init(jax.random.split(jax.random.PRNGKey(1))[0])  # what ``fit`` started from
    loss = jax.jit(lambda p: flow.cfm_loss_from_noise(field, p, held_out.x, held_out.c, t, z))
    before, after = loss(init), loss(trained_cnf.params)
    assert float(after) < 0.6 * float(before)
    # the training loss went down too and is comparable to the held-out one (no overfitting)
    assert trained_cnf.losses[-10:].mean() < 0.6 * trained_cnf.losses[:3].mean()
    assert float(after) == pytest.approx(trained_cnf.losses[-10:].mean(), rel=0.2)


def test_adam_matches_reference_update_rule():
    """Two steps of Adam(lr 1e-3, β = (0.99, 0.99), ε = 1e-8) computed by hand."""
    opt = training.adam()
    theta = jnp.array([1.0, -2.0, 0.5])
    grads = [jnp.array([0.3, -1.0, 2.0]), jnp.array([-0.1, 0.5, 2.0])]
    state = opt.init(theta)
    m = v = np.zeros(3)
    want = np.asarray(theta, np.float64)
    for k, g in enumerate(grads, start=1):
        updates, state = opt.update(g, state, theta)
        theta = optax.apply_updates(theta, updates)
        gn = np.asarray(g, np.float64)
        m, v = 0.99 * m + 0.01 * gn, 0.99 * v + 0.01 * gn**2
        want = want - 1e-3 * (m / (1 - 0.99**k)) / (np.sqrt(v / (1 - 0.99**k)) + 1e-8)
    np.testing.assert_allclose(theta, want, rtol=1e-6)


def test_minibatch_indices_are_a_partial_permutation():
    idx = np.asarray(training.minibatch_indices(jax.random.PRNGKey(0), 103, 10))
    assert idx.shape == (10, 10)
    assert len(np.unique(idx)) == 100 and idx.min() >= 0 and idx.max() < 103
    other = np.asarray(training.minibatch_indices(jax.random.PRNGKey(1), 103, 10))
    assert not np.array_equal(idx, other)


@pytest.fixture(scope="module")
def resume_runs(ring_train, tmp_path_factory):
    """An uninterrupted 4-epoch run and one stopped after 2 epochs then resumed to 4."""
    field, x, c = VectorField(), ring_train.x, ring_train.c
    kw = dict(batch_size=500, chunk_epochs=2, progress=False)
    full = training.fit(jax.random.PRNGKey(5), field, x, c, 4, **kw)
    path = tmp_path_factory.mktemp("resume") / "state.msgpack"
    first = training.fit(jax.random.PRNGKey(5), field, x, c, 2, checkpoint_path=path, **kw)
    resumed = training.fit(jax.random.PRNGKey(5), field, x, c, 4, checkpoint_path=path, **kw)
    return full, first, resumed, path


def test_resume_equals_uninterrupted_run_bit_for_bit(resume_runs):
    full, first, resumed, _ = resume_runs
    assert int(first.state.epoch) == 2 and int(resumed.state.epoch) == 4
    chex.assert_trees_all_equal(full.state, resumed.state)
    np.testing.assert_array_equal(full.losses, resumed.losses)
    np.testing.assert_array_equal(first.losses, full.losses[:2])
    # the run actually moved the parameters
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.any(a != b), first.state.params,
                                         full.state.params))
    assert any(bool(m) for m in moved)


def test_checkpoint_holds_params_optimizer_state_and_history(resume_runs):
    full, _, _, path = resume_runs
    saved = checkpoint.load_pytree(path)
    saved["state"] = checkpoint.restore(full.state, saved["state"])
    assert int(saved["state"].epoch) == 4 and int(saved["done"]) == 4
    np.testing.assert_array_equal(saved["records"]["loss"], full.losses)
    mu_saved = saved["state"].opt_state[0].mu
    mu_full = full.state.opt_state[0].mu
    chex.assert_trees_all_equal(mu_saved, mu_full)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    assert saved["signature"]["key"] == "[0,5]"  # the legacy key PRNGKey(5) by value


def test_resume_with_another_key_raises(ring_train, resume_runs):
    path = resume_runs[3]
    with pytest.raises(ValueError, match=r"key: checkpoint \[0,5\], now \[0,6\]"):
        training.fit(jax.random.PRNGKey(6), VectorField(), ring_train.x, ring_train.c, 6,
                     batch_size=500, chunk_epochs=2, checkpoint_path=path, progress=False)


def test_same_seed_same_numbers_and_chunking_does_not_matter(ring_train, resume_runs):
    full = resume_runs[0]
    again = training.fit(jax.random.PRNGKey(5), VectorField(), ring_train.x, ring_train.c, 4,
                         batch_size=500, chunk_epochs=2, progress=False)
    np.testing.assert_array_equal(again.losses, full.losses)
    # 3 epochs in chunks of 2 (the last chunk runs 1 epoch) reproduce the first 3 epochs
    three = training.fit(jax.random.PRNGKey(5), VectorField(), ring_train.x, ring_train.c, 3,
                         batch_size=500, chunk_epochs=2, progress=False)
    np.testing.assert_array_equal(three.losses, full.losses[:3])


def test_unit_axis_equals_one_call_per_unit_and_compiles_once(ring_train, monkeypatch):
    """Keys (U,) with stacked data train U units in one program; unit u is the one-unit call;
    every chunk length of one call and a second call share that program (traced once)."""
    field = VectorField(hidden=(8, 8))
    x, c = ring_train.x[:600], ring_train.c[:600]
    keys = jax.random.split(jax.random.key(3), 2)
    xs, cs = jnp.stack([x, x[::-1]]), jnp.stack([c, c[::-1]])
    kw = dict(batch_size=200, chunk_epochs=2, progress=False)
    with monkeypatch.context() as patch:  # a fresh jit of the chunk whose traces chex counts
        patch.setattr(driver, "_chunk", jax.jit(
            chex.assert_max_traces(driver._chunk.__wrapped__, n=1),
            static_argnames=("algorithm", "num_epochs", "vmapped")))
        both = training.fit(keys, field, xs, cs, 3, **kw)
        training.fit(keys, field, xs, cs, 5, **kw)
    assert both.losses.shape == (2, 3)
    for u in range(2):
        one = training.fit(keys[u], field, xs[u], cs[u], 3, **kw)
        np.testing.assert_allclose(both.losses[u], one.losses, rtol=1e-6)
        chex.assert_trees_all_close(jax.tree.map(lambda a, u=u: a[u], both.state.params),
                                    one.state.params, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs leading axis 2"):
        training.fit(keys, field, xs[:1], cs[:1], 1, **kw)


def test_build_epochs_loss_fn_sees_each_point_once_per_epoch():
    """With a loss that sums its batch, one SGD epoch moves θ by −lr · Σ (all kept points)."""
    x = jnp.arange(12.0).reshape(6, 2)
    c = jnp.zeros((6, 1))
    loss_fn = lambda key, p, xb, cb: jnp.sum(p * xb.sum(0))
    run = training.build_epochs(loss_fn, optax.sgd(0.1), batch_size=3)
    state = training.init_train_state(jnp.zeros(2), optax.sgd(0.1))
    state, info = run(jax.random.PRNGKey(0), state, x, c, 2)
    np.testing.assert_allclose(state.params, -0.1 * 2 * np.asarray(x).sum(0), rtol=1e-6)
    assert int(state.epoch) == 2 and info.loss.shape == (2,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_epochs=0), "num_epochs must be a positive integer, got 0"),
        (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
        (dict(batch_size=5000), "batch_size=5000 exceeds the number of points 2000"),
        (dict(x=jnp.ones((2000, 3))), r"x must have shape \(..., 2\)"),
        (dict(c=jnp.ones((1999, 1))), "x and c must share their leading"),
        (dict(x=jnp.full((2000, 2), jnp.nan)), "x contains 4000 non-finite"),
        (dict(chunk_epochs=-1), "chunk_epochs must be a positive integer, got -1"),
    ],
)
def test_fit_rejects_bad_input(ring_train, kwargs, match):
    args = dict(x=ring_train.x, c=ring_train.c, num_epochs=2)
    args.update(kwargs)
    x, c, n = args.pop("x"), args.pop("c"), args.pop("num_epochs")
    with pytest.raises(ValueError, match=match):
        training.fit(jax.random.PRNGKey(0), VectorField(), x, c, n, progress=False, **args)


def test_vector_field_satisfies_the_field_protocol():
    from bayesiamp_jax.field import Field

    field = VectorField(hidden=(4,))
    assert isinstance(field, Field)
    params = field.init(jax.random.key(0))
    v = field(params, 0.5, jnp.zeros((3, field.data_dim)), jnp.ones((3, field.cond_dim)))
    assert v.shape == (3, field.data_dim)
    assert field.num_params() == sum(np.size(a) for a in jax.tree.leaves(params))
    assert not isinstance(object(), Field)
