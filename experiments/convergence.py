"""Convergence of a study's trainings: held-out loss curves and the "train longer" flag.

The training stages pass the study's held-out events (``experiments.data.load_holdout``) to the
library trainers, which record the held-out loss along training (``bayesiamp_jax.convergence``):
the deterministic stage stores the curves in ``models/deterministic.msgpack`` ("holdout_epochs"
(R, C), "holdout_curve" (R, C)), the posterior methods in their draws' info ("holdout_epochs",
"holdout_curve"). ``load(study)`` judges every curve with ``check_convergence`` and writes
``results/convergence.json``::

    {"deterministic": {"0": {...}, ...}, "vi_k10": {"0": {...}}, ...}

one ``Convergence`` as a dict (``as_dicts``: verdict, not_converged, rising, fall, fall_se,
relative_fall, scale, tail_start, tail_points, final_loss, tolerance, z) per stage or label and
run. ``curves(study)`` returns the curves themselves (for the figure).
"""

from __future__ import annotations

import numpy as np

from bayesiamp_jax import convergence as bjconv
from bayesiamp_jax.checkpoint import DamagedFileError, atomic_write_json, load_pytree
from bayesiamp_jax.posteriors.draws import load_draws
from experiments import config as cfgmod
from experiments import data as expdata

__all__ = ["CURVE_POINTS", "curves", "holdout", "holdout_every", "load", "path", "plateau",
           "summary_line"]

CURVE_POINTS = 100  # held-out records per training curve (every ~1 % of the epochs)


def path(study):
    return study.path("results", "convergence.json")


def holdout(study) -> bjconv.Holdout | None:
    """The study's held-out events as the trainers' ``Holdout`` (a fixed subset of at most
    ``HOLDOUT_POINTS``, in the space the flow learns: preprocessed like the training data when
    the study preprocesses), or None (logged once per call) when the study has none."""
    s = expdata.load_holdout(study)
    if s is None:
        study.log.info("convergence: no held-out events, no held-out loss curves")
        return None
    make_pre = getattr(expdata, "preprocessing_from_config", None)  # file studies' data.preprocess
    pre = None if make_pre is None else make_pre(study.cfg)
    return bjconv.holdout_set(s.x if pre is None else pre.forward(s.x), s.c)


def holdout_every(num_epochs: int) -> int:
    """Epochs between held-out records: ~``CURVE_POINTS`` records per training."""
    return max(1, int(num_epochs) // CURVE_POINTS)


def plateau(section) -> bjconv.Plateau | None:
    """The early stop of a config section (``<method>.early_stop`` patience, 0: off)."""
    if not getattr(section, "early_stop", 0):
        return None
    return bjconv.Plateau(int(section.early_stop), float(section.early_stop_min_delta))


def curves(study) -> dict:
    """{stage_or_label: (method, {run: (epochs (C,), losses (C,))})} of every saved curve."""
    cfg = study.cfg
    out = {}
    det = study.outdir / "models" / "deterministic.msgpack"
    if det.is_file():
        raw = load_pytree(det)
        if "holdout_curve" in raw:
            e, y = np.asarray(raw["holdout_epochs"]), np.asarray(raw["holdout_curve"])
            out["deterministic"] = ("deterministic",
                                    {r: (e[r], y[r]) for r in range(y.shape[0])})
    for method, label, _ in cfgmod.method_grid(cfg):
        runs = {}
        for r in range(cfg.num_runs):
            p = study.outdir / "draws" / label / f"run{r}.msgpack"
            if not p.is_file():
                continue
            try:
                info = load_draws(p).info
            except DamagedFileError:
                continue
            if "holdout_curve" in info:
                runs[r] = (np.asarray(info["holdout_epochs"]), np.asarray(info["holdout_curve"]))
        if runs:
            out[label] = (method, runs)
    return out


def load(study, *, tolerance: float = bjconv.DEFAULT_TOLERANCE) -> dict:
    """{stage_or_label: {run: Convergence as a dict}} of every saved curve, judged now (the
    curves are read from the saved files) and written to ``results/convergence.json``."""
    judged = {}
    for name, (_, runs) in curves(study).items():
        judged[name] = {r: bjconv.as_dicts(bjconv.check_convergence(e, y, tolerance=tolerance))[0]
                        for r, (e, y) in runs.items()}
    atomic_write_json(path(study), {k: {str(r): d for r, d in v.items()}
                                    for k, v in judged.items()})
    return judged


def summary_line(judged: dict) -> str:
    """One log/report line: the stages and labels with a run flagged, or that none is."""
    flagged = [f"{name} run {r}: {d['verdict']} (fall {100 * d['relative_fall']:.2f} % over "
               f"the last 10 %)" for name, runs in judged.items() for r, d in runs.items()
               if d["not_converged"] or d["rising"]]
    return "; ".join(flagged) if flagged else "every held-out loss curve has flattened"
