"""The PyTorch baseline: the same network, losses and solvers, written with torch and zuko.

Written for this project (reference behaviour from PAPER.md): the ELU MLP on the Fourier time
embedding; flow-matching epoch; mean-field Gaussian VI layers with one reparameterised weight
draw per batch and the reference's per-tensor-mean KL; generation with zuko's adaptive
Dormand–Prince (``zuko.utils.odeint``) or a fixed-step RK4; the exact log-likelihood by RK4
on (x, ∫ tr ∂v/∂x) with forward tangents; the AdamMCMC step (two exact-likelihood gradients,
one Adam update each). Importing this module needs torch and zuko (the ``bench`` extra).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import zuko
from torch import nn

SIGMA_MIN = 1e-4


class TorchField(nn.Module):
    """v(t, x, c): [cos(kπt), sin(kπt)]_k ⊕ x ⊕ c → ELU hidden layers → d outputs."""

    def __init__(self, data_dim=2, cond_dim=1, hidden=(32, 32, 32), num_frequencies=3):
        super().__init__()
        self.data_dim, self.cond_dim, self.num_frequencies = data_dim, cond_dim, num_frequencies
        widths = (2 * num_frequencies + data_dim + cond_dim,) + tuple(hidden) + (data_dim,)
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        self.register_buffer("freqs", math.pi * torch.arange(1, num_frequencies + 1.0))

    def inputs(self, t, x, c):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[:-1])
        angle = t[..., None] * self.freqs
        c = c.expand(x.shape[:-1] + (self.cond_dim,))
        return torch.cat([torch.cos(angle), torch.sin(angle), x, c], dim=-1)

    def weights(self, layer):
        return layer.weight, layer.bias

    def forward(self, t, x, c):
        h = self.inputs(t, x, c)
        for layer in self.layers[:-1]:
            h = F.elu(F.linear(h, *self.weights(layer)))
        return F.linear(h, *self.weights(self.layers[-1]))

    def velocity_and_divergence(self, t, x, c):
        """v (n, d) and exact tr(∂v/∂x) (n,), carrying one tangent per input dimension."""
        h = self.inputs(t, x, c)
        start = 2 * self.num_frequencies
        tangents = []
        for i in range(self.data_dim):
            e = torch.zeros_like(h)
            e[..., start + i] = 1.0
            tangents.append(e)
        for layer in self.layers[:-1]:
            w, b = self.weights(layer)
            a = F.linear(h, w, b)
            slope = torch.where(a > 0, torch.ones_like(a), torch.exp(torch.clamp(a, max=0.0)))
            h = F.elu(a)
            tangents = [slope * (tan @ w.T) for tan in tangents]
        w, b = self.weights(self.layers[-1])
        v = F.linear(h, w, b)
        div = sum((tan @ w.T)[..., i] for i, tan in enumerate(tangents))
        return v, div

    @torch.no_grad()
    def load_jax(self, params):
        """Copy flax params ({"Dense_i": {"kernel" (in, out), "bias"}}) into this module."""
        for i, layer in enumerate(self.layers):
            dense = params[f"Dense_{i}"]
            layer.weight.copy_(torch.as_tensor(np.array(dense["kernel"]).T.copy()))
            layer.bias.copy_(torch.as_tensor(np.array(dense["bias"]).copy()))
        return self


class BayesField(TorchField):
    """Mean-field Gaussian weights q = N(μ, softplus(ρ)²); one weight draw per forward call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mu = nn.ParameterList()
        self.rho = nn.ParameterList()
        for layer in self.layers:
            for p in (layer.weight, layer.bias):
                self.mu.append(nn.Parameter(0.1 * torch.randn_like(p)))
                self.rho.append(nn.Parameter(-3.0 + 0.1 * torch.randn_like(p)))
        self._draw = None

    def resample(self):
        pairs = zip(self.mu, self.rho, strict=True)
        self._draw = [m + F.softplus(r) * torch.randn_like(m) for m, r in pairs]

    def weights(self, layer):
        i = 2 * list(self.layers).index(layer)
        return self._draw[i], self._draw[i + 1]

    def kl_mean_per_tensor(self):
        """Σ over weight tensors of the mean elementwise KL(q || N(0, 1)) (the reference's)."""
        total = 0.0
        for m, r in zip(self.mu, self.rho, strict=True):
            s = F.softplus(r)
            total = total + torch.mean(-torch.log(s) + 0.5 * (s**2 + m**2) - 0.5)
        return total


def cfm_loss(field, x, c, generator=None):
    t = torch.rand(x.shape[:-1], generator=generator)
    z = torch.randn(x.shape, generator=generator)
    return cfm_loss_from_noise(field, x, c, t, z)


def cfm_loss_from_noise(field, x, c, t, z, sigma_min=SIGMA_MIN):
    tt = t[..., None]
    y = (1 - tt) * x + (sigma_min + (1 - sigma_min) * tt) * z
    return torch.mean((field(t, y, c) - ((1 - sigma_min) * z - x)) ** 2)


def adam(params, lr=1e-3, betas=(0.99, 0.99)):
    return torch.optim.Adam(params, lr=lr, betas=betas)


def fm_epoch(field, opt, x, c, batch_size, generator=None):
    """One flow-matching epoch over shuffled mini-batches; returns the mean loss (tensor)."""
    perm = torch.randperm(x.shape[0], generator=generator)
    losses = []
    for i in range(x.shape[0] // batch_size):
        idx = perm[i * batch_size:(i + 1) * batch_size]
        opt.zero_grad(set_to_none=True)
        loss = cfm_loss(field, x[idx], c[idx], generator)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses).mean()


def vi_epoch(field: BayesField, opt, x, c, batch_size, kl_weight=10.0, generator=None):
    """One VI epoch: per batch one weight draw, loss = CFM + k · KL / batch_size."""
    perm = torch.randperm(x.shape[0], generator=generator)
    losses = []
    for i in range(x.shape[0] // batch_size):
        idx = perm[i * batch_size:(i + 1) * batch_size]
        opt.zero_grad(set_to_none=True)
        field.resample()
        loss = cfm_loss(field, x[idx], c[idx], generator)
        loss = loss + kl_weight * field.kl_mean_per_tensor() / batch_size
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses).mean()


def rk4(f, y, t0, t1, num_steps):
    """Classic RK4 on a tuple of tensors."""
    h = (t1 - t0) / num_steps

    def axpy(a, k, y):
        return tuple(yi + a * ki for yi, ki in zip(y, k, strict=True))

    for i in range(num_steps):
        t = t0 + i * h
        k1 = f(t, y)
        k2 = f(t + h / 2, axpy(h / 2, k1, y))
        k3 = f(t + h / 2, axpy(h / 2, k2, y))
        k4 = f(t + h, axpy(h, k3, y))
        y = tuple(yi + h * (a + 2 * b + 2 * c_ + d) / 6
                  for yi, a, b, c_, d in zip(y, k1, k2, k3, k4, strict=True))
    return y


def decode_dopri5(field, z, c, atol=1e-6, rtol=1e-5):
    """Noise → data with zuko's adaptive Dormand–Prince (one step size for the batch)."""
    with torch.no_grad():
        return zuko.utils.odeint(lambda t, x: field(t, x, c), z, 1.0, 0.0, atol=atol, rtol=rtol)


def decode_rk4(field, z, c, num_steps):
    with torch.no_grad():
        return rk4(lambda t, y: (field(t, y[0], c),), (z,), 1.0, 0.0, num_steps)[0]


def log_prob(field, x, c, num_steps=20):
    """Exact log p(x | c) (n,) by RK4 on (x, ∫ tr ∂v/∂x dt) from t = 0 to 1."""
    def dyn(t, y):
        return field.velocity_and_divergence(t, y[0], c)

    z, trace = rk4(dyn, (x, torch.zeros(x.shape[:-1])), 0.0, 1.0, num_steps)
    d = x.shape[-1]
    return -0.5 * torch.sum(z**2, -1) - 0.5 * d * math.log(2 * math.pi) + trace


class FlatLoss:
    """L(θ) = −(N/|B|) Σ_B log p_θ(x | c) and its gradient on a flat parameter vector θ."""

    def __init__(self, field, x, c, num_train, num_steps=20):
        self.field, self.x, self.c = field, x, c
        self.scale, self.num_steps = num_train / x.shape[0], num_steps
        self.params = list(field.parameters())

    def __call__(self, theta):
        torch.nn.utils.vector_to_parameters(theta, self.params)
        for p in self.params:
            p.grad = None
        loss = -self.scale * log_prob(self.field, self.x, self.c, self.num_steps).sum()
        grads = torch.autograd.grad(loss, self.params)
        return loss.detach(), torch.cat([g.reshape(-1) for g in grads])


def adam_update(grad, state, lr=1e-3, b1=0.99, b2=0.99, eps=1e-8):
    """One Adam step: returns the update u (θ_new = θ − u) and the new state (m, v, count)."""
    m, v, k = state
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad**2
    k = k + 1
    u = lr * (m / (1 - b1**k)) / (torch.sqrt(v / (1 - b2**k)) + eps)
    return u, (m, v, k)


def _log_q(x, mean, u, sigma, sigma_dir):
    """log N(x; mean, σ² I + σ_dir² u uᵀ) up to the constant, via Sherman–Morrison."""
    r = x - mean
    uu = torch.dot(u, u)
    ru = torch.dot(r, u)
    quad = (torch.dot(r, r) - sigma_dir**2 * ru**2 / (sigma**2 + sigma_dir**2 * uu)) / sigma**2
    logdet = (r.numel() - 1) * math.log(sigma**2) + torch.log(sigma**2 + sigma_dir**2 * uu)
    return -0.5 * quad - 0.5 * logdet


def adammcmc_step(loss, theta, state, sigma, sigma_dir, generator=None, temperature=1.0):
    """One AdamMCMC step from θ with Adam state S: (θ, S, accepted)."""
    l_theta, g_theta = loss(theta)
    u, state_new = adam_update(g_theta, state)
    mean_fwd = theta - u
    eps = torch.randn(theta.shape, generator=generator)
    eta = torch.randn((), generator=generator)
    tau = mean_fwd + sigma * eps + sigma_dir * eta * u
    l_tau, g_tau = loss(tau)
    u_rev, _ = adam_update(g_tau, state)
    mean_rev = tau - u_rev
    log_alpha = (temperature * (l_theta - l_tau)
                 + _log_q(theta, mean_rev, u_rev, sigma, sigma_dir)
                 - _log_q(tau, mean_fwd, u, sigma, sigma_dir))
    accept = torch.log(torch.rand((), generator=generator)) < log_alpha
    if accept:
        return tau, state_new, True
    return theta, state, False
