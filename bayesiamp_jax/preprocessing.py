"""Per-column preprocessing of events: fitted on training events, inverted before observables.

The flow is trained on z = T(x), not on the physical events x, where T acts column by column:
a fixed nonlinear map g (to an unbounded, smooth variable) followed by a standardisation fitted
on the training events, z_j = (g_j(x_j) − shift_j) / scale_j. Generated z are mapped back with
x = T⁻¹(z) before any observable sees them, so histograms, edges and reports stay in physical
units (``Physical`` wraps an observable as observable ∘ T⁻¹).

Kinds (one per column; ``parse_spec`` reads a comma list):

=================  ==========================  =================================  ==============
kind               g(x)                        g⁻¹(y)                             standardised
=================  ==========================  =================================  ==============
identity           x                           y                                  no
standardise        x                           y                                  yes
log                log x           (x > 0)     exp y                              yes
logcut:<c>         log(x − c)      (x > c)     c + exp y                          yes
periodic[:lo:hi]   wrap(x) into [lo, hi)       wrap(y)                            to [−π, π)
logit:<lo>:<hi>    log u − log(1−u), u=(x−lo)/(hi−lo)  lo + (hi−lo)·sigmoid(y)    yes
=================  ==========================  =================================  ==============

A periodic column (default [−π, π); ``periodic:0:2pi``, ``periodic:0:360``) keeps its dimension:
the flow learns the angle itself (rescaled to [−π, π) when the period is not 2π) and the inverse
wraps its output back into [lo, hi), so probability the flow puts just beyond one edge lands at
the other, where it belongs on the circle. A (cos φ, sin φ) embedding was not chosen: it adds a
dimension, generated points off the unit circle need a projection (not a bijection, no
density), and the observable would see a different d than the data. For [−π, π) the forward map
of an angle inside the interval is the identity bit for bit, so inverse ∘ forward is exact.

Densities: log p_x(x) = log p_z(T(x)) + log|det ∂T/∂x| (``Preprocessing.log_det_jacobian``).

Everything is array maths on the last axis (columns) and broadcasts over leading axes; the
parameters are NamedTuples of Python floats (hashable: a ``Physical`` observable is a static
argument of the compiled generation loop) and round-trip through JSON (``to_dict``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("identity", "standardise", "log", "logcut", "periodic", "logit")
PERIOD = 2.0 * math.pi
MAX_DISCRETE_VALUES = 10  # a column of at most this many distinct integers is discrete
FORMAT_VERSION = 1


class Column(NamedTuple):
    """One column's transform z = (g(x) − shift) / scale.

    kind: one of ``KINDS``; lo, hi: the cut (logcut: lo), the bounds (logit) or the period
    interval (periodic); shift, scale: the standardisation after g (0, 1: none).
    """

    kind: str
    lo: float = 0.0
    hi: float = 0.0
    shift: float = 0.0
    scale: float = 1.0


# ------------------------------------------------------------------------------ parsing


def _number(text: str, spec: str) -> float:
    """A float, or a multiple of pi: "pi", "-pi", "2pi", "0.5pi"."""
    t = text.strip().lower()
    try:
        if t.endswith("pi"):
            coef = t[:-2].strip().rstrip("*").strip()
            factor = {"": 1.0, "+": 1.0, "-": -1.0}.get(coef)
            value = (float(coef) if factor is None else factor) * math.pi
        else:
            value = float(t)
    except ValueError:
        raise ValueError(f"preprocessing kind {spec!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"preprocessing kind {spec!r}: {text!r} is not a finite number")
    return value


def parse(kind: str) -> Column:
    """The unfitted ``Column`` of one kind string ("log", "logcut:20", "logit:0:1", ...)."""
    if not isinstance(kind, str):
        raise ValueError(f"a preprocessing kind must be a string, got {kind!r}")
    name, *args = [p.strip() for p in kind.strip().split(":")]
    name = {"standardize": "standardise", "none": "identity"}.get(name, name)
    if name not in KINDS:
        raise ValueError(f"unknown preprocessing kind {kind!r} (kinds: identity, standardise, "
                         "log, logcut:<cut>, periodic, periodic:<lo>:<hi>, logit:<lo>:<hi>)")
    want = {"logcut": (1,), "logit": (2,), "periodic": (0, 2)}.get(name, (0,))
    if len(args) not in want:
        usage = {"logcut": "logcut:<cut>", "logit": "logit:<lo>:<hi>",
                 "periodic": "periodic or periodic:<lo>:<hi>"}.get(name, name)
        raise ValueError(f"preprocessing kind {kind!r} must be written {usage}")
    values = [_number(a, kind) for a in args]
    if name == "logcut":
        return Column("logcut", lo=values[0])
    if name in ("logit", "periodic"):
        lo, hi = values if values else (-math.pi, math.pi)
        if not lo < hi:
            raise ValueError(f"preprocessing kind {kind!r} needs lo < hi, got {lo!r} and {hi!r}")
        return Column(name, lo=lo, hi=hi)
    return Column(name)


def parse_spec(spec, dim: int) -> tuple[Column, ...]:
    """Unfitted columns of a spec: one kind for every column ("standardise") or a comma list
    with one kind per column ("log,periodic,identity"); "" and "none": identity."""
    kinds = spec.split(",") if isinstance(spec, str) else list(spec)
    kinds = [k.strip() for k in kinds]
    if kinds in ([""], []):
        kinds = ["identity"]
    if len(kinds) == 1:
        kinds = kinds * dim
    if len(kinds) != dim:
        raise ValueError(f"preprocessing {spec!r} names {len(kinds)} column kinds but the "
                         f"events have d = {dim} columns (give one kind, or one per column)")
    return tuple(parse(k) for k in kinds)


# -------------------------------------------------------------------- one column's maths


def _wrap(x, lo, hi):
    """x mapped into [lo, hi) by whole periods; values already inside are returned unchanged."""
    p = hi - lo
    y = x - p * jnp.floor((x - lo) / p)
    y = jnp.where(y >= hi, y - p, y)  # rounding of the floor at the edges
    y = jnp.where(y < lo, y + p, y)
    y = jnp.where((x >= lo) & (x < hi), x, y)
    below_hi = jnp.nextafter(jnp.asarray(hi, y.dtype), jnp.asarray(lo, y.dtype))
    return jnp.clip(y, jnp.asarray(lo, y.dtype), below_hi)


def _g(c: Column, x):
    if c.kind == "log":
        return jnp.log(x)
    if c.kind == "logcut":
        return jnp.log(x - c.lo)
    if c.kind == "logit":
        u = (x - c.lo) / (c.hi - c.lo)
        return jnp.log(u) - jnp.log1p(-u)
    if c.kind == "periodic":
        return _wrap(x, c.lo, c.hi)
    return x


def _g_inverse(c: Column, y):
    if c.kind == "log":
        return jnp.exp(y)
    if c.kind == "logcut":
        return c.lo + jnp.exp(y)
    if c.kind == "logit":
        return c.lo + (c.hi - c.lo) * jax.nn.sigmoid(y)
    if c.kind == "periodic":
        return _wrap(y, c.lo, c.hi)
    return y


def _log_g_prime(c: Column, x):
    if c.kind == "log":
        return -jnp.log(x)
    if c.kind == "logcut":
        return -jnp.log(x - c.lo)
    if c.kind == "logit":
        return math.log(c.hi - c.lo) - jnp.log(x - c.lo) - jnp.log(c.hi - x)
    return jnp.zeros_like(x)


def forward(params: Column, x):
    """z = (g(x) − shift) / scale of one column's values x (any shape)."""
    z = _g(params, jnp.asarray(x))
    if params.shift == 0.0 and params.scale == 1.0:
        return z
    return (z - params.shift) / params.scale


def inverse(params: Column, z):
    """x = g⁻¹(z · scale + shift) of one column's values z (any shape)."""
    z = jnp.asarray(z)
    if not (params.shift == 0.0 and params.scale == 1.0):
        z = z * params.scale + params.shift
    return _g_inverse(params, z)


def log_det(params: Column, x):
    """log |dz/dx| of one column, elementwise."""
    return _log_g_prime(params, jnp.asarray(x)) - math.log(params.scale)


def fit(kind, column, *, name: str = "column") -> Column:
    """The ``Column`` of ``kind`` (a string or an unfitted ``Column``) fitted on the values
    ``column`` (N,): the domain is checked (one-line error naming ``name``), and for the
    standardised kinds shift and scale are the mean and standard deviation of g(x) (float64)."""
    c = parse(kind) if isinstance(kind, str) else kind
    x = np.asarray(column)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"{name}: fitting needs a 1-D column of >= 2 values, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: holds non-finite values (NaN or inf)")
    lo, hi = float(x.min()), float(x.max())
    domain = {"log": (lo <= 0, "> 0"), "logcut": (lo <= c.lo, f"> {c.lo:g} (the cut)"),
              "logit": (lo <= c.lo or hi >= c.hi, f"strictly inside ({c.lo:g}, {c.hi:g})")}
    bad, need = domain.get(c.kind, (False, ""))
    if bad:
        raise ValueError(f"{name}: kind {_label(c)!r} needs every value {need}, got values in "
                         f"[{lo:.6g}, {hi:.6g}]")
    if c.kind in ("identity",):
        return c._replace(shift=0.0, scale=1.0)
    if c.kind == "periodic":  # the period interval onto [−π, π) (identity for [−π, π))
        centre = 0.5 * (c.lo + c.hi)
        return c._replace(shift=centre, scale=(c.hi - c.lo) / PERIOD)
    g = np.asarray(_g(c._replace(shift=0.0, scale=1.0), x.astype(np.float32)), np.float64)
    if not np.all(np.isfinite(g)):
        raise ValueError(f"{name}: kind {_label(c)!r} gives non-finite values (values too close "
                         "to a bound for float32)")
    sd = float(g.std())
    if not sd > 0:
        raise ValueError(f"{name}: all values are equal ({lo:.6g}); a constant column cannot be "
                         "standardised: drop it or move it to the conditions")
    return c._replace(shift=float(g.mean()), scale=sd)


def _label(c: Column) -> str:
    if c.kind == "logcut":
        return f"logcut:{c.lo:g}"
    if c.kind in ("logit", "periodic"):
        return f"{c.kind}:{c.lo:g}:{c.hi:g}"
    return c.kind


# -------------------------------------------------------------------- all columns


class Preprocessing(NamedTuple):
    """Per-column transforms of events (d,) -> (d,): ``columns[j]`` acts on x[..., j]."""

    columns: tuple[Column, ...]

    @property
    def dim(self) -> int:
        return len(self.columns)

    @property
    def is_identity(self) -> bool:
        return all(c.kind == "identity" for c in self.columns)

    @classmethod
    def fit(cls, spec, x, *, name: str = "events") -> Preprocessing:
        """Fit ``spec`` (``parse_spec``) on training events x (N, d)."""
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"{name}: events must have shape (N, d), got {x.shape}")
        cols = parse_spec(spec, x.shape[1])
        return cls(tuple(fit(c, x[:, j], name=f"{name}, column {j}")
                         for j, c in enumerate(cols)))

    def _check(self, a):
        a = jnp.asarray(a)
        if a.ndim < 1 or a.shape[-1] != self.dim:
            raise ValueError(f"events must have shape (..., {self.dim}), got {a.shape}")
        return a

    def forward(self, x):
        """z = T(x): x (..., d) -> (..., d)."""
        x = self._check(x)
        return jnp.stack([forward(c, x[..., j]) for j, c in enumerate(self.columns)], -1)

    def inverse(self, z):
        """x = T⁻¹(z): z (..., d) -> (..., d) (periodic columns wrapped into [lo, hi))."""
        z = self._check(z)
        return jnp.stack([inverse(c, z[..., j]) for j, c in enumerate(self.columns)], -1)

    def log_det_jacobian(self, x):
        """log |det ∂T/∂x| at physical events x (..., d) -> (...): the transform is
        column-wise, so the Jacobian is diagonal and this is Σ_j log |dz_j/dx_j|."""
        x = self._check(x)
        return sum(log_det(c, x[..., j]) for j, c in enumerate(self.columns))

    def to_dict(self) -> dict:
        """JSON-ready: {"version": 1, "columns": [{kind, lo, hi, shift, scale}, ...]}."""
        return {"version": FORMAT_VERSION, "columns": [c._asdict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d) -> Preprocessing:
        """Inverse of ``to_dict`` (a one-line error for anything else)."""
        try:
            if d.get("version") != FORMAT_VERSION:
                raise ValueError(f"version {d.get('version')!r} (expected {FORMAT_VERSION})")
            cols = []
            for c in d["columns"]:
                col = Column(str(c["kind"]), *(float(c[k]) for k in Column._fields[1:]))
                if col.kind not in KINDS or not (math.isfinite(col.scale) and col.scale > 0):
                    raise ValueError(f"bad column {c!r}")
                cols.append(col)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a saved preprocessing ({type(e).__name__}: {e})") from None
        if not cols:
            raise ValueError("not a saved preprocessing (no columns)")
        return cls(tuple(cols))


# -------------------------------------------------------------------- observables


@dataclasses.dataclass(frozen=True)
class Physical:
    """``observable`` of the physical event T⁻¹(z) of a flow-space event z (d,): what the
    evaluation bins for a flow trained on preprocessed events (names as the observable's)."""

    observable: object
    preprocessing: Preprocessing

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.observable.names)

    def __call__(self, z):
        return self.observable(self.preprocessing.inverse(z))


def physical_observable(observable):
    """The observable of physical events: ``observable`` itself, or the one a ``Physical``
    wraps (for values of raw samples such as the reference or held-out events)."""
    return observable.observable if isinstance(observable, Physical) else observable


# -------------------------------------------------------------------- discrete columns


def discrete_columns(x, max_values: int = MAX_DISCRETE_VALUES) -> list[tuple[int, np.ndarray]]:
    """(column, distinct values) of every column of x (N, d) that holds at most ``max_values``
    distinct values, all integers (a charge, a detector region): a continuous flow cannot
    learn them."""
    x = np.asarray(x)
    out = []
    for j in range(x.shape[1]):
        col = x[:, j]
        values = np.unique(col)
        if values.size <= max_values and np.all(values == np.round(values)):
            out.append((j, values))
    return out


def refuse_discrete(x, where: str, max_values: int = MAX_DISCRETE_VALUES) -> None:
    """A one-line ValueError naming ``where`` and the first discrete column of x, if any."""
    found = discrete_columns(x, max_values)
    if found:
        j, values = found[0]
        shown = ", ".join(f"{v:g}" for v in values)
        raise ValueError(f"{where}: column {j} of 'x' is discrete (only the integer values "
                         f"{shown}): a flow learns continuous columns only; move it to the "
                         "conditions array 'c' of the file (the flow is then conditioned on "
                         "it) or drop it")
