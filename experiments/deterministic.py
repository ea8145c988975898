"""Deterministic stage: flow-matching training of all R runs at once (the unit axis of
``bayesiamp_jax.training.fit``: one vmapped program over runs).

Outputs ``models/deterministic.msgpack`` with the stacked params (R, ...) and per-epoch losses
(R, epochs), and with held-out events (``experiments.convergence``) the held-out flow-matching
loss along training: "holdout_epochs" (R, C) and "holdout_curve" (R, C). The library
checkpoints the stacked state after every chunk of epochs, so an interrupted run continues
where it stopped with the same numbers. Run r uses the key
``purpose_key(seed, r, "deterministic")`` of the one-unit ``fit``. With several processes each
trains its share of the runs (run r on process r mod N) into
``models/deterministic.part<I>of<N>.msgpack``; process 0 stacks them into the one file.

The optimiser (``optimizer``): ``training.fit``'s reference Adam (1e-3) for
``deterministic.learning_rate_schedule=constant``; for ``cosine`` the same Adam on
``optim.cosine_decay`` over all steps of the run (num_epochs × ⌊num_train / batch_size⌋), its
step count in the optimiser state, so a resumed run continues the schedule where it stopped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax import _checks, optim, training
from bayesiamp_jax import convergence as bjconv
from bayesiamp_jax.checkpoint import load_pytree, restore, save_pytree
from experiments import config as cfgmod
from experiments import convergence, distributed
from experiments.data import field_from_config, load_all_data, purpose_key
from experiments.stages import naming_units


def _named(runs):
    """A non-finite loss of the call over ``runs`` -> StudyError naming the run."""
    return naming_units("deterministic", [("deterministic", r) for r in runs])


def model_path(study):
    return study.path("models", "deterministic.msgpack")


def checkpoint_path(study):
    cfg = study.cfg
    fp = cfgmod.fingerprint(cfg.seed, cfg.data, cfg.network, cfg.deterministic.batch_size,
                            cfg.num_runs, *cfgmod.schedule_parts(cfg, "deterministic"))
    return study.path("checkpoints", f"deterministic_r1_{fp}.msgpack")  # resumable format


def optimizer(cfg, method: str, num_points: int):
    """The Adam of ``method``'s flow-matching-loss training (deterministic, VI, the ensembles)
    for ``num_points`` training events per run: None (the library's reference Adam, the
    constant 1e-3) or the reference Adam on a cosine decay over its epochs × ⌊num_points /
    batch_size⌋ steps."""
    schedule, fraction = cfgmod.learning_rate_schedule(cfg, method)
    _checks.one_of(f"{method}.learning_rate_schedule", schedule, cfgmod.SCHEDULES)
    if schedule == "constant":
        return None
    steps = cfgmod.num_epochs(cfg, method) * (num_points // cfgmod.batch_size(cfg, method))
    return optim.adam(optim.cosine_decay(steps, fraction))


def train_deterministic(study, progress: bool = True) -> None:
    if distributed.process_count() > 1:
        return _train_shared(study, progress)
    cfg, d = study.cfg, study.cfg.deterministic
    data = load_all_data(study)
    keys = jnp.stack([purpose_key(cfg.seed, r, "deterministic") for r in range(cfg.num_runs)])
    with _named(range(cfg.num_runs)):
        result = training.fit(keys, field_from_config(cfg), data.x, data.c, d.num_epochs,
                              batch_size=d.batch_size, chunk_epochs=d.chunk_epochs,
                              optimizer=optimizer(cfg, "deterministic", data.x.shape[1]),
                              checkpoint_path=checkpoint_path(study), progress=progress,
                              **_holdout_kwargs(study))
    save_pytree(model_path(study), _saved(result))
    study.log.info("deterministic: %d epochs, final loss per run %s", result.losses.shape[-1],
                   np.array2string(result.losses[:, -1], precision=4))
    _log_convergence(study, result)


def _log_convergence(study, result) -> None:
    """One log line: the held-out loss and its verdict per run (none without a curve)."""
    if result.holdout_losses is None:
        return
    c = bjconv.check_convergence(result.holdout_epochs, result.holdout_losses)
    study.log.info("deterministic: held-out loss per run %s: %s",
                   np.array2string(c.final_loss, precision=4), ", ".join(c.verdict))


def _holdout_kwargs(study, early_stop: bool = True) -> dict:
    """The held-out curve and early-stop arguments of ``training.fit`` (none without
    held-out events)."""
    d = study.cfg.deterministic
    held = convergence.holdout(study)
    if held is None:
        return {}
    stop = convergence.plateau(d) if early_stop else None
    if d.early_stop and not early_stop:
        study.log.warning("deterministic.early_stop is ignored with several processes (their "
                          "runs would stop at different epochs); every run trains to the end")
    return {"holdout": held, "holdout_every": convergence.holdout_every(d.num_epochs),
            "early_stop": stop}


def _saved(result) -> dict:
    """The model file's contents: params (R, ...), losses (R, E) and the held-out curves
    (epochs tiled per run, so the parts of several processes stack)."""
    out = {"params": result.state.params, "losses": result.losses}
    if result.holdout_losses is not None:
        r = result.holdout_losses.shape[0]
        out |= {"holdout_epochs": np.broadcast_to(result.holdout_epochs,
                                                  (r,) + result.holdout_epochs.shape).copy(),
                "holdout_curve": result.holdout_losses}
    return out


def _part_path(study, process: int):
    """Process ``process``'s runs; named with N, so a rerun with another N never reuses it."""
    n = distributed.process_count()
    return study.path("models", f"deterministic.part{process}of{n}.msgpack")


def _train_shared(study, progress: bool) -> None:
    """This process's runs (r mod N = I) into its part file; process 0 then stacks the parts."""
    cfg, d = study.cfg, study.cfg.deterministic
    runs = distributed.mine(range(cfg.num_runs))
    part = _part_path(study, distributed.process_index())
    if runs and not part.is_file():
        data = load_all_data(study)
        keys = jnp.stack([purpose_key(cfg.seed, r, "deterministic") for r in runs])
        fp = cfgmod.fingerprint(cfg.seed, cfg.data, cfg.network, d.batch_size, cfg.num_runs, runs,
                                *cfgmod.schedule_parts(cfg, "deterministic"))
        with _named(runs):
            result = training.fit(keys, field_from_config(cfg), data.x[np.array(runs)],
                                  data.c[np.array(runs)], d.num_epochs, batch_size=d.batch_size,
                                  chunk_epochs=d.chunk_epochs, progress=progress,
                                  optimizer=optimizer(cfg, "deterministic", data.x.shape[1]),
                                  checkpoint_path=study.path("checkpoints",
                                                             f"deterministic_r1_{fp}.msgpack"),
                                  **_holdout_kwargs(study, early_stop=False))
        save_pytree(part, _saved(result))
        study.log.info("deterministic: runs %s, %d epochs, final loss %s", runs, d.num_epochs,
                       np.array2string(result.losses[:, -1], precision=4))
    distributed.barrier("deterministic:parts")
    if not distributed.is_main():
        return
    shares = {p: distributed.mine(range(cfg.num_runs), p)
              for p in range(distributed.process_count())}
    owners = [p for p, share in shares.items() if share]
    parts = [load_pytree(_part_path(study, p)) for p in owners]
    order = np.argsort(np.concatenate([shares[p] for p in owners]))
    stacked = jax.tree_util.tree_map(lambda *leaves: np.concatenate(leaves)[order], *parts)
    save_pytree(model_path(study), stacked)
    for p in owners:
        _part_path(study, p).unlink()


def load_deterministic(study, template=None):
    """Stacked params (R, ...) and losses (R, epochs) of the deterministic stage."""
    raw = load_pytree(model_path(study))
    params = raw["params"]
    if template is not None:
        r = jax.tree_util.tree_leaves(params)[0].shape[0]
        target = jax.tree_util.tree_map(lambda leaf: np.zeros((r,) + np.shape(leaf)), template)
        params = restore(target, params)
    return params, np.asarray(raw["losses"])
