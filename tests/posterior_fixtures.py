"""Shared closed-form test problem for the weight-posterior tests.

Bayesian linear regression y = X w + b + ε, ε ~ N(0, σ_n²), prior N(0, s² I) on (w, b):
the posterior is Gaussian with precision A = ΦᵀΦ/σ_n² + I/s² (Φ = [X, 1]) and mean
A⁻¹ Φᵀy / σ_n², computed here with numpy, independently of the code under test.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

NOISE = 0.5
PRIOR = 1.0


class Conjugate(NamedTuple):
    x: np.ndarray  # (N, D)
    y: np.ndarray  # (N,)
    template: dict  # {"w": (D,), "b": (1,)}
    mean: np.ndarray  # posterior mean over the flat weights [w, b] (P,)
    cov: np.ndarray  # posterior covariance (P, P)
    precision: np.ndarray


def conjugate_problem(n: int = 24, d: int = 2, seed: int = 0) -> Conjugate:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w_true = rng.normal(size=d)
    y = (x @ w_true + 0.3 + NOISE * rng.normal(size=n)).astype(np.float32)
    phi = np.concatenate([x, np.ones((n, 1))], axis=1).astype(np.float64)
    precision = phi.T @ phi / NOISE**2 + np.eye(d + 1) / PRIOR**2
    cov = np.linalg.inv(precision)
    mean = cov @ phi.T @ y.astype(np.float64) / NOISE**2
    template = {"b": np.zeros(1, np.float32), "w": np.zeros(d, np.float32)}
    # ravel_pytree orders dict keys alphabetically: flat = [b, w]; reorder the answer to match
    order = np.r_[d, np.arange(d)]
    return Conjugate(x, y, template, mean[order], cov[np.ix_(order, order)],
                     precision[np.ix_(order, order)])


def mean_loss(params, batch):
    """Mean over the batch of (y − x·w − b)² / (2 σ_n²): −log-likelihood per point + const."""
    x, y = batch
    resid = y - x @ params["w"] - params["b"][0]
    return jnp.mean(resid**2) / (2 * NOISE**2)


def mean_loss_key(key, params, batch):
    return mean_loss(params, batch)
