"""Run-time environment of a study: logging, device and version capture, the budget."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import sys
from pathlib import Path

import jax
from tqdm.auto import tqdm

from experiments import budget
from experiments.data import field_from_config

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
    """The devices of the study (all processes' with ``jax.distributed``: ``num_processes``)."""
    devices = jax.devices()
    info = {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "host": platform.node(),
    }
    if jax.process_count() > 1:
        info["num_processes"] = jax.process_count()
    return info


def estimate_seconds(cfg, platform_name: str | None = None) -> dict:
    """Predicted seconds per stage (and "total") from documented per-unit costs, without a
    probe: ``budget.CPU_COSTS`` on a CPU, ``budget.GPU_COSTS`` otherwise."""

    platform_name = platform_name or jax.devices()[0].platform
    costs = budget.CPU_COSTS if platform_name == "cpu" else budget.GPU_COSTS
    plan = budget.budget(cfg, costs)
    est = {k: v["predicted_s"] for k, v in plan["stages"].items()}
    est["total"] = plan["total_s"]
    return est


def log_budget(cfg, logger=None, threshold_s: float = 600.0, probe: bool = True) -> dict:
    """The budget per stage (``experiments.budget``): costs probed on this device (a few
    seconds), logged as a table, with a warning when the study will take long; on a CPU also
    the prediction for one GPU from documented costs. Returns the JSON-ready plans
    {"device": ..., "gpu": ...} (``budget.with_measured`` adds measured times later)."""

    logger = logger or get_logger()
    platform_name = jax.devices()[0].platform
    field = field_from_config(cfg)
    flops = budget.field_flops(field)
    costs = (budget.probe_for(cfg, field) if probe else
             budget.CPU_COSTS if platform_name == "cpu" else budget.GPU_COSTS)
    plans = {"device": budget.budget(cfg, costs, flops)}
    if platform_name == "cpu":
        plans["gpu"] = budget.budget(cfg, budget.GPU_COSTS, flops)
    for line in budget.format_table(plans["device"]):
        logger.info(line)
    if "gpu" in plans:
        logger.info("one GPU (documented costs) would take about %s",
                    budget.format_duration(plans["gpu"]["total_s"]))
    total = plans["device"]["total_s"]
    if total > threshold_s:
        msg = (f"preset {cfg.preset!r} will take long on this device ({platform_name}): about "
               f"{budget.format_duration(total)}.")
        if platform_name == "cpu":
            smaller = ("reduce sizes with --set" if cfg.preset in ("quick", "tiny") else
                       "use --preset quick or reduce sizes with --set")
            msg += (f" On a CPU {smaller} (see `bayesiamp paper --help`) or use a GPU. "
                    "Interrupted runs resume where they stopped.")
        logger.warning(msg)
    return {k: budget.as_json(v) for k, v in plans.items()}
