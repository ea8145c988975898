"""Deterministic stage: flow-matching training of all R runs at once (vmapped over runs).

Outputs ``models/deterministic.msgpack`` with the stacked params (R, ...) and per-epoch losses
(R, epochs). The stacked training state is checkpointed after every chunk of epochs, so an
interrupted run continues where it stopped with the same numbers.
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import numpy as np
from tqdm.auto import tqdm

from bayesiamp_jax import training
from bayesiamp_jax.checkpoint import load_pytree, restore, save_pytree
from experiments import config as cfgmod
from experiments.data import field_from_config, load_all_data, purpose_key


def model_path(study):
    return study.path("models", "deterministic.msgpack")


def checkpoint_path(study):
    cfg = study.cfg
    fp = cfgmod.fingerprint(cfg.seed, cfg.data, cfg.network, cfg.deterministic.batch_size)
    return study.path("checkpoints", f"deterministic_{fp}.msgpack")


@lru_cache(maxsize=8)
def _epoch_runner(field, batch_size):
    """One jitted runner per (field, batch size), so repeated stages reuse the compilation."""
    return training.build_epochs(training.flow_matching_loss_fn(field), training.adam(),
                                 batch_size)


@partial(jax.jit, static_argnames=("run", "num_epochs"))
def _run_all(run, keys, state, x, c, num_epochs):
    return jax.vmap(lambda k, s, xx, cc: run(k, s, xx, cc, num_epochs))(keys, state, x, c)


def train_deterministic(study, progress: bool = True) -> None:
    cfg, d = study.cfg, study.cfg.deterministic
    field = field_from_config(cfg)
    data = load_all_data(study)
    runs = range(cfg.num_runs)
    keys = [jax.random.split(purpose_key(cfg.seed, r, "deterministic")) for r in runs]
    key_init = jax.numpy.stack([k[0] for k in keys])
    key_train = jax.numpy.stack([k[1] for k in keys])
    optimizer = training.adam()
    state = jax.vmap(lambda k: training.init_train_state(field.init(k), optimizer))(key_init)
    history = np.zeros((cfg.num_runs, 0), np.float32)
    ckpt = checkpoint_path(study)
    if ckpt.is_file():
        saved = load_pytree(ckpt)
        if int(np.asarray(saved["state"]["epoch"]).reshape(-1)[0]) > d.num_epochs:
            study.log.warning("deterministic: checkpoint is past num_epochs=%d; starting over",
                              d.num_epochs)
        else:
            state = restore(state, saved["state"])
            history = np.asarray(saved["losses"]).reshape(cfg.num_runs, -1)
            study.log.info("deterministic: resuming from epoch %d", int(state.epoch[0]))
    run = _epoch_runner(field, d.batch_size)
    done = int(state.epoch[0])
    with tqdm(total=d.num_epochs, initial=done, desc=f"deterministic x{cfg.num_runs} runs",
              unit="epoch", disable=not progress, dynamic_ncols=True) as bar:
        while done < d.num_epochs:
            n = min(d.chunk_epochs, d.num_epochs - done)
            state, info = _run_all(run, key_train, state, data.x, data.c, n)
            history = np.concatenate([history, np.asarray(info.loss)], axis=1)
            done += n
            bar.update(n)
            bar.set_postfix(loss=f"{history[:, -1].mean():.4f}")
            save_pytree(ckpt, {"state": state, "losses": history})
    save_pytree(model_path(study), {"params": state.params, "losses": history})
    study.log.info("deterministic: %d epochs, final loss per run %s", d.num_epochs,
                   np.array2string(history[:, -1], precision=4))


def load_deterministic(study, template=None):
    """Stacked params (R, ...) and losses (R, epochs) of the deterministic stage."""
    raw = load_pytree(model_path(study))
    params = raw["params"]
    if template is not None:
        r = jax.tree_util.tree_leaves(params)[0].shape[0]
        target = jax.tree_util.tree_map(lambda leaf: np.zeros((r,) + np.shape(leaf)), template)
        params = restore(target, params)
    return params, np.asarray(raw["losses"])
