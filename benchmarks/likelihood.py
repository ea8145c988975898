"""Gradient-based samplers' unit costs: one AdamMCMC step and one NUTS gradient evaluation.

- ``adammcmc_step``: ``bayesiamp_jax.posteriors.adammcmc`` kernel on the exact CNF likelihood
  (RK4, ``size.likelihood_steps`` checkpointed steps, exact divergence) of one mini-batch:
  two value-and-gradients through the ODE, two Adam updates, the prolate proposal, MH;
  the core uses ``VectorField.velocity_and_divergence`` (tangents pushed through the MLP by
  hand); ``jax_autodiff``: the same with the generic divergence from d autodiff JVPs.
- ``nuts_grad``: value and gradient of the numpyro potential energy that NUTS integrates
  (Gibbs flow-matching likelihood on ``size.nuts_points`` points with fixed noise, N(0, 1)
  prior), i.e. the cost of one leapfrog step.
Run ``python -m benchmarks.likelihood --size tiny``.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from bayesiamp_jax.integrate import Solver
from benchmarks.common import record, time_jax, time_torch
from benchmarks.floor import REVERSE_MULTIPLIER, divergence_multiplier, field_flops, floor

SIGMA = 0.1


def _exact_loss(ctx, autodiff: bool = False):
    """L(θ) = −N · mean_B log p_θ(x | c); ``autodiff``: generic JVP divergence."""
    from bayesiamp_jax.posteriors.model import exact_nll_loss_fn

    solver = Solver("rk4", ctx.size.likelihood_steps, checkpoint=True)
    from bayesiamp_jax.flow import AutodiffDivergence

    field = AutodiffDivergence(ctx.field) if autodiff else ctx.field
    nll = exact_nll_loss_fn(field, solver)
    return lambda params, batch: ctx.size.num_train * nll(params, batch)


def _adammcmc_floor(ctx, seconds):
    b = ctx.size.batch_size
    evals = 4 * ctx.size.likelihood_steps
    per_point = field_flops(ctx.field) * divergence_multiplier(ctx.field.data_dim)
    flops = 2 * b * evals * per_point * (REVERSE_MULTIPLIER + 1)  # +1: rematerialisation
    num_bytes = 2 * ctx.size.likelihood_steps * b * (ctx.field.data_dim + 1) * 4 * 2
    return floor(flops, num_bytes, ctx.device, seconds)


def bench_adammcmc_step(ctx) -> list[dict]:
    from bayesiamp_jax.posteriors import adammcmc

    data = ctx.train_data()
    b = ctx.size.batch_size
    batch = (data.x[:b], data.c[:b])
    params = ctx.trained_params()
    p = ctx.field.num_params()
    sigma_dir = p / 50
    kernel = adammcmc.build_kernel()
    loss = _exact_loss(ctx)
    state = adammcmc.init(params)
    t = time_jax(lambda k, s, bt: kernel(k, s, loss, bt, SIGMA, sigma_dir), ctx.key(20), state,
                 batch, repeats=ctx.size.repeats)
    recs = [record("adammcmc_step", "jax", t, unit="step", batch=b,
                   rk4_steps=ctx.size.likelihood_steps, loss=float(t["output"][1].loss),
                   **_adammcmc_floor(ctx, t["median_s"]))]
    generic = _exact_loss(ctx, autodiff=True)
    t = time_jax(lambda k, s, bt: kernel(k, s, generic, bt, SIGMA, sigma_dir), ctx.key(20), state,
                 batch, repeats=ctx.size.repeats)
    recs.append(record("adammcmc_step", "jax_autodiff", t, unit="step", batch=b,
                       rk4_steps=ctx.size.likelihood_steps, loss=float(t["output"][1].loss),
                       **_adammcmc_floor(ctx, t["median_s"])))
    recs.extend(loglik_accuracy(ctx, params, batch))
    if ctx.baseline:
        recs.append(_torch_adammcmc(ctx, batch, params, sigma_dir))
    return recs


ACCURACY_STEPS = (5, 10, 20)
TIGHT_STEPS = 200


def loglik_accuracy(ctx, params, batch) -> list[dict]:
    """Error of Σ_B log p (what enters the MH ratio, scaled by N/|B|) per RK4 step count."""
    from bayesiamp_jax.flow import log_prob

    x, c = batch
    ref = np.asarray(log_prob(ctx.field, params, x, c, Solver("rk4", TIGHT_STEPS)), np.float64)
    scale = ctx.size.num_train / x.shape[0]
    out = []
    for steps in ACCURACY_STEPS:
        lp = np.asarray(log_prob(ctx.field, params, x, c, Solver("rk4", steps)), np.float64)
        out.append({"name": "loglik_accuracy", "impl": "jax", "solver": f"rk4-{steps}",
                    "evals": 4 * steps, "batch": int(x.shape[0]),
                    "max_point_err": float(np.max(np.abs(lp - ref))),
                    "potential_err": float(scale * abs(np.sum(lp - ref)))})
    return out


def _torch_adammcmc(ctx, batch, params, sigma_dir) -> dict:
    import torch

    from benchmarks import torch_ref

    field = ctx.torch_field(params)
    x, c = (torch.as_tensor(np.array(a)) for a in batch)
    loss = torch_ref.FlatLoss(field, x, c, ctx.size.num_train, ctx.size.likelihood_steps)
    theta = torch.nn.utils.parameters_to_vector(field.parameters()).detach()
    root_p = math.sqrt(theta.numel())
    state = (torch.zeros_like(theta), torch.zeros_like(theta), 0)
    gen = torch.Generator().manual_seed(ctx.seed)
    fn = lambda: torch_ref.adammcmc_step(loss, theta, state, SIGMA / root_p, sigma_dir / root_p,
                                         gen)
    t = time_torch(fn, repeats=max(1, ctx.size.repeats // 2))
    return record("adammcmc_step", "torch", t, unit="step", batch=x.shape[0],
                  rk4_steps=ctx.size.likelihood_steps, **_adammcmc_floor(ctx, t["median_s"]))


def bench_nuts_grad(ctx) -> list[dict]:
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import potential_energy

    from bayesiamp_jax.posteriors.model import cnf_weight_model, with_cfm_noise

    n = ctx.size.nuts_points
    data = ctx.train_data()
    batch = with_cfm_noise(ctx.key(30), data.x[:n], data.c[:n])
    params = ctx.trained_params()
    model = cnf_weight_model(ctx.field, params, likelihood="fm", num_data=n)
    theta = ravel_pytree(params)[0]

    def potential(th, bt):
        return potential_energy(model, (bt,), {}, {"theta": th})

    t = time_jax(jax.value_and_grad(potential), theta, batch, repeats=ctx.size.repeats)
    flops = REVERSE_MULTIPLIER * n * field_flops(ctx.field)
    fl = floor(flops, n * 6 * 4, ctx.device, t["median_s"])
    recs = [record("nuts_grad", "jax", t, unit="gradient", points=n,
                   potential=float(t["output"][0]), **fl)]
    if ctx.baseline:
        recs.append(_torch_nuts_grad(ctx, batch, params, n, float(t["output"][0])))
    return recs


def _torch_nuts_grad(ctx, batch, params, n, jax_value) -> dict:
    import torch

    from benchmarks import torch_ref

    field = ctx.torch_field(params)
    x, c, tt, z = (torch.as_tensor(np.array(a)) for a in batch)
    weights = list(field.parameters())

    def value_and_grad():
        for w in weights:
            w.grad = None
        u = n * torch_ref.cfm_loss_from_noise(field, x, c, tt, z)
        u = u + sum(0.5 * torch.sum(w**2) for w in weights)
        u = u + 0.5 * sum(w.numel() for w in weights) * math.log(2 * math.pi)
        grads = torch.autograd.grad(u, weights)
        return u.detach(), grads

    t = time_torch(value_and_grad, repeats=ctx.size.repeats)
    flops = REVERSE_MULTIPLIER * n * field_flops(ctx.field)
    return record("nuts_grad", "torch", t, unit="gradient", points=n,
                  potential=float(t["output"][0]), jax_potential=jax_value,
                  **floor(flops, n * 6 * 4, ctx.device, t["median_s"]))


BENCHMARKS = {"adammcmc_step": bench_adammcmc_step, "nuts_grad": bench_nuts_grad}

if __name__ == "__main__":
    from benchmarks.runner import main

    main(BENCHMARKS, prog="python -m benchmarks.likelihood", description=__doc__)
