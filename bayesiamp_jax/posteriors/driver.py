"""One driver for every trainer and posterior: ``run(algorithm, keys, data, units=...)``.

An ``Algorithm`` is a NamedTuple of pure functions of ONE unit (blackjax style):

    init(key, ctx, start)                               -> state
    run_epochs(key, state, ctx, num_active, num_epochs)  -> (state, info: {name: (E, ...)})
    finish(state, ctx)                                  -> a pytree (e.g. (loc, scale))
    holdout_loss(state, ctx, holdout)                   -> scalar

``ctx = Context(data, hyper, shared)``: the unit's data and per-unit hyper-parameters (both with
a leading U for U units) and constants shared by all units (no unit axis). ``run_epochs`` runs
``num_epochs`` (static) items of which only the first ``num_active`` (traced) act, so one
compiled program serves every chunk length. ``run`` owns everything around it, once for every
algorithm:

* the **unit axis**, explicit (``units=None`` or U; the keys must have shape () or (U,)): U
  independent units run as one vmapped program per chunk, compiled once per (algorithm, chunk
  length, unit axis) — the algorithm is a static argument, hashable by value (``bind``);
* chunks, progress bar, atomic **checkpoint** with a **signature** (method, key, units, the
  caller's settings, the held-out set) and resume, through ``resumable.run_chunks``;
* the **finite-value check** of every chunk: a one-line ``FloatingPointError`` naming epoch
  (and member) and unit of the first NaN / inf;
* the **held-out curve** (``holdout``, ``holdout_every``) and the **early stop** on a plateau
  (``bayesiamp_jax.convergence``), evaluated between chunks with a fixed key, so the trained
  numbers are those of a run without them.

Adding a posterior = writing its four functions (docs/design/posteriors.md).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import _checks, _units, resumable
from bayesiamp_jax import convergence as conv

__all__ = ["ALGORITHMS", "Algorithm", "Bound", "Context", "Run", "bind", "register", "run"]


class Context(NamedTuple):
    """What a unit's functions see besides key and state: ``data`` and ``hyper`` (one slice per
    unit) and ``shared`` (the same for every unit)."""

    data: Any
    hyper: Any = None
    shared: Any = None


class Algorithm(NamedTuple):
    """A trainer / posterior as pure one-unit functions (see the module docstring).

    ``name``: the checkpoint signature's method and the progress label. ``checked``: the info
    entry checked for NaN / inf (``item_axes`` names its axes after the epoch axis, ``what``
    says what it is in the error message). ``finish`` / ``holdout_loss`` may be None (no
    post-processing / no held-out curve). Samplers (AdamMCMC) also set ``item`` (what a
    chunk counts, e.g. "sample"), ``record_axis`` (the item axis of a unit's records, e.g. 1
    after a chain axis; the held-out loss then has that many axes too),
    ``host_records(desc, state, info, start, vmapped) -> records`` (replaces the standard
    slicing and finite check, e.g. by one naming step and chain) and ``warm_up(state, ctx,
    vmapped, desc) -> state`` (run once before the first chunk of a run that does not resume).
    ``init`` runs eagerly (under ``vmap``); every other field must be hashable by value
    (module functions, ``bind`` objects), so calls with equal algorithms share compiled
    programs.
    """

    name: str
    init: Callable
    run_epochs: Callable
    finish: Callable | None = None
    holdout_loss: Callable | None = None
    checked: str = "loss"
    item_axes: tuple = ()
    what: str = "the mean epoch loss"
    item: str = "epoch"
    record_axis: int = 0
    host_records: Callable | None = None
    warm_up: Callable | None = None


class Bound(NamedTuple):
    """``fn`` with keyword settings fixed, hashable (and equal) by value: a static jit argument
    that two calls with the same settings share (``functools.partial`` is equal by identity)."""

    fn: Callable
    settings: tuple

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **dict(self.settings), **kwargs)


def bind(fn: Callable, **settings) -> Bound:
    """``Bound(fn, settings)``; the settings must be hashable (numbers, strings, functions,
    fields, optimisers, other ``Bound``s)."""
    return Bound(fn, tuple(sorted(settings.items())))


class Run(NamedTuple):
    """Final state, the records of all chunks ({name: (E, ...)} or (U, E, ...); a resumed run's
    included), ``finish(state)`` (None without ``finish``), and the held-out curve: epochs
    (C,) (0 = before training) and losses (C,) or (U, C), None without ``holdout``."""

    state: Any
    records: dict
    finished: Any = None
    holdout_epochs: np.ndarray | None = None
    holdout_losses: np.ndarray | None = None


ALGORITHMS: dict[str, Callable] = {}


def register(name: str, factory: Callable) -> Callable:
    """Register an algorithm factory (``factory(...) -> Algorithm``) under ``name``; returns it.

    ``ALGORITHMS`` maps the names to the factories (flow matching, vi, repulsive, adammcmc and
    whatever a user adds); registering a name twice with another factory is an error."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise ValueError(f"factory must be callable, got {factory!r}")
    old = ALGORITHMS.get(name)
    if old is not None and old is not factory and (
            getattr(old, "__qualname__", None), getattr(old, "__module__", None)) != (
            getattr(factory, "__qualname__", None), getattr(factory, "__module__", None)):
        raise ValueError(f"name {name!r} is already registered for {old!r}")
    ALGORITHMS[name] = factory
    return factory


_AXES = Context(0, 0, None)


def _vmap(fn, vmapped: bool, in_axes):
    return jax.vmap(fn, in_axes=in_axes) if vmapped else fn


@partial(jax.jit, static_argnames=("algorithm", "num_epochs", "vmapped"))
def _chunk(key, state, ctx, num_active, *, algorithm, num_epochs, vmapped):
    """``num_epochs`` (``num_active`` of them active) items of one unit or U units."""
    one = lambda k, s, cx: algorithm.run_epochs(k, s, cx, num_active, num_epochs)
    return _vmap(one, vmapped, (0, 0, _AXES))(key, state, ctx)


@partial(jax.jit, static_argnames=("algorithm", "vmapped"))
def _holdout(state, ctx, held, *, algorithm, vmapped):
    """The held-out loss of every unit: () or (U,)."""
    one = lambda s, cx: algorithm.holdout_loss(s, cx, held)
    return _vmap(one, vmapped, (0, _AXES))(state, ctx)


@partial(jax.jit, static_argnames=("algorithm", "vmapped"))
def _finish(state, ctx, *, algorithm, vmapped):
    return _vmap(algorithm.finish, vmapped, (0, _AXES))(state, ctx)


def check_units(keys, units: int | None) -> None:
    """The keys must be one key (``units=None``) or U keys (``units=U``)."""
    if units is not None:
        units = _checks.positive_int("units", units)
    shape = _units.key_batch_shape(keys)
    want = () if units is None else (units,)
    if shape != want:
        raise ValueError(f"keys have batch shape {shape}, but units={units} needs {want}")


def run(
    algorithm: Algorithm,
    keys: jax.Array,
    data,
    *,
    units: int | None,
    num_epochs: int,
    chunk: int = 100,
    hyper=None,
    shared=None,
    start=None,
    settings: dict | None = None,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    desc: str | None = None,
    holdout=None,
    holdout_every: int | None = None,
    early_stop: conv.Plateau | None = None,
) -> Run:
    """Run ``algorithm`` for ``num_epochs`` epochs on ``units`` units (None: one unit).

    Args:
        keys: one key, or (U,) keys (unit u uses ``keys[u]``).
        data, hyper: per-unit pytrees (leading axis U with units); ``shared``: no unit axis.
        start: per-unit pytree given to ``init`` (e.g. initial parameters), or None.
        chunk: epochs per compiled call (checkpoint, progress and held-out points between).
        settings: everything else that determines the result, for the checkpoint signature
            (method, key and units are added; see ``resumable.signature``).
        holdout: (x, c) or a ``convergence.Holdout`` (no unit axis, the features of ``data``
            if it is a pair (x, c)): ``algorithm.holdout_loss`` before training and every
            ``holdout_every`` epochs (default and at most ``chunk``).
        early_stop: ``convergence.Plateau`` (needs ``holdout``): stop between chunks when
            every unit's held-out loss has stopped improving.
    Returns:
        ``Run``. A unit equals the one-unit run with its key, data and hyper-parameters.
    """
    num_epochs = _checks.positive_int("num_epochs", num_epochs)
    chunk = min(_checks.positive_int("chunk", chunk), num_epochs)
    check_units(keys, units)
    for name, tree in (("data", data), ("hyper", hyper), ("start", start)):
        _units.check_leading(name, tree, units)
    vmapped = units is not None
    ctx = Context(data, hyper, shared)
    state = _vmap(algorithm.init, vmapped, (0, _AXES, 0))(keys, ctx, start)
    algorithm = algorithm._replace(init=None)  # compiled programs are keyed by the others
    sig = resumable.signature(method=algorithm.name, key=keys, units=units, **(settings or {}))
    holdout = conv.as_holdout(holdout, like=_units.first_unit(data, units))
    early_stop = conv.check_plateau(early_stop)
    if early_stop is not None and holdout is None:
        raise ValueError("early_stop needs a held-out set: pass holdout=(x, c)")
    if holdout is not None and algorithm.holdout_loss is None:
        raise ValueError(f"holdout: the algorithm {algorithm.name!r} has no held-out loss")
    every = conv.record_every(holdout_every, chunk)
    if holdout is not None:
        sig |= resumable.signature(**conv.holdout_signature(holdout))
        held = lambda st: np.asarray(_holdout(st, ctx, holdout, algorithm=algorithm,
                                              vmapped=vmapped))
        first = held(state)
    if desc is None:
        desc = algorithm.name if units is None else f"{algorithm.name} x{units}"
    item = algorithm.item
    axes = ("unit",) * vmapped + (item,) + tuple(algorithm.item_axes)
    order = (item,) + tuple(algorithm.item_axes) + ("unit",) * vmapped
    axis = int(vmapped) + algorithm.record_axis  # the item axis of every record

    def take(v, n):
        return np.asarray(v)[(slice(None),) * axis + (slice(0, n),)]

    def step(state, start_epoch, n):
        state, info = _chunk(keys, state, ctx, jnp.asarray(n, jnp.int32), algorithm=algorithm,
                             num_epochs=chunk, vmapped=vmapped)
        if algorithm.host_records is not None:
            rec = algorithm.host_records(desc, state, dict(info), start_epoch, vmapped)
        else:
            rec = {k: take(v, n) for k, v in dict(info).items()}
            resumable.check_finite(desc, rec[algorithm.checked], axes,
                                   offsets={item: start_epoch}, order=order,
                                   what=algorithm.what)
        if holdout is not None:
            value = held(state)[..., None]
            rec |= {"holdout": value, "holdout_epoch": np.full(value.shape, start_epoch + n)}
        return state, rec

    def curve(records):
        return np.concatenate([first[..., None], records["holdout"]], axis=-1)

    def postfix(r):
        last = np.take(r[algorithm.checked], -1, axis=axis)
        out = {algorithm.checked: f"{float(np.mean(last)):.4f}"}
        if holdout is not None:
            out["held-out"] = f"{float(np.mean(r['holdout'][..., -1])):.4f}"
        return out

    out = resumable.run_chunks(
        step, state, num_epochs, chunk=chunk if holdout is None else every, axis=axis,
        checkpoint_path=checkpoint_path, signature=sig, progress=progress, desc=desc,
        unit=item, postfix=postfix, prepare=None if algorithm.warm_up is None else
        lambda st: algorithm.warm_up(st, ctx, vmapped, desc),
        until=None if early_stop is None else
        lambda r: conv.plateau_reached(curve(r), early_stop))
    records = dict(out.records)
    finished = None
    if algorithm.finish is not None:
        finished = _finish(out.state, ctx, algorithm=algorithm, vmapped=vmapped)
    if holdout is None:
        return Run(out.state, records, finished)
    done = np.asarray(records.pop("holdout_epoch"))
    epochs = np.concatenate([[0], done.reshape(-1, done.shape[-1])[0]]).astype(np.int64)
    losses = curve(records)
    records.pop("holdout")
    return Run(out.state, records, finished, epochs, losses)
