"""The one resumable loop: chunking, resume, signatures, warm-up, against hand-computed sums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesiamp_jax import resumable


def _walk_step(scale):
    """A random walk: state (key, position); each item adds scale · N(0, 1) from fold_in(key, i).
    Its records are the positions, so the answer is a cumulative sum computable by hand."""

    def step(state, start, n):
        key, pos = state
        out = []
        for i in range(start, start + n):
            pos = pos + scale * jax.random.normal(jax.random.fold_in(key, i))
            out.append(pos)
        return (key, pos), {"pos": np.asarray(out)}

    return step


def _expected(key, scale, total):
    steps = [scale * float(jax.random.normal(jax.random.fold_in(key, i))) for i in range(total)]
    return np.cumsum(np.asarray(steps, np.float32))


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    key = jax.random.key(3)
    state = (key, jnp.float32(0.0))
    sig = resumable.signature(scale=0.5, key=key)
    full = resumable.run_chunks(_walk_step(0.5), state, 7, chunk=3, progress=False)
    np.testing.assert_allclose(full.records["pos"], _expected(key, 0.5, 7), rtol=1e-5)
    path = tmp_path / "walk.msgpack"
    part = resumable.run_chunks(_walk_step(0.5), state, 4, chunk=3, checkpoint_path=path,
                                signature=sig, progress=False)
    assert not part.resumed and part.records["pos"].shape == (4,)
    rest = resumable.run_chunks(_walk_step(0.5), state, 7, chunk=3, checkpoint_path=path,
                                signature=sig, progress=False)
    assert rest.resumed
    np.testing.assert_array_equal(rest.records["pos"], full.records["pos"])
    np.testing.assert_array_equal(np.asarray(rest.state[1]), np.asarray(full.state[1]))
    assert jax.random.key_data(rest.state[0]).tolist() == jax.random.key_data(key).tolist()


def test_changed_setting_is_an_error_naming_it(tmp_path):
    key = jax.random.key(0)
    path = tmp_path / "walk.msgpack"
    state = (key, jnp.float32(0.0))
    resumable.run_chunks(_walk_step(0.5), state, 2, chunk=1, checkpoint_path=path,
                         signature=resumable.signature(sigma=0.5, data=np.ones(100)),
                         progress=False)
    with pytest.raises(ValueError, match=r"sigma: checkpoint 0\.5, now 0\.7") as err:
        resumable.run_chunks(_walk_step(0.7), state, 4, chunk=1, checkpoint_path=path,
                             signature=resumable.signature(sigma=0.7, data=np.ones(100)),
                             progress=False)
    assert "data" not in str(err.value)  # equal data digests are not reported
    with pytest.raises(ValueError, match="data: checkpoint sha256:"):
        resumable.run_chunks(_walk_step(0.5), state, 4, chunk=1, checkpoint_path=path,
                             signature=resumable.signature(sigma=0.5, data=np.zeros(100)),
                             progress=False)


def test_prepare_runs_only_on_a_fresh_start_and_ahead_checkpoints_restart(tmp_path):
    key = jax.random.key(1)
    path = tmp_path / "walk.msgpack"
    calls = []

    def prepare(state):
        calls.append(1)
        return (state[0], state[1] + 10.0)

    kw = dict(chunk=2, checkpoint_path=path, progress=False, prepare=prepare)
    a = resumable.run_chunks(_walk_step(1.0), (key, jnp.float32(0.0)), 2, **kw)
    b = resumable.run_chunks(_walk_step(1.0), (key, jnp.float32(0.0)), 4, **kw)
    assert len(calls) == 1
    np.testing.assert_allclose(b.records["pos"], 10.0 + _expected(key, 1.0, 4), rtol=1e-5)
    np.testing.assert_array_equal(a.records["pos"], b.records["pos"][:2])
    with pytest.warns(UserWarning, match="more than total=3; starting over"):
        c = resumable.run_chunks(_walk_step(1.0), (key, jnp.float32(0.0)), 3, **kw)
    assert len(calls) == 2 and not c.resumed
    np.testing.assert_array_equal(c.records["pos"], b.records["pos"][:3])


def test_signature_describes_values_and_digests():
    sig = resumable.signature(k=10.0, name="vi", n=3, arr=np.array([1.0, 2.0]),
                              big=np.zeros(1000), key=jax.random.key(2), none=None)
    assert sig["k"] == "10.0" and sig["name"] == "'vi'" and sig["n"] == "3"
    assert sig["arr"] == "[1.,2.]" and sig["key"] == "[0,2]" and sig["none"] == "None"
    assert sig["big"].startswith("sha256:")
    assert resumable.digest(np.zeros(1000)) != resumable.digest(np.zeros(1001))


def test_restart_on_mismatch_recomputes_for_a_signature_keyed_cache(tmp_path):
    key = jax.random.key(5)
    path = tmp_path / "cache.msgpack"
    kw = dict(chunk=2, checkpoint_path=path, progress=False, on_mismatch="restart")
    resumable.run_chunks(_walk_step(1.0), (key, jnp.float32(0.0)), 2,
                         signature=resumable.signature(scale=1.0), **kw)
    other = resumable.run_chunks(_walk_step(2.0), (key, jnp.float32(0.0)), 3,
                                 signature=resumable.signature(scale=2.0), **kw)
    assert not other.resumed
    np.testing.assert_allclose(other.records["pos"], _expected(key, 2.0, 3), rtol=1e-5)
    with pytest.raises(ValueError, match="on_mismatch"):
        resumable.run_chunks(_walk_step(1.0), (key, 0.0), 1, chunk=1, on_mismatch="ignore")
