"""bayesiamp_jax: Bayesian flow-matching generative networks, calibration and amplification."""

from bayesiamp_jax import checkpoint, data, flow, integrate, network, training
from bayesiamp_jax.checkpoint import load_pytree, save_pytree
from bayesiamp_jax.data import quantile_edges, sample_ring, sample_ring_varying, to_polar
from bayesiamp_jax.flow import cfm_loss, decode, encode, log_prob, log_prob_hutchinson, sample
from bayesiamp_jax.integrate import Solver
from bayesiamp_jax.integrate import integrate as integrate_ode
from bayesiamp_jax.network import VectorField
from bayesiamp_jax.training import TrainState, adam, fit

__version__ = "0.1.0"

__all__ = [
    "Solver",
    "TrainState",
    "VectorField",
    "adam",
    "cfm_loss",
    "checkpoint",
    "data",
    "decode",
    "encode",
    "fit",
    "flow",
    "integrate",
    "integrate_ode",
    "load_pytree",
    "log_prob",
    "log_prob_hutchinson",
    "network",
    "quantile_edges",
    "sample",
    "sample_ring",
    "sample_ring_varying",
    "save_pytree",
    "to_polar",
    "training",
]
