"""Data stage: R independent training sets of the ring, and the study's key scheme.

Keys: run r of the study uses ``fold_in(key(seed), r)``; inside a run every purpose gets
``fold_in(run_key, crc32(purpose))`` (purpose e.g. "data", "vi_k10"), so adding methods or grid
points never changes the numbers of the others.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np

import bayesiamp_jax as bj
from bayesiamp_jax.checkpoint import atomic_write_bytes


def run_key(seed: int, run: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), run)


def purpose_key(seed: int, run: int, purpose: str) -> jax.Array:
    return jax.random.fold_in(run_key(seed, run), zlib.crc32(purpose.encode()) & 0x7FFFFFFF)


def data_path(study, run: int):
    return study.path("data", f"run{run}.npz")


def make_data(study) -> None:
    """Sample and save (atomically) the training set of every run."""
    cfg = study.cfg
    for r in range(cfg.num_runs):
        path = data_path(study, r)
        if path.is_file():
            continue
        s = bj.sample_ring(purpose_key(cfg.seed, r, "data"), cfg.data.num_train, cfg.data.r_mean)
        _save_npz(path, x=np.asarray(s.x), c=np.asarray(s.c))
    study.log.info("training data: %d runs x %d points", cfg.num_runs, cfg.data.num_train)


def load_data(study, run: int) -> bj.data.RingSample:
    with np.load(data_path(study, run)) as f:
        return bj.data.RingSample(jnp.asarray(f["x"]), jnp.asarray(f["c"]))


def load_all_data(study) -> bj.data.RingSample:
    """Training sets of all runs stacked: x (R, n, 2), c (R, n, 1)."""
    runs = [load_data(study, r) for r in range(study.cfg.num_runs)]
    return bj.data.RingSample(jnp.stack([s.x for s in runs]), jnp.stack([s.c for s in runs]))


def _save_npz(path, **arrays) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def field_from_config(cfg) -> bj.VectorField:
    n = cfg.network
    return bj.VectorField(hidden=tuple(n.hidden), num_frequencies=n.num_frequencies,
                          precision=n.precision)
