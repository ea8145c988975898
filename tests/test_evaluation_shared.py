"""One fresh sample per draw for several binnings (``histogram_scaled(shared=True)``)."""

import jax
import jax.numpy as jnp
import numpy as np
from test_evaluation_generate import ScaleField  # v = θ x, cheap to compile

import bayesiamp_jax as bj
from bayesiamp_jax import data
from bayesiamp_jax.evaluation import generate_samples, histogram_scaled

SOLVER = bj.Solver("rk4", num_steps=20)


def test_shared_sample_fills_every_binning_from_one_documented_noise_stream():
    field = ScaleField()
    params = {"theta": -jnp.log(jnp.array([4.5, 5.0, 5.5], jnp.float32))}
    key = jax.random.key(4)
    hist = histogram_scaled(key, field, params, [5, 10], 6, chunk_size=256, progress=False,
                            shared=True)
    assert hist.num_samples == (600, 600) and hist.mode == "scaled"
    for s in range(3):
        draw = jax.tree_util.tree_map(lambda leaf, s=s: leaf[s], params)
        x = generate_samples(jax.random.fold_in(key, 0), field, draw, 600, solver=SOLVER,
                             draw_index=s)
        r, phi = (np.asarray(v) for v in data.to_polar(x))
        for b, counts in zip(hist.binnings, hist.counts, strict=True):
            ref, _, _ = np.histogram2d(r, phi, bins=[b.r.astype(np.float32),
                                                     b.phi.astype(np.float32)])
            np.testing.assert_array_equal(counts[0, s], ref)
    # the 5 × 5 truth-quantile edges are every other 10 × 10 edge: one sample fills both
    coarse = hist.counts[1].reshape(1, 3, 5, 2, 5, 2).sum(axis=(3, 5))
    np.testing.assert_array_equal(hist.counts[0], coarse)
    assert jnp.all(hist.counts[0].sum(axis=(2, 3)) <= 600)
