"""Run-time environment of a study: logging, device and version capture, cost estimate."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import sys
from pathlib import Path

import jax
from tqdm.auto import tqdm

LOGGER_NAME = "bayesiamp"
PACKAGES = ("bayesiamp_jax", "jax", "jaxlib", "flax", "optax", "diffrax", "numpyro", "numpy",
            "scipy", "matplotlib")


class _TqdmHandler(logging.StreamHandler):
    """Console handler that writes through tqdm, so progress bars are not torn."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(log_file: str | Path | None = None, level=logging.INFO) -> logging.Logger:
    """Logger "bayesiamp" writing to the console and (appending) to ``log_file``."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = _TqdmHandler()
    console.setFormatter(fmt)
    logger.addHandler(console)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.propagate = False
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict:
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "host": platform.node(),
    }


# Rough seconds per unit of work on a 2-core CPU and on one H100-class GPU (MEASURED.md, PAPER.md
# and this pipeline's own runs; ±50 %). On a GPU, up to ``parallel`` vmapped units (runs × grid
# points) cost about as much as one. The estimate only decides whether to warn.
_COST = {
    "cpu": {"fm_epoch": 0.02, "vi_epoch": 0.04, "grad_point_step": 6e-6,
            "field_eval_per_sample": 1.4e-7, "nuts_draw": 0.35, "parallel": 1},
    "gpu": {"fm_epoch": 0.02, "vi_epoch": 0.05, "grad_point_step": 1e-6,
            "field_eval_per_sample": 6e-10, "nuts_draw": 0.5, "parallel": 32},
}


def estimate_seconds(cfg, platform_name: str | None = None) -> dict:
    """Very rough compute-time estimate per stage for ``cfg`` on the current (or given) platform."""
    from experiments.config import method_grid  # local: avoid an import cycle

    platform_name = platform_name or jax.devices()[0].platform
    c = _COST["cpu" if platform_name == "cpu" else "gpu"]
    runs = cfg.num_runs
    batches = lambda units: -(-units // c["parallel"])  # noqa: E731
    per_epoch = lambda batch_size: cfg.data.num_train / batch_size / 10  # noqa: E731
    est = {}
    if cfg.deterministic.enabled:
        d = cfg.deterministic
        est["deterministic"] = (batches(runs) * d.num_epochs * c["fm_epoch"]
                                * per_epoch(d.batch_size))
    if cfg.vi.enabled:
        v = cfg.vi
        est["vi"] = (batches(runs * len(v.kl_weights)) * v.num_epochs * c["vi_epoch"]
                     * per_epoch(v.batch_size))
    if cfg.adammcmc.enabled:
        a = cfg.adammcmc
        steps = a.num_samples * a.thinning + a.num_adam_steps
        est["adammcmc"] = (batches(runs * len(a.sigmas)) * steps * 2 * a.batch_size
                           * a.solver_steps * 4 * c["grad_point_step"] / 4)
    if cfg.nuts.enabled:
        n = cfg.nuts
        est["nuts"] = (runs * (n.num_warmup + n.num_samples) * c["nuts_draw"]
                       * 2 ** (n.max_tree_depth - 6) * n.num_points / 10_000)
    if cfg.repulsive.enabled:
        r = cfg.repulsive
        est["repulsive"] = (batches(runs * r.num_members) * r.num_epochs * c["fm_epoch"]
                            * per_epoch(r.batch_size))
    draws = 0
    for method, _, _ in method_grid(cfg):
        draws += {"vi": cfg.vi.num_draws, "adammcmc": cfg.adammcmc.num_samples,
                  "nuts": cfg.nuts.num_samples, "repulsive": cfg.repulsive.num_members}[method]
    e = cfg.evaluation
    evals = e.solver_steps * {"euler": 1, "midpoint": 2, "rk4": 4}.get(e.solver, 10)
    samples = e.calib_samples + (e.scaled_factor * sum(n * n for n in e.scaled_bins)
                                 if e.scaled else 0)
    est["evaluate"] = runs * draws * samples * evals * c["field_eval_per_sample"]
    est["total"] = sum(est.values())
    return est


def warn_if_long(cfg, logger=None, threshold_s: float = 600.0) -> dict:
    """Log the estimate; warn clearly when the preset will take long on this device."""
    logger = logger or get_logger()
    platform_name = jax.devices()[0].platform
    est = estimate_seconds(cfg, platform_name)
    total = est["total"]
    logger.info("rough compute estimate on %s: %s", platform_name, _fmt_duration(total))
    if total > threshold_s:
        parts = ", ".join(f"{k} {_fmt_duration(v)}" for k, v in est.items() if k != "total")
        msg = (f"preset {cfg.preset!r} will take long on this device ({platform_name}): about "
               f"{_fmt_duration(total)} ({parts}).")
        if platform_name == "cpu":
            msg += (" It is meant for a GPU; on a CPU use --preset quick or reduce sizes with "
                    "--set (see `bayesiamp paper --help`). Interrupted runs resume where they "
                    "stopped.")
        logger.warning(msg)
    return est


def _fmt_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
