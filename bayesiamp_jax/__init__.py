"""bayesiamp_jax: Bayesian flow-matching generative networks, calibration and amplification.

``bj.integrate`` is the ODE module (``bj.integrate.integrate(f, y0, t0, t1, solver)``,
``bj.Solver``); the weight posteriors live in ``bayesiamp_jax.posteriors``, the evaluation in
``bayesiamp_jax.evaluation``.
"""

from bayesiamp_jax import (
    checkpoint,
    data,
    datasets,
    field,
    flow,
    integrate,
    network,
    observables,
    resumable,
    training,
)
from bayesiamp_jax.checkpoint import load_pytree, save_pytree
from bayesiamp_jax.data import quantile_edges, sample_ring, sample_ring_varying, to_polar
from bayesiamp_jax.field import Field, ModuleField
from bayesiamp_jax.flow import cfm_loss, decode, encode, log_prob, log_prob_hutchinson, sample
from bayesiamp_jax.integrate import Solver
from bayesiamp_jax.network import VectorField
from bayesiamp_jax.training import TrainResult, TrainState, adam, fit

__version__ = "0.1.0"

__all__ = [
    "Field",
    "ModuleField",
    "Solver",
    "TrainResult",
    "TrainState",
    "VectorField",
    "adam",
    "cfm_loss",
    "checkpoint",
    "data",
    "datasets",
    "decode",
    "encode",
    "field",
    "fit",
    "flow",
    "integrate",
    "load_pytree",
    "log_prob",
    "log_prob_hutchinson",
    "network",
    "observables",
    "quantile_edges",
    "resumable",
    "sample",
    "sample_ring",
    "sample_ring_varying",
    "save_pytree",
    "to_polar",
    "training",
]
