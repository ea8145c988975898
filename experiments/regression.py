"""Uncertainty-aware regression: Bayesian NN (mean-field VI) vs repulsive ensemble, checked
against the replica truth of σ_stat.

A detector-response toy with known truth (``bayesiamp_jax.regression.ResponseToy``) whose
training spectrum falls steeply and has a crack (a window with few training inputs). For each
training-set size N:

1. the replica truth of σ_stat: the deterministic network fitted on K fresh training sets
   (vmapped), the spread of its predicted mean per input, with its standard error;
2. both weight posteriors at their default settings, and again at the setting chosen by the
   bootstrap rule (no truth needed: the one knob that scales each method's σ_stat² — the VI
   KL weight, the ensemble's repulsion strength — moved so that its mean σ_stat² on held-out
   inputs equals that of a bootstrap of the deterministic fit on the training set);
3. pulls (y − mean)/σ_total on fresh test data with Gaussian fits, before and after a post-hoc
   recalibration of σ_total from held-out pulls; σ_stat / truth per input; bias apart from spread;
   the uncertainty spectrum and the inputs it flags.

The analysis and report are ``experiments.regression_report``, the figures
``experiments.regression_figures``; this module holds the configuration (``experiments.settings``,
like every study), the fit stages and the command line. The output folder is a study folder
(``experiments.stages``): one run at a time (study.lock), log.txt, config.json, one stage per
fit (``stages/<fit>_N<n>.json``, its draws in ``cache/<fit>_N<n>.msgpack``) whose fingerprint
(``experiments.config.fingerprint``) covers everything that determines it (settings, seed,
training data): an interrupted run resumes, a changed setting refits only the fits it changes,
and a damaged draws file is refitted. The ``report`` stage (always rerun) writes figures (PNG +
PDF), report.md and report.json.

    bayesiamp regression --preset quick [-o DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from bayesiamp_jax import _checks, resumable
from bayesiamp_jax.checkpoint import atomic_write_bytes, atomic_write_json, atomic_write_text
from bayesiamp_jax.evaluation.figures import save_figure
from bayesiamp_jax.posteriors.draws import load_draws, save_draws
from bayesiamp_jax.regression import (
    RegressionNet,
    ResponseToy,
    fit_repulsive_regression,
    fit_vi_regression,
    nll_loss_fn,
)
from bayesiamp_jax.regression.calibration import matched_setting
from bayesiamp_jax.regression.methods import SPACES
from bayesiamp_jax.regression.replicas import bootstrap_sample_fn, fit_replicas
from bayesiamp_jax.regression.uncertainty import decompose
from experiments import runtime
from experiments.config import fingerprint
from experiments.regression_figures import plot_study
from experiments.regression_report import (
    METHODS,
    build_report,
    evaluate_predictions,
    evaluation_sets,
    final_loss,
    predictions,
    ratio_summary,
    report_markdown,
)
from experiments.settings import (
    ConfigError,
    add_config_arguments,
    config_from_args,
    print_config,
    setting,
    to_dict,
)
from experiments.stages import FolderLock, Study, StudyError, prepare_folder

PROG = "bayesiamp regression"
FIT_VERSION = 3  # in every fit's fingerprint: raise it when a fit's code changes
# the settings each fit depends on (besides N, its training data and its knob value): all fits,
# then per kind of fit; a setting outside them changes no fit (only the report)
FIT_SETTINGS = {
    "all": ("seed", "num_steps", "batch_size", "learning_rate", "hidden", "prior_scale",
            "gap_lo", "gap_hi", "gap_efficiency"),
    "replicas": ("num_replicas",),
    "bootstrap": ("num_bootstrap",),
    "vi": ("num_draws", "vi_init_rho"),
    "repulsive": ("num_members", "space", "num_measurement", "measure_batch"),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the regression study (``--set key=value``; ``--show-config`` lists them)."""

    sizes: tuple[int, ...] = setting((250, 1000, 4000), "training-set sizes N")
    num_steps: int = setting(4000, "optimiser steps per fit (every method, replica, bootstrap)")
    batch_size: int = setting(250, "mini-batch size (capped at N)")
    learning_rate: float = setting(3e-3, "initial Adam learning rate (cosine decay to 3 %)")
    hidden: tuple[int, ...] = setting((32, 32), "hidden widths of the mean/variance network")
    prior_scale: float = setting(1.0, "s of the N(0, s²) weight prior (both methods, replicas)")
    num_draws: int = setting(50, "VI: weight draws from q")
    kl_weight: float = setting(1.0, "VI default: KL weight c (1 = textbook ELBO, KL / N)")
    vi_init_rho: float = setting(-3.0, "VI default: initial ρ of the guide scales softplus(ρ)")
    rule_vi_init_rho: float = setting(-10.0, "VI under the rule: initial ρ (scales start below "
                                      "their optimum, so σ_stat² grows ∝ c)")
    num_members: int = setting(16, "repulsive ensemble: members M")
    space: str = setting("function", "repulsive ensemble: repulsion space (weight, function)")
    num_measurement: int = setting(0, "function space: 0 = mini-batch inputs, K = K fixed inputs")
    measure_batch: bool = setting(False, "function space with K > 0: repel at the mini-batch "
                                  "inputs and the K fixed inputs together")
    repulsion: float = setting(1.0, "repulsive ensemble default: repulsion strength r")
    num_replicas: int = setting(20, "K training sets of the replica truth")
    calibration: str = setting("rule", "how each method's knob (VI KL weight, ensemble "
                               "repulsion) is set: rule (the truth-free bootstrap rule, the "
                               "study's answer) or raw (the knob's default value; no rule fits)")
    num_bootstrap: int = setting(8, "bootstrap resamples of the rule (>= 2; 0 only with "
                                 "calibration=raw)")
    prior_scan: tuple[float, ...] = setting((0.1, 0.3), "VI prior widths also fitted at the "
                                            "largest N and ranked by the ELBO (empty: none)")
    gap_lo: float = setting(1.6, "lower edge of the training-spectrum crack")
    gap_hi: float = setting(2.0, "upper edge of the training-spectrum crack")
    gap_efficiency: float = setting(0.03, "fraction of training inputs kept in the crack "
                                    "(1: no crack)")
    flag_factor: float = setting(2.0, "flag inputs whose σ_stat/σ_syst exceeds this multiple "
                                 "of its median; the same cut on the replica truth's "
                                 "σ_stat/σ_true defines the poorly informed region")
    num_validation: int = setting(2000, "held-out points (rule and recalibration), from the "
                                  "training spectrum")
    num_test: int = setting(20_000, "test points, from the full spectrum (no crack)")
    figures: bool = setting(True, "draw the figures")
    seed: int = setting(0, "seed of data and fits")

    def validate(self):
        if not self.sizes:
            raise ValueError("sizes must hold at least one training-set size, got ()")
        for i, n in enumerate(self.sizes):
            _checks.positive_int(f"sizes[{i}]", n)
        if list(self.sizes) != sorted(set(self.sizes)):
            raise ValueError(f"sizes must be strictly increasing, got {self.sizes}")
        for name in ("num_steps", "batch_size", "num_validation", "num_test"):
            _checks.positive_int(name, getattr(self, name))
        for i, w in enumerate(self.hidden):
            _checks.positive_int(f"hidden[{i}]", w)
        for name in ("learning_rate", "prior_scale", "kl_weight", "repulsion", "flag_factor"):
            _checks.positive(name, getattr(self, name))
        for name in ("vi_init_rho", "rule_vi_init_rho"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        for i, s in enumerate(self.prior_scan):
            _checks.positive(f"prior_scan[{i}]", s)
        for name, low in (("num_draws", 2), ("num_members", 2), ("num_replicas", 2),
                          ("num_validation", 10), ("num_test", 10)):
            if _checks.positive_int(name, getattr(self, name)) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not (isinstance(self.num_bootstrap, int) and not isinstance(self.num_bootstrap, bool)
                and (self.num_bootstrap == 0 or self.num_bootstrap >= 2)):
            raise ValueError(f"num_bootstrap must be 0 or an int >= 2, got {self.num_bootstrap!r}")
        if not isinstance(self.num_measurement, int) or self.num_measurement < 0:
            raise ValueError(f"num_measurement must be an int >= 0, got {self.num_measurement!r}")
        _checks.one_of("space", self.space, SPACES)
        _checks.one_of("calibration", self.calibration, ("rule", "raw"))
        if self.calibration == "rule" and self.num_bootstrap == 0:
            raise ValueError("calibration=rule needs num_bootstrap >= 2 (the rule's bootstrap); "
                             "set calibration=raw for the knobs' default values alone")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        for name in ("figures", "measure_batch"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        self.toy()  # validates the crack

    def toy(self) -> ResponseToy:
        return ResponseToy(gap_lo=self.gap_lo, gap_hi=self.gap_hi,
                           gap_efficiency=self.gap_efficiency)


PRESETS = {
    "quick": Config,
    "full": functools.partial(Config, sizes=(250, 500, 1000, 2000, 4000, 8000, 16000),
                              num_steps=15000, num_members=32, num_replicas=40,
                              num_bootstrap=16, num_test=100_000),
    "tiny": functools.partial(Config, sizes=(100, 200), num_steps=60, batch_size=50,
                              num_members=4, num_draws=8, num_replicas=4, num_bootstrap=3,
                              prior_scan=(), num_validation=300, num_test=2000),
}


# ----------------------------------------------------------------------------- fit stages


def fit_stage(study: Study, name: str, fp: str, compute, template):
    """Draws of fit ``name``: stage ``name`` of ``study`` (marker ``stages/<name>.json`` with
    fingerprint ``fp``), its draws in ``cache/<name>.msgpack``. A completed stage is loaded; a
    damaged or missing draws file is refitted (the stage runs again)."""
    path = study.outdir / "cache" / f"{name}.msgpack"
    fitted = []

    def fit():
        fitted.append(compute())
        save_draws(path, fitted[0])

    def clean():
        path.unlink(missing_ok=True)

    study.run_stage(name, fp, fit, clean)
    if fitted:
        return fitted[0]
    try:
        return load_draws(path, template=template)
    except Exception as e:  # noqa: BLE001 - a damaged cache entry is refitted
        study.log.warning("stage %s: its draws cannot be read (%s); refitting", name, e)
    study.marker_path(name).unlink(missing_ok=True)
    study.run_stage(name, fp, fit, clean)
    return fitted[0]


# ----------------------------------------------------------------------------- fits


@functools.lru_cache(maxsize=32)
def optimizer(learning_rate: float, num_steps: int) -> optax.GradientTransformation:
    """Adam with a cosine-decayed learning rate (every fit; the decay tames the VI noise).
    Cached, so fits with the same schedule share compiled code."""
    return optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.03))


def schedule(cfg: Config, n: int) -> tuple[int, int, optax.GradientTransformation]:
    """(batch size, epochs, optimiser) for N = n: about ``num_steps`` steps whatever N."""
    batch = min(cfg.batch_size, n)
    per_epoch = n // batch
    epochs = max(1, round(cfg.num_steps / per_epoch))
    return batch, epochs, optimizer(cfg.learning_rate, epochs * per_epoch)


def fit_vi(cfg: Config, key, net, train, kl_weight: float, prior_scale: float,
           init_rho: float):
    n = int(train.x.shape[0])
    batch, epochs, opt = schedule(cfg, n)
    return fit_vi_regression(key, net, train, num_epochs=epochs, batch_size=batch,
                             num_draws=cfg.num_draws, kl_weight=kl_weight * batch / n,
                             kl_normalisation="total", prior_scale=prior_scale, optimizer=opt,
                             init_rho=init_rho, chunk_epochs=epochs)


def fit_re(cfg: Config, key, net, train, repulsion: float, toy: ResponseToy):
    n = int(train.x.shape[0])
    batch, epochs, opt = schedule(cfg, n)
    points = None
    if cfg.num_measurement > 0:
        points = jnp.linspace(toy.e_min, toy.e_max, cfg.num_measurement)[:, None]
    return fit_repulsive_regression(key, net, train, num_members=cfg.num_members,
                                    num_epochs=epochs, batch_size=batch, space=cfg.space,
                                    measurement_x=points, measure_batch=cfg.measure_batch,
                                    prior_scale=cfg.prior_scale,
                                    repulsion=repulsion, optimizer=opt, chunk_epochs=epochs)


def fit_deterministic_replicas(cfg: Config, key, net, n: int, sample_fn, num: int):
    batch, epochs, opt = schedule(cfg, n)
    return fit_replicas(key, net.init, nll_loss_fn(net), sample_fn, num_replicas=num,
                        num_epochs=epochs, batch_size=batch, optimizer=opt,
                        prior_scale=cfg.prior_scale)


# ----------------------------------------------------------------------------- study


def run(cfg: Config, output: Path, progress: bool = True) -> dict:
    """Run (or resume) the study into ``output``; returns the report dict. The folder is locked
    for the run (``StudyError`` while another run holds it)."""
    cfg = _validated(cfg)
    output = prepare_folder(output)
    with FolderLock(output):
        runtime.setup_logging(output / "log.txt")
        study = Study(output, cfg)
        study.log.info("regression study %s: output %s", time.strftime("%Y-%m-%d %H:%M:%S"),
                       output)
        atomic_write_json(output / "config.json", to_dict(cfg))
        report = _run_stages(study, progress)
        study.log.info("done: %s (fits run: %d; loaded: %d)", output / "report.md",
                       len(study.ran) - 1, len(study.skipped))
    return report


def _run_stages(study: Study, progress: bool) -> dict:
    cfg, output = study.cfg, study.outdir
    toy = cfg.toy()
    net = RegressionNet(hidden=cfg.hidden, input_shift=1.5, input_scale=1.0)
    template = net.init(jax.random.key(0))
    root = jax.random.key(cfg.seed)
    sets = evaluation_sets(toy, jax.random.fold_in(root, 10**6),
                           jax.random.fold_in(root, 2 * 10**6), cfg.num_test,
                           cfg.num_validation)
    rng = np.random.default_rng(cfg.seed)
    settings = to_dict(cfg)
    results: dict = {m: {} for m in METHODS}
    rule: dict = {m: {} for m in METHODS}
    truths: dict = {}
    scan: dict = {}
    timings: dict = {}
    jobs = [(n, j) for n in cfg.sizes for j in ("replicas", "bootstrap", "vi", "repulsive")]
    bar = tqdm(total=len(jobs), desc="fits", disable=not progress)

    def job(name, n, parts, compute):
        stage = f"{name}_N{n}"
        own = {k: settings[k] for k in FIT_SETTINGS["all"] + FIT_SETTINGS[name.split("_")[0]]}
        draws = fit_stage(study, stage, fingerprint(FIT_VERSION, own, parts), compute, template)
        # seconds as first fitted (the stage's marker keeps them; a loaded fit costs nothing)
        timings[stage] = round(float(study.marker(stage)["seconds"]), 2)
        return draws

    for n in cfg.sizes:
        train = toy.sample(jax.random.fold_in(root, n), n)
        data_sig = resumable.digest((train.x, train.y))
        # 1. replica truth
        reps = job("replicas", n, {"n": n, "what": "replicas"}, lambda n=n: (
            fit_deterministic_replicas(cfg, jax.random.fold_in(root, 3 * 10**6 + n), net, n,
                                       functools.partial(_sample, toy, n), cfg.num_replicas)))
        truths[n] = {k: v[0] for k, v in predictions(net, reps, sets).items()}
        bar.update()
        # 2. bootstrap of the deterministic fit on the one training set (the rule's target)
        boot = None
        if cfg.num_bootstrap and cfg.calibration == "rule":
            boot = job("bootstrap", n, {"n": n, "data": data_sig, "what": "bootstrap"},
                       lambda n=n, train=train: fit_deterministic_replicas(
                           cfg, jax.random.fold_in(root, 4 * 10**6 + n), net, n,
                           bootstrap_sample_fn((train.x, train.y)), cfg.num_bootstrap))
            boot = {k: v[0] for k, v in predictions(net, boot, sets).items()}
        bar.update()
        # 3. the two methods, default and rule
        for m in METHODS:
            key = jax.random.fold_in(root, 7 * n + len(m))
            default = cfg.kl_weight if m == "vi" else cfg.repulsion

            def fit(value, rho=cfg.vi_init_rho, m=m, key=key, train=train):
                if m == "vi":
                    return fit_vi(cfg, key, net, train, value, cfg.prior_scale, rho)
                return fit_re(cfg, key, net, train, value, toy)

            draws = job(f"{m}_default", n, {"n": n, "data": data_sig, "method": m,
                                            "value": default},
                        lambda v=default, f=fit: f(v))
            pred = predictions(net, draws, sets)
            results[m][n] = evaluate_predictions(pred, sets, truths[n]["test"],
                                                 cfg.flag_factor, rng)
            results[m][n]["setting"] = default
            results[m][n]["_loss"] = final_loss(draws)
            if boot is not None:
                rho = cfg.rule_vi_init_rho
                if m == "vi":  # the rule's probe: the default c with scales started from below
                    draws = job(f"{m}_probe", n, {"n": n, "data": data_sig, "method": m,
                                                  "value": default, "rho": rho},
                                lambda v=default, f=fit, rho=rho: f(v, rho))
                    pred = predictions(net, draws, sets)
                target = boot["val"].std(axis=0, ddof=1)
                value = matched_setting(default, np.asarray(decompose(*pred["val"]).stat),
                                        target)
                draws = job(f"{m}_rule", n, {"n": n, "data": data_sig, "method": m,
                                             "value": value, "rho": rho},
                            lambda v=value, f=fit, rho=rho: f(v, rho))
                r = evaluate_predictions(predictions(net, draws, sets), sets,
                                         truths[n]["test"], cfg.flag_factor, rng)
                r["setting"] = value
                r["bootstrap_ratio_to_replica"] = ratio_summary(
                    boot["test"].std(axis=0, ddof=1), truths[n]["test"], rng)
                rule[m][n] = r
            bar.update()
        if n == cfg.sizes[-1] and cfg.prior_scan:
            scan[cfg.prior_scale] = {
                "elbo_per_point": -results["vi"][n]["_loss"],
                "stat_ratio_to_replica": results["vi"][n]["stat_ratio"]}
            for s in cfg.prior_scan:
                key = jax.random.fold_in(root, 7 * n + 2)
                draws = job(f"vi_prior{s:g}", n, {"n": n, "data": data_sig, "method": "vi",
                                                   "value": cfg.kl_weight, "prior": s},
                            lambda s=s, key=key, train=train: fit_vi(
                                cfg, key, net, train, cfg.kl_weight, s, cfg.vi_init_rho))
                stat = decompose(*predictions(net, draws, sets)["test"]).stat
                scan[s] = {"elbo_per_point": -final_loss(draws),
                           "stat_ratio_to_replica": ratio_summary(np.asarray(stat),
                                                                  truths[n]["test"], rng)}
    bar.close()
    out: dict = {}

    def write_report():
        figures = []
        if cfg.figures:
            for name, fig in plot_study(toy, sets, results, rule, truths,
                                        cfg.flag_factor).items():
                save_figure(fig, output / name)
                figures.append(name)
        out["report"] = build_report(to_dict(cfg), net.num_params(), results, rule, truths,
                                     sets, scan, timings, figures)
        atomic_write_json(output / "report.json", out["report"])
        atomic_write_bytes(output / "report.md", report_markdown(out["report"]).encode())

    # the report is cheap and carries every fit's time: always rewritten
    study.marker_path("report").unlink(missing_ok=True)
    study.run_stage("report", "always", write_report)
    return out["report"]


def _sample(toy, n, key):
    return toy.sample(key, n)


def _validated(cfg: Config) -> Config:
    try:
        cfg.validate()
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    return cfg


# ----------------------------------------------------------------------------- command line


def _saved_preset(output: Path) -> str | None:
    """The preset of an earlier run in ``output`` (``preset.txt``), if any and known."""
    try:
        name = (Path(output) / "preset.txt").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if name in PRESETS else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="Settings: --show-config lists every key of --set with its value and "
               "description. Examples: --set sizes=250,1000 --set num_replicas=40.")
    add_config_arguments(parser, presets=PRESETS, default_preset="quick")
    parser.add_argument("--output", "-o", type=Path, default=None, metavar="DIR",
                        help="output folder (default: results/regression_<preset>); a study "
                             "folder: fits are cached in DIR/cache, each reused only when its "
                             "settings match (stages/ marks them), log in DIR/log.txt")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of data and fits (same as --set seed=N)")
    parser.add_argument("--space", choices=SPACES, default=None,
                        help="repulsion space of the ensemble (same as --set space=...)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.seed is not None:
            args.overrides = [*args.overrides, f"seed={args.seed}"]
        if args.space is not None:
            args.overrides = [*args.overrides, f"space={args.space}"]
        output = args.output or Path("results") / f"regression_{args.preset or 'quick'}"
        saved = _saved_preset(output) if args.config is None else None
        cfg = config_from_args(args, Config, presets=PRESETS, default_preset="quick",
                               saved_preset=saved)
        if args.show_config:
            print_config(cfg, args.show_config)
            return 0
        prepare_folder(output)
        if args.config is None:
            atomic_write_text(output / "preset.txt", f"{args.preset or saved or 'quick'}\n")
        t0, c0 = time.perf_counter(), os.times()
        report = run(cfg, output, progress=not args.no_progress)
        c1 = os.times()
    except (ConfigError, StudyError, FloatingPointError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: error: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return 2
    print(report_markdown(report))
    user = (c1.user - c0.user) + (c1.children_user - c0.children_user)
    print(f"total {time.perf_counter() - t0:.1f} s wall, {user:.1f} s user CPU; written to "
          f"{output}")
    return 0


if __name__ == "__main__":  # the same parser as `bayesiamp regression`
    from experiments.cli import module_main

    module_main("regression")
