"""Compiled generation into histograms: numpy agreement, chunk/device invariance, known N_eq."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesiamp_jax as bj
from bayesiamp_jax import data
from bayesiamp_jax.evaluation import (
    amplification,
    generate_samples,
    histogram_polar,
    histogram_same_noise,
    histogram_scaled,
    make_binning,
    quantile_binning,
    ring_cell_probabilities,
)
from bayesiamp_jax.evaluation import generate as gen_module
from bayesiamp_jax.posteriors import PosteriorDraws

SOLVER = bj.Solver("rk4", num_steps=20)
# shared static configuration: the compiled loops are reused across tests (and by
# test_evaluation_pipeline), since compilation dominates the run time
CHUNK = 512
SAME_BINS = [3, 5]
SCALED_BINS = [5, 10]


@dataclasses.dataclass(frozen=True)
class ScaleField:
    """v = θ x: decoding from t = 1 to 0 scales the noise by exp(−θ) (RK4: by R(hθ)^steps)."""

    data_dim: int = 2
    cond_dim: int = 1

    def __call__(self, params, t, x, c=None):
        return params["theta"] * x


def rk4_scale(theta, steps=20):
    z = -theta / steps  # h θ with h = −1/steps
    return (1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24) ** steps


def rayleigh_cell_probabilities(binning, scale):
    """Cell probabilities of r = scale · |z|, z ~ N(0, I₂) (Rayleigh), φ uniform."""
    r = np.clip(binning.r, 0, np.inf) / scale
    pr = -np.diff(np.exp(-(r**2) / 2))
    return np.outer(pr, np.diff(binning.phi) / (2 * np.pi))


@pytest.fixture(scope="module")
def vf_draws():
    field = bj.VectorField()
    return field, jax.vmap(field.init)(jax.random.split(jax.random.key(0), 3))


def test_quantile_binning_truth_is_uniform_and_exact():
    b = quantile_binning(7)
    np.testing.assert_allclose(b.truth, 1 / 49)
    np.testing.assert_allclose(ring_cell_probabilities(b.r, b.phi), 1 / 49, rtol=1e-10)
    assert b.shape == (7, 7) and b.label == "7x7"


def test_histogram_agrees_with_numpy_histogram2d(vf_draws):
    field, draws = vf_draws
    hist = histogram_same_noise(jax.random.key(1), field, PosteriorDraws(draws, "test", {}),
                                [5, 10], 3000, chunk_size=1024, progress=False)
    assert [c.shape for c in hist.counts] == [(1, 3, 5, 5), (1, 3, 10, 10)]
    for s in range(3):
        x = generate_samples(jax.random.key(1), field, PosteriorDraws(draws, "", {}).draw(s),
                             3000, solver=SOLVER)
        r, phi = (np.asarray(v) for v in data.to_polar(x))
        for b, counts in zip(hist.binnings, hist.counts, strict=True):
            # edges rounded to the samples' float32, as the compiled binning uses them
            ref, _, _ = np.histogram2d(r, phi, bins=[b.r.astype(np.float32),
                                                     b.phi.astype(np.float32)])
            np.testing.assert_array_equal(counts[0, s], ref)


def test_histogram_polar_edges_and_outside_points():
    # points exactly on edges go right (last edge closed, as numpy); outside points drop
    b = make_binning([1.0, 2.0, 3.0], [0.0, np.pi, 2 * np.pi])
    x = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [0.5, 0.0], [4.0, 0.0], [0.0, -2.5]])
    r, phi = np.hypot(x[:, 0], x[:, 1]), np.mod(np.arctan2(x[:, 1], x[:, 0]), 2 * np.pi)
    ref, _, _ = np.histogram2d(r, phi, bins=[b.r, b.phi])
    np.testing.assert_array_equal(histogram_polar(x.astype(np.float32), b), ref)
    assert ref.sum() == 4


SCALE_THETA = -np.log(5.0)  # r ~ 5 · Rayleigh: most mass on the ring grid


def _scale_draws(runs, draws, theta=SCALE_THETA):
    return {"theta": jnp.full((runs, draws), theta, jnp.float32)}


@pytest.mark.parametrize("n, size, chunk, decoded", [
    (40_000, 2**15, 20_224, 40_448),  # two even chunks (were two of 32,768: 65,536 decoded)
    (18_000, 2**15, 18_176, 18_176),  # one chunk, rounded up to 256 (was 32,768)
    (80, 2**15, 256, 256),
    (65_536, 2**15, 2**15, 65_536),
    (5_000, 1_000, 1_000, 5_000),  # chunk_size bounds the chunk even off the 256 grid
    (2_500, 512, 512, 2_560),  # the tests' CHUNK: 5 chunks (2,500 / 5 = 500 -> 512)
])
def test_chunks_split_evenly_within_chunk_size(n, size, chunk, decoded):
    """Fewest chunks of at most chunk_size, split evenly and rounded up to 256 (by hand)."""
    assert gen_module.chunk_for(n, size) == chunk
    assert gen_module.decoded_points(n, size) == decoded


def test_chunked_equals_unchunked():
    field, params = ScaleField(), _scale_draws(1, 2)
    kw = dict(has_run_axis=True, progress=False)
    a = histogram_same_noise(jax.random.key(2), field, params, SAME_BINS, 2500, chunk_size=4096,
                             **kw)
    b = histogram_same_noise(jax.random.key(2), field, params, SAME_BINS, 2500, chunk_size=CHUNK,
                             **kw)
    for x, y in zip(a.counts, b.counts, strict=True):
        np.testing.assert_array_equal(x, y)
        assert x.sum() == 2 * 2500
    # same noise: identical draws give identical histograms
    np.testing.assert_array_equal(a.counts[0][0, 0], a.counts[0][0, 1])


def test_scaled_mode_draws_are_multinomial_with_known_n_eq():
    # Fresh noise per draw and identical weights: each draw is a histogram of N independent
    # points with known cell probabilities p (Rayleigh on the ring grid), so
    # E[N_eq] = S/(S−3) · Σ_j (N p_j/(1−p_j) + 1/S) (binomial variance, ddof-0 std over S).
    runs, draws, per_cell = 4, 30, 60
    hist = histogram_scaled(jax.random.key(3), ScaleField(), _scale_draws(runs, draws),
                            SCALED_BINS, per_cell, chunk_size=CHUNK, has_run_axis=True,
                            progress=False)
    assert hist.num_samples == (60 * 25, 60 * 100)
    scale = rk4_scale(SCALE_THETA)
    for b, frac, n in zip(hist.binnings, hist.fractions, hist.num_samples, strict=True):
        p = rayleigh_cell_probabilities(b, scale)
        sd = np.sqrt(p * (1 - p) / (n * runs * draws))
        assert np.all(np.abs(frac.mean(axis=(0, 1)) - p) < 5 * sd + 1e-12)
        expected = draws / (draws - 3) * np.sum(n * p / (1 - p) + 1 / draws)
        n_eq = amplification(frac, p, 1000).n_eq
        # relative sd of the mean over 4 runs ≈ sqrt(2/(S−5)/n_Q)/2: 7 % (25 cells), 1.4 % (100)
        np.testing.assert_allclose(n_eq.mean(), expected, rtol=0.25 if b.num_cells == 25 else 0.07)
    # different runs and draws see different noise
    assert not np.array_equal(hist.counts[1][0, 0], hist.counts[1][1, 0])
    assert not np.array_equal(hist.counts[1][0, 0], hist.counts[1][0, 1])


def test_checkpoint_resumes_after_interruption(tmp_path, monkeypatch):
    field, params = ScaleField(), _scale_draws(1, 4)
    kw = dict(has_run_axis=True, progress=False, chunk_size=CHUNK)
    full = histogram_scaled(jax.random.key(4), field, params, SCALED_BINS[:1], 50, **kw)
    path = tmp_path / "scaled.partial"
    group0 = tmp_path / "scaled.partial.g0.msgpack"  # resumable.run_chunks file of group 0
    original = gen_module._block_fn
    calls = []

    def interrupting(*args):
        fn = original(*args)

        def wrapped(*a):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return fn(*a)

        return wrapped

    monkeypatch.setattr(gen_module, "_block_fn", interrupting)
    with pytest.raises(KeyboardInterrupt):
        histogram_scaled(jax.random.key(4), field, params, SCALED_BINS[:1], 50,
                         checkpoint_path=path, **kw)
    assert group0.is_file()
    calls.clear()
    other = _scale_draws(1, 4, theta=-1.0)  # another posterior must not reuse the checkpoint
    with pytest.raises(KeyboardInterrupt):
        histogram_scaled(jax.random.key(4), field, other, SCALED_BINS[:1], 50,
                         checkpoint_path=path, **kw)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(KeyboardInterrupt):  # the first two draws run again, the third stops
        histogram_scaled(jax.random.key(4), field, params, SCALED_BINS[:1], 50,
                         checkpoint_path=path, **kw)
    calls.clear()
    resumed = histogram_scaled(jax.random.key(4), field, params, SCALED_BINS[:1], 50,
                               checkpoint_path=path, **kw)
    assert len(calls) == 2  # only the two draws that were missing
    np.testing.assert_array_equal(resumed.counts[0], full.counts[0])
    assert not path.exists()


def test_bad_input_raises(vf_draws):
    field, draws = vf_draws
    key = jax.random.key(0)
    one = jax.tree_util.tree_map(lambda v: v[:1], draws)
    with pytest.raises(ValueError, match="at least 2 weight draws"):
        histogram_same_noise(key, field, one, [5], 10, progress=False)
    with pytest.raises(ValueError, match="num_bins must be >= 2"):
        histogram_same_noise(key, field, draws, [1], 10, progress=False)
    with pytest.raises(ValueError, match="at least 2 cells"):
        make_binning([0.0, np.inf], [0.0, 2 * np.pi])
    with pytest.raises(ValueError, match="strictly increasing"):
        make_binning([0.0, 2.0, 1.0], [0.0, 2 * np.pi])
    with pytest.raises(ValueError, match="num_samples"):
        histogram_same_noise(key, field, draws, [5], 0, progress=False)
    with pytest.raises(ValueError, match="same structure|different tree"):
        histogram_same_noise(key, field, [draws, {"theta": np.zeros(3)}], [5], 10,
                             progress=False)


SHARDED_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import sys, dataclasses
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    from test_evaluation_generate import CHUNK, SCALED_BINS, THETA, ScaleField
    from bayesiamp_jax.evaluation import histogram_same_noise, histogram_scaled
    assert len(jax.devices()) == 4
    a = histogram_scaled(jax.random.key(5), ScaleField(), THETA, SCALED_BINS[:1], 20,
                         has_run_axis=True, progress=False, chunk_size=CHUNK)
    np.save(sys.argv[1], a.counts[0])
    print("OK")
    """
)


THETA = {"theta": np.linspace(-1.8, -1.4, 6, dtype=np.float32).reshape(2, 3)}


def test_sharded_equals_unsharded(tmp_path):
    # 2 runs × 3 draws over 4 forced host devices (padded to 8) vs one device, in scaled mode
    # (noise depends on the global draw index); a subprocess, since the device count is fixed
    # when jax starts
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_SCRIPT.format(tests=tests_dir))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "sharded.npy")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
    here = histogram_scaled(jax.random.key(5), ScaleField(), THETA, SCALED_BINS[:1], 20,
                            has_run_axis=True, progress=False, chunk_size=CHUNK)
    sharded = np.load(tmp_path / "sharded.npy")
    np.testing.assert_array_equal(sharded, here.counts[0])
    assert len({c.tobytes() for c in here.counts[0].reshape(6, -1)}) == 6  # fresh per draw
