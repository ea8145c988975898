"""What the library calls on a vector field: the ``Field`` protocol.

Any object with this interface can be trained (``training.fit``, the posterior drivers),
sampled (``flow.sample``/``decode``/``log_prob``) and evaluated (``evaluation``):
``bayesiamp_jax.network.VectorField`` is the reference implementation; the closed-form fields
of the tests are others. The drivers pass the field to ``jax.jit`` as a static argument, so it
must be hashable and compare by value (a frozen dataclass or NamedTuple of settings).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax


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
