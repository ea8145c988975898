"""Shared, cheap, session-scoped fixtures and closed-form vector fields for the test suite.

Closed-form fields (``GaussianMorphField``, ``LinearField``) are hashable callables with the
``VectorField`` call signature ``field(params, t, x, c)``, written for one point and broadcasting
over leading axes, so every function of ``bayesiamp_jax.flow`` accepts them. Their flows, densities
and parameter gradients are known exactly (see the docstrings), which gives tests answers that
do not depend on the code under test.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from bayesiamp_jax.data import sample_ring
from bayesiamp_jax.network import VectorField
from bayesiamp_jax.training import fit

# The suite's programs are tiny and compiling them is most of its time: XLA's CPU backend
# compiles them without its LLVM optimisation passes (several times faster to compile, slower
# to run; the same operations, so the same numbers up to rounding, and every test compares
# within its own tolerance or two programs built alike). Set at import, before JAX starts its
# backend (importing JAX does not); subprocesses of the tests inherit it. Measured in
# docs/testing.md.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

_CACHE_ENV = {"JAX_COMPILATION_CACHE_DIR": (None, str),
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": ("0", float),
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": ("0", int)}


def pytest_configure(config):
    """One persistent compilation cache per test run, in a fresh temporary folder shared by
    the xdist workers and the subprocesses the tests start (they inherit the environment).
    Tests build the same programs again and again (every study invocation makes new
    closures of the same trainers, generators and probes), and an identical program is then
    loaded instead of compiled; the compiled code, hence every number, is the same. Each run
    starts empty, so nothing carries over between runs (docs/testing.md). A folder already
    named by ``JAX_COMPILATION_CACHE_DIR`` is used as it is."""
    if not hasattr(config, "workerinput") and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="bayesiamp-jax-compile-cache-")
        config._bayesiamp_cache = folder
        os.environ.update({k: v or folder for k, (v, _) in _CACHE_ENV.items()})
    for name, (_, kind) in _CACHE_ENV.items():
        if name in os.environ:
            jax.config.update(name.lower(), kind(os.environ[name]))


def pytest_unconfigure(config):
    folder = getattr(config, "_bayesiamp_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class GaussianMorphField:
    """Transports N(μ, diag s²) at t = 0 (data) exactly to N(0, I) at t = 1 (noise).

    Path x_t = (1 − t) μ + σ(t) ⊙ z with σ(t) = s + (1 − s) t, hence
    v(t, x) = −μ + (1 − s) / σ(t) ⊙ (x − (1 − t) μ) and tr ∂v/∂x = Σ_i (1 − s_i) / σ_i(t).
    ``decode(z) = μ + s ⊙ z`` and ``log p(x) = log N(x; μ, diag s²)`` exactly.
    params = {"mu": (d,), "log_s": (d,)}; c is accepted and ignored.
    """

    data_dim: int = 2
    cond_dim: int = 1

    def __call__(self, params, t, x, c=None):
        mu, s = params["mu"], jnp.exp(params["log_s"])
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1])[..., None]
        sigma = s + (1.0 - s) * t
        return -mu + (1.0 - s) / sigma * (x - (1.0 - t) * mu)

    @staticmethod
    def params(mu, s):
        return {"mu": jnp.asarray(mu, jnp.float32), "log_s": jnp.log(jnp.asarray(s, jnp.float32))}

    @staticmethod
    def log_prob(x, mu, s) -> np.ndarray:
        """Exact log N(x; μ, diag s²) in float64."""
        return scipy.stats.norm.logpdf(np.asarray(x, np.float64), mu, s).sum(-1)


@dataclasses.dataclass(frozen=True)
class LinearField:
    """v(t, x) = A x + b (time-independent; A need not be symmetric).

    Encoding: z = E x + A⁻¹(E − I) b with E = expm(A); log p(x) = log N(z; 0, I) + tr A.
    params = {"A": (d, d), "b": (d,)}; c is accepted and ignored.
    """

    data_dim: int = 2
    cond_dim: int = 1

    def __call__(self, params, t, x, c=None):
        return x @ params["A"].T + params["b"]

    @staticmethod
    def encode(x, A, b) -> np.ndarray:
        """Exact flow map t = 0 → 1 in float64."""
        A, b = np.asarray(A, np.float64), np.asarray(b, np.float64)
        E = scipy.linalg.expm(A)
        shift = np.linalg.solve(A, (E - np.eye(len(b))) @ b)
        return np.asarray(x, np.float64) @ E.T + shift

    @classmethod
    def log_prob(cls, x, A, b) -> np.ndarray:
        z = cls.encode(x, A, b)
        return scipy.stats.norm.logpdf(z).sum(-1) + np.trace(np.asarray(A, np.float64))


class TrainedCNF(NamedTuple):
    """A briefly trained reference-sized CNF, its training data and per-epoch losses."""

    field: VectorField
    params: object
    x: jax.Array
    c: jax.Array
    losses: np.ndarray


@pytest.fixture(scope="session")
def gaussian_morph():
    """(field, params, mu, s): exact N(μ, diag s²) ↔ N(0, I) flow, μ = (1, −2), s = (0.5, 2)."""
    mu, s = np.array([1.0, -2.0]), np.array([0.5, 2.0])
    return GaussianMorphField(), GaussianMorphField.params(mu, s), mu, s


@pytest.fixture(scope="session")
def linear_field():
    """(field, params, A, b): the linear field v = A x + b with a non-symmetric A."""
    A = np.array([[-0.3, 0.8], [-0.2, 0.5]])
    b = np.array([0.4, -0.1])
    params = {"A": jnp.asarray(A, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
    return LinearField(), params, A, b


@pytest.fixture(scope="session")
def ring_train():
    """2,000 ring points at r_mean = 4 (seed 0): RingSample(x (2000, 2), c (2000, 1))."""
    return sample_ring(jax.random.PRNGKey(0), 2000)


@pytest.fixture(scope="session")
def trained_cnf(ring_train):
    """Reference VectorField trained 150 epochs (batch 500) on ``ring_train``; ~3 s on 2 CPUs."""
    field = VectorField()
    result = fit(
        jax.random.PRNGKey(1), field, ring_train.x, ring_train.c, 150,
        batch_size=500, chunk_epochs=150, progress=False,
    )
    return TrainedCNF(field, result.state.params, ring_train.x, ring_train.c, result.losses)


@pytest.fixture(scope="session")
def tiny_field():
    """(field, params): a random small VectorField(hidden=(8, 8)) for gradient checks."""
    field = VectorField(hidden=(8, 8))
    return field, field.init(jax.random.PRNGKey(2))
