"""Convergence you can see: a held-out loss along training, a "train longer" flag, early stop.

Every trainer (``training.fit``, ``posteriors.fit_vi``/``fit_vi_cnf``,
``posteriors.sample_adammcmc``/``sample_adammcmc_cnf``, ``posteriors.fit_repulsive``/``_cnf``)
takes ``holdout=`` — ``(x, c)`` or a ``Holdout`` — and records the loss on those held-out events
before training and at every chunk boundary (every ``holdout_every`` epochs), as
``(epochs (C,), losses (C,) or (U, C))``. The held-out loss is evaluated on a fixed subset of at
most ``HOLDOUT_POINTS`` events with one fixed key (``Holdout.key``): the flow-matching loss's
(t, z) draws are the same at every point of the curve (common random numbers), so the curve moves
only because the parameters move. It never touches the training keys or updates: the trained
numbers are bit for bit those of a run without ``holdout``.

``check_convergence(epochs, losses)`` fits a straight line to the last ``tail`` (10 %) of the
curve and flags "not converged: train longer" when the fitted fall over that window is larger
than ``tolerance`` × the loss scale *and* larger than ``z`` standard errors of the fit (noise
alone does not flag a run); it also reports a rise (over-fitting). ``Plateau`` is the optional
early stop: end training between chunks when the held-out loss has not improved by
``min_delta`` for ``patience`` records. See docs/convergence.md for the measurements behind
``DEFAULT_TOLERANCE``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import _checks

__all__ = ["DEFAULT_TOLERANCE", "HOLDOUT_POINTS", "Convergence", "Holdout", "Plateau",
           "as_dicts", "as_holdout", "check_convergence", "check_plateau", "holdout_info",
           "holdout_set", "holdout_signature", "plateau_reached", "record_every"]

HOLDOUT_POINTS = 2048
DEFAULT_TOLERANCE = 1e-3
_HOLDOUT_SEED = 20_211  # the fixed key of the subset and of the loss noise (any fixed value)


class Holdout(NamedTuple):
    """Fixed held-out events x (n, d), c (n, k) and the fixed key of the loss noise."""

    x: jax.Array
    c: jax.Array
    key: jax.Array


def holdout_set(x, c=None, *, max_points: int = HOLDOUT_POINTS, key=None) -> Holdout:
    """A ``Holdout`` of at most ``max_points`` of the events x (n, d), c (n, k) (None: k = 0).

    A larger set is cut to a random subset (without replacement, in the original order) drawn
    with ``key`` (default a fixed key), and the loss key is another fixed key split from it.
    """
    max_points = _checks.positive_int("max_points", max_points)
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"holdout x must have shape (n, d) with n >= 1, got {tuple(x.shape)}")
    c = jnp.zeros((x.shape[0], 0), x.dtype) if c is None else jnp.asarray(c)
    if c.ndim != 2 or c.shape[0] != x.shape[0]:
        raise ValueError(f"holdout c must have shape ({x.shape[0]}, k), got {tuple(c.shape)}")
    _checks.finite("holdout x", x)
    _checks.finite("holdout c", c)
    key = jax.random.key(_HOLDOUT_SEED) if key is None else key
    k_subset, k_loss = jax.random.split(key)
    if x.shape[0] > max_points:
        idx = jnp.sort(jax.random.choice(k_subset, x.shape[0], (max_points,), replace=False))
        x, c = x[idx], c[idx]
    return Holdout(x, c, k_loss)


def as_holdout(holdout, like=None) -> Holdout | None:
    """None, a ``Holdout`` (used as is) or a pair ``(x, c)`` (-> ``holdout_set(x, c)``).

    ``like``: the training data of one unit; when it is a pair (x, c) of arrays, the held-out
    events must have its number of features d and k.
    """
    if holdout is None:
        return None
    if not isinstance(holdout, Holdout):
        if not (isinstance(holdout, (tuple, list)) and len(holdout) == 2):
            raise ValueError(f"holdout must be None, a Holdout or a pair (x, c), got "
                             f"{type(holdout)!r}")
        holdout = holdout_set(*holdout)
    if isinstance(like, (tuple, list)) and len(like) == 2:
        for name, held, train in (("x", holdout.x, like[0]), ("c", holdout.c, like[1])):
            if np.ndim(train) >= 1 and np.shape(held)[-1] != np.shape(train)[-1]:
                raise ValueError(f"holdout {name} has {np.shape(held)[-1]} features per event, "
                                 f"the training data {np.shape(train)[-1]}")
    return holdout


def record_every(holdout_every: int | None, chunk_epochs: int) -> int:
    """Epochs between held-out records: ``holdout_every`` (None: one chunk), at most a chunk
    (a record is made between compiled chunk calls)."""
    if holdout_every is None:
        return chunk_epochs
    return min(_checks.positive_int("holdout_every", holdout_every), chunk_epochs)


def holdout_signature(holdout: Holdout | None) -> dict:
    """Checkpoint-signature entry of a held-out curve: the held-out set (none without one, so
    checkpoints written without a held-out set still resume). The record interval is not part
    of it: every record carries its epoch, so a longer rerun may resume with another one."""
    if holdout is None:
        return {}
    return {"holdout": (holdout.x, holdout.c, holdout.key)}


def holdout_info(epochs, losses, units: int | None) -> dict:
    """The draws' info entries of a held-out curve: "holdout_epochs" (C,) and "holdout_curve"
    (C,) — with a leading U for units (epochs tiled); {} without a curve."""
    if epochs is None:
        return {}
    epochs = np.asarray(epochs)
    if units is not None:
        epochs = np.broadcast_to(epochs, (units,) + epochs.shape).copy()
    return {"holdout_epochs": epochs, "holdout_curve": np.asarray(losses)}


class Convergence(NamedTuple):
    """Trend of the held-out loss over the last ``tail`` of the recorded epochs.

    Scalars for one curve, (U,) arrays for U curves. ``fall`` = −slope × window: the fitted
    decrease over the tail window (window = tail × recorded epoch range), ``fall_se`` its
    standard error, ``scale`` the loss scale it is compared with (|mean loss in the tail|
    unless given), ``relative_fall`` = fall / scale. ``not_converged``: fall > tolerance ·
    scale and fall > z · fall_se; ``rising``: the same for −fall (over-fitting);
    ``judged``: the tail held at least ``min_points`` records (else both flags are False).
    """

    not_converged: np.ndarray
    rising: np.ndarray
    judged: np.ndarray
    fall: np.ndarray
    fall_se: np.ndarray
    relative_fall: np.ndarray
    scale: np.ndarray
    tail_start: np.ndarray
    tail_points: np.ndarray
    final_loss: np.ndarray
    tolerance: float
    z: float

    @property
    def verdict(self):
        """'not converged: train longer', 'rising: over-fitting?', 'converged' or
        'too few records to judge' (an array of them for U curves)."""
        v = np.where(self.not_converged, "not converged: train longer",
                     np.where(self.rising, "rising: over-fitting?",
                              np.where(self.judged, "converged", "too few records to judge")))
        return str(v) if v.ndim == 0 else v


def _trend(e, y, window):
    """Least-squares line y = a + b e: (fall = −b · window, its standard error)."""
    m = e.size
    e0 = e - e.mean()
    sxx = float(np.sum(e0 * e0))
    if m < 2 or sxx == 0.0:
        return 0.0, np.inf
    b = float(np.sum(e0 * (y - y.mean())) / sxx)
    resid = y - y.mean() - b * e0
    se_b = np.sqrt(float(np.sum(resid**2)) / max(m - 2, 1) / sxx) if m > 2 else np.inf
    return -b * window, se_b * window


def check_convergence(epochs, losses, *, tail: float = 0.1,
                      tolerance: float = DEFAULT_TOLERANCE, z: float = 2.0, min_points: int = 4,
                      scale=None) -> Convergence:
    """Does the held-out loss still fall over its last ``tail`` of the recorded epochs?

    Args:
        epochs: (C,) epochs (or chain steps) of the records, increasing.
        losses: (C,) or (U, C) held-out losses.
        tail: fraction of the recorded epoch range fitted (records with epoch ≥ last −
            tail · (last − first)); fewer than ``min_points`` there: the last ``min_points``.
        tolerance: the relative fall (fall / scale over the tail window) that flags a run.
        z: the fall must also exceed z standard errors of the linear fit.
        scale: loss scale (scalar or (U,)); default |mean held-out loss in the tail|.
    Returns:
        ``Convergence`` (see there; ``verdict`` gives the words).
    """
    e = np.asarray(epochs, np.float64)
    y = np.asarray(losses, np.float64)
    if e.ndim != 1:
        raise ValueError(f"epochs must have shape (C,), got {e.shape}")
    if y.ndim not in (1, 2) or y.shape[-1] != e.size:
        raise ValueError(f"losses must have shape ({e.size},) or (U, {e.size}), got {y.shape}")
    if e.size > 1 and np.any(np.diff(e) <= 0):
        raise ValueError("epochs must be strictly increasing")
    _checks.finite("losses", y)
    if not 0.0 < tail <= 1.0:
        raise ValueError(f"tail must be in (0, 1], got {tail!r}")
    _checks.non_negative("tolerance", tolerance)
    _checks.non_negative("z", z)
    min_points = _checks.positive_int("min_points", min_points)
    if min_points < 3:
        raise ValueError(f"min_points must be >= 3 (a line and its error), got {min_points}")
    rows = y[None] if y.ndim == 1 else y
    scales = np.broadcast_to(np.asarray(np.nan if scale is None else scale, np.float64),
                             rows.shape[:1])
    span = float(e[-1] - e[0]) if e.size else 0.0
    window = tail * span
    sel = np.flatnonzero(e >= e[-1] - window) if e.size else np.zeros(0, int)
    if sel.size < min_points:
        sel = np.arange(max(e.size - min_points, 0), e.size)
    judged = sel.size >= min_points
    out = []
    for row, sc in zip(rows, scales, strict=True):
        fall, fall_se = _trend(e[sel], row[sel], window) if judged else (0.0, np.inf)
        level = abs(float(np.mean(row[sel]))) if sel.size else np.nan
        sc = level if np.isnan(sc) else float(sc)
        rel = fall / sc if sc > 0 else np.inf * np.sign(fall)
        bar = tolerance * sc
        out.append((judged and fall > bar and fall > z * fall_se,
                    judged and -fall > bar and -fall > z * fall_se, judged, fall, fall_se, rel,
                    sc, e[sel[0]] if sel.size else np.nan, sel.size,
                    row[-1] if row.size else np.nan))
    cols = [np.asarray(col) for col in zip(*out, strict=True)]
    if y.ndim == 1:
        cols = [col[0] for col in cols]
    return Convergence(*cols, float(tolerance), float(z))


def as_dicts(conv: Convergence) -> list[dict]:
    """One JSON-able dict per curve (a list of one for a single curve), with the verdict."""
    fields = {k: np.atleast_1d(np.asarray(v)) for k, v in conv._asdict().items()
              if k not in ("tolerance", "z")}
    verdicts = np.atleast_1d(np.asarray(conv.verdict))
    out = []
    for u in range(verdicts.size):
        d = {k: (bool(v[u]) if v.dtype == bool else int(v[u]) if v.dtype.kind in "iu"
                 else float(v[u])) for k, v in fields.items()}
        out.append(d | {"tolerance": conv.tolerance, "z": conv.z, "verdict": str(verdicts[u])})
    return out


class Plateau(NamedTuple):
    """Early stop: end training when the held-out loss has not improved by ``min_delta`` (loss
    units) for ``patience`` records (chunks of ``holdout_every`` epochs)."""

    patience: int
    min_delta: float = 0.0


def check_plateau(plateau: Plateau | None) -> Plateau | None:
    if plateau is None:
        return None
    if not isinstance(plateau, Plateau):
        raise ValueError(f"early_stop must be None or a Plateau(patience, min_delta), got "
                         f"{plateau!r}")
    _checks.positive_int("early_stop.patience", plateau.patience)
    _checks.non_negative("early_stop.min_delta", plateau.min_delta)
    return plateau


def plateau_reached(losses, plateau: Plateau) -> bool:
    """Whether every curve of ``losses`` (C,) or (U, C) has not improved on its best before
    the last ``patience`` records by more than ``min_delta`` within them."""
    y = np.atleast_2d(np.asarray(losses, np.float64))
    p = int(plateau.patience)
    if y.shape[-1] <= p:
        return False
    best_before = np.min(y[:, :-p], axis=1)
    best_recent = np.min(y[:, -p:], axis=1)
    return bool(np.all(best_recent > best_before - float(plateau.min_delta)))
