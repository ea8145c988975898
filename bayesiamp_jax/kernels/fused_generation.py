"""Fused generation + binning: one Pallas kernel decodes a block of noise points through every
solver step and adds them to the polar histograms, so no sample (and no activation) is written
to memory.

Per program (a block of ``block`` points): the noise (d, block) is read once; the fixed-step
solver (``integrate``'s own RK steps or Adams–Bashforth loop, on a tuple of d coordinate rows)
runs all its steps with the MLP's activations in registers / shared memory; the points are
mapped to (r, φ) and binned with one-hot rows per axis, and the block's counts are the product
onehot_rᵀ · onehot_φ (n_r × n_φ, exact in float32: 0/1 products, integer sums < 2²⁴). Outputs:
one partial histogram per block, summed outside.

Written for Pallas's GPU (Triton) lowering: no value slicing (MEASURED.md: index the Ref), the
first layer split into x rows and a per-stage time bias (the 2K embedding features are the same
for every point of a stage), the output layer as d row reductions, edge tables padded to powers
of two. On a CPU it runs in interpret mode (``interpret=True``): the test of equal counts
against the plain XLA path (``flow.decode`` + ``binning.accumulate``) runs there.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from bayesiamp_jax.integrate import (
    ADAMS_BASHFORTH,
    Solver,
    _dp5_step,
    _fixed_step,
    adams_bashforth,
)

KERNEL_SOLVERS = ("euler", "midpoint", "rk4", "dp5", *ADAMS_BASHFORTH)


def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def split_params(field, params, c):
    """The field's layers in the kernel's layout (all float32, padded where Triton needs it).

    Returns a tuple of arrays: W_t (2K padded to a power of 2, h₁) time rows of the first
    kernel, W_x (d, h₁) its x rows, b₀ + c·W_c (1, h₁), then (W, b (1, h)) of every hidden layer
    after the first, and Wᵀ_out (d, h_L), b_out (1, d) (padded to (d, 2) rows kept 2-D).
    """
    k = field.num_frequencies
    d = field.data_dim
    layers = [params[f"Dense_{i}"] for i in range(len(field.hidden) + 1)]
    w0, b0 = layers[0]["kernel"], layers[0]["bias"]
    wt = w0[: 2 * k]
    wt = jnp.concatenate([wt, jnp.zeros((_pow2(max(2 * k, 1)) - 2 * k, wt.shape[1]), wt.dtype)])
    bias0 = b0
    if field.cond_dim:
        cc = jnp.broadcast_to(jnp.asarray(c, w0.dtype).reshape(-1), (field.cond_dim,))
        bias0 = b0 + cc @ w0[2 * k + d:]
    out = [wt, w0[2 * k: 2 * k + d], bias0[None, :]]
    for layer in layers[1:-1]:
        out += [layer["kernel"], layer["bias"][None, :]]
    last = layers[-1]
    out += [last["kernel"].T, last["bias"][None, :]]
    return tuple(out)


def kernel_velocity(field, t, y, w):
    """v_θ(t, x) for a tuple y of d coordinate rows (block,), from ``split_params`` values w.

    The same layers as ``VectorField`` (ELU MLP on [cos(kπt), sin(kπt), x, c]); the first layer
    is Σ_i x_i W_x[i] + (emb(t) W_t + b₀ + c W_c), so its time part is one vector per call.
    """
    k, d = field.num_frequencies, field.data_dim
    wt, wx, bias0 = w[0], w[1], w[2]
    angle = [math.pi * t * float(j) for j in range(1, k + 1)]
    emb = [jnp.cos(a) for a in angle] + [jnp.sin(a) for a in angle]
    tb = bias0[0]
    for j, e in enumerate(emb):
        tb = tb + e * wt[j]
    a = tb[None, :]
    for i in range(d):
        a = a + y[i][:, None] * wx[i][None, :]
    h = jax.nn.elu(a)
    hidden = w[3:-2]
    for j in range(0, len(hidden), 2):
        h = jax.nn.elu(jnp.dot(h, hidden[j], precision=field.precision) + hidden[j + 1][0])
    w_out, b_out = w[-2], w[-1]
    return tuple(jnp.sum(h * w_out[i][None, :], axis=1) + b_out[0, i] for i in range(d))


def _solve_block(field, solver: Solver, y, w):
    """All fixed steps of ``solver`` from t = 1 to t = 0 on the coordinate rows y (Adams–Bashforth:
    ``integrate.adams_bashforth`` itself, its history a tuple of row tuples)."""
    f = lambda t, yy, _: kernel_velocity(field, t, yy, w)  # noqa: E731
    n = solver.num_steps
    t0, t1 = 1.0, 0.0
    if solver.name in ADAMS_BASHFORTH:
        return adams_bashforth(f, y, t0, t1, solver.name, n)

    def node(i):
        if solver.power == 1.0:  # integrate's uniform path: t0 + i h
            return t0 + i.astype(jnp.float32) * ((t1 - t0) / n)
        u = i.astype(jnp.float32) / n
        return t1 + (t0 - t1) * (1.0 - u) ** solver.power  # integrate.step_nodes

    def times(i):
        t = node(i)
        if solver.power == 1.0:
            return t, jnp.float32((t1 - t0) / n)
        return t, node(i + 1) - t

    if solver.name == "dp5":
        def body(i, carry):
            t, h = times(i)
            return _dp5_step(f, t, carry[0], carry[1], h, None)

        y1, _ = jax.lax.fori_loop(0, n, body, (y, f(jnp.float32(t0), y, None)))
        return y1
    step = _fixed_step(solver.name)

    def body(i, yy):
        t, h = times(i)
        return step(f, t, yy, h, None)

    return jax.lax.fori_loop(0, n, body, y)


def _onehot(v, lo, hi, last):
    """(block, n_pad) rows: lo[j] <= v < hi[j] (or v == hi[j] for the closed last bin)."""
    v = v[:, None]
    return ((v >= lo[None, :]) & ((v < hi[None, :]) | ((v == hi[None, :]) & last[None, :])))


def bin_tables(edges: tuple):
    """Per binning (lo, hi, last) tables of each axis, padded with NaN to a power of 2.

    ``edges``: ((r_edges, phi_edges), ...) as ``binning.device_edges`` gives them.
    """
    tables = []
    for r_edges, phi_edges in edges:
        per_axis = []
        for e in (r_edges, phi_edges):
            e = jnp.asarray(e, jnp.float32)
            n = e.shape[0] - 1
            pad = _pow2(n) - n
            nan = jnp.full((pad,), jnp.nan, jnp.float32)
            lo = jnp.concatenate([e[:-1], nan])[None, :]
            hi = jnp.concatenate([e[1:], nan])[None, :]
            last = (jnp.arange(n + pad) == n - 1).astype(jnp.float32)[None, :]
            per_axis += [lo, hi, last]
        tables.append(tuple(per_axis))
    return tables


def _kernel(field, solver, num_points, block, num_w, num_bin, z_ref, *refs):
    w = tuple(r[...] for r in refs[:num_w])
    tabs = refs[num_w: num_w + 6 * num_bin]
    outs = refs[num_w + 6 * num_bin:]
    d = field.data_dim
    y = tuple(z_ref[i] for i in range(d))
    x = _solve_block(field, solver, y, w)
    idx = pl.program_id(0) * block + jnp.arange(block)
    valid = (idx < num_points).astype(jnp.float32)[:, None]
    # same operations as data.to_polar
    r = jnp.sqrt(x[0] * x[0] + x[1] * x[1])
    phi = jnp.mod(jnp.arctan2(x[1], x[0]), 2.0 * math.pi)
    phi = jnp.where(phi >= 2.0 * math.pi, 0.0, phi)
    for b in range(num_bin):
        rl, rh, rlast, pl_, ph, plast = (t[...] for t in tabs[6 * b: 6 * b + 6])
        oh_r = _onehot(r, rl[0], rh[0], rlast[0] > 0).astype(jnp.float32) * valid
        oh_p = _onehot(phi, pl_[0], ph[0], plast[0] > 0).astype(jnp.float32)
        outs[b][...] = jnp.dot(oh_r.T, oh_p, precision="highest")


def fused_counts(field, params, z, c, edges: tuple, solver: Solver, block: int = 256,
                 interpret: bool | None = None) -> jax.Array:
    """Fused flat counts (total_cells,) int32 of decoding noise z (n, 2) and binning (r, φ).

    Same layout and cell rule as ``binning.accumulate`` (concatenated binnings, cells
    i_r · n_φ + i_φ, numpy's half-open bins, NaN dropped). ``solver``: a fixed-step solver
    (``KERNEL_SOLVERS``, any power schedule); ``c``: the scalar condition shared by all points.
    Points whose noise is NaN are dropped (the caller's mask). ``interpret``: Pallas interpret
    mode; default: on unless the default backend is a GPU.
    """
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    if solver.name not in KERNEL_SOLVERS:
        raise ValueError(f"solver.name must be one of {KERNEL_SOLVERS} for the fused kernel, "
                         f"got {solver.name!r}")
    if field.data_dim != 2:
        raise ValueError(f"polar histograms need a 2-D field, got data_dim={field.data_dim!r}")
    return _fused_counts(field, params, z, c, edges, solver, block, interpret)


@partial(jax.jit, static_argnames=("field", "solver", "block", "interpret"))
def _fused_counts(field, params, z, c, edges, solver, block, interpret):
    n = z.shape[0]
    num_blocks = -(-n // block)
    zt = jnp.zeros((2, num_blocks * block), jnp.float32).at[:, :n].set(z.T.astype(jnp.float32))
    w = split_params(field, params, c)
    tables = bin_tables(edges)
    flat_tables = [t for tab in tables for t in tab]
    full = lambda a: pl.BlockSpec(a.shape, lambda i: (0,) * a.ndim)  # noqa: E731
    in_specs = [pl.BlockSpec((2, block), lambda i: (0, i))]
    in_specs += [full(a) for a in (*w, *flat_tables)]
    shapes = [(tab[0].shape[1], tab[3].shape[1]) for tab in tables]
    out_shape = [jax.ShapeDtypeStruct((num_blocks,) + s, jnp.float32) for s in shapes]
    out_specs = [pl.BlockSpec((None,) + s, lambda i: (i, 0, 0)) for s in shapes]
    kernel = partial(_kernel, field, solver, n, block, len(w), len(tables))
    partial_counts = pl.pallas_call(kernel, out_shape=out_shape, grid=(num_blocks,),
                                    in_specs=in_specs, out_specs=out_specs,
                                    interpret=interpret)(zt, *w, *flat_tables)
    flat = []
    for (r_edges, phi_edges), pc in zip(edges, partial_counts, strict=True):
        n_r, n_p = r_edges.shape[0] - 1, phi_edges.shape[0] - 1
        flat.append(jnp.sum(pc[:, :n_r, :n_p].astype(jnp.int32), axis=0).reshape(-1))
    return jnp.concatenate(flat)
