"""Optimiser and mini-batching shared by every trainer (``training``, ``posteriors``,
``regression``, ``evaluation.classifier``): the reference Adam and the per-epoch mini-batch
index blocks. It sits below all of them (it imports only ``shuffle``), so a posterior does not
import the flow-matching trainer for its optimiser.
"""

from __future__ import annotations

import jax
import optax

from bayesiamp_jax import shuffle

__all__ = ["BETAS", "LEARNING_RATE", "adam", "minibatch_indices"]

LEARNING_RATE = 1e-3
BETAS = (0.99, 0.99)


def adam(learning_rate: float = LEARNING_RATE, b1: float = BETAS[0], b2: float = BETAS[1]):
    """The reference optimiser: Adam, lr 1e-3, betas (0.99, 0.99)."""
    return optax.adam(learning_rate, b1=b1, b2=b2)


def minibatch_indices(key: jax.Array, num_points: int, batch_size: int) -> jax.Array:
    """A random permutation cut into (num_points // batch_size, batch_size) index blocks.

    The remainder (num_points mod batch_size points) is dropped for this epoch.
    """
    num_batches = num_points // batch_size
    perm = shuffle.permutation(key, num_points)  # = jax.random.permutation, faster on CPUs
    return perm[: num_batches * batch_size].reshape(num_batches, batch_size)
