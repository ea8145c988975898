"""Data stage: R independent training sets of the ring, and the study's key scheme.

Keys: run r of the study uses ``fold_in(key(seed), r)``; inside a run every purpose gets
``fold_in(run_key, crc32(purpose))`` (purpose e.g. "data", "vi_k10"), so adding methods or grid
points never changes the numbers of the others.
"""

from __future__ import annotations

import importlib
import json
import zipfile
import zlib
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

import bayesiamp_jax as bj
from bayesiamp_jax.checkpoint import DamagedFileError, atomic_write_bytes, atomic_write_json
from bayesiamp_jax.preprocessing import Preprocessing, refuse_discrete
from experiments.settings import ConfigError


class DataError(ConfigError):
    """Bad data, or a setting that does not fit them: one line naming the file and the setting
    that fixes it (a ``ConfigError``, so a ``ValueError``; the commands print it without a
    traceback)."""


def read_npz(setting: str, path: str, num: int | None = None, **kw) -> bj.datasets.Sample:
    """``datasets.load_npz(path, num, **kw)`` of the file that ``setting`` names; its one-line
    ValueError becomes a ``DataError`` that also says how to fix it."""
    try:
        return bj.datasets.load_npz(path, num, **kw)
    except ValueError as e:
        raise DataError(f"{e} ({setting}): fix the file or give another one with --set "
                        f"{setting}=FILE") from None


def training_events(cfg) -> bj.datasets.Sample:
    """The training events of all runs of a file study: rows [0, R·N) of data.path (a
    ``DataError`` naming data.num_train when the file holds fewer)."""
    d = cfg.data
    s = read_npz("data.path", d.path)
    have, want = int(s.x.shape[0]), cfg.num_runs * d.num_train
    if have < want:
        fix = (f"lower data.num_train, e.g. --set data.num_train={have // cfg.num_runs}"
               if have >= cfg.num_runs else "add events to the file")
        raise DataError(f"data file {d.path!r} (data.path) has {have} events, fewer than "
                        f"num_runs x data.num_train = {cfg.num_runs} x {d.num_train} = {want}; "
                        f"{fix} (or num_runs)")
    return bj.datasets.Sample(s.x[:want], None if s.c is None else s.c[:want])


def preflight(cfg) -> None:
    """Read and check a file study's data before anything runs: the files, the number of
    events, discrete columns, the preprocessing, the reference and the observable (each a
    one-line ``DataError`` naming the setting that fixes it). Nothing to do for ring/shell."""
    if cfg.data.name == "file":
        data_dims(cfg)
        training_events(cfg)
        problem_from_config(cfg)


def preprocessing_path(study):
    return study.path("data", "preprocessing.json")


@lru_cache(maxsize=8)
def preprocessing_from_config(cfg) -> Preprocessing | None:
    """The per-column transform of a file study (``data.preprocess``; empty: standardise every
    column), fitted on the training events of all runs (rows [0, R·N) of data.path, so every
    run and the evaluation share one transform); None for ring/shell, ``none`` or identity."""
    d = cfg.data
    if d.name != "file" or d.preprocess == "none":
        return None
    spec = d.preprocess or "standardise"
    x = np.asarray(training_events(cfg).x)
    try:
        pre = Preprocessing.fit(spec, x, name=f"data file {d.path!r}")
    except ValueError as e:
        raise DataError(f"data.preprocess={spec!r}: {e}; choose another kind for that column "
                        "(--set data.preprocess=KIND,KIND,...; docs/preprocessing.md)") from None
    return None if pre.is_identity else pre


def load_preprocessing(study) -> Preprocessing | None:
    """The transform saved with the study (data/preprocessing.json; None without one)."""
    path = preprocessing_path(study)
    if not path.is_file():
        return None
    try:
        return Preprocessing.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise DamagedFileError(f"preprocessing file {str(path)!r} is damaged ({e}); delete the "
                               "study's data/ folder to make it again") from None


def run_key(seed: int, run: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), run)


def purpose_key(seed: int, run: int, purpose: str) -> jax.Array:
    return jax.random.fold_in(run_key(seed, run), zlib.crc32(purpose.encode()) & 0x7FFFFFFF)


def data_path(study, run: int):
    return study.path("data", f"run{run}.npz")


def make_data(study) -> None:
    """Sample (ring, shell) or read (file) and save, atomically, the training set of every run."""
    cfg = study.cfg
    d = cfg.data
    source = None
    if d.name == "file":  # run r: events [r·N, (r+1)·N) of the file
        source = training_events(cfg)
        pre = preprocessing_from_config(cfg)
        if pre is not None:  # stored with the study; the data files stay physical
            atomic_write_json(preprocessing_path(study), pre.to_dict() | {
                "spec": d.preprocess or "standardise",
                "fitted_on": f"rows [0, {cfg.num_runs * d.num_train}) of {d.path}"})
            study.log.info("preprocessing (data.preprocess=%r) fitted on the %d training events: "
                           "%s", d.preprocess or "standardise", cfg.num_runs * d.num_train,
                           ", ".join(f"{c.kind} (shift {c.shift:.4g}, scale {c.scale:.4g})"
                                     for c in pre.columns))
    for r in range(cfg.num_runs):
        path = data_path(study, r)
        if path.is_file():
            continue
        key = purpose_key(cfg.seed, r, "data")
        if d.name == "ring":
            s = bj.sample_ring(key, d.num_train, d.r_mean)
        elif d.name == "shell":
            s = bj.datasets.sample_shell(key, d.num_train, d.dim, d.r_mean)
        else:
            rows = slice(r * d.num_train, (r + 1) * d.num_train)
            s = bj.datasets.Sample(source.x[rows], None if source.c is None else source.c[rows])
        arrays = {"x": np.asarray(s.x)} | ({} if s.c is None else {"c": np.asarray(s.c)})
        _save_npz(path, **arrays)
    study.log.info("training data (%s): %d runs x %d points", d.name, cfg.num_runs, d.num_train)
    make_holdout(study)


def holdout_path(study):
    return study.path("data", "holdout.npz")


def make_holdout(study) -> None:
    """Sample (ring, shell) or split off (file) the held-out events, never trained on, and save
    them atomically: a fresh sample of ``data.num_holdout`` events (-1: ``num_train``) with its
    own key for a toy; for a file the events after the R training sets (or ``data.holdout_path``).
    With none (``num_holdout=0`` or no event left) a warning says the study is unchecked."""
    cfg, d = study.cfg, study.cfg.data
    path = holdout_path(study)
    if path.is_file():
        return
    want = d.num_train if d.num_holdout == -1 and d.name != "file" else d.num_holdout
    if want == 0:
        study.log.warning("data: no held-out events (data.num_holdout=0): calibration cannot be "
                          "checked without a truth; the study is unchecked")
        return
    key = purpose_key(cfg.seed, 0, "holdout")
    if d.name == "ring":
        s = bj.sample_ring(key, want, d.r_mean)
    elif d.name == "shell":
        s = bj.datasets.sample_shell(key, want, d.dim, d.r_mean)
    else:
        dim, cond_dim = data_dims(cfg)
        if d.holdout_path:
            s = read_npz("data.holdout_path", d.holdout_path, dim=dim, cond_dim=cond_dim)
            first = 0
        else:
            s = read_npz("data.path", d.path, dim=dim, cond_dim=cond_dim)
            first = cfg.num_runs * d.num_train
        left = int(s.x.shape[0]) - first
        if left <= 0:
            study.log.warning("data: no held-out events: all %d events of data.path=%s are used "
                              "for training (data.num_train x num_runs); the study is unchecked "
                              "(lower data.num_train or give data.holdout_path)",
                              int(s.x.shape[0]), d.path)
            return
        if want > left:
            raise ValueError(f"data.num_holdout={want} but only {left} events are left for the "
                             f"held-out set in {d.holdout_path or d.path!r}; lower "
                             "data.num_holdout (-1: all that are left)")
        rows = slice(first, first + (left if want == -1 else want))
        s = bj.datasets.Sample(s.x[rows], None if s.c is None else s.c[rows])
    arrays = {"x": np.asarray(s.x)} | ({} if s.c is None else {"c": np.asarray(s.c)})
    _save_npz(path, **arrays)
    study.log.info("held-out data (%s): %d events, never trained on", d.name, s.x.shape[0])


def holdout_size(cfg) -> int:
    """How many held-out events ``make_holdout`` will save (0: none), from the settings and,
    for a file, its number of events (what the budget counts before the data exist)."""
    d = cfg.data
    if d.name != "file":
        return d.num_train if d.num_holdout == -1 else d.num_holdout
    if d.num_holdout == 0:
        return 0
    left = (_file_rows("data.holdout_path", d.holdout_path) if d.holdout_path else
            _file_layout(d.path)[0] - cfg.num_runs * d.num_train)
    return max(0, left if d.num_holdout == -1 else min(d.num_holdout, left))


@lru_cache(maxsize=8)
def _file_rows(setting: str, path: str) -> int:
    return int(read_npz(setting, path).x.shape[0])


def load_holdout(study) -> bj.data.RingSample | None:
    """The held-out events: x (n, d), c (n, k) (k = 0: unconditional); None without any."""
    path = holdout_path(study)
    if not path.is_file():
        return None
    return _load_sample(path, "held-out data")


def load_data(study, run: int) -> bj.data.RingSample:
    """Training set of one run as the flow learns it: x (n, d) (preprocessed, T(x), for a file
    study with ``data.preprocess``), c (n, k) (k = 0: unconditional file data)."""
    s = _load_sample(data_path(study, run), "training data")
    pre = preprocessing_from_config(study.cfg)
    return s if pre is None else s._replace(x=pre.forward(s.x))


def _load_sample(path, what: str) -> bj.data.RingSample:
    try:
        with np.load(path) as f:
            x = jnp.asarray(f["x"])
            c = jnp.asarray(f["c"]) if "c" in f.files else jnp.zeros((x.shape[0], 0), x.dtype)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        raise DamagedFileError(f"{what} file {str(path)!r} is damaged; delete it (or the "
                               "study's data/ folder) to make it again") from None
    return bj.data.RingSample(x, c)


def load_all_data(study) -> bj.data.RingSample:
    """Training sets of all runs stacked: x (R, n, d), c (R, n, k)."""
    runs = [load_data(study, r) for r in range(study.cfg.num_runs)]
    return bj.data.RingSample(jnp.stack([s.x for s in runs]), jnp.stack([s.c for s in runs]))


def _save_npz(path, **arrays) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def data_dims(cfg) -> tuple[int, int]:
    """(d, k): the dimension of the events and of their conditions (0: unconditional)."""
    d = cfg.data
    if d.name == "ring":
        return 2, 1
    if d.name == "shell":
        return d.dim, 1
    return _file_layout(d.path)[1:]


@lru_cache(maxsize=8)
def _file_layout(path: str) -> tuple[int, int, int]:
    """(N, d, k) of the ``data.path`` file, read once (discrete columns refused)."""
    s = read_npz("data.path", path)
    try:
        refuse_discrete(s.x, f"data file {path!r} (data.path)")
    except ValueError as e:
        raise DataError(str(e)) from None
    return int(s.x.shape[0]), int(s.x.shape[1]), 0 if s.c is None else int(s.c.shape[1])


def _resolve(spec: str, what: str):
    """The attribute ``module:attribute`` names (a one-line error if it cannot be imported)."""
    module, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{what}={spec!r} cannot be imported: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return obj


def observable_from_config(cfg):
    """The binned observable: the setting, else polar (ring), radius_cosine (shell) or the
    first two coordinates (file; the only one for 1-D events)."""
    d = cfg.data
    name = d.observable or {"ring": "polar", "shell": "radius_cosine"}.get(d.name, "coordinates")
    if ":" in name:
        obs = _resolve(name, "data.observable")
        if not hasattr(obs, "names") and callable(obs):  # a factory or class
            obs = obs()
    elif name == "coordinates":
        obs = bj.observables.Coordinates(tuple(range(min(2, data_dims(cfg)[0]))))
    else:
        obs = bj.observables.BUILT_IN[name]()
    try:
        return bj.observables.check(obs, data_dims(cfg)[0])
    except (TypeError, ValueError) as e:
        raise DataError(f"data.observable={name!r}: {e}") from None


@lru_cache(maxsize=8)
def problem_from_config(cfg) -> bj.datasets.Problem:
    """The study's observable and truth (``datasets.Problem``): the ring's exact polar grid;
    the shell's exact (r, cos θ) marginals (a reference sample for any other observable); a
    file study's reference sample."""
    d = cfg.data
    obs = observable_from_config(cfg)
    if d.name == "file":
        dim, cond_dim = data_dims(cfg)
        ref = read_npz("data.reference", d.reference, dim=dim, cond_dim=cond_dim)
        # the reference stays physical; the flow's events are mapped back before the observable
        return bj.datasets.reference_problem(obs, ref)._replace(
            transform=preprocessing_from_config(cfg))
    exact = (bj.datasets.ring_problem(d.r_mean) if d.name == "ring" else
             bj.datasets.shell_problem(d.dim, d.r_mean))
    if isinstance(obs, type(exact.observable)):
        return exact
    # a user observable of built-in data: a large exact truth sample is the reference
    ref = exact.sampler(purpose_key(cfg.seed, 0, "reference"), REFERENCE_SIZE)
    return bj.datasets.reference_problem(obs, bj.datasets.Sample(ref.x, None))._replace(
        condition=float(d.r_mean), sampler=exact.sampler)


REFERENCE_SIZE = 1_000_000


def field_from_config(cfg):
    """The vector field: the reference MLP of ``network``, or the user's ``network.module``
    factory called as factory(data_dim=d, cond_dim=k)."""
    n = cfg.network
    dim, cond_dim = data_dims(cfg)
    if n.module:
        field = _resolve(n.module, "network.module")(data_dim=dim, cond_dim=cond_dim)
        if not isinstance(field, bj.Field):
            raise ValueError(f"network.module={n.module!r} returned {type(field).__name__}, not "
                             "a bayesiamp_jax.Field (data_dim, cond_dim, __call__, init, "
                             "num_params)")
        return field
    return bj.VectorField(data_dim=dim, cond_dim=cond_dim, hidden=tuple(n.hidden),
                          num_frequencies=n.num_frequencies, precision=n.precision,
                          activation=n.activation)
