"""Datasets of a generative study: events x (N, d) with optional conditions c (N, k), and their
truth — exact marginals where a closed form is known, a reference sample otherwise.

Built in:
- the ring (``data.sample_ring``): x = r·u/|u| in 2-D, r = r_mean + Gamma(2, rate 2);
- the d-dimensional spherical shell of GANplification (arXiv:2008.06545): the ring's radial law
  in d dimensions with a uniform direction (u ~ N(0, I_d)); at d = 2 it is the ring, point for
  point. With ``observables.RadiusCosine`` its truth is exact for any d: r and cos θ = x₀/|x|
  are independent, r − r_mean ~ Gamma(2, rate 2) and (1 + cos θ)/2 ~ Beta((d−1)/2, (d−1)/2).
From a file: ``load_npz`` reads an ``.npz`` with arrays ``x`` (N, d) and optionally ``c``
(N, k) or (N,); a second file from the same distribution is the reference sample.

A ``Problem`` bundles what the evaluation needs: the observable, the truth (exact ``marginals``
or a ``reference`` sample), the conditions to generate with and, optionally, held-out events;
``Problem.binning(n)`` is the n-per-value quantile grid of the study. It is the ``problem``
argument of ``evaluation.evaluate(key, field, draws, problem, plan, num_train=…)``; this module
and ``bayesiamp_jax.binning`` sit below the evaluation (neither imports it).
"""

from __future__ import annotations

import math
import zipfile
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from bayesiamp_jax import _checks, data, observables, preprocessing
from bayesiamp_jax.binning import (
    Binning,
    exact_quantile_binning,
    quantile_binning,
    reference_quantile_binning,
)


class Sample(NamedTuple):
    """Events ``x`` (N, d) and conditions ``c`` (N, k), or None for unconditional data."""

    x: jax.Array
    c: jax.Array | None


# ---------------------------------------------------------------------------- marginals


class Marginal(NamedTuple):
    """A 1-D truth law: ``cdf``/``ppf`` (numpy float64) and the outer edges of its grids."""

    cdf: object
    ppf: object
    lower: float = -np.inf
    upper: float = np.inf


def ring_radius(r_mean: float = data.DEFAULT_R_MEAN) -> Marginal:
    """r = r_mean + Gamma(2, rate 2) (``data.radial_cdf`` / ``radial_quantile``)."""
    return Marginal(partial(data.radial_cdf, r_mean=r_mean),
                    partial(data.radial_quantile, r_mean=r_mean))


def uniform_angle() -> Marginal:
    """φ ~ U[0, 2π) with outer edges 0 and 2π (the ring's angle)."""
    return Marginal(lambda v: np.clip(np.asarray(v, np.float64) / data.TWO_PI, 0.0, 1.0),
                    lambda q: data.TWO_PI * np.asarray(q, np.float64), 0.0, data.TWO_PI)


def shell_cosine(dim: int) -> Marginal:
    """cos θ = x₀/|x| of a uniform direction in d dimensions: (1 + cos θ)/2 ~ Beta(a, a),
    a = (d − 1)/2 (d = 2: the arcsine law of cos φ)."""
    a = (_dim(dim) - 1) / 2.0
    beta = scipy.stats.beta(a, a)
    return Marginal(lambda v: beta.cdf((1.0 + np.asarray(v, np.float64)) / 2.0),
                    lambda q: 2.0 * beta.ppf(np.asarray(q, np.float64)) - 1.0)


def _dim(dim) -> int:
    d = _checks.positive_int("dim", dim)
    if d < 2:
        raise ValueError(f"dim must be >= 2 (a shell needs a direction), got {dim!r}")
    return d


# ----------------------------------------------------------------------------- the shell


def sample_shell(key: jax.Array, num_samples: int, dim: int = 2,
                 r_mean: float = data.DEFAULT_R_MEAN) -> Sample:
    """The d-dimensional shell at fixed ``r_mean``: x (n, d), c (n, 1) filled with r_mean.

    Same key scheme as ``data.sample_ring``: at d = 2 the two give the same points.
    """
    n = _checks.positive_int("num_samples", num_samples)
    d = _dim(dim)
    _checks.non_negative("r_mean", r_mean)
    c = jnp.full((n,), r_mean, dtype=jnp.float32)
    return Sample(data.radial_points(key, c, d), c[:, None])


def shell_log_prob(x, r_mean: float = data.DEFAULT_R_MEAN) -> jax.Array:
    """Truth log-density of the shell in Cartesian coordinates: x (..., d) -> (...).

    p(x) = p_r(|x|) / (|x|^{d−1} · |S^{d−1}|), |S^{d−1}| = 2π^{d/2}/Γ(d/2).
    """
    x = jnp.asarray(x)
    d = x.shape[-1]
    r = jnp.linalg.norm(x, axis=-1)
    log_area = math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)
    return data.radial_log_density(r, r_mean) - (d - 1) * jnp.log(jnp.maximum(r, 1e-30)) \
        - log_area


# ---------------------------------------------------------------------------------- files


def load_npz(path, num: int | None = None, *, dim: int | None = None,
             cond_dim: int | None = None) -> Sample:
    """Events from an ``.npz`` file with array ``x`` (N, d) and optional ``c`` (N, k) or (N,).

    ``num``: use the first ``num`` events (an error if the file has fewer); ``dim`` /
    ``cond_dim``: the required d and k. Every problem (missing or damaged file, missing array,
    wrong shape or dtype, NaN or inf, too few events) is a one-line ValueError naming the file
    and the array.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"data file {str(p)!r} does not exist")
    try:
        f = np.load(p, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError(f"data file {str(p)!r} is a single .npy array, not an .npz archive "
                             "with arrays 'x' (and 'c'); save it with numpy.savez(path, x=x)")
        with f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"data file {str(p)!r} is not a readable .npz file "
                         f"({type(e).__name__})") from None
    except ValueError as e:
        if str(e).startswith("data file"):
            raise
        raise ValueError(f"data file {str(p)!r} is not a readable .npz file of numeric "
                         f"arrays ({str(e).splitlines()[0]})") from None
    if "x" not in arrays:
        raise ValueError(f"data file {str(p)!r} has no array 'x' (arrays: {sorted(arrays)})")
    x = _numeric(p, "x", arrays["x"])
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"array 'x' of {str(p)!r} must have shape (N, d), got {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"array 'x' of {str(p)!r} has d = {x.shape[1]}, expected {dim}")
    c = None
    if "c" in arrays:
        c = _numeric(p, "c", arrays["c"])
        c = c[:, None] if c.ndim == 1 else c
        if c.ndim != 2 or c.shape[0] != x.shape[0] or c.shape[1] < 1:
            raise ValueError(f"array 'c' of {str(p)!r} must have shape ({x.shape[0]}, k) like "
                             f"'x' {x.shape}, got {arrays['c'].shape}")
    if cond_dim is not None and (0 if c is None else c.shape[1]) != cond_dim:
        have = "no array 'c'" if c is None else f"'c' with k = {c.shape[1]}"
        raise ValueError(f"data file {str(p)!r} has {have}, expected k = {cond_dim}")
    if num is not None:
        n = _checks.positive_int("num", num)
        if x.shape[0] < n:
            raise ValueError(f"data file {str(p)!r} has {x.shape[0]} events in 'x', fewer than "
                             f"the {n} asked for")
        x, c = x[:n], None if c is None else c[:n]
    return Sample(jnp.asarray(x), None if c is None else jnp.asarray(c))


def _numeric(path, name, a) -> np.ndarray:
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"array {name!r} of {str(path)!r} must hold real numbers, got dtype "
                         f"{a.dtype}")
    bad = a.size - int(np.count_nonzero(np.isfinite(a)))
    if bad:
        row = int(np.argwhere(~np.isfinite(a))[0][0])
        raise ValueError(f"array {name!r} of {str(path)!r} holds {bad} non-finite value(s) "
                         f"(NaN or inf; the first in row {row})")
    big = int(np.count_nonzero(np.abs(a.astype(np.float64)) > np.finfo(np.float32).max))
    if big:
        raise ValueError(f"array {name!r} of {str(path)!r} holds {big} value(s) beyond the "
                         "float32 range (|v| > 3.4e38)")
    return a.astype(np.float32)


# -------------------------------------------------------------------------------- problem


class Problem(NamedTuple):
    """What a study evaluates: the observable and the truth of its values.

    observable: ``observables.Observable``.
    marginals: exact, independent truth laws of the observable's values (``Marginal``), or
        None; then ``reference`` (a ``Sample``, the truth stand-in) defines edges and truth.
    condition: the condition(s) generation uses: a scalar for every point, (M, k) per-point
        conditions (those of the reference sample), or None for unconditional data.
    ring: True for the paper's ring (binnings are ``quantile_binning``, exactly as before).
    sampler: ``sampler(key, size) -> Sample`` of exact truth events, or None (file data).
    values: the observable of every reference event (N_ref, k), computed once by
        ``reference_problem`` (None: computed from ``reference`` when needed).
    transform: ``preprocessing.Preprocessing`` of the space the flow generates in (None: the
        flow generates physical events); reference and sampler events stay physical, and
        ``flow_observable`` is what generation bins.
    holdout: events of the same law never trained on (a ``Sample``), or None; carried for the
        held-out checks of a study (``evaluate`` does not use them).
    """

    observable: object
    marginals: tuple | None = None
    reference: Sample | None = None
    condition: object = None
    ring: bool = False
    sampler: object = None
    values: np.ndarray | None = None
    transform: object = None
    holdout: Sample | None = None

    @property
    def flow_observable(self):
        """The observable of the flow's events: ``observable`` ∘ T⁻¹ (``preprocessing.Physical``)
        with a ``transform``, else ``observable``."""
        if self.transform is None:
            return self.observable
        return preprocessing.Physical(self.observable, self.transform)

    def truth_sampler(self, key, size: int) -> np.ndarray:
        """The observable of ``size`` exact truth events, (size, k) (for the KS estimator)."""
        if self.sampler is None:
            raise ValueError("this problem has no exact truth sampler (file data)")
        return np.asarray(observables.values(self.observable, self.sampler(key, size).x))

    def binning(self, num_bins: int) -> Binning:
        """The n-per-value quantile grid: exact truth quantiles, or the reference's."""
        names = tuple(self.observable.names)
        if self.ring:
            return quantile_binning(num_bins, float(self.condition))
        if self.marginals is not None:
            return exact_quantile_binning(num_bins, self.marginals, names)
        return reference_quantile_binning(num_bins, self.reference_values(), names)

    def reference_values(self) -> np.ndarray:
        """The observable of every reference event, (N_ref, k) float64."""
        if self.values is not None:
            return self.values
        if self.reference is None:
            raise ValueError("this problem has neither exact marginals nor a reference sample")
        return np.asarray(observables.values(self.observable, self.reference.x), np.float64)


def ring_problem(r_mean: float = data.DEFAULT_R_MEAN) -> Problem:
    """The paper's ring with its polar (r, φ) observable and exact truth."""
    return Problem(observables.Polar(), (ring_radius(r_mean), uniform_angle()),
                   condition=float(r_mean), ring=True,
                   sampler=partial(_ring_sampler, r_mean=float(r_mean)))


def _ring_sampler(key, size, r_mean):
    return data.sample_ring(key, size, r_mean)


def shell_problem(dim: int, r_mean: float = data.DEFAULT_R_MEAN) -> Problem:
    """The d-dimensional shell with (r, cos θ) and their exact truth."""
    return Problem(observables.RadiusCosine(), (ring_radius(r_mean), shell_cosine(dim)),
                   condition=float(r_mean),
                   sampler=partial(sample_shell, dim=_dim(dim), r_mean=float(r_mean)))


def reference_problem(observable, reference: Sample) -> Problem:
    """Any data: edges and truth from a reference sample; its conditions (if any) are the
    per-point conditions of generation."""
    observables.check(observable, int(reference.x.shape[-1]))
    cond = None if reference.c is None else np.asarray(reference.c, np.float32)
    values = np.asarray(observables.values(observable, reference.x), np.float64)
    return Problem(observable, None, reference, cond, values=values)
