"""Uncertainty-aware regression network: a small MLP predicting a mean and a variance per input.

Heteroscedastic Gaussian likelihood y ~ N(m_θ(x), v_θ(x)), with v = softplus(raw) + min_variance.
The layers are the project's one MLP (``bayesiamp_jax.network``: Dense_0 … Dense_L, the same
activations), so its parameters are a plain flax linen params pytree; ``net(params, x)`` is
written for one point and broadcasts over leading axes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bayesiamp_jax import _checks
from bayesiamp_jax.network import _MLP, ACTIVATIONS, PRECISIONS


@dataclasses.dataclass(frozen=True)
class RegressionNet:
    """in_dim → hidden → 2 (mean, raw variance). Hashable: usable as a jit static argument.

    Inputs are standardised inside as (x − input_shift) / input_scale. ``activation``: one of
    ``bayesiamp_jax.network.ACTIVATIONS``; ``precision``: the float32 matmul precision of
    ``bayesiamp_jax.network`` ("default": the backend's, as before the shared MLP).
    """

    in_dim: int = 1
    hidden: tuple[int, ...] = (32, 32)
    activation: str = "elu"
    min_variance: float = 1e-6
    input_shift: float = 0.0
    input_scale: float = 1.0
    precision: str = "default"

    def __post_init__(self):
        _checks.positive_int("in_dim", self.in_dim)
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for i, w in enumerate(self.hidden):
            _checks.positive_int(f"hidden[{i}]", w)
        _checks.one_of("activation", self.activation, tuple(ACTIVATIONS))
        _checks.non_negative("min_variance", self.min_variance)
        _checks.positive("input_scale", self.input_scale)
        _checks.one_of("precision", self.precision, PRECISIONS)

    @property
    def _module(self) -> _MLP:
        return _MLP(self.hidden, 2, self.precision, self.activation)

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
