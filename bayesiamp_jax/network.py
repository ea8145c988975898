"""The vector field v_θ(t, x, c): an ELU MLP on a Fourier time embedding, x and c.

``VectorField`` is a frozen (hashable) description of the architecture; its parameters are a
plain pytree (flax linen's nested dict). ``field(params, t, x, c)`` is written for one point and
broadcasts over leading batch axes; add posterior-draw axes with ``jax.vmap`` outside.

Matmul precision is an explicit field: ``"highest"`` (true float32, the default) or
``"default"`` (TF32 on NVIDIA GPUs: faster, but it changes adaptive step counts and summed
log-likelihoods noticeably; see MEASURED.md). On CPUs both are identical.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from bayesiamp_jax import _checks

PRECISIONS = ("default", "high", "highest")
ACTIVATIONS = {"elu": nn.elu, "tanh": jnp.tanh, "silu": nn.silu, "gelu": nn.gelu,
               "softplus": nn.softplus}


def time_embedding(t: jax.Array, num_frequencies: int) -> jax.Array:
    """[cos(kπt), sin(kπt) for k = 1..K] along a new last axis: t (...,) -> (..., 2K)."""
    k = jnp.arange(1, num_frequencies + 1, dtype=jnp.result_type(t, jnp.float32))
    angle = math.pi * t[..., None] * k
    return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1)


class _MLP(nn.Module):
    hidden: tuple[int, ...]
    out_dim: int
    precision: str
    activation: str = "elu"

    @nn.compact
    def __call__(self, h):
        act = ACTIVATIONS[self.activation]
        for width in self.hidden:
            h = act(nn.Dense(width, precision=self.precision)(h))
        return nn.Dense(self.out_dim, precision=self.precision)(h)


@dataclasses.dataclass(frozen=True)
class VectorField:
    """Architecture of v_θ; the reference is 9 → 32 → 32 → 32 → 2 (2,498 parameters).

    Attributes:
        data_dim: dimension d of x (2 for the ring).
        cond_dim: dimension of the condition c (1: r_mean). 0 for an unconditional field.
        hidden: widths of the hidden ELU layers; () gives the affine field
            v = W [emb(t), x, c] + b (a Gaussian-to-Gaussian flow).
        num_frequencies: K in the cos/sin(kπt) embedding (2K time inputs).
        precision: float32 matmul precision, one of "default", "high", "highest".
        activation: of the hidden layers, one of ``ACTIVATIONS`` (elu, tanh, silu, gelu,
            softplus); the reference is "elu".
    """

    data_dim: int = 2
    cond_dim: int = 1
    hidden: tuple[int, ...] = (32, 32, 32)
    num_frequencies: int = 3
    precision: str = "highest"
    activation: str = "elu"

    def __post_init__(self):
        _checks.positive_int("data_dim", self.data_dim)
        if not isinstance(self.cond_dim, int) or self.cond_dim < 0:
            raise ValueError(f"cond_dim must be an integer >= 0, got {self.cond_dim!r}")
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for i, w in enumerate(self.hidden):
            _checks.positive_int(f"hidden[{i}]", w)
        if not isinstance(self.num_frequencies, int) or self.num_frequencies < 0:
            raise ValueError(
                f"num_frequencies must be an integer >= 0, got {self.num_frequencies!r}"
            )
        _checks.one_of("precision", self.precision, PRECISIONS)
        _checks.one_of("activation", self.activation, tuple(ACTIVATIONS))

    @property
    def input_dim(self) -> int:
        return 2 * self.num_frequencies + self.data_dim + self.cond_dim

    @property
    def _module(self) -> _MLP:
        return _MLP(self.hidden, self.data_dim, self.precision, self.activation)

    def init(self, key: jax.Array):
        """Initial parameters (flax default initialisers) as a nested dict pytree."""
        return _init(self, key)

    def num_params(self) -> int:
        widths = (self.input_dim,) + self.hidden + (self.data_dim,)
        return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))

    def __call__(self, params, t, x, c=None) -> jax.Array:
        """v_θ(t, x, c): t (...) or scalar, x (..., d), c (..., cond_dim) -> (..., d)."""
        x = jnp.asarray(x)
        _checks.params_match("params", self, params)
        return _apply(self, params, t, x, self._check_c(x, c))

    def velocity_and_divergence(self, params, t, x, c=None) -> tuple[jax.Array, jax.Array]:
        """v_θ (..., d) and the exact tr(∂v/∂x) (...,) in one forward pass.

        The d input tangents are pushed through the layers alongside the activations
        (forward-mode by hand), which fuses into a few small matmuls per layer; it is several
        times cheaper to differentiate than d autodiff JVPs (benchmarks/RESULTS.md).
        """
        x = jnp.asarray(x)
        _checks.params_match("params", self, params)
        c = self._check_c(x, c)
        return _velocity_and_divergence(self, params, t, x, c)

    def _check_c(self, x, c):
        _checks.last_dim("x", x, self.data_dim)
        if not self.cond_dim:
            return None
        if c is None:
            raise ValueError(f"c is required: this field has cond_dim={self.cond_dim}")
        c = jnp.asarray(c, dtype=x.dtype)
        _checks.last_dim("c", c, self.cond_dim)
        return c


@partial(jax.jit, static_argnums=0)
def _init(field: VectorField, key: jax.Array):
    # jitted: one compilation instead of one per initialiser op (seconds on a CPU)
    return field._module.init(key, jnp.zeros((1, field.input_dim)))["params"]


def _inputs(field: VectorField, t, x, c) -> jax.Array:
    """[embedding(t), x, c] along the last axis: (..., input_dim)."""
    batch = x.shape[:-1]
    t = jnp.broadcast_to(jnp.asarray(t, dtype=x.dtype), batch)
    parts = [time_embedding(t, field.num_frequencies), x]
    if c is not None:
        parts.append(jnp.broadcast_to(c, batch + (field.cond_dim,)))
    return jnp.concatenate(parts, axis=-1)


@partial(jax.jit, static_argnums=0)
def _apply(field: VectorField, params, t, x, c):
    # jitted so that eager calls compile once per shape; inlined inside an outer jit
    return field._module.apply({"params": params}, _inputs(field, t, x, c))


@partial(jax.jit, static_argnums=0)
def _velocity_and_divergence(field: VectorField, params, t, x, c):
    # Same layers as _MLP (flax names them Dense_0..Dense_L); tangent[..., i, :] = ∂h/∂x_i.
    h = _inputs(field, t, x, c)
    layers = [params[f"Dense_{i}"] for i in range(len(field.hidden) + 1)]
    start, d = 2 * field.num_frequencies, field.data_dim
    dot = partial(jnp.matmul, precision=field.precision)
    tangent = None
    for i, layer in enumerate(layers[:-1]):
        a = dot(h, layer["kernel"]) + layer["bias"]
        if i == 0:
            w = layer["kernel"][start:start + d]  # ∂a/∂x: rows of x in the first kernel
            tangent = jnp.broadcast_to(w, x.shape[:-1] + w.shape)
        else:
            tangent = dot(tangent, layer["kernel"])
        if field.activation == "elu":
            h = nn.elu(a)
            slope = jnp.where(a > 0, 1.0, jnp.exp(jnp.minimum(a, 0.0)))
        else:  # elementwise activation: its derivative by one forward-mode pass
            h, slope = jax.jvp(ACTIVATIONS[field.activation], (a,), (jnp.ones_like(a),))
        tangent = tangent * slope[..., None, :]
    out = layers[-1]
    v = dot(h, out["kernel"]) + out["bias"]
    if tangent is None:  # hidden=(): v is affine in x, ∂v/∂x = the x rows of the kernel
        div = jnp.trace(out["kernel"][start:start + d])
        return v, jnp.broadcast_to(div, x.shape[:-1]).astype(v.dtype)
    jac = dot(tangent, out["kernel"])  # (..., d, d), jac[..., i, j] = ∂v_j/∂x_i
    return v, jnp.trace(jac, axis1=-2, axis2=-1)
