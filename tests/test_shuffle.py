"""shuffle.permutation equals jax.random.permutation; stable_order equals a stable argsort."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesiamp_jax import shuffle


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 10_000, 65_535])
def test_permutation_equals_jax(n):
    keys = jax.random.split(jax.random.key(n), 4)
    ours = jax.jit(jax.vmap(lambda k: shuffle.permutation(k, n)))(keys)
    theirs = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
    np.testing.assert_array_equal(ours, theirs)


def test_permutation_raw_key_and_long_arrays():
    k = jax.random.PRNGKey(3)  # legacy uint32 key
    np.testing.assert_array_equal(shuffle.permutation(k, 500), jax.random.permutation(k, 500))
    np.testing.assert_array_equal(shuffle.permutation(k, 70_000), jax.random.permutation(k, 70_000))


@pytest.mark.parametrize("high", [2, 50, 2**32 - 1])
def test_stable_order_with_ties_equals_numpy_stable_argsort(high):
    rng = np.random.default_rng(high)
    bits = rng.integers(0, high, size=3000, endpoint=True, dtype=np.uint64).astype(np.uint32)
    expected = np.argsort(bits, kind="stable")
    np.testing.assert_array_equal(jax.jit(shuffle.stable_order)(jnp.asarray(bits)), expected)


def test_stable_order_rejects_too_many_keys():
    with pytest.raises(ValueError, match="at most 65535 keys, got 70000"):
        shuffle.stable_order(jnp.zeros(70_000, jnp.uint32))
