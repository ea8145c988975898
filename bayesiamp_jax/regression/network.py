"""Uncertainty-aware regression network: a small MLP predicting a mean and a variance per input.

Heteroscedastic Gaussian likelihood y ~ N(m_θ(x), v_θ(x)), with v = softplus(raw) + min_variance.
Parameters are a plain flax linen params pytree; ``net(params, x)`` is written for one point and
broadcasts over leading axes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bayesiamp_jax import _checks

ACTIVATIONS = {"elu": nn.elu, "tanh": jnp.tanh, "gelu": nn.gelu}


class _MLP(nn.Module):
    hidden: tuple[int, ...]
    activation: str

    @nn.compact
    def __call__(self, h):
        act = ACTIVATIONS[self.activation]
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        return nn.Dense(2)(h)


@dataclasses.dataclass(frozen=True)
class RegressionNet:
    """in_dim → hidden → 2 (mean, raw variance). Hashable: usable as a jit static argument.

    Inputs are standardised inside as (x − input_shift) / input_scale.
    """

    in_dim: int = 1
    hidden: tuple[int, ...] = (32, 32)
    activation: str = "elu"
    min_variance: float = 1e-6
    input_shift: float = 0.0
    input_scale: float = 1.0

    def __post_init__(self):
        _checks.positive_int("in_dim", self.in_dim)
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for i, w in enumerate(self.hidden):
            _checks.positive_int(f"hidden[{i}]", w)
        _checks.one_of("activation", self.activation, tuple(ACTIVATIONS))
        _checks.non_negative("min_variance", self.min_variance)
        _checks.positive("input_scale", self.input_scale)

    @property
    def _module(self) -> _MLP:
        return _MLP(self.hidden, self.activation)

    def init(self, key: jax.Array):
        """Initial parameters (flax default initialisers) as a nested dict pytree."""
        return self._module.init(key, jnp.zeros((self.in_dim,)))["params"]

    def num_params(self) -> int:
        widths = (self.in_dim,) + self.hidden + (2,)
        return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))

    def __call__(self, params, x) -> tuple[jax.Array, jax.Array]:
        """x (..., in_dim) -> (mean (...), variance (...))."""
        x = jnp.asarray(x)
        _checks.last_dim("x", x, self.in_dim)
        _checks.params_match("params", self, params)
        out = self._module.apply({"params": params}, (x - self.input_shift) / self.input_scale)
        return out[..., 0], jax.nn.softplus(out[..., 1]) + self.min_variance


def gaussian_nll(mean, variance, y) -> jax.Array:
    """−log N(y; mean, variance), elementwise."""
    return 0.5 * (jnp.log(2 * math.pi * variance) + (y - mean) ** 2 / variance)


@functools.lru_cache(maxsize=64)
def nll_loss_fn(net: RegressionNet) -> Callable:
    """``loss_fn(key, params, (x (B, in_dim), y (B,))) -> mean NLL`` (the key is unused).

    One function per (hashable) network, so fits of the same network share compiled code."""

    def loss_fn(key, params, batch):
        x, y = batch
        mean, variance = net(params, x)
        return jnp.mean(gaussian_nll(mean, variance, y))

    return loss_fn
