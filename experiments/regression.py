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

Writes figures (PNG + PDF), report.md, report.json and config.json to the output folder. Fits
are cached under cache/ keyed on a signature of everything that determines them (settings,
seed, training data), so an interrupted run resumes and a changed setting recomputes.

    python -m experiments.regression --preset quick [--output DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from bayesiamp_jax import _checks
from bayesiamp_jax.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    json_default,
)
from bayesiamp_jax.posteriors.draws import load_draws, save_draws
from bayesiamp_jax.regression import (
    RegressionNet,
    ResponseToy,
    coverage_mad,
    fit_repulsive_regression,
    fit_vi_regression,
    interval_coverage,
    nll_loss_fn,
    predict_draws,
    pull_summary,
    pulls,
)
from bayesiamp_jax.regression.calibration import matched_setting, pull_scale
from bayesiamp_jax.regression.diagnostics import DEFAULT_LEVELS, gaussian_fit
from bayesiamp_jax.regression.methods import SPACES
from bayesiamp_jax.regression.replicas import bootstrap_sample_fn, fit_replicas, replica_truth
from bayesiamp_jax.regression.uncertainty import decompose
from experiments.settings import (
    ConfigError,
    add_config_arguments,
    config_from_args,
    print_config,
    setting,
    to_dict,
)

PROG = "python -m experiments.regression"
METHODS = ("vi", "repulsive")
LABELS = {"vi": "Bayesian NN (mean-field VI)", "repulsive": "repulsive ensemble"}
KNOBS = {"vi": "KL weight c (× textbook ELBO)", "repulsive": "repulsion strength r"}
COLORS = {"vi": "C0", "repulsive": "C3"}
CACHE_VERSION = 2


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
    num_bootstrap: int = setting(8, "bootstrap resamples of the rule (0: no rule fits)")
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


class OutputError(ValueError):
    """A bad output folder (the message names it)."""


# ----------------------------------------------------------------------------- files


def prepare_output(path: Path) -> Path:
    """Create the output folder; a file in the way, an uncreatable or unwritable folder is an
    ``OutputError`` naming it."""
    path = Path(path)
    for p in [path, *path.parents]:
        if p.exists() and not p.is_dir():
            where = "is a file" if p == path else f"lies under {str(p)!r}, which is a file"
            raise OutputError(f"--output {str(path)!r} {where}, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"--output {str(path)!r} cannot be created: {e.strerror}") from None
    probe = path / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"--output {str(path)!r} is not writable: {e.strerror}") from None
    return path


def signature(**parts) -> str:
    """Hex digest of everything that determines a cached result."""
    text = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:20]


def cached(output: Path, name: str, sig: str, compute, template):
    """Draws under cache/<name>-<sig>.msgpack: loaded if present and readable, else computed
    (a damaged file is recomputed) and saved."""
    path = output / "cache" / f"{name}-{sig}.msgpack"
    if path.is_file():
        try:
            return load_draws(path, template=template), True
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            pass
    t0 = time.perf_counter()
    draws = compute()
    draws = draws._replace(info={**draws.info, "fit_seconds": time.perf_counter() - t0})
    save_draws(path, draws)
    return draws, False


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


# ----------------------------------------------------------------------------- evaluation


class Sets:
    """Test inputs (full spectrum) and held-out inputs (training spectrum) with truth."""

    def __init__(self, cfg: Config, toy: ResponseToy, root):
        self.test = toy.without_gap().sample(jax.random.fold_in(root, 10**6), cfg.num_test)
        self.val = toy.sample(jax.random.fold_in(root, 2 * 10**6), cfg.num_validation)
        self.grid = jnp.linspace(0.15, 4.5, 88)[:, None]
        e = np.asarray(self.test.x[:, 0])
        self.e = e
        self.mu = np.asarray(toy.mean(e))
        self.sd = np.asarray(toy.std(e))
        self.in_gap = np.asarray(toy.in_gap(e))


def poor_region(truth, sets: Sets, cfg: Config) -> np.ndarray:
    """The toy's poorly informed test inputs: replica σ_stat / σ_true above ``flag_factor`` ×
    its median (the same cut a method's flag applies to its σ_stat / σ_syst)."""
    rel = truth.spread / sets.sd
    return rel > cfg.flag_factor * np.median(rel)


def predictions(net, draws, sets: Sets) -> dict:
    """(S, n) means and variances on test, held-out and grid inputs."""
    return {name: tuple(np.asarray(a) for a in predict_draws(net, draws, x))
            for name, x in (("test", sets.test.x), ("val", sets.val.x), ("grid", sets.grid))}


def ratio_summary(sigma, truth_means, rng, num_boot: int = 200) -> dict:
    """Median over inputs of σ / truth and its 16/84 % quantiles; the error of the median from a
    bootstrap over the replicas (the truth's own error)."""
    truth = replica_truth(truth_means)
    r = sigma / truth.spread
    k = truth_means.shape[0]
    sub = truth_means[:, :: max(1, truth_means.shape[1] // 2000)]
    sig_sub = sigma[:: max(1, truth_means.shape[1] // 2000)]
    meds = []
    for _ in range(num_boot):
        spread = sub[rng.integers(0, k, k)].std(axis=0, ddof=1)
        if np.all(spread > 0):  # a resample repeating one replica has no spread
            meds.append(np.median(sig_sub / spread))
    return {"median": float(np.median(r)), "q16": float(np.quantile(r, 0.16)),
            "q84": float(np.quantile(r, 0.84)),
            "err": float(np.std(meds)) if len(meds) > 1 else None}


def evaluate(pred: dict, sets: Sets, truth_means: np.ndarray, cfg: Config, rng) -> dict:
    dec = decompose(*pred["test"])
    mean, stat, syst, total = (np.asarray(a) for a in dec)
    total_pulls = pulls(sets.test.y, mean, total)
    stat_pulls = pulls(sets.mu, mean, stat)
    cov = interval_coverage(sets.test.y, mean, total)
    val = decompose(*pred["val"])
    scale = pull_scale(np.asarray(sets.val.y) - np.asarray(val.mean), np.asarray(val.total))
    recal_pulls = total_pulls / scale
    val_ll = -np.asarray(_gauss_nll(np.asarray(val.mean), np.asarray(val.total) ** 2,
                                    np.asarray(sets.val.y)))
    rel = stat / syst
    flagged = rel > cfg.flag_factor * np.median(rel)
    truth = replica_truth(truth_means)
    poor = poor_region(truth, sets, cfg)
    ratio = ratio_summary(stat, truth_means, rng)
    g = decompose(*pred["grid"])
    out = {
        "pull_total": pull_summary(total_pulls)._asdict(),
        "pull_total_fit": gaussian_fit(total_pulls)._asdict(),
        "pull_stat": pull_summary(stat_pulls)._asdict(),
        "coverage": cov.tolist(),
        "coverage_mad": coverage_mad(DEFAULT_LEVELS, cov),
        "rms_stat": float(np.sqrt(np.mean(stat**2))),
        "rms_syst": float(np.sqrt(np.mean(syst**2))),
        "median_stat": float(np.median(stat)),
        "median_syst": float(np.median(syst)),
        "rms_true_noise": float(np.sqrt(np.mean(sets.sd**2))),
        "mean_syst_over_truth": float(np.mean(syst / sets.sd)),
        "rms_bias": float(np.sqrt(np.mean((mean - sets.mu) ** 2))),
        "rms_error_over_replica_spread": float(np.sqrt(np.mean((mean - sets.mu) ** 2))
                                               / np.sqrt(np.mean(truth.spread**2))),
        "stat_ratio_to_replica": ratio["median"],
        "stat_ratio": ratio,
        "stat_ratio_in_gap": (float(np.median(stat[sets.in_gap] / truth.spread[sets.in_gap]))
                              if sets.in_gap.any() else None),
        "heldout_loglik": float(val_ll.mean()),
        "heldout_loglik_err": float(val_ll.std() / np.sqrt(val_ll.size)),
        "recalibration_scale": scale,
        "pull_total_recalibrated": pull_summary(recal_pulls)._asdict(),
        "pull_total_recalibrated_fit": gaussian_fit(recal_pulls)._asdict(),
        "flag": {
            "fraction_flagged": float(flagged.mean()),
            "fraction_of_flagged_in_poor_region": (float(poor[flagged].mean())
                                                   if flagged.any() else None),
            "fraction_of_poor_region_flagged": (float(flagged[poor].mean())
                                                if poor.any() else None),
            "fraction_poor": float(poor.mean()),
            "fraction_poor_in_crack": float(sets.in_gap[poor].mean()) if poor.any() else None,
            "threshold": float(cfg.flag_factor * np.median(rel)),
        },
        "grid": {k: np.asarray(v).tolist() for k, v in g._asdict().items()},
        "_pulls": total_pulls,
        "_recal_pulls": recal_pulls,
        "_stat_pulls": stat_pulls,
        "_test_stat": stat,
        "_test_syst": syst,
        "_test_total": total,
        "_val_stat": np.asarray(val.stat),
        "_rel": rel,
    }
    return out


def _gauss_nll(mean, var, y):
    return 0.5 * (np.log(2 * np.pi * var) + (y - mean) ** 2 / var)


# ----------------------------------------------------------------------------- study


def run(cfg: Config, output: Path, progress: bool = True) -> dict:
    """Run (or resume) the study into ``output``; returns the report dict."""
    cfg = _validated(cfg)
    output = prepare_output(output)
    atomic_write_json(output / "config.json", to_dict(cfg))
    toy = cfg.toy()
    net = RegressionNet(hidden=cfg.hidden, input_shift=1.5, input_scale=1.0)
    template = net.init(jax.random.key(0))
    root = jax.random.key(cfg.seed)
    sets = Sets(cfg, toy, root)
    rng = np.random.default_rng(cfg.seed)
    fit_settings = {k: v for k, v in to_dict(cfg).items()
                    if k not in ("sizes", "num_validation", "num_test", "figures",
                                 "flag_factor", "prior_scan", "measure_batch")}
    re_settings = {"measure_batch": cfg.measure_batch} if cfg.measure_batch else {}
    results: dict = {m: {} for m in METHODS}
    rule: dict = {m: {} for m in METHODS}
    truths: dict = {}
    timings: dict = {}
    scan: dict = {}
    jobs = [(n, j) for n in cfg.sizes for j in ("replicas", "bootstrap", "vi", "repulsive")]
    bar = tqdm(total=len(jobs), desc="fits", disable=not progress)

    def job(name, n, sig_parts, compute):
        t0 = time.perf_counter()
        draws, hit = cached(output, f"{name}_N{n}", signature(**fit_settings, **sig_parts),
                            compute, template)
        took = draws.info.get("fit_seconds", time.perf_counter() - t0)
        timings[f"{name}_N{n}"] = round(float(took), 2)
        return draws

    for n in cfg.sizes:
        train = toy.sample(jax.random.fold_in(root, n), n)
        data_sig = digest(train.x, train.y)
        # 1. replica truth
        reps = job("replicas", n, {"n": n, "what": "replicas"}, lambda n=n: (
            fit_deterministic_replicas(cfg, jax.random.fold_in(root, 3 * 10**6 + n), net, n,
                                       functools.partial(_sample, toy, n), cfg.num_replicas)))
        truths[n] = {k: v[0] for k, v in predictions(net, reps, sets).items()}
        bar.update()
        # 2. bootstrap of the deterministic fit on the one training set (the rule's target)
        boot = None
        if cfg.num_bootstrap:
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

            extra = re_settings if m == "repulsive" else {}
            draws = job(f"{m}_default", n, {"n": n, "data": data_sig, "method": m,
                                            "value": default, **extra},
                        lambda v=default, f=fit: f(v))
            pred = predictions(net, draws, sets)
            results[m][n] = evaluate(pred, sets, truths[n]["test"], cfg, rng)
            results[m][n]["setting"] = default
            results[m][n]["_loss"] = _final_loss(draws)
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
                                             "value": value, "rho": rho, **extra},
                            lambda v=value, f=fit, rho=rho: f(v, rho))
                r = evaluate(predictions(net, draws, sets), sets, truths[n]["test"], cfg, rng)
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
                scan[s] = {"elbo_per_point": -_final_loss(draws),
                           "stat_ratio_to_replica": ratio_summary(np.asarray(stat),
                                                                  truths[n]["test"], rng)}
    bar.close()
    figures = make_figures(cfg, toy, sets, results, rule, truths, output) if cfg.figures else []
    report = summarise(cfg, net, results, rule, truths, sets, scan, timings, figures)
    atomic_write_json(output / "report.json", report)
    atomic_write_bytes(output / "report.md", markdown(report).encode())
    return report


def _sample(toy, n, key):
    return toy.sample(key, n)


def _validated(cfg: Config) -> Config:
    try:
        cfg.validate()
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    return cfg


def _final_loss(draws) -> float:
    """Mean training loss over the last 10 % of epochs (VI: −ELBO / N)."""
    loss = np.asarray(draws.info.get("loss", np.nan), np.float64).ravel()
    tail = loss[-max(1, loss.size // 10):]
    return float(np.mean(tail))


def power_law_slope(sizes, values) -> float:
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def _public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_") and k != "grid"}


def summarise(cfg, net, results, rule, truths, sets, scan, timings, figures) -> dict:
    sizes = list(cfg.sizes)
    largest = sizes[-1]
    out = {"config": to_dict(cfg), "num_params": net.num_params(), "timings_s": timings,
           "figures": figures, "methods": {}, "replica_truth": {}}
    for n in sizes:
        t = replica_truth(truths[n]["test"])
        out["replica_truth"][str(n)] = {
            "median_spread": float(np.median(t.spread)),
            "rms_spread": float(np.sqrt(np.mean(t.spread**2))),
            "relative_error_per_input": float(1 / np.sqrt(2 * (t.num_replicas - 1))),
            "rms_bias_of_centre": float(np.sqrt(np.mean((t.centre - sets.mu) ** 2))),
            "rms_bias_err": float(np.sqrt(np.mean(t.spread**2) / t.num_replicas)),
            "median_spread_in_gap": (float(np.median(t.spread[sets.in_gap]))
                                     if sets.in_gap.any() else None),
            "num_replicas": t.num_replicas,
        }
    for m in METHODS:
        per = {str(n): _public(results[m][n]) for n in sizes}
        stat = [results[m][n]["rms_stat"] for n in sizes]
        entry = {"per_size": per,
                 "stat_slope_vs_N": power_law_slope(sizes, stat) if len(sizes) > 1 else None,
                 "knob": KNOBS[m]}
        if rule[m]:
            entry["rule"] = {
                "name": "bootstrap rule: the knob moved so that the mean σ_stat² on held-out "
                        "inputs equals that of a bootstrap of the deterministic fit",
                "per_size": {str(n): _public(rule[m][n]) for n in sizes},
            }
        out["methods"][m] = entry
    slope_truth = [out["replica_truth"][str(n)]["rms_spread"] for n in sizes]
    out["replica_truth_slope_vs_N"] = power_law_slope(sizes, slope_truth) if len(sizes) > 1 \
        else None
    chosen = rule if rule["vi"] else results
    a, b = chosen["vi"][largest], chosen["repulsive"][largest]
    d_a, d_b = results["vi"][largest], results["repulsive"][largest]
    out["agreement_at_largest_N"] = {
        "N": largest,
        "settings": "rule" if rule["vi"] else "default",
        "median_total_ratio_bnn_over_re": float(np.median(a["_test_total"] / b["_test_total"])),
        "median_stat_ratio_bnn_over_re": float(np.median(a["_test_stat"] / b["_test_stat"])),
        "median_total_ratio_re_over_vi": float(np.median(d_b["_test_total"] / d_a["_test_total"])),
        "median_stat_ratio_re_over_vi": float(np.median(d_b["_test_stat"] / d_a["_test_stat"])),
    }
    out["vi_prior_scan_at_largest_N"] = {f"{s:g}": v for s, v in scan.items()}
    out["done_criteria"] = done_criteria(out, chosen, largest)
    return out


def done_criteria(out, chosen, largest) -> dict:
    """The issue's acceptance numbers at the largest N (rule's settings where fitted)."""
    crit = {}
    for m in METHODS:
        r = chosen[m][largest]
        crit[f"{m}_stat_ratio_to_replica"] = {
            "value": r["stat_ratio_to_replica"], "target": "0.7–1.3",
            "met": bool(0.7 <= r["stat_ratio_to_replica"] <= 1.3)}
        w = r["pull_total_fit"]["width"]
        crit[f"{m}_total_pull_width_fit"] = {"value": w, "std": r["pull_total"]["width"],
                                             "target": "0.9–1.15", "met": bool(0.9 <= w <= 1.15)}
    ratio = out["agreement_at_largest_N"]["median_total_ratio_bnn_over_re"]
    crit["bnn_over_re_median_total_ratio"] = {"value": ratio, "target": "0.8–1.25",
                                              "met": bool(0.8 <= ratio <= 1.25)}
    return crit


# ----------------------------------------------------------------------------- report


def _f(x, fmt=".3f"):
    return "–" if x is None else format(x, fmt)


def _method_rows(rep: dict):
    """(method, "default"/"rule", N, per-size numbers) for every table row of the report."""
    for m, r in rep["methods"].items():
        variants = [("default", r["per_size"])] + ([("rule", r["rule"]["per_size"])]
                                                    if "rule" in r else [])
        for label, per in variants:
            for n, s in per.items():
                yield m, label, n, s


def markdown(rep: dict) -> str:
    cfg = rep["config"]
    largest = str(rep["agreement_at_largest_N"]["N"])
    has_rule = "rule" in rep["methods"]["vi"]
    lines = [
        "# Uncertainty-aware regression: Bayesian NN vs repulsive ensemble",
        "",
        f"Toy: detector response μ(E) with resolution σ(E) = sqrt(0.15²/E + 0.03²), E on "
        f"[0.2, 4] from a falling spectrum with a crack [{cfg['gap_lo']:g}, {cfg['gap_hi']:g}] "
        f"where only {100 * cfg['gap_efficiency']:g} % of the training inputs are kept. "
        f"Network {tuple(cfg['hidden'])} ({rep['num_params']} weights), {cfg['num_steps']} steps "
        f"per fit, prior N(0, {cfg['prior_scale']:g}²). VI: {cfg['num_draws']} draws; repulsive "
        f"ensemble: {cfg['num_members']} members ({cfg['space']}-space RBF-KDE repulsion"
        + ((f" at {'the mini-batch inputs and ' if cfg['measure_batch'] else ''}"
            f"{cfg['num_measurement']} fixed inputs" if cfg["num_measurement"]
            else " at the mini-batch inputs") if cfg["space"] == "function" else "")
        + f"). Test set: {cfg['num_test']} truth points from the full spectrum (no crack); "
        f"held-out set: {cfg['num_validation']} points from the training spectrum.",
        "",
        "## The truth of σ_stat",
        "",
        f"Replica truth: the deterministic network fitted on K = {cfg['num_replicas']} fresh "
        "training sets per N (one vmapped program); σ_stat truth = spread of its mean per input "
        "(relative error per input 1/sqrt(2(K−1))). The bias of the average fit is shown apart.",
        "",
        "| N | median truth | rms truth | rel. error per input | rms bias of the average fit "
        "(± err) | median truth in the crack |",
        "|---|---|---|---|---|---|",
    ]
    for n, t in rep["replica_truth"].items():
        lines.append(f"| {n} | {t['median_spread']:.4f} | {t['rms_spread']:.4f} | "
                     f"{t['relative_error_per_input']:.2f} | {t['rms_bias_of_centre']:.4f} ± "
                     f"{t['rms_bias_err']:.4f} | {_f(t['median_spread_in_gap'], '.4f')} |")
    if rep["replica_truth_slope_vs_N"] is not None:
        lines += ["", f"Power-law slope of the rms truth vs N: "
                      f"{rep['replica_truth_slope_vs_N']:.2f} (expect ≈ −0.5)."]
    lines += [
        "",
        "## σ_stat / replica truth (median over test inputs, 16–84 % of inputs, ± error of "
        "the median from the replicas)",
        "",
        "| method | settings | N | knob value | σ_stat / truth | 16–84 % | in the crack "
        "| rms error of mean / rms truth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, label, n, s in _method_rows(rep):
        q = s["stat_ratio"]
        lines.append(f"| {m} | {label} | {n} | {s['setting']:.4g} | {q['median']:.3f} ± "
                     f"{_f(q['err'])} | {q['q16']:.2f}–{q['q84']:.2f} | "
                     f"{_f(s['stat_ratio_in_gap'], '.2f')} | "
                     f"{s['rms_error_over_replica_spread']:.2f} |")
    if has_rule:
        lines += ["", "The rule's own target, the bootstrap spread (from the one training set), "
                  "against the replica truth: " + ", ".join(
                      f"N = {n}: {s['bootstrap_ratio_to_replica']['median']:.2f}"
                      for n, s in rep["methods"]["vi"]["rule"]["per_size"].items()) + "."]
    scan = rep["vi_prior_scan_at_largest_N"]
    if scan:
        best = max(scan, key=lambda s: scan[s]["elbo_per_point"])
        lines += ["", f"VI prior width at N = {largest} (default KL weight): "
                  + "; ".join(f"s = {s}: ELBO/N {v['elbo_per_point']:.4f}, σ_stat/truth "
                              f"{v['stat_ratio_to_replica']['median']:.2f}"
                              for s, v in scan.items())
                  + f". The ELBO picks s = {best}; the prior width does not set VI's σ_stat."]
    lines += [
        "",
        "## Pulls, calibration, agreement",
        "",
        "Uncalibrated: pull = (y − mean)/σ_total on the test set, Gaussian fit to its histogram "
        "(mean, width) and its standard deviation. Recalibrated (separate): σ_total × s with s "
        "fitted on the held-out pulls (s² = mean pull²), applied to the test set.",
        "",
        "| method | settings | N | fit mean | fit width | std | |pull|<1 | coverage MAD "
        "| held-out log-lik | s | recal. fit width | σ_syst/σ_true |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, label, n, s in _method_rows(rep):
        p, f, g = s["pull_total"], s["pull_total_fit"], s["pull_total_recalibrated_fit"]
        lines.append(
            f"| {m} | {label} | {n} | {f['mean']:+.3f} | {f['width']:.3f} | "
            f"{p['width']:.3f} | {p['within_1']:.3f} | {s['coverage_mad']:.3f} | "
            f"{s['heldout_loglik']:.4f} ± {s['heldout_loglik_err']:.4f} | "
            f"{s['recalibration_scale']:.3f} | {g['width']:.3f} | "
            f"{s['mean_syst_over_truth']:.3f} |")
    ag = rep["agreement_at_largest_N"]
    lines += [
        "",
        f"Agreement at N = {ag['N']} ({ag['settings']} settings): median σ_total(BNN)/σ_total(RE) "
        f"= {ag['median_total_ratio_bnn_over_re']:.3f}, median σ_stat(BNN)/σ_stat(RE) = "
        f"{ag['median_stat_ratio_bnn_over_re']:.3f}; at the default settings "
        f"σ_total(RE)/σ_total(VI) = {ag['median_total_ratio_re_over_vi']:.3f}, "
        f"σ_stat(RE)/σ_stat(VI) = {ag['median_stat_ratio_re_over_vi']:.3f}.",
        "",
        "## σ_stat → 0, σ_syst → true noise",
        "",
    ]
    for m, r in rep["methods"].items():
        per = r["rule"]["per_size"] if "rule" in r else r["per_size"]
        lines.append(f"- {m}: median σ_stat " + ", ".join(
            f"{s['median_stat']:.4f}" for s in per.values()) + " and median σ_syst " + ", ".join(
            f"{s['median_syst']:.4f}" for s in per.values()) + " at N = " + ", ".join(per)
            + f"; rms σ_stat slope (default) {_f(r['stat_slope_vs_N'], '.2f')}; mean "
            f"σ_syst/σ_true at N = {largest}: {per[largest]['mean_syst_over_truth']:.3f}.")
    lines += ["", "## The uncertainty spectrum and the flagged inputs", ""]
    for m, r in rep["methods"].items():
        per = r["rule"]["per_size"] if "rule" in r else r["per_size"]
        fl = per[largest]["flag"]
        lines.append(
            f"- {m} (N = {largest}): {100 * fl['fraction_flagged']:.1f} % of the test inputs "
            f"flagged (σ_stat/σ_syst > {cfg['flag_factor']:g} × median); of them "
            f"{100 * (fl['fraction_of_flagged_in_poor_region'] or 0):.1f} % lie in the poorly "
            f"informed region (replica truth σ_stat/σ_true > {cfg['flag_factor']:g} × median: "
            f"{100 * fl['fraction_poor']:.1f} % of the test inputs, "
            f"{100 * (fl['fraction_poor_in_crack'] or 0):.0f} % of them in the crack), and "
            f"{100 * (fl['fraction_of_poor_region_flagged'] or 0):.1f} % of that region is "
            "flagged.")
    lines += ["", "## Done criteria (largest N, " + ag["settings"] + " settings)", "",
              "| criterion | value | target | met |", "|---|---|---|---|"]
    for name, c in rep["done_criteria"].items():
        extra = f" (std {c['std']:.3f})" if "std" in c else ""
        lines.append(f"| {name} | {c['value']:.3f}{extra} | {c['target']} | "
                     f"{'yes' if c['met'] else 'no'} |")
    lines += ["", "Fit times (s, as first fitted; cached fits are loaded): "
              + ", ".join(f"{k} {v:.1f}" for k, v in rep["timings_s"].items()),
              "", "Figures: " + (", ".join(rep["figures"]) or "none"), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures


def make_figures(cfg, toy, sets, results, rule, truths, output) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import scipy.stats

    sizes = list(cfg.sizes)
    largest = sizes[-1]
    chosen = rule if rule["vi"] else results
    tag = "rule" if rule["vi"] else "default"
    grid = np.asarray(sets.grid[:, 0])
    names = []

    def save(fig, name):
        for ext in ("png", "pdf"):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=130, bbox_inches="tight")
            atomic_write_bytes(output / f"{name}.{ext}", buf.getvalue())
        plt.close(fig)
        names.append(name)

    def shade(ax):
        if toy.has_gap:
            ax.axvspan(toy.gap_lo, toy.gap_hi, color="0.9", lw=0)
        ax.axvspan(toy.e_max, grid[-1], color="0.95", lw=0)

    # 1. prediction, σ_stat against its truth, ratio, vs E at the largest N
    tgrid = replica_truth(truths[largest]["grid"])
    fig, axes = plt.subplots(3, 1, figsize=(6.4, 8.4), sharex=True,
                             gridspec_kw={"height_ratios": [1.2, 1.2, 0.8]})
    axes[0].plot(grid, np.asarray(toy.mean(grid)), "k-", lw=1, label="truth μ(E)")
    axes[1].plot(grid, tgrid.spread, "k-", lw=1.5, label="σ_stat truth (replicas)")
    axes[1].fill_between(grid, tgrid.spread - tgrid.spread_err, tgrid.spread + tgrid.spread_err,
                         color="k", alpha=0.15, lw=0)
    axes[1].plot(grid, np.asarray(toy.std(grid)), "k:", lw=1, label="true noise σ(E)")
    for m in METHODS:
        g = chosen[m][largest]["grid"]
        mean, tot = np.asarray(g["mean"]), np.asarray(g["total"])
        axes[0].plot(grid, mean, color=COLORS[m], label=f"{LABELS[m]} ({tag})")
        axes[0].fill_between(grid, mean - tot, mean + tot, color=COLORS[m], alpha=0.2, lw=0)
        axes[1].plot(grid, g["stat"], color=COLORS[m], label=f"σ_stat {m} ({tag})")
        axes[1].plot(grid, g["syst"], color=COLORS[m], ls=":", lw=1, label=f"σ_syst {m}")
        axes[1].plot(grid, results[m][largest]["grid"]["stat"], color=COLORS[m], ls="--",
                     lw=0.8, label=f"σ_stat {m} (default)")
        axes[2].plot(grid, np.asarray(g["stat"]) / tgrid.spread, color=COLORS[m],
                     label=f"{m} ({tag})")
        axes[2].plot(grid, np.asarray(results[m][largest]["grid"]["stat"]) / tgrid.spread,
                     color=COLORS[m], ls="--", lw=0.8, label=f"{m} (default)")
    for ax in axes:
        shade(ax)
    axes[2].axhspan(0.7, 1.3, color="g", alpha=0.1, lw=0)
    axes[2].axhline(1, color="k", lw=0.8)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("E (grey: crack and no training data)")
    axes[0].set_ylabel("response")
    axes[1].set_ylabel("uncertainty")
    axes[2].set_ylabel("σ_stat / truth")
    axes[0].set_title(f"N = {largest}; band: ±σ_total")
    for ax in axes:
        ax.legend(fontsize=6, ncol=2)
    save(fig, "prediction_vs_input")

    # 2. σ_stat / truth vs N (median, 16–84 % of inputs)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for i, m in enumerate(METHODS):
        for variants, ls, lab in ((results, "--", "default"), (rule, "-", "rule")):
            if not variants[m]:
                continue
            q = [variants[m][n]["stat_ratio"] for n in sizes]
            x = np.asarray(sizes) * (1 + 0.03 * (2 * i - 1))
            med = np.array([v["median"] for v in q])
            ax.errorbar(x, med, yerr=[med - [v["q16"] for v in q], [v["q84"] for v in q] - med],
                        fmt="o" + ls, color=COLORS[m], capsize=3, label=f"{LABELS[m]} ({lab})",
                        alpha=1.0 if lab == "rule" else 0.6)
    ax.axhspan(0.7, 1.3, color="g", alpha=0.1, lw=0, label="±30 %")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training-set size N")
    ax.set_ylabel("σ_stat / replica truth (median, 16–84 % of inputs)")
    ax.legend(fontsize=7)
    save(fig, "stat_ratio_vs_size")

    # 3. σ_stat and σ_syst vs N
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for m in METHODS:
        for key, mk, ls, lab in (("_test_stat", "o", "--", "σ_stat"),
                                 ("_test_syst", "s", "-", "σ_syst")):
            v = [chosen[m][n][key] for n in sizes]
            med = np.array([np.median(a) for a in v])
            ax.errorbar(sizes, med, yerr=[med - [np.quantile(a, 0.16) for a in v],
                                          [np.quantile(a, 0.84) for a in v] - med],
                        fmt=mk + ls, color=COLORS[m], capsize=3, label=f"{lab} {LABELS[m]}")
    tr = [replica_truth(truths[n]["test"]).spread for n in sizes]
    ax.plot(sizes, [np.median(t) for t in tr], "k^-", label="σ_stat truth (replicas)")
    ax.axhline(np.median(sets.sd), color="k", lw=1, ls=":", label="true noise (median)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training-set size N")
    ax.set_ylabel(f"median over test inputs, 16–84 % ({tag})")
    ax.legend(fontsize=6)
    save(fig, "uncertainty_vs_size")

    # 4. pulls with Gaussian fits, uncalibrated and recalibrated
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    bins = np.linspace(-5, 5, 61)
    xs = np.linspace(-5, 5, 200)
    for ax, key, fit_key, title in (
            (axes[0], "_pulls", "pull_total_fit", f"(y − mean)/σ_total, uncalibrated ({tag})"),
            (axes[1], "_recal_pulls", "pull_total_recalibrated_fit",
             "recalibrated on held-out pulls")):
        for m in METHODS:
            r = chosen[m][largest]
            f = r[fit_key]
            ax.hist(np.clip(r[key], -5, 5), bins, density=True, histtype="step",
                    color=COLORS[m], label=f"{m}: fit μ {f['mean']:+.2f}, w {f['width']:.2f}")
            ax.plot(xs, scipy.stats.norm.pdf(xs, f["mean"], f["width"]), color=COLORS[m],
                    ls="--", lw=0.8)
        ax.plot(xs, scipy.stats.norm.pdf(xs), "k-", lw=1, label="N(0, 1)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"N = {largest}")
    save(fig, "pulls")

    # 5. coverage of predictive intervals
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    for m in METHODS:
        for i, n in enumerate(sizes):
            ax.plot(DEFAULT_LEVELS, chosen[m][n]["coverage"], color=COLORS[m],
                    alpha=0.35 + 0.65 * (i + 1) / len(sizes), label=f"{m} N={n}")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel(f"empirical coverage ({tag})")
    ax.legend(fontsize=6)
    save(fig, "coverage")

    # 6. per-input scatter BNN vs RE
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    a, b = chosen["vi"][largest], chosen["repulsive"][largest]
    sel = np.random.default_rng(0).permutation(a["_test_total"].size)[:4000]
    poor = poor_region(replica_truth(truths[largest]["test"]), sets, cfg)[sel]
    for ax, key, title in ((axes[0], "_test_total", "σ_total"), (axes[1], "_test_stat",
                                                                  "σ_stat")):
        x, y = b[key][sel], a[key][sel]
        ax.scatter(x[~poor], y[~poor], s=2, alpha=0.4, color="0.3", label="inputs")
        ax.scatter(x[poor], y[poor], s=4, alpha=0.6, color="C1", label="poorly informed region")
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{title}, repulsive ensemble")
        ax.set_ylabel(f"{title}, Bayesian NN")
        ax.set_title(f"{title}: median BNN/RE {np.median(a[key] / b[key]):.2f} "
                     f"(N = {largest}, {tag})", fontsize=9)
        ax.legend(fontsize=7)
    save(fig, "bnn_vs_re_scatter")

    # 7. uncertainty spectrum and the flagged inputs
    truth = replica_truth(truths[largest]["test"])
    poor = poor_region(truth, sets, cfg)
    rel_truth = truth.spread / sets.sd
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    panels = [("replica truth (σ_stat truth / σ_true)", rel_truth, "k",
               cfg.flag_factor * np.median(rel_truth), None)]
    panels += [(f"{LABELS[m]} ({tag})", chosen[m][largest]["_rel"], COLORS[m],
                chosen[m][largest]["flag"]["threshold"], chosen[m][largest]["flag"])
               for m in METHODS]
    for ax, (title, rel, color, threshold, fl) in zip(axes, panels, strict=True):
        edges = np.geomspace(rel.min(), rel.max(), 50)
        ax.hist(rel, edges, histtype="step", color=color, label="all test inputs")
        ax.hist(rel[poor], edges, histtype="stepfilled", color="C1", alpha=0.4,
                label="poorly informed region")
        label = "region cut" if fl is None else (
            f"flag: {100 * fl['fraction_flagged']:.1f} % flagged,\n"
            f"{100 * (fl['fraction_of_flagged_in_poor_region'] or 0):.0f} % of them in the region")
        ax.axvline(threshold, color=color, ls="--", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("σ_stat / σ_syst" if fl is not None else "σ_stat / σ_true")
        ax.set_title(f"{title}, N = {largest}", fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("test inputs")
    save(fig, "uncertainty_spectrum")
    return names


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
    parser.add_argument("--output", type=Path, default=None, metavar="DIR",
                        help="output folder (default: results/regression_<preset>); fits are "
                             "cached in DIR/cache and reused only when their settings match")
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
        prepare_output(output)
        if args.config is None:
            atomic_write_text(output / "preset.txt", f"{args.preset or saved or 'quick'}\n")
        t0, c0 = time.perf_counter(), os.times()
        report = run(cfg, output, progress=not args.no_progress)
        c1 = os.times()
    except (ConfigError, OutputError, FloatingPointError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: error: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return 2
    print(markdown(report))
    user = (c1.user - c0.user) + (c1.children_user - c0.children_user)
    print(f"total {time.perf_counter() - t0:.1f} s wall, {user:.1f} s user CPU; written to "
          f"{output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
