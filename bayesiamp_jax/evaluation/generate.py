"""Posterior-batched CNF generation straight into histograms of observables, in compiled chunks.

For every weight draw (and run) the CNF decodes ``num_samples`` noise points chunk by chunk inside
one compiled loop; each chunk is mapped to its observable values (the ring's (r, φ) by default,
any ``observables.Observable``) and added to the fused counts of all binnings, so samples never
reach host memory and memory stays at one chunk per draw in flight.

Conditions: one condition for every point (a scalar or (cond_dim,)), or per-point conditions
(M, cond_dim) where point i uses row i mod M (e.g. the conditions of a reference sample).

Noise is counter-based: point i of a draw uses ``normal(fold_in(noise_key, i))``, so the counts do
not depend on ``chunk_size``, on how draws are grouped, or on the number of devices (for fixed-step
solvers; an adaptive solver picks one step size per chunk). Two modes, as in the paper:

- same noise (``histogram_same_noise``): one ``noise_key`` for every draw and run; all binnings are
  filled from the same samples in one pass.
- scaled (``histogram_scaled``): for binning b and global draw m (= run · S + draw), fresh
  noise from ``fold_in(fold_in(key, b), m)`` and ``samples_per_cell · n_cells`` points per draw.
  With ``shared=True`` one fresh sample per draw, ``samples_per_cell · max n_cells`` points
  with noise ``fold_in(fold_in(key, 0), m)``, fills every binning in one pass (the
  generation-noise-corrected N_eq allows it: each binning knows its points per draw; the
  binnings' N_eq are then correlated through the shared sample).

With several devices, the flattened (run, draw) axis is sharded over them with ``jax.shard_map``
(padded to a multiple of the device count); with one device no sharding code runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from tqdm.auto import tqdm

from bayesiamp_jax import _checks, data, flow, observables
from bayesiamp_jax.evaluation.binning import (
    accumulate,
    as_binnings,
    device_edges,
    split_counts,
)
from bayesiamp_jax.integrate import Solver, steps_exhausted_as_error
from bayesiamp_jax.posteriors.draws import PosteriorDraws
from bayesiamp_jax.resumable import run_chunks, signature

# 4-step Adams–Bashforth, 60 steps = 69 field evaluations per sample: the histograms at 10⁷
# samples are as close to a tight solve as RK4-20's (80) on the 300- and 2,501-epoch fields
# (benchmarks/solver_study.py, benchmarks/RESULTS.md)
DEFAULT_SOLVER = Solver("ab4", num_steps=60)
DEFAULT_CHUNK = 2**15
SAME_NOISE, SCALED = "same_noise", "scaled"


class PosteriorHistograms(NamedTuple):
    """Raw generated histograms of R runs × S draws for several binnings.

    counts: per binning, int64 array (R, S, n_1, …, n_k) (the ring: (R, S, n_r, n_φ)).
    num_samples: per binning, generated points per draw (fractions = counts / num_samples).
    binnings: the ``Binning`` of each entry (edges and truth).
    mode: "same_noise" or "scaled".
    """

    counts: tuple
    num_samples: tuple
    binnings: tuple
    mode: str

    @property
    def fractions(self) -> tuple:
        return tuple(c / float(n) for c, n in zip(self.counts, self.num_samples, strict=True))

    @property
    def labels(self) -> tuple:
        return tuple(b.label for b in self.binnings)


# ----------------------------------------------------------------------------------- inputs


def stack_runs(posterior, has_run_axis: bool = False, *, field=None):
    """Params with leading axes (R, S) from a PosteriorDraws / params pytree (one run, axis S),
    a sequence of those (R runs, equal S), or a pytree with leading (R, S) (``has_run_axis``).

    Every weight must be finite (a one-line error names the run, the draw and the leaf); with
    ``field``, the params must be that field's (``_checks.params_match`` after the (R, S) axes).
    """
    if isinstance(posterior, (list, tuple)) and not isinstance(posterior, PosteriorDraws):
        if len(posterior) == 0:
            raise ValueError("posterior must hold at least one run, got an empty sequence")
        runs = [_params_of(p) for p in posterior]
        for i, p in enumerate(runs[1:], start=1):
            _checks.same_structure("posterior[0]", runs[0], f"posterior[{i}]", p)
        params = jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *runs)
    else:
        params = _params_of(posterior)
        if not has_run_axis:
            params = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[None], params)
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("posterior params hold no arrays")
    lead = {tuple(np.shape(leaf)[:2]) for leaf in leaves}
    if len(lead) != 1 or len(next(iter(lead))) != 2:
        raise ValueError(f"every params leaf needs the same leading (runs, draws) axes, got {lead}")
    (num_runs, num_draws), = lead
    if num_draws < 2:
        raise ValueError(f"posterior needs at least 2 weight draws per run, got {num_draws}")
    if field is not None:
        _checks.params_match("posterior params", field, params, lead_axes=2)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        arr = np.asarray(leaf)
        if arr.size == 0:
            continue
        ok = np.isfinite(arr).reshape(num_runs, num_draws, -1).all(axis=-1)
        if not ok.all():
            r, d = (int(i) for i in np.argwhere(~ok)[0])
            raise ValueError(
                f"posterior run {r}, draw {d} has non-finite weights (NaN or inf) in "
                f"{jax.tree_util.keystr(path)} ({int((~ok).sum())} of {num_runs * num_draws} "
                "draws have some): drop or re-fit those draws")
    return params


def _params_of(p):
    return p.params if isinstance(p, PosteriorDraws) else p


def generate_samples(key, field, params, num_samples: int, *, c=data.DEFAULT_R_MEAN,
                     solver: Solver = DEFAULT_SOLVER, draw_index: int | None = None) -> jax.Array:
    """The points (n, d) one draw ``params`` generates in this module's noise convention.

    ``draw_index=None``: same-noise mode (``key`` is the noise key); otherwise the scaled-mode
    noise of global draw ``draw_index`` with ``key`` = fold_in(key, binning index). For tests,
    plots and small samples; it materialises all points.
    """
    n = _checks.positive_int("num_samples", num_samples)
    noise_key = key if draw_index is None else jax.random.fold_in(key, draw_index)
    idx = jnp.arange(n, dtype=jnp.int32)
    z = _noise(noise_key, idx, field.data_dim)
    return flow.decode(field, params, z, _point_conditions(_condition(field, c), idx), solver)


def _noise(noise_key, idx, dim):
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(noise_key, i), (dim,)))(idx)


def _condition(field, c):
    """None (unconditional field), (cond_dim,) for every point, or (M, cond_dim) per point."""
    cond_dim = getattr(field, "cond_dim", 1)
    if cond_dim == 0:
        return None
    try:
        arr = np.asarray(c, np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"c must be a number or an array of numbers, got {c!r}") from None
    _checks.finite("c", arr)
    if arr.ndim == 2:
        if arr.shape[1] != cond_dim or arr.shape[0] < 1:
            raise ValueError(f"per-point conditions c must have shape (M, {cond_dim}), got "
                             f"{arr.shape}")
        return jnp.asarray(arr)
    if arr.ndim > 1 or arr.size not in (1, cond_dim):
        raise ValueError(f"c must be a scalar, ({cond_dim},) or (M, {cond_dim}) per-point "
                         f"conditions, got shape {arr.shape}")
    return jnp.broadcast_to(jnp.asarray(arr), (cond_dim,))


def _point_conditions(c, idx):
    """Conditions of points ``idx``: c itself, or row idx mod M of per-point conditions."""
    if c is None or c.ndim == 1:
        return c
    return c[idx % c.shape[0]]


# ---------------------------------------------------------------------------- compiled core


def _draw_counts(field, solver, observable, chunk, total_cells, num_samples, params, noise_key,
                 c, edges):
    """Fused counts (total_cells,) of one draw: a loop over chunks of decode + histogram; the
    last entry counts the generated points with a non-finite observable (NaN or inf).

    ``num_samples`` is traced (one compilation serves every sample size).
    """
    num_chunks = (num_samples + chunk - 1) // chunk

    def body(k, counts):
        idx = k * chunk + jnp.arange(chunk, dtype=jnp.int32)
        z = _noise(noise_key, idx, field.data_dim)
        if solver.backend == "pallas":  # fused kernel (bayesiamp_jax.kernels); NaN noise drops
            from bayesiamp_jax.kernels import fused_counts

            z = jnp.where((idx < num_samples)[:, None], z, jnp.nan)
            return counts.at[:-1].add(fused_counts(field, params, z, c, edges, solver))
        x = flow.decode(field, params, z, _point_conditions(c, idx), solver)
        values, inside = observables.values(observable, x), idx < num_samples
        bad = jnp.sum(inside & ~jnp.all(jnp.isfinite(values), axis=-1), dtype=counts.dtype)
        return accumulate(counts, values, inside, edges).at[-1].add(bad)

    return jax.lax.fori_loop(0, num_chunks, body, jnp.zeros(total_cells, jnp.int32))


@lru_cache(maxsize=64)
def _block_fn(field, solver, observable, chunk, total_cells, fresh, mesh):
    def block(key, num_samples, params, draw_ids, c, edges):
        def one(args):
            p, m = args
            noise_key = jax.random.fold_in(key, m) if fresh else key
            return _draw_counts(field, solver, observable, chunk, total_cells, num_samples, p,
                                noise_key, c, edges)

        return jax.lax.map(one, (params, draw_ids))

    if mesh is not None:
        spec, rep = PartitionSpec("draws"), PartitionSpec()
        block = jax.shard_map(block, mesh=mesh, in_specs=(rep, rep, spec, spec, rep, rep),
                              out_specs=spec, check_vma=False)
    return jax.jit(block)


# ------------------------------------------------------------------------------ host driver


CHUNK_GRANULE = 256  # chunks are multiples of it (the fused kernel's block) up to chunk_size


def chunk_for(num_samples: int, chunk_size: int) -> int:
    """The points decoded at once for ``num_samples`` points per draw: the fewest chunks of at
    most ``chunk_size``, split evenly and rounded up to ``CHUNK_GRANULE`` (40,000 points at
    2**15: two chunks of 20,224, not two of 32,768; counts do not depend on it)."""
    num_chunks = -(-num_samples // chunk_size)
    even = -(-num_samples // num_chunks)
    return min(chunk_size, -(-even // CHUNK_GRANULE) * CHUNK_GRANULE)


def decoded_points(num_samples: int, chunk_size: int) -> int:
    """Points a draw of ``num_samples`` actually decodes (whole chunks of ``chunk_for``)."""
    chunk = chunk_for(num_samples, chunk_size)
    return -(-num_samples // chunk) * chunk


def _run_group(key, field, flat_params, binnings, num_samples, fresh, solver, chunk_size,
               devices, draws_per_device, progress_bar, ckpt, group):
    """Fused counts (num_models, total_cells) of one group of binnings, block by block.

    With several processes (``jax.distributed``) each uses its own devices, block b of draws is
    computed by process b mod N and the counts are all-gathered, so every process returns all
    of them; the noise depends on the global draw index only, so they do not depend on N.
    """
    num_models = jax.tree_util.tree_leaves(flat_params)[0].shape[0]
    total_cells = sum(b.num_cells for b in binnings) + 1  # + the non-finite points
    chunk = chunk_for(num_samples, chunk_size)
    num_processes, me = jax.process_count(), jax.process_index()
    if num_processes > 1:
        devices = [d for d in devices if d.process_index == me]
        if not devices:
            raise ValueError(f"devices holds no device of process {me}")
    mesh = Mesh(np.asarray(devices), ("draws",)) if len(devices) > 1 else None
    fn = _block_fn(field, solver, ckpt.observable, chunk, total_cells, fresh, mesh)
    block = len(devices) * draws_per_device
    edges = device_edges(binnings)
    c = ckpt.condition
    mine = [s for s in range(0, num_models, block) if (s // block) % num_processes == me]
    computed = 0

    def step(counts, i, n):  # blocks mine[i : i + n] of this process, written into counts
        nonlocal computed
        counts = np.require(counts, requirements="W")  # a resumed state is read-only: copy once
        for start in mine[i:i + n]:
            stop = min(start + block, num_models)
            ids = np.minimum(np.arange(start, start + block), num_models - 1)  # pad: the last
            params = jax.tree_util.tree_map(partial(_take, ids=ids), flat_params)
            with steps_exhausted_as_error(solver, f"generation (from global draw {start})"):
                out = np.asarray(fn(key, np.int32(num_samples), params,
                                    jnp.asarray(ids, jnp.int32), c, edges))
            counts[start:stop] = out[: stop - start]
            computed += stop - start
            progress_bar.update(stop - start)
        return counts, {}

    sig = signature(**ckpt.settings, group=group, process=f"{me} of {num_processes}",
                    block=block)
    counts = run_chunks(step, np.zeros((num_models, total_cells), np.int64), len(mine),
                        chunk=1, checkpoint_path=ckpt.group_path(group), signature=sig,
                        progress=False, on_mismatch="restart").state
    mine_draws = sum(min(s + block, num_models) - s for s in mine)
    progress_bar.update(mine_draws - computed)  # resumed from the checkpoint
    if num_processes > 1:
        counts = _gather_blocks(counts, block)
        progress_bar.update(num_models - mine_draws)
    return split_counts(counts[:, :-1], binnings), counts[:, -1]


def _gather_blocks(counts, block):
    """``counts`` (M, cells) with block b of rows from process b mod N, on every process.

    The processes first meet at the coordination service's barrier (no time limit to speak
    of), since gloo's collectives on a CPU give up after 30 minutes of waiting.
    """
    from jax._src import distributed as jax_distributed
    from jax.experimental import multihost_utils

    client = getattr(jax_distributed.global_state, "client", None)
    if client is not None and hasattr(client, "wait_at_barrier"):
        client.wait_at_barrier("bayesiamp_jax.generate", 7 * 24 * 3600 * 1000)  # reusable id
    n, (m, cells) = jax.process_count(), counts.shape
    shape = np.array([block, m, cells], np.int32)
    if not (multihost_utils.process_allgather(shape) == shape).all():
        raise ValueError("every process needs the same draws per block and histogram shape "
                         f"(devices × draws_per_device, models, cells); this one has {shape}")
    rows = [np.array([i for s in range(p * block, m, n * block)
                      for i in range(s, min(s + block, m))], np.int64) for p in range(n)]
    local = np.zeros((max(len(r) for r in rows), cells), np.int32)  # counts < 2**31 (int32 core)
    mine = rows[jax.process_index()]
    local[: len(mine)] = counts[mine]
    gathered = multihost_utils.process_allgather(local)
    out = np.empty_like(counts)
    for p, r in enumerate(rows):
        out[r] = gathered[p, : len(r)]
    return out


def _take(leaf, ids):
    return np.asarray(leaf)[ids]


class _Checkpoint(NamedTuple):
    """What the blocks of a histogram call share: the checkpoint prefix (group g resumes from
    ``<path>.g<g>.msgpack`` through ``resumable.run_chunks``, restarting on another
    signature), the settings that determine the counts (for ``resumable.signature``), condition
    and observable."""

    path: Path | None
    settings: dict
    condition: object
    observable: object

    def group_path(self, group: int) -> Path | None:
        return None if self.path is None else self.path.with_name(
            f"{self.path.name}.g{group}.msgpack")

    def finish(self, keep: bool, num_groups: int):
        for g in range(num_groups if not keep else 0):
            p = self.group_path(g)
            if p is not None:
                p.unlink(missing_ok=True)


def _histogram(key, field, posterior, binnings, num_samples_per_group, groups, fresh, mode, *,
               c, solver, chunk_size, devices, draws_per_device, has_run_axis, progress,
               checkpoint_path, keep_checkpoint=False, observable=None):
    observable = resolve_observable(field, observable, binnings)
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a bayesiamp_jax.Solver, got {solver!r}")
    if solver.backend == "pallas" and not isinstance(observable, observables.Polar):
        raise ValueError(f"the pallas backend bins the ring's polar observable only, got "
                         f"observable={observable!r}")
    cond = _condition(field, c)
    chunk_size = _checks.positive_int("chunk_size", chunk_size)
    draws_per_device = _checks.positive_int("draws_per_device", draws_per_device)
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must hold at least one device, got an empty sequence")
    params = stack_runs(posterior, has_run_axis)
    num_runs, num_draws = jax.tree_util.tree_leaves(params)[0].shape[:2]
    flat = jax.tree_util.tree_map(lambda x: np.asarray(x).reshape((-1,) + np.shape(x)[2:]), params)
    settings = {"mode": mode, "num_samples": list(num_samples_per_group),
                "labels": [[b.label for b in g] for g in groups],
                "shape": [int(num_runs), int(num_draws)], "key": key, "c": cond,
                "posterior": flat, "solver": repr(solver), "field": repr(field),
                "observable": repr(observable)}
    ckpt = _Checkpoint(None if checkpoint_path is None else Path(checkpoint_path), settings,
                       cond, observable)
    counts = []
    total = num_runs * num_draws * len(groups)
    with tqdm(total=total, desc=f"histograms ({mode})", disable=not progress, unit="draw") as bar:
        for g, (group, n) in enumerate(zip(groups, num_samples_per_group, strict=True)):
            group_key = jax.random.fold_in(key, g) if fresh else key
            per_binning, bad = _run_group(group_key, field, flat, group, n, fresh, solver,
                                          chunk_size, devices, draws_per_device, bar, ckpt, g)
            if bad.any():
                m = int(np.flatnonzero(bad)[0])
                raise FloatingPointError(
                    f"generation ({mode}): {int(bad[m])} of {n} generated points of run "
                    f"{m // num_draws}, draw {m % num_draws} are non-finite (NaN or inf; "
                    f"{int((bad > 0).sum())} draws affected): the field or the solver diverged "
                    f"(solver {solver!r})")
            counts += [x.reshape((num_runs, num_draws) + x.shape[1:]) for x in per_binning]
    ckpt.finish(keep_checkpoint, len(groups))
    nums = [n for g, n in zip(groups, num_samples_per_group, strict=True) for _ in g]
    flat_bins = tuple(b for g in groups for b in g)
    return PosteriorHistograms(tuple(counts), tuple(nums), flat_bins, mode)


def histogram_same_noise(key, field, posterior, binnings, num_samples: int = 10_000_000, *,
                         c=data.DEFAULT_R_MEAN, solver: Solver = DEFAULT_SOLVER,
                         chunk_size: int = DEFAULT_CHUNK, devices: Sequence | None = None,
                         draws_per_device: int = 1, has_run_axis: bool = False,
                         progress: bool = True, checkpoint_path=None,
                         keep_checkpoint: bool = False, observable=None) -> PosteriorHistograms:
    """Histograms of ``num_samples`` points per draw, the same noise for every draw and run.

    Args:
        key: noise key (shared by all draws).
        field: the vector field (e.g. ``VectorField``; hashable, ``field(params, t, x, c)``).
        posterior: ``PosteriorDraws`` or params pytree with leading draw axis S (one run), a
            sequence of those (R runs), or a pytree with leading (R, S) and ``has_run_axis=True``.
        binnings: ints n (the ring's n × n truth-quantile grid) and/or ``Binning``s (of the
            observable's values), filled in one pass.
        num_samples: points per draw.
        c: condition of every point (the ring: r_mean), or per-point conditions (M, cond_dim)
            (point i uses row i mod M).
        solver: ODE solver (fixed-step Adams–Bashforth 4, 60 steps, by default).
        chunk_size: points decoded at once per draw (bounds memory; 2**15 suits a CPU, use
            2**21..2**23 on a GPU). Counts do not depend on it (fixed-step solvers).
        devices: devices to shard the (run, draw) axis over; default all.
        draws_per_device: draws per device per compiled call (one call = one progress/ckpt step).
        progress: tqdm progress bar over draws.
        checkpoint_path: prefix of the partial results: ``<prefix>.g<g>.msgpack`` per group of
            binnings (``resumable.run_chunks``), written atomically after every block; a call
            with the same key, posterior, sizes and binnings resumes from it (another
            signature or a damaged file: starts over). Deleted on completion unless
            ``keep_checkpoint``.
        observable: ``observables.Observable`` mapping one point to the binned values; default
            the ring's ``Polar()`` (2-D fields only).
    Returns: ``PosteriorHistograms`` with counts (R, S, n_1, …, n_k) per binning.
    """
    n = _checks.positive_int("num_samples", num_samples)
    bins = _binnings(binnings, c)
    return _histogram(key, field, posterior, bins, [n], [bins], False, SAME_NOISE, c=c,
                      solver=solver, chunk_size=chunk_size, devices=devices,
                      draws_per_device=draws_per_device, has_run_axis=has_run_axis,
                      progress=progress, checkpoint_path=checkpoint_path,
                      keep_checkpoint=keep_checkpoint, observable=observable)


def histogram_scaled(key, field, posterior, binnings, samples_per_cell: int = 1000, *,
                     c=data.DEFAULT_R_MEAN, solver: Solver = DEFAULT_SOLVER,
                     chunk_size: int = DEFAULT_CHUNK, devices: Sequence | None = None,
                     draws_per_device: int = 1, has_run_axis: bool = False,
                     progress: bool = True, checkpoint_path=None,
                     keep_checkpoint: bool = False, shared: bool = False,
                     observable=None) -> PosteriorHistograms:
    """"Scaled" histograms: per binning and draw, ``samples_per_cell · n_cells`` fresh points.

    Arguments as in ``histogram_same_noise``; binning b, global draw m use noise
    fold_in(fold_in(key, b), m). ``shared``: one fresh sample of ``samples_per_cell · max
    n_cells`` points per draw (noise fold_in(fold_in(key, 0), m)) fills all binnings.
    """
    k = _checks.positive_int("samples_per_cell", samples_per_cell)
    bins = _binnings(binnings, c)
    if shared:
        sizes, groups = [k * max(b.num_cells for b in bins)], [list(bins)]
    else:
        sizes, groups = [k * b.num_cells for b in bins], [[b] for b in bins]
    return _histogram(key, field, posterior, bins, sizes, groups, True, SCALED, c=c, solver=solver,
                      chunk_size=chunk_size, devices=devices, draws_per_device=draws_per_device,
                      has_run_axis=has_run_axis, progress=progress,
                      checkpoint_path=checkpoint_path, keep_checkpoint=keep_checkpoint,
                      observable=observable)


def _binnings(binnings, c):
    """``as_binnings``; an int n is the ring's quantile grid at r_mean = c (a scalar c)."""
    ints = isinstance(binnings, (int, np.integer)) or (
        isinstance(binnings, Sequence) and any(isinstance(b, (int, np.integer)) for b in binnings))
    if ints and np.ndim(c) > 0 and np.size(c) != 1:
        raise ValueError("int binnings are the ring's quantile grids at r_mean = c and need a "
                         f"scalar c, got c of shape {np.shape(c)}; pass Binnings instead")
    r_mean = _checks.non_negative("c", c if np.ndim(c) == 0 else np.reshape(c, -1)[0]) \
        if ints else 0.0
    return as_binnings(binnings, r_mean)


def resolve_observable(field, observable, binnings):
    """The observable (default ``Polar()`` for 2-D fields), checked against the binnings."""
    dim = getattr(field, "data_dim", 2)
    if observable is None:
        if dim != 2:
            raise ValueError(f"observable is required for a field with data_dim={dim} (the "
                             "default, the ring's polar (r, phi), needs data_dim=2)")
        observable = observables.Polar()
    observables.check(observable, dim)
    k = len(observable.names)
    for b in binnings:
        if len(b.edges) != k:
            raise ValueError(f"binning {b.label!r} bins {len(b.edges)} values but observable "
                             f"{observable!r} gives {k} ({', '.join(observable.names)})")
    return observable
