"""Deterministic stage: flow-matching training of all R runs at once (the unit axis of
``bayesiamp_jax.training.fit``: one vmapped program over runs).

Outputs ``models/deterministic.msgpack`` with the stacked params (R, ...) and per-epoch losses
(R, epochs). The library checkpoints the stacked state after every chunk of epochs, so an
interrupted run continues where it stopped with the same numbers. Run r uses the key
``purpose_key(seed, r, "deterministic")`` of the one-unit ``fit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import training
from bayesiamp_jax.checkpoint import load_pytree, restore, save_pytree
from experiments import config as cfgmod
from experiments.data import field_from_config, load_all_data, purpose_key


def model_path(study):
    return study.path("models", "deterministic.msgpack")


def checkpoint_path(study):
    cfg = study.cfg
    fp = cfgmod.fingerprint(cfg.seed, cfg.data, cfg.network, cfg.deterministic.batch_size,
                            cfg.num_runs)
    return study.path("checkpoints", f"deterministic_r1_{fp}.msgpack")  # resumable format


def train_deterministic(study, progress: bool = True) -> None:
    cfg, d = study.cfg, study.cfg.deterministic
    data = load_all_data(study)
    keys = jnp.stack([purpose_key(cfg.seed, r, "deterministic") for r in range(cfg.num_runs)])
    result = training.fit(keys, field_from_config(cfg), data.x, data.c, d.num_epochs,
                          batch_size=d.batch_size, chunk_epochs=d.chunk_epochs,
                          checkpoint_path=checkpoint_path(study), progress=progress)
    save_pytree(model_path(study), {"params": result.state.params, "losses": result.losses})
    study.log.info("deterministic: %d epochs, final loss per run %s", d.num_epochs,
                   np.array2string(result.losses[:, -1], precision=4))


def load_deterministic(study, template=None):
    """Stacked params (R, ...) and losses (R, epochs) of the deterministic stage."""
    raw = load_pytree(model_path(study))
    params = raw["params"]
    if template is not None:
        r = jax.tree_util.tree_leaves(params)[0].shape[0]
        target = jax.tree_util.tree_map(lambda leaf: np.zeros((r,) + np.shape(leaf)), template)
        params = restore(target, params)
    return params, np.asarray(raw["losses"])
