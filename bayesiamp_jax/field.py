"""What the library calls on a vector field: the ``Field`` protocol.

Any object with this interface can be trained (``training.fit``, the posterior drivers),
sampled (``flow.sample``/``decode``/``log_prob``) and evaluated (``evaluation``):
``bayesiamp_jax.network.VectorField`` is the reference implementation; the closed-form fields
of the tests are others. The drivers pass the field to ``jax.jit`` as a static argument, so it
must be hashable and compare by value (a frozen dataclass or NamedTuple of settings).

``ModuleField(module, data_dim, cond_dim)`` turns a user's own flax linen module into a
``Field`` (its call convention is in its docstring).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from bayesiamp_jax import _checks


@runtime_checkable
class Field(Protocol):
    """A conditional vector field v_θ(t, x | c) of a continuous normalizing flow.

    Attributes:
        data_dim: d, the size of x.
        cond_dim: the size of the condition c.

    Optional (looked up with ``getattr``): ``velocity_and_divergence(params, t, x, c) ->
    (v (..., d), div (...,))``, a fused velocity and exact divergence tr ∂v/∂x for
    ``flow.log_prob`` (default: forward-mode autodiff of ``__call__``).
    """

    data_dim: int
    cond_dim: int

    def __call__(self, params, t: jax.Array, x: jax.Array, c: jax.Array) -> jax.Array:
        """v (..., d) at time t (scalar or (...)) for x (..., d) and c (..., cond_dim); written
        for one point, broadcasting over leading axes (draw axes are added with ``jax.vmap``)."""
        ...

    def init(self, key: jax.Array):
        """A params pytree drawn with ``key`` (the trainers' initialisation)."""
        ...

    def num_params(self) -> int:
        """P, the number of weights (AdamMCMC's default σ_dir = P / 50)."""
        ...


@dataclasses.dataclass(frozen=True)
class ModuleField:
    """A user's flax linen module as a ``Field``.

    The module's call convention: ``module.apply({"params": p}, t, x, c) -> v`` with t (...,)
    (already broadcast to x's leading axes, x's dtype), x (..., d), c (..., cond_dim) (already
    broadcast; None when ``cond_dim == 0``) and v (..., d); written for any leading axes (flax
    ``nn.Dense`` acts on the last axis, so an MLP on ``concatenate([t[..., None], x, c], -1)``
    qualifies). Its attributes must be hashable (ints, floats, strings, tuples: flax modules then
    hash and compare by value), because the drivers compile with the field as a static argument.

    Attributes:
        module: the ``flax.linen.Module`` (unbound, as constructed).
        data_dim: d, the size of x.
        cond_dim: the size of c (0: unconditional; the module gets c = None).

    ``init(key)`` runs ``module.init`` on one dummy point (t = 0, x = 0, c = 0); there is no
    fused ``velocity_and_divergence``, so ``flow.log_prob`` takes the exact divergence by
    forward-mode autodiff (d JVPs). Example::

        class ResMLP(nn.Module):
            width: int = 32

            @nn.compact
            def __call__(self, t, x, c):
                h = nn.Dense(self.width)(jnp.concatenate([t[..., None], x, c], axis=-1))
                h = h + nn.Dense(self.width)(jnp.tanh(h))
                return nn.Dense(x.shape[-1])(jnp.tanh(h))

        field = ModuleField(ResMLP(), data_dim=2, cond_dim=1)
        params = field.init(jax.random.key(0))
        v = field(params, 0.5, x, c)                       # x (n, 2), c (n, 1) -> (n, 2)
    """

    module: object
    data_dim: int = 2
    cond_dim: int = 1

    def __post_init__(self):
        import flax.linen as nn  # flax is a dependency; imported here to keep field.py light

        if not isinstance(self.module, nn.Module):
            raise TypeError(f"module must be a flax.linen.Module, got {self.module!r}")
        try:
            hash(self.module)
        except TypeError:
            raise TypeError(f"module {type(self.module).__name__} must be hashable (its "
                            "attributes ints, floats, strings or tuples, not lists or "
                            "arrays): the field is a static argument of jax.jit") from None
        _checks.positive_int("data_dim", self.data_dim)
        if isinstance(self.cond_dim, bool) or not isinstance(self.cond_dim, int) \
                or self.cond_dim < 0:
            raise ValueError(f"cond_dim must be an integer >= 0, got {self.cond_dim!r}")

    def __repr__(self) -> str:  # one line (flax's own repr spans lines; errors quote it)
        return (f"ModuleField({_module_repr(self.module)}, data_dim={self.data_dim}, "
                f"cond_dim={self.cond_dim})")

    def init(self, key: jax.Array):
        """The module's params pytree (``module.init(key, t, x, c)["params"]`` on one point)."""
        return _module_init(self, key)

    def num_params(self) -> int:
        """P, the number of weights of ``init``'s params."""
        spec = jax.eval_shape(self.init, jax.random.key(0))
        return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(spec)))

    def __call__(self, params, t, x, c=None) -> jax.Array:
        """v (..., d) at t (scalar or (...)), x (..., d), c (..., cond_dim) or broadcastable."""
        x = jnp.asarray(x)
        _checks.last_dim("x", x, self.data_dim)
        batch = x.shape[:-1]
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), batch)
        if self.cond_dim:
            if c is None:
                raise ValueError(f"c is required: this field has cond_dim={self.cond_dim}")
            c = jnp.asarray(c, x.dtype)
            _checks.last_dim("c", c, self.cond_dim)
            c = jnp.broadcast_to(c, batch + (self.cond_dim,))
        else:
            c = None
        v = self.module.apply({"params": params}, t, x, c)
        if jnp.shape(v) != x.shape:
            raise ValueError(f"module {type(self.module).__name__} must return v of x's shape "
                             f"{x.shape}, got shape {tuple(jnp.shape(v))}")
        return v


def _module_repr(module) -> str:
    """``Name(attr=value, ...)`` of a flax module on one line (nested modules likewise)."""
    import flax.linen as nn

    parts = []
    for f in dataclasses.fields(module):
        if f.name in ("parent", "name") and not (f.name == "name" and module.name):
            continue
        value = getattr(module, f.name)
        parts.append(f"{f.name}=" + (_module_repr(value) if isinstance(value, nn.Module)
                                     else " ".join(repr(value).split())))
    return f"{type(module).__name__}({', '.join(parts)})"


@partial(jax.jit, static_argnums=0)
def _module_init(field: ModuleField, key):
    # jitted: one compilation instead of one per initialiser op
    t = jnp.zeros((1,))
    x = jnp.zeros((1, field.data_dim))
    c = jnp.zeros((1, field.cond_dim)) if field.cond_dim else None
    return field.module.init(key, t, x, c)["params"]
