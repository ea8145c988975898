"""Optimiser and mini-batching shared by every trainer (``training``, ``posteriors``,
``regression``, ``evaluation.classifier``): the reference Adam and the per-epoch mini-batch
index blocks. It sits below all of them (it imports only ``shuffle``), so a posterior does not
import the flow-matching trainer for its optimiser.
"""

from __future__ import annotations

import jax
import optax

from bayesiamp_jax import shuffle

__all__ = ["BETAS", "LEARNING_RATE", "adam", "cosine_decay", "minibatch_indices"]

LEARNING_RATE = 1e-3
BETAS = (0.99, 0.99)


def adam(learning_rate: float = LEARNING_RATE, b1: float = BETAS[0], b2: float = BETAS[1]):
    """The reference optimiser: Adam, lr 1e-3, betas (0.99, 0.99)."""
    return optax.adam(learning_rate, b1=b1, b2=b2)


def cosine_decay(num_steps: int, final_fraction: float, learning_rate: float = LEARNING_RATE):
    """The rate at step k: f·η + (1 − f)·η·(1 + cos(π·min(k, K)/K))/2 (optax's cosine decay,
    η = ``learning_rate``, K = ``num_steps``, f = ``final_fraction``): η at step 0, f·η from K."""
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not 0.0 <= final_fraction <= 1.0:
        raise ValueError(f"final_fraction must be in [0, 1], got {final_fraction!r}")
    return optax.cosine_decay_schedule(learning_rate, num_steps, alpha=final_fraction)


def minibatch_indices(key: jax.Array, num_points: int, batch_size: int) -> jax.Array:
    """A random permutation cut into (num_points // batch_size, batch_size) index blocks.

    The remainder (num_points mod batch_size points) is dropped for this epoch.
    """
    num_batches = num_points // batch_size
    perm = shuffle.permutation(key, num_points)  # = jax.random.permutation, faster on CPUs
    return perm[: num_batches * batch_size].reshape(num_batches, batch_size)
