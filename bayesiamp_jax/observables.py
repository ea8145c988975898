"""Observables: pure functions of one event to a few numbers, the axes of the histograms.

An observable maps one event x (d,) to k values (k,) and names them; the evaluation applies it
to every generated point with ``jax.vmap`` and bins the values on a product grid of
per-observable edges (``evaluation.binning``). It must be hashable (it is a static argument of
the compiled generation loop), so built-ins are frozen dataclasses and user functions are
wrapped in ``Function`` (hashed by the function object).

- ``Polar()``: the ring's (r, φ), φ in [0, 2π) (the paper's binning).
- ``RadiusCosine()``: (|x|, x₀/|x|) for any d ≥ 2: radius and the cosine of the polar angle to
  the first axis (for the d-dimensional shell both have exact truth laws, ``datasets``).
- ``Coordinates(indices)``: chosen coordinates of x.
- ``Function(fn, names)``: any user function fn(x (d,)) -> (k,).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from bayesiamp_jax import data


@runtime_checkable
class Observable(Protocol):
    """``names``: the k value names; ``__call__(x (d,)) -> (k,)`` for one event."""

    names: tuple[str, ...]

    def __call__(self, x: jax.Array) -> jax.Array:
        ...


@dataclasses.dataclass(frozen=True)
class Polar:
    """(r, φ) of a 2-D point, φ = atan2(x₁, x₀) mod 2π in [0, 2π) (``data.to_polar``)."""

    names: tuple[str, ...] = ("r", "phi")

    def __call__(self, x):
        r, phi = data.to_polar(x)
        return jnp.stack([r, phi], axis=-1)


@dataclasses.dataclass(frozen=True)
class RadiusCosine:
    """(|x|, x₀/|x|) of a point in d ≥ 2 dimensions (cos θ = 0 at the origin)."""

    names: tuple[str, ...] = ("r", "cos_theta")

    def __call__(self, x):
        r = jnp.linalg.norm(x, axis=-1)
        cos = jnp.where(r > 0, x[..., 0] / jnp.where(r > 0, r, 1.0), 0.0)
        return jnp.stack([r, cos], axis=-1)


@dataclasses.dataclass(frozen=True)
class Coordinates:
    """The coordinates ``indices`` of x, named x0, x1, …"""

    indices: tuple[int, ...] = (0, 1)

    def __post_init__(self):
        idx = tuple(self.indices)
        if not idx or any(not isinstance(i, int) or i < 0 for i in idx):
            raise ValueError(f"indices must be a non-empty tuple of integers >= 0, got {idx!r}")
        object.__setattr__(self, "indices", idx)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"x{i}" for i in self.indices)

    def __call__(self, x):
        return x[..., jnp.asarray(self.indices)]


@dataclasses.dataclass(frozen=True)
class Function:
    """A user observable: ``fn(x (d,)) -> (k,)`` (jax-traceable) with value ``names``."""

    fn: Callable
    names: tuple[str, ...]

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"fn must be callable, got {self.fn!r}")
        names = (self.names,) if isinstance(self.names, str) else tuple(self.names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"names must be a non-empty sequence of strings, got {self.names!r}")
        object.__setattr__(self, "names", names)

    def __call__(self, x):
        return jnp.reshape(self.fn(x), x.shape[:-1] + (len(self.names),))

    def __repr__(self) -> str:  # stable across processes (checkpoint signatures use it)
        fn = getattr(self.fn, "__qualname__", type(self.fn).__qualname__)
        return f"Function({getattr(self.fn, '__module__', '?')}.{fn}, names={self.names!r})"


BUILT_IN = {"polar": Polar, "radius_cosine": RadiusCosine}


def values(observable, x: jax.Array) -> jax.Array:
    """The observable of every point: x (n, d) -> (n, k) (``jax.vmap`` over points; compiled
    once per observable and shape when called outside a trace)."""
    return _batched(observable)(x)


@lru_cache(maxsize=32)
def _batched(observable):
    return jax.jit(jax.vmap(observable))


def check(observable, data_dim: int | None = None) -> Observable:
    """``observable`` if it has ``names`` and maps a (data_dim,) event to (k,); else an error."""
    names = getattr(observable, "names", None)
    if not callable(observable) or not isinstance(names, tuple) or not names:
        raise TypeError(
            f"observable must be callable with a non-empty tuple `names` (e.g. "
            f"bayesiamp_jax.observables.Polar() or Function(fn, names)), got {observable!r}"
        )
    if data_dim is not None:
        try:
            out = jax.eval_shape(observable, jax.ShapeDtypeStruct((data_dim,), jnp.float32))
        except Exception as e:  # the user's function failed on a (d,) event
            raise ValueError(f"observable {observable!r} fails on one event of shape "
                             f"({data_dim},): {type(e).__name__}: {e}".splitlines()[0]) from None
        if out.shape != (len(names),):
            raise ValueError(f"observable {observable!r} must map one event ({data_dim},) to "
                             f"({len(names)},) (one value per name), got shape {out.shape}")
    return observable
